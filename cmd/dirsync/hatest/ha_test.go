package hatest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// split waits until a and b own disjoint sets of accounts covering all of
// them, two each, and returns them.
func split(t *testing.T, s *setup, a, b *daemon) (ownedA, ownedB []string) {
	t.Helper()
	waitFor(t, 10*leasePeriod, "two replicas to own two accounts each, disjoint", func() bool {
		ownedA, ownedB = a.owned(), b.owned()
		if len(ownedA) != 2 || len(ownedB) != 2 {
			return false
		}
		all := append(slices.Clone(ownedA), ownedB...)
		slices.Sort(all)
		return slices.Equal(all, s.accounts)
	})
	return ownedA, ownedB
}

// TestReplicasOwnDisjointAccountsAndFailOver: two replicas on one Redis
// split four accounts; SIGKILL of one moves its accounts to the other
// within the lease period (plus one renewal step), and the survivor syncs
// them.
func TestReplicasOwnDisjointAccountsAndFailOver(t *testing.T) {
	srv := servertest.StartRedis(t)
	s := newSetup(t, 4, nil)
	cc := newCacheClient(t, srv.Addr)
	a := startDaemon(t, s, "a", srv.Addr)
	b := startDaemon(t, s, "b", srv.Addr)
	ownedA, ownedB := split(t, s, a, b)
	t.Logf("a owns %v, b owns %v", ownedA, ownedB)
	for _, id := range s.accounts {
		waitFor(t, 10*time.Second, id+" published", func() bool { return cc.published(id) })
	}
	// A sync asked of the replica that does not own the account is refused
	// with a clear message.
	code, body := a.syncNow(ownedB[0])
	if code != 409 || !strings.Contains(body, "owned by another replica") {
		t.Errorf("sync of %s on a = %d %s; want 409 naming the owner problem", ownedB[0], code, body)
	}
	if code, body := a.syncNow(ownedA[0]); code != 200 {
		t.Errorf("sync of an owned account on a = %d %s", code, body)
	}

	b.proc.Kill()
	took := waitFor(t, takeoverBound, "a to own every account after b was killed", func() bool { return len(a.owned()) == 4 })
	t.Logf("takeover %v after SIGKILL (lease period %v)", took.Round(time.Millisecond), leasePeriod)

	// The survivor syncs b's former accounts: suspend alice in one of them.
	id := ownedB[0]
	writeLDIF(t, s.ldif(id), id, []user{{"alice", "pro", true}, {"bob", "basic", false}, {"dave", "pro", true}, {"erin", "", false}})
	waitFor(t, 10*time.Second, "a to publish alice's suspension in "+id, func() bool {
		return cc.is(id, "alice", entitlement.PermissionNone, entitlement.ReasonSuspended)
	})
}

// TestPausedOwnerCannotPublish: replica a owns an account and is frozen
// (SIGSTOP) with a publish in flight; the directory changes again, b takes
// the account over and publishes the newer decision; when a resumes, its
// stale publish reaches Redis and is refused by the fencing check, and the
// cache keeps b's value.
func TestPausedOwnerCannotPublish(t *testing.T) {
	srv := servertest.StartRedis(t)
	s := newSetup(t, 4, nil)
	cc := newCacheClient(t, srv.Addr)
	px := startProxy(t, srv.Addr)
	a := startDaemon(t, s, "a", px.addr())
	b := startDaemon(t, s, "b", srv.Addr)
	ownedA, _ := split(t, s, a, b)
	id := ownedA[0]
	waitFor(t, 10*time.Second, id+" published", func() bool { return cc.published(id) })

	// v1: alice downgraded to basic. a picks it up and sends the publish,
	// which the proxy holds; then a is frozen.
	px.holdNext("account:{"+id+"}:index", "account:{"+id+"}:changes") // a publish: the script, or MULTI/EXEC
	writeLDIF(t, s.ldif(id), id, []user{{"alice", "basic", false}, {"bob", "basic", false}, {"dave", "pro", true}, {"erin", "", false}})
	h, err := px.waitHold(15 * time.Second)
	if err != nil {
		t.Fatalf("a never published v1: %v", err)
	}
	if err := a.proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer a.proc.Signal(syscall.SIGCONT) //nolint:errcheck // best effort on failure paths
	staleToken := fence(t, cc, id)

	// v2, while a is stopped: alice suspended. b takes the account over
	// once a's lease lapses and publishes v2.
	writeLDIF(t, s.ldif(id), id, []user{{"alice", "basic", true}, {"bob", "basic", false}, {"dave", "pro", true}, {"erin", "", false}})
	took := waitFor(t, 3*leasePeriod, "b to take over "+id+" and publish v2", func() bool {
		return cc.is(id, "alice", entitlement.PermissionNone, entitlement.ReasonSuspended)
	})
	t.Logf("b published v2 %v after a was stopped", took.Round(time.Millisecond))
	if !slices.Contains(b.owned(), id) {
		t.Fatalf("b does not own %s", id)
	}
	if cur := fence(t, cc, id); cur == staleToken || !strings.Contains(cur, "|b#") {
		t.Fatalf("fence of %s = %q; want b's new token (a's was %q)", id, cur, staleToken)
	}

	// a's stale publish now reaches Redis, then a resumes.
	h.forward()
	var reply []byte
	select {
	case reply = <-h.reply:
	case <-time.After(5 * time.Second):
		t.Fatal("no reply from Redis to a's held publish")
	}
	if err := a.proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	t.Logf("Redis answered a's stale publish: %q", reply)
	if !refusedByFence(reply) {
		t.Fatalf("Redis answered a's stale publish with %q; want the fencing refusal", reply)
	}
	// Give a time to do anything else it might, then check nothing of v1
	// reached the cache.
	time.Sleep(leasePeriod)
	if d, err := cc.check(id, "alice"); err != nil || d.Allowed || d.Reason != entitlement.ReasonSuspended {
		t.Errorf("alice = %+v, %v; want b's suspension to stand", d, err)
	}
	if d, err := cc.check(id, "alice"); err == nil && d.Permission == entitlement.PermissionBasic {
		t.Errorf("a's stale v1 (basic) reached the cache: %+v", d)
	}
	st, _, err := cc.r.AccountStatus(context.Background(), id)
	if err != nil || st.ByReason[entitlement.ReasonSuspended] != 2 {
		t.Errorf("status of %s = %+v, %v; want b's (2 suspended)", id, st, err)
	}
	// a is alive again and takes part: the replicas settle to 2/2.
	split(t, s, a, b)
}

func fence(t *testing.T, cc *cacheClient, account string) string {
	t.Helper()
	v, err := cc.c.Get(context.Background(), cc.keys.Fence(account)).Result()
	if err != nil {
		t.Fatalf("read fence of %s: %v", account, err)
	}
	return v
}

// TestRedisRestartedEmpty: Redis loses everything. Readers get
// unknown_user (deny) or an explicit error meanwhile, never a stale
// "allowed" for the suspended user, and the daemon rebuilds the cache with
// one full sync of its own accord.
func TestRedisRestartedEmpty(t *testing.T) {
	srv := servertest.StartRedis(t)
	s := newSetup(t, 1, nil)
	id := s.accounts[0]
	cc := newCacheClient(t, srv.Addr)
	startDaemon(t, s, "a", srv.Addr)
	waitFor(t, 4*leasePeriod, "first publish", func() bool { return cc.published(id) })

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan map[string]int)
	go func() {
		seen := map[string]int{}
		for ctx.Err() == nil {
			if d, err := cc.check(id, "dave"); err != nil {
				seen["error"]++
			} else {
				seen[string(d.Reason)]++
				if d.Allowed {
					seen["dave_allowed"]++
				}
			}
			if d, err := cc.check(id, "alice"); err == nil && d.Reason == entitlement.ReasonUnknownUser {
				seen["alice_unknown"]++
			}
			time.Sleep(5 * time.Millisecond)
		}
		done <- seen
	}()
	srv.Restart(t)
	t.Cleanup(srv.Kill) // StartRedis's cleanup holds the first process
	took := waitFor(t, 4*leasePeriod, "the cache to be rebuilt", func() bool { return cc.published(id) })
	cancel()
	seen := <-done
	t.Logf("rebuilt %v after the restart; reads seen: %v", took.Round(time.Millisecond), seen)
	if seen["dave_allowed"] != 0 {
		t.Errorf("the suspended user was allowed %d times", seen["dave_allowed"])
	}
	if seen["alice_unknown"]+seen["error"] == 0 {
		t.Error("no read saw the empty cache: the test did not exercise the window")
	}
	if n := cc.c.HLen(context.Background(), cc.keys.Index(id)).Val(); n != 4 {
		t.Errorf("index has %d entries after the rebuild; want 4", n)
	}
}

// TestRedisUnreachableDuringPublish: the connection to Redis is cut as the
// daemon publishes; the pass fails, nothing wrong is published, and the
// daemon publishes the change by itself once Redis is reachable again.
func TestRedisUnreachableDuringPublish(t *testing.T) {
	srv := servertest.StartRedis(t)
	s := newSetup(t, 1, nil)
	id := s.accounts[0]
	cc := newCacheClient(t, srv.Addr)
	px := startProxy(t, srv.Addr)
	a := startDaemon(t, s, "a", px.addr())
	waitFor(t, 4*leasePeriod, "first publish", func() bool { return cc.published(id) })

	px.holdNext("account:{"+id+"}:index", "account:{"+id+"}:changes") // a publish: the script, or MULTI/EXEC
	writeLDIF(t, s.ldif(id), id, []user{{"alice", "pro", true}, {"bob", "basic", false}, {"dave", "pro", true}, {"erin", "", false}})
	h, err := px.waitHold(15 * time.Second)
	if err != nil {
		t.Fatalf("the daemon never published: %v", err)
	}
	px.cut() // Redis unreachable mid-publish; the held command is lost
	h.forward()
	time.Sleep(3 * time.Second)
	if d, err := cc.check(id, "alice"); err != nil || !d.Allowed {
		t.Fatalf("alice = %+v, %v during the outage; want the last good decision", d, err)
	}
	if status := statusJSON(t, a); !strings.Contains(status, `"result": "failed"`) {
		t.Errorf("status during the outage shows no failed pass:\n%s", status)
	}
	px.restore()
	took := waitFor(t, 4*leasePeriod, "the daemon to publish after Redis returned", func() bool {
		return cc.is(id, "alice", entitlement.PermissionNone, entitlement.ReasonSuspended)
	})
	t.Logf("published %v after Redis became reachable", took.Round(time.Millisecond))
	if a.proc.Exited() {
		t.Fatal("the daemon exited")
	}
}

func statusJSON(t *testing.T, d *daemon) string {
	t.Helper()
	code, body := get("http://" + d.addr + "/v1/status")
	if code != 200 {
		t.Fatalf("status = %d %s", code, body)
	}
	return body
}

// TestSIGKILLMidPublish: the daemon is killed while publishing a 20,000
// user account; every cached value is whole, valid JSON, the index never
// names a user whose value is missing, and a restarted daemon completes the
// publish.
func TestSIGKILLMidPublish(t *testing.T) {
	if testing.Short() {
		t.Skip("large account")
	}
	srv := servertest.StartRedis(t)
	const n = 20000
	users := make([]user, n)
	for i := range users {
		g := "basic"
		if i%3 == 0 {
			g = "pro"
		}
		users[i] = user{name: fmt.Sprintf("u%05d", i), group: g, suspended: i%17 == 0}
	}
	s := newSetup(t, 1, users)
	id := s.accounts[0]
	cc := newCacheClient(t, srv.Addr)
	px := startProxy(t, srv.Addr)
	px.setDelay(20 * time.Millisecond) // make the publish last long enough to be hit
	a := startDaemon(t, s, "a", px.addr())
	ctx := context.Background()
	var at int64
	waitFor(t, 60*time.Second, "the publish to be under way", func() bool {
		at = cc.c.HLen(ctx, cc.keys.Index(id)).Val()
		return at > 0
	})
	a.proc.Kill()
	after := cc.c.HLen(ctx, cc.keys.Index(id)).Val()
	t.Logf("killed with %d (then %d) of %d users published", at, after, n)
	if after >= n {
		t.Fatalf("the publish finished before the kill; nothing was tested")
	}
	checkWhole(t, cc, id)

	px.setDelay(0)
	startDaemon(t, s, "a2", srv.Addr)
	waitFor(t, 60*time.Second, "a restarted daemon to finish the publish", func() bool {
		return cc.c.HLen(ctx, cc.keys.Index(id)).Val() == n
	})
	checkWhole(t, cc, id)
}

// checkWhole scans every user key: each value must decode as a whole
// decision of the account, and every index entry must have its value.
func checkWhole(t *testing.T, cc *cacheClient, account string) {
	t.Helper()
	ctx := context.Background()
	values := 0
	iter := cc.c.Scan(ctx, 0, prefix+":v1:user:*", 1000).Iterator()
	for iter.Next(ctx) {
		b, err := cc.c.Get(ctx, iter.Val()).Bytes()
		if err != nil {
			t.Fatalf("get %s: %v", iter.Val(), err)
		}
		d, err := accesscache.DecodeDecision(b)
		if err != nil || d.Account != account {
			t.Fatalf("%s holds %q: %v", iter.Val(), b, err)
		}
		values++
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	idx, err := cc.c.HGetAll(ctx, cc.keys.Index(account)).Result()
	if err != nil {
		t.Fatal(err)
	}
	for em, v := range idx {
		b, err := cc.c.Get(ctx, cc.keys.User(em)).Bytes()
		if err != nil {
			t.Fatalf("index has %s (%s) but its value is missing: %v", em, v, err)
		}
		d, _ := accesscache.DecodeDecision(b)
		if !strings.HasPrefix(v, string(d.Permission)+"|") {
			t.Fatalf("index %s = %s but value says %s", em, v, d.Permission)
		}
	}
	t.Logf("%d whole values, %d index entries", values, len(idx))
}

// refusedByFence reports whether a reply is Redis refusing a stale
// publish: the fenced script's error, or (a batch of plain sets goes as
// MULTI/EXEC under WATCH of the fence) an EXEC aborted because the fence
// moved, a null reply (RESP3 "_", RESP2 "*-1").
func refusedByFence(reply []byte) bool {
	r := string(reply)
	if strings.HasPrefix(r, "-") {
		return strings.Contains(r, "DIRSYNC_FENCED")
	}
	return strings.HasPrefix(r, "+OK\r\n") && (strings.HasSuffix(r, "\r\n_\r\n") || strings.HasSuffix(r, "\r\n*-1\r\n"))
}

package lease_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/sync/lease"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const period = 900 * time.Millisecond

var accounts = []string{"acme", "globex", "initech", "umbrella"}

type replica struct {
	m      *lease.Manager
	c      redis.UniversalClient
	cancel context.CancelFunc
	done   chan struct{}
}

// start runs a manager with its own client until stop (or the test's end).
func start(t *testing.T, addr, name string) *replica {
	t.Helper()
	return startOn(t, []string{addr}, name)
}

// startOn is start with several addresses: a Redis Cluster's nodes.
func startOn(t *testing.T, addrs []string, name string) *replica {
	t.Helper()
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: addrs, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	m, err := lease.New(c, lease.Options{Replica: name, KeyPrefix: "t", Accounts: accounts, Period: period, Log: zaptest.NewLogger(t).Named(name)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{m: m, c: c, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := m.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *replica) stop() {
	r.cancel()
	<-r.done
	r.c.Close()
}

func (r *replica) owned() []string {
	var out []string
	for _, a := range accounts {
		if r.m.Owns(a) {
			out = append(out, a)
		}
	}
	return out
}

// waitFor polls cond for up to limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func disjointCover(rs ...*replica) bool {
	seen := map[string]int{}
	for _, r := range rs {
		for _, a := range r.owned() {
			seen[a]++
		}
	}
	if len(seen) != len(accounts) {
		return false
	}
	for _, n := range seen {
		if n != 1 {
			return false
		}
	}
	return true
}

func TestTwoReplicasSplitAccounts(t *testing.T) {
	srv := servertest.StartRedis(t)
	a := start(t, srv.Addr, "a")
	waitFor(t, 5*period, "a to own every account", func() bool { return len(a.owned()) == 4 })
	b := start(t, srv.Addr, "b")
	waitFor(t, 10*period, "a 2/2 split", func() bool { return len(a.owned()) == 2 && len(b.owned()) == 2 && disjointCover(a, b) })

	// Ownership never overlaps while it settles and holds.
	for range 20 {
		if !disjointCover(a, b) && len(a.owned())+len(b.owned()) >= 4 {
			t.Fatalf("overlap: a %v b %v", a.owned(), b.owned())
		}
		time.Sleep(period / 10)
	}
	st := a.m.State()
	if st.LiveReplicas != 2 || st.Holder != a.m.Holder() {
		t.Errorf("state = %+v", st)
	}
	for _, acct := range a.owned() {
		tok, ok := a.m.Token(acct)
		h, err := b.m.CurrentHolder(context.Background(), acct)
		if !ok || err != nil || h != a.m.Holder() || lease.Seq(tok) < 1 {
			t.Errorf("%s: token %q %t; holder seen by b %q, %v", acct, tok, ok, h, err)
		}
	}

	// A graceful stop hands everything over at once.
	a.stop()
	waitFor(t, 5*period, "b to take all after a's graceful stop", func() bool { return len(b.owned()) == 4 })
}

// TestReplicasOnRedisCluster: the same split and handover on a real
// three-master Redis Cluster, where the accounts' lease and fence keys live
// in different slots on different masters.
func TestReplicasOnRedisCluster(t *testing.T) {
	cl := servertest.StartRedisCluster(t, 3)
	a := startOn(t, cl.Addrs, "a")
	waitFor(t, 5*period, "a to own every account", func() bool { return len(a.owned()) == 4 })
	b := startOn(t, cl.Addrs, "b")
	waitFor(t, 10*period, "a 2/2 split", func() bool { return len(a.owned()) == 2 && len(b.owned()) == 2 && disjointCover(a, b) })
	if st := a.m.State(); st.LiveReplicas != 2 {
		t.Errorf("state = %+v, want 2 live replicas", st)
	}
	old := map[string]string{}
	for _, acct := range a.owned() {
		old[acct], _ = a.m.Token(acct)
	}
	a.c.Close() // a crashes
	waitFor(t, 4*period, "b to take a's accounts", func() bool { return len(b.owned()) == 4 })
	for acct, tok := range old {
		nt, _ := b.m.Token(acct)
		if lease.Seq(nt) <= lease.Seq(tok) {
			t.Errorf("%s: b's token %q is not newer than a's %q", acct, nt, tok)
		}
	}
}

// TestCrashedReplicaLosesAccounts: a replica whose connection dies (as in a
// crash) keeps nothing; the survivor takes its accounts with new, larger
// tokens, and the crashed one's old tokens are no longer current.
func TestCrashedReplicaLosesAccounts(t *testing.T) {
	srv := servertest.StartRedis(t)
	a := start(t, srv.Addr, "a")
	b := start(t, srv.Addr, "b")
	waitFor(t, 10*period, "a 2/2 split", func() bool { return len(a.owned()) == 2 && len(b.owned()) == 2 })
	old := map[string]string{}
	for _, acct := range a.owned() {
		old[acct], _ = a.m.Token(acct)
	}
	// Cut a off from Redis: its renewals fail and its leases lapse.
	a.c.Close()
	t0 := time.Now()
	waitFor(t, 4*period, "b to take a's accounts", func() bool { return len(b.owned()) == 4 })
	t.Logf("takeover after %v (lease period %v)", time.Since(t0).Round(time.Millisecond), period)
	if got := a.owned(); len(got) != 0 {
		t.Errorf("a still claims %v after losing Redis", got)
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	keys := accesscache.NewKeys("t")
	for acct, tok := range old {
		cur := c.Get(context.Background(), keys.Fence(acct)).Val()
		nt, _ := b.m.Token(acct)
		if cur != nt || lease.Seq(nt) <= lease.Seq(tok) {
			t.Errorf("%s: fence %q, b's token %q, a's old token %q", acct, cur, nt, tok)
		}
	}
}

// TestRedisRestartEmpty: all leases and fences vanish; the replica notices
// at its next renewal and acquires again with a fresh token.
func TestRedisRestartEmpty(t *testing.T) {
	srv := servertest.StartRedis(t)
	a := start(t, srv.Addr, "a")
	waitFor(t, 5*period, "a to own every account", func() bool { return len(a.owned()) == 4 })
	before, _ := a.m.Token("acme")
	srv.Restart(t)
	// StartRedis's cleanup holds the first process; stop the new one too.
	t.Cleanup(srv.Kill)
	waitFor(t, 10*period, "a to own acme again with a new token", func() bool {
		tok, ok := a.m.Token("acme")
		return ok && tok != before
	})
}

func TestContention(t *testing.T) {
	srv := servertest.StartRedis(t)
	var rs []*replica
	for i := range 5 {
		rs = append(rs, start(t, srv.Addr, fmt.Sprintf("r%d", i)))
	}
	waitFor(t, 15*period, "5 replicas to cover 4 accounts once each, at most one each", func() bool {
		for _, r := range rs {
			if len(r.owned()) > 1 {
				return false
			}
		}
		return disjointCover(rs...)
	})
	for _, r := range rs {
		if n := len(r.owned()); n > 1 {
			t.Errorf("%s owns %d accounts; the fair share with 5 replicas is 1", r.m.Holder(), n)
		}
	}
}

// TestSetAccounts: accounts added to and removed from the list of two
// running replicas are shared out, and a removed account's lease is
// released (not kept until the replica stops).
func TestSetAccounts(t *testing.T) {
	srv := servertest.StartRedis(t)
	a, b := start(t, srv.Addr, "a"), start(t, srv.Addr, "b")
	waitFor(t, 10*time.Second, "the four accounts split", func() bool { return len(a.owned())+len(b.owned()) == 4 })
	more := append(append([]string(nil), accounts...), "tyrell", "cyberdyne")
	a.m.SetAccounts(more)
	b.m.SetAccounts(more)
	waitFor(t, 10*time.Second, "six accounts owned, three each", func() bool {
		n := 0
		for _, acct := range more {
			if a.m.Owns(acct) || b.m.Owns(acct) {
				n++
			}
		}
		return n == 6 && len(a.m.State().Accounts) == 6
	})
	a.m.SetAccounts(accounts[1:]) // acme is deleted
	b.m.SetAccounts(accounts[1:])
	keys := accesscache.NewKeys("t")
	waitFor(t, 10*time.Second, "acme's lease released", func() bool {
		n, err := a.c.Exists(context.Background(), keys.Lease("acme")).Result()
		return err == nil && n == 0 && !a.m.Owns("acme") && !b.m.Owns("acme")
	})
	if _, listed := a.m.State().Accounts["acme"]; listed {
		t.Error("the removed account is still in the replica's state")
	}
}

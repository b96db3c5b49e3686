package store_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/store"

	"github.com/dirsync/dirsync/internal/entitlement/mapper"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// backend is what both backends provide.
type backend interface {
	Check(ctx context.Context, email string) (entitlement.Decision, error)
	Published(ctx context.Context, account string) (map[string]mapper.Published, error)
	Apply(ctx context.Context, account string, changes []mapper.Change, at time.Time) error
	PutStatus(ctx context.Context, st accesscache.AccountStatus) error
	Status(ctx context.Context, account string) (accesscache.AccountStatus, bool, error)
}

func decision(account, email string, perm entitlement.Permission) entitlement.Decision {
	reason := entitlement.ReasonGranted
	if perm == entitlement.PermissionNone {
		reason = entitlement.ReasonSuspended
	}
	return entitlement.Decision{Email: email, Account: account, Allowed: perm != entitlement.PermissionNone, Permission: perm,
		Reason: reason, Capabilities: entitlement.CapabilitiesOf(perm), UserID: "id-" + email, Via: []string{}}
}

// publish diffs next against what is published and applies it, as the
// engine does.
func publish(t *testing.T, s backend, account string, next ...entitlement.Decision) mapper.Delta {
	t.Helper()
	ctx := context.Background()
	prev, err := s.Published(ctx, account)
	if err != nil {
		t.Fatal(err)
	}
	d := mapper.Diff(prev, next)
	if err := s.Apply(ctx, account, d.Changes, time.Now()); err != nil {
		t.Fatal(err)
	}
	return d
}

func newRedis(t *testing.T) (*store.Redis, redis.UniversalClient, *servertest.Redis) {
	srv := servertest.StartRedis(t)
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{srv.Addr}})
	t.Cleanup(func() { c.Close() })
	return store.NewRedis(c, "test"), c, srv
}

func backends(t *testing.T) map[string]backend {
	r, _, _ := newRedis(t)
	return map[string]backend{"memory": store.NewMemory(), "redis": r}
}

func TestConformance(t *testing.T) {
	for name, s := range backends(t) {
		t.Run(name, func(t *testing.T) { conformance(t, s) })
	}
}

// conformance is the writer and reader contract every backend meets.
func conformance(t *testing.T, s backend) {
	ctx := context.Background()
	alice := decision("acme", "alice@acme.example", entitlement.PermissionPro)
	bob := decision("acme", "bob@acme.example", entitlement.PermissionBasic)
	d := publish(t, s, "acme", alice, bob)
	if d.Added != 2 {
		t.Fatalf("first publish added %d", d.Added)
	}
	got, err := s.Check(ctx, "Alice@ACME.example")
	if err != nil || got.Permission != entitlement.PermissionPro || !got.Allowed || got.SyncedAt.IsZero() {
		t.Fatalf("Check(alice) = %+v, %v", got, err)
	}
	unknown, err := s.Check(ctx, "nobody@acme.example")
	if err != nil || unknown.Allowed || unknown.Reason != entitlement.ReasonUnknownUser {
		t.Errorf("unknown user = %+v, %v", unknown, err)
	}
	if bad, err := s.Check(ctx, "not-an-email"); err != nil || bad.Allowed {
		t.Errorf("malformed email = %+v, %v", bad, err)
	}

	// Steady state: nothing to write.
	if d := publish(t, s, "acme", alice, bob); len(d.Changes) != 0 {
		t.Errorf("republishing the same decisions changed %d", len(d.Changes))
	}
	// Suspend bob, drop alice.
	bobSusp := decision("acme", "bob@acme.example", entitlement.PermissionNone)
	if d := publish(t, s, "acme", bobSusp); d.Removed != 1 || d.Updated != 1 {
		t.Errorf("second publish: %+v", d)
	}
	if got, _ := s.Check(ctx, "bob@acme.example"); got.Allowed || got.Reason != entitlement.ReasonSuspended {
		t.Errorf("bob after suspension = %+v", got)
	}
	if got, _ := s.Check(ctx, "alice@acme.example"); got.Reason != entitlement.ReasonUnknownUser {
		t.Errorf("alice after removal = %+v", got)
	}

	// A removal by one account never erases another account's user.
	moved := decision("globex", "carol@shared.example", entitlement.PermissionBasic)
	publish(t, s, "acme", decision("acme", "carol@shared.example", entitlement.PermissionPro), bobSusp)
	publish(t, s, "globex", moved)
	publish(t, s, "acme", bobSusp) // acme drops carol
	if got, _ := s.Check(ctx, "carol@shared.example"); got.Account != "globex" {
		t.Errorf("carol = %+v; acme's removal erased globex's decision", got)
	}

	st := accesscache.AccountStatus{Account: "acme", Generation: 7, LastSyncAt: time.Unix(100, 0).UTC(),
		ByPermission: map[entitlement.Permission]int{entitlement.PermissionPro: 1}}
	if err := s.PutStatus(ctx, st); err != nil {
		t.Fatal(err)
	}
	back, ok, err := s.Status(ctx, "acme")
	if err != nil || !ok || back.Generation != 7 || !back.LastSyncAt.Equal(st.LastSyncAt) {
		t.Errorf("status round trip = %+v, %t, %v", back, ok, err)
	}
	if _, ok, _ := s.Status(ctx, "nope"); ok {
		t.Error("status of an unknown account found")
	}
}

// countHook counts commands sent to Redis.
type countHook struct{ n atomic.Int64 }

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}

func TestCheckIsOneRoundTrip(t *testing.T) {
	w, _, srv := newRedis(t)
	publish(t, w, "acme", decision("acme", "alice@acme.example", entitlement.PermissionPro))
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	hook := &countHook{}
	c.AddHook(hook)
	r := accesscache.NewReader(c, "test")
	if err := c.Ping(context.Background()).Err(); err != nil { // connection setup
		t.Fatal(err)
	}
	hook.n.Store(0)
	for _, email := range []string{"alice@acme.example", "nobody@acme.example"} {
		before := hook.n.Load()
		if _, err := r.Check(context.Background(), email); err != nil {
			t.Fatal(err)
		}
		if n := hook.n.Load() - before; n != 1 {
			t.Errorf("Check(%s) sent %d commands; want 1", email, n)
		}
	}
}

func TestCheckFailsClosed(t *testing.T) {
	w, c, srv := newRedis(t)
	ctx := context.Background()
	if err := c.Set(ctx, accesscache.NewKeys("test").User("torn@acme.example"), `{"email":"torn@acme.example","allowed":tr`, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Check(ctx, "torn@acme.example"); !errors.Is(err, accesscache.ErrUnavailable) {
		t.Errorf("malformed value: err = %v; want ErrUnavailable", err)
	}
	srv.Kill()
	d, err := w.Check(ctx, "alice@acme.example")
	if !errors.Is(err, accesscache.ErrUnavailable) || d.Allowed {
		t.Errorf("redis down: %+v, %v; want ErrUnavailable and no allow", d, err)
	}
	var netErr net.Error
	if !errors.As(err, &netErr) && !errors.Is(err, accesscache.ErrUnavailable) {
		t.Errorf("cause lost: %v", err)
	}
}

// TestReadersNeverSeeUnchangedUsersVanish republishes a large account with
// half the users changing while readers hammer the unchanged half.
func TestReadersNeverSeeUnchangedUsersVanish(t *testing.T) {
	w, c, _ := newRedis(t)
	readersNeverSeeUnchangedUsersVanish(t, w, c)
}

func readersNeverSeeUnchangedUsersVanish(t *testing.T, w *store.Redis, c redis.UniversalClient) {
	r := accesscache.NewReader(c, "test")
	const n = 2000
	var gen1, gen2 []entitlement.Decision
	for i := range n {
		email := fmt.Sprintf("u%05d@acme.example", i)
		gen1 = append(gen1, decision("acme", email, entitlement.PermissionBasic))
		perm := entitlement.PermissionBasic
		if i%2 == 1 {
			perm = entitlement.PermissionPro
		}
		gen2 = append(gen2, decision("acme", email, perm))
	}
	publish(t, w, "acme", gen1...)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var reads, bad atomic.Int64
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g * 2; ctx.Err() == nil; i = (i + 8) % n {
				d, err := r.Check(ctx, gen1[i].Email)
				if ctx.Err() != nil {
					return
				}
				reads.Add(1)
				if err != nil || !d.Allowed {
					bad.Add(1)
				}
			}
		}()
	}
	for range 3 {
		publish(t, w, "acme", gen2...)
		publish(t, w, "acme", gen1...)
	}
	cancel()
	wg.Wait()
	if reads.Load() == 0 {
		t.Fatal("readers made no reads")
	}
	if bad.Load() != 0 {
		t.Errorf("%d of %d reads of unchanged users were not allowed during republishing", bad.Load(), reads.Load())
	}
}

func TestChangeStream(t *testing.T) {
	w, c, _ := newRedis(t)
	changeStream(t, w, c)
}

func changeStream(t *testing.T, w *store.Redis, c redis.UniversalClient) {
	ctx := context.Background()
	publish(t, w, "acme", decision("acme", "a@acme.example", entitlement.PermissionPro), decision("acme", "b@acme.example", entitlement.PermissionPro))
	publish(t, w, "acme", decision("acme", "a@acme.example", entitlement.PermissionPro), decision("acme", "b@acme.example", entitlement.PermissionNone))
	msgs, err := c.XRange(ctx, accesscache.NewKeys("test").Changes("acme"), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 3 {
		t.Fatalf("stream has %d entries; want 3 (two adds, one suspension)", len(msgs))
	}
	last := msgs[2].Values
	if last["email"] != "b@acme.example" || last["allowed"] != "0" || last["reason"] != "suspended" || last["old_permission"] != "pro" {
		t.Errorf("suspension event = %v", last)
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestLookAlikeAddressesReadNobodysDecision: addresses that Unicode case
// folding or white-space trimming would land on alice's, kate's or bob's
// key read nothing (unknown_user), through the public Reader on real
// Redis and through the memory backend; and a value found under one
// user's key that is another user's decision is refused (deny), not
// served. Before the ASCII-only normalisation, "alİce" and "\u212Aate"
// read alice's and kate's decisions.
func TestLookAlikeAddressesReadNobodysDecision(t *testing.T) {
	ctx := context.Background()
	for name, s := range backends(t) {
		t.Run(name, func(t *testing.T) {
			publish(t, s, "acme",
				decision("acme", "alice@acme.example", entitlement.PermissionPro),
				decision("acme", "kate@acme.example", entitlement.PermissionPro),
				decision("acme", "bob@acme.example", entitlement.PermissionBasic))
			for _, probe := range []string{
				"alİce@acme.example",              // U+0130
				"\u212Aate@acme.example",          // KELVIN SIGN
				"\u00a0alice@acme.example",        // NBSP
				"alice@acme.example\u2003",        // EM SPACE
				"\u0085bob@acme.example",          // NEL
				"bob@acme.example\u200b",          // ZERO WIDTH SPACE
				"alice@acme.example@evil.example", // two '@'
				"ALİCE@ACME.EXAMPLE",
			} {
				d, err := s.Check(ctx, probe)
				if err != nil || d.Allowed || d.Reason != entitlement.ReasonUnknownUser || d.Account != "" {
					t.Errorf("Check(%q) = %+v, %v; want unknown_user", probe, d, err)
				}
			}
			if d, err := s.Check(ctx, " KATE@Acme.Example\t"); err != nil || !d.Allowed || d.Email != "kate@acme.example" {
				t.Errorf("ASCII case and white space: %+v, %v", d, err)
			}
		})
	}
	// A foreign value under alice's key (a bug, a bad restore, another
	// writer) is not served as alice's decision.
	r, c, _ := newRedis(t)
	publish(t, r, "acme", decision("acme", "bob@acme.example", entitlement.PermissionPro))
	v, err := c.Get(ctx, accesscache.NewKeys("test").User("bob@acme.example")).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, accesscache.NewKeys("test").User("alice@acme.example"), v, 0).Err(); err != nil {
		t.Fatal(err)
	}
	reader := accesscache.NewReader(c, "test")
	if d, err := reader.Check(ctx, "alice@acme.example"); err == nil || !errors.Is(err, accesscache.ErrUnavailable) {
		t.Errorf("Check(alice) with bob's value under her key = %+v, %v; want an error (deny)", d, err)
	}
}

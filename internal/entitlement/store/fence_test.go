package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/store"

	"github.com/dirsync/dirsync/internal/entitlement/mapper"

	"github.com/redis/go-redis/v9"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/sync/lease"
)

// tokens is a TokenSource a test sets by hand (the lease package is the
// real one).
type tokens struct {
	mu sync.Mutex
	m  map[string]string
}

func (s *tokens) Token(account string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.m[account]
	return t, ok
}

var modes = map[string]store.FenceMode{"atomic": store.FenceAtomic, "per-key": store.FencePerKey}

// TestFencedConformance runs the writer conformance sequence through a
// fenced writer holding the current token: fencing changes nothing for the
// owner.
func TestFencedConformance(t *testing.T) {
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			w, c, _ := newRedis(t)
			fencedConformance(t, w, c, mode)
		})
	}
}

func fencedConformance(t *testing.T, w *store.Redis, c redis.UniversalClient, mode store.FenceMode) {
	ctx := context.Background()
	keys := accesscache.NewKeys("test")
	for _, acct := range []string{"acme", "globex"} {
		if err := c.Set(ctx, keys.Fence(acct), "1|r1", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	f := store.NewFenced(w, &tokens{m: map[string]string{"acme": "1|r1", "globex": "1|r1"}}, mode)
	alice := decision("acme", "alice@acme.example", entitlement.PermissionPro)
	bob := decision("acme", "bob@acme.example", entitlement.PermissionBasic)
	publish(t, f, "acme", alice, bob)
	bobSusp := decision("acme", "bob@acme.example", entitlement.PermissionNone)
	if d := publish(t, f, "acme", bobSusp); d.Removed != 1 || d.Updated != 1 {
		t.Errorf("second publish: %+v", d)
	}
	if got, _ := f.Check(ctx, "bob@acme.example"); got.Allowed || got.Reason != entitlement.ReasonSuspended {
		t.Errorf("bob = %+v", got)
	}
	if got, _ := f.Check(ctx, "alice@acme.example"); got.Reason != entitlement.ReasonUnknownUser {
		t.Errorf("alice after removal = %+v", got)
	}
	publish(t, f, "acme", decision("acme", "carol@shared.example", entitlement.PermissionPro), bobSusp)
	publish(t, f, "globex", decision("globex", "carol@shared.example", entitlement.PermissionBasic))
	publish(t, f, "acme", bobSusp)
	if got, _ := f.Check(ctx, "carol@shared.example"); got.Account != "globex" {
		t.Errorf("carol = %+v; acme's removal erased globex's decision", got)
	}
	idx, err := f.Published(ctx, "acme")
	if err != nil || len(idx) != 1 || idx["bob@acme.example"].Allowed {
		t.Errorf("index = %v, %v", idx, err)
	}
	if n := c.XLen(ctx, keys.Changes("acme")).Val(); n != 6 {
		t.Errorf("change stream has %d entries; want 6", n)
	}
	if err := f.PutStatus(ctx, accesscache.AccountStatus{Account: "acme", Generation: 3}); err != nil {
		t.Fatal(err)
	}
	if st, ok, _ := f.Status(ctx, "acme"); !ok || st.Generation != 3 {
		t.Errorf("status = %+v %t", st, ok)
	}
}

// TestFencedRefusesStaleToken: once another holder's token is current, a
// publish with the old token writes nothing at all — no user key, index
// entry, stream entry or status.
func TestFencedRefusesStaleToken(t *testing.T) {
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			w, c, _ := newRedis(t)
			ctx := context.Background()
			keys := accesscache.NewKeys("test")
			c.Set(ctx, keys.Fence("acme"), "1|old", 0)
			old := store.NewFenced(w, &tokens{m: map[string]string{"acme": "1|old"}}, mode)
			var users []entitlement.Decision
			for i := range 600 { // several batches
				users = append(users, decision("acme", fmt.Sprintf("u%03d@acme.example", i), entitlement.PermissionPro))
			}
			publish(t, old, "acme", users...)

			// A new owner takes over and suspends u000.
			c.Set(ctx, keys.Fence("acme"), "2|new", 0)
			nw := store.NewFenced(w, &tokens{m: map[string]string{"acme": "2|new"}}, mode)
			users[0] = decision("acme", "u000@acme.example", entitlement.PermissionNone)
			publish(t, nw, "acme", users...)
			streamBefore := c.XLen(ctx, keys.Changes("acme")).Val()
			if err := nw.PutStatus(ctx, accesscache.AccountStatus{Account: "acme", Generation: 9}); err != nil {
				t.Fatal(err)
			}

			// The old owner, resumed, publishes its stale view: u000 allowed,
			// plus a removal of u001 and a new user.
			prev, _ := w.Published(ctx, "acme")
			stale := []entitlement.Decision{decision("acme", "u000@acme.example", entitlement.PermissionPro), decision("acme", "new@acme.example", entitlement.PermissionPro)}
			stale = append(stale, users[2:]...)
			delta := mapper.Diff(prev, stale)
			if len(delta.Changes) != 3 {
				t.Fatalf("stale delta has %d changes; want 3", len(delta.Changes))
			}
			err := old.Apply(ctx, "acme", delta.Changes, time.Now())
			if !errors.Is(err, store.ErrNotOwner) {
				t.Fatalf("stale Apply = %v; want ErrNotOwner", err)
			}
			if err := old.PutStatus(ctx, accesscache.AccountStatus{Account: "acme", Generation: 99}); !errors.Is(err, store.ErrNotOwner) {
				t.Errorf("stale PutStatus = %v; want ErrNotOwner", err)
			}
			if d, _ := w.Check(ctx, "u000@acme.example"); d.Allowed || d.Reason != entitlement.ReasonSuspended {
				t.Errorf("u000 = %+v; the stale publish overwrote the new owner's suspension", d)
			}
			if d, _ := w.Check(ctx, "u001@acme.example"); !d.Allowed {
				t.Errorf("u001 = %+v; the stale removal went through", d)
			}
			if d, _ := w.Check(ctx, "new@acme.example"); d.Reason != entitlement.ReasonUnknownUser {
				t.Errorf("new = %+v; the stale addition went through", d)
			}
			if n := c.XLen(ctx, keys.Changes("acme")).Val(); n != streamBefore {
				t.Errorf("stream grew from %d to %d", streamBefore, n)
			}
			if st, _, _ := w.Status(ctx, "acme"); st.Generation != 9 {
				t.Errorf("status generation = %d; want the new owner's 9", st.Generation)
			}
			// No token at all is refused before touching Redis.
			none := store.NewFenced(w, &tokens{m: map[string]string{}}, mode)
			if err := none.Apply(ctx, "acme", delta.Changes, time.Now()); !errors.Is(err, store.ErrNotOwner) {
				t.Errorf("Apply without a token = %v", err)
			}
		})
	}
}

// TestFencedPerKeyStamps covers the Cluster residual window: a stale writer
// that passed the token check just before a takeover cannot overwrite a
// user key the new owner has written since, and its publish fails without
// touching the index.
func TestFencedPerKeyStamps(t *testing.T) {
	w, c, _ := newRedis(t)
	ctx := context.Background()
	keys := accesscache.NewKeys("test")
	c.Set(ctx, keys.Fence("acme"), "2|new", 0)
	nw := store.NewFenced(w, &tokens{m: map[string]string{"acme": "2|new"}}, store.FencePerKey)
	publish(t, nw, "acme", decision("acme", "alice@acme.example", entitlement.PermissionNone))
	if got := c.Get(ctx, keys.UserFence("alice@acme.example")).Val(); got != "acme|2" {
		t.Fatalf("stamp = %q", got)
	}
	// Emulate the window: the stale writer's token check passed (fence
	// still 1) but the new owner's stamp is already on alice's key.
	c.Set(ctx, keys.Fence("acme"), "1|old", 0)
	old := store.NewFenced(w, &tokens{m: map[string]string{"acme": "1|old"}}, store.FencePerKey)
	ch := mapper.Diff(nil, []entitlement.Decision{decision("acme", "alice@acme.example", entitlement.PermissionPro), decision("acme", "bob@acme.example", entitlement.PermissionPro)})
	if err := old.Apply(ctx, "acme", ch.Changes, time.Now()); !errors.Is(err, store.ErrNotOwner) {
		t.Fatalf("stale Apply = %v; want ErrNotOwner", err)
	}
	if d, _ := w.Check(ctx, "alice@acme.example"); d.Allowed {
		t.Errorf("alice = %+v; the stamp did not stop a stale overwrite", d)
	}
	if idx, _ := w.Published(ctx, "acme"); len(idx) != 1 || idx["alice@acme.example"].Allowed {
		t.Errorf("index = %v; want the new owner's (alice suspended, no bob)", idx)
	}
	// bob was never written by the new owner: the documented residual.
	if d, _ := w.Check(ctx, "bob@acme.example"); !d.Allowed {
		t.Errorf("bob = %+v", d)
	}
}

func TestFencedUnavailable(t *testing.T) {
	w, c, srv := newRedis(t)
	ctx := context.Background()
	c.Set(ctx, accesscache.NewKeys("test").Fence("acme"), "1|r", 0)
	f := store.NewFenced(w, &tokens{m: map[string]string{"acme": "1|r"}}, store.FenceAtomic)
	srv.Kill()
	ch := mapper.Diff(nil, []entitlement.Decision{decision("acme", "a@acme.example", entitlement.PermissionPro)})
	err := f.Apply(ctx, "acme", ch.Changes, time.Now())
	if !errors.Is(err, accesscache.ErrUnavailable) || errors.Is(err, store.ErrNotOwner) {
		t.Errorf("Apply with Redis down = %v; want ErrUnavailable only", err)
	}
}

// refusedStampFailsTheBatch: on the per-key (Cluster) path, the account's
// fence key is lost while the user keys' stamps survive (a master that
// lost its data, an evicted key), so the next acquisition starts the
// sequence again, below the stamps. A publish whose stamp is refused must
// fail and leave the index as it was (the user key still says allowed, so
// the index must too: the next pass retries), and the sequence must move
// above every stamp it met, so the next owner's writes are accepted.
// Before, Apply returned nil and the index recorded a suspension the user
// key never got. Leases are taken with the real lease package.
func refusedStampFailsTheBatch(t *testing.T, c redis.UniversalClient, mode store.FenceMode) {
	ctx := context.Background()
	keys := accesscache.NewKeys("test")
	w := store.NewRedis(c, "test")
	alice := decision("acme", "alice@acme.example", entitlement.PermissionPro)
	bob := decision("acme", "bob@acme.example", entitlement.PermissionPro)
	if err := c.Set(ctx, keys.Fence("acme"), "5|old#1|n", 0).Err(); err != nil {
		t.Fatal(err)
	}
	publish(t, store.NewFenced(w, &tokens{m: map[string]string{"acme": "5|old#1|n"}}, mode), "acme", alice, bob)

	// The fence (and lease) are lost; a new owner acquires: seq 1.
	if err := c.Del(ctx, keys.Fence("acme"), keys.Lease("acme")).Err(); err != nil {
		t.Fatal(err)
	}
	first, err := lease.AcquireAll(ctx, c, "test", "new", []string{"acme"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Release(ctx)
	if tok, _ := first.Token("acme"); lease.Seq(tok) != 1 {
		t.Fatalf("token after the fence was lost = %q; the test needs seq 1", tok)
	}
	aliceSusp := decision("acme", "alice@acme.example", entitlement.PermissionNone)
	prev, _ := w.Published(ctx, "acme")
	delta := mapper.Diff(prev, []entitlement.Decision{aliceSusp, bob})
	err = store.NewFenced(w, first, mode).Apply(ctx, "acme", delta.Changes, time.Now())
	if !errors.Is(err, store.ErrNotOwner) || !errors.Is(err, store.ErrStaleStamp) {
		t.Fatalf("Apply under a stamp-refused token = %v; want ErrStaleStamp and ErrNotOwner", err)
	}
	if idx, _ := w.Published(ctx, "acme"); !idx["alice@acme.example"].Allowed {
		t.Errorf("index says alice = %+v after a refused write: a suspension recorded as published that the user key does not hold", idx["alice@acme.example"])
	}
	// The fence now lies above the stamps and the refused owner's lease is
	// gone: the next acquisition's token is above every stamp.
	second, err := lease.AcquireAll(ctx, c, "test", "next", []string{"acme"}, time.Minute)
	if err != nil {
		t.Fatalf("re-acquire after the refusal: %v", err)
	}
	defer second.Release(ctx)
	tok, _ := second.Token("acme")
	if lease.Seq(tok) <= 5 {
		t.Fatalf("token after the refusal = %q; want seq above the stamps' 5", tok)
	}
	publish(t, store.NewFenced(w, second, mode), "acme", aliceSusp, bob)
	if d, _ := w.Check(ctx, "alice@acme.example"); d.Allowed || d.Reason != entitlement.ReasonSuspended {
		t.Errorf("alice = %+v; want suspended by the new owner", d)
	}
	if got, want := c.Get(ctx, keys.UserFence("alice@acme.example")).Val(), fmt.Sprintf("acme|%d", lease.Seq(tok)); got != want {
		t.Errorf("alice's stamp = %q; want %q", got, want)
	}
}

func TestFencedRefusedStampFailsTheBatch(t *testing.T) {
	_, c, _ := newRedis(t)
	refusedStampFailsTheBatch(t, c, store.FencePerKey)
}

// TestFencedPlainBatchesRefuseStaleToken: batches of plain sets (a
// claiming account's additions and updates, no removal, no invitation)
// take the MULTI/EXEC path; a stale token is refused there too, with
// nothing written: user keys, index and stream as the new owner left them.
func TestFencedPlainBatchesRefuseStaleToken(t *testing.T) {
	w, c, _ := newRedis(t)
	ctx := context.Background()
	keys := accesscache.NewKeys("test")
	c.Set(ctx, keys.Fence("acme"), "2|new", 0)
	nw := store.NewFenced(w, &tokens{m: map[string]string{"acme": "2|new"}}, store.FenceAtomic)
	var users []entitlement.Decision
	for i := range 300 { // several batches
		users = append(users, decision("acme", fmt.Sprintf("u%03d@acme.example", i), entitlement.PermissionBasic))
	}
	publish(t, nw, "acme", users...)
	streamBefore := c.XLen(ctx, keys.Changes("acme")).Val()
	indexBefore := c.HGetAll(ctx, keys.Index("acme")).Val()

	old := store.NewFenced(w, &tokens{m: map[string]string{"acme": "1|old"}}, store.FenceAtomic)
	var stale []mapper.Change
	for i := range 300 {
		d := decision("acme", fmt.Sprintf("u%03d@acme.example", i), entitlement.PermissionPro)
		stale = append(stale, mapper.Change{Email: d.Email, New: &d, Next: mapper.PublishedOf(&d)})
	}
	d := decision("acme", "new@acme.example", entitlement.PermissionPro)
	stale = append(stale, mapper.Change{Email: d.Email, New: &d, Next: mapper.PublishedOf(&d)})
	if err := old.Apply(ctx, "acme", stale, time.Now()); !errors.Is(err, store.ErrNotOwner) {
		t.Fatalf("stale Apply = %v; want ErrNotOwner", err)
	}
	for _, email := range []string{"u000@acme.example", "u299@acme.example"} {
		if d, _ := w.Check(ctx, email); d.Permission != entitlement.PermissionBasic {
			t.Errorf("%s = %+v; the stale publish overwrote it", email, d)
		}
	}
	if d, _ := w.Check(ctx, "new@acme.example"); d.Reason != entitlement.ReasonUnknownUser {
		t.Errorf("new = %+v; the stale addition went through", d)
	}
	if n := c.XLen(ctx, keys.Changes("acme")).Val(); n != streamBefore {
		t.Errorf("stream grew from %d to %d", streamBefore, n)
	}
	if idx := c.HGetAll(ctx, keys.Index("acme")).Val(); fmt.Sprint(idx) != fmt.Sprint(indexBefore) {
		t.Error("the index changed under a stale token")
	}
}

package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/entitlement/mapper"
	"github.com/dirsync/dirsync/internal/entitlement/store"
)

// publishAs diffs next against account's index and applies it, marking
// every change ByInvitation as a team does for emails outside its claimed
// domains. It returns Apply's error.
func publishAs(t *testing.T, s backend, account string, byInvitation bool, next ...entitlement.Decision) error {
	t.Helper()
	ctx := context.Background()
	prev, err := s.Published(ctx, account)
	if err != nil {
		t.Fatal(err)
	}
	d := mapper.Diff(prev, next)
	for i := range d.Changes {
		d.Changes[i].ByInvitation = byInvitation
	}
	return s.Apply(ctx, account, d.Changes, time.Now())
}

// ownershipContract: a user key has one owner. A team ("crew") invites
// bob; an enterprise ("acme") that claims bob's domain takes the key over
// and suspends him; every later write of crew's (an update, a removal, a
// resync's full republish) leaves acme's suspension in place, is reported
// as a conflict naming the owner, and is kept out of crew's index and
// change stream; once acme lets the key go, crew's invitation writes it
// again. streamLen is nil for backends without a stream.
func ownershipContract(t *testing.T, s backend, streamLen func(account string) int64) {
	ctx := context.Background()
	bob := func(account string, perm entitlement.Permission) entitlement.Decision {
		return decision(account, "bob@acme.example", perm)
	}
	if err := publishAs(t, s, "crew", true, bob("crew", entitlement.PermissionPro)); err != nil {
		t.Fatalf("crew invites bob: %v", err)
	}
	if err := publishAs(t, s, "acme", false, bob("acme", entitlement.PermissionPro)); err != nil {
		t.Fatalf("acme claims bob: %v", err)
	}
	if err := publishAs(t, s, "acme", false, bob("acme", entitlement.PermissionNone)); err != nil {
		t.Fatalf("acme suspends bob: %v", err)
	}
	suspendedByAcme := func(step string) {
		t.Helper()
		d, err := s.Check(ctx, "bob@acme.example")
		if err != nil || d.Account != "acme" || d.Allowed || d.Reason != entitlement.ReasonSuspended {
			t.Fatalf("%s: bob = %+v, %v; want acme's suspension", step, d, err)
		}
	}
	suspendedByAcme("after acme's takeover")

	var before int64
	if streamLen != nil {
		before = streamLen("crew")
	}
	// crew changes bob's permission, and invites carol in the same publish.
	carol := decision("crew", "carol@crew.example", entitlement.PermissionBasic)
	err := publishAs(t, s, "crew", true, bob("crew", entitlement.PermissionBasic), carol)
	suspendedByAcme("after crew's update")
	var conflict *store.ConflictError
	if !errors.As(err, &conflict) || len(conflict.Conflicts) != 1 || conflict.Conflicts[0] != (store.Conflict{Email: "bob@acme.example", Owner: "acme"}) || conflict.Account != "crew" {
		t.Fatalf("crew's update of bob = %v; want a ConflictError naming bob and acme", err)
	}
	if !strings.Contains(err.Error(), "bob@acme.example (held by acme)") {
		t.Errorf("conflict message %q does not name the user and the owner", err)
	}
	if d, _ := s.Check(ctx, "carol@crew.example"); !d.Allowed || d.Account != "crew" {
		t.Errorf("carol = %+v; a conflict on bob stopped the rest of the publish", d)
	}
	idx, err := s.Published(ctx, "crew")
	if _, listed := idx["bob@acme.example"]; err != nil || listed || len(idx) != 1 {
		t.Errorf("crew's index = %v, %v; want carol only (bob is not published by crew)", idx, err)
	}
	if streamLen != nil {
		if n := streamLen("crew"); n != before+1 {
			t.Errorf("crew's stream grew by %d; want 1 (carol only)", n-before)
		}
	}
	// A resync republishes bob (he is not in crew's index): still refused.
	if err := publishAs(t, s, "crew", true, bob("crew", entitlement.PermissionBasic), carol); !errors.As(err, &conflict) {
		t.Fatalf("crew's resync = %v; want a ConflictError", err)
	}
	suspendedByAcme("after crew's resync")
	// crew removes bob: acme's key stays.
	if err := s.Apply(ctx, "crew", []mapper.Change{{Email: "bob@acme.example", Old: &mapper.Published{}}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	suspendedByAcme("after crew's removal")

	// acme drops bob (the domain claim ends): the key is free, and crew's
	// invitation publishes again.
	if err := publishAs(t, s, "acme", false); err != nil {
		t.Fatal(err)
	}
	if d, _ := s.Check(ctx, "bob@acme.example"); d.Reason != entitlement.ReasonUnknownUser {
		t.Fatalf("bob after acme's removal = %+v", d)
	}
	if err := publishAs(t, s, "crew", true, bob("crew", entitlement.PermissionBasic), carol); err != nil {
		t.Fatalf("crew's publish over a free key: %v", err)
	}
	if d, _ := s.Check(ctx, "bob@acme.example"); d.Account != "crew" || !d.Allowed {
		t.Errorf("bob = %+v; want crew's decision once the key is free", d)
	}
}

// fencedFor returns a fenced writer over w holding the current token of
// every account.
func fencedFor(t *testing.T, w *store.Redis, c redis.UniversalClient, mode store.FenceMode, accounts ...string) *store.Fenced {
	t.Helper()
	keys := accesscache.NewKeys("test")
	toks := &tokens{m: map[string]string{}}
	for _, a := range accounts {
		if err := c.Set(context.Background(), keys.Fence(a), "1|r1|n", 0).Err(); err != nil {
			t.Fatal(err)
		}
		toks.m[a] = "1|r1|n"
	}
	return store.NewFenced(w, toks, mode)
}

func streamLenOf(c redis.UniversalClient) func(string) int64 {
	keys := accesscache.NewKeys("test")
	return func(account string) int64 { return c.XLen(context.Background(), keys.Changes(account)).Val() }
}

// TestOwnership runs the ownership contract through every writer: the
// memory backend, the plain pipeline writer and both fenced modes, on a
// real redis-server (TestRedisCluster runs it on a real Cluster).
func TestOwnership(t *testing.T) {
	t.Run("memory", func(t *testing.T) { ownershipContract(t, store.NewMemory(), nil) })
	t.Run("redis", func(t *testing.T) {
		w, c, _ := newRedis(t)
		ownershipContract(t, w, streamLenOf(c))
	})
	for name, mode := range modes {
		t.Run("fenced "+name, func(t *testing.T) {
			w, c, _ := newRedis(t)
			ownershipContract(t, fencedFor(t, w, c, mode, "crew", "acme"), streamLenOf(c))
		})
	}
}

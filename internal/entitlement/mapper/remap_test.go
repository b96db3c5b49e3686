package mapper

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/directory"
)

// randomSnapshot: n users (some outside the claimed domain, some sharing
// an email, some expiring), groups nested with a cycle.
func randomSnapshot(rng *rand.Rand, n int) *directory.Snapshot {
	s := &directory.Snapshot{Source: "test"}
	for i := range n {
		email := fmt.Sprintf("u%04d@acme.example", i)
		switch {
		case i%17 == 0:
			email = fmt.Sprintf("u%04d@other.example", i)
		case i%29 == 0 && i > 0:
			email = fmt.Sprintf("u%04d@acme.example", i-1) // shared with the previous user
		}
		u := directory.User{ID: fmt.Sprintf("id-%04d", i), DN: fmt.Sprintf("CN=u%04d,DC=acme", i), Email: email,
			Created: 1000, Changed: 2000}
		if rng.IntN(10) == 0 {
			u.ExpiresAt = now.Add(time.Duration(rng.IntN(48)-12) * time.Hour)
		}
		if rng.IntN(12) == 0 {
			u.Status = directory.StatusSuspended
		}
		s.Users = append(s.Users, u)
	}
	for g := range 8 {
		dn := fmt.Sprintf("CN=g%d,OU=Groups,DC=acme", g)
		grp := directory.Group{Ref: directory.NormalizeDN(dn), Name: fmt.Sprintf("g%d", g), DN: dn}
		for u := range n {
			if rng.IntN(6) == 0 {
				grp.Members = append(grp.Members, int32(u))
			}
		}
		if g > 0 {
			grp.Subgroups = []int32{int32(g - 1)}
		}
		s.Groups = append(s.Groups, grp)
	}
	s.Groups[0].Subgroups = []int32{7} // a cycle
	return s
}

var remapPolicy = Policy{Account: "acme", ClaimedDomains: []string{"acme.example"}, AccessGroup: "g6",
	Bindings: []Binding{{Group: "g3", Permission: entitlement.PermissionPro}, {Group: "CN=g7,OU=Groups,DC=acme", Permission: entitlement.PermissionBasic}}}

// sameResult compares two mappings decision by decision (SyncedAt aside:
// a re-decided user is stamped with the later time) and by their counts.
func sameResult(t *testing.T, round int, got, want Result) {
	t.Helper()
	if len(got.Decisions) != len(want.Decisions) {
		t.Fatalf("round %d: %d decisions, want %d", round, len(got.Decisions), len(want.Decisions))
	}
	for i := range want.Decisions {
		g, w := got.Decisions[i], want.Decisions[i]
		g.SyncedAt, w.SyncedAt = time.Time{}, time.Time{}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("round %d: decision %d\n got %+v %+v\nwant %+v %+v", round, i, g, g.Detail, w, w.Detail)
		}
	}
	// NextExpiry may be earlier than a fresh Map's (a user whose expiry
	// moved later is still counted at the old time: one early re-map),
	// never later.
	late := got.NextExpiry.IsZero() && !want.NextExpiry.IsZero() || !want.NextExpiry.IsZero() && got.NextExpiry.After(want.NextExpiry)
	if !reflect.DeepEqual(got.Stats, want.Stats) || !reflect.DeepEqual(got.Bindings, want.Bindings) || late {
		t.Fatalf("round %d: stats %+v next %v bindings %+v\nwant %+v next %v bindings %+v", round, got.Stats, got.NextExpiry, got.Bindings, want.Stats, want.NextExpiry, want.Bindings)
	}
}

// TestRemapEqualsMap: random patches of users' own attributes (status,
// expiry, timestamps) applied in place; every Remap that accepts gives
// the decisions and counts a fresh Map of the same snapshot gives, and it
// refuses the patches it cannot follow.
func TestRemapEqualsMap(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	snap := randomSnapshot(rng, 400)
	m := MapKept(remapPolicy, snap, now)
	sameResult(t, 0, m.Result(), Map(remapPolicy, snap, now))
	accepted, refused := 0, 0
	for round := 1; round <= 300; round++ {
		var idx, gidx []int32
		for range 1 + rng.IntN(5) {
			u := rng.IntN(len(snap.Users))
			user := &snap.Users[u]
			if rng.IntN(3) == 0 {
				// A group's members or subgroups change (in a copy of the
				// groups, as a source patches them).
				snap.Groups = slices.Clone(snap.Groups)
				g := rng.IntN(len(snap.Groups))
				grp := &snap.Groups[g]
				switch rng.IntN(4) {
				case 0:
					grp.Members = append(slices.Clone(grp.Members), int32(u))
				case 1:
					if len(grp.Members) > 0 {
						k := rng.IntN(len(grp.Members))
						grp.Members = slices.Delete(slices.Clone(grp.Members), k, k+1)
					}
				case 2:
					grp.Subgroups = append(slices.Clone(grp.Subgroups), int32(rng.IntN(len(snap.Groups))))
				case 3:
					grp.Subgroups = nil
				}
				gidx = append(gidx, int32(g))
				continue
			}
			switch rng.IntN(4) {
			case 0:
				user.Status = directory.Status(rng.IntN(4))
			case 1:
				user.ExpiresAt = now.Add(time.Duration(rng.IntN(72)+1) * time.Hour)
			case 2:
				user.ExpiresAt = time.Time{}
			case 3:
				user.Changed++
			}
			idx = append(idx, int32(u))
		}
		slices.Sort(gidx)
		patched := *snap
		patched.Patch = &directory.Patch{Users: idx, Groups: slices.Compact(gidx)}
		changed, ok := m.Remap(remapPolicy, &patched, now)
		if !ok {
			refused++
			m = MapKept(remapPolicy, snap, now)
			continue
		}
		accepted++
		for _, d := range changed {
			if j := m.decisionOf[slicesIndexUser(snap, d.UserID)]; j < 0 || m.res.Decisions[j].Email != d.Email {
				t.Fatalf("round %d: changed decision %s is not the user's own", round, d.Email)
			}
		}
		sameResult(t, round, m.Result(), Map(remapPolicy, snap, now))
	}
	if accepted < 100 || refused == 0 {
		t.Errorf("accepted %d, refused %d patches: the test does not exercise both", accepted, refused)
	}
}

func slicesIndexUser(s *directory.Snapshot, id string) int {
	for i := range s.Users {
		if s.Users[i].ID == id {
			return i
		}
	}
	return -1
}

// patched is s with a Patch of users (the source wrote them in place).
func patched(s *directory.Snapshot, users ...int32) *directory.Snapshot {
	c := *s
	c.Patch = &directory.Patch{Users: users}
	return &c
}

// TestRemapRefuses: what Remap cannot follow. before runs before the
// mapping is kept, change after it.
func TestRemapRefuses(t *testing.T) {
	otherPolicy := remapPolicy
	otherPolicy.Bindings = []Binding{{Group: "g2", Permission: entitlement.PermissionPro}}
	for _, tc := range []struct {
		name   string
		before func(s *directory.Snapshot)
		change func(s *directory.Snapshot) *directory.Snapshot
		policy Policy
		at     time.Time
	}{
		{name: "no patch", change: func(s *directory.Snapshot) *directory.Snapshot { c := *s; return &c }},
		{name: "another snapshot", change: func(s *directory.Snapshot) *directory.Snapshot {
			return patched(randomSnapshot(rand.New(rand.NewPCG(1, 2)), len(s.Users)), 1)
		}},
		{name: "policy changed", change: func(s *directory.Snapshot) *directory.Snapshot { return patched(s, 1) }, policy: otherPolicy},
		{name: "email changed", change: func(s *directory.Snapshot) *directory.Snapshot {
			s.Users[1].Email = "new@acme.example"
			return patched(s, 1)
		}},
		{name: "shared email", change: func(s *directory.Snapshot) *directory.Snapshot {
			s.Users[29].Status = directory.StatusSuspended // shares u0028's address
			return patched(s, 29)
		}},
		{name: "entered the claimed domains", change: func(s *directory.Snapshot) *directory.Snapshot {
			s.Users[17].Email = "u0017@acme.example"
			return patched(s, 17)
		}},
		{name: "an expiry passed", before: func(s *directory.Snapshot) { s.Users[2].ExpiresAt = now.Add(time.Hour) },
			change: func(s *directory.Snapshot) *directory.Snapshot { return patched(s, 3) }, at: now.Add(2 * time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := randomSnapshot(rand.New(rand.NewPCG(7, 7)), 60)
			if tc.before != nil {
				tc.before(snap)
			}
			m := MapKept(remapPolicy, snap, now)
			p, at := tc.policy, tc.at
			if p.Account == "" {
				p = remapPolicy
			}
			if at.IsZero() {
				at = now
			}
			if _, ok := m.Remap(p, tc.change(snap), at); ok {
				t.Errorf("Remap accepted: %s", tc.name)
			}
		})
	}
}

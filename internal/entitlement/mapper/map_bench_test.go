package mapper

import (
	"github.com/dirsync/dirsync/entitlement"

	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/directory"
)

// benchSnapshot is a directory shaped like make bench's: users in 1–5 of
// the groups, users stored in stable-ID order (not email order), a pro and
// a basic group holding 10 % and 5 % of users.
func benchSnapshot(users, groups int) *directory.Snapshot {
	rng := rand.New(rand.NewPCG(1, 2))
	s := &directory.Snapshot{Users: make([]directory.User, users), Groups: make([]directory.Group, groups)}
	for i := range s.Users {
		// Unique emails, in another order than the stable IDs.
		s.Users[i] = directory.User{ID: fmt.Sprintf("id-%08d", i), Email: fmt.Sprintf("u%07d@bench.example", i*7919%users)}
		if i%33 == 0 {
			s.Users[i].Status = directory.StatusSuspended
		}
	}
	for g := range s.Groups {
		s.Groups[g] = directory.Group{Ref: fmt.Sprintf("cn=g%06d,ou=groups,dc=bench", g), Name: fmt.Sprintf("g%06d", g)}
	}
	for u := range s.Users {
		for range 1 + rng.IntN(5) {
			g := rng.IntN(groups)
			s.Groups[g].Members = append(s.Groups[g].Members, int32(u))
		}
		if u%10 == 0 {
			s.Groups[0].Members = append(s.Groups[0].Members, int32(u))
		}
		if u%20 == 0 {
			s.Groups[1].Members = append(s.Groups[1].Members, int32(u))
		}
	}
	return s
}

// BenchmarkMapAndDiff is the CPU of an incremental pass after the read: map
// every user and diff against what is published (nothing changed).
func BenchmarkMapAndDiff(b *testing.B) {
	for _, users := range []int{100_000} {
		snap := benchSnapshot(users, users/10)
		p := Policy{Account: "bench", ClaimedDomains: []string{"bench.example"}, Bindings: []Binding{
			{Group: snap.Groups[0].Ref, Permission: entitlement.PermissionPro}, {Group: snap.Groups[1].Ref, Permission: entitlement.PermissionBasic}}}
		now := time.Unix(1_800_000_000, 0)
		published := map[string]Published{}
		for _, d := range Map(p, snap, now).Decisions {
			published[d.Email] = PublishedOf(&d)
		}
		b.Run(fmt.Sprint(users), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				res := Map(p, snap, now)
				if d := Diff(published, res.Decisions); len(d.Changes) != 0 {
					b.Fatalf("%d changes", len(d.Changes))
				}
			}
		})
	}
}

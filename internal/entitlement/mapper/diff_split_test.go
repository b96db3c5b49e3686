package mapper

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/dirsync/dirsync/entitlement"
)

// oneByOne is Diff from its definitions: a change for every decision
// that differs from what is published and for every published email no
// longer decided, then every count read off the changes. It is what the
// split Diff must agree with.
func oneByOne(prev map[string]Published, next []entitlement.Decision) Delta {
	var d Delta
	decided := map[string]bool{}
	for i := range next {
		c := Change{Email: next[i].Email, New: &next[i], Next: PublishedOf(&next[i])}
		decided[c.Email] = true
		if old, had := prev[c.Email]; had {
			if old == c.Next {
				d.Unchanged++
				continue
			}
			c.Old = &old
		}
		d.Changes = append(d.Changes, c)
	}
	for email, p := range prev {
		if !decided[email] {
			d.Changes = append(d.Changes, Change{Email: email, Old: &p})
		}
		if p.Allowed {
			d.PreviouslyAllowed++
		}
	}
	for _, c := range d.Changes {
		was, now := c.Old != nil && c.Old.Allowed, c.New != nil && c.New.Allowed
		switch {
		case c.New == nil:
			d.Removed++
		case c.Old == nil:
			d.Added++
		default:
			d.Updated++
		}
		switch {
		case was && !now:
			d.LostAccess++
			if c.New != nil && AccountStateDenial(c.New.Reason) {
				d.LostAccessByStatus++
			}
		case !was && now:
			d.GainedAccess++
		case was && c.Old.Permission == entitlement.PermissionPro && c.New.Permission == entitlement.PermissionBasic:
			d.Downgrades++
		}
	}
	return d
}

// TestDiffSplitAgreesWithOneByOne: above parallelDiffMin Diff works in
// two halves; over random published states and decisions (unchanged,
// changed, new, removed emails; sorted, unsorted, a duplicate across the
// halves' boundary) it returns what a one-by-one diff returns: the same
// counts and changes in the same order, removals last (in any order).
func TestDiffSplitAgreesWithOneByOne(t *testing.T) {
	perms := []entitlement.Permission{entitlement.PermissionPro, entitlement.PermissionBasic, entitlement.PermissionNone}
	reasons := map[entitlement.Permission][]entitlement.Reason{
		entitlement.PermissionPro:   {entitlement.ReasonGranted},
		entitlement.PermissionBasic: {entitlement.ReasonGranted},
		entitlement.PermissionNone:  {entitlement.ReasonSuspended, entitlement.ReasonNoPermission, entitlement.ReasonDuplicateIdentity},
	}
	for _, shape := range []string{"sorted", "unsorted", "duplicate at the boundary", "small"} {
		t.Run(shape, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, uint64(len(shape))))
			n := parallelDiffMin + 1001
			if shape == "small" {
				n = parallelDiffMin - 1
			}
			var next []entitlement.Decision
			prev := map[string]Published{}
			for i := range n {
				email := fmt.Sprintf("u%06d@acme.example", i)
				p := perms[rng.IntN(len(perms))]
				rs := reasons[p]
				d := decision(email, p, rs[rng.IntN(len(rs))])
				switch r := rng.IntN(10); {
				case r < 6: // published as it is
					prev[email] = PublishedOf(&d)
				case r < 8: // published otherwise
					o := decision(email, perms[rng.IntN(len(perms))], entitlement.ReasonGranted)
					o.UserID = "before"
					prev[email] = PublishedOf(&o)
				case r < 9 || shape == "duplicate at the boundary": // new
				default: // removed: published, no decision now
					prev[email] = PublishedOf(&d)
					continue
				}
				next = append(next, d)
			}
			switch shape {
			case "unsorted":
				rng.Shuffle(len(next), func(i, j int) { next[i], next[j] = next[j], next[i] })
			case "duplicate at the boundary":
				// Every published email is decided but one, which only
				// the boundary check shows: its decision now carries the
				// email before it.
				mid := len(next) / 2
				prev[next[mid].Email] = PublishedOf(&next[mid])
				prev[next[mid-1].Email] = PublishedOf(&next[mid-1])
				next[mid].Email = next[mid-1].Email
			}
			got, want := Diff(prev, next), oneByOne(prev, next)
			split := func(d Delta) (kept, removed []Change) {
				for _, c := range d.Changes {
					if c.New == nil {
						removed = append(removed, c)
					} else {
						kept = append(kept, c)
					}
				}
				slices.SortFunc(removed, func(a, b Change) int { return strings.Compare(a.Email, b.Email) })
				return kept, removed
			}
			gk, gr := split(got)
			wk, wr := split(want)
			if !reflect.DeepEqual(gk, wk) || !reflect.DeepEqual(gr, wr) {
				t.Fatalf("changes differ: %d+%d removals against %d+%d", len(gk), len(gr), len(wk), len(wr))
			}
			got.Changes, want.Changes = nil, nil
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("counts\ngot  %+v\nwant %+v", got, want)
			}
			if want.Updated == 0 || want.Added == 0 || want.Removed == 0 || want.Unchanged == 0 {
				t.Fatalf("the random state exercises too little: %+v", want)
			}
			if shape == "duplicate at the boundary" && want.Removed != 1 {
				t.Fatalf("the random state exercises too little: %+v", want)
			}
		})
	}
}

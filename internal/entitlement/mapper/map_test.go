package mapper

import (
	"github.com/dirsync/dirsync/entitlement"

	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/directory"
)

var now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// fixture builds a snapshot: groups by name with members by email and
// subgroups by name.
type fixture struct {
	users  []directory.User
	groups []struct {
		name      string
		members   []string
		subgroups []string
	}
}

func (f *fixture) user(email string, mods ...func(*directory.User)) *fixture {
	u := directory.User{ID: "id-" + email, Email: email, DN: "CN=" + email + ",DC=acme,DC=example"}
	for _, m := range mods {
		m(&u)
	}
	f.users = append(f.users, u)
	return f
}

func (f *fixture) group(name string, members []string, subgroups ...string) *fixture {
	f.groups = append(f.groups, struct {
		name      string
		members   []string
		subgroups []string
	}{name, members, subgroups})
	return f
}

func (f *fixture) snapshot(t *testing.T) *directory.Snapshot {
	t.Helper()
	s := &directory.Snapshot{Source: "test", Users: f.users}
	userIdx := map[string]int32{}
	for i, u := range f.users {
		userIdx[u.Email] = int32(i)
	}
	groupIdx := map[string]int32{}
	for i, g := range f.groups {
		dn := "CN=" + g.name + ",OU=Groups,DC=acme,DC=example"
		s.Groups = append(s.Groups, directory.Group{Ref: directory.NormalizeDN(dn), Name: g.name, DN: dn})
		groupIdx[g.name] = int32(i)
	}
	for i, g := range f.groups {
		for _, m := range g.members {
			u, ok := userIdx[m]
			if !ok {
				t.Fatalf("fixture: unknown user %s", m)
			}
			s.Groups[i].Members = append(s.Groups[i].Members, u)
		}
		for _, sg := range g.subgroups {
			s.Groups[i].Subgroups = append(s.Groups[i].Subgroups, groupIdx[sg])
		}
	}
	return s
}

func status(st directory.Status) func(*directory.User) {
	return func(u *directory.User) { u.Status = st }
}

func expires(t time.Time) func(*directory.User) {
	return func(u *directory.User) { u.ExpiresAt = t }
}

var policy = Policy{
	Account:        "acme",
	ClaimedDomains: []string{"acme.example"},
	Bindings: []Binding{
		{Group: "CN=Pro,OU=Groups,DC=acme,DC=example", Permission: entitlement.PermissionPro},
		{Group: "cn=basic, ou=groups, dc=acme, dc=example", Permission: entitlement.PermissionBasic},
	},
}

func TestMapRules(t *testing.T) {
	f := (&fixture{}).
		user("pro@acme.example").
		user("basic@acme.example").
		user("both@acme.example").
		user("nested@acme.example").
		user("cycle@acme.example").
		user("nogroup@acme.example").
		user("suspended@acme.example", status(directory.StatusSuspended)).
		user("inactive@acme.example", status(directory.StatusInactive)).
		user("expired@acme.example", expires(now.Add(-time.Second))).
		user("expiresnow@acme.example", expires(now)).
		user("future@acme.example", expires(now.Add(time.Hour))).
		user("locked@acme.example", status(directory.StatusLockedOut)).
		user("suspendedlocked@acme.example", status(directory.StatusSuspended)).
		user("outsider@other.example").
		group("Pro", []string{"pro@acme.example", "both@acme.example", "suspended@acme.example", "inactive@acme.example",
			"expired@acme.example", "expiresnow@acme.example", "future@acme.example", "locked@acme.example", "outsider@other.example"}, "Eng").
		group("Basic", []string{"basic@acme.example", "both@acme.example", "suspendedlocked@acme.example"}).
		group("Eng", nil, "Team").
		group("Team", []string{"nested@acme.example"}, "Loop").
		group("Loop", []string{"cycle@acme.example"}, "Eng")
	res := Map(policy, f.snapshot(t), now)

	tests := []struct {
		email      string
		wantAllow  bool
		wantPerm   entitlement.Permission
		wantReason entitlement.Reason
	}{
		{"pro@acme.example", true, entitlement.PermissionPro, entitlement.ReasonGranted},
		{"basic@acme.example", true, entitlement.PermissionBasic, entitlement.ReasonGranted},
		{"both@acme.example", true, entitlement.PermissionPro, entitlement.ReasonGranted},
		{"nested@acme.example", true, entitlement.PermissionPro, entitlement.ReasonGranted},
		{"cycle@acme.example", true, entitlement.PermissionPro, entitlement.ReasonGranted},
		{"nogroup@acme.example", false, entitlement.PermissionNone, entitlement.ReasonNoPermission},
		{"suspended@acme.example", false, entitlement.PermissionNone, entitlement.ReasonSuspended},
		{"inactive@acme.example", false, entitlement.PermissionNone, entitlement.ReasonInactive},
		{"expired@acme.example", false, entitlement.PermissionNone, entitlement.ReasonInactive},
		{"expiresnow@acme.example", false, entitlement.PermissionNone, entitlement.ReasonInactive},
		{"future@acme.example", true, entitlement.PermissionPro, entitlement.ReasonGranted},
		{"locked@acme.example", false, entitlement.PermissionNone, entitlement.ReasonLockedOut},
		{"suspendedlocked@acme.example", false, entitlement.PermissionNone, entitlement.ReasonSuspended},
	}
	got := map[string]entitlement.Decision{}
	for _, d := range res.Decisions {
		got[d.Email] = d
	}
	for _, tt := range tests {
		d, ok := got[tt.email]
		if !ok {
			t.Errorf("%s: no decision", tt.email)
			continue
		}
		if d.Allowed != tt.wantAllow || d.Permission != tt.wantPerm || d.Reason != tt.wantReason {
			t.Errorf("%s: got allowed=%t permission=%s reason=%s; want %t %s %s", tt.email, d.Allowed, d.Permission, d.Reason, tt.wantAllow, tt.wantPerm, tt.wantReason)
		}
		if d.Capabilities != entitlement.CapabilitiesOf(tt.wantPerm) {
			t.Errorf("%s: capabilities %+v for %s", tt.email, d.Capabilities, tt.wantPerm)
		}
		if d.Account != "acme" || d.UserID != "id-"+tt.email {
			t.Errorf("%s: account %q user_id %q", tt.email, d.Account, d.UserID)
		}
		if !d.Allowed && len(d.Via) != 0 {
			t.Errorf("%s: denied but via %v", tt.email, d.Via)
		}
	}
	if _, ok := got["outsider@other.example"]; ok {
		t.Error("user outside claimed domains was given a decision")
	}
	if res.Stats.DomainNotClaimed != 1 || res.Stats.Decisions != len(tests) {
		t.Errorf("stats: domain_not_claimed=%d decisions=%d; want 1, %d", res.Stats.DomainNotClaimed, res.Stats.Decisions, len(tests))
	}
	if !res.NextExpiry.Equal(now.Add(time.Hour)) {
		t.Errorf("NextExpiry = %v; want %v", res.NextExpiry, now.Add(time.Hour))
	}
	cycle := got["cycle@acme.example"].Detail.Paths
	if len(cycle) != 1 || len(cycle[0].Groups) != 4 || cycle[0].Groups[3] != "CN=Loop,OU=Groups,DC=acme,DC=example" {
		t.Errorf("cycle path = %+v; want Pro → Eng → Team → Loop", cycle)
	}
	if v := got["both@acme.example"].Via; len(v) != 1 || v[0] != "CN=Pro,OU=Groups,DC=acme,DC=example" {
		t.Errorf("both via = %v; want only the pro group", v)
	}
	if p := got["suspended@acme.example"].Detail.Paths; len(p) != 1 {
		t.Errorf("suspended user's explanation lost its group path: %+v", p)
	}
}

func TestMapAccessGroup(t *testing.T) {
	f := (&fixture{}).
		user("in@acme.example").
		user("out@acme.example").
		user("suspended@acme.example", status(directory.StatusSuspended)).
		group("Pro", []string{"in@acme.example", "out@acme.example", "suspended@acme.example"}).
		group("Basic", nil).
		group("Staff", nil, "Nested").
		group("Nested", []string{"in@acme.example"})
	p := policy
	p.AccessGroup = "CN=Staff,OU=Groups,DC=acme,DC=example"
	res := Map(p, f.snapshot(t), now)
	want := map[string]entitlement.Reason{
		"in@acme.example":        entitlement.ReasonGranted,
		"out@acme.example":       entitlement.ReasonNotInAccessGroup,
		"suspended@acme.example": entitlement.ReasonSuspended, // account state comes first
	}
	for _, d := range res.Decisions {
		if d.Reason != want[d.Email] {
			t.Errorf("%s: reason %s; want %s", d.Email, d.Reason, want[d.Email])
		}
	}

	p.AccessGroup = "CN=Missing,DC=acme,DC=example"
	res = Map(p, f.snapshot(t), now)
	if len(res.Problems) == 0 || res.Problems[0].Code != ProblemAccessGroupNotFound {
		t.Errorf("missing access group: problems %+v", res.Problems)
	}
	for _, d := range res.Decisions {
		if d.Allowed {
			t.Errorf("%s allowed although the access group does not exist", d.Email)
		}
	}
}

func TestMapBindingResolution(t *testing.T) {
	f := (&fixture{}).
		user("a@acme.example").
		user("b@acme.example").
		group("Pro", []string{"a@acme.example"}).
		group("Dup", []string{"b@acme.example"}).
		group("Dup", nil).
		// Groups whose names are another group's reference, or whose DN
		// folds onto one only with Unicode case folding.
		group("CN=Gone,OU=Groups,DC=acme,DC=example", []string{"b@acme.example"}).
		group("00g1a2b3c4d5e6f7g8h9", []string{"b@acme.example"}).
		group("0b6c1b6e-1f2a-4c3d-9e8f-0a1b2c3d4e5f", []string{"b@acme.example"}).
		group("\u212Aitchen", []string{"b@acme.example"})
	tests := []struct {
		name        string
		give        string
		wantAllowed bool
		wantProblem string
	}{
		// A DN- or id-bound group that is gone is not found, even though a
		// group is *named* that string; a DN differing only by a look-alike
		// letter is another DN.
		{"gone dn, group named like it", "CN=Gone,OU=Groups,DC=acme,DC=example", false, ProblemBindingNotFound},
		{"gone okta id, group named like it", "00g1a2b3c4d5e6f7g8h9", false, ProblemBindingNotFound},
		{"gone uuid, group named like it", "0b6c1b6e-1f2a-4c3d-9e8f-0a1b2c3d4e5f", false, ProblemBindingNotFound},
		{"kelvin sign look-alike dn", "CN=Kitchen,OU=Groups,DC=acme,DC=example", false, ProblemBindingNotFound},
		{"dn exact", "CN=Pro,OU=Groups,DC=acme,DC=example", true, ""},
		{"dn other case and spacing", "cn=PRO , ou=Groups,dc=ACME, dc=example", true, ""},
		{"name", "Pro", true, ""},
		{"missing", "CN=Nope,DC=acme,DC=example", false, ProblemBindingNotFound},
		{"ambiguous name", "Dup", false, ProblemBindingAmbiguous},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Policy{Account: "acme", ClaimedDomains: []string{"acme.example"}, Bindings: []Binding{{Group: tt.give, Permission: entitlement.PermissionPro}}}
			res := Map(p, f.snapshot(t), now)
			var a entitlement.Decision
			for _, d := range res.Decisions {
				if d.Email == "a@acme.example" {
					a = d
				}
			}
			if tt.wantProblem != "" {
				for _, d := range res.Decisions {
					if d.Allowed {
						t.Errorf("%s allowed through an ambiguous binding", d.Email)
					}
				}
			} else if a.Allowed != tt.wantAllowed {
				t.Errorf("a allowed = %t; want %t", a.Allowed, tt.wantAllowed)
			}
			gotProblem := ""
			if len(res.Problems) > 0 {
				gotProblem = res.Problems[0].Code
			}
			if gotProblem != tt.wantProblem {
				t.Errorf("problem = %q; want %q", gotProblem, tt.wantProblem)
			}
			if res.Bindings[0].Found != (tt.wantProblem == "") {
				t.Errorf("binding found = %t", res.Bindings[0].Found)
			}
		})
	}
}

// TestMapDuplicateEmails (issue 12 item 11): an email several directory
// objects carry is decided by the one active object only when every other
// one is an old account disabled (and untouched) before the active one was
// created; otherwise it is denied duplicate_identity. It used to be decided
// by the "most usable" object, so any active object carrying a suspended
// user's address kept that user allowed. Every case runs in every order of
// the holders: the outcome must not depend on read order.
func TestMapDuplicateEmails(t *testing.T) {
	t0 := now.Add(-365 * 24 * time.Hour).Unix() // a year ago
	day := int64(24 * 3600)
	type obj struct {
		status           directory.Status
		created, changed int64
		expires          time.Time
		inPro            bool
	}
	active := func(created int64) obj {
		return obj{status: directory.StatusActive, created: created, changed: created, inPro: true}
	}
	disabled := func(st directory.Status, changed int64) obj {
		return obj{status: st, created: changed - 100*day, changed: changed, inPro: true}
	}
	tests := []struct {
		name        string
		objs        []obj
		wantReason  entitlement.Reason
		wantAllowed bool
		wantProblem string
	}{
		{"old disabled account, then a new one", []obj{disabled(directory.StatusSuspended, t0), active(t0 + day)},
			entitlement.ReasonGranted, true, ProblemDuplicateEmail},
		{"old deprovisioned account, then a new one", []obj{disabled(directory.StatusInactive, t0), active(t0 + day)},
			entitlement.ReasonGranted, true, ProblemDuplicateEmail},
		{"two old accounts, then a new one", []obj{disabled(directory.StatusSuspended, t0), disabled(directory.StatusSuspended, t0+day), active(t0 + 2*day)},
			entitlement.ReasonGranted, true, ProblemDuplicateEmail},
		{"suspended after the active one was created", []obj{disabled(directory.StatusSuspended, t0+day), active(t0)},
			entitlement.ReasonDuplicateIdentity, false, ProblemDuplicateIdentity},
		{"suspended the second the active one was created", []obj{disabled(directory.StatusSuspended, t0), active(t0)},
			entitlement.ReasonDuplicateIdentity, false, ProblemDuplicateIdentity},
		{"two active objects", []obj{active(t0), active(t0 + day)},
			entitlement.ReasonDuplicateIdentity, false, ProblemDuplicateIdentity},
		{"an active object without groups and an active one with", []obj{{status: directory.StatusActive, created: t0, changed: t0}, active(t0 + day)},
			entitlement.ReasonDuplicateIdentity, false, ProblemDuplicateIdentity},
		{"two active and an old disabled", []obj{disabled(directory.StatusSuspended, t0), active(t0 + day), active(t0 + 2*day)},
			entitlement.ReasonDuplicateIdentity, false, ProblemDuplicateIdentity},
		{"no timestamps (no evidence)", []obj{{status: directory.StatusSuspended, inPro: true}, {status: directory.StatusActive, inPro: true}},
			entitlement.ReasonDuplicateIdentity, false, ProblemDuplicateIdentity},
		{"active one's creation unknown", []obj{disabled(directory.StatusSuspended, t0), {status: directory.StatusActive, changed: t0 + day, inPro: true}},
			entitlement.ReasonDuplicateIdentity, false, ProblemDuplicateIdentity},
		{"disabled one's last change unknown", []obj{{status: directory.StatusSuspended, created: t0, inPro: true}, active(t0 + day)},
			entitlement.ReasonDuplicateIdentity, false, ProblemDuplicateIdentity},
		{"an older locked-out account is a live one", []obj{disabled(directory.StatusLockedOut, t0), active(t0 + day)},
			entitlement.ReasonDuplicateIdentity, false, ProblemDuplicateIdentity},
		{"expired before the active one was created", []obj{{status: directory.StatusActive, created: t0 - day, changed: t0 - day, expires: time.Unix(t0, 0), inPro: true}, active(t0 + day)},
			entitlement.ReasonGranted, true, ProblemDuplicateEmail},
		{"expired after the active one was created", []obj{{status: directory.StatusActive, created: t0 - day, changed: t0 - day, expires: time.Unix(t0+2*day, 0), inPro: true}, active(t0 + day)},
			entitlement.ReasonDuplicateIdentity, false, ProblemDuplicateIdentity},
		{"two suspended", []obj{disabled(directory.StatusSuspended, t0), disabled(directory.StatusSuspended, t0+day)},
			entitlement.ReasonSuspended, false, ProblemDuplicateEmail},
		{"suspended and locked out", []obj{disabled(directory.StatusLockedOut, t0), disabled(directory.StatusSuspended, t0+day)},
			entitlement.ReasonSuspended, false, ProblemDuplicateEmail},
	}
	for _, tt := range tests {
		for _, order := range permutations(len(tt.objs)) {
			t.Run(fmt.Sprintf("%s/%v", tt.name, order), func(t *testing.T) {
				s := &directory.Snapshot{Source: "test", Groups: []directory.Group{{Ref: "cn=pro", Name: "Pro"}}}
				for _, i := range order {
					o := tt.objs[i]
					s.Users = append(s.Users, directory.User{ID: fmt.Sprintf("id-%d", i), DN: fmt.Sprintf("CN=dup%d,DC=acme,DC=example", i),
						Email: "dup@acme.example", Status: o.status, Created: o.created, Changed: o.changed, ExpiresAt: o.expires})
					if o.inPro {
						s.Groups[0].Members = append(s.Groups[0].Members, int32(len(s.Users)-1))
					}
				}
				s.Users = append(s.Users, directory.User{ID: "id-other", Email: "other@acme.example"})
				s.Groups[0].Members = append(s.Groups[0].Members, int32(len(s.Users)-1))
				p := Policy{Account: "acme", ClaimedDomains: []string{"acme.example"}, Bindings: []Binding{{Group: "Pro", Permission: entitlement.PermissionPro}}}
				res := Map(p, s, now)
				if len(res.Decisions) != 2 || res.Stats.DuplicateEmails != len(tt.objs)-1 {
					t.Fatalf("decisions %+v stats %+v", res.Decisions, res.Stats)
				}
				d := res.Decisions[0]
				if d.Email != "dup@acme.example" || d.Reason != tt.wantReason || d.Allowed != tt.wantAllowed {
					t.Errorf("decision %+v; want reason %s allowed %t", d, tt.wantReason, tt.wantAllowed)
				}
				if other := res.Decisions[1]; !other.Allowed {
					t.Errorf("an unrelated user was denied: %+v", other)
				}
				if len(res.Problems) != 1 || res.Problems[0].Code != tt.wantProblem {
					t.Errorf("problems %+v; want one %s", res.Problems, tt.wantProblem)
				}
				conflict := tt.wantReason == entitlement.ReasonDuplicateIdentity
				if got := res.Stats.DuplicateIdentities; got != map[bool]int{true: 1}[conflict] {
					t.Errorf("duplicate identities = %d", got)
				}
				if conflict {
					if d.UserID != "" || d.Permission != entitlement.PermissionNone || d.Capabilities != (entitlement.Capabilities{}) || len(d.Via) != 0 {
						t.Errorf("a duplicate_identity denial names a user or grants something: %+v", d)
					}
					for i := range tt.objs {
						if dn := fmt.Sprintf("CN=dup%d,", i); d.Detail == nil || !strings.Contains(d.Detail.Rule, dn) {
							t.Errorf("rule does not name holder %s: %+v", dn, d.Detail)
						}
					}
					if !AccountStateDenial(d.Reason) {
						t.Error("duplicate_identity is not an account-state denial: a hold would keep the user signed in")
					}
				}
			})
		}
	}
}

// permutations returns every order of 0..n-1.
func permutations(n int) [][]int {
	if n == 1 {
		return [][]int{{0}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := append(append(append([]int{}, p[:i]...), n-1), p[i:]...)
			out = append(out, q)
		}
	}
	return out
}

func TestMapIsPure(t *testing.T) {
	f := (&fixture{}).user("a@acme.example").group("Pro", []string{"a@acme.example"}).group("Basic", nil)
	s := f.snapshot(t)
	a, b := Map(policy, s, now), Map(policy, s, now)
	if Fingerprint(&a.Decisions[0]) != Fingerprint(&b.Decisions[0]) {
		t.Error("same input gave different decisions")
	}
	later := Map(policy, s, now.Add(time.Hour))
	if Fingerprint(&a.Decisions[0]) != Fingerprint(&later.Decisions[0]) {
		t.Error("fingerprint depends on the evaluation time")
	}
}

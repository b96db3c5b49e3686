package okta

import (
	"testing"
	"time"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/entitlement/mapper"
	"github.com/dirsync/dirsync/internal/testsupport/oktafake"
)

// TestSharedProfileEmail (issue 12 item 11), through the real SDK against
// oktafake: an active user who sets profile.email to a suspended user's
// address used to make that address "most usable" and keep the suspended
// user allowed. An address two users carry keys each by login (unique in
// an Okta org); users whose logins are not addresses keep the shared email
// and the mapper decides by Okta's created/lastUpdated.
func TestSharedProfileEmail(t *testing.T) {
	f := oktafake.New(oktafake.Options{RateLimit: 100000})
	t.Cleanup(f.Close)
	pro := f.AddGroup("Pro", oktafake.GroupOkta)
	add := func(login, email string) string {
		id := f.AddUser(oktafake.UserSpec{Login: login, Email: email, FirstName: "F", LastName: "L"})
		f.AddMember(pro, id)
		return id
	}
	victim := add("victim@acme.example", "victim@acme.example")
	attacker := add("attacker@acme.example", "attacker@acme.example")
	// Logins that are not addresses: the email is all there is.
	twinA := add("twin-a", "twin@acme.example")
	add("twin-b", "twin@acme.example")
	oldKim := add("kim.old", "kim@acme.example")
	f.SetStatus(oldKim, oktafake.StatusSuspended)
	f.Advance(time.Hour)
	add("kim", "kim@acme.example") // created after the old account was suspended
	f.Advance(time.Hour)
	f.SetStatus(victim, oktafake.StatusSuspended)
	f.SetEmail(attacker, "Victim@acme.example")

	policy := mapper.Policy{Account: "acme", ClaimedDomains: []string{"acme.example"},
		Bindings: []mapper.Binding{{Group: pro, Permission: entitlement.PermissionPro}}}
	p := newPoller(t, f, []string{pro}, nil)
	check := func(what string, snap *directory.Snapshot, want map[string]entitlement.Reason) {
		t.Helper()
		res := mapper.Map(policy, snap, time.Now())
		got := map[string]entitlement.Reason{}
		for _, d := range res.Decisions {
			got[d.Email] = d.Reason
			if d.Allowed != (d.Reason == entitlement.ReasonGranted) {
				t.Errorf("%s: %s allowed=%t with reason %s", what, d.Email, d.Allowed, d.Reason)
			}
		}
		for email, reason := range want {
			if got[email] != reason {
				t.Errorf("%s: %s = %q; want %q (all: %v)", what, email, got[email], reason, got)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: decisions %v; want %v", what, got, want)
		}
	}
	snap, err := p.Snapshot(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	check("full read", snap, map[string]entitlement.Reason{
		"victim@acme.example":   entitlement.ReasonSuspended, // by login; the attacker's email is not unique
		"attacker@acme.example": entitlement.ReasonGranted,   // by login
		"twin@acme.example":     entitlement.ReasonDuplicateIdentity,
		"kim@acme.example":      entitlement.ReasonGranted, // the old account was suspended before kim existed
	})
	// Touching the old account after kim was created removes the evidence;
	// an incremental pass sees it like a full one.
	f.Advance(time.Hour)
	f.SetEmail(oldKim, "kim@acme.example")
	f.SetEmail(twinA, "twin-a@acme.example") // the twins are told apart again
	snap, changed, err := p.Incremental(testContext(t))
	if err != nil || !changed {
		t.Fatalf("incremental: changed=%t err=%v", changed, err)
	}
	check("incremental read", snap, map[string]entitlement.Reason{
		"victim@acme.example":   entitlement.ReasonSuspended,
		"attacker@acme.example": entitlement.ReasonGranted,
		"twin@acme.example":     entitlement.ReasonGranted,
		"twin-a@acme.example":   entitlement.ReasonGranted,
		"kim@acme.example":      entitlement.ReasonDuplicateIdentity,
	})
}

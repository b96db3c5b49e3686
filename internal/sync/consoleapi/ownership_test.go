package consoleapi_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/entitlement/console"
	"github.com/dirsync/dirsync/internal/entitlement/mapper"
)

// openWith starts a console service on the fixture's database and cache
// with its own view of the configured accounts: one replica's config.
func (f *fixture) openWith(accounts ...console.Account) *console.Service {
	f.t.Helper()
	svc, err := console.Open(context.Background(), console.Options{DSN: f.dsn, Accounts: accounts, Cache: f.cache})
	if err != nil {
		f.t.Fatalf("open console: %v", err)
	}
	f.t.Cleanup(svc.Close)
	return svc
}

// expectItem checks a one-email action's outcome.
func expectItem(t *testing.T, step string, res console.Result, err error, result string, code console.Code, msg string) {
	t.Helper()
	if err != nil || len(res.Items) != 1 {
		t.Fatalf("%s: %+v, %v", step, res, err)
	}
	it := res.Items[0]
	if it.Result != result || it.Code != code || !strings.Contains(it.Error, msg) {
		t.Fatalf("%s: item %+v; want result %q code %q error containing %q", step, it, result, code, msg)
	}
}

func hasProblem(problems []mapper.Problem, code, contains string) bool {
	for _, p := range problems {
		if p.Code == code && strings.Contains(p.Message, contains) {
			return true
		}
	}
	return false
}

// TestClaimedDomainWinsOverTeamInvitation (issue 12 item 7): bob is a
// member of team crew; then a config change lets directory account acme
// claim bob's domain, and acme's sync publishes bob and suspends him. No
// later team action or resync turns that back into allowed: on a replica
// with the new config the team's actions on bob are refused and its resync
// leaves him out, and on a replica still on the old config the cache
// refuses the team's writes; every refusal is reported. A team member
// whose domain nobody claims keeps working throughout.
func TestClaimedDomainWinsOverTeamInvitation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	crew := console.Account{ID: "crew", Kind: console.KindTeam}
	acme := console.Account{ID: "acme", Kind: console.KindDirectory, ClaimedDomains: []string{"acme.example"}, DirectoryType: "active_directory"}
	before := f.openWith(crew)      // config before acme claims acme.example
	after := f.openWith(crew, acme) // config after

	for _, email := range []string{"bob@acme.example", "carol@free.example"} {
		if res, err := before.Invite(ctx, "admin", "crew", []string{email}, "pro"); err != nil || res.Applied != 1 {
			t.Fatalf("invite %s: %+v, %v", email, res, err)
		}
		if res, err := before.Accept(ctx, email, "crew", email); err != nil || res.Applied != 1 {
			t.Fatalf("accept %s: %+v, %v", email, res, err)
		}
	}
	f.expectDecision("bob@acme.example", "crew", true, entitlement.PermissionPro, entitlement.ReasonGranted)

	// acme's directory sync (the engine writes exactly so: Diff against
	// acme's index, Apply with the account's claim) publishes bob, then
	// suspends him.
	acmeSync := func(d entitlement.Decision) {
		t.Helper()
		prev, err := f.cache.Published(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		if err := f.cache.Apply(ctx, "acme", mapper.Diff(prev, []entitlement.Decision{d}).Changes, time.Now()); err != nil {
			t.Fatalf("acme's sync: %v", err)
		}
	}
	bobAcme := entitlement.Decision{Email: "bob@acme.example", Account: "acme", Allowed: true, Permission: entitlement.PermissionBasic,
		Reason: entitlement.ReasonGranted, Capabilities: entitlement.CapabilitiesOf(entitlement.PermissionBasic), UserID: "guid-bob", Via: []string{"CN=Basic"}}
	acmeSync(bobAcme)
	f.expectDecision("bob@acme.example", "acme", true, entitlement.PermissionBasic, entitlement.ReasonGranted)
	bobAcme.Allowed, bobAcme.Permission, bobAcme.Reason, bobAcme.Via = false, entitlement.PermissionNone, entitlement.ReasonSuspended, []string{}
	bobAcme.Capabilities = entitlement.CapabilitiesOf(entitlement.PermissionNone)
	acmeSync(bobAcme)
	suspendedByAcme := func(step string) {
		t.Helper()
		if d := f.decision("bob@acme.example"); d.Account != "acme" || d.Allowed || d.Reason != entitlement.ReasonSuspended {
			t.Fatalf("%s: bob = %+v; want acme's suspension", step, d)
		}
	}
	suspendedByAcme("acme's sync")

	// New config: the team's action on bob is refused, naming the owner.
	res, err := after.SetPermission(ctx, "admin", "crew", []string{"bob@acme.example"}, "basic")
	suspendedByAcme("team action, new config")
	expectItem(t, "set permission (new config)", res, err, console.ResultRejected, console.CodeConflict, `claimed by account "acme"`)
	// Its resync leaves bob out (and drops him from crew's index) and
	// reports it; carol is untouched.
	rr, err := after.Resync(ctx, "crew", console.ResyncOptions{})
	suspendedByAcme("team resync, new config")
	if err != nil || !hasProblem(rr.Problems, console.ProblemClaimedByAnotherAccount, "bob@acme.example (claimed by acme)") {
		t.Fatalf("resync (new config) = %+v, %v; want a claimed_by_another_account problem naming bob", rr, err)
	}
	if idx, _ := f.cache.Published(ctx, "crew"); len(idx) != 1 || !idx["carol@free.example"].Allowed {
		t.Errorf("crew's index = %v; want carol only", idx)
	}
	f.expectDecision("carol@free.example", "crew", true, entitlement.PermissionPro, entitlement.ReasonGranted)
	if st, _, _ := f.cache.Status(ctx, "crew"); st.Users != 1 {
		t.Errorf("crew's status counts %d users; want 1 (bob is acme's)", st.Users)
	}

	// A replica still on the old config: the cache refuses the team's
	// write over acme's key; the item is rejected and nothing changes.
	res, err = before.SetPermission(ctx, "admin", "crew", []string{"bob@acme.example", "carol@free.example"}, "basic")
	suspendedByAcme("team action, old config")
	if err != nil || len(res.Items) != 2 || res.Applied != 1 || res.Rejected != 1 {
		t.Fatalf("set permission (old config) = %+v, %v", res, err)
	}
	if it := res.Items[0]; it.Result != console.ResultRejected || it.Code != console.CodeConflict || !strings.Contains(it.Error, `held in the access cache by account "acme"`) {
		t.Fatalf("bob's item (old config) = %+v", it)
	}
	f.expectDecision("carol@free.example", "crew", true, entitlement.PermissionBasic, entitlement.ReasonGranted)
	if page, _ := before.Members(ctx, "crew", console.ListOptions{}); len(page.Members) != 2 || page.Members[0].Permission != entitlement.PermissionPro {
		t.Errorf("members = %+v; the refused change of bob's permission was stored", page.Members)
	}
	rr, err = before.Resync(ctx, "crew", console.ResyncOptions{})
	suspendedByAcme("team resync, old config")
	if err != nil || !hasProblem(rr.Problems, console.ProblemKeyHeldByAnotherAccount, "bob@acme.example (held by acme)") {
		t.Fatalf("resync (old config) = %+v, %v; want a key_held_by_another_account problem naming bob", rr, err)
	}

	// The team may still remove bob: its own records change, the cache
	// keeps acme's decision.
	res, err = after.Remove(ctx, "admin", "crew", []string{"bob@acme.example"})
	expectItem(t, "remove (new config)", res, err, console.ResultRemoved, "", "")
	if res.Items[0].Decision != nil {
		t.Errorf("remove answered decision %+v; crew publishes none for bob", res.Items[0].Decision)
	}
	suspendedByAcme("team removal")
	f.expectDecision("carol@free.example", "crew", true, entitlement.PermissionBasic, entitlement.ReasonGranted)
}

// TestRegistrationEndsTeamMembership: console enterprise initech starts
// claiming dan's domain while dan is a member of team crew. Dan's
// registration in initech ends the team membership (audited in crew); the
// enterprise's suspension then stands against the team, on the old config
// and the new.
func TestRegistrationEndsTeamMembership(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	crew := console.Account{ID: "crew", Kind: console.KindTeam}
	initech := console.Account{ID: "initech", Kind: console.KindEnterprise, ClaimedDomains: []string{"initech.example"}, AutoJoinPermission: entitlement.PermissionBasic}
	before := f.openWith(crew)
	after := f.openWith(crew, initech)
	const dan = "dan@initech.example"
	if _, err := before.Invite(ctx, "admin", "crew", []string{dan}, "pro"); err != nil {
		t.Fatal(err)
	}
	if _, err := before.Accept(ctx, dan, "crew", dan); err != nil {
		t.Fatal(err)
	}
	f.expectDecision(dan, "crew", true, entitlement.PermissionPro, entitlement.ReasonGranted)

	res, err := after.Register(ctx, dan, "initech", dan)
	expectItem(t, "register", res, err, console.ResultJoined, "", "")
	f.expectDecision(dan, "initech", true, entitlement.PermissionBasic, entitlement.ReasonGranted)
	if page, _ := after.Members(ctx, "crew", console.ListOptions{}); len(page.Members) != 0 {
		t.Errorf("crew still lists %+v", page.Members)
	}
	audit, err := after.Audit(ctx, "crew", 0, 10)
	if err != nil || len(audit) == 0 || audit[0].Action != "remove" || !strings.Contains(string(audit[0].Detail), `"claimed_by": "initech"`) {
		t.Errorf("crew's audit = %+v, %v; want the membership's end, naming initech", audit, err)
	}
	if _, err := after.Suspend(ctx, "admin", "initech", []string{dan}); err != nil {
		t.Fatal(err)
	}
	suspended := func(step string) {
		t.Helper()
		f.expectDecision(dan, "initech", false, entitlement.PermissionNone, entitlement.ReasonSuspended)
	}
	suspended("initech's suspension")

	// The old config's replica: its team resync would publish
	// removed_from_team over initech's key; the cache refuses it.
	rr, err := before.Resync(ctx, "crew", console.ResyncOptions{})
	suspended("team resync, old config")
	if err != nil || !hasProblem(rr.Problems, console.ProblemKeyHeldByAnotherAccount, dan) {
		t.Fatalf("resync (old config) = %+v, %v", rr, err)
	}
	res, err = before.Invite(ctx, "admin", "crew", []string{dan}, "pro")
	expectItem(t, "invite again (old config)", res, err, console.ResultRejected, console.CodeConflict, "member of, another account")
	suspended("team invitation, old config")
	rr, err = after.Resync(ctx, "crew", console.ResyncOptions{})
	if err != nil || !hasProblem(rr.Problems, console.ProblemClaimedByAnotherAccount, dan) {
		t.Fatalf("resync (new config) = %+v, %v", rr, err)
	}
	suspended("team resync, new config")
}

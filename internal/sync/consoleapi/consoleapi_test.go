package consoleapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/store"

	"github.com/redis/go-redis/v9"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/entitlement/console"
	"github.com/dirsync/dirsync/internal/sync/apimux"
	"github.com/dirsync/dirsync/internal/sync/consoleapi"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

var sharedPG servertest.SharedPostgres

func TestMain(m *testing.M) {
	code := m.Run()
	sharedPG.Close()
	os.Exit(code)
}

const token = "test-admin-token"

// Accounts used by every test: two teams, a console enterprise, and a
// directory-backed enterprise.
func testAccounts() []console.Account {
	return []console.Account{
		{ID: "team1", Kind: console.KindTeam},
		{ID: "team2", Kind: console.KindTeam},
		{ID: "globex", Kind: console.KindEnterprise, ClaimedDomains: []string{"globex.example"}, AutoJoinPermission: entitlement.PermissionBasic},
		{ID: "acme", Kind: console.KindDirectory, ClaimedDomains: []string{"acme.example"}, DirectoryType: "active_directory"},
	}
}

type fixture struct {
	t      *testing.T
	dsn    string
	redis  *servertest.Redis
	client redis.UniversalClient
	cache  *store.Redis
	svc    *console.Service
	srv    *httptest.Server
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	pg := sharedPG.Get(t)
	f := &fixture{t: t, dsn: pg.CreateDatabase(t), redis: servertest.StartRedis(t)}
	f.client = redis.NewClient(&redis.Options{Addr: f.redis.Addr})
	t.Cleanup(func() { f.client.Close() })
	f.cache = store.NewRedis(f.client, "dirsync")
	f.svc = f.open()
	admin, err := apimux.NewToken("test", token)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(apimux.New(apimux.Options{Credentials: apimux.Credentials{Admin: admin}}, consoleapi.Routes(consoleapi.Options{Console: f.svc})))
	t.Cleanup(f.srv.Close)
	return f
}

// open starts a (further) service instance on the fixture's database: a
// replica.
func (f *fixture) open() *console.Service {
	f.t.Helper()
	svc, err := console.Open(context.Background(), console.Options{DSN: f.dsn, Accounts: testAccounts(), Cache: f.cache})
	if err != nil {
		f.t.Fatalf("open console: %v", err)
	}
	f.t.Cleanup(svc.Close)
	return svc
}

type reply struct {
	code int
	body map[string]any
	raw  string
}

func (f *fixture) call(method, path, body string) reply {
	f.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, f.srv.URL+path, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json") // JSON bodies must say so (a browser guard)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set(consoleapi.ActorHeader, "ops@team1.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{code: resp.StatusCode, raw: string(raw)}
	if err := json.Unmarshal(raw, &r.body); err != nil {
		f.t.Fatalf("%s %s: HTTP %d, not JSON: %s", method, path, resp.StatusCode, raw)
	}
	return r
}

func (f *fixture) expect(r reply, code int, errContains string) {
	f.t.Helper()
	if r.code != code {
		f.t.Fatalf("HTTP %d, want %d: %s", r.code, code, r.raw)
	}
	if errContains != "" && !strings.Contains(r.raw, errContains) {
		f.t.Fatalf("answer lacks %q: %s", errContains, r.raw)
	}
}

// decision reads the published decision exactly as sign-in does.
func (f *fixture) decision(email string) entitlement.Decision {
	f.t.Helper()
	d, err := accesscache.NewReader(f.client, "dirsync").Check(context.Background(), email)
	if err != nil {
		f.t.Fatalf("check %s: %v", email, err)
	}
	return d
}

func (f *fixture) expectDecision(email, account string, allowed bool, perm entitlement.Permission, reason entitlement.Reason) entitlement.Decision {
	f.t.Helper()
	d := f.decision(email)
	if d.Account != account || d.Allowed != allowed || d.Permission != perm || d.Reason != reason {
		f.t.Fatalf("%s: published {account %q allowed %t permission %s reason %s}, want {%q %t %s %s}",
			email, d.Account, d.Allowed, d.Permission, d.Reason, account, allowed, perm, reason)
	}
	if d.Capabilities != entitlement.CapabilitiesOf(perm) {
		f.t.Fatalf("%s: capabilities %+v for %s", email, d.Capabilities, perm)
	}
	if reason != entitlement.ReasonUnknownUser && (d.UserID == "" || d.SyncedAt.IsZero()) {
		f.t.Fatalf("%s: user_id %q synced_at %v", email, d.UserID, d.SyncedAt)
	}
	return d
}

func (f *fixture) members(account, query string) map[string]map[string]any {
	f.t.Helper()
	r := f.call("GET", "/v1/accounts/"+account+"/users"+query, "")
	f.expect(r, 200, "")
	out := map[string]map[string]any{}
	for _, m := range r.body["members"].([]any) {
		mm := m.(map[string]any)
		out[mm["email"].(string)] = mm
	}
	return out
}

func (f *fixture) auditCount(account string) int {
	f.t.Helper()
	r := f.call("GET", "/v1/accounts/"+account+"/audit?limit=1000", "")
	f.expect(r, 200, "")
	return len(r.body["entries"].([]any))
}

func TestTeamInviteAcceptAssignRemove(t *testing.T) {
	f := newFixture(t)
	const pending, granted = entitlement.ReasonInvitationPending, entitlement.ReasonGranted

	// One call, three addresses separated by ';', one malformed: two are
	// invited, the third reported.
	r := f.call("POST", "/v1/accounts/team1/invitations", `{"emails":"Alice@Example.com; not-an-email ;bob@other.org","permission":"pro"}`)
	f.expect(r, 200, `"not-an-email\" is not an email address`)
	if r.body["applied"] != 2.0 || r.body["rejected"] != 1.0 {
		t.Fatalf("invite: %s", r.raw)
	}
	f.expectDecision("alice@example.com", "team1", false, entitlement.PermissionNone, pending)
	f.expectDecision("bob@other.org", "team1", false, entitlement.PermissionNone, pending)
	f.expectDecision("not-an-email", "", false, entitlement.PermissionNone, entitlement.ReasonUnknownUser)

	// A duplicate invitation is refused and changes nothing.
	before := f.auditCount("team1")
	f.expect(f.call("POST", "/v1/accounts/team1/invitations", `{"emails":"alice@example.com","permission":"basic"}`), 409, "already has a pending invitation")
	if f.auditCount("team1") != before {
		t.Fatal("a refused invitation was audited")
	}
	// Addresses in a domain another account claims belong to it.
	f.expect(f.call("POST", "/v1/accounts/team1/invitations", `{"emails":["carol@acme.example"],"permission":"pro"}`), 409, `claimed by account \"acme\"`)
	f.expectDecision("carol@acme.example", "", false, entitlement.PermissionNone, entitlement.ReasonUnknownUser)

	// Accepting makes a paid Pro member and records the end of the trial.
	r = f.call("POST", "/v1/accounts/team1/invitations/alice@example.com/accept", "")
	f.expect(r, 200, `"accepted"`)
	d := f.expectDecision("alice@example.com", "team1", true, entitlement.PermissionPro, granted)
	if !d.Capabilities.HostMeetings {
		t.Fatal("pro cannot host")
	}
	ms := f.members("team1", "")
	if ms["alice@example.com"]["state"] != "member" || ms["alice@example.com"]["trial_ended_at"] == nil {
		t.Fatalf("alice in member list: %v", ms["alice@example.com"])
	}
	if ms["bob@other.org"]["state"] != "invited" || ms["bob@other.org"]["trial_ended_at"] != nil {
		t.Fatalf("bob in member list: %v", ms["bob@other.org"])
	}
	f.expect(f.call("POST", "/v1/accounts/team1/invitations/alice@example.com/accept", ""), 409, "already accepted")
	f.expect(f.call("POST", "/v1/accounts/team1/invitations/nobody@example.com/accept", ""), 404, "no pending invitation")

	// Pro → Basic.
	f.expect(f.call("PUT", "/v1/accounts/team1/users/alice@example.com/permission", `{"permission":"basic"}`), 200, `"updated"`)
	f.expectDecision("alice@example.com", "team1", true, entitlement.PermissionBasic, granted)
	r = f.call("PUT", "/v1/accounts/team1/users/alice@example.com/permission", `{"permission":"basic"}`)
	f.expect(r, 200, `"unchanged"`)

	// Team administrators cannot suspend.
	f.expect(f.call("POST", "/v1/accounts/team1/users/alice@example.com/suspend", ""), 403, "team administrators cannot suspend")
	f.expect(f.call("POST", "/v1/accounts/team1/bulk/suspend", `{"emails":["alice@example.com"]}`), 403, "cannot suspend")
	f.expectDecision("alice@example.com", "team1", true, entitlement.PermissionBasic, granted)

	// Remove: no permission, own reason, out of the member list.
	f.expect(f.call("DELETE", "/v1/accounts/team1/users/alice@example.com", ""), 200, `"removed"`)
	f.expectDecision("alice@example.com", "team1", false, entitlement.PermissionNone, entitlement.ReasonRemovedFromTeam)
	if _, listed := f.members("team1", "")["alice@example.com"]; listed {
		t.Fatal("removed user still in the member list")
	}
	f.expect(f.call("DELETE", "/v1/accounts/team1/users/alice@example.com", ""), 404, "not a member")
	// Removing a pending invitation revokes it: the email leaves the cache.
	f.expect(f.call("DELETE", "/v1/accounts/team1/users/bob@other.org", ""), 200, `"invitation_revoked"`)
	f.expectDecision("bob@other.org", "", false, entitlement.PermissionNone, entitlement.ReasonUnknownUser)

	// A removed user may be invited by another team; the old team's
	// resync does not take the email back.
	f.expect(f.call("POST", "/v1/accounts/team2/invitations", `{"emails":"alice@example.com","permission":"basic"}`), 200, `"invited"`)
	f.expectDecision("alice@example.com", "team2", false, entitlement.PermissionNone, pending)
	if _, err := f.svc.Resync(context.Background(), "team1", console.ResyncOptions{}); err != nil {
		t.Fatal(err)
	}
	f.expectDecision("alice@example.com", "team2", false, entitlement.PermissionNone, pending)
	// One account per email.
	f.expect(f.call("POST", "/v1/accounts/team1/invitations", `{"emails":"alice@example.com","permission":"pro"}`), 409, "another account")

	// The audit trail says who did what: the credential the request
	// authenticated with, and whom it says it acted for (X-Dirsync-Actor),
	// never the header alone.
	r = f.call("GET", "/v1/accounts/team1/audit", "")
	f.expect(r, 200, `"actor": "test for ops@team1.example"`)
	for _, action := range []string{`"invite"`, `"accept"`, `"set_permission"`, `"remove"`, `"revoke_invitation"`} {
		if !strings.Contains(r.raw, action) {
			t.Errorf("audit lacks %s: %s", action, r.raw)
		}
	}
}

func TestEnterpriseWithoutDirectory(t *testing.T) {
	f := newFixture(t)
	f.expect(f.call("POST", "/v1/accounts/globex/registrations", `{"email":"Erin@Globex.example"}`), 200, `"joined"`)
	f.expectDecision("erin@globex.example", "globex", true, entitlement.PermissionBasic, entitlement.ReasonGranted)
	f.expect(f.call("POST", "/v1/accounts/globex/registrations", `{"email":"erin@globex.example"}`), 409, "already registered")
	f.expect(f.call("POST", "/v1/accounts/globex/registrations", `{"email":"frank@elsewhere.example"}`), 400, "not in a domain claimed by account")
	f.expectDecision("frank@elsewhere.example", "", false, entitlement.PermissionNone, entitlement.ReasonUnknownUser)

	f.expect(f.call("PUT", "/v1/accounts/globex/users/erin@globex.example/permission", `{"permission":"pro"}`), 200, "")
	f.expectDecision("erin@globex.example", "globex", true, entitlement.PermissionPro, entitlement.ReasonGranted)

	f.expect(f.call("POST", "/v1/accounts/globex/users/erin@globex.example/suspend", ""), 200, `"suspended"`)
	f.expectDecision("erin@globex.example", "globex", false, entitlement.PermissionNone, entitlement.ReasonSuspended)
	f.expect(f.call("POST", "/v1/accounts/globex/users/erin@globex.example/suspend", ""), 200, `"unchanged"`)
	// Assigning a permission to a suspended user keeps them suspended.
	f.expect(f.call("PUT", "/v1/accounts/globex/users/erin@globex.example/permission", `{"permission":"basic"}`), 200, "")
	f.expectDecision("erin@globex.example", "globex", false, entitlement.PermissionNone, entitlement.ReasonSuspended)
	f.expect(f.call("POST", "/v1/accounts/globex/users/erin@globex.example/unsuspend", ""), 200, `"unsuspended"`)
	f.expectDecision("erin@globex.example", "globex", true, entitlement.PermissionBasic, entitlement.ReasonGranted)

	// Enterprise users join by registering and are suspended, not removed.
	f.expect(f.call("POST", "/v1/accounts/globex/invitations", `{"emails":"gina@globex.example","permission":"pro"}`), 403, "join when they register")
	f.expect(f.call("DELETE", "/v1/accounts/globex/users/erin@globex.example", ""), 403, "suspend them instead")
	f.expect(f.call("POST", "/v1/accounts/team1/registrations", `{"email":"erin@globex.example"}`), 403, "accepting an invitation")
	f.expect(f.call("POST", "/v1/accounts/globex/users/nobody@globex.example/suspend", ""), 404, "not a member")
}

func TestDirectoryAccountsRefuseConsoleChanges(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct{ method, path, body string }{
		{"PUT", "/v1/accounts/acme/users/dan@acme.example/permission", `{"permission":"pro"}`},
		{"POST", "/v1/accounts/acme/users/dan@acme.example/suspend", ""},
		{"POST", "/v1/accounts/acme/users/dan@acme.example/unsuspend", ""},
		{"POST", "/v1/accounts/acme/bulk/permission", `{"emails":["dan@acme.example"],"permission":"basic"}`},
		{"POST", "/v1/accounts/acme/bulk/suspend", `{"emails":["dan@acme.example"]}`},
		{"DELETE", "/v1/accounts/acme/users/dan@acme.example", ""},
		{"POST", "/v1/accounts/acme/invitations", `{"emails":"dan@acme.example","permission":"pro"}`},
		{"GET", "/v1/accounts/acme/users", ""},
	} {
		f.expect(f.call(c.method, c.path, c.body), 409, "change the user's directory group membership")
	}
	f.expectDecision("dan@acme.example", "", false, entitlement.PermissionNone, entitlement.ReasonUnknownUser)
}

func TestBulkActions(t *testing.T) {
	f := newFixture(t)
	users := []string{"u1@globex.example", "u2@globex.example", "u3@globex.example"}
	for _, u := range users {
		f.expect(f.call("POST", "/v1/accounts/globex/registrations", `{"email":"`+u+`"}`), 200, "")
	}
	r := f.call("POST", "/v1/accounts/globex/bulk/permission", `{"emails":["u1@globex.example","u2@globex.example","u3@globex.example","nobody@globex.example"],"permission":"pro"}`)
	f.expect(r, 200, "not a member")
	if r.body["applied"] != 3.0 || r.body["rejected"] != 1.0 {
		t.Fatalf("bulk permission: %s", r.raw)
	}
	for _, u := range users {
		f.expectDecision(u, "globex", true, entitlement.PermissionPro, entitlement.ReasonGranted)
	}
	f.expect(f.call("POST", "/v1/accounts/globex/bulk/suspend", `{"emails":"u1@globex.example; u2@globex.example"}`), 200, "")
	f.expectDecision("u1@globex.example", "globex", false, entitlement.PermissionNone, entitlement.ReasonSuspended)
	f.expectDecision("u2@globex.example", "globex", false, entitlement.PermissionNone, entitlement.ReasonSuspended)
	f.expectDecision("u3@globex.example", "globex", true, entitlement.PermissionPro, entitlement.ReasonGranted)
	f.expect(f.call("POST", "/v1/accounts/globex/bulk/unsuspend", `{"emails":["u1@globex.example","u2@globex.example"]}`), 200, "")
	f.expectDecision("u2@globex.example", "globex", true, entitlement.PermissionPro, entitlement.ReasonGranted)

	f.expect(f.call("POST", "/v1/accounts/team1/invitations", `{"emails":"t1@a.example; t2@b.example; t3@c.example","permission":"basic"}`), 200, "")
	for _, u := range []string{"t1@a.example", "t2@b.example"} {
		f.expect(f.call("POST", "/v1/accounts/team1/invitations/"+u+"/accept", ""), 200, "")
	}
	r = f.call("POST", "/v1/accounts/team1/bulk/remove", `{"emails":["t1@a.example","t2@b.example","t3@c.example"]}`)
	f.expect(r, 200, "")
	if r.body["applied"] != 3.0 {
		t.Fatalf("bulk remove: %s", r.raw)
	}
	f.expectDecision("t1@a.example", "team1", false, entitlement.PermissionNone, entitlement.ReasonRemovedFromTeam)
	f.expectDecision("t3@c.example", "", false, entitlement.PermissionNone, entitlement.ReasonUnknownUser)
	if n := len(f.members("team1", "")); n != 0 {
		t.Fatalf("%d members left after removing all", n)
	}
}

func TestBadRequestsChangeNothing(t *testing.T) {
	f := newFixture(t)
	f.expect(f.call("POST", "/v1/accounts/nope/invitations", `{"emails":"a@b.example","permission":"pro"}`), 404, `unknown account \"nope\"`)
	f.expect(f.call("POST", "/v1/accounts/team1/invitations", `{"emails":"a@b.example","permission":"platinum"}`), 400, `platinum\" is not a permission`)
	f.expect(f.call("POST", "/v1/accounts/team1/invitations", `{"emails":"a@b.example"}`), 400, "permission is required")
	f.expect(f.call("POST", "/v1/accounts/team1/invitations", `{"emails":"a@b.example","permission":"pro","extra":1}`), 400, "unknown field")
	f.expect(f.call("POST", "/v1/accounts/team1/invitations", `{"emails":`), 400, "malformed JSON")
	f.expect(f.call("POST", "/v1/accounts/team1/invitations", `{"emails":"x; y","permission":"pro"}`), 400, "not an email address")
	f.expect(f.call("POST", "/v1/accounts/team1/invitations", `{"emails":"a@b.example; A@B.example","permission":"pro"}`), 200, "listed twice")
	big := `{"emails":"` + strings.Repeat("x", 300<<10) + `","permission":"pro"}`
	f.expect(f.call("POST", "/v1/accounts/team1/invitations", big), 413, "request body over")
	f.expect(f.call("GET", "/v1/accounts/team1/users?limit=5000", ""), 400, "outside 1..1000")

	req, _ := http.NewRequest("POST", f.srv.URL+"/v1/accounts/team1/invitations", bytes.NewReader([]byte(`{"emails":"z@b.example","permission":"pro"}`)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("no token: HTTP %d", resp.StatusCode)
	}
	f.expectDecision("z@b.example", "", false, entitlement.PermissionNone, entitlement.ReasonUnknownUser)
	// Only the one valid invitation happened.
	if n := f.auditCount("team1"); n != 1 {
		t.Fatalf("%d audited actions, want 1", n)
	}
}

func TestMemberListPages(t *testing.T) {
	f := newFixture(t)
	var emails []string
	for _, c := range "abcde" {
		emails = append(emails, string(c)+"@x.example")
	}
	f.expect(f.call("POST", "/v1/accounts/team1/invitations", `{"emails":"`+strings.Join(emails, ";")+`","permission":"pro"}`), 200, "")
	f.expect(f.call("POST", "/v1/accounts/team1/invitations/b@x.example/accept", ""), 200, "")
	var got []string
	after := ""
	for page := 0; page < 5; page++ {
		r := f.call("GET", "/v1/accounts/team1/users?limit=2&after="+after, "")
		f.expect(r, 200, "")
		for _, m := range r.body["members"].([]any) {
			got = append(got, m.(map[string]any)["email"].(string))
		}
		next, _ := r.body["next"].(string)
		if next == "" {
			break
		}
		after = next
	}
	if strings.Join(got, ",") != strings.Join(emails, ",") {
		t.Fatalf("paged list %v, want %v", got, emails)
	}
	if ms := f.members("team1", "?state=member"); len(ms) != 1 || ms["b@x.example"] == nil {
		t.Fatalf("state=member: %v", ms)
	}
}

// A Redis that lost its data is rebuilt from PostgreSQL by a full pass;
// an incremental pass notices the loss too.
func TestResyncRebuildsCacheAfterRedisRestart(t *testing.T) {
	f := newFixture(t)
	f.expect(f.call("POST", "/v1/accounts/globex/registrations", `{"email":"kim@globex.example"}`), 200, "")
	f.expect(f.call("POST", "/v1/accounts/team1/invitations", `{"emails":"lee@x.example; max@y.example","permission":"pro"}`), 200, "")
	f.expect(f.call("POST", "/v1/accounts/team1/invitations/lee@x.example/accept", ""), 200, "")

	syncer := consoleapi.NewSyncer(noEngine{}, f.svc, time.Now)
	ctx := context.Background()
	rep, err := syncer.Run(ctx, "team1", engineFull)
	if err != nil || rep.Result != "unchanged" {
		t.Fatalf("resync of an intact cache: %+v %v", rep, err)
	}

	f.redis.Restart(t)
	f.expectDecision("lee@x.example", "", false, entitlement.PermissionNone, entitlement.ReasonUnknownUser)
	rep, err = syncer.Run(ctx, "team1", engineFull)
	if err != nil || rep.Result != "published" || rep.Changes.Added != 2 {
		t.Fatalf("resync after restart: %+v %v", rep, err)
	}
	f.expectDecision("lee@x.example", "team1", true, entitlement.PermissionPro, entitlement.ReasonGranted)
	f.expectDecision("max@y.example", "team1", false, entitlement.PermissionNone, entitlement.ReasonInvitationPending)
	if st, ok, err := f.cache.Status(ctx, "team1"); err != nil || !ok || st.LastFullSyncAt.IsZero() || st.Users != 2 {
		t.Fatalf("status after resync: %+v %v %v", st, ok, err)
	}
	// globex was not resynced: an incremental pass sees its status record
	// is gone and rebuilds it.
	f.expectDecision("kim@globex.example", "", false, entitlement.PermissionNone, entitlement.ReasonUnknownUser)
	if rep, err := syncer.Run(ctx, "globex", engineIncremental); err != nil || rep.Result != "published" {
		t.Fatalf("incremental after loss: %+v %v", rep, err)
	}
	f.expectDecision("kim@globex.example", "globex", true, entitlement.PermissionBasic, entitlement.ReasonGranted)
	if rep, err := syncer.Run(ctx, "globex", engineIncremental); err != nil || rep.Result != "unchanged" {
		t.Fatalf("incremental on an intact cache: %+v %v", rep, err)
	}
}

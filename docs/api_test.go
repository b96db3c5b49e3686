package docs_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/directory/scim"
	"github.com/dirsync/dirsync/internal/entitlement/console"
	"github.com/dirsync/dirsync/internal/entitlement/mapper"
	"github.com/dirsync/dirsync/internal/entitlement/store"
	"github.com/dirsync/dirsync/internal/sync/accountsapi"
	"github.com/dirsync/dirsync/internal/sync/apimux"
	"github.com/dirsync/dirsync/internal/sync/engine"
	"github.com/dirsync/dirsync/internal/sync/httpapi"
	"github.com/dirsync/dirsync/internal/sync/scimapi"
)

// stubSyncer knows one account, acme, whose passes publish.
type stubSyncer struct{}

func (stubSyncer) Run(_ context.Context, account string, opts engine.Options) (engine.Report, error) {
	if account != "acme" {
		return engine.Report{}, engine.ErrUnknownAccount
	}
	return engine.Report{Account: account, Mode: opts.Mode, DryRun: opts.DryRun, StartedAt: time.Now().UTC(), Result: engine.ResultDryRun,
		Diff: []engine.DiffEntry{{Email: "a@acme.example", Change: "lose", OldPermission: "pro", NewPermission: "none", OldAllowed: true, Reason: entitlement.ReasonSuspended}}}, nil
}
func (stubSyncer) Accounts() []string { return []string{"acme"} }
func (stubSyncer) LastReports(string) map[engine.Mode]engine.Report {
	return map[engine.Mode]engine.Report{engine.ModeFull: {Account: "acme", Mode: engine.ModeFull, Result: engine.ResultPublished}}
}

// stubConsole answers every console action with one applied item.
type stubConsole struct{}

func (stubConsole) result(account, action string, emails ...string) (console.Result, error) {
	r := console.Result{Account: account, Action: action}
	for _, e := range emails {
		d := entitlement.Denied(e, entitlement.ReasonInvitationPending)
		r.Items = append(r.Items, console.ItemResult{Email: e, Result: "invited", Decision: &d})
		r.Applied++
	}
	return r, nil
}
func (c stubConsole) Invite(_ context.Context, _, account string, emails []string, _ string) (console.Result, error) {
	return c.result(account, "invite", emails...)
}
func (c stubConsole) Accept(_ context.Context, _, account, email string) (console.Result, error) {
	return c.result(account, "accept", email)
}
func (c stubConsole) Register(_ context.Context, _, account, email string) (console.Result, error) {
	return c.result(account, "register", email)
}
func (c stubConsole) SetPermission(_ context.Context, _, account string, emails []string, _ string) (console.Result, error) {
	return c.result(account, "set_permission", emails...)
}
func (c stubConsole) Remove(_ context.Context, _, account string, emails []string) (console.Result, error) {
	return c.result(account, "remove", emails...)
}
func (c stubConsole) Suspend(_ context.Context, _, account string, emails []string) (console.Result, error) {
	return c.result(account, "suspend", emails...)
}
func (c stubConsole) Unsuspend(_ context.Context, _, account string, emails []string) (console.Result, error) {
	return c.result(account, "unsuspend", emails...)
}
func (stubConsole) Members(_ context.Context, account string, _ console.ListOptions) (console.Page, error) {
	now := time.Now().UTC()
	return console.Page{Account: account, Members: []console.Member{{Email: "a@x.example", UserID: "u1", State: "member", Permission: "pro", Source: "console", JoinedAt: &now, UpdatedAt: now}}}, nil
}
func (stubConsole) Audit(_ context.Context, account string, _ int64, _ int) ([]console.AuditEntry, error) {
	return []console.AuditEntry{{ID: 1, At: time.Now().UTC(), Account: account, Actor: "ops", Action: "invite", Email: "a@x.example", Detail: []byte(`{"permission":"pro"}`)}}, nil
}

// stubSCIM is a SCIM store with one user, u-1, in account acme.
type stubSCIM struct{}

func (stubSCIM) user() *scim.Resource {
	now := time.Now().UTC()
	return &scim.Resource{ID: "2819c223-7f76-453a-919d-413861904646", Kind: "User", Version: 3, Created: now, Modified: now,
		Doc: map[string]any{"userName": "alice@acme.example", "active": true}}
}
func (s stubSCIM) Create(_ context.Context, _, kind string, _ []byte) (*scim.Resource, error) {
	return s.user(), nil
}
func (s stubSCIM) Get(_ context.Context, _, kind, id string) (*scim.Resource, error) {
	if id != s.user().ID {
		return nil, &scim.Error{Status: 404, Detail: "User " + id + " not found"}
	}
	return s.user(), nil
}
func (s stubSCIM) Replace(context.Context, string, string, string, []byte, int64) (*scim.Resource, error) {
	return s.user(), nil
}
func (s stubSCIM) Patch(context.Context, string, string, string, []byte, int64) (*scim.Resource, error) {
	return s.user(), nil
}
func (stubSCIM) Delete(context.Context, string, string, string, int64) error { return nil }
func (s stubSCIM) List(_ context.Context, _, _ string, o scim.ListOptions) (*scim.ListResult, error) {
	if o.Filter != "" {
		if _, err := scim.ParseFilter("User", o.Filter); err != nil {
			return nil, err
		}
	}
	return &scim.ListResult{Total: 1, StartIndex: 1, Resources: []*scim.Resource{s.user()}}, nil
}
func (stubSCIM) IssueToken(_ context.Context, account, actor string) (string, scim.TokenInfo, error) {
	return "dsscim_x", scim.TokenInfo{ID: "t1", Account: account, CreatedAt: time.Now().UTC(), CreatedBy: actor}, nil
}
func (stubSCIM) Tokens(_ context.Context, account string) ([]scim.TokenInfo, error) {
	return []scim.TokenInfo{{ID: "t1", Account: account, CreatedAt: time.Now().UTC(), CreatedBy: "ops"}}, nil
}
func (stubSCIM) RevokeToken(context.Context, string, string) error { return nil }

const (
	testAdminToken = "docs-admin-token"
	testSCIMToken  = "docs-scim-token"
)

// fullAPI is the API with every optional part on: what `dirsync run`
// serves with console accounts, a metrics registry and reloads.
func fullAPI(t *testing.T) *apimux.Mux {
	t.Helper()
	mem := store.NewMemory()
	d := entitlement.Decision{Email: "alice@acme.example", Account: "acme", Allowed: true, Permission: entitlement.PermissionPro,
		Reason: entitlement.ReasonGranted, Capabilities: entitlement.CapabilitiesOf(entitlement.PermissionPro), UserID: "u-1",
		Via: []string{"CN=Pro,DC=acme,DC=example"}, SyncedAt: time.Now().UTC(), Detail: &entitlement.Detail{Rule: "granted", DirectoryStatus: "active"}}
	if err := mem.Apply(context.Background(), "acme", []mapper.Change{{Email: d.Email, New: &d, Next: mapper.PublishedOf(&d)}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	admin, err := apimux.NewToken("api.admin_token_file", testAdminToken)
	if err != nil {
		t.Fatal(err)
	}
	hook, err := apimux.NewToken("directory.okta.event_hook_secret_file", "hook-secret")
	if err != nil {
		t.Fatal(err)
	}
	open, err := apimux.LoopbackListener(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	scimToken, err := scimapi.NewStaticToken("acme", "directory.scim.token_file", testSCIMToken)
	if err != nil {
		t.Fatal(err)
	}
	return httpapi.New(httpapi.Options{
		Checker: mem, Status: mem, Syncer: stubSyncer{}, Console: stubConsole{},
		SCIM:     &scimapi.Options{Store: stubSCIM{}, Tokens: stubSCIM{}, IsAccount: func(id string) bool { return id == "acme" }},
		Accounts: &accountsapi.Options{},
		Auth: apimux.Credentials{Admin: admin, OpenSignIn: open,
			OktaHooks: []apimux.OktaHookSecret{{Account: "acme", Header: "Authorization", Secret: hook}},
			SCIM:      &scimapi.Authenticator{Static: []scimapi.StaticToken{scimToken}}},
		Metrics: promhttp.Handler(), Reload: func(context.Context) error { return nil },
		Trigger: func(string) bool { return true }, Log: zap.NewNop(),
	})
}

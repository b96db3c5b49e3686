// Package webui is dirsync's web console: server-rendered pages under
// /ui/ (html/template and embed, no JavaScript) on the API's one HTTP path
// (apimux Browser routes: the session cookie is the credential, every
// form carries the session's CSRF token). An administrator, or a tenant
// for its own account, sees the accounts and their passes, reviews a
// hold's diff and releases exactly that diff, looks up a user's decision
// and history, and manages console accounts' users.
package webui

import (
	"context"
	"embed"
	"html/template"
	"io/fs"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/entitlement/console"
	"github.com/dirsync/dirsync/internal/entitlement/history"
	"github.com/dirsync/dirsync/internal/entitlement/store"
	"github.com/dirsync/dirsync/internal/sync/apimux"
	"github.com/dirsync/dirsync/internal/sync/engine"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Passes runs and reports passes.
type Passes interface {
	Run(ctx context.Context, account string, opts engine.Options) (engine.Report, error)
	Accounts() []string
	LastReports(account string) map[engine.Mode]engine.Report
}

// Cache reads what the sign-in service reads, and the accounts' records.
type Cache interface {
	Check(ctx context.Context, email string) (entitlement.Decision, error)
	Status(ctx context.Context, account string) (accesscache.AccountStatus, bool, error)
	Statuses(ctx context.Context, accounts []string) (map[string]accesscache.AccountStatus, error)
	RecentChanges(ctx context.Context, account string, n int) ([]store.ChangeEvent, error)
}

// Console manages console accounts' users (a subset of consoleapi.Console).
type Console interface {
	Invite(ctx context.Context, actor, account string, emails []string, permission string) (console.Result, error)
	SetPermission(ctx context.Context, actor, account string, emails []string, permission string) (console.Result, error)
	Remove(ctx context.Context, actor, account string, emails []string) (console.Result, error)
	Suspend(ctx context.Context, actor, account string, emails []string) (console.Result, error)
	Unsuspend(ctx context.Context, actor, account string, emails []string) (console.Result, error)
	Members(ctx context.Context, account string, o console.ListOptions) (console.Page, error)
}

// History reads the access history.
type History interface {
	User(ctx context.Context, account, email string, limit int, before int64) ([]history.Entry, error)
}

// Options configures the console.
type Options struct {
	// Credentials sign administrators in (the API's own).
	Credentials *apimux.Credentials
	Passes      Passes
	Cache       Cache
	// Recent, Progress and Kind come from the engine: an account's recent
	// passes, its running pass, and its directory type.
	Recent   func(account string) []engine.Report
	Progress func(account string) (engine.Progress, bool)
	Kind     func(account string) string
	// Owner, when set (replicas share the cache), names the replica that
	// owns an account's lease.
	Owner func(ctx context.Context, account string) string
	// Console, when set, manages console accounts (directory type console).
	Console Console
	// History, when set (a database is configured), shows users' access
	// history.
	History History
	// PerStartTokenPath, when set, is where the daemon's per-start admin
	// token is (a loopback daemon without api.admin_token_file): the login
	// page says so.
	PerStartTokenPath string
	// SyncTimeout bounds a release.
	SyncTimeout time.Duration
	Log         *zap.Logger
	Now         func() time.Time
}

// Routes returns the console's pages as Browser routes of the API.
func Routes(o Options) []apimux.Route {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.SyncTimeout == 0 {
		o.SyncTimeout = 10 * time.Minute
	}
	u := &ui{o: o, pages: parsePages()}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err) // embedded at build time
	}
	page := func(method, path string, scope apimux.Scope, h func(w http.ResponseWriter, r *http.Request)) apimux.Route {
		return apimux.Route{Method: method, Path: path, Scope: scope, Browser: true, Raw: http.HandlerFunc(h), WriteError: u.writeError, MaxBody: 256 << 10}
	}
	return []apimux.Route{
		page("GET", "/ui", apimux.Public, u.home),
		page("GET", "/ui/{$}", apimux.Public, u.home),
		page("GET", "/ui/login", apimux.Public, u.loginPage),
		page("POST", "/ui/login", apimux.Public, u.login),
		page("POST", "/ui/logout", apimux.Public, u.logout),
		page("GET", "/ui/accounts", apimux.AdminRead, u.accounts),
		page("GET", "/ui/accounts/{id}", apimux.AccountRead, u.account),
		page("POST", "/ui/accounts/{id}/release", apimux.AccountWrite, u.release),
		page("POST", "/ui/accounts/{id}/users", apimux.AccountWrite, u.users),
		page("GET", "/ui/lookup", apimux.AdminRead, u.lookup),
		page("GET", "/ui/accounts/{id}/lookup", apimux.AccountRead, u.lookup),
		{Method: "GET", Path: "/ui/static/", Scope: apimux.Public, Browser: true, Raw: http.StripPrefix("/ui/static/", http.FileServerFS(static))},
	}
}

type ui struct {
	o     Options
	pages map[string]*template.Template
}

// Package httpapi builds dirsync's HTTP API in one place: its own routes
// (the sign-in read GET /v1/access/{email}, explanations, status, one-off
// syncs, releases, reloads, Okta event hooks, health and metrics) and, when
// console accounts exist, consoleapi's routes, all on one apimux.Mux. It
// depends on the engine and the cache only through the small interfaces
// below.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/dirsync/dirsync/internal/sync/accountsapi"

	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/entitlement/history"
	"github.com/dirsync/dirsync/internal/entitlement/store"
	"github.com/dirsync/dirsync/internal/mailaddr"
	"github.com/dirsync/dirsync/internal/sync/apimux"
	"github.com/dirsync/dirsync/internal/sync/consoleapi"
	"github.com/dirsync/dirsync/internal/sync/engine"
	"github.com/dirsync/dirsync/internal/sync/scimapi"
)

// Checker answers sign-in lookups.
type Checker interface {
	Check(ctx context.Context, email string) (entitlement.Decision, error)
}

// StatusReader reads account status records from the cache.
type StatusReader interface {
	Status(ctx context.Context, account string) (accesscache.AccountStatus, bool, error)
	Ping(ctx context.Context) error
}

// Syncer runs and reports passes.
type Syncer interface {
	Run(ctx context.Context, account string, opts engine.Options) (engine.Report, error)
	Accounts() []string
	LastReports(account string) map[engine.Mode]engine.Report
}

// Options configures the handler.
type Options struct {
	Checker Checker
	Status  StatusReader
	Syncer  Syncer
	// Console, when set, serves the console accounts' routes
	// (/v1/accounts/{id}/invitations, …) on the same Mux.
	Console consoleapi.Console
	// Auth are the credentials callers may present; their zero value
	// admits no one to any route but health, readiness and metrics.
	Auth apimux.Credentials
	// Hosts are the Host header values the API answers.
	Hosts apimux.Hosts
	// Staleness is how old an account's last successful sync may be before
	// /readyz reports not ready. Zero disables the check.
	Staleness time.Duration
	// SyncTimeout bounds a sync started through the API.
	SyncTimeout time.Duration
	// Metrics, when set, is served at /metrics.
	Metrics http.Handler
	// Recorder, when set, counts lookups and hook requests.
	Recorder Recorder
	// Reload, when set, serves POST /v1/reload: it reloads the config and
	// returns its problems when the new config is rejected.
	Reload func(ctx context.Context) error
	// Trigger starts an immediate incremental pass for an account (without
	// waiting for it) and reports whether it was queued: what an Okta
	// event hook delivery does for the accounts whose secret it carries
	// (Auth.OktaHooks).
	Trigger func(account string) bool
	// Ownership, when set (several replicas share the cache), reports which
	// replica owns an account; shown in /v1/status.
	Ownership func(ctx context.Context, account string) any
	// NextRun, when set, tells when an account's scheduled pass of a mode
	// runs next.
	NextRun func(account string, mode engine.Mode) time.Time
	// Scheduler, when set, describes the pass queue (depth, workers, lag)
	// for /v1/status.
	Scheduler func() any
	// Progress, when set, describes an account's running pass (phase,
	// entries read, rate) for /v1/status.
	Progress func(account string) (engine.Progress, bool)
	// SCIM, when set (an account's directory type is scim), serves the
	// accounts' SCIM service providers under /scim/v2/{account}/ and the
	// routes that issue and revoke their tokens.
	SCIM *scimapi.Options
	// Accounts, when set (a database is configured), serves the accounts
	// API: accounts created, changed and deleted through HTTP, their
	// groups, bindings and tenant tokens.
	Accounts *accountsapi.Options
	// History, when set (a database is configured), answers an account
	// user's access history.
	History History
	// Pages are more routes on the same Mux: the web console's (package
	// webui).
	Pages []apimux.Route
	Log   *zap.Logger
	Now   func() time.Time
}

// History reads the access history.
type History interface {
	User(ctx context.Context, account, email string, limit int, before int64) ([]history.Entry, error)
}

// Recorder counts API traffic (implemented by package metrics).
type Recorder interface {
	Lookup(outcome string, d time.Duration)
	HookEvent(outcome string)
}

// New returns the whole API on one Mux.
func New(o Options) *apimux.Mux {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.SyncTimeout == 0 {
		o.SyncTimeout = 10 * time.Minute
	}
	s := &server{o: o}
	groups := [][]apimux.Route{s.routes()}
	if o.Console != nil {
		groups = append(groups, consoleapi.Routes(consoleapi.Options{Console: o.Console}))
	}
	if o.SCIM != nil {
		groups = append(groups, scimapi.Routes(*o.SCIM), scimapi.TokenRoutes(*o.SCIM))
	}
	if o.Accounts != nil {
		groups = append(groups, accountsapi.Routes(*o.Accounts))
	}
	if len(o.Pages) > 0 {
		groups = append(groups, o.Pages)
	}
	return apimux.New(apimux.Options{Credentials: o.Auth, Hosts: o.Hosts, Log: o.Log}, groups...)
}

// routes are dirsync's own routes.
func (s *server) routes() []apimux.Route {
	out := []apimux.Route{
		{Method: "GET", Path: "/healthz", Scope: apimux.Public, Handle: s.healthz},
		{Method: "GET", Path: "/readyz", Scope: apimux.Public, Handle: s.readyz},
		{Method: "GET", Path: "/v1/access/{email}", Scope: apimux.SignInRead, Handle: s.access},
		{Method: "GET", Path: "/v1/access/{email}/explain", Scope: apimux.AdminRead, Handle: s.explain},
		{Method: "GET", Path: "/v1/status", Scope: apimux.AdminRead, Handle: s.status},
		{Method: "POST", Path: "/v1/sync", Scope: apimux.AdminWrite, Handle: s.sync},
		{Method: "POST", Path: "/v1/accounts/{id}/release", Scope: apimux.AccountWrite, Handle: s.release},
		{Method: "GET", Path: "/v1/accounts/{id}/users/{email}/history", Scope: apimux.AccountRead, Handle: s.history},
		{Method: "GET", Path: "/v1/hooks/okta", Scope: apimux.OktaHook, Handle: s.oktaVerify, Refused: s.hookRefused},
		{Method: "POST", Path: "/v1/hooks/okta", Scope: apimux.OktaHook, Handle: s.oktaEvent, Refused: s.hookRefused, ForeignBody: true},
	}
	if s.o.Reload != nil {
		out = append(out, apimux.Route{Method: "POST", Path: "/v1/reload", Scope: apimux.AdminWrite, Handle: s.reload})
	}
	if s.o.Metrics != nil {
		out = append(out, apimux.Route{Method: "GET", Path: "/metrics", Scope: apimux.Public, Raw: s.o.Metrics})
	}
	return out
}

type server struct{ o Options }

func (s *server) healthz(*http.Request) (any, *apimux.Error) {
	return map[string]string{"status": "ok"}, nil
}

// readyz is ready when the cache answers and every account has a successful
// sync no older than the staleness bound. Backend errors are logged, and
// shown only to an admin: an unauthenticated caller learns which check
// failed, not what the backend said.
func (s *server) readyz(r *http.Request) (any, *apimux.Error) {
	admin := apimux.PrincipalOf(r.Context()).Kind == apimux.GlobalAdmin
	var problems []string
	var causes []error
	backend := func(what string, err error) {
		causes = append(causes, err)
		if admin {
			what += ": " + err.Error()
		}
		problems = append(problems, what)
	}
	if err := s.o.Status.Ping(r.Context()); err != nil {
		backend("access cache unreachable", err)
	}
	if len(problems) == 0 {
		for _, id := range s.o.Syncer.Accounts() {
			st, ok, err := s.o.Status.Status(r.Context(), id)
			switch {
			case err != nil:
				backend(id+": status record unreadable", err)
			case !ok || st.LastSyncAt.IsZero():
				problems = append(problems, id+": no successful sync yet")
			case s.o.Staleness > 0 && s.o.Now().Sub(st.LastSyncAt) > s.o.Staleness:
				problems = append(problems, id+": last successful sync at "+st.LastSyncAt.Format(time.RFC3339))
			}
		}
	}
	if len(problems) > 0 {
		return nil, &apimux.Error{Status: http.StatusServiceUnavailable, Body: map[string]any{"status": "not ready", "problems": problems},
			Cause: errors.Join(causes...)}
	}
	return map[string]string{"status": "ready"}, nil
}

// access is the sign-in read: the decision without its detail, as compact
// JSON (the hot path: one allocation-light encode). Any cache error is 503,
// which callers treat as deny.
func (s *server) access(r *http.Request) (any, *apimux.Error) {
	start := time.Now()
	d, apiErr := s.lookup(r)
	outcome := "error"
	switch {
	case apiErr == nil && d.Allowed:
		outcome = "allowed"
	case apiErr == nil:
		outcome = "denied"
	}
	if s.o.Recorder != nil {
		s.o.Recorder.Lookup(outcome, time.Since(start))
	}
	if apiErr != nil {
		return nil, apiErr
	}
	d.Detail = nil
	b, err := json.Marshal(&d)
	if err != nil {
		return nil, &apimux.Error{Status: http.StatusInternalServerError, Message: "encode decision", Cause: err}
	}
	return apimux.RawJSON(append(b, '\n')), nil
}

func (s *server) reload(r *http.Request) (any, *apimux.Error) {
	if err := s.o.Reload(r.Context()); err != nil {
		return nil, &apimux.Error{Status: http.StatusBadRequest,
			Body: map[string]string{"status": "rejected; the running config is kept", "error": err.Error()}}
	}
	return map[string]string{"status": "reloaded"}, nil
}

// Explanation is the answer of /v1/access/{email}/explain.
type Explanation struct {
	entitlement.Decision
	AccountStatus *accesscache.AccountStatus `json:"account_status,omitempty"`
}

func (s *server) explain(r *http.Request) (any, *apimux.Error) {
	d, apiErr := s.lookup(r)
	if apiErr != nil {
		return nil, apiErr
	}
	out := Explanation{Decision: d}
	if d.Account != "" {
		if st, found, err := s.o.Status.Status(r.Context(), d.Account); err == nil && found {
			out.AccountStatus = &st
		}
	}
	return out, nil
}

func (s *server) lookup(r *http.Request) (entitlement.Decision, *apimux.Error) {
	d, err := s.o.Checker.Check(r.Context(), r.PathValue("email"))
	if err != nil {
		return entitlement.Decision{}, &apimux.Error{Status: http.StatusServiceUnavailable,
			Message: "access cache unavailable; deny sign-in (fail closed)", Cause: fmt.Errorf("access lookup: %w", err)}
	}
	return d, nil
}

// AccountState is one account in /v1/status.
type AccountState struct {
	Account string                        `json:"account"`
	Cache   *accesscache.AccountStatus    `json:"cache,omitempty"`
	Runs    map[engine.Mode]engine.Report `json:"runs"`
	// NextRuns is when each scheduled mode runs next.
	NextRuns    map[engine.Mode]time.Time `json:"next_runs,omitempty"`
	HoldPending bool                      `json:"hold_pending"`
	// Progress is the running pass, if one runs now on this replica.
	Progress *engine.Progress `json:"progress,omitempty"`
	// Ownership is set when replicas share the cache (HA mode).
	Ownership any `json:"ownership,omitempty"`
}

func (s *server) status(r *http.Request) (any, *apimux.Error) {
	var out []AccountState
	for _, id := range s.o.Syncer.Accounts() {
		st := AccountState{Account: id, Runs: s.o.Syncer.LastReports(id)}
		if cs, found, err := s.o.Status.Status(r.Context(), id); err == nil && found {
			st.Cache = &cs
			st.HoldPending = cs.Hold != nil
		}
		if s.o.NextRun != nil {
			st.NextRuns = map[engine.Mode]time.Time{}
			for _, m := range []engine.Mode{engine.ModeFull, engine.ModeIncremental} {
				if next := s.o.NextRun(id, m); !next.IsZero() {
					st.NextRuns[m] = next.UTC()
				}
			}
		}
		if s.o.Ownership != nil {
			st.Ownership = s.o.Ownership(r.Context(), id)
		}
		if s.o.Progress != nil {
			if p, ok := s.o.Progress(id); ok {
				st.Progress = &p
			}
		}
		out = append(out, st)
	}
	resp := map[string]any{"accounts": out}
	if s.o.Scheduler != nil {
		resp["scheduler"] = s.o.Scheduler()
	}
	return resp, nil
}

func (s *server) sync(r *http.Request) (any, *apimux.Error) {
	q := r.URL.Query()
	opts := engine.Options{Mode: engine.Mode(q.Get("mode")), Actor: apimux.PrincipalOf(r.Context()).Credential}
	if opts.Mode == "" {
		opts.Mode = engine.ModeFull
	}
	if opts.Mode != engine.ModeFull && opts.Mode != engine.ModeIncremental {
		return nil, apimux.Errorf(http.StatusBadRequest, "mode must be full or incremental")
	}
	for name, dst := range map[string]*bool{"dry_run": &opts.DryRun, "force": &opts.Force} {
		if v := q.Get(name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, apimux.Errorf(http.StatusBadRequest, "%s must be true or false", name)
			}
			*dst = b
		}
	}
	accounts := s.o.Syncer.Accounts()
	if id := q.Get("account"); id != "" {
		accounts = []string{id}
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.o.SyncTimeout)
	defer cancel()
	reports := make([]engine.Report, 0, len(accounts))
	code := http.StatusOK
	for _, id := range accounts {
		rep, err := s.o.Syncer.Run(ctx, id, opts)
		if errors.Is(err, engine.ErrUnknownAccount) {
			return nil, apimux.Errorf(http.StatusNotFound, "%s", err)
		}
		if err != nil {
			code = syncFailureStatus(err)
		}
		reports = append(reports, rep)
	}
	return reportsAnswer(code, reports)
}

// release publishes a held sync: a forced full pass of the account. It
// refuses when no hold is pending, so it cannot be used by mistake to push
// a read the fail-safe checks would refuse. With ?diff_hash= (the
// diff_hash of the held pass's or a dry run's report) it publishes only
// that reviewed diff: if the directory moved since, it answers 409 with
// the new diff and its hash, and nothing is forced.
func (s *server) release(r *http.Request) (any, *apimux.Error) {
	id := r.PathValue("id")
	reviewed := r.URL.Query().Get("diff_hash")
	st, found, err := s.o.Status.Status(r.Context(), id)
	if err != nil {
		return nil, &apimux.Error{Status: http.StatusServiceUnavailable, Message: err.Error(), Cause: err}
	}
	if !found || st.Hold == nil {
		return nil, apimux.Errorf(http.StatusConflict, "no safeguard hold is pending for account %s; to force a sync anyway use POST /v1/sync?force=true", id)
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.o.SyncTimeout)
	defer cancel()
	rep, err := s.o.Syncer.Run(ctx, id, engine.Options{Mode: engine.ModeFull, Force: true, ReviewedDiffHash: reviewed, Actor: apimux.PrincipalOf(r.Context()).Credential})
	if errors.Is(err, engine.ErrUnknownAccount) {
		return nil, apimux.Errorf(http.StatusNotFound, "%s", err)
	}
	code := http.StatusOK
	if err != nil {
		code = syncFailureStatus(err)
	}
	return reportsAnswer(code, []engine.Report{rep})
}

// syncFailureStatus is the one mapping of a failed pass to a status: 409
// when it was held by the safeguard or the account belongs to another
// replica (nothing is wrong; someone must act or ask elsewhere), 502 when
// the directory or the cache failed.
func syncFailureStatus(err error) int {
	if errors.Is(err, engine.ErrHeld) || errors.Is(err, store.ErrNotOwner) || errors.Is(err, engine.ErrDiffChanged) {
		return http.StatusConflict
	}
	return http.StatusBadGateway
}

// reportsAnswer is {"reports": […]} with code: the reports are the answer
// whether the passes succeeded or not.
func reportsAnswer(code int, reports []engine.Report) (any, *apimux.Error) {
	body := map[string]any{"reports": reports}
	if code != http.StatusOK {
		return nil, &apimux.Error{Status: code, Body: body}
	}
	return body, nil
}

// history answers GET /v1/accounts/{id}/users/{email}/history: the user's
// published changes in that account, newest first (limit, before=ID).
func (s *server) history(r *http.Request) (any, *apimux.Error) {
	if s.o.History == nil {
		return nil, apimux.Errorf(http.StatusNotFound, "no access history: it is kept when console.postgres_dsn configures a database")
	}
	email := mailaddr.Normalize(r.PathValue("email"))
	if email == "" {
		return nil, apimux.Errorf(http.StatusBadRequest, "%q is not an email address", r.PathValue("email"))
	}
	q := r.URL.Query()
	limit, before := 100, int64(0)
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return nil, apimux.Errorf(http.StatusBadRequest, "limit must be 1..1000")
		}
		limit = n
	}
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return nil, apimux.Errorf(http.StatusBadRequest, "before must be an entry id")
		}
		before = n
	}
	entries, err := s.o.History.User(r.Context(), r.PathValue("id"), email, limit, before)
	if err != nil {
		return nil, &apimux.Error{Status: http.StatusServiceUnavailable, Message: "access history unavailable", Cause: err}
	}
	out := map[string]any{"account": r.PathValue("id"), "email": email, "entries": entries}
	if len(entries) == limit {
		out["next_before"] = entries[len(entries)-1].ID
	}
	return out, nil
}

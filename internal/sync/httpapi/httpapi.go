// Package httpapi serves dirsync's HTTP API: the sign-in read
// (GET /v1/access/{email}), explanations, status, one-off syncs and health.
// It depends on the engine and the cache only through the small interfaces
// below.
package httpapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/store"

	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/sync/engine"
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
	// AdminToken, when not empty, is required as a bearer token by admin
	// endpoints. Empty means admin endpoints are open (loopback only; the
	// config refuses a non-loopback listen address without a token).
	AdminToken string
	// ReadToken, when not empty, is required as a bearer token (or the
	// admin token) by GET /v1/access/{email}.
	ReadToken string
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
	// OktaHooks authenticate Okta event hook requests; Trigger starts an
	// immediate incremental pass for an account (without waiting for it)
	// and reports whether it was queued.
	OktaHooks []OktaHook
	Trigger   func(account string) bool
	// Ownership, when set (several replicas share the cache), reports which
	// replica owns an account; shown in /v1/status.
	Ownership func(ctx context.Context, account string) any
	// NextRun, when set, tells when an account's scheduled pass of a mode
	// runs next.
	NextRun func(account string, mode engine.Mode) time.Time
	Log     *zap.Logger
	Now     func() time.Time
}

// Recorder counts API traffic (implemented by package metrics).
type Recorder interface {
	Lookup(outcome string, d time.Duration)
	HookEvent(outcome string)
}

// OktaHook is one account's Okta event hook credential: Okta sends Secret
// in the Header it was configured with.
type OktaHook struct {
	Account string
	Header  string
	Secret  string
}

// maxBody bounds request bodies.
const maxBody = 1 << 20

// New returns the API handler.
func New(o Options) http.Handler {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SyncTimeout == 0 {
		o.SyncTimeout = 10 * time.Minute
	}
	s := &server{o: o}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /v1/access/{email}", s.reader(s.access))
	mux.HandleFunc("GET /v1/access/{email}/explain", s.admin(s.explain))
	mux.HandleFunc("GET /v1/status", s.admin(s.status))
	mux.HandleFunc("POST /v1/sync", s.admin(s.sync))
	mux.HandleFunc("POST /v1/accounts/{id}/release", s.admin(s.release))
	if o.Reload != nil {
		mux.HandleFunc("POST /v1/reload", s.admin(s.reload))
	}
	if o.Metrics != nil {
		mux.Handle("GET /metrics", o.Metrics)
	}
	mux.HandleFunc("GET /v1/hooks/okta", s.oktaVerify)
	mux.HandleFunc("POST /v1/hooks/okta", s.oktaEvent)
	return http.MaxBytesHandler(mux, maxBody)
}

type server struct{ o Options }

func (s *server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.o.AdminToken != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.o.AdminToken)) != 1 {
				WriteError(w, http.StatusUnauthorized, "admin endpoint: send Authorization: Bearer <token from api.admin_token_file>")
				return
			}
		}
		h(w, r)
	}
}

// reader guards the sign-in read when a read token is configured.
func (s *server) reader(h http.HandlerFunc) http.HandlerFunc {
	if s.o.ReadToken == "" {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		readOK := subtle.ConstantTimeCompare([]byte(got), []byte(s.o.ReadToken)) == 1
		adminOK := s.o.AdminToken != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.o.AdminToken)) == 1
		if !ok || !(readOK || adminOK) {
			WriteError(w, http.StatusUnauthorized, "send Authorization: Bearer <token from api.read_token_file>")
			return
		}
		h(w, r)
	}
}

func (s *server) healthz(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz is ready when the cache answers and every account has a successful
// sync no older than the staleness bound.
func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	var problems []string
	if err := s.o.Status.Ping(r.Context()); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) == 0 {
		for _, id := range s.o.Syncer.Accounts() {
			st, ok, err := s.o.Status.Status(r.Context(), id)
			switch {
			case err != nil:
				problems = append(problems, id+": "+err.Error())
			case !ok || st.LastSyncAt.IsZero():
				problems = append(problems, id+": no successful sync yet")
			case s.o.Staleness > 0 && s.o.Now().Sub(st.LastSyncAt) > s.o.Staleness:
				problems = append(problems, id+": last successful sync at "+st.LastSyncAt.Format(time.RFC3339))
			}
		}
	}
	if len(problems) > 0 {
		WriteJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "problems": problems})
		return
	}
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *server) access(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	d, ok := s.lookup(w, r)
	outcome := "error"
	switch {
	case ok && d.Allowed:
		outcome = "allowed"
	case ok:
		outcome = "denied"
	}
	if s.o.Recorder != nil {
		s.o.Recorder.Lookup(outcome, time.Since(start))
	}
	if !ok {
		return
	}
	d.Detail = nil
	// The sign-in hot path: compact JSON, one allocation-light encode.
	b, err := json.Marshal(&d)
	if err != nil {
		WriteError(w, http.StatusInternalServerError, "encode decision")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(append(b, '\n')) //nolint:errcheck // the client went away
}

func (s *server) reload(w http.ResponseWriter, r *http.Request) {
	if err := s.o.Reload(r.Context()); err != nil {
		WriteJSON(w, http.StatusBadRequest, map[string]string{"status": "rejected; the running config is kept", "error": err.Error()})
		return
	}
	WriteJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
}

// Explanation is the answer of /v1/access/{email}/explain.
type Explanation struct {
	entitlement.Decision
	AccountStatus *accesscache.AccountStatus `json:"account_status,omitempty"`
}

func (s *server) explain(w http.ResponseWriter, r *http.Request) {
	d, ok := s.lookup(w, r)
	if !ok {
		return
	}
	out := Explanation{Decision: d}
	if d.Account != "" {
		if st, found, err := s.o.Status.Status(r.Context(), d.Account); err == nil && found {
			out.AccountStatus = &st
		}
	}
	WriteJSON(w, http.StatusOK, out)
}

func (s *server) lookup(w http.ResponseWriter, r *http.Request) (entitlement.Decision, bool) {
	d, err := s.o.Checker.Check(r.Context(), r.PathValue("email"))
	if err != nil {
		s.o.Log.Warn("access lookup failed", zap.Error(err))
		WriteError(w, http.StatusServiceUnavailable, "access cache unavailable; deny sign-in (fail closed)")
		return entitlement.Decision{}, false
	}
	return d, true
}

// AccountState is one account in /v1/status.
type AccountState struct {
	Account string                        `json:"account"`
	Cache   *accesscache.AccountStatus    `json:"cache,omitempty"`
	Runs    map[engine.Mode]engine.Report `json:"runs"`
	// NextRuns is when each scheduled mode runs next.
	NextRuns    map[engine.Mode]time.Time `json:"next_runs,omitempty"`
	HoldPending bool                      `json:"hold_pending"`
	// Ownership is set when replicas share the cache (HA mode).
	Ownership any `json:"ownership,omitempty"`
}

func (s *server) status(w http.ResponseWriter, r *http.Request) {
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
		out = append(out, st)
	}
	WriteJSON(w, http.StatusOK, map[string]any{"accounts": out})
}

func (s *server) sync(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	opts := engine.Options{Mode: engine.Mode(q.Get("mode"))}
	if opts.Mode == "" {
		opts.Mode = engine.ModeFull
	}
	if opts.Mode != engine.ModeFull && opts.Mode != engine.ModeIncremental {
		WriteError(w, http.StatusBadRequest, "mode must be full or incremental")
		return
	}
	for name, dst := range map[string]*bool{"dry_run": &opts.DryRun, "force": &opts.Force} {
		if v := q.Get(name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				WriteError(w, http.StatusBadRequest, name+" must be true or false")
				return
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
		switch {
		case errors.Is(err, engine.ErrUnknownAccount):
			WriteError(w, http.StatusNotFound, err.Error())
			return
		case err != nil:
			code = http.StatusBadGateway
			if errors.Is(err, engine.ErrHeld) || errors.Is(err, store.ErrNotOwner) {
				code = http.StatusConflict
			}
		}
		reports = append(reports, rep)
	}
	WriteJSON(w, code, map[string]any{"reports": reports})
}

// release publishes a held sync: a forced full pass of the account. It
// refuses when no hold is pending, so it cannot be used by mistake to push
// a read the fail-safe checks would refuse.
func (s *server) release(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	st, found, err := s.o.Status.Status(r.Context(), id)
	if err != nil {
		WriteError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if !found || st.Hold == nil {
		WriteError(w, http.StatusConflict, "no safeguard hold is pending for account "+id+"; to force a sync anyway use POST /v1/sync?force=true")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.o.SyncTimeout)
	defer cancel()
	rep, err := s.o.Syncer.Run(ctx, id, engine.Options{Mode: engine.ModeFull, Force: true})
	code := http.StatusOK
	switch {
	case errors.Is(err, engine.ErrUnknownAccount):
		WriteError(w, http.StatusNotFound, err.Error())
		return
	case err != nil:
		code = http.StatusBadGateway
	}
	WriteJSON(w, code, map[string]any{"reports": []engine.Report{rep}})
}

// WriteJSON writes v as the JSON answer of every dirsync endpoint.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// WriteError writes {"error": msg}.
func WriteError(w http.ResponseWriter, code int, msg string) {
	WriteJSON(w, code, map[string]string{"error": msg})
}

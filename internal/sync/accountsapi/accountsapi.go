// Package accountsapi serves the accounts API: each customer's
// administrator (a tenant token of one account) or dirsync's global
// administrator creates, changes and deletes accounts, lists the groups of
// an account's directory and binds them to pro or basic, over HTTP. An
// account created here has exactly the fields of one accounts[] entry of
// the config file, validated by the same code with the same problem
// paths; its directory secrets are given inline and stored sealed.
// Accounts of the file are read-only here.
package accountsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/entitlement/mapper"
	"github.com/dirsync/dirsync/internal/netpolicy"
	"github.com/dirsync/dirsync/internal/sync/apimux"
	"github.com/dirsync/dirsync/internal/sync/engine"
	"github.com/dirsync/dirsync/internal/sync/registry"
)

// Live is the running daemon as the API needs it.
type Live interface {
	// Config is the running config: the file's accounts and settings.
	Config() *config.Config
	// Others returns the accounts the daemon runs from the registry,
	// except id (ids and claimed domains must stay unique).
	Others(id string) []config.Account
	// Apply makes the daemon run stored account id as it is stored now
	// (or stop it, unpublishing its decisions, when it was deleted); it
	// returns how many decisions a deletion removed here.
	Apply(ctx context.Context, id string) (removed int, err error)
	// Groups lists the groups of an account's last read.
	Groups(id, search string, limit int) ([]engine.GroupSummary, int, bool)
	// Preview maps the account's directory with policy p and returns the
	// diff it would publish, publishing nothing.
	Preview(ctx context.Context, id string, p mapper.Policy) (engine.Report, error)
}

// Options configures the routes.
type Options struct {
	Registry *registry.Store
	Live     Live
	Kinds    []directory.Kind
	// Network is the policy every API account's directory hosts must pass.
	Network *netpolicy.Policy
	// Resolver resolves directory host names for the policy check.
	Resolver netpolicy.Resolver
}

type server struct{ o Options }

// Routes returns the accounts API's routes.
func Routes(o Options) []apimux.Route {
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	s := &server{o: o}
	return []apimux.Route{
		{Method: "GET", Path: "/v1/accounts", Scope: apimux.AdminRead, Handle: s.list},
		{Method: "GET", Path: "/v1/accounts/{id}", Scope: apimux.AccountRead, Handle: s.get},
		{Method: "PUT", Path: "/v1/accounts/{id}", Scope: apimux.AccountWrite, Handle: s.put},
		{Method: "DELETE", Path: "/v1/accounts/{id}", Scope: apimux.AccountWrite, Handle: s.delete},
		{Method: "GET", Path: "/v1/accounts/{id}/groups", Scope: apimux.AccountRead, Handle: s.groups},
		{Method: "PUT", Path: "/v1/accounts/{id}/bindings", Scope: apimux.AccountWrite, Handle: s.bindings},
		{Method: "GET", Path: "/v1/accounts/{id}/tokens", Scope: apimux.AdminRead, Handle: s.tokens},
		{Method: "POST", Path: "/v1/accounts/{id}/tokens", Scope: apimux.AdminWrite, Handle: s.issueToken},
		{Method: "DELETE", Path: "/v1/accounts/{id}/tokens/{token}", Scope: apimux.AdminWrite, Handle: s.revokeToken},
	}
}

// TenantTokens resolves tenant tokens from the registry
// (apimux.TenantAuthenticator).
type TenantTokens struct{ Registry *registry.Store }

// AuthenticateTenant implements apimux.TenantAuthenticator.
func (t TenantTokens) AuthenticateTenant(ctx context.Context, token string) (string, string, error) {
	account, id, ok, err := t.Registry.ResolveToken(ctx, token)
	switch {
	case err != nil:
		return "", "", err
	case !ok:
		return "", "", apimux.ErrUnknownCredential
	}
	return account, "token:" + id, nil
}

func unavailable(err error) *apimux.Error {
	return &apimux.Error{Status: http.StatusServiceUnavailable, Message: "account registry unavailable", Cause: err}
}

func (s *server) fileAccount(id string) (*config.Account, bool) {
	cfg := s.o.Live.Config()
	for i := range cfg.Accounts {
		if cfg.Accounts[i].ID == id {
			return &cfg.Accounts[i], true
		}
	}
	return nil, false
}

// Summary is one account in GET /v1/accounts.
type Summary struct {
	ID             string   `json:"id"`
	Name           string   `json:"name,omitempty"`
	Origin         string   `json:"origin"` // file or api
	DirectoryType  string   `json:"directory_type"`
	ClaimedDomains []string `json:"claimed_domains"`
	Bindings       int      `json:"bindings"`
	UpdatedBy      string   `json:"updated_by,omitempty"`
}

func summaryOf(a *config.Account, origin string) Summary {
	return Summary{ID: a.ID, Name: a.Name, Origin: origin, DirectoryType: a.Directory.Type, ClaimedDomains: a.ClaimedDomains, Bindings: len(a.Bindings)}
}

func (s *server) list(r *http.Request) (any, *apimux.Error) {
	out := []Summary{}
	for i := range s.o.Live.Config().Accounts {
		out = append(out, summaryOf(&s.o.Live.Config().Accounts[i], "file"))
	}
	recs, err := s.o.Registry.List(r.Context())
	if err != nil {
		return nil, unavailable(err)
	}
	for _, rec := range recs {
		var doc struct {
			Name           string   `json:"name"`
			ClaimedDomains []string `json:"claimed_domains"`
			Directory      struct {
				Type string `json:"type"`
			} `json:"directory"`
			Bindings []json.RawMessage `json:"bindings"`
		}
		_ = json.Unmarshal(rec.Doc, &doc)
		out = append(out, Summary{ID: rec.ID, Name: doc.Name, Origin: "api", DirectoryType: doc.Directory.Type,
			ClaimedDomains: doc.ClaimedDomains, Bindings: len(doc.Bindings), UpdatedBy: rec.UpdatedBy})
	}
	return map[string]any{"accounts": out}, nil
}

// AccountAnswer is GET /v1/accounts/{id}.
type AccountAnswer struct {
	ID     string `json:"id"`
	Origin string `json:"origin"`
	// Account is the document (an API account's, without secret values)
	// or, for a file account, its summary.
	Account    any      `json:"account"`
	SecretsSet []string `json:"secrets_set"`
	ReadOnly   bool     `json:"read_only"`
	Version    int64    `json:"version,omitempty"`
	CreatedBy  string   `json:"created_by,omitempty"`
	UpdatedBy  string   `json:"updated_by,omitempty"`
}

func (s *server) get(r *http.Request) (any, *apimux.Error) {
	id := r.PathValue("id")
	if a, ok := s.fileAccount(id); ok {
		return AccountAnswer{ID: id, Origin: "file", Account: summaryOf(a, "file"), SecretsSet: []string{}, ReadOnly: true}, nil
	}
	rec, ok, err := s.o.Registry.Get(r.Context(), id)
	if err != nil {
		return nil, unavailable(err)
	}
	if !ok {
		return nil, apimux.Errorf(http.StatusNotFound, "no account %s", id)
	}
	red := redacted(rec.Doc, rec.Secrets)
	return AccountAnswer{ID: id, Origin: "api", Account: red["account"], SecretsSet: red["secrets_set"].([]string),
		Version: rec.Version, CreatedBy: rec.CreatedBy, UpdatedBy: rec.UpdatedBy}, nil
}

// base is the config an account id is validated against: the file's, with
// the other API accounts, so ids and domains stay unique.
func (s *server) base(id string) *config.Config {
	cfg := *s.o.Live.Config()
	cfg.Accounts = append(append([]config.Account(nil), cfg.Accounts...), s.o.Live.Others(id)...)
	return &cfg
}

func problemsError(err error) *apimux.Error {
	var ce *config.Error
	var de *docError
	switch {
	case errors.As(err, &ce):
		ps := make([]map[string]any, 0, len(ce.Problems))
		for _, p := range ce.Problems {
			ps = append(ps, map[string]any{"path": p.Path, "message": p.Message})
		}
		msg := fmt.Sprintf("the account has %d problem(s)", len(ps))
		return &apimux.Error{Status: http.StatusBadRequest, Message: msg, Body: map[string]any{"error": msg, "problems": ps}}
	case errors.As(err, &de):
		return apimux.Errorf(http.StatusBadRequest, "%s", de.msg)
	}
	return &apimux.Error{Status: http.StatusBadRequest, Message: err.Error(), Cause: err}
}

// checkNetwork refuses directory hosts the network policy does not allow.
func (s *server) checkNetwork(ctx context.Context, a *config.Account) *apimux.Error {
	kind, ok := directory.KindOf(s.o.Kinds, a.Directory.Type)
	if !ok || kind.Endpoints == nil {
		return nil
	}
	for _, host := range kind.Endpoints(a) {
		if err := s.o.Network.CheckHost(ctx, s.o.Resolver, host); err != nil {
			return apimux.Errorf(http.StatusBadRequest, "directory host %s: %s", host, err)
		}
	}
	return nil
}

// store validates doc for account id and stores it; it is the one write
// path of PUT /v1/accounts/{id} and PUT …/bindings.
func (s *server) store(ctx context.Context, id string, clean []byte, secrets map[string]string, actor string) (bool, *apimux.Error) {
	rec, exists, err := s.o.Registry.Get(ctx, id)
	if err != nil {
		return false, unavailable(err)
	}
	merged := map[string]string{}
	if exists {
		for k, v := range rec.Secrets {
			merged[k] = v
		}
	}
	for k, v := range secrets {
		merged[k] = v
	}
	a, _, err := Decode(s.base(id), clean, merged)
	if err != nil {
		return false, problemsError(err)
	}
	if a.Directory.Type == config.DirectoryConsole || a.Directory.Type == "scim" {
		return false, apimux.Errorf(http.StatusBadRequest, "directory.type %s: such accounts are configured in the config file (their services start with the daemon)", a.Directory.Type)
	}
	if e := s.checkNetwork(ctx, a); e != nil {
		return false, e
	}
	created, err := s.o.Registry.Put(ctx, id, clean, secrets, true, actor)
	if errors.Is(err, registry.ErrNoKey) {
		return false, apimux.Errorf(http.StatusBadRequest, "%s", err)
	}
	if err != nil {
		return false, unavailable(err)
	}
	return created, nil
}

func (s *server) put(r *http.Request) (any, *apimux.Error) {
	id := r.PathValue("id")
	p := apimux.PrincipalOf(r.Context())
	if _, ok := s.fileAccount(id); ok {
		return nil, apimux.Errorf(http.StatusConflict, "account %s is configured in the config file: change it there", id)
	}
	raw, err := readBody(r)
	if err != nil {
		return nil, apimux.Errorf(http.StatusBadRequest, "%s", err)
	}
	admin := p.Kind == apimux.GlobalAdmin
	clean, secrets, err := prepare(raw, id, directory.ConfigKinds(s.o.Kinds), admin, s.o.Live.Config().AccountsAPI.LDIFRoot)
	if err != nil {
		return nil, problemsError(err)
	}
	created, e := s.store(r.Context(), id, clean, secrets, actorOf(r))
	if e != nil {
		return nil, e
	}
	if _, err := s.o.Live.Apply(r.Context(), id); err != nil {
		return nil, &apimux.Error{Status: http.StatusInternalServerError, Message: "stored, but not applied here: " + err.Error(), Cause: err}
	}
	ans, e := s.get(r)
	if e != nil {
		return nil, e
	}
	if created {
		return apimux.Answer(http.StatusCreated, ans), nil
	}
	return ans, nil
}

func (s *server) delete(r *http.Request) (any, *apimux.Error) {
	id := r.PathValue("id")
	if _, ok := s.fileAccount(id); ok {
		return nil, apimux.Errorf(http.StatusConflict, "account %s is configured in the config file: remove it there", id)
	}
	ok, err := s.o.Registry.Delete(r.Context(), id)
	if err != nil {
		return nil, unavailable(err)
	}
	if !ok {
		return nil, apimux.Errorf(http.StatusNotFound, "no account %s", id)
	}
	removed, err := s.o.Live.Apply(r.Context(), id)
	ans := map[string]any{"deleted": id, "decisions_removed": removed}
	if err != nil {
		ans["note"] = "the account is deleted; its decisions are removed by the replica that owns it: " + err.Error()
	}
	return ans, nil
}

func (s *server) groups(r *http.Request) (any, *apimux.Error) {
	id := r.PathValue("id")
	q := r.URL.Query()
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return nil, apimux.Errorf(http.StatusBadRequest, "limit must be 1..1000")
		}
		limit = n
	}
	groups, total, ok := s.o.Live.Groups(id, q.Get("search"), limit)
	if !ok {
		return nil, apimux.Errorf(http.StatusNotFound, "no groups for account %s: unknown, or its directory has not been read yet", id)
	}
	return map[string]any{"account": id, "groups": groups, "total": total}, nil
}

// Binding is one entry of PUT /v1/accounts/{id}/bindings.
type Binding struct {
	Group      string `json:"group"`
	Permission string `json:"permission"`
}

func (s *server) bindings(r *http.Request) (any, *apimux.Error) {
	id := r.PathValue("id")
	raw, err := readBody(r)
	if err != nil {
		return nil, apimux.Errorf(http.StatusBadRequest, "%s", err)
	}
	var bindings []Binding
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&bindings); err != nil {
		return nil, apimux.Errorf(http.StatusBadRequest, "the body must be a JSON array of {\"group\", \"permission\"}: %s", err)
	}
	dryRun := false
	if v := r.URL.Query().Get("dry_run"); v != "" {
		if dryRun, err = strconv.ParseBool(v); err != nil {
			return nil, apimux.Errorf(http.StatusBadRequest, "dry_run must be true or false")
		}
	}
	file, isFile := s.fileAccount(id)
	var rec registry.Record
	if !isFile {
		var ok bool
		if rec, ok, err = s.o.Registry.Get(r.Context(), id); err != nil {
			return nil, unavailable(err)
		} else if !ok {
			return nil, apimux.Errorf(http.StatusNotFound, "no account %s", id)
		}
	}
	// The new document: the stored one with these bindings, validated as
	// a whole (the binding paths and messages are the file's).
	var doc map[string]any
	if isFile {
		doc = map[string]any{}
	} else if err := json.Unmarshal(rec.Doc, &doc); err != nil {
		return nil, &apimux.Error{Status: http.StatusInternalServerError, Message: "stored document unreadable", Cause: err}
	}
	doc["bindings"] = bindings
	clean, _ := json.Marshal(doc)
	policy := mapper.Policy{Account: id}
	if isFile {
		policy.ClaimedDomains, policy.AccessGroup = file.ClaimedDomains, file.AccessGroup
		for _, b := range bindings {
			if b.Permission != "pro" && b.Permission != "basic" {
				return nil, apimux.Errorf(http.StatusBadRequest, "permission %q: use pro or basic", b.Permission)
			}
		}
	} else {
		a, _, err := Decode(s.base(id), clean, rec.Secrets)
		if err != nil {
			return nil, problemsError(err)
		}
		policy.ClaimedDomains, policy.AccessGroup = a.ClaimedDomains, a.AccessGroup
	}
	for _, b := range bindings {
		policy.Bindings = append(policy.Bindings, mapper.Binding{Group: b.Group, Permission: entitlement.Permission(b.Permission)})
	}
	if dryRun {
		rep, err := s.o.Live.Preview(r.Context(), id, policy)
		if err != nil && !errors.Is(err, engine.ErrHeld) {
			return nil, &apimux.Error{Status: http.StatusBadGateway, Message: err.Error(), Cause: err}
		}
		return map[string]any{"reports": []engine.Report{rep}}, nil
	}
	if isFile {
		return nil, apimux.Errorf(http.StatusConflict, "account %s is configured in the config file: change its bindings there (dry_run=true previews a change)", id)
	}
	if _, e := s.store(r.Context(), id, clean, nil, actorOf(r)); e != nil {
		return nil, e
	}
	if _, err := s.o.Live.Apply(r.Context(), id); err != nil {
		return nil, &apimux.Error{Status: http.StatusInternalServerError, Message: "stored, but not applied here: " + err.Error(), Cause: err}
	}
	return map[string]any{"account": id, "bindings": bindings, "applied": true}, nil
}

func (s *server) exists(ctx context.Context, id string) (bool, *apimux.Error) {
	if _, ok := s.fileAccount(id); ok {
		return true, nil
	}
	_, ok, err := s.o.Registry.Get(ctx, id)
	if err != nil {
		return false, unavailable(err)
	}
	return ok, nil
}

func (s *server) tokens(r *http.Request) (any, *apimux.Error) {
	ts, err := s.o.Registry.Tokens(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, unavailable(err)
	}
	return map[string]any{"account": r.PathValue("id"), "tokens": ts}, nil
}

func (s *server) issueToken(r *http.Request) (any, *apimux.Error) {
	id := r.PathValue("id")
	if ok, e := s.exists(r.Context(), id); e != nil {
		return nil, e
	} else if !ok {
		return nil, apimux.Errorf(http.StatusNotFound, "no account %s", id)
	}
	var body struct {
		Name string `json:"name"`
	}
	raw, err := readBody(r)
	if err != nil {
		return nil, apimux.Errorf(http.StatusBadRequest, "%s", err)
	}
	if len(strings.TrimSpace(string(raw))) > 0 {
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			return nil, apimux.Errorf(http.StatusBadRequest, "the body must be {\"name\": \"...\"}: %s", err)
		}
	}
	t, err := s.o.Registry.IssueToken(r.Context(), id, body.Name, actorOf(r))
	if err != nil {
		return nil, unavailable(err)
	}
	return apimux.Answer(http.StatusCreated, t), nil
}

func (s *server) revokeToken(r *http.Request) (any, *apimux.Error) {
	ok, err := s.o.Registry.RevokeToken(r.Context(), r.PathValue("id"), r.PathValue("token"))
	if err != nil {
		return nil, unavailable(err)
	}
	if !ok {
		return nil, apimux.Errorf(http.StatusNotFound, "no live token %s of account %s", r.PathValue("token"), r.PathValue("id"))
	}
	return map[string]any{"revoked": r.PathValue("token")}, nil
}

// actorOf is the audit actor: the authenticated credential, never a
// client-chosen value.
func actorOf(r *http.Request) string {
	if c := apimux.PrincipalOf(r.Context()).Credential; c != "" {
		return c
	}
	return "anonymous (loopback)"
}

// maxBody bounds a document.
const maxBody = 256 << 10

func readBody(r *http.Request) ([]byte, error) {
	b := make([]byte, 0, 4096)
	buf := make([]byte, 4096)
	for {
		n, err := r.Body.Read(buf)
		b = append(b, buf[:n]...)
		if len(b) > maxBody {
			return nil, fmt.Errorf("the body is larger than %d bytes", maxBody)
		}
		if errors.Is(err, io.EOF) {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

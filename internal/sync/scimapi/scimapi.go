// Package scimapi serves each SCIM account's SCIM 2.0 service provider
// (RFC 7644) under /scim/v2/{account}/ on the API's one apimux.Mux, and
// the admin routes that issue and revoke SCIM tokens. Resources, filters,
// PATCH and storage are package internal/directory/scim; this package is
// HTTP only: status codes, headers (ETag, Location, If-Match), the SCIM
// error schema, and the trigger of an immediate pass after every write.
package scimapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/dirsync/dirsync/internal/directory/scim"
	"github.com/dirsync/dirsync/internal/sync/apimux"
)

// Store is the SCIM system of record (scim.Store).
type Store interface {
	Create(ctx context.Context, account, kind string, body []byte) (*scim.Resource, error)
	Get(ctx context.Context, account, kind, id string) (*scim.Resource, error)
	Replace(ctx context.Context, account, kind, id string, body []byte, ifMatch int64) (*scim.Resource, error)
	Patch(ctx context.Context, account, kind, id string, body []byte, ifMatch int64) (*scim.Resource, error)
	Delete(ctx context.Context, account, kind, id string, ifMatch int64) error
	List(ctx context.Context, account, kind string, o scim.ListOptions) (*scim.ListResult, error)
}

// Tokens issues and revokes SCIM tokens (scim.Store).
type Tokens interface {
	IssueToken(ctx context.Context, account, actor string) (string, scim.TokenInfo, error)
	Tokens(ctx context.Context, account string) ([]scim.TokenInfo, error)
	RevokeToken(ctx context.Context, account, id string) error
}

// Options configures the routes.
type Options struct {
	Store  Store
	Tokens Tokens
	// IsAccount reports whether an account id is a SCIM account
	// (directory.type scim).
	IsAccount func(id string) bool
	// Trigger starts an immediate incremental pass of an account (without
	// waiting for it): called after every committed write, so the
	// decision reaches the cache within about a second of the answer.
	Trigger func(account string) bool
	// MaxBody bounds a request body. Default DefaultMaxBody.
	MaxBody int64
	Log     *zap.Logger
}

// DefaultMaxBody bounds a SCIM request body: a Group PUT with 50,000
// members fits.
const DefaultMaxBody = 4 << 20

// MediaType is SCIM's media type (RFC 7644 §8.1).
const MediaType = "application/scim+json"

// Routes are the SCIM service provider's routes (scope SCIM).
func Routes(o Options) []apimux.Route {
	if o.MaxBody == 0 {
		o.MaxBody = DefaultMaxBody
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	s := &server{o: o}
	route := func(method, path string, h func(w http.ResponseWriter, r *http.Request) error) apimux.Route {
		return apimux.Route{Method: method, Path: "/scim/v2/{account}" + path, Scope: apimux.SCIM, MaxBody: o.MaxBody,
			Raw: s.wrap(h), WriteError: writeMuxError}
	}
	out := []apimux.Route{
		route("GET", "/ServiceProviderConfig", s.serviceProviderConfig),
		route("GET", "/ResourceTypes", s.resourceTypes),
		route("GET", "/ResourceTypes/{name}", s.resourceType),
		route("GET", "/Schemas", s.schemas),
		route("GET", "/Schemas/{urn}", s.schema),
	}
	for _, kind := range []string{"User", "Group"} {
		path := "/" + kind + "s"
		out = append(out,
			route("GET", path, s.list(kind)),
			route("POST", path, s.create(kind)),
			route("GET", path+"/{rid}", s.get(kind)),
			route("PUT", path+"/{rid}", s.replace(kind)),
			route("PATCH", path+"/{rid}", s.patch(kind)),
			route("DELETE", path+"/{rid}", s.delete(kind)),
		)
	}
	return out
}

// TokenRoutes are the admin routes that issue, list and revoke an
// account's SCIM tokens.
func TokenRoutes(o Options) []apimux.Route {
	s := &server{o: o}
	return []apimux.Route{
		{Method: "POST", Path: "/v1/accounts/{id}/scim/tokens", Scope: apimux.AccountWrite, Handle: s.issueToken},
		{Method: "GET", Path: "/v1/accounts/{id}/scim/tokens", Scope: apimux.AccountRead, Handle: s.listTokens},
		{Method: "DELETE", Path: "/v1/accounts/{id}/scim/tokens/{token}", Scope: apimux.AccountWrite, Handle: s.revokeToken},
	}
}

type server struct{ o Options }

// wrap runs h for a SCIM account and writes its error, if any, in the
// SCIM error schema: a *scim.Error as it is; anything else (the database)
// as 503, which identity providers retry, with the cause logged once.
func (s *server) wrap(h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		account := r.PathValue("account")
		var err error
		if s.o.IsAccount == nil || !s.o.IsAccount(account) {
			err = &scim.Error{Status: http.StatusNotFound, Detail: fmt.Sprintf("account %q has no SCIM service (directory.type is not scim)", account)}
		} else {
			err = h(w, r)
		}
		if err == nil {
			return
		}
		e := scim.AsError(err)
		if e == nil {
			s.o.Log.Error("scim request failed", zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
			e = &scim.Error{Status: http.StatusServiceUnavailable, Detail: "the SCIM store is unavailable; nothing was changed; retry"}
		}
		writeJSON(w, e.Status, e.Body())
	})
}

// writeMuxError writes the Mux's own refusals (401, 403, 413, 415, 503)
// in the SCIM error schema.
func writeMuxError(w http.ResponseWriter, e *apimux.Error) {
	writeJSON(w, e.Status, (&scim.Error{Status: e.Status, Detail: e.Message}).Body())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", MediaType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// base is the account's SCIM base URL as the client called it.
func base(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		scheme = "https"
	}
	return scheme + "://" + r.Host + "/scim/v2/" + r.PathValue("account")
}

// readBody reads the request body; a body over the route's bound is 413.
func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, &scim.Error{Status: http.StatusRequestEntityTooLarge,
			Detail: fmt.Sprintf("the body is over %d bytes; send large groups' members in several PATCH requests", tooBig.Limit)}
	}
	if err != nil {
		return nil, &scim.Error{Status: http.StatusBadRequest, ScimType: scim.TypeInvalidSyntax, Detail: "the body could not be read: " + err.Error()}
	}
	return b, nil
}

// ifMatch reads If-Match: 0 when absent or "*".
func ifMatch(r *http.Request) (int64, error) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" || h == "*" {
		return 0, nil
	}
	v, ok := scim.ParseETag(h)
	if !ok {
		return 0, &scim.Error{Status: http.StatusPreconditionFailed, ScimType: scim.TypeInvalidVers,
			Detail: fmt.Sprintf("If-Match %q is not an entity tag this service issued (W/\"<version>\")", h)}
	}
	return v, nil
}

// projection reads attributes and excludedAttributes.
func projection(r *http.Request) scim.Projection {
	split := func(s string) []string {
		var out []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		return out
	}
	q := r.URL.Query()
	return scim.Projection{Attributes: split(q.Get("attributes")), Excluded: split(q.Get("excludedAttributes"))}
}

// answer writes a resource with its ETag.
func answer(w http.ResponseWriter, r *http.Request, status int, res *scim.Resource) {
	w.Header().Set("ETag", res.ETag())
	if status == http.StatusCreated {
		w.Header().Set("Location", base(r)+"/"+res.Kind+"s/"+res.ID)
	}
	writeJSON(w, status, res.JSON(base(r), projection(r)))
}

func (s *server) changed(r *http.Request) {
	if s.o.Trigger != nil {
		s.o.Trigger(r.PathValue("account"))
	}
}

func (s *server) create(kind string) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		body, err := readBody(r)
		if err != nil {
			return err
		}
		res, err := s.o.Store.Create(r.Context(), r.PathValue("account"), kind, body)
		if err != nil {
			return err
		}
		s.changed(r)
		answer(w, r, http.StatusCreated, res)
		return nil
	}
}

func (s *server) get(kind string) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		res, err := s.o.Store.Get(r.Context(), r.PathValue("account"), kind, r.PathValue("rid"))
		if err != nil {
			return err
		}
		if inm := r.Header.Get("If-None-Match"); inm != "" {
			if v, ok := scim.ParseETag(inm); ok && v == res.Version {
				w.Header().Set("ETag", res.ETag())
				w.WriteHeader(http.StatusNotModified)
				return nil
			}
		}
		answer(w, r, http.StatusOK, res)
		return nil
	}
}

// storeWrite is Store.Replace or Store.Patch.
type storeWrite func(ctx context.Context, account, kind, id string, body []byte, ifMatch int64) (*scim.Resource, error)

// write runs a versioned write of the resource in the path (If-Match,
// the body) and, when it is done, starts the account's pass.
func (s *server) write(r *http.Request, kind string, do storeWrite) (*scim.Resource, error) {
	version, err := ifMatch(r)
	if err != nil {
		return nil, err
	}
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	res, err := do(r.Context(), r.PathValue("account"), kind, r.PathValue("rid"), body, version)
	if err != nil {
		return nil, err
	}
	s.changed(r)
	return res, nil
}

func (s *server) replace(kind string) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		res, err := s.write(r, kind, s.o.Store.Replace)
		if err != nil {
			return err
		}
		answer(w, r, http.StatusOK, res)
		return nil
	}
}

// patch answers a User with 200 and the user (what Okta reads back), a
// Group with 204 (RFC 7644 §3.5.2 allows it; Okta expects it; a group's
// member list can be long).
func (s *server) patch(kind string) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		res, err := s.write(r, kind, s.o.Store.Patch)
		if err != nil {
			return err
		}
		if kind == "Group" {
			w.Header().Set("ETag", res.ETag())
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		answer(w, r, http.StatusOK, res)
		return nil
	}
}

func (s *server) delete(kind string) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		version, err := ifMatch(r)
		if err != nil {
			return err
		}
		if err := s.o.Store.Delete(r.Context(), r.PathValue("account"), kind, r.PathValue("rid"), version); err != nil {
			return err
		}
		s.changed(r)
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
}

// list answers GET /Users and /Groups (RFC 7644 §3.4.2).
func (s *server) list(kind string) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		q := r.URL.Query()
		o := scim.ListOptions{Filter: q.Get("filter"), StartIndex: 1, Count: scim.DefaultCount}
		for name, dst := range map[string]*int{"startIndex": &o.StartIndex, "count": &o.Count} {
			if v := q.Get(name); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil {
					return &scim.Error{Status: http.StatusBadRequest, ScimType: scim.TypeInvalidValue, Detail: fmt.Sprintf("%s must be an integer, not %q", name, v)}
				}
				*dst = n
			}
		}
		p := projection(r)
		o.WithMembers = kind == "Group" && scimShows(p, "members")
		res, err := s.o.Store.List(r.Context(), r.PathValue("account"), kind, o)
		if err != nil {
			return err
		}
		items := make([]any, 0, len(res.Resources))
		for _, x := range res.Resources {
			items = append(items, x.JSON(base(r), p))
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"schemas": []string{scim.URNListResponse}, "totalResults": res.Total,
			"startIndex": res.StartIndex, "itemsPerPage": len(items), "Resources": items,
		})
		return nil
	}
}

// scimShows reports whether a projection shows a top-level attribute.
func scimShows(p scim.Projection, name string) bool {
	r := &scim.Resource{Kind: "Group", Doc: map[string]any{}}
	_, ok := r.JSON("", p)[name]
	return ok
}

// writeList answers a whole list (a ListResponse of one page).
func writeList[T any](w http.ResponseWriter, items []T) {
	writeJSON(w, http.StatusOK, map[string]any{"schemas": []string{scim.URNListResponse}, "totalResults": len(items),
		"startIndex": 1, "itemsPerPage": len(items), "Resources": items})
}

func (s *server) serviceProviderConfig(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, scim.ServiceProviderConfig(base(r)))
	return nil
}

func (s *server) resourceTypes(w http.ResponseWriter, r *http.Request) error {
	writeList(w, scim.ResourceTypes(base(r)))
	return nil
}

func (s *server) resourceType(w http.ResponseWriter, r *http.Request) error {
	rt := scim.ResourceType(base(r), r.PathValue("name"))
	if rt == nil {
		return &scim.Error{Status: http.StatusNotFound, Detail: fmt.Sprintf("no resource type %q: User or Group", r.PathValue("name"))}
	}
	writeJSON(w, http.StatusOK, rt)
	return nil
}

func (s *server) schemas(w http.ResponseWriter, r *http.Request) error {
	writeList(w, scim.Schemas(base(r)))
	return nil
}

func (s *server) schema(w http.ResponseWriter, r *http.Request) error {
	sc := scim.Schema(base(r), r.PathValue("urn"))
	if sc == nil {
		return &scim.Error{Status: http.StatusNotFound, Detail: fmt.Sprintf("no schema %q", r.PathValue("urn"))}
	}
	writeJSON(w, http.StatusOK, sc)
	return nil
}

// tokenAccount checks that the {id} of a token route is a SCIM account.
func (s *server) tokenAccount(r *http.Request) (string, *apimux.Error) {
	id := r.PathValue("id")
	if s.o.IsAccount == nil || !s.o.IsAccount(id) {
		return "", apimux.Errorf(http.StatusNotFound, "account %q is not a SCIM account (directory.type scim)", id)
	}
	return id, nil
}

func (s *server) issueToken(r *http.Request) (any, *apimux.Error) {
	id, apiErr := s.tokenAccount(r)
	if apiErr != nil {
		return nil, apiErr
	}
	actor := apimux.PrincipalOf(r.Context()).Credential
	secret, info, err := s.o.Tokens.IssueToken(r.Context(), id, actor)
	if err != nil {
		return nil, &apimux.Error{Status: http.StatusServiceUnavailable, Message: "the SCIM store is unavailable; no token was issued", Cause: err}
	}
	return map[string]any{"token": secret, "id": info.ID, "account": info.Account, "created_at": info.CreatedAt, "created_by": info.CreatedBy,
		"note": "this is the only time the token is shown: store it in the identity provider's provisioning settings"}, nil
}

func (s *server) listTokens(r *http.Request) (any, *apimux.Error) {
	id, apiErr := s.tokenAccount(r)
	if apiErr != nil {
		return nil, apiErr
	}
	tokens, err := s.o.Tokens.Tokens(r.Context(), id)
	if err != nil {
		return nil, &apimux.Error{Status: http.StatusServiceUnavailable, Message: "the SCIM store is unavailable", Cause: err}
	}
	if tokens == nil {
		tokens = []scim.TokenInfo{}
	}
	return map[string]any{"account": id, "tokens": tokens}, nil
}

func (s *server) revokeToken(r *http.Request) (any, *apimux.Error) {
	id, apiErr := s.tokenAccount(r)
	if apiErr != nil {
		return nil, apiErr
	}
	token := r.PathValue("token")
	err := s.o.Tokens.RevokeToken(r.Context(), id, token)
	switch {
	case errors.Is(err, scim.ErrTokenNotFound):
		return nil, apimux.Errorf(http.StatusNotFound, "account %s has no SCIM token %q", id, token)
	case err != nil:
		return nil, &apimux.Error{Status: http.StatusServiceUnavailable, Message: "the SCIM store is unavailable; nothing was revoked", Cause: err}
	}
	return map[string]any{"account": id, "revoked": token}, nil
}

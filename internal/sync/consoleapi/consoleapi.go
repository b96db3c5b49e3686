// Package consoleapi has the routes of console-managed accounts (Team
// accounts and Enterprise accounts without a directory) under
// /v1/accounts/{id}/…: invitations, registrations, permissions, removal,
// suspension, their bulk variants, the member list and the audit trail.
// httpapi registers them on the API's one apimux.Mux, which authenticates
// every call (account scopes: the admin token today).
package consoleapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/dirsync/dirsync/internal/entitlement/console"
	"github.com/dirsync/dirsync/internal/sync/apimux"
)

// Console is the console service (console.Service).
type Console interface {
	Invite(ctx context.Context, actor, account string, emails []string, permission string) (console.Result, error)
	Accept(ctx context.Context, actor, account, email string) (console.Result, error)
	Register(ctx context.Context, actor, account, email string) (console.Result, error)
	SetPermission(ctx context.Context, actor, account string, emails []string, permission string) (console.Result, error)
	Remove(ctx context.Context, actor, account string, emails []string) (console.Result, error)
	Suspend(ctx context.Context, actor, account string, emails []string) (console.Result, error)
	Unsuspend(ctx context.Context, actor, account string, emails []string) (console.Result, error)
	Members(ctx context.Context, account string, o console.ListOptions) (console.Page, error)
	Audit(ctx context.Context, account string, before int64, limit int) ([]console.AuditEntry, error)
}

// Options configures the routes.
type Options struct {
	Console Console
}

// ActorHeader names who acts, for the audit trail (the admin token is
// shared; the console or CLI in front of it says which person acts).
const ActorHeader = "X-Dirsync-Actor"

// maxBody bounds request bodies (1000 addresses fit easily).
const maxBody = 256 << 10

// Routes returns the console routes.
func Routes(o Options) []apimux.Route {
	s := &server{o: o}
	read := func(path string, h apimux.Handler) apimux.Route {
		return apimux.Route{Method: "GET", Path: path, Scope: apimux.AccountRead, Handle: h}
	}
	write := func(method, path string, h apimux.Handler) apimux.Route {
		return apimux.Route{Method: method, Path: path, Scope: apimux.AccountWrite, Handle: h, MaxBody: maxBody}
	}
	bulk := func(f func(ctx context.Context, actor, id string, emails []string) (console.Result, error)) apimux.Handler {
		return s.bulk(f)
	}
	return []apimux.Route{
		write("POST", "/v1/accounts/{id}/invitations", s.invite),
		write("POST", "/v1/accounts/{id}/invitations/{email}/accept", s.accept),
		write("POST", "/v1/accounts/{id}/registrations", s.register),
		read("/v1/accounts/{id}/users", s.members),
		write("PUT", "/v1/accounts/{id}/users/{email}/permission", s.setPermission),
		write("DELETE", "/v1/accounts/{id}/users/{email}", s.remove),
		write("POST", "/v1/accounts/{id}/users/{email}/suspend", s.suspend(true)),
		write("POST", "/v1/accounts/{id}/users/{email}/unsuspend", s.suspend(false)),
		write("POST", "/v1/accounts/{id}/bulk/permission", s.bulkPermission),
		write("POST", "/v1/accounts/{id}/bulk/remove", bulk(o.Console.Remove)),
		write("POST", "/v1/accounts/{id}/bulk/suspend", bulk(o.Console.Suspend)),
		write("POST", "/v1/accounts/{id}/bulk/unsuspend", bulk(o.Console.Unsuspend)),
		read("/v1/accounts/{id}/audit", s.audit),
	}
}

type server struct{ o Options }

// actor is who acts, for the audit trail and the access history: the
// credential the request authenticated with (a token's name or id), never
// a client-chosen value; a person named in ActorHeader is recorded as
// whom that credential acted for.
func actor(r *http.Request) string {
	who := apimux.PrincipalOf(r.Context()).Credential
	if who == "" {
		who = "anonymous (loopback)"
	}
	if claimed := strings.TrimSpace(r.Header.Get(ActorHeader)); claimed != "" {
		who += " for " + claimed
	}
	return who
}

// Emails is a list of addresses, sent as a JSON array or as one string
// separated by ';' (or an array of such strings).
type Emails []string

// UnmarshalJSON accepts "a@x; b@y" and ["a@x", "b@y"].
func (e *Emails) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*e = console.SplitEmails(one)
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New(`emails must be a string ("a@x.com; b@y.org") or an array of strings`)
	}
	out := Emails{}
	for _, m := range many {
		out = append(out, console.SplitEmails(m)...)
	}
	*e = out
	return nil
}

// decode reads a JSON body strictly; a bad one is a 4xx.
func decode(r *http.Request, v any) *apimux.Error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return apimux.Errorf(http.StatusRequestEntityTooLarge, "request body over %d bytes: split the request", tooBig.Limit)
		}
		return apimux.Errorf(http.StatusBadRequest, "malformed JSON body: %v", err)
	}
	if dec.More() {
		return apimux.Errorf(http.StatusBadRequest, "malformed JSON body: one JSON object expected")
	}
	return nil
}

func (s *server) invite(r *http.Request) (any, *apimux.Error) {
	var body struct {
		Emails     Emails `json:"emails"`
		Permission string `json:"permission"`
	}
	if e := decode(r, &body); e != nil {
		return nil, e
	}
	return result(s.o.Console.Invite(r.Context(), actor(r), r.PathValue("id"), body.Emails, body.Permission))
}

func (s *server) accept(r *http.Request) (any, *apimux.Error) {
	return result(s.o.Console.Accept(r.Context(), actor(r), r.PathValue("id"), r.PathValue("email")))
}

func (s *server) register(r *http.Request) (any, *apimux.Error) {
	var body struct {
		Email string `json:"email"`
	}
	if e := decode(r, &body); e != nil {
		return nil, e
	}
	return result(s.o.Console.Register(r.Context(), actor(r), r.PathValue("id"), body.Email))
}

func (s *server) setPermission(r *http.Request) (any, *apimux.Error) {
	var body struct {
		Permission string `json:"permission"`
	}
	if e := decode(r, &body); e != nil {
		return nil, e
	}
	return result(s.o.Console.SetPermission(r.Context(), actor(r), r.PathValue("id"), []string{r.PathValue("email")}, body.Permission))
}

func (s *server) remove(r *http.Request) (any, *apimux.Error) {
	return result(s.o.Console.Remove(r.Context(), actor(r), r.PathValue("id"), []string{r.PathValue("email")}))
}

func (s *server) suspend(on bool) apimux.Handler {
	return func(r *http.Request) (any, *apimux.Error) {
		f := s.o.Console.Unsuspend
		if on {
			f = s.o.Console.Suspend
		}
		return result(f(r.Context(), actor(r), r.PathValue("id"), []string{r.PathValue("email")}))
	}
}

func (s *server) bulkPermission(r *http.Request) (any, *apimux.Error) {
	var body struct {
		Emails     Emails `json:"emails"`
		Permission string `json:"permission"`
	}
	if e := decode(r, &body); e != nil {
		return nil, e
	}
	return result(s.o.Console.SetPermission(r.Context(), actor(r), r.PathValue("id"), body.Emails, body.Permission))
}

func (s *server) bulk(f func(ctx context.Context, actor, id string, emails []string) (console.Result, error)) apimux.Handler {
	return func(r *http.Request) (any, *apimux.Error) {
		var body struct {
			Emails Emails `json:"emails"`
		}
		if e := decode(r, &body); e != nil {
			return nil, e
		}
		return result(f(r.Context(), actor(r), r.PathValue("id"), body.Emails))
	}
}

func (s *server) members(r *http.Request) (any, *apimux.Error) {
	q := r.URL.Query()
	o := console.ListOptions{State: q.Get("state"), After: q.Get("after")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, apimux.Errorf(http.StatusBadRequest, "limit must be a number from 1 to 1000")
		}
		o.Limit = n
	}
	page, err := s.o.Console.Members(r.Context(), r.PathValue("id"), o)
	if err != nil {
		return nil, failure(err)
	}
	return page, nil
}

func (s *server) audit(r *http.Request) (any, *apimux.Error) {
	q := r.URL.Query()
	limit, before := 100, int64(0)
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, apimux.Errorf(http.StatusBadRequest, "limit must be a number from 1 to 1000")
		}
		limit = n
	}
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, apimux.Errorf(http.StatusBadRequest, "before must be an audit entry id")
		}
		before = n
	}
	entries, err := s.o.Console.Audit(r.Context(), r.PathValue("id"), before, limit)
	if err != nil {
		return nil, failure(err)
	}
	return map[string]any{"account": r.PathValue("id"), "entries": entries}, nil
}

// result answers an action: 200 when something was applied or nothing
// needed to change; otherwise (every item rejected) the status of the
// first rejection, with its message as "error" and every item's outcome.
func result(res console.Result, err error) (any, *apimux.Error) {
	if err != nil {
		return nil, failure(err)
	}
	if res.Applied == 0 && res.Unchanged == 0 {
		if e := res.FirstRejection(); e != nil {
			return nil, &apimux.Error{Status: statusOf(e.Code), Message: e.Message, Body: struct {
				Error string `json:"error"`
				Code  string `json:"code"`
				console.Result
			}{e.Message, string(e.Code), res}}
		}
	}
	return res, nil
}

// failure answers a console error: its code's status, or 503 (logged)
// when PostgreSQL or the cache failed.
func failure(err error) *apimux.Error {
	if code := console.CodeOf(err); code != "" {
		return &apimux.Error{Status: statusOf(code), Message: err.Error(), Body: map[string]string{"error": err.Error(), "code": string(code)}}
	}
	return &apimux.Error{Status: http.StatusServiceUnavailable, Cause: fmt.Errorf("console action: %w", err),
		Message: "the console store (PostgreSQL) or the access cache failed; see the daemon log. Retrying is safe: an action already applied is answered with a conflict or as unchanged"}
}

func statusOf(c console.Code) int {
	switch c {
	case console.CodeInvalid:
		return http.StatusBadRequest
	case console.CodeUnknownAccount, console.CodeNotFound:
		return http.StatusNotFound
	case console.CodeConflict, console.CodeDirectoryManaged:
		return http.StatusConflict
	case console.CodeNotAllowed:
		return http.StatusForbidden
	}
	return http.StatusBadRequest
}

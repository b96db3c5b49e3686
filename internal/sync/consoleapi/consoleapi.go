// Package consoleapi serves the admin API of console-managed accounts
// (Team accounts and Enterprise accounts without a directory) under
// /v1/accounts/{id}/…: invitations, registrations, permissions, removal,
// suspension, their bulk variants, the member list and the audit trail.
// Every route requires the admin token. Mount the handler for the
// /v1/accounts/ prefix next to the httpapi handler.
package consoleapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/dirsync/dirsync/internal/entitlement/console"
	"github.com/dirsync/dirsync/internal/sync/httpapi"
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

// Options configures the handler.
type Options struct {
	Console Console
	// AdminToken is required as a bearer token when not empty (as in
	// httpapi: empty only on a loopback listener).
	AdminToken string
	Log        *zap.Logger
}

// ActorHeader names who acts, for the audit trail (the admin token is
// shared; the console or CLI in front of it says which person acts).
const ActorHeader = "X-Dirsync-Actor"

// maxBody bounds request bodies (1000 addresses fit easily).
const maxBody = 256 << 10

// New returns the handler.
func New(o Options) http.Handler {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	s := &server{o: o}
	mux := http.NewServeMux()
	route := func(pattern string, h http.HandlerFunc) { mux.HandleFunc(pattern, s.admin(h)) }
	route("POST /v1/accounts/{id}/invitations", s.invite)
	route("POST /v1/accounts/{id}/invitations/{email}/accept", s.accept)
	route("POST /v1/accounts/{id}/registrations", s.register)
	route("GET /v1/accounts/{id}/users", s.members)
	route("PUT /v1/accounts/{id}/users/{email}/permission", s.setPermission)
	route("DELETE /v1/accounts/{id}/users/{email}", s.remove)
	route("POST /v1/accounts/{id}/users/{email}/suspend", s.suspend(true))
	route("POST /v1/accounts/{id}/users/{email}/unsuspend", s.suspend(false))
	route("POST /v1/accounts/{id}/bulk/permission", s.bulkPermission)
	route("POST /v1/accounts/{id}/bulk/remove", s.bulk(func(ctx context.Context, actor, id string, emails []string) (console.Result, error) {
		return o.Console.Remove(ctx, actor, id, emails)
	}))
	route("POST /v1/accounts/{id}/bulk/suspend", s.bulk(func(ctx context.Context, actor, id string, emails []string) (console.Result, error) {
		return o.Console.Suspend(ctx, actor, id, emails)
	}))
	route("POST /v1/accounts/{id}/bulk/unsuspend", s.bulk(func(ctx context.Context, actor, id string, emails []string) (console.Result, error) {
		return o.Console.Unsuspend(ctx, actor, id, emails)
	}))
	route("GET /v1/accounts/{id}/audit", s.audit)
	return mux
}

type server struct{ o Options }

func (s *server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.o.AdminToken != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.o.AdminToken)) != 1 {
				httpapi.WriteError(w, http.StatusUnauthorized, "admin endpoint: send Authorization: Bearer <token from api.admin_token_file>")
				return
			}
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		h(w, r)
	}
}

func actor(r *http.Request) string { return r.Header.Get(ActorHeader) }

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

// decode reads a JSON body strictly; it writes the 4xx and returns false
// on a bad one.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpapi.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes: split the request", tooBig.Limit))
			return false
		}
		httpapi.WriteError(w, http.StatusBadRequest, "malformed JSON body: "+err.Error())
		return false
	}
	if dec.More() {
		httpapi.WriteError(w, http.StatusBadRequest, "malformed JSON body: one JSON object expected")
		return false
	}
	return true
}

func (s *server) invite(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Emails     Emails `json:"emails"`
		Permission string `json:"permission"`
	}
	if !decode(w, r, &body) {
		return
	}
	res, err := s.o.Console.Invite(r.Context(), actor(r), r.PathValue("id"), body.Emails, body.Permission)
	s.writeResult(w, res, err)
}

func (s *server) accept(w http.ResponseWriter, r *http.Request) {
	res, err := s.o.Console.Accept(r.Context(), actor(r), r.PathValue("id"), r.PathValue("email"))
	s.writeResult(w, res, err)
}

func (s *server) register(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Email string `json:"email"`
	}
	if !decode(w, r, &body) {
		return
	}
	res, err := s.o.Console.Register(r.Context(), actor(r), r.PathValue("id"), body.Email)
	s.writeResult(w, res, err)
}

func (s *server) setPermission(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Permission string `json:"permission"`
	}
	if !decode(w, r, &body) {
		return
	}
	res, err := s.o.Console.SetPermission(r.Context(), actor(r), r.PathValue("id"), []string{r.PathValue("email")}, body.Permission)
	s.writeResult(w, res, err)
}

func (s *server) remove(w http.ResponseWriter, r *http.Request) {
	res, err := s.o.Console.Remove(r.Context(), actor(r), r.PathValue("id"), []string{r.PathValue("email")})
	s.writeResult(w, res, err)
}

func (s *server) suspend(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f := s.o.Console.Unsuspend
		if on {
			f = s.o.Console.Suspend
		}
		res, err := f(r.Context(), actor(r), r.PathValue("id"), []string{r.PathValue("email")})
		s.writeResult(w, res, err)
	}
}

func (s *server) bulkPermission(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Emails     Emails `json:"emails"`
		Permission string `json:"permission"`
	}
	if !decode(w, r, &body) {
		return
	}
	res, err := s.o.Console.SetPermission(r.Context(), actor(r), r.PathValue("id"), body.Emails, body.Permission)
	s.writeResult(w, res, err)
}

func (s *server) bulk(f func(ctx context.Context, actor, id string, emails []string) (console.Result, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Emails Emails `json:"emails"`
		}
		if !decode(w, r, &body) {
			return
		}
		res, err := f(r.Context(), actor(r), r.PathValue("id"), body.Emails)
		s.writeResult(w, res, err)
	}
}

func (s *server) members(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	o := console.ListOptions{State: q.Get("state"), After: q.Get("after")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, "limit must be a number from 1 to 1000")
			return
		}
		o.Limit = n
	}
	page, err := s.o.Console.Members(r.Context(), r.PathValue("id"), o)
	if err != nil {
		s.writeFailure(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, page)
}

func (s *server) audit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, before := 100, int64(0)
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, "limit must be a number from 1 to 1000")
			return
		}
		limit = n
	}
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, "before must be an audit entry id")
			return
		}
		before = n
	}
	entries, err := s.o.Console.Audit(r.Context(), r.PathValue("id"), before, limit)
	if err != nil {
		s.writeFailure(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"account": r.PathValue("id"), "entries": entries})
}

// writeResult answers an action: 200 when something was applied or
// nothing needed to change; otherwise (every item rejected) the status of
// the first rejection, with its message as "error" and every item's
// outcome.
func (s *server) writeResult(w http.ResponseWriter, res console.Result, err error) {
	if err != nil {
		s.writeFailure(w, err)
		return
	}
	if res.Applied == 0 && res.Unchanged == 0 {
		if e := res.FirstRejection(); e != nil {
			httpapi.WriteJSON(w, statusOf(e.Code), struct {
				Error string `json:"error"`
				Code  string `json:"code"`
				console.Result
			}{e.Message, string(e.Code), res})
			return
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, res)
}

func (s *server) writeFailure(w http.ResponseWriter, err error) {
	if code := console.CodeOf(err); code != "" {
		httpapi.WriteJSON(w, statusOf(code), map[string]string{"error": err.Error(), "code": string(code)})
		return
	}
	s.o.Log.Error("console action failed", zap.Error(err))
	httpapi.WriteError(w, http.StatusServiceUnavailable, "the console store (PostgreSQL) or the access cache failed; see the daemon log. Retrying is safe: an action already applied is answered with a conflict or as unchanged")
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

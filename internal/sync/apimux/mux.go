// Package apimux is the one HTTP path of dirsync's API: every route of
// every API (httpapi's own, consoleapi's) is registered on one Mux, which
// refuses requests a browser could be tricked into sending (a foreign Host
// or Origin, a non-JSON body), authenticates the caller once into a
// Principal, checks the route's Scope, bounds the body, and writes the
// handler's answer or *Error as JSON, logging failures once.
//
// Handlers return (result, *Error), after Prometheus' web/api/v1: they
// never write status codes, JSON or log lines themselves.
package apimux

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"go.uber.org/zap"
)

// DefaultMaxBody bounds a request body when a route sets no MaxBody.
const DefaultMaxBody = 1 << 20

// Handler answers one request: a result written as JSON with status 200,
// or an *Error.
type Handler func(r *http.Request) (any, *Error)

// Route is one method and path of the API.
type Route struct {
	// Method is GET, POST, PUT, PATCH or DELETE.
	Method string
	// Path is a net/http pattern path, e.g. /v1/accounts/{id}/release; the
	// same text is its path in docs/openapi.yaml.
	Path string
	// Scope is who may call it.
	Scope Scope
	// Handle answers the request. Raw, when set instead, serves it itself
	// (a third-party handler such as Prometheus' /metrics).
	Handle Handler
	Raw    http.Handler
	// MaxBody bounds the request body (0: DefaultMaxBody).
	MaxBody int64
	// ForeignBody marks a body a third party sends in its own format (an
	// Okta event hook delivery): its Content-Type is not checked. Every
	// other body must be application/json.
	ForeignBody bool
	// Refused, when set, is called when the route's scope refuses a caller
	// (to count it).
	Refused func()
	// WriteError, when set, writes the route's refusals and errors in the
	// route's own format (SCIM's error schema) instead of {"error": …}.
	WriteError func(w http.ResponseWriter, e *Error)
	// Browser marks a page of the web console: its caller's credential is
	// the session cookie (SessionCookie; never the Authorization header),
	// its bodies are HTML forms, and every request but GET to a route that
	// is not Public must carry the session's CSRF token in the form field
	// CSRFField (a page only has it if this API rendered it for that
	// session). The JSON API never reads the cookie.
	Browser bool
}

// Pattern is the route's net/http pattern.
func (rt Route) Pattern() string { return rt.Method + " " + rt.Path }

// Registered describes a route of a Mux.
type Registered struct {
	Method, Path string
	Scope        Scope
}

// Options configures a Mux.
type Options struct {
	// Credentials resolve callers into principals.
	Credentials Credentials
	// Hosts are the Host header values the API answers.
	Hosts Hosts
	// Log receives failed requests whose *Error has a Cause.
	Log *zap.Logger
}

// Mux serves every route of the API.
type Mux struct {
	o      Options
	mux    *http.ServeMux
	routes []Registered
}

// New registers every route of every group on one Mux. Two routes with the
// same or overlapping patterns are a programming error: New panics, as
// net/http does.
func New(o Options, groups ...[]Route) *Mux {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	m := &Mux{o: o, mux: http.NewServeMux()}
	for _, g := range groups {
		for _, rt := range g {
			if (rt.Handle == nil) == (rt.Raw == nil) {
				panic(fmt.Sprintf("apimux: route %s needs exactly one of Handle and Raw", rt.Pattern()))
			}
			m.mux.Handle(rt.Pattern(), m.wrap(rt))
			m.routes = append(m.routes, Registered{Method: rt.Method, Path: rt.Path, Scope: rt.Scope})
		}
	}
	return m
}

// Routes lists the registered routes, sorted by path then method.
func (m *Mux) Routes() []Registered {
	out := slices.Clone(m.routes)
	slices.SortFunc(out, func(a, b Registered) int {
		if c := strings.Compare(a.Path, b.Path); c != 0 {
			return c
		}
		return strings.Compare(a.Method, b.Method)
	})
	return out
}

// ServeHTTP refuses a foreign Host or a cross-site request before routing.
func (m *Mux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !m.o.Hosts.admits(r.Host) {
		WriteJSON(w, http.StatusForbidden, errorBody(fmt.Sprintf(
			"Host %q is not one this API answers (a DNS-rebinding guard): call it by IP address or localhost, or add the name to api.allowed_hosts", r.Host)))
		return
	}
	if msg, ok := sameOrigin(r); !ok {
		WriteJSON(w, http.StatusForbidden, errorBody(msg))
		return
	}
	m.mux.ServeHTTP(w, r)
}

// wrap is the one middleware every route goes through.
func (m *Mux) wrap(rt Route) http.Handler {
	limit := rt.MaxBody
	if limit == 0 {
		limit = DefaultMaxBody
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := m.o.Credentials.resolve(r, rt.Scope, rt.Browser)
		if err != nil {
			m.write(w, r, rt, p, nil, &Error{Status: http.StatusServiceUnavailable,
				Message: "the credential cannot be checked right now; retry", Cause: err})
			return
		}
		if status := m.o.Credentials.refused(p, rt.Scope, r); status != 0 {
			if rt.Refused != nil {
				rt.Refused()
			}
			if status == http.StatusUnauthorized && rt.Scope == SCIM {
				w.Header().Set("WWW-Authenticate", `Bearer realm="dirsync SCIM"`) // RFC 7644 §2
			}
			m.write(w, r, rt, p, nil, &Error{Status: status, Message: m.o.Credentials.refusal(rt.Scope)})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		switch {
		case rt.Browser:
			if e := checkForm(r, rt.Scope); e != nil {
				m.write(w, r, rt, p, nil, e)
				return
			}
		case !rt.ForeignBody && !jsonBody(r):
			m.write(w, r, rt, p, nil, &Error{Status: http.StatusUnsupportedMediaType,
				Message: "send the request body as JSON with Content-Type: application/json"})
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
		if rt.Raw != nil {
			rt.Raw.ServeHTTP(w, r)
			return
		}
		v, apiErr := rt.Handle(r)
		m.write(w, r, rt, p, v, apiErr)
	})
}

// write writes a handler's answer, and logs an *Error's Cause.
func (m *Mux) write(w http.ResponseWriter, r *http.Request, rt Route, p Principal, v any, e *Error) {
	if e != nil {
		if e.Cause != nil {
			log := m.o.Log.Warn
			if e.Status >= 500 {
				log = m.o.Log.Error
			}
			log("api request failed", zap.String("route", rt.Pattern()), zap.String("path", r.URL.Path),
				zap.Int("status", e.Status), zap.String("principal", p.Credential), zap.Error(e.Cause))
		}
		if rt.WriteError != nil {
			rt.WriteError(w, e)
			return
		}
		body := e.Body
		if body == nil {
			body = errorBody(e.Message)
		}
		WriteJSON(w, e.Status, body)
		return
	}
	if a, ok := v.(StatusAnswer); ok {
		WriteJSON(w, a.Code, a.Body)
		return
	}
	if raw, ok := v.(RawJSON); ok {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(raw) //nolint:errcheck // the client went away
		return
	}
	WriteJSON(w, http.StatusOK, v)
}

// Error is a request that did not succeed.
type Error struct {
	// Status is the HTTP status (4xx or 5xx).
	Status int
	// Message is the answer {"error": Message}, unless Body is set.
	Message string
	// Body, when set, is the whole answer (one that says more than a
	// message, e.g. the reports of a failed sync).
	Body any
	// Cause, when set, is logged with the route; it is never sent.
	Cause error
}

func (e *Error) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message) }

// Errorf returns an *Error answering {"error": message}.
func Errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Message: fmt.Sprintf(format, args...)}
}

// StatusAnswer is a successful result answered with another status than
// 200 (201 Created).
type StatusAnswer struct {
	Code int
	Body any
}

// Answer returns v to be answered with status code.
func Answer(code int, v any) StatusAnswer { return StatusAnswer{Code: code, Body: v} }

// RawJSON is a result already encoded (the sign-in hot path): written as
// it is, with status 200.
type RawJSON []byte

func errorBody(msg string) map[string]string { return map[string]string{"error": msg} }

// WriteJSON writes v, indented, as the JSON answer of every dirsync
// endpoint.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

type principalKey struct{}

// PrincipalOf returns the caller of a request the Mux admitted.
func PrincipalOf(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}

package httpapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/entitlement/store"
	"github.com/dirsync/dirsync/internal/sync/apimux"
)

// request builds a request to the handler; host, when set, is its Host.
type request struct {
	method, path, body, host string
	headers                  map[string]string
}

func (q request) send(h http.Handler) *httptest.ResponseRecorder {
	req := httptest.NewRequest(q.method, q.path, strings.NewReader(q.body))
	if q.body == "" {
		req = httptest.NewRequest(q.method, q.path, nil)
	}
	if q.host != "" {
		req.Host = q.host
	}
	for k, v := range q.headers {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestBrowserCannotCallTheAPI: what a web page in a browser on the same
// host can send (a cross-site Origin, a text/plain or form body, a
// DNS-rebound Host, a body-less POST) is refused before any handler runs,
// while the CLI's and services' requests pass.
func TestBrowserCannotCallTheAPI(t *testing.T) {
	h, _, syncer, _ := newTestServer(t)
	admin := "Bearer tok"
	for _, tt := range []struct {
		name string
		req  request
		want int
	}{
		{"cross-site Origin, with the token", request{method: "POST", path: "/v1/sync?account=acme",
			headers: map[string]string{"Authorization": admin, "Origin": "http://evil.example"}}, 403},
		{"opaque Origin", request{method: "POST", path: "/v1/sync?account=acme",
			headers: map[string]string{"Authorization": admin, "Origin": "null"}}, 403},
		{"Origin of another port", request{method: "POST", path: "/v1/sync?account=acme", host: "127.0.0.1:8080",
			headers: map[string]string{"Authorization": admin, "Origin": "http://127.0.0.1:3000"}}, 403},
		{"cross-site fetch of a decision", request{method: "GET", path: "/v1/access/a@acme.example",
			headers: map[string]string{"Sec-Fetch-Site": "cross-site"}}, 403},
		{"text/plain JSON body, with the token", request{method: "POST", path: "/v1/sync?account=acme", body: `{"x":1}`,
			headers: map[string]string{"Authorization": admin, "Content-Type": "text/plain"}}, 415},
		{"form body, with the token", request{method: "POST", path: "/v1/sync?account=acme", body: "a=b",
			headers: map[string]string{"Authorization": admin, "Content-Type": "application/x-www-form-urlencoded"}}, 415},
		{"DNS-rebound Host", request{method: "GET", path: "/v1/access/a@acme.example", host: "attacker.example:8080"}, 403},
		{"DNS-rebound Host, admin route", request{method: "POST", path: "/v1/sync?account=acme", host: "attacker.example",
			headers: map[string]string{"Authorization": admin}}, 403},
		{"body-less POST without the token", request{method: "POST", path: "/v1/sync?account=acme"}, 401},
		{"release without the token", request{method: "POST", path: "/v1/accounts/acme/release"}, 401},
		// What the CLI, curl and services send passes.
		{"same-origin POST", request{method: "POST", path: "/v1/sync?account=acme&dry_run=true",
			headers: map[string]string{"Authorization": admin, "Origin": "http://example.com"}}, 200},
		{"JSON body with charset", request{method: "POST", path: "/v1/sync?account=acme&dry_run=true", body: "{}",
			headers: map[string]string{"Authorization": admin, "Content-Type": "application/json; charset=utf-8"}}, 200},
		{"IP address Host", request{method: "GET", path: "/v1/access/a@acme.example", host: "127.0.0.1:8080"}, 200},
		{"IPv6 Host", request{method: "GET", path: "/v1/access/a@acme.example", host: "[::1]:8080"}, 200},
		{"localhost Host", request{method: "GET", path: "/v1/access/a@acme.example", host: "localhost:8080"}, 200},
		{"allowed name", request{method: "GET", path: "/v1/access/a@acme.example", host: "EXAMPLE.com:8080"}, 200},
	} {
		before := len(syncer.runs)
		rec := tt.req.send(h)
		if rec.Code != tt.want {
			t.Errorf("%s: HTTP %d %s; want %d", tt.name, rec.Code, rec.Body, tt.want)
		}
		if tt.want != 200 && len(syncer.runs) != before {
			t.Errorf("%s: a refused request ran a sync", tt.name)
		}
	}
}

// TestTokenlessLoopbackNeedsATokenToChangeState: without a configured
// admin token, reads stay open on a loopback listener, but every
// state-changing route needs the (per-start) admin token.
func TestTokenlessLoopbackNeedsATokenToChangeState(t *testing.T) {
	mem := store.NewMemory()
	syncer := &fakeSyncer{}
	perStart, err := apimux.GenerateToken("per-start token file /run/x")
	if err != nil {
		t.Fatal(err)
	}
	h := New(Options{Checker: mem, Status: mem, Syncer: syncer, Log: zap.NewNop(), Hosts: testHosts,
		Reload: func(context.Context) error { return nil },
		Auth:   apimux.Credentials{Admin: perStart, OpenSignIn: loopback(t), OpenAdminReads: loopback(t)}})
	for _, route := range h.Routes() {
		if !route.Scope.StateChanging() || route.Scope == apimux.OktaHook {
			continue
		}
		path := strings.NewReplacer("{id}", "acme", "{email}", "a@acme.example").Replace(route.Path)
		if rec := (request{method: route.Method, path: path}).send(h); rec.Code != 401 {
			t.Errorf("%s %s without a token: HTTP %d; want 401", route.Method, path, rec.Code)
		}
	}
	if len(syncer.runs) != 0 {
		t.Fatalf("passes ran without a token: %v", syncer.runs)
	}
	for _, path := range []string{"/v1/status", "/v1/access/a@acme.example", "/v1/access/a@acme.example/explain"} {
		if rec := (request{method: "GET", path: path}).send(h); rec.Code != 200 {
			t.Errorf("GET %s on a tokenless loopback daemon: HTTP %d", path, rec.Code)
		}
	}
}

// TestZeroCredentialsAdmitNoOne: credentials nobody set open nothing but
// health and readiness.
func TestZeroCredentialsAdmitNoOne(t *testing.T) {
	mem := store.NewMemory()
	h := New(Options{Checker: mem, Status: mem, Syncer: &fakeSyncer{}, Log: zap.NewNop()})
	for _, route := range h.Routes() {
		path := strings.NewReplacer("{id}", "acme", "{email}", "a@acme.example").Replace(route.Path)
		for _, auth := range []string{"", "Bearer ", "Bearer  "} {
			rec := (request{method: route.Method, path: path, host: "127.0.0.1", headers: map[string]string{"Authorization": auth}}).send(h)
			if open := route.Scope == apimux.Public; open != (rec.Code != 401) {
				t.Errorf("%s %s with Authorization %q: HTTP %d", route.Method, path, auth, rec.Code)
			}
		}
	}
	if _, err := apimux.NewToken("api.admin_token_file", " \n"); err == nil {
		t.Error("a blank admin token was accepted")
	}
}

// failingStatus is a cache whose every call fails with a backend error.
type failingStatus struct{}

var errBackend = errors.New("dial tcp 10.9.8.7:6379: connect: connection refused")

func (failingStatus) Status(context.Context, string) (accesscache.AccountStatus, bool, error) {
	return accesscache.AccountStatus{}, false, errBackend
}
func (failingStatus) Ping(context.Context) error { return errBackend }

// TestReadyzHidesBackendErrors: /readyz tells an unauthenticated caller
// which check failed, never what the backend said; an admin sees it.
func TestReadyzHidesBackendErrors(t *testing.T) {
	h := New(Options{Checker: store.NewMemory(), Status: failingStatus{}, Syncer: &fakeSyncer{}, Log: zap.NewNop(),
		Hosts: testHosts, Auth: apimux.Credentials{Admin: mustToken(t, "tok")}})
	rec := (request{method: "GET", path: "/readyz"}).send(h)
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "access cache unreachable") {
		t.Errorf("readyz: HTTP %d %s", rec.Code, rec.Body)
	}
	for _, leak := range []string{"10.9.8.7", "refused", "dial"} {
		if strings.Contains(rec.Body.String(), leak) {
			t.Errorf("readyz tells an unauthenticated caller %q: %s", leak, rec.Body)
		}
	}
	rec = (request{method: "GET", path: "/readyz", headers: map[string]string{"Authorization": "Bearer tok"}}).send(h)
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), errBackend.Error()) {
		t.Errorf("readyz for an admin: HTTP %d %s", rec.Code, rec.Body)
	}
}

package httpapi

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/store"

	"github.com/dirsync/dirsync/internal/entitlement/mapper"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/sync/apimux"
	"github.com/dirsync/dirsync/internal/sync/engine"
)

type fakeSyncer struct{ runs []engine.Options }

func (f *fakeSyncer) Run(_ context.Context, account string, opts engine.Options) (engine.Report, error) {
	f.runs = append(f.runs, opts)
	if account != "acme" {
		return engine.Report{}, engine.ErrUnknownAccount
	}
	return engine.Report{Account: account, Result: engine.ResultPublished}, nil
}
func (f *fakeSyncer) Accounts() []string                               { return []string{"acme"} }
func (f *fakeSyncer) LastReports(string) map[engine.Mode]engine.Report { return nil }

// testHosts answers httptest.NewRequest's Host, example.com.
var testHosts = apimux.HostsFor(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, []string{"example.com"})

func mustToken(t testing.TB, secret string) apimux.Token {
	t.Helper()
	tok, err := apimux.NewToken("test", secret)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// loopback proves a loopback listener (the test requests never reach a
// socket).
func loopback(t testing.TB) apimux.Loopback {
	t.Helper()
	l, err := apimux.LoopbackListener(&net.TCPAddr{IP: net.IPv6loopback, Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func newTestServer(t *testing.T) (http.Handler, *store.Memory, *fakeSyncer, *[]string) {
	mem := store.NewMemory()
	d := entitlement.Decision{Email: "a@acme.example", Account: "acme", Allowed: true, Permission: entitlement.PermissionPro,
		Reason: entitlement.ReasonGranted, Via: []string{}, Detail: &entitlement.Detail{Rule: "r"}}
	if err := mem.Apply(context.Background(), "acme", []mapper.Change{{Email: d.Email, New: &d, Next: mapper.PublishedOf(&d)}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	syncer := &fakeSyncer{}
	var triggered []string
	h := New(Options{
		Checker: mem, Status: mem, Syncer: syncer, Log: zap.NewNop(),
		Auth: apimux.Credentials{Admin: mustToken(t, "tok"), OpenSignIn: loopback(t),
			OktaHooks: []apimux.OktaHookSecret{{Account: "acme", Header: "Authorization", Secret: mustToken(t, "hooksecret")}}},
		Hosts:   testHosts,
		Trigger: func(a string) bool { triggered = append(triggered, a); return true },
	})
	return h, mem, syncer, &triggered
}

func do(h http.Handler, method, path, body string, headers ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestAPI(t *testing.T) {
	h, _, syncer, triggered := newTestServer(t)
	if rec := do(h, "GET", "/v1/access/A@acme.example", ""); rec.Code != 200 || strings.Contains(rec.Body.String(), "detail") || !strings.Contains(rec.Body.String(), `"allowed":true`) {
		t.Errorf("access: %d %s", rec.Code, rec.Body)
	}
	if rec := do(h, "GET", "/v1/access/a@acme.example/explain", ""); rec.Code != 401 {
		t.Errorf("explain without token: %d", rec.Code)
	}
	if rec := do(h, "GET", "/v1/access/a@acme.example/explain", "", "Authorization", "Bearer tok"); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"rule": "r"`) {
		t.Errorf("explain: %d %s", rec.Code, rec.Body)
	}
	if rec := do(h, "POST", "/v1/sync?account=acme&dry_run=maybe", "", "Authorization", "Bearer tok"); rec.Code != 400 {
		t.Errorf("bad dry_run: %d", rec.Code)
	}
	if rec := do(h, "POST", "/v1/sync?account=nope", "", "Authorization", "Bearer tok"); rec.Code != 404 {
		t.Errorf("unknown account: %d", rec.Code)
	}
	if rec := do(h, "POST", "/v1/sync?account=acme&mode=incremental&dry_run=true", "", "Authorization", "Bearer tok"); rec.Code != 200 {
		t.Errorf("sync: %d %s", rec.Code, rec.Body)
	}
	if last := syncer.runs[len(syncer.runs)-1]; last.Mode != engine.ModeIncremental || !last.DryRun {
		t.Errorf("sync options = %+v", last)
	}
	big := strings.Repeat("x", apimux.DefaultMaxBody+10)
	if rec := do(h, "POST", "/v1/hooks/okta", `{"a":"`+big+`"}`, "Authorization", "hooksecret"); rec.Code != 400 {
		t.Errorf("oversized hook body: %d", rec.Code)
	}
	if rec := do(h, "POST", "/v1/hooks/okta", `{"data":{"events":[]}}`, "Authorization", "hooksecret"); rec.Code != 200 || len(*triggered) != 1 {
		t.Errorf("hook: %d %s triggered %v", rec.Code, rec.Body, *triggered)
	}
	if rec := do(h, "GET", "/readyz", ""); rec.Code != 503 {
		t.Errorf("readyz before any sync: %d", rec.Code)
	}
}

// TestAccessLookAlikes: GET /v1/access/{email} with an address that
// Unicode folding or trimming would map onto a@acme.example answers
// unknown_user, never a's decision.
func TestAccessLookAlikes(t *testing.T) {
	h, _, _, _ := newTestServer(t)
	for _, probe := range []string{"%C4%B0@acme.example", "%C2%A0a@acme.example", "a@acme.example%E2%80%83", "A@acme.example%C2%85", "a@acme.example%E2%80%8B"} {
		rec := do(h, "GET", "/v1/access/"+probe, "")
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"reason":"unknown_user"`) || strings.Contains(rec.Body.String(), `"allowed":true`) {
			t.Errorf("GET /v1/access/%s: %d %s; want unknown_user", probe, rec.Code, rec.Body)
		}
	}
}

func TestReadToken(t *testing.T) {
	mem := store.NewMemory()
	h := New(Options{Checker: mem, Status: mem, Syncer: &fakeSyncer{}, Log: zap.NewNop(), Hosts: testHosts,
		Auth: apimux.Credentials{Admin: mustToken(t, "admin"), Reader: mustToken(t, "reader")}})
	for _, tt := range []struct {
		header string
		want   int
	}{{"", 401}, {"Bearer wrong", 401}, {"Bearer reader", 200}, {"Bearer admin", 200}} {
		if rec := do(h, "GET", "/v1/access/a@acme.example", "", "Authorization", tt.header); rec.Code != tt.want {
			t.Errorf("Authorization %q: HTTP %d; want %d", tt.header, rec.Code, tt.want)
		}
	}
	if rec := do(h, "GET", "/v1/status", "", "Authorization", "Bearer reader"); rec.Code != 401 {
		t.Errorf("the read token opened an admin endpoint: HTTP %d", rec.Code)
	}
}

// FuzzOktaHookBody: no body crashes the hook or triggers a pass without
// the secret.
func FuzzOktaHookBody(f *testing.F) {
	for _, s := range []string{`{"eventType":"com.okta.event_hook","data":{"events":[{"eventType":"user.lifecycle.suspend"}]}}`, `{`, `[]`, `{"data":{"events":null}}`, ""} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, body string, withSecret bool) {
		h, _, _, triggered := newTestServer(t)
		secret := "wrong"
		if withSecret {
			secret = "hooksecret"
		}
		rec := do(h, "POST", "/v1/hooks/okta", body, "Authorization", secret)
		if !withSecret && (rec.Code != 401 || len(*triggered) != 0) {
			t.Fatalf("unauthenticated hook: %d, triggered %v", rec.Code, *triggered)
		}
		if rec.Code == 200 && len(*triggered) != 1 {
			t.Fatalf("accepted hook triggered %v", *triggered)
		}
	})
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

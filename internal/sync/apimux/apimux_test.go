package apimux

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTokensAreNeverEmpty(t *testing.T) {
	for _, s := range []string{"", " ", "\n\t \r\n"} {
		if _, err := NewToken("api.admin_token_file", s); err == nil || !strings.Contains(err.Error(), "api.admin_token_file") {
			t.Errorf("NewToken(%q) = %v; want an error naming the field", s, err)
		}
	}
	var zero Token
	for _, got := range []string{"", " "} {
		if zero.matches(got) {
			t.Errorf("the zero Token matches %q", got)
		}
	}
	a, err := GenerateToken("per-start")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := GenerateToken("per-start")
	if a.IsZero() || len(a.secret) < 32 || string(a.secret) == string(b.secret) {
		t.Errorf("generated tokens %q, %q", a.secret, b.secret)
	}
}

func TestOnlyALoopbackListenerIsProof(t *testing.T) {
	for _, addr := range []net.Addr{
		&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080},
		&net.TCPAddr{IP: net.IPv4(127, 9, 9, 9), Port: 1},
		&net.TCPAddr{IP: net.IPv6loopback, Port: 8080},
	} {
		if l, err := LoopbackListener(addr); err != nil || !l.proven() {
			t.Errorf("%v: %v", addr, err)
		}
	}
	for _, addr := range []net.Addr{
		&net.TCPAddr{IP: net.IPv4zero, Port: 8080}, // 0.0.0.0
		&net.TCPAddr{IP: net.IPv6unspecified, Port: 8080},
		&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 8080},
		&net.UnixAddr{Name: "/run/dirsync.sock", Net: "unix"},
		nil,
	} {
		if l, err := LoopbackListener(addr); err == nil || l.proven() {
			t.Errorf("%v was accepted as loopback", addr)
		}
	}
	if (Loopback{}).proven() {
		t.Error("the zero Loopback proves something")
	}
}

func TestHostsFor(t *testing.T) {
	loop := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	all := &net.TCPAddr{IP: net.IPv4zero, Port: 8080}
	for _, tt := range []struct {
		addr    net.Addr
		allowed []string
		host    string
		want    bool
	}{
		{loop, nil, "127.0.0.1:8080", true},
		{loop, nil, "[::1]:8080", true},
		{loop, nil, "localhost:8080", true},
		{loop, nil, "LOCALHOST.", true},
		{loop, nil, "rebind.evil.example:8080", false},
		{loop, nil, "localhost.evil.example", false},
		{loop, []string{"dirsync.internal"}, "Dirsync.Internal:8080", true},
		{loop, []string{"dirsync.internal"}, "other.internal", false},
		{all, nil, "dirsync.default.svc:8080", true},
		{all, []string{"dirsync.internal"}, "dirsync.default.svc:8080", false},
		{all, []string{"dirsync.internal"}, "10.1.2.3:8080", true},
	} {
		if got := HostsFor(tt.addr, tt.allowed).admits(tt.host); got != tt.want {
			t.Errorf("listener %v, allowed %v: Host %q admitted %t; want %t", tt.addr, tt.allowed, tt.host, got, tt.want)
		}
	}
}

func TestPerStartTokenFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	path := PerStartTokenPath(func(k string) string { return map[string]string{"DIRSYNC_RUNTIME_DIR": dir}[k] }, "8080")
	if path != filepath.Join(dir, "admin-token-8080") {
		t.Fatalf("path %s", path)
	}
	tok, _ := GenerateToken("per-start")
	remove, err := WritePerStartToken(path, tok)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v mode %v; want %04o", p, err, fi.Mode().Perm(), want)
		}
	}
	if got, err := ReadPerStartToken(path); err != nil || got != string(tok.secret) {
		t.Errorf("read back %q, %v", got, err)
	}
	remove()
	if got, err := ReadPerStartToken(path); err != nil || got != "" {
		t.Errorf("after remove: %q, %v", got, err)
	}

	// A directory others can enter, or a symbolic link to one, is refused.
	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := WritePerStartToken(filepath.Join(open, "admin-token-1"), tok); err == nil {
		t.Error("wrote the token into a world-writable directory")
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if _, err := WritePerStartToken(filepath.Join(link, "admin-token-1"), tok); err == nil {
		t.Error("wrote the token through a symbolic link")
	}
	if _, err := WritePerStartToken(filepath.Join(dir, "x"), Token{}); err == nil {
		t.Error("wrote the zero token")
	}
}

// TestRoutesGoThroughOneMiddleware: a route's scope decides who may call
// it, its *Error becomes the JSON answer, and the principal reaches the
// handler.
func TestRoutesGoThroughOneMiddleware(t *testing.T) {
	admin, _ := NewToken("api.admin_token_file", "adm")
	reader, _ := NewToken("api.read_token_file", "rd")
	var seen Principal
	h := func(r *http.Request) (any, *Error) {
		seen = PrincipalOf(r.Context())
		if r.URL.Query().Get("fail") != "" {
			return nil, Errorf(http.StatusConflict, "no %s", "way")
		}
		return map[string]string{"ok": "yes"}, nil
	}
	m := New(Options{Credentials: Credentials{Admin: admin, Reader: reader}},
		[]Route{
			{Method: "GET", Path: "/read", Scope: SignInRead, Handle: h},
			{Method: "POST", Path: "/write", Scope: AdminWrite, Handle: h},
		})
	send := func(method, path, auth string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, nil)
		req.Host = "127.0.0.1"
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		rec := httptest.NewRecorder()
		m.ServeHTTP(rec, req)
		return rec
	}
	for _, tt := range []struct {
		method, path, auth string
		want               int
	}{
		{"GET", "/read", "", 401}, {"GET", "/read", "rd", 200}, {"GET", "/read", "adm", 200}, {"GET", "/read", "x", 401},
		{"POST", "/write", "rd", 401}, {"POST", "/write", "adm", 200}, {"POST", "/write", "", 401},
	} {
		if rec := send(tt.method, tt.path, tt.auth); rec.Code != tt.want {
			t.Errorf("%s %s with %q: HTTP %d %s; want %d", tt.method, tt.path, tt.auth, rec.Code, rec.Body, tt.want)
		}
	}
	send("GET", "/read", "rd")
	if seen.Kind != SignInReader || seen.Credential != "api.read_token_file" {
		t.Errorf("principal %+v", seen)
	}
	if rec := send("POST", "/write?fail=1", "adm"); rec.Code != 409 || !strings.Contains(rec.Body.String(), `"error": "no way"`) ||
		rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("error answer: %d %s", rec.Code, rec.Body)
	}
	if got := m.Routes(); len(got) != 2 || got[0].Path != "/read" || got[1].Scope != AdminWrite {
		t.Errorf("routes %+v", got)
	}
}

// fakeSCIMTokens knows tok-a (account a) and tok-b (account b); "down"
// cannot be checked.
type fakeSCIMTokens struct{ calls int }

func (f *fakeSCIMTokens) AuthenticateSCIM(_ context.Context, token string) (string, string, error) {
	f.calls++
	switch token {
	case "tok-a":
		return "a", "scim token a1", nil
	case "tok-b":
		return "b", "scim token b1", nil
	case "down":
		return "", "", errors.New("postgres: connection refused")
	}
	return "", "", fmt.Errorf("look up: %w", ErrUnknownCredential)
}

// TestSCIMScope: a SCIM route admits its own account's SCIM token only;
// no token or an unknown one is 401, every other credential 403, a token
// store that cannot answer 503; SCIM tokens open no other route, and the
// route's errors are written in its own format.
func TestSCIMScope(t *testing.T) {
	admin, _ := NewToken("api.admin_token_file", "adm")
	reader, _ := NewToken("api.read_token_file", "rd")
	tokens := &fakeSCIMTokens{}
	var seen Principal
	h := func(r *http.Request) (any, *Error) {
		seen = PrincipalOf(r.Context())
		return map[string]string{"ok": "yes"}, nil
	}
	m := New(Options{Credentials: Credentials{Admin: admin, Reader: reader, SCIM: tokens}},
		[]Route{
			{Method: "GET", Path: "/scim/v2/{account}/Users", Scope: SCIM, Handle: h,
				WriteError: func(w http.ResponseWriter, e *Error) { w.WriteHeader(e.Status); fmt.Fprintf(w, "scim:%d", e.Status) }},
			{Method: "POST", Path: "/write", Scope: AdminWrite, Handle: h},
			{Method: "GET", Path: "/read", Scope: SignInRead, Handle: h},
		})
	send := func(path, auth string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		if strings.HasPrefix(path, "/write") {
			req.Method = "POST"
		}
		req.Host = "127.0.0.1"
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		rec := httptest.NewRecorder()
		m.ServeHTTP(rec, req)
		return rec
	}
	for _, tt := range []struct {
		path, auth string
		want       int
	}{
		{"/scim/v2/a/Users", "tok-a", 200},
		{"/scim/v2/a/Users", "", 401},
		{"/scim/v2/a/Users", "nope", 401},
		{"/scim/v2/a/Users", "tok-b", 403},
		{"/scim/v2/b/Users", "tok-a", 403},
		{"/scim/v2/a/Users", "adm", 403},
		{"/scim/v2/a/Users", "rd", 403},
		{"/scim/v2/a/Users", "down", 503},
		{"/write", "tok-a", 401},
		{"/read", "tok-a", 401},
	} {
		rec := send(tt.path, tt.auth)
		if rec.Code != tt.want {
			t.Errorf("%s with %q: HTTP %d %s; want %d", tt.path, tt.auth, rec.Code, rec.Body, tt.want)
		}
		if strings.HasPrefix(tt.path, "/scim/") && tt.want != 200 && rec.Body.String() != fmt.Sprintf("scim:%d", tt.want) {
			t.Errorf("%s with %q: answer %q is not the route's own error format", tt.path, tt.auth, rec.Body)
		}
		if tt.want == 401 && strings.HasPrefix(tt.path, "/scim/") && rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s with %q: 401 without WWW-Authenticate", tt.path, tt.auth)
		}
	}
	send("/scim/v2/a/Users", "tok-a")
	if seen.Kind != SCIMClient || seen.Credential != "scim token a1" || len(seen.Accounts) != 1 || seen.Accounts[0] != "a" {
		t.Errorf("principal %+v", seen)
	}
	before := tokens.calls
	send("/read", "whatever")
	send("/write", "whatever")
	if tokens.calls != before {
		t.Error("the SCIM token store was asked on a route that takes no SCIM token")
	}
}

// fakeTenants knows dst_a_1 (account a) and dst_b_1 (account b).
type fakeTenants struct{ calls int }

func (f *fakeTenants) AuthenticateTenant(_ context.Context, token string) (string, string, error) {
	f.calls++
	switch token {
	case "dst_a_1":
		return "a", "tok_a1", nil
	case "dst_b_1":
		return "b", "tok_b1", nil
	case "dst_down":
		return "", "", errors.New("postgres: connection refused")
	}
	return "", "", fmt.Errorf("look up: %w", ErrUnknownCredential)
}

// TestTenantScope: a tenant token opens its own account's routes and no
// other: another account's routes and global routes are 403, an unknown
// tenant token 401; the principal's credential is the token id.
func TestTenantScope(t *testing.T) {
	admin, _ := NewToken("api.admin_token_file", "adm")
	tenants := &fakeTenants{}
	var seen Principal
	h := func(r *http.Request) (any, *Error) {
		seen = PrincipalOf(r.Context())
		return map[string]string{"ok": "yes"}, nil
	}
	m := New(Options{Credentials: Credentials{Admin: admin, Tenants: tenants}},
		[]Route{
			{Method: "GET", Path: "/v1/accounts/{id}/groups", Scope: AccountRead, Handle: h},
			{Method: "PUT", Path: "/v1/accounts/{id}/bindings", Scope: AccountWrite, Handle: h},
			{Method: "GET", Path: "/v1/status", Scope: AdminRead, Handle: h},
			{Method: "POST", Path: "/v1/sync", Scope: AdminWrite, Handle: h},
		})
	send := func(method, path, auth string) int {
		req := httptest.NewRequest(method, path, strings.NewReader("{}"))
		req.Host = "127.0.0.1"
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		rec := httptest.NewRecorder()
		m.ServeHTTP(rec, req)
		return rec.Code
	}
	for _, tt := range []struct {
		method, path, auth string
		want               int
	}{
		{"GET", "/v1/accounts/a/groups", "dst_a_1", 200},
		{"PUT", "/v1/accounts/a/bindings", "dst_a_1", 200},
		{"GET", "/v1/accounts/b/groups", "dst_a_1", 403},
		{"PUT", "/v1/accounts/b/bindings", "dst_a_1", 403},
		{"GET", "/v1/status", "dst_a_1", 403},
		{"POST", "/v1/sync", "dst_a_1", 403},
		{"GET", "/v1/accounts/a/groups", "dst_nope", 401},
		{"GET", "/v1/accounts/a/groups", "dst_down", 503},
		{"GET", "/v1/accounts/b/groups", "adm", 200},
		{"POST", "/v1/sync", "adm", 200},
	} {
		if got := send(tt.method, tt.path, tt.auth); got != tt.want {
			t.Errorf("%s %s with %q: HTTP %d; want %d", tt.method, tt.path, tt.auth, got, tt.want)
		}
	}
	send("GET", "/v1/accounts/a/groups", "dst_a_1")
	if seen.Kind != Tenant || seen.Credential != "tok_a1" {
		t.Errorf("principal %+v", seen)
	}
	before := tenants.calls
	send("GET", "/v1/accounts/a/groups", "adm")
	send("GET", "/v1/accounts/a/groups", "other-token")
	if tenants.calls != before {
		t.Error("the tenant token store was asked for a token without the tenant prefix")
	}
}

package apimux

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestBrowserRoutes: console pages take the session cookie (never a
// bearer header), JSON routes never take the cookie; a console form needs
// its session's CSRF token and a form body; cross-origin requests, and
// the "Origin: null" a no-referrer page would send, are refused.
func TestBrowserRoutes(t *testing.T) {
	admin, err := NewToken("admin", "the-admin-secret")
	if err != nil {
		t.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	m := New(Options{Credentials: Credentials{Admin: admin}}, []Route{
		{Method: "GET", Path: "/ui/page", Scope: AdminRead, Browser: true, Raw: ok},
		{Method: "POST", Path: "/ui/act", Scope: AdminWrite, Browser: true, Raw: ok},
		{Method: "POST", Path: "/ui/login", Scope: Public, Browser: true, Raw: ok},
		{Method: "GET", Path: "/v1/thing", Scope: AdminRead, Handle: func(*http.Request) (any, *Error) { return "ok", nil }},
	})
	csrf := CSRFToken("the-admin-secret")
	type req struct {
		name, method, path, body, contentType string
		cookie, bearer                        bool
		header                                map[string]string
		want                                  int
	}
	form := url.Values{CSRFField: {csrf}}.Encode()
	for _, tc := range []req{
		{name: "page with the session", method: "GET", path: "/ui/page", cookie: true, want: 200},
		{name: "page with a bearer header only", method: "GET", path: "/ui/page", bearer: true, want: 401},
		{name: "API with the session cookie only", method: "GET", path: "/v1/thing", cookie: true, want: 401},
		{name: "API with a bearer header", method: "GET", path: "/v1/thing", bearer: true, want: 200},
		{name: "form with its CSRF token", method: "POST", path: "/ui/act", body: form, contentType: "application/x-www-form-urlencoded", cookie: true, want: 200},
		{name: "form without a CSRF token", method: "POST", path: "/ui/act", body: "a=b", contentType: "application/x-www-form-urlencoded", cookie: true, want: 403},
		{name: "form with another session's token", method: "POST", path: "/ui/act", body: url.Values{CSRFField: {CSRFToken("other")}}.Encode(), contentType: "application/x-www-form-urlencoded", cookie: true, want: 403},
		{name: "CSRF token without the session", method: "POST", path: "/ui/act", body: form, contentType: "application/x-www-form-urlencoded", want: 401},
		{name: "JSON to a console route", method: "POST", path: "/ui/act", body: `{}`, contentType: "application/json", cookie: true, want: 415},
		{name: "form from another origin", method: "POST", path: "/ui/act", body: form, contentType: "application/x-www-form-urlencoded", cookie: true, header: map[string]string{"Origin": "http://evil.example"}, want: 403},
		{name: "form with Origin null", method: "POST", path: "/ui/act", body: form, contentType: "application/x-www-form-urlencoded", cookie: true, header: map[string]string{"Origin": "null"}, want: 403},
		{name: "form from the same origin", method: "POST", path: "/ui/act", body: form, contentType: "application/x-www-form-urlencoded", cookie: true, header: map[string]string{"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"}, want: 200},
		{name: "login form posted cross-site", method: "POST", path: "/ui/login", body: "token=x", contentType: "application/x-www-form-urlencoded", header: map[string]string{"Sec-Fetch-Site": "cross-site"}, want: 403},
		{name: "login form needs no CSRF token", method: "POST", path: "/ui/login", body: "token=x", contentType: "application/x-www-form-urlencoded", want: 200},
	} {
		r := httptest.NewRequest(tc.method, "http://127.0.0.1"+tc.path, strings.NewReader(tc.body))
		if tc.contentType != "" {
			r.Header.Set("Content-Type", tc.contentType)
		}
		if tc.cookie {
			r.AddCookie(&http.Cookie{Name: SessionCookie, Value: "the-admin-secret"})
		}
		if tc.bearer {
			r.Header.Set("Authorization", "Bearer the-admin-secret")
		}
		for k, v := range tc.header {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		m.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("%s: HTTP %d, want %d: %s", tc.name, w.Code, tc.want, w.Body.String())
		}
	}
	if CSRFToken("") != "" || CSRFToken("a") == CSRFToken("b") {
		t.Error("CSRF tokens: empty for no session, distinct per session")
	}
}

package apimux

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"mime"
	"net/http"
	"strings"
)

// The web console's session: the token the administrator signed in with
// (the admin token or a tenant token), kept by the browser in an HttpOnly,
// SameSite=Strict cookie scoped to the console's paths.
const (
	SessionCookie = "dirsync_session"
	// CSRFField is the form field carrying the session's CSRF token.
	CSRFField = "csrf_token"
	// SessionPath is the cookie's path: the console's pages only.
	SessionPath = "/ui/"
)

// SessionOf returns the session token a console request carries ("" when
// none).
func SessionOf(r *http.Request) string {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return ""
	}
	return c.Value
}

// CSRFToken is the CSRF token of a session: an HMAC of a fixed label keyed
// by the session token itself, so any replica can check it and a page on
// another site, which cannot read the HttpOnly cookie, cannot make it.
func CSRFToken(session string) string {
	if session == "" {
		return ""
	}
	mac := hmac.New(sha256.New, []byte(session))
	mac.Write([]byte("dirsync console csrf v1"))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// checkForm admits a console request's body: GET and HEAD carry none; any
// other request must be an HTML form (application/x-www-form-urlencoded)
// and, unless the route is Public (the login form), carry its session's
// CSRF token.
func checkForm(r *http.Request, s Scope) *Error {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return nil
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if r.ContentLength != 0 && mt != "application/x-www-form-urlencoded" {
		return &Error{Status: http.StatusUnsupportedMediaType, Message: "console pages take HTML forms (application/x-www-form-urlencoded)"}
	}
	if err := r.ParseForm(); err != nil {
		return &Error{Status: http.StatusBadRequest, Message: "unreadable form: " + err.Error()}
	}
	if s == Public {
		return nil
	}
	want := CSRFToken(SessionOf(r))
	got := r.PostForm.Get(CSRFField)
	if want == "" || !hmac.Equal([]byte(strings.TrimSpace(got)), []byte(want)) {
		return &Error{Status: http.StatusForbidden, Message: "the form carries no valid CSRF token: reload the page and try again"}
	}
	return nil
}

// SignIn resolves the token a console login form carries into the
// principal it belongs to: the global administrator or a tenant. Any other
// token (the read token, a hook secret, an unknown one) is Anonymous.
func (c *Credentials) SignIn(ctx context.Context, token string) (Principal, error) {
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, "/ui/", nil)
	if err != nil {
		return Principal{}, err
	}
	r.Header.Set("Authorization", "Bearer "+strings.TrimSpace(token))
	p, err := c.resolve(r, AccountRead, false)
	if err != nil || (p.Kind != GlobalAdmin && p.Kind != Tenant) {
		return Principal{Kind: Anonymous}, err
	}
	return p, nil
}

// Admits reports whether p may call routes of scope s for account (an
// {id} path value; "" for routes without one): what the console asks
// before offering an action.
func (c *Credentials) Admits(p Principal, s Scope, account string) bool {
	if p.Kind == Tenant {
		return (s == AccountRead || s == AccountWrite) && account != "" && len(p.Accounts) == 1 && p.Accounts[0] == account
	}
	return c.admits(p, s)
}

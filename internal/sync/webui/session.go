package webui

import (
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/dirsync/dirsync/internal/sync/apimux"
)

// sessionLifetime bounds a console session (the browser forgets the
// cookie after it; the token itself stays valid until rotated or revoked).
const sessionLifetime = 12 * time.Hour

// home sends a caller to the page it may see: the accounts overview, a
// tenant's own account, or the login page.
func (u *ui) home(w http.ResponseWriter, r *http.Request) {
	p := apimux.PrincipalOf(r.Context())
	switch {
	case tenantOf(p) != "":
		http.Redirect(w, r, "/ui/accounts/"+tenantOf(p), http.StatusSeeOther)
	case u.o.Credentials.Admits(p, apimux.AdminRead, ""):
		http.Redirect(w, r, "/ui/accounts", http.StatusSeeOther)
	default:
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
	}
}

type loginPage struct {
	Error             string
	PerStartTokenPath string
}

func (u *ui) loginPage(w http.ResponseWriter, r *http.Request) {
	u.render(w, r, http.StatusOK, "login", layout{Title: "Sign in", Page: loginPage{PerStartTokenPath: u.o.PerStartTokenPath}})
}

// login checks the token of the login form and, when it is the admin
// token or a tenant token, keeps it as the session (an HttpOnly,
// SameSite=Strict cookie on /ui/, Secure over TLS).
func (u *ui) login(w http.ResponseWriter, r *http.Request) {
	token := strings.TrimSpace(r.PostForm.Get("token"))
	p, err := u.o.Credentials.SignIn(r.Context(), token)
	if err != nil {
		u.o.Log.Warn("console sign-in could not be checked", zap.Error(err))
		u.render(w, r, http.StatusServiceUnavailable, "login", layout{Title: "Sign in", Page: loginPage{Error: "The token cannot be checked right now; try again.", PerStartTokenPath: u.o.PerStartTokenPath}})
		return
	}
	if token == "" || p.Kind == apimux.Anonymous {
		u.o.Log.Info("console sign-in refused", zap.String("remote", r.RemoteAddr))
		u.render(w, r, http.StatusUnauthorized, "login", layout{Title: "Sign in", Page: loginPage{Error: "This token is not the admin token or an account's tenant token.", PerStartTokenPath: u.o.PerStartTokenPath}})
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: apimux.SessionCookie, Value: token, Path: apimux.SessionPath, MaxAge: int(sessionLifetime.Seconds()),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	u.o.Log.Info("console sign-in", zap.String("principal", p.Credential))
	to := "/ui/accounts"
	if t := tenantOf(p); t != "" {
		to = "/ui/accounts/" + t
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// logout forgets the session. It needs the session's CSRF token, so a
// foreign page cannot sign an administrator out.
func (u *ui) logout(w http.ResponseWriter, r *http.Request) {
	if s := apimux.SessionOf(r); s != "" && r.PostForm.Get(apimux.CSRFField) != apimux.CSRFToken(s) {
		u.fail(w, r, http.StatusForbidden, "the form carries no valid CSRF token: reload the page and try again")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: apimux.SessionCookie, Path: apimux.SessionPath, MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

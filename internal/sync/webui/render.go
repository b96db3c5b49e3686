package webui

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/dirsync/dirsync/internal/sync/apimux"
)

// layout is what every page shows around its content.
type layout struct {
	Title string
	// Who is the signed-in principal ("" when none), Tenant its account
	// when it is a tenant.
	Who, Tenant string
	// Open: this daemon lets anyone on its loopback address read (no
	// admin token configured): pages work without signing in.
	Open      bool
	CSRF      string
	Flash     string
	FlashKind string // ok or error
	// Refresh, when set, reloads the page after that many seconds (a
	// pass is running).
	Refresh int
	Page    any
}

var funcs = template.FuncMap{
	// counts renders a count by key (a map from a string kind to int) as
	// "key n · key n", keys sorted.
	"counts": func(m any) string {
		v := reflect.ValueOf(m)
		if v.Kind() != reflect.Map {
			return ""
		}
		parts := make([]string, 0, v.Len())
		for it := v.MapRange(); it.Next(); {
			if n := it.Value().Int(); n != 0 {
				parts = append(parts, fmt.Sprintf("%s %s", it.Key().String(), group(n)))
			}
		}
		slices.Sort(parts)
		return strings.Join(parts, " · ")
	},
	"age": func(now, t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		d := now.Sub(t).Round(time.Second)
		switch {
		case d < time.Minute:
			return fmt.Sprintf("%ds ago", int(d.Seconds()))
		case d < time.Hour:
			return fmt.Sprintf("%dm ago", int(d.Minutes()))
		case d < 48*time.Hour:
			return fmt.Sprintf("%dh ago", int(d.Hours()))
		}
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	},
	"secs": func(s float64) string {
		if s < 1 {
			return fmt.Sprintf("%d ms", int(s*1000))
		}
		return fmt.Sprintf("%.1f s", s)
	},
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"num": func(n any) string {
		switch x := n.(type) {
		case int:
			return group(int64(x))
		case int64:
			return group(x)
		case float64:
			return group(int64(x))
		}
		return group(0)
	},
	"query": func(base string, kv ...any) string {
		u, _ := url.Parse(base)
		q := u.Query()
		for i := 0; i+1 < len(kv); i += 2 {
			k, v := fmt.Sprint(kv[i]), fmt.Sprint(kv[i+1])
			if v == "" {
				q.Del(k)
			} else {
				q.Set(k, v)
			}
		}
		u.RawQuery = q.Encode()
		return u.String()
	},
	"pathEscape": url.PathEscape,
	"join":       strings.Join,
	"add":        func(a, b int) int { return a + b },
}

func parsePages() map[string]*template.Template {
	out := map[string]*template.Template{}
	for _, name := range []string{"login", "accounts", "account", "lookup", "error"} {
		out[name] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html"))
	}
	return out
}

// render writes page name with status code. Pages are never cached.
func (u *ui) render(w http.ResponseWriter, r *http.Request, code int, name string, l layout) {
	p := apimux.PrincipalOf(r.Context())
	l.Who, l.Tenant = principalName(p), tenantOf(p)
	l.Open = p.Kind == apimux.Anonymous && u.o.Credentials.Admits(p, apimux.AdminRead, "")
	l.CSRF = apimux.CSRFToken(apimux.SessionOf(r))
	if f, err := r.Cookie(flashCookie); err == nil {
		l.FlashKind, l.Flash, _ = strings.Cut(f.Value, ":")
		l.Flash, _ = url.QueryUnescape(l.Flash)
		http.SetCookie(w, &http.Cookie{Name: flashCookie, Path: apimux.SessionPath, MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	}
	var buf bytes.Buffer
	if err := u.pages[name].Execute(&buf, l); err != nil {
		u.o.Log.Error("console page failed to render", zap.String("page", name), zap.Error(err))
		http.Error(w, "the page failed to render; see the daemon's log", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	// same-origin, not no-referrer: under no-referrer a browser sends
	// "Origin: null" with the console's own forms, which the API's
	// cross-origin guard must refuse.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	w.WriteHeader(code)
	w.Write(buf.Bytes()) //nolint:errcheck // the browser went away
}

// group writes n with thousands separators.
func group(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// flashCookie carries a one-time message to the page a form redirects to.
const flashCookie = "dirsync_flash"

// redirect answers a form with 303 See Other to path, with a message.
func redirect(w http.ResponseWriter, r *http.Request, path, kind, msg string) {
	if msg != "" {
		http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: kind + ":" + url.QueryEscape(msg), Path: apimux.SessionPath,
			HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: 60})
	}
	http.Redirect(w, r, path, http.StatusSeeOther)
}

// writeError answers a refused or failed console request: a caller
// without a session goes to the login page, any other error is a page.
func (u *ui) writeError(w http.ResponseWriter, e *apimux.Error) {
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("Location", "/ui/login")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusSeeOther)
		return
	}
	msg := e.Message
	if e.Status == http.StatusForbidden && msg == "" {
		msg = "this session may not see this page"
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(e.Status)
	_ = u.pages["error"].Execute(w, layout{Title: http.StatusText(e.Status), Page: errorPage{Status: e.Status, Message: msg}})
}

type errorPage struct {
	Status  int
	Message string
}

func (u *ui) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	u.render(w, r, status, "error", layout{Title: http.StatusText(status), Page: errorPage{Status: status, Message: msg}})
}

func principalName(p apimux.Principal) string {
	switch p.Kind {
	case apimux.GlobalAdmin:
		return "administrator"
	case apimux.Tenant:
		return "administrator of " + tenantOf(p)
	}
	return ""
}

func tenantOf(p apimux.Principal) string {
	if p.Kind == apimux.Tenant && len(p.Accounts) == 1 {
		return p.Accounts[0]
	}
	return ""
}

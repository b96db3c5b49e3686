package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// browser is a headless Chromium (the Debian package) driven over the
// DevTools protocol, with its own profile.
type browser struct {
	t   *testing.T
	ctx context.Context
}

func startBrowser(t *testing.T) *browser {
	t.Helper()
	exe := servertest.Require(t, "chromium", "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox, // root in CI containers
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("chromium did not start: %v", err)
	}
	return &browser{t: t, ctx: ctx}
}

// run runs actions with a deadline, failing the test on error.
func (b *browser) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// load runs actions that load a page (a navigation, a form submission)
// and returns the final response's status and the page's visible text.
func (b *browser) load(what string, steps ...chromedp.Action[chromedp.Void]) (int, string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, steps...)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return int(resp.Status), b.text()
}

func (b *browser) open(url string) (int, string) {
	b.t.Helper()
	return b.load("open "+url, chromedp.Navigate(url))
}

// submit clicks a form's submit button and returns the page it leads to.
func (b *browser) submit(button string) (int, string) {
	b.t.Helper()
	return b.load("submit "+button, chromedp.Click(chromedp.CSS(button)))
}

func (b *browser) text() string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		b.t.Fatalf("page text: %v", err)
	}
	return s
}

// textOf is the visible text of the first element a CSS selector matches
// ("" when none does).
func (b *browser) textOf(css string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q) || {innerText: ""}).innerText`, css)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", css, err)
	}
	return s
}

func (b *browser) location() string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Location())
	if err != nil {
		b.t.Fatal(err)
	}
	return s
}

// screenshot captures the page; with DIRSYNC_UPDATE_SCREENSHOTS=1 it
// replaces docs/img/NAME.png (the README's and docs' pictures).
func (b *browser) screenshot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG")) {
		b.t.Fatalf("screenshot %s is not a PNG", name)
	}
	if os.Getenv("DIRSYNC_UPDATE_SCREENSHOTS") != "1" {
		return
	}
	if err := os.WriteFile(filepath.Join("..", "..", "..", "docs", "img", name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// signIn logs in through the login form with a token.
func (b *browser) signIn(base, token string) string {
	b.t.Helper()
	b.open(base + "/ui/login")
	b.run("type the token", chromedp.SendKeys(chromedp.CSS("#token"), token))
	code, text := b.submit(`form[action="/ui/login"] button`)
	if code != http.StatusOK || !strings.Contains(text, "Signed in as") {
		b.t.Fatalf("sign-in: HTTP %d\n%s", code, text)
	}
	return text
}

// TestConsoleInABrowser: issue 15's web console in headless Chromium
// against the real daemon (Redis, PostgreSQL, an LDIF directory and a
// console account): an administrator signs in, finds the held account,
// reviews its diff; the directory moves before the release, so nothing is
// released and the new diff is shown; releasing that one flips the users
// in the cache. A team user is invited; a form without its CSRF token is
// refused; a tenant token sees its own account only.
func TestConsoleInABrowser(t *testing.T) {
	rs := servertest.StartRedis(t)
	pg := servertest.StartPostgres(t)
	b := startBrowser(t)
	dir := t.TempDir()
	ldifPath := filepath.Join(dir, "directory.ldif")
	ldif := mustRead(t, "../../../deployments/local/directory.ldif")
	writeFile(t, ldifPath, ldif)
	admin := writeSecret(t, dir, "admin-token", adminToken)
	dsn := writeSecret(t, dir, "dsn", pg.CreateDatabase(t))
	key := writeSecret(t, dir, "secret-key", hex.EncodeToString(bytes.Repeat([]byte{9}, 32)))
	cfg, addr := writeConfig(t, dir, fmt.Sprintf(`cache: {backend: redis, redis: {addrs: [%q], key_prefix: e2e-ui}}
schedule: {full: "@every 1h", incremental: "@every 1s"}
console: {postgres_dsn_file: %s, secret_key_file: %s}
accounts:
  - id: acme
    name: Acme Corp
    claimed_domains: [acme.example]
    directory: {type: ldif, ldif: {path: directory.ldif}}
    bindings:
      - {group: "CN=Chime Pro,OU=Groups,DC=acme,DC=example", permission: pro}
      - {group: "CN=Chime Basic,OU=Groups,DC=acme,DC=example", permission: basic}
  - id: crew
    type: team
    directory: {type: console}
`, rs.Addr, dsn, key))
	writeFile(t, cfg, strings.Replace(mustRead(t, cfg), "api: {listen: ", "api: {admin_token_file: "+admin+", listen: ", 1))
	d := startDaemon(t, dir, cfg, addr)
	base := "http://" + addr
	d.waitFor("bob@acme.example", 20*time.Second, func(dec entitlement.Decision) bool { return dec.Permission == entitlement.PermissionBasic })

	// Signed out, every page leads to the login form.
	if _, text := b.open(base + "/ui/accounts"); !strings.Contains(b.location(), "/ui/login") || !strings.Contains(text, "Sign in") {
		t.Fatalf("signed out, /ui/accounts shows %s:\n%s", b.location(), text)
	}
	b.screenshot("console-login")
	if text := b.signIn(base, adminToken); !strings.Contains(text, "acme") || !strings.Contains(text, "crew") {
		t.Fatalf("after sign-in:\n%s", text)
	}

	// The Basic group empties: the sync is held.
	emptied := strings.Replace(ldif, "member: CN=Bob Basic,OU=People,DC=acme,DC=example\nmember: CN=Grace Both,OU=People,DC=acme,DC=example\nmember: CN=Ivan Upn,OU=People,DC=acme,DC=example\nmember: CN=Heidi Contractor,OU=People,DC=acme,DC=example\n", "", 1)
	if emptied == ldif {
		t.Fatal("the test could not edit the LDIF")
	}
	writeFile(t, ldifPath, emptied)
	var text string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, text = b.open(base + "/ui/accounts?state=hold")
		if strings.Contains(text, "1 of 2 accounts") && strings.Contains(text, "HOLD") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no hold on the overview:\n%s\n%s", text, d.proc.LogTail())
		}
	}
	if strings.Contains(text, "crew") {
		t.Errorf("the hold filter shows crew:\n%s", text)
	}
	b.open(base + "/ui/accounts")
	b.screenshot("console-accounts")

	// The account page: the held pass's diff (or a dry run's, if this
	// replica's latest held report is gone), with who loses what and why.
	code, text := b.load("open acme from the overview", chromedp.Click(chromedp.CSS(`a[href="/ui/accounts/acme"]`)))
	if code != http.StatusOK || !strings.Contains(text, "Sync held since") {
		t.Fatalf("acme page: HTTP %d\n%s", code, text)
	}
	if !strings.Contains(text, "Release this diff") {
		code, text = b.load("compute the diff", chromedp.Click(chromedp.CSS(`a[href="/ui/accounts/acme?review=1"]`)))
	}
	diff := b.textOf(".holdbox table")
	if code != http.StatusOK || !strings.Contains(diff, "bob@acme.example\tlose\tbasic\tnone (denied)\tno_permission_group") || !strings.Contains(diff, "ivan@acme.example") || strings.Contains(diff, "alice") {
		t.Fatalf("reviewed diff:\n%s\npage:\n%s", diff, text)
	}
	b.screenshot("console-account-hold")

	// The directory moves after the review: Alice leaves Chime Pro too.
	writeFile(t, ldifPath, strings.Replace(emptied, "member: CN=Alice Pro,OU=People,DC=acme,DC=example\n", "", 1))
	code, text = b.submit(`form[action="/ui/accounts/acme/release"] button`)
	if diff := b.textOf(".holdbox table"); code != http.StatusConflict || !strings.Contains(text, "Nothing was released") || !strings.Contains(diff, "alice@acme.example\tlose\tpro") {
		t.Fatalf("release of a stale diff: HTTP %d\n%s", code, text)
	}
	if dec, _ := d.decision("bob@acme.example"); !dec.Allowed || dec.Permission != entitlement.PermissionBasic {
		t.Errorf("a refused release published something: bob = %+v", dec)
	}
	if dec, _ := d.decision("alice@acme.example"); !dec.Allowed {
		t.Errorf("a refused release published something: alice = %+v", dec)
	}
	code, text = b.submit(`form[action="/ui/accounts/acme/release"] button`)
	if code != http.StatusOK || !strings.Contains(text, "Released:") {
		t.Fatalf("release of the new diff: HTTP %d\n%s", code, text)
	}
	for _, email := range []string{"bob@acme.example", "alice@acme.example", "ivan@acme.example"} {
		if dec, _ := d.decision(email); dec.Allowed || dec.Reason != entitlement.ReasonNoPermission {
			t.Errorf("after the release %s = %+v; want no_permission", email, dec)
		}
	}
	if dec, _ := d.decision("grace@acme.example"); dec.Permission != entitlement.PermissionPro {
		t.Errorf("after the release grace = %+v; want pro", dec)
	}
	if strings.Contains(text, "Sync held since") || !strings.Contains(text, "bob@acme.example") {
		t.Errorf("after the release the page still shows a hold, or its feed lacks bob:\n%s", text)
	}

	// User lookup: the decision and why, and its access history.
	b.open(base + "/ui/lookup")
	b.run("type an address", chromedp.SendKeys(chromedp.CSS("#email"), "grace@acme.example"))
	code, text = b.submit(`form[role="search"] button`)
	if code != http.StatusOK || !strings.Contains(text, "ALLOWED") || !strings.Contains(text, "CN=Chime Pro,OU=Groups,DC=acme,DC=example") || !strings.Contains(text, "Access history") {
		t.Errorf("lookup of grace: HTTP %d\n%s", code, text)
	}
	b.screenshot("console-lookup")

	// A console (team) account: invite two users ';'-separated.
	b.open(base + "/ui/accounts/crew")
	b.run("fill the invitation",
		chromedp.SendKeys(chromedp.CSS("#emails"), "ann@gmail.example; bo@corp.example"),
		chromedp.SetValue(chromedp.CSS("#permission"), "pro"),
	)
	code, text = b.submit(`form[action="/ui/accounts/crew/users"] button`)
	if code != http.StatusOK || !strings.Contains(text, "2 applied") || !strings.Contains(text, "ann@gmail.example") {
		t.Fatalf("invite: HTTP %d\n%s", code, text)
	}
	for _, email := range []string{"ann@gmail.example", "bo@corp.example"} {
		d.waitFor(email, 5*time.Second, func(dec entitlement.Decision) bool { return dec.Reason == "invitation_pending" })
	}
	b.screenshot("console-team-users")

	// The same form without its CSRF token is refused and changes nothing.
	b.open(base + "/ui/accounts/crew")
	b.run("fill a removal without the CSRF token",
		chromedp.Evaluate[chromedp.Void](`document.querySelector('form[action="/ui/accounts/crew/users"] input[name=csrf_token]').remove()`),
		chromedp.SendKeys(chromedp.CSS("#emails"), "ann@gmail.example"),
		chromedp.Click(chromedp.CSS(`input[name=action][value=remove]`)),
	)
	if code, text := b.submit(`form[action="/ui/accounts/crew/users"] button`); code != http.StatusForbidden || !strings.Contains(strings.ToLower(text), "csrf") {
		t.Errorf("a form without its CSRF token: HTTP %d\n%s", code, text)
	}
	if dec, _ := d.decision("ann@gmail.example"); dec.Reason != "invitation_pending" {
		t.Errorf("the refused removal changed ann: %+v", dec)
	}

	// A tenant token of crew: its account only.
	var tok struct{ Token string }
	if code := d.call("POST", "/v1/accounts/crew/tokens", adminToken, map[string]string{"name": "crew admin"}, &tok); code != http.StatusCreated {
		t.Fatalf("issue a tenant token: HTTP %d", code)
	}
	b.open(base + "/ui/accounts")
	b.submit(`form[action="/ui/logout"] button`)
	if text := b.signIn(base, tok.Token); !strings.Contains(text, "Account crew") || strings.Contains(text, "acme") {
		t.Errorf("a tenant's first page:\n%s", text)
	}
	for path, want := range map[string]int{
		"/ui/accounts/crew": http.StatusOK,
		"/ui/accounts/acme": http.StatusForbidden,
		"/ui/accounts":      http.StatusForbidden,
		"/ui/lookup":        http.StatusForbidden,
		"/ui/accounts/acme/lookup?email=grace%40acme.example": http.StatusForbidden,
	} {
		if code, text := b.open(base + path); code != want || (want == http.StatusForbidden && strings.Contains(text, "grace")) {
			t.Errorf("tenant GET %s: HTTP %d, want %d\n%s", path, code, want, text)
		}
	}
	if _, text := b.open(base + "/ui/accounts/crew/lookup?email=grace%40acme.example"); !strings.Contains(text, "unknown_user") || strings.Contains(text, "pro") {
		t.Errorf("a tenant's lookup of another account's user:\n%s", text)
	}
}

// TestQuickStartConsole: `make run`'s config (an LDIF directory, the
// in-memory cache, no admin token) opens the console: the login page
// names the per-start token's file, and that token signs in.
func TestQuickStartConsole(t *testing.T) {
	b := startBrowser(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "directory.ldif"), mustRead(t, "../../../deployments/local/directory.ldif"))
	quick := mustRead(t, "../../../deployments/local/config.yaml")
	addr := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	cfgText := strings.Replace(quick, "listen: 127.0.0.1:8080", "listen: "+addr, 1)
	if cfgText == quick {
		t.Fatal("the quick-start config does not listen on 127.0.0.1:8080")
	}
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, cfgText)
	d := startDaemon(t, dir, cfg, addr)
	d.waitFor("alice@acme.example", 20*time.Second, isAllowed)
	base := "http://" + addr

	_, text := b.open(base + "/ui/")
	if !strings.Contains(b.location(), "/ui/login") {
		_, text = b.open(base + "/ui/login")
	}
	m := regexp.MustCompile(`its per-start token is in (\S+) `).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("the login page does not name the per-start token's file:\n%s", text)
	}
	token := strings.TrimSpace(mustRead(t, m[1]))
	b.signIn(base, token)
	code, text := b.open(base + "/ui/accounts/acme")
	if code != http.StatusOK || !strings.Contains(text, "CN=Chime Pro,OU=Groups,DC=acme,DC=example") || !strings.Contains(text, "Recent passes") {
		t.Fatalf("quick-start account page: HTTP %d\n%s", code, text)
	}
	b.screenshot("console-quick-start")
}

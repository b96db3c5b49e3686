package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/entitlement/history"
	"github.com/dirsync/dirsync/internal/sync/lease"
	"github.com/dirsync/dirsync/internal/sync/notify"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// runCLI runs the CLI in-process and returns its exit code and output.
func runCLI(t *testing.T, ctx context.Context, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, func(k string) string { return env[k] }, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// rulesLDIF has one user per mapper rule.
const rulesLDIF = `dn: CN=Pro,OU=G,DC=acme,DC=example
objectClass: group
cn: Pro
member: CN=pro,OU=P,DC=acme,DC=example
member: CN=both,OU=P,DC=acme,DC=example
member: CN=suspended,OU=P,DC=acme,DC=example
member: CN=expired,OU=P,DC=acme,DC=example
member: CN=outsider,OU=P,DC=acme,DC=example
member: CN=noaccess,OU=P,DC=acme,DC=example
member: CN=Nested,OU=G,DC=acme,DC=example

dn: CN=Basic,OU=G,DC=acme,DC=example
objectClass: group
cn: Basic
member: CN=basic,OU=P,DC=acme,DC=example
member: CN=both,OU=P,DC=acme,DC=example

dn: CN=Nested,OU=G,DC=acme,DC=example
objectClass: group
cn: Nested
member: CN=nested,OU=P,DC=acme,DC=example
member: CN=Pro,OU=G,DC=acme,DC=example

dn: CN=Staff,OU=G,DC=acme,DC=example
objectClass: group
cn: Staff
member: CN=pro,OU=P,DC=acme,DC=example
member: CN=both,OU=P,DC=acme,DC=example
member: CN=basic,OU=P,DC=acme,DC=example
member: CN=nested,OU=P,DC=acme,DC=example
member: CN=suspended,OU=P,DC=acme,DC=example
member: CN=expired,OU=P,DC=acme,DC=example
member: CN=nogroup,OU=P,DC=acme,DC=example
`

func ldifUser(cn, mail string, uac int, expires string) string {
	return fmt.Sprintf("dn: CN=%s,OU=P,DC=acme,DC=example\nobjectClass: user\ncn: %s\nobjectGUID:: %s\nmail: %s\nuserAccountControl: %d\naccountExpires: %s\n\n",
		cn, cn, guidB64(cn), mail, uac, expires)
}

// guidB64 is a stable fake objectGUID per name.
func guidB64(name string) string {
	b := make([]byte, 16)
	copy(b, name)
	return base64.StdEncoding.EncodeToString(b)
}

func writeRulesConfig(t *testing.T, redisAddr string) string {
	t.Helper()
	dir := t.TempDir()
	ldif := ldifUser("pro", "Pro@Acme.Example", 512, "0") +
		ldifUser("basic", "basic@acme.example", 512, "9223372036854775807") +
		ldifUser("both", "both@acme.example", 512, "0") +
		ldifUser("nested", "nested@acme.example", 512, "0") +
		ldifUser("suspended", "suspended@acme.example", 514, "0") +
		ldifUser("expired", "expired@acme.example", 512, "131000000000000000") +
		ldifUser("nogroup", "nogroup@acme.example", 512, "0") +
		ldifUser("noaccess", "noaccess@acme.example", 512, "0") +
		ldifUser("outsider", "outsider@elsewhere.example", 512, "0") + rulesLDIF
	if err := os.WriteFile(filepath.Join(dir, "dir.ldif"), []byte(ldif), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`cache:
  backend: redis
  redis: {addrs: [%q], key_prefix: e2e}
log: {level: error}
accounts:
  - id: acme
    claimed_domains: [acme.example]
    directory: {type: ldif, ldif: {path: dir.ldif}}
    access_group: "CN=Staff,OU=G,DC=acme,DC=example"
    bindings:
      - {group: "CN=Pro,OU=G,DC=acme,DC=example", permission: pro}
      - {group: "cn=basic,ou=g,dc=acme,dc=example", permission: basic}
`, redisAddr)
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSyncThenCheckEveryRule is the spine's end-to-end check: a sync into
// real Redis, then a check of every mapper rule as the sign-in service
// reads it.
func TestSyncThenCheckEveryRule(t *testing.T) {
	srv := servertest.StartRedis(t)
	cfg := writeRulesConfig(t, srv.Addr)
	ctx := context.Background()

	code, out, errOut := runCLI(t, ctx, nil, "sync", "--config", cfg, "--output", "json")
	if code != exitOK {
		t.Fatalf("sync exit %d: %s %s", code, out, errOut)
	}
	var sync struct {
		Reports []struct {
			Result string `json:"result"`
			Stats  struct {
				Users            int            `json:"users"`
				Decisions        int            `json:"decisions"`
				DomainNotClaimed int            `json:"domain_not_claimed"`
				ByReason         map[string]int `json:"by_reason"`
			} `json:"stats"`
		} `json:"reports"`
	}
	if err := json.Unmarshal([]byte(out), &sync); err != nil {
		t.Fatalf("sync json: %v\n%s", err, out)
	}
	r := sync.Reports[0]
	if r.Result != "published" || r.Stats.Users != 9 || r.Stats.Decisions != 8 || r.Stats.DomainNotClaimed != 1 {
		t.Errorf("sync report = %+v", r)
	}

	tests := []struct {
		email      string
		allowed    bool
		permission string
		reason     string
		via        []string
	}{
		{"pro@acme.example", true, "pro", "granted", []string{"CN=Pro,OU=G,DC=acme,DC=example"}},
		{"PRO@acme.example", true, "pro", "granted", []string{"CN=Pro,OU=G,DC=acme,DC=example"}},
		{"basic@acme.example", true, "basic", "granted", []string{"CN=Basic,OU=G,DC=acme,DC=example"}},
		{"both@acme.example", true, "pro", "granted", []string{"CN=Pro,OU=G,DC=acme,DC=example"}},
		{"nested@acme.example", true, "pro", "granted", []string{"CN=Pro,OU=G,DC=acme,DC=example"}},
		{"suspended@acme.example", false, "none", "suspended", []string{}},
		{"expired@acme.example", false, "none", "inactive", []string{}},
		{"noaccess@acme.example", false, "none", "not_in_access_group", []string{}},
		{"nogroup@acme.example", false, "none", "no_permission_group", []string{}},
		{"outsider@elsewhere.example", false, "none", "unknown_user", []string{}},
		{"stranger@acme.example", false, "none", "unknown_user", []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.email, func(t *testing.T) {
			code, out, errOut := runCLI(t, ctx, nil, "check", "--config", cfg, tt.email, "--output", "json")
			if code != exitOK {
				t.Fatalf("check exit %d: %s", code, errOut)
			}
			var d map[string]any
			if err := json.Unmarshal([]byte(out), &d); err != nil {
				t.Fatalf("check json: %v\n%s", err, out)
			}
			for _, field := range []string{"email", "account", "allowed", "permission", "reason", "capabilities", "user_id", "via", "synced_at"} {
				if _, ok := d[field]; !ok {
					t.Errorf("decision JSON lacks %q: %s", field, out)
				}
			}
			if _, ok := d["detail"]; ok {
				t.Errorf("detail present without --explain")
			}
			var dec entitlement.Decision
			if err := json.Unmarshal([]byte(out), &dec); err != nil {
				t.Fatal(err)
			}
			if dec.Allowed != tt.allowed || string(dec.Permission) != tt.permission || string(dec.Reason) != tt.reason {
				t.Errorf("got allowed=%t permission=%s reason=%s; want %t %s %s", dec.Allowed, dec.Permission, dec.Reason, tt.allowed, tt.permission, tt.reason)
			}
			if strings.Join(dec.Via, "|") != strings.Join(tt.via, "|") {
				t.Errorf("via = %v; want %v", dec.Via, tt.via)
			}
			if dec.Capabilities != entitlement.CapabilitiesOf(entitlement.Permission(tt.permission)) {
				t.Errorf("capabilities = %+v", dec.Capabilities)
			}
			if tt.reason != "unknown_user" && (dec.Account != "acme" || dec.UserID == "" || dec.SyncedAt.IsZero()) {
				t.Errorf("account %q user_id %q synced_at %v", dec.Account, dec.UserID, dec.SyncedAt)
			}
		})
	}

	// --explain adds the group path and flags.
	code, out, _ = runCLI(t, ctx, nil, "check", "--config", cfg, "nested@acme.example", "--explain")
	if code != exitOK || !strings.Contains(out, "CN=Pro,OU=G,DC=acme,DC=example → CN=Nested,OU=G,DC=acme,DC=example → user") || !strings.Contains(out, "in_access_group=true") {
		t.Errorf("explain output:\n%s", out)
	}

	// A dry run after a change shows the diff and publishes nothing.
	code, out, _ = runCLI(t, ctx, nil, "sync", "--config", cfg, "--dry-run")
	if code != exitOK || !strings.Contains(out, "0 published") {
		t.Errorf("steady-state dry run:\n%s", out)
	}

	// While a daemon (here: another lease holder) owns the account, a
	// one-off sync refuses to be a second writer; a dry run still works.
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rc.Close()
	held, err := lease.AcquireAll(ctx, rc, "e2e", "replica-1", []string{"acme"}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runCLI(t, ctx, nil, "sync", "--config", cfg)
	if code != exitRuntime || !strings.Contains(errOut, "holds this account's lease") || !strings.Contains(errOut, "replica-1") {
		t.Errorf("sync beside a lease holder: exit %d: %s", code, errOut)
	}
	if code, _, _ := runCLI(t, ctx, nil, "sync", "--config", cfg, "--dry-run"); code != exitOK {
		t.Errorf("dry run beside a lease holder: exit %d", code)
	}
	held.Release(ctx)
	if code, _, errOut := runCLI(t, ctx, nil, "sync", "--config", cfg); code != exitOK {
		t.Errorf("sync after release: exit %d %s", code, errOut)
	}
}

func TestValidateReportsEveryMistake(t *testing.T) {
	code, _, errOut := runCLI(t, context.Background(), nil, "validate", "--config", "../../internal/config/testdata/three-mistakes.yaml")
	if code != exitUsage {
		t.Errorf("exit %d; want %d", code, exitUsage)
	}
	for _, want := range []string{"cache.redis.adrs", "schedule.incremental", "accounts[0].bindings[0].permission"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("validate output lacks %s:\n%s", want, errOut)
		}
	}
	code, out, _ := runCLI(t, context.Background(), nil, "validate", "--config", "../../deployments/local/config.yaml")
	if code != exitOK || !strings.Contains(out, "valid") {
		t.Errorf("quick-start config: exit %d %s", code, out)
	}
	if code, _, _ := runCLI(t, context.Background(), nil, "validate"); code != exitUsage {
		t.Errorf("no config: exit %d", code)
	}
	if code, _, _ := runCLI(t, context.Background(), map[string]string{"DIRSYNC_CONFIG": "../../deployments/local/config.yaml"}, "validate"); code != exitOK {
		t.Errorf("$DIRSYNC_CONFIG not used: exit %d", code)
	}
	if code, _, _ := runCLI(t, context.Background(), nil, "frobnicate"); code != exitUsage {
		t.Errorf("unknown command: exit %d", code)
	}
}

// TestValidateRefusesEmptyTokenFile: an admin token file that is empty or
// white space fails `dirsync validate` (exit 2) naming the field, and the
// daemon does not start on it: it used to pass and serve the admin API
// with no auth, even on 0.0.0.0.
func TestValidateRefusesEmptyTokenFile(t *testing.T) {
	dir := t.TempDir()
	ldif, err := filepath.Abs("../../deployments/local/directory.ldif")
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"empty": "", "white space": " \n\t\n"} {
		token := filepath.Join(dir, "admin-token")
		if err := os.WriteFile(token, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := filepath.Join(dir, "config.yaml")
		body := fmt.Sprintf(`cache: {backend: memory}
api: {listen: "0.0.0.0:0", admin_token_file: %q}
accounts:
  - id: acme
    claimed_domains: [acme.example]
    directory: {type: ldif, ldif: {path: %q}}
    bindings: [{group: "CN=Chime Pro,OU=Groups,DC=acme,DC=example", permission: pro}]
`, token, ldif)
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, errOut := runCLI(t, context.Background(), nil, "validate", "--config", cfg)
		if code != exitUsage || !strings.Contains(errOut, "api.admin_token_file: "+token+" is empty") {
			t.Errorf("%s token file: validate exit %d\n%s", name, code, errOut)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		code, _, errOut = runCLI(t, ctx, nil, "run", "--config", cfg)
		cancel()
		if code != exitUsage || !strings.Contains(errOut, "api.admin_token_file") {
			t.Errorf("%s token file: run exit %d (want %d, refused at start)\n%s", name, code, exitUsage, errOut)
		}
	}
}

// TestRunServesQuickStart runs the daemon on the quick-start config (on a
// free port) and reads decisions over HTTP, as the README shows.
func TestRunServesQuickStart(t *testing.T) {
	dir := t.TempDir()
	ldif, err := os.ReadFile("../../deployments/local/directory.ldif")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "directory.ldif"), ldif, 0o644); err != nil {
		t.Fatal(err)
	}
	cfgBody, err := os.ReadFile("../../deployments/local/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	cfgText := strings.Replace(string(cfgBody), "listen: 127.0.0.1:8080", "listen: "+addr, 1)
	if cfgText == string(cfgBody) {
		t.Fatal("quick-start config does not listen on 127.0.0.1:8080")
	}
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		code, _, _ := runCLI(t, ctx, nil, "run", "--config", cfg)
		done <- code
	}()
	get := func(email string) entitlement.Decision {
		t.Helper()
		var d entitlement.Decision
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get("http://" + addr + "/v1/access/" + email)
			if err == nil {
				err = json.NewDecoder(resp.Body).Decode(&d)
				resp.Body.Close()
				if err == nil && d.Reason != entitlement.ReasonUnknownUser {
					return d
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no decision for %s: %v %+v", email, err, d)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if d := get("alice@acme.example"); !d.Allowed || d.Permission != entitlement.PermissionPro {
		t.Errorf("alice = %+v", d)
	}
	if d := get("dave@acme.example"); d.Allowed || d.Reason != entitlement.ReasonSuspended {
		t.Errorf("dave = %+v", d)
	}
	// Every source kind's counters reach the metrics, the LDIF file's too.
	if resp, err := http.Get("http://" + addr + "/metrics"); err != nil {
		t.Error(err)
	} else {
		m, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(m), `dirsync_directory_entries_read_total{account="acme",source="ldif"}`) {
			t.Errorf("no entries-read counter for the LDIF source:\n%s", m)
		}
	}
	code, out, errOut := runCLI(t, context.Background(), nil, "check", "--config", cfg, "carol@acme.example", "--output", "json")
	if code != exitOK || !strings.Contains(out, `"permission": "pro"`) || !strings.Contains(errOut, "asking the daemon") {
		t.Errorf("check via daemon: exit %d\n%s\n%s", code, out, errOut)
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("run exit %d after shutdown", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop within 10s of cancellation")
	}
	// With no daemon, check on a memory config says so.
	code, _, errOut = runCLI(t, context.Background(), nil, "check", "--config", cfg, "alice@acme.example")
	if code != exitRuntime || !strings.Contains(errOut, "no dirsync daemon answers") {
		t.Errorf("check without daemon: exit %d: %s", code, errOut)
	}
}

// TestWrongBindingIsHeldThenReleased: a config whose binding names a wrong
// group DN would take access away from most users; the sync is held (not
// published) and `dirsync release` publishes it.
func TestWrongBindingIsHeldThenReleased(t *testing.T) {
	srv := servertest.StartRedis(t)
	cfg := writeRulesConfig(t, srv.Addr)
	ctx := context.Background()
	if code, out, errOut := runCLI(t, ctx, nil, "sync", "--config", cfg); code != exitOK {
		t.Fatalf("first sync: %d %s %s", code, out, errOut)
	}
	if code, _, errOut := runCLI(t, ctx, nil, "release", "--config", cfg, "--account", "acme"); code != exitRuntime || !strings.Contains(errOut, "no safeguard hold") {
		t.Errorf("release without a hold: exit %d %s", code, errOut)
	}
	body, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	wrong := strings.Replace(string(body), `group: "CN=Pro,OU=G,DC=acme,DC=example"`, `group: "CN=Pro Typo,OU=G,DC=acme,DC=example"`, 1)
	if err := os.WriteFile(cfg, []byte(wrong), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runCLI(t, ctx, nil, "sync", "--config", cfg)
	if code != exitRuntime || !strings.Contains(out, "HELD") || !strings.Contains(out, "binding_not_found") {
		t.Fatalf("wrong binding: exit %d\n%s", code, out)
	}
	check := func(email string) entitlement.Decision {
		_, out, _ := runCLI(t, ctx, nil, "check", "--config", cfg, email, "--output", "json")
		var d entitlement.Decision
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := check("pro@acme.example"); !d.Allowed || d.Permission != entitlement.PermissionPro {
		t.Errorf("held change was published: %+v", d)
	}
	code, out, errOut := runCLI(t, ctx, nil, "release", "--config", cfg, "--account", "acme")
	if code != exitOK || !strings.Contains(out, "published") {
		t.Fatalf("release: exit %d\n%s\n%s", code, out, errOut)
	}
	if d := check("pro@acme.example"); d.Allowed || d.Reason != entitlement.ReasonNoPermission {
		t.Errorf("after release pro = %+v", d)
	}
	if d := check("both@acme.example"); d.Permission != entitlement.PermissionBasic {
		t.Errorf("after release both = %+v", d)
	}
}

// TestEmptiedGroupIsHeldButSuspensionsPublish: the Basic group empties in
// the same change that disables a user. The read is held (visible in the
// status record, releasable), the disabled user is suspended at once, the
// Basic members keep access until `dirsync release`. This used to fail
// every sync with "a bound group ... is missing or empty" while the
// disabled user kept Pro, and release refused for want of a hold.
func TestEmptiedGroupIsHeldButSuspensionsPublish(t *testing.T) {
	srv := servertest.StartRedis(t)
	cfg := writeRulesConfig(t, srv.Addr)
	ctx := context.Background()
	if code, out, errOut := runCLI(t, ctx, nil, "sync", "--config", cfg); code != exitOK {
		t.Fatalf("first sync: %d %s %s", code, out, errOut)
	}
	ldifPath := filepath.Join(filepath.Dir(cfg), "dir.ldif")
	body, err := os.ReadFile(ldifPath)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(body), "cn: Basic\nmember: CN=basic,OU=P,DC=acme,DC=example\nmember: CN=both,OU=P,DC=acme,DC=example\n", "cn: Basic\n", 1)
	changed = strings.Replace(changed, "mail: nested@acme.example\nuserAccountControl: 512", "mail: nested@acme.example\nuserAccountControl: 514", 1)
	if strings.Count(changed, "\n") == strings.Count(string(body), "\n") || !strings.Contains(changed, "nested@acme.example\nuserAccountControl: 514") {
		t.Fatal("the test could not edit the LDIF")
	}
	if err := os.WriteFile(ldifPath, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runCLI(t, ctx, nil, "sync", "--config", cfg)
	if code != exitRuntime || !strings.Contains(out, "HELD") {
		t.Fatalf("emptied bound group: exit %d\n%s", code, out)
	}
	check := func(email string) entitlement.Decision {
		_, out, _ := runCLI(t, ctx, nil, "check", "--config", cfg, email, "--output", "json")
		var d entitlement.Decision
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := check("nested@acme.example"); d.Allowed || d.Reason != entitlement.ReasonSuspended {
		t.Errorf("disabled user during the hold: %+v; want suspended at once", d)
	}
	if d := check("basic@acme.example"); !d.Allowed || d.Permission != entitlement.PermissionBasic {
		t.Errorf("held loss published: basic = %+v", d)
	}
	_, statusOut, _ := runCLI(t, ctx, nil, "check", "--config", cfg, "basic@acme.example", "--explain")
	if !strings.Contains(statusOut, "HOLD pending") {
		t.Errorf("explain does not show the hold:\n%s", statusOut)
	}
	code, out, errOut := runCLI(t, ctx, nil, "release", "--config", cfg, "--account", "acme")
	if code != exitOK || !strings.Contains(out, "published") {
		t.Fatalf("release: exit %d\n%s\n%s", code, out, errOut)
	}
	if d := check("basic@acme.example"); d.Allowed || d.Reason != entitlement.ReasonNoPermission {
		t.Errorf("after release basic = %+v", d)
	}
	if d := check("both@acme.example"); d.Permission != entitlement.PermissionPro {
		t.Errorf("after release both = %+v", d)
	}
}

// TestWebhookHoldAndRelease: `dirsync run` with a webhook tells a real
// receiver, with a valid signature, when a sync is held (once, however
// many passes see the hold) and when an operator releases it; with a
// database, the access history says who caused each change and why.
func TestWebhookHoldAndRelease(t *testing.T) {
	srv := servertest.StartRedis(t)
	pg := servertest.StartPostgres(t)
	dsn := pg.CreateDatabase(t)
	cfg := writeRulesConfig(t, srv.Addr)
	dir := filepath.Dir(cfg)
	type delivery struct {
		event, id string
	}
	var mu sync.Mutex
	var got []delivery
	badSignatures := 0
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get(notify.HeaderSignature) != notify.Sign("hook-key", r.Header.Get(notify.HeaderTimestamp), body) {
			badSignatures++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		got = append(got, delivery{r.Header.Get(notify.HeaderEvent), r.Header.Get(notify.HeaderID)})
	}))
	defer receiver.Close()
	for name, value := range map[string]string{"hook-key": "hook-key\n", "admin-token": "admin-secret\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(value), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	body, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	extra := fmt.Sprintf("api: {listen: %q, admin_token_file: admin-token}\nschedule: {full: \"@every 1h\", incremental: \"@every 1s\"}\nnotify:\n  webhooks:\n    - {url: %q, secret_file: hook-key}\nconsole: {postgres_dsn_env: TEST_DSN}\n", addr, receiver.URL+"/dirsync")
	if err := os.WriteFile(cfg, append([]byte(extra), body...), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		code, _, _ := runCLI(t, ctx, map[string]string{"TEST_DSN": dsn}, "run", "--config", cfg)
		done <- code
	}()
	defer func() {
		cancel()
		<-done
	}()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("%s: deliveries so far %+v", what, got)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	checkBasic := func() bool {
		resp, err := http.Get("http://" + addr + "/v1/access/basic@acme.example")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var d entitlement.Decision
		return json.NewDecoder(resp.Body).Decode(&d) == nil && d.Allowed
	}
	waitFor("the first sync", checkBasic)

	// Empty the bound Basic group: every pass from now on is held.
	ldifPath := filepath.Join(dir, "dir.ldif")
	ldif, _ := os.ReadFile(ldifPath)
	emptied := strings.Replace(string(ldif), "cn: Basic\nmember: CN=basic,OU=P,DC=acme,DC=example\nmember: CN=both,OU=P,DC=acme,DC=example\n", "cn: Basic\n", 1)
	if err := os.WriteFile(ldifPath, []byte(emptied), 0o644); err != nil {
		t.Fatal(err)
	}
	count := func(event string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, d := range got {
			if d.event == event {
				n++
			}
		}
		return n
	}
	waitFor("a hold event", func() bool { return count(notify.EventHold) == 1 })
	time.Sleep(3 * time.Second) // three more held passes: still one event
	if n := count(notify.EventHold); n != 1 {
		t.Errorf("%d hold events for one hold", n)
	}
	if !checkBasic() {
		t.Error("the held change was published")
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/accounts/acme/release", nil)
	req.Header.Set("Authorization", "Bearer admin-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("release: HTTP %d", resp.StatusCode)
	}
	waitFor("a release event", func() bool { return count(notify.EventRelease) == 1 })
	if checkBasic() {
		t.Error("basic still allowed after the release")
	}
	// The access history: granted by the first read, lost by the release,
	// which the admin token's holder caused.
	hreq, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/v1/accounts/acme/users/Basic@Acme.Example/history", nil)
	hreq.Header.Set("Authorization", "Bearer admin-secret")
	hresp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	var hist struct {
		Entries []history.Entry `json:"entries"`
	}
	err = json.NewDecoder(hresp.Body).Decode(&hist)
	hresp.Body.Close()
	if err != nil || hresp.StatusCode != http.StatusOK || len(hist.Entries) != 2 {
		t.Fatalf("history: HTTP %d %v %+v", hresp.StatusCode, err, hist)
	}
	lost, granted := hist.Entries[0], hist.Entries[1]
	if lost.Cause != history.CauseRelease || lost.Actor != "api.admin_token_file" || !lost.OldAllowed || lost.NewAllowed || lost.Reason != entitlement.ReasonNoPermission {
		t.Errorf("newest entry %+v; want the release by the admin token", lost)
	}
	if granted.Cause != history.CauseDirectory || granted.Actor != "dirsync" || !granted.NewAllowed || granted.NewPermission != entitlement.PermissionBasic {
		t.Errorf("first entry %+v; want granted basic by the directory", granted)
	}
	mu.Lock()
	defer mu.Unlock()
	if badSignatures != 0 {
		t.Errorf("%d deliveries with a bad signature", badSignatures)
	}
}

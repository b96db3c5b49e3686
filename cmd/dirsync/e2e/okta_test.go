package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/sync/engine"
	"github.com/dirsync/dirsync/internal/testsupport/oktafake"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

const (
	adminToken = "admin-tok-5f1c2b9e7d"
	hookSecret = "hook-secret-8a7b6c5d"
)

type oktaOrg struct {
	fake              *oktafake.Server
	pro, basic        string
	alice, bob, carol string
}

func newOktaOrg(t *testing.T) *oktaOrg {
	f := oktafake.New(oktafake.Options{Token: "okta-api-tok-93e1d0c2"})
	t.Cleanup(f.Close)
	o := &oktaOrg{fake: f}
	o.pro = f.AddGroup("Chime Pro", oktafake.GroupOkta)
	o.basic = f.AddGroup("Chime Basic", oktafake.GroupApp)
	o.alice = f.AddUser(oktafake.UserSpec{Login: "alice@globex.example", Email: "alice@globex.example"})
	o.bob = f.AddUser(oktafake.UserSpec{Login: "bob@globex.example", Email: "bob@globex.example"})
	o.carol = f.AddUser(oktafake.UserSpec{Login: "carol@globex.example", Email: "carol@globex.example"})
	f.AddMember(o.pro, o.alice)
	f.AddMember(o.pro, o.bob)
	f.AddMember(o.basic, o.carol)
	return o
}

func oktaConfig(t testing.TB, dir, redisAddr, orgURL, token, incremental string) string {
	tok := writeSecret(t, dir, "okta-token", token)
	hook := writeSecret(t, dir, "hook-secret", hookSecret)
	admin := writeSecret(t, dir, "admin-token", adminToken)
	return fmt.Sprintf(`cache: {backend: redis, redis: {addrs: [%q], key_prefix: e2e-okta}}
schedule: {full: "@every 1h", incremental: %q}
accounts:
  - id: globex
    claimed_domains: [globex.example]
    directory:
      type: okta
      okta: {org_url: %q, token_file: %s, allow_http: true, event_hook_secret_file: %s}
    bindings:
      - {group: "Chime Pro", permission: pro}
      - {group: "Chime Basic", permission: basic}
`, redisAddr, incremental, orgURL, tok, hook) + "\n# admin\n" + fmt.Sprintf("api_admin_token_file_placeholder: %s\n", admin)
}

// fixConfig moves the admin token into the api section (writeConfig owns
// the api line).
func fixConfig(t testing.TB, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "api_admin_token_file_placeholder: ")
	admin := strings.TrimSpace(s[i+len("api_admin_token_file_placeholder: "):])
	s = s[:i]
	s = strings.Replace(s, "api: {listen: ", "api: {admin_token_file: "+admin+", listen: ", 1)
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (d *daemon) admin(method, path string, body []byte, out any) int {
	d.t.Helper()
	req, err := http.NewRequest(method, "http://"+d.addr+path, bytes.NewReader(body))
	if err != nil {
		d.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			d.t.Fatal(err)
		}
	}
	return resp.StatusCode
}

// TestOktaSuspensionByPolling: a suspension in Okta reaches the cache
// within 5 s through incremental polling.
func TestOktaSuspensionByPolling(t *testing.T) {
	org := newOktaOrg(t)
	rs := servertest.StartRedis(t)
	dir := t.TempDir()
	cfg, addr := writeConfig(t, dir, oktaConfig(t, dir, rs.Addr, org.fake.URL, org.fake.Token(), "@every 2s"))
	fixConfig(t, cfg)
	d := startDaemon(t, dir, cfg, addr)
	d.waitFor("alice@globex.example", 20*time.Second, isAllowed)

	org.fake.SetStatus(org.alice, oktafake.StatusSuspended)
	took, _ := d.waitFor("alice@globex.example", 10*time.Second, isSuspended)
	t.Logf("Okta suspend → cache by polling: %v", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("suspension took %v; want within 5s", took)
	}
	if dec, _ := d.decision("bob@globex.example"); !dec.Allowed {
		t.Errorf("bob changed: %+v", dec)
	}
}

// TestOktaEventHookAndOps covers, on one daemon with slow polling: the
// event hook (verification, authentication, immediate pass), a dry run,
// SIGHUP with a broken then a good config, /metrics, secrets in logs, and
// SIGTERM during a sync.
func TestOktaEventHookAndOps(t *testing.T) {
	org := newOktaOrg(t)
	rs := servertest.StartRedis(t)
	dir := t.TempDir()
	body := oktaConfig(t, dir, rs.Addr, org.fake.URL, org.fake.Token(), "@every 1h")
	cfg, addr := writeConfig(t, dir, body)
	fixConfig(t, cfg)
	d := startDaemon(t, dir, cfg, addr)
	d.waitFor("bob@globex.example", 20*time.Second, isAllowed)
	hookURL := "http://" + addr + "/v1/hooks/okta"

	t.Run("verification", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, hookURL, nil)
		req.Header.Set("X-Okta-Verification-Challenge", "chal-123")
		req.Header.Set("Authorization", hookSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]string
		json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if resp.StatusCode != 200 || v["verification"] != "chal-123" {
			t.Errorf("verification: HTTP %d %v", resp.StatusCode, v)
		}
		req.Header.Set("Authorization", "wrong")
		resp, _ = http.DefaultClient.Do(req)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("wrong secret: HTTP %d", resp.StatusCode)
		}
	})

	t.Run("event triggers an immediate pass", func(t *testing.T) {
		org.fake.SetStatus(org.bob, oktafake.StatusSuspended)
		event := []byte(`{"eventType":"com.okta.event_hook","data":{"events":[{"eventType":"user.lifecycle.suspend"}]}}`)
		unauth, _ := http.Post(hookURL, "application/json", bytes.NewReader(event))
		unauth.Body.Close()
		if unauth.StatusCode != http.StatusUnauthorized {
			t.Errorf("unauthenticated event: HTTP %d", unauth.StatusCode)
		}
		start := time.Now()
		req, _ := http.NewRequest(http.MethodPost, hookURL, bytes.NewReader(event))
		req.Header.Set("Authorization", hookSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("event: HTTP %d", resp.StatusCode)
		}
		_, _ = d.waitFor("bob@globex.example", 5*time.Second, isSuspended)
		t.Logf("Okta suspend → cache by event hook: %v", time.Since(start).Round(time.Millisecond))
	})

	t.Run("dry run publishes nothing", func(t *testing.T) {
		org.fake.SetStatus(org.carol, oktafake.StatusDeprovisioned)
		var out struct{ Reports []engine.Report }
		if code := d.admin(http.MethodPost, "/v1/sync?account=globex&dry_run=true", nil, &out); code != 200 {
			t.Fatalf("dry run: HTTP %d", code)
		}
		r := out.Reports[0]
		if r.Result != engine.ResultDryRun || len(r.Diff) != 1 || r.Diff[0].Email != "carol@globex.example" ||
			r.Diff[0].Change != "lose" || r.Diff[0].Reason != entitlement.ReasonInactive || r.Diff[0].OldPermission != entitlement.PermissionBasic {
			t.Errorf("dry-run report: %+v", r)
		}
		if dec, _ := d.decision("carol@globex.example"); !dec.Allowed {
			t.Errorf("dry run published: %+v", dec)
		}
		if code := d.post("/v1/sync?account=globex", nil); code != http.StatusUnauthorized {
			t.Errorf("sync without the admin token: HTTP %d", code)
		}
		if code := d.admin(http.MethodPost, "/v1/sync?account=globex", nil, &out); code != 200 || out.Reports[0].Changes.Published != 1 {
			t.Errorf("real sync: HTTP %d %+v", code, out.Reports)
		}
		if dec, _ := d.decision("carol@globex.example"); dec.Allowed || dec.Reason != entitlement.ReasonInactive {
			t.Errorf("after the sync carol = %+v", dec)
		}
	})

	t.Run("SIGHUP keeps the old config when the new one is broken", func(t *testing.T) {
		good, _ := os.ReadFile(cfg)
		broken := strings.Replace(string(good), "permission: basic", "permission: platinum", 1)
		if err := os.WriteFile(cfg, []byte(broken), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := d.proc.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(d.log(), "config reload rejected") {
			if time.Now().After(deadline) {
				t.Fatalf("no rejection logged:\n%s", d.log())
			}
			time.Sleep(50 * time.Millisecond)
		}
		if !strings.Contains(d.log(), "platinum") {
			t.Error("the rejection does not say what is wrong")
		}
		if dec, err := d.decision("alice@globex.example"); err != nil || !dec.Allowed {
			t.Errorf("daemon not serving after a rejected reload: %+v %v", dec, err)
		}
		// POST /v1/reload reports the problems too.
		var out map[string]string
		if code := d.admin(http.MethodPost, "/v1/reload", nil, &out); code != http.StatusBadRequest || !strings.Contains(out["error"], "platinum") {
			t.Errorf("POST /v1/reload with a broken config: HTTP %d %v", code, out)
		}
		// A schedule robfig/cron panics on ("TZ=UTC": slice bounds out of
		// range) is a config problem too, through SIGHUP and the API: the
		// daemon keeps serving on the old config.
		panicking := regexp.MustCompile(`incremental: "[^"]*"`).ReplaceAllString(string(good), `incremental: "TZ=UTC"`)
		if panicking == string(good) {
			t.Fatal("the test config has no incremental schedule to break")
		}
		if err := os.WriteFile(cfg, []byte(panicking), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := d.proc.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if code := d.admin(http.MethodPost, "/v1/reload", nil, &out); code != http.StatusBadRequest || !strings.Contains(out["error"], `schedule.incremental: "TZ=UTC" is not a cron spec`) {
			t.Errorf("POST /v1/reload with schedule TZ=UTC: HTTP %d %v", code, out)
		}
		if dec, err := d.decision("alice@globex.example"); err != nil || !dec.Allowed {
			t.Errorf("daemon not serving after a reload with a panicking cron spec: %+v %v", dec, err)
		}
		if strings.Contains(d.log(), "panic") {
			t.Errorf("the daemon log mentions a panic:\n%s", d.log())
		}
		// A good config is applied: drop the basic binding, carol's group.
		// The Okta poller reads only bound groups, so carol leaves the
		// account's users altogether.
		org.fake.SetStatus(org.carol, oktafake.StatusActive)
		fixed := strings.Replace(string(good), `      - {group: "Chime Basic", permission: basic}`+"\n", "", 1)
		if err := os.WriteFile(cfg, []byte(fixed), 0o600); err != nil {
			t.Fatal(err)
		}
		if code := d.admin(http.MethodPost, "/v1/reload", nil, &out); code != 200 {
			t.Fatalf("good reload: HTTP %d %v", code, out)
		}
		d.waitFor("carol@globex.example", 10*time.Second, func(dec entitlement.Decision) bool {
			return dec.Reason == entitlement.ReasonUnknownUser
		})
	})

	t.Run("status", func(t *testing.T) {
		var st struct {
			Accounts []struct {
				Account  string                      `json:"account"`
				Runs     map[string]engine.Report    `json:"runs"`
				NextRuns map[string]time.Time        `json:"next_runs"`
				Cache    *struct{ Generation int64 } `json:"cache"`
			} `json:"accounts"`
		}
		if code := d.admin(http.MethodGet, "/v1/status", nil, &st); code != 200 || len(st.Accounts) != 1 {
			t.Fatalf("status: HTTP %d %+v", code, st)
		}
		a := st.Accounts[0]
		if a.Runs["full"].Result == "" || a.Cache == nil || a.Cache.Generation == 0 {
			t.Errorf("status lacks the last full run or the cache record: %+v", a)
		}
		// "@every 1h": the next pass is within the hour (each account has
		// a fixed phase within its period, so accounts do not fire together).
		if next := a.NextRuns["incremental"]; !next.After(time.Now()) || next.After(time.Now().Add(time.Hour)) {
			t.Errorf("next incremental run = %v; want within the next hour", next)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		text := scrapeMetrics(t, addr)
		for _, want := range []string{
			`dirsync_sync_runs_total{account="globex",mode="full",result="published"}`,
			`dirsync_sync_duration_seconds_bucket{account="globex"`,
			`dirsync_last_success_timestamp_seconds{account="globex"`,
			`dirsync_users{account="globex",permission="pro",reason="granted"}`,
			`dirsync_directory_requests_total{account="globex",source="okta"}`,
			`dirsync_okta_rate_limit_remaining{account="globex"}`,
			`dirsync_published_changes_total{account="globex"}`,
			`dirsync_okta_event_hook_requests_total{outcome="triggered"}`,
			`dirsync_api_lookups_total{outcome="allowed"}`,
		} {
			if !strings.Contains(text, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})

	t.Run("SIGTERM during a sync exits 0 within 10s", func(t *testing.T) {
		org.fake.SetLatency(3 * time.Second)
		go func() {
			req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/sync?account=globex", nil)
			req.Header.Set("Authorization", "Bearer "+adminToken)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		deadline := time.Now().Add(5 * time.Second)
		for org.fake.Counters().Requests == 0 || !strings.Contains(d.log(), "reloaded") {
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond) // the sync is waiting on Okta now
		took, err := d.stop()
		if err != nil || took > 10*time.Second {
			t.Errorf("SIGTERM during a sync: exit %v after %v", err, took)
		}
		t.Logf("exited %v after SIGTERM", took.Round(time.Millisecond))
	})

	// No secret from the config ever reaches the log.
	assertNoSecrets(t, "daemon log", d.log(), adminToken, hookSecret, org.fake.Token())
}

package e2e

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// call sends a request with bearer token (none when empty) and decodes the
// JSON answer into out.
func (d *daemon) call(method, path, token string, body any, out any) int {
	d.t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			d.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, "http://"+d.addr+path, rd)
	if err != nil {
		d.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// TestAccountsAsData: issue 14 through the real binary, real PostgreSQL,
// Redis, a Samba DC and the fake Okta org. An AD account and an Okta
// account are created through the API (secrets inline, stored sealed),
// their groups listed, bindings previewed then applied and served; a
// tenant token cannot touch the other account; deleting an account turns
// its users into unknown_user; dirsync and PostgreSQL restart with nothing
// lost; and a config reload that changes one file account runs no pass of
// the others.
func TestAccountsAsData(t *testing.T) {
	dc := samba.Get(t)
	org := newOktaOrg(t)
	rs := servertest.StartRedis(t)
	pg := servertest.StartPostgres(t)
	dsn := pg.CreateDatabase(t)
	dir := t.TempDir()
	admin := writeSecret(t, dir, "admin-token", adminToken)
	dsnFile := writeSecret(t, dir, "dsn", dsn)
	key := writeSecret(t, dir, "secret-key", hex.EncodeToString(bytes.Repeat([]byte{7}, 32)))
	ldif := `dn: CN=Staff,OU=G,DC=lab,DC=example
objectClass: group
cn: Staff
member: CN=ann,OU=P,DC=lab,DC=example

dn: CN=ann,OU=P,DC=lab,DC=example
objectClass: user
cn: ann
mail: ann@lab.example
userAccountControl: 512
`
	writeFile(t, filepath.Join(dir, "lab.ldif"), ldif)
	fileConfig := func(permission string) string {
		return fmt.Sprintf(`cache: {backend: redis, redis: {addrs: [%q], key_prefix: e2e-accounts}}
schedule: {full: "@every 1h", incremental: "@every 2s"}
console: {postgres_dsn_file: %s, secret_key_file: %s}
accounts_api: {allowed_networks: ["127.0.0.0/8"]}
accounts:
  - id: lab
    claimed_domains: [lab.example]
    directory: {type: ldif, ldif: {path: lab.ldif}}
    bindings: [{group: "CN=Staff,OU=G,DC=lab,DC=example", permission: %s}]
`, rs.Addr, dsnFile, key, permission)
	}
	cfg, addr := writeConfig(t, dir, fileConfig("basic"))
	body := mustRead(t, cfg)
	writeFile(t, cfg, strings.Replace(body, "api: {listen: ", "api: {admin_token_file: "+admin+", listen: ", 1))
	d := startDaemon(t, dir, cfg, addr)
	d.waitFor("ann@lab.example", 30*time.Second, func(x entitlement.Decision) bool { return x.Permission == entitlement.PermissionBasic })

	// Create the AD account: secrets inline, a binding to get started.
	corp := map[string]any{
		"name": "Corp", "claimed_domains": []string{servertest.ADEmailDomain},
		"directory": map[string]any{"type": "active_directory", "ldap": map[string]any{
			"urls": []string{dc.URL}, "allow_insecure": true, "bind_dn": servertest.SambaAdminUPN,
			"bind_password": servertest.SambaAdminPassword, "base_dn": servertest.SambaBaseDN,
			"user_base_dn": servertest.ADCorpDN, "group_base_dn": servertest.ADCorpDN}},
		"bindings": []map[string]string{{"group": servertest.ADGroupDN("G-Basic"), "permission": "basic"}},
	}
	var created map[string]any
	if code := d.call("PUT", "/v1/accounts/corp", adminToken, corp, &created); code != http.StatusCreated {
		t.Fatalf("create corp: HTTP %d %v", code, created)
	}
	if b, _ := json.Marshal(created); strings.Contains(string(b), servertest.SambaAdminPassword) || !strings.Contains(string(b), "directory.ldap.bind_password") {
		t.Errorf("create answer shows the secret, or does not say it is set: %s", b)
	}
	// A document with problems: every one, with the file's paths.
	bad := map[string]any{"claimed_domains": []string{"not a domain"}, "directory": map[string]any{"type": "ldap"},
		"bindings": []map[string]string{{"group": "g", "permission": "platinum"}}}
	var problems struct {
		Problems []struct{ Path, Message string }
	}
	if code := d.call("PUT", "/v1/accounts/broken", adminToken, bad, &problems); code != http.StatusBadRequest || len(problems.Problems) < 3 {
		t.Errorf("invalid account: HTTP %d %+v; want 400 with every problem", code, problems)
	}
	// Host files and a directory in our own network are refused.
	sneaky := map[string]any{"claimed_domains": []string{"sneaky.example"}, "directory": map[string]any{"type": "ldap",
		"ldap": map[string]any{"urls": []string{"ldaps://10.1.2.3:636"}, "bind_dn": "cn=x", "bind_password_file": "/etc/shadow", "base_dn": "dc=x"}},
		"bindings": []map[string]string{{"group": "cn=g", "permission": "pro"}}}
	if code := d.call("PUT", "/v1/accounts/sneaky", adminToken, sneaky, nil); code != http.StatusBadRequest {
		t.Errorf("an account naming a host file: HTTP %d; want 400", code)
	}
	delete(sneaky["directory"].(map[string]any)["ldap"].(map[string]any), "bind_password_file")
	sneaky["directory"].(map[string]any)["ldap"].(map[string]any)["bind_password"] = "x"
	var refusal map[string]string
	if code := d.call("PUT", "/v1/accounts/sneaky", adminToken, sneaky, &refusal); code != http.StatusBadRequest || !strings.Contains(refusal["error"], "10.1.2.3") {
		t.Errorf("an account reaching a private network: HTTP %d %v; want 400 naming the host", code, refusal)
	}
	if code := d.call("PUT", "/v1/accounts/lab", adminToken, corp, nil); code != http.StatusConflict {
		t.Errorf("replacing a file account: HTTP %d; want 409", code)
	}

	// The Okta account.
	globex := map[string]any{
		"claimed_domains": []string{"globex.example"},
		"directory":       map[string]any{"type": "okta", "okta": map[string]any{"org_url": org.fake.URL, "allow_http": true, "token": org.fake.Token()}},
		"bindings":        []map[string]string{{"group": "Chime Pro", "permission": "pro"}},
	}
	if code := d.call("PUT", "/v1/accounts/globex", adminToken, globex, nil); code != http.StatusCreated {
		t.Fatalf("create globex: HTTP %d", code)
	}
	d.waitFor("alice@globex.example", 30*time.Second, func(x entitlement.Decision) bool { return x.Permission == entitlement.PermissionPro })
	heidi := "heidi@" + servertest.ADEmailDomain
	alice := "alice@" + servertest.ADEmailDomain
	d.waitFor(heidi, 60*time.Second, func(x entitlement.Decision) bool { return x.Permission == entitlement.PermissionBasic })

	// The group picker, then a binding previewed and applied.
	var groups struct {
		Groups []struct {
			Ref               string `json:"ref"`
			Name              string `json:"name"`
			TransitiveMembers int    `json:"transitive_members"`
		} `json:"groups"`
	}
	if code := d.call("GET", "/v1/accounts/corp/groups?search=G-Pro", adminToken, nil, &groups); code != 200 || len(groups.Groups) != 1 || groups.Groups[0].TransitiveMembers < 5 {
		t.Fatalf("groups: HTTP %d %+v", code, groups)
	}
	bindings := []map[string]string{{"group": groups.Groups[0].Ref, "permission": "pro"}, {"group": servertest.ADGroupDN("G-Basic"), "permission": "basic"}}
	var preview struct {
		Reports []struct {
			Result string
			Diff   []struct{ Email, Change string }
		}
	}
	if code := d.call("PUT", "/v1/accounts/corp/bindings?dry_run=true", adminToken, bindings, &preview); code != 200 || len(preview.Reports) != 1 || preview.Reports[0].Result != "dry_run" {
		t.Fatalf("preview: HTTP %d %+v", code, preview)
	}
	gains := 0
	for _, e := range preview.Reports[0].Diff {
		if e.Email == alice && e.Change == "gain" {
			gains++
		}
	}
	if gains != 1 {
		t.Errorf("preview diff %+v lacks alice's gain", preview.Reports[0].Diff)
	}
	if x, _ := d.decision(alice); x.Allowed {
		t.Fatalf("the preview published: %+v", x)
	}
	start := time.Now()
	if code := d.call("PUT", "/v1/accounts/corp/bindings", adminToken, bindings, nil); code != 200 {
		t.Fatalf("apply bindings: HTTP %d", code)
	}
	took, _ := d.waitFor(alice, 10*time.Second, func(x entitlement.Decision) bool { return x.Permission == entitlement.PermissionPro })
	t.Logf("binding change live in %v", took.Round(time.Millisecond))
	if time.Since(start) > 5*time.Second {
		t.Errorf("the binding change took %v to be published; want within 5 s", time.Since(start))
	}

	// A tenant token of globex: its own account only.
	var tok struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	if code := d.call("POST", "/v1/accounts/globex/tokens", adminToken, map[string]string{"name": "globex admin"}, &tok); code != http.StatusCreated || !strings.HasPrefix(tok.Token, "dst_") {
		t.Fatalf("issue tenant token: HTTP %d %+v", code, tok)
	}
	for _, tt := range []struct {
		method, path string
		body         any
		want         int
	}{
		{"GET", "/v1/accounts/globex", nil, 200},
		{"GET", "/v1/accounts/globex/groups", nil, 200},
		{"GET", "/v1/accounts/corp", nil, 403},
		{"PUT", "/v1/accounts/corp/bindings", bindings, 403},
		{"DELETE", "/v1/accounts/corp", nil, 403},
		{"GET", "/v1/accounts", nil, 403},
		{"GET", "/v1/status", nil, 403},
		{"POST", "/v1/accounts/globex/tokens", map[string]string{}, 403},
	} {
		if code := d.call(tt.method, tt.path, tok.Token, tt.body, nil); code != tt.want {
			t.Errorf("tenant %s %s: HTTP %d; want %d", tt.method, tt.path, code, tt.want)
		}
	}
	// Deleting globex (its own tenant may): its users become unknown_user.
	var deleted struct {
		Removed int `json:"decisions_removed"`
	}
	if code := d.call("DELETE", "/v1/accounts/globex", tok.Token, nil, &deleted); code != 200 || deleted.Removed < 2 {
		t.Fatalf("delete globex: HTTP %d %+v", code, deleted)
	}
	d.waitFor("alice@globex.example", 10*time.Second, func(x entitlement.Decision) bool { return x.Reason == entitlement.ReasonUnknownUser })
	if code := d.call("GET", "/v1/accounts/globex", tok.Token, nil, nil); code != http.StatusUnauthorized {
		t.Errorf("the deleted account's token still works: HTTP %d", code)
	}

	// Restart dirsync and PostgreSQL: nothing lost.
	if _, err := d.stop(); err != nil {
		t.Fatal(err)
	}
	pg.Restart(t) // on a new port: the DSN follows
	name := dsn[strings.LastIndex(dsn, "/")+1:]
	name, _, _ = strings.Cut(name, "?")
	writeFile(t, dsnFile, pg.DatabaseDSN(name))
	d = startDaemon(t, dir, cfg, addr)
	var listed struct {
		Accounts []struct{ ID, Origin string }
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code := d.call("GET", "/v1/accounts", adminToken, nil, &listed); code == 200 && len(listed.Accounts) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the restarts: accounts %+v", listed)
		}
		time.Sleep(200 * time.Millisecond)
	}
	d.waitFor(alice, 60*time.Second, func(x entitlement.Decision) bool { return x.Permission == entitlement.PermissionPro })
	d.waitFor("alice@globex.example", 10*time.Second, func(x entitlement.Decision) bool { return x.Reason == entitlement.ReasonUnknownUser })

	// A reload that changes the file's lab account: lab's decision
	// changes, corp runs no full pass (no rebuild).
	type runs struct {
		Accounts []struct {
			Account string
			Runs    map[string]struct {
				StartedAt time.Time `json:"started_at"`
			}
		}
	}
	fullOf := func(id string) time.Time {
		var st runs
		d.call("GET", "/v1/status", adminToken, nil, &st)
		for _, a := range st.Accounts {
			if a.Account == id {
				return a.Runs["full"].StartedAt
			}
		}
		return time.Time{}
	}
	var before time.Time
	for deadline := time.Now().Add(60 * time.Second); before.IsZero(); {
		if before = fullOf("corp"); before.IsZero() && time.Now().After(deadline) {
			t.Fatal("corp never ran a full pass")
		}
		time.Sleep(200 * time.Millisecond)
	}
	writeFile(t, cfg, strings.Replace(mustRead(t, cfg), "permission: basic}]", "permission: pro}]", 1))
	var out map[string]any
	if code := d.call("POST", "/v1/reload", adminToken, nil, &out); code != 200 {
		t.Fatalf("reload: HTTP %d %v", code, out)
	}
	d.waitFor("ann@lab.example", 10*time.Second, func(x entitlement.Decision) bool { return x.Permission == entitlement.PermissionPro })
	time.Sleep(3 * time.Second)
	if after := fullOf("corp"); !after.Equal(before) {
		t.Errorf("the reload of lab ran a full pass of corp (at %v, was %v)", after, before)
	}
	if !strings.Contains(d.log(), "only the accounts that changed were applied") {
		t.Error("the reload rebuilt the daemon instead of applying lab alone")
	}
	// The CLI mirrors the API.
	cli := func(args ...string) string {
		cmd := exec.Command(binary, append([]string{"accounts"}, append(args, "--server", "http://"+addr)...)...)
		cmd.Env = append(os.Environ(), "DIRSYNC_ADMIN_TOKEN="+adminToken)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("dirsync accounts %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := cli("list"); !strings.Contains(out, "corp") || !strings.Contains(out, "api") || !strings.Contains(out, "lab") {
		t.Errorf("dirsync accounts list:\n%s", out)
	}
	if out := cli("groups", "--account", "corp", "--search", "G-Basic"); !strings.Contains(out, "G-Basic") {
		t.Errorf("dirsync accounts groups:\n%s", out)
	}
	bfile := filepath.Join(dir, "bindings.yaml")
	writeFile(t, bfile, "- {group: \""+servertest.ADGroupDN("G-Pro")+"\", permission: basic}\n")
	if out := cli("bindings", "--account", "corp", "-f", bfile, "--dry-run"); !strings.Contains(out, "downgrade") {
		t.Errorf("dirsync accounts bindings --dry-run shows no downgrade:\n%s", out)
	}
	assertNoSecrets(t, "daemon log", d.log(), servertest.SambaAdminPassword, org.fake.Token(), adminToken)
	if b, err := os.ReadFile(filepath.Join(dir, "config.yaml")); err == nil && strings.Contains(string(b), servertest.SambaAdminPassword) {
		t.Error("the secret reached a file")
	}
}

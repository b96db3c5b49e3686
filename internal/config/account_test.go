package config_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory/okta"
)

// running is a valid config an account document joins.
const running = `
cache: {backend: memory}
schedule: {incremental: "@every 30s"}
accounts:
  - id: acme
    claimed_domains: [acme.example]
    directory: {type: ldif, ldif: {path: /dev/null}}
    bindings: [{group: g, permission: pro}]
`

func problemList(t *testing.T, err error) []string {
	t.Helper()
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v; want *config.Error", err)
	}
	var out []string
	for _, p := range ce.Problems {
		out = append(out, p.Path+": "+p.Message) // lines differ between a file and a document
	}
	return out
}

// TestParseAccountMatchesParse: an accounts[] entry given on its own gets
// the problems Parse reports for it in a file, with the same paths: one
// decoding, defaults and validation for both.
func TestParseAccountMatchesParse(t *testing.T) {
	data, err := os.ReadFile("testdata/many-mistakes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = load("testdata/many-mistakes.yaml", getenv(nil))
	inFile := problemList(t, err)
	var file struct {
		Accounts []yaml.Node `yaml:"accounts"`
	}
	if err := yaml.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	base, err := parse([]byte(strings.ReplaceAll(running, "acme", "base")), "", "running.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	// accounts[0] and [1] of the file do not depend on the accounts before
	// them (accounts[2] repeats accounts[1]'s id and domain).
	for i := range 2 {
		entry, err := yaml.Marshal(&file.Accounts[i])
		if err != nil {
			t.Fatal(err)
		}
		prefix := fmt.Sprintf("accounts[%d]", i)
		var want []string
		for _, p := range inFile {
			if strings.HasPrefix(p, prefix+".") || strings.HasPrefix(p, prefix+":") {
				want = append(want, p)
			}
		}
		if len(want) < 2 {
			t.Fatalf("%s has %d problems in the file; the test needs several", prefix, len(want))
		}
		_, err = base.ParseAccount(entry, prefix, getenv(nil))
		if got := problemList(t, err); !slices.Equal(got, want) {
			t.Errorf("%s on its own:\n  %s\nin the file:\n  %s", prefix, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
	}
}

func TestParseAccountJSON(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "okta-token"), []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := parse([]byte(running), dir, "running.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	good := `{"id": "globex", "claimed_domains": ["Globex.Example"],
	  "directory": {"type": "okta", "okta": {"org_url": "https://globex.okta.com", "token_file": "okta-token"}},
	  "bindings": [{"group": "00g1", "permission": "pro"}]}`
	a, err := cfg.ParseAccount([]byte(good), "", getenv(nil))
	if err != nil {
		t.Fatalf("valid JSON account: %v", err)
	}
	s, ok := config.SectionOf[okta.Section](a.Directory)
	switch {
	case !ok:
		t.Fatal("no okta section")
	case s.PageSize != okta.DefaultPageSize || s.TokenFile != filepath.Join(dir, "okta-token") || s.EventHookHeader != okta.DefaultEventHookHeader:
		t.Errorf("okta defaults: %+v", s)
	case a.Schedule.Incremental != "@every 30s" || a.Type != config.AccountEnterprise || a.ClaimedDomains[0] != "globex.example":
		t.Errorf("account defaults: %+v", a)
	}
	if len(cfg.Accounts) != 1 {
		t.Errorf("ParseAccount changed the config: %d accounts", len(cfg.Accounts))
	}

	bad := `{"id": "acme", "claimed_domains": ["acme.example"], "console": {"auto_join_permision": "pro"},
	  "directory": {"type": "okta", "okta": {"org_url": "http://globex.okta.com", "page_size": "many"}},
	  "bindings": []}`
	_, err = cfg.ParseAccount([]byte(bad), "", getenv(nil))
	got := problemList(t, err)
	for _, want := range []string{
		`console.auto_join_permision: unknown field (did you mean "auto_join_permission"?)`,
		"directory.okta.page_size: wrong type",
		`id: "acme" is already used by accounts[0]`,
		`claimed_domains[0]: "acme.example" is already claimed by account "acme"`,
		"directory.okta.org_url: http:// sends the API token in clear",
		"directory.okta.token_file: required",
		"bindings: no bindings",
	} {
		if !slices.ContainsFunc(got, func(p string) bool { return strings.HasPrefix(p, want) }) {
			t.Errorf("no problem %q in:\n  %s", want, strings.Join(got, "\n  "))
		}
	}

	for _, doc := range []string{"", "{", "[1, 2]"} {
		if _, err := cfg.ParseAccount([]byte(doc), "", getenv(nil)); err == nil {
			t.Errorf("ParseAccount(%q) accepted it", doc)
		} else {
			problemList(t, err)
		}
	}
}

// TestFingerprint: accounts differing only in their directory section get
// different fingerprints; the same account read twice the same one.
func TestFingerprint(t *testing.T) {
	doc := func(url string) string {
		return `cache: {backend: memory}
accounts:
  - id: a
    claimed_domains: [a.example]
    directory: {type: ldap, ldap: {urls: ["` + url + `"], bind_dn: cn=x, bind_password_env: PW, base_dn: dc=a}}
    bindings: [{group: "cn=g", permission: pro}]
`
	}
	getenv := func(string) string { return "pw" }
	one, err := parse([]byte(doc("ldaps://one:636")), t.TempDir(), "a", getenv)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := parse([]byte("\n\n"+doc("ldaps://one:636")), t.TempDir(), "a", getenv)
	two, _ := parse([]byte(doc("ldaps://two:636")), t.TempDir(), "a", getenv)
	if one.Accounts[0].Fingerprint() != again.Accounts[0].Fingerprint() {
		t.Error("the same account (on other lines) has another fingerprint")
	}
	if one.Accounts[0].Fingerprint() == two.Accounts[0].Fingerprint() {
		t.Error("accounts with other LDAP URLs share a fingerprint")
	}
	if !one.SameOutside(two) {
		t.Error("configs differing only in an account are not the same outside them")
	}
}

// TestAccountsMayAllComeFromTheAPI: a config without accounts is valid only
// with a database (accounts then come from the accounts API).
func TestAccountsMayAllComeFromTheAPI(t *testing.T) {
	getenv := func(k string) string { return map[string]string{"DSN": "postgres://x"}[k] }
	if _, err := parse([]byte("cache: {backend: memory}\nconsole: {postgres_dsn_env: DSN}\n"), t.TempDir(), "api-only", getenv); err != nil {
		t.Errorf("no accounts with a database: %v", err)
	}
	_, err := parse([]byte("cache: {backend: memory}\n"), t.TempDir(), "nothing", getenv)
	if got := problemsOf(t, err)["accounts"]; !strings.Contains(got, "console.postgres_dsn_file") {
		t.Errorf("no accounts, no database: problem %q, want the fix named", got)
	}
}

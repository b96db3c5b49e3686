package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dirsync/dirsync/internal/config"
)

// TestEmptySecretsAreProblems: every secret of the schema, given as a file
// that is empty or only white space, or as an environment variable that
// is, is a problem naming the field. An empty admin token file used to
// pass validation and leave the admin API open.
func TestEmptySecretsAreProblems(t *testing.T) {
	const base = `
cache: {backend: redis, redis: {%s}}
api: {%s, %s}
console: {%s}
accounts:
  - id: ad
    claimed_domains: [ad.example]
    directory: {type: active_directory, ldap: {urls: ["ldaps://dc:636"], bind_dn: "CN=svc", base_dn: "DC=ad", %s}}
    bindings: [{group: "CN=g", permission: pro}]
  - id: okta
    claimed_domains: [okta.example]
    directory: {type: okta, okta: {org_url: "https://o.okta.com", %s, %s}}
    bindings: [{group: g, permission: pro}]
`
	fields := []string{"cache.redis.password", "api.admin_token", "api.read_token", "console.postgres_dsn",
		"accounts[0].directory.ldap.bind_password", "accounts[1].directory.okta.token", "accounts[1].directory.okta.event_hook_secret"}
	yamlKey := func(field string) string { return field[strings.LastIndex(field, ".")+1:] }
	good := []string{}
	dir := t.TempDir()
	for _, f := range fields {
		p := filepath.Join(dir, yamlKey(f)+".good")
		if err := os.WriteFile(p, []byte("s3cret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		good = append(good, yamlKey(f)+"_file: "+p)
	}
	doc := func(sections []string) string {
		args := make([]any, len(sections))
		for i, s := range sections {
			args[i] = s
		}
		return strings.ReplaceAll(fmt.Sprintf(base, args...), "\t", "  ")
	}
	if _, err := parse([]byte(doc(good)), dir, "good", nil); err != nil {
		t.Fatalf("the config with every secret set is not valid: %v", err)
	}
	for i, field := range fields {
		for name, content := range map[string]string{"empty": "", "white space": " \n\t \n"} {
			p := filepath.Join(dir, yamlKey(field)+".bad")
			if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			sections := append([]string(nil), good...)
			sections[i] = yamlKey(field) + "_file: " + p
			_, err := parse([]byte(doc(sections)), dir, "bad", nil)
			if err == nil || !strings.Contains(err.Error(), field+"_file: "+p+" is empty") {
				t.Errorf("%s file %s: got %v; want a problem naming %s_file", field, name, err, field)
			}
		}
		sections := append([]string(nil), good...)
		sections[i] = yamlKey(field) + "_env: BLANK"
		_, err := parse([]byte(doc(sections)), dir, "env", func(k string) string {
			if k == "BLANK" {
				return "  "
			}
			return ""
		})
		if err == nil || !strings.Contains(err.Error(), field+"_env: environment variable BLANK is empty") {
			t.Errorf("%s from a blank variable: got %v", field, err)
		}
	}
}

// TestReadSecretRefusesEmpty: a file emptied after validation is an error
// when the daemon reads it, never an empty secret.
func TestReadSecretRefusesEmpty(t *testing.T) {
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, err := config.ReadSecret(p, "", nil); err == nil {
		t.Errorf("config.ReadSecret of a blank file = %q, nil; want an error", v)
	}
	if v, err := config.ReadSecret("", "", nil); v != "" || err != nil {
		t.Errorf("config.ReadSecret with nothing configured = %q, %v; want \"\", nil", v, err)
	}
}

package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory/sources"
)

// TestEmptySecretsAreProblems: every secret of the schema, given as a file
// that is empty or only white space, or as an environment variable that
// is, is a problem naming the field. An empty admin token file used to
// pass validation and leave the admin API open.
func TestEmptySecretsAreProblems(t *testing.T) {
	const base = `
cache: {backend: redis, redis: {%s}}
api: {%s, %s}
console: {%s, %s}
notify: {webhooks: [{url: "https://hooks.example/dirsync", %s}]}
accounts:
  - id: ad
    claimed_domains: [ad.example]
    directory: {type: active_directory, ldap: {urls: ["ldaps://dc:636"], bind_dn: "CN=svc", base_dn: "DC=ad", %s}}
    bindings: [{group: "CN=g", permission: pro}]
  - id: okta
    claimed_domains: [okta.example]
    directory: {type: okta, okta: {org_url: "https://o.okta.com", %s, %s}}
    bindings: [{group: g, permission: pro}]
  - id: scim
    claimed_domains: [scim.example]
    directory: {type: scim, scim: {%s}}
    bindings: [{group: g, permission: pro}]
`
	fields := []string{"cache.redis.password", "api.admin_token", "api.read_token", "console.postgres_dsn", "console.secret_key", "notify.webhooks[0].secret",
		"accounts[0].directory.ldap.bind_password", "accounts[1].directory.okta.token", "accounts[1].directory.okta.event_hook_secret",
		"accounts[2].directory.scim.token"}
	var listed []string
	for _, f := range fields {
		listed = append(listed, regexp.MustCompile(`\[\d+\]`).ReplaceAllString(f, "[]"))
	}
	slices.Sort(listed)
	if schema := secretFields(); !slices.Equal(listed, schema) {
		t.Fatalf("this test covers the secrets %v; the schema (with every source kind's section) has %v: cover them all", listed, schema)
	}
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

// secretFields lists every secret of the schema, config.Config's and the
// source kinds' sections': each pair of fields <name>_file and <name>_env,
// by path ("accounts[].directory.okta.token"), sorted.
func secretFields() []string {
	var out []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		names := map[string]bool{}
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			names[name] = true
		}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			switch {
			case name == "" || name == "-":
			case ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Time]():
				walk(ft, prefix+name+".")
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				walk(ft.Elem(), prefix+name+"[].")
			case strings.HasSuffix(name, "_file") && names[strings.TrimSuffix(name, "_file")+"_env"]:
				out = append(out, prefix+strings.TrimSuffix(name, "_file"))
			}
		}
	}
	walk(reflect.TypeFor[config.Config](), "")
	for _, k := range sources.Config() {
		walk(k.SectionType(), "accounts[].directory."+k.Key()+".")
	}
	slices.Sort(out)
	return out
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

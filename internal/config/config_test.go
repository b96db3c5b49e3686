package config_test

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory/ldapdir"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func getenv(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestLoadGood(t *testing.T) {
	cfg, err := load("testdata/good.yaml", getenv(map[string]string{"GLOBEX_OKTA_TOKEN": "tok"}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	acme := cfg.Accounts[0]
	if got := acme.ClaimedDomains[1]; got != "corp.acme.example" {
		t.Errorf("claimed domain not lower-cased: %q", got)
	}
	l, ok := config.SectionOf[ldapdir.Section](acme.Directory)
	if !ok {
		t.Fatalf("no ldap section in %+v", acme.Directory)
	}
	if l.PageSize != ldapdir.DefaultPageSize || l.Timeout != 10*time.Second || l.UserBaseDN != l.BaseDN {
		t.Errorf("ldap defaults: page %d timeout %v user_base_dn %q", l.PageSize, l.Timeout, l.UserBaseDN)
	}
	if l.MaxEntries != ldapdir.DefaultMaxEntries || l.MaxPages != ldapdir.DefaultMaxPages {
		t.Errorf("ldap caps default to %d entries, %d pages", l.MaxEntries, l.MaxPages)
	}
	if strings.Join(l.EmailAttributes, ",") != "mail,userPrincipalName" {
		t.Errorf("email attributes default = %v", l.EmailAttributes)
	}
	if !filepath.IsAbs(l.BindPasswordFile) {
		t.Errorf("secret path not resolved against the config dir: %q", l.BindPasswordFile)
	}
	if *acme.Safeguard.MaxLostAccessPercent != 10 || *acme.Safeguard.MaxLostAccessUsers != config.DefaultMaxLostAccessUsers {
		t.Errorf("safeguard = %v / %v", *acme.Safeguard.MaxLostAccessPercent, *acme.Safeguard.MaxLostAccessUsers)
	}
	if acme.Schedule.Incremental != "@every 5s" || cfg.Accounts[1].Type != "enterprise" {
		t.Errorf("inherited schedule %q, type %q", acme.Schedule.Incremental, cfg.Accounts[1].Type)
	}
	secret, err := config.ReadSecret(l.BindPasswordFile, "", nil)
	if err != nil || secret != "s3cret" {
		t.Errorf("config.ReadSecret = %q, %v", secret, err)
	}
}

// TestBadConfigs compares every reported problem with a golden file.
func TestBadConfigs(t *testing.T) {
	for _, name := range []string{"three-mistakes", "many-mistakes"} {
		t.Run(name, func(t *testing.T) {
			_, err := load("testdata/"+name+".yaml", getenv(nil))
			var cerr *config.Error
			if !errors.As(err, &cerr) {
				t.Fatalf("Load error = %v; want *config.Error", err)
			}
			var lines []string
			for _, p := range cerr.Problems {
				lines = append(lines, p.String())
			}
			got := strings.Join(lines, "\n") + "\n"
			golden := "testdata/" + name + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("problems:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestSecretsNeverInErrors(t *testing.T) {
	dir := t.TempDir()
	yml := `cache: {redis: {password_env: REDIS_PW, addrs: ["nohostport"]}}
api: {admin_token_env: TOKEN}
accounts:
  - id: a
    claimed_domains: [a.example]
    directory: {type: okta, okta: {org_url: "ftp://x", token_env: OKTA}}
    bindings: [{group: g, permission: gold}]
`
	_, err := parse([]byte(yml), dir, "inline", getenv(map[string]string{"REDIS_PW": "hunter2-redis", "TOKEN": "hunter2-token", "OKTA": "hunter2-okta"}))
	if err == nil {
		t.Fatal("want errors")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error leaks a secret: %v", err)
	}
}

func TestParseEdgeCases(t *testing.T) {
	tests := []struct {
		name string
		give string
		want string
	}{
		{"empty", "", "empty config"},
		{"not yaml", "accounts: [", "not valid YAML"},
		{"wrong type", "accounts: 5\n", "accounts (line 1): wrong type"},
		{"duration", "accounts:\n  - id: a\n    directory: {ldap: {timeout: soon}}\n", "accounts[0].directory.ldap.timeout (line 3)"},
		{"camelCase", "api: {adminTokenFile: x}\n", `did you mean "admin_token_file"`},
		{"allowed host with port", "api: {allowed_hosts: [\"dirsync.internal:8080\"]}\n", `api.allowed_hosts[0]: "dirsync.internal:8080" is not a host name`},
		{"allowed host with scheme", "api: {allowed_hosts: [\"http://dirsync.internal\"]}\n", `api.allowed_hosts[0]`},
		{"open read beyond loopback", "api: {listen: \"10.0.0.5:8080\", admin_token_env: T}\n", `api.read_token_file: required because api.listen "10.0.0.5:8080" is not a loopback address`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse([]byte(tt.give), t.TempDir(), "inline", getenv(nil))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v; want it to contain %q", err, tt.want)
			}
		})
	}
}

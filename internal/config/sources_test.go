package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory/sources"
)

// hrisSection is a source kind config has never heard of (an HR system
// feed, say): the tests below prove that a kind's section,
// defaults and validation plug into decoding and validation through the
// table alone.
type hrisSection struct {
	TokenFile string `yaml:"token_file"`
	TokenEnv  string `yaml:"token_env"`
	Realm     string `yaml:"realm"`
}

func hrisKind() config.SourceKind {
	return config.NewSourceKind(config.Section[hrisSection]{
		Types: []string{"hris"},
		Key:   "hris",
		Defaults: func(s *hrisSection, resolve func(string) string) {
			s.TokenFile = resolve(s.TokenFile)
			if s.Realm == "" {
				s.Realm = "default-realm"
			}
		},
		Validate: func(s *hrisSection, c *config.Check) {
			c.Secret("token", s.TokenFile, s.TokenEnv, true)
			if strings.Contains(s.Realm, " ") {
				c.Add("realm", "%q has a space", s.Realm)
			}
		},
	})
}

const hrisAccount = `
cache: {backend: memory}
accounts:
  - id: crm
    claimed_domains: [crm.example]
    directory:
      type: hris
      hris: %s
    bindings: [{group: g, permission: pro}]
`

// problemsOf returns the problems of a *config.Error by path (several at
// one path on separate lines).
func problemsOf(t *testing.T, err error) map[string]string {
	t.Helper()
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v; want *config.Error", err)
	}
	out := map[string]string{}
	for _, p := range ce.Problems {
		if out[p.Path] != "" {
			out[p.Path] += "\n"
		}
		out[p.Path] += p.String()
	}
	return out
}

func TestNewSourceKindNeedsNoConfigChange(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hris-token"), []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kinds := append(sources.Config(), hrisKind())
	doc := func(section string) []byte { return []byte(strings.Replace(hrisAccount, "%s", section, 1)) }

	cfg, err := config.Parse(doc("{token_file: hris-token}"), dir, "hris.yaml", kinds, nil)
	if err != nil {
		t.Fatalf("valid hris account: %v", err)
	}
	s, ok := config.SectionOf[hrisSection](cfg.Accounts[0].Directory)
	if !ok {
		t.Fatal("no hris section after Parse")
	}
	if s.TokenFile != filepath.Join(dir, "hris-token") || s.Realm != "default-realm" {
		t.Errorf("defaults not applied: %+v", s)
	}

	for _, tt := range []struct {
		name, section, path, want string
	}{
		{"unknown field", "{token_fil: x}", "accounts[0].directory.hris.token_fil", `(line 8): unknown field (did you mean "token_file"?); known fields here: realm, token_env, token_file`},
		{"wrong type", "{token_file: [a, b]}", "accounts[0].directory.hris.token_file", "(line 8): wrong type"},
		{"validation", "{realm: a b}", "accounts[0].directory.hris.token_file", "required: a file holding the secret"},
		{"validation of a field", "{token_file: hris-token, realm: a b}", "accounts[0].directory.hris.realm", `"a b" has a space`},
		{"secret empty", "{token_env: EMPTY}", "accounts[0].directory.hris.token_env", "environment variable EMPTY is empty"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse(doc(tt.section), dir, "hris.yaml", kinds, func(string) string { return " " })
			got := problemsOf(t, err)
			if !strings.Contains(got[tt.path], tt.want) {
				t.Errorf("problem at %s = %q; want it to contain %q (all: %v)", tt.path, got[tt.path], tt.want, got)
			}
		})
	}

	// Without the kind in the table, the type and its section are unknown.
	_, err = config.Parse(doc("{token_file: hris-token}"), dir, "hris.yaml", sources.Config(), nil)
	got := problemsOf(t, err)
	if want := `"hris" is not a directory type; use active_directory, ldap, okta, ldif, scim or console`; !strings.Contains(got["accounts[0].directory.type"], want) {
		t.Errorf("type problem %q; want %q", got["accounts[0].directory.type"], want)
	}
	if want := "unknown field; known fields here: ldap, ldif, okta, scim, type"; !strings.Contains(got["accounts[0].directory.hris"], want) {
		t.Errorf("section problem %q; want %q", got["accounts[0].directory.hris"], want)
	}
}

// TestSectionOfAnotherType: a section that does not belong to the
// account's directory type is decoded as strictly as its own (unknown
// fields and wrong types are problems) and otherwise ignored, as before
// the source kinds had one registration each.
func TestSectionOfAnotherType(t *testing.T) {
	const base = `
cache: {backend: memory}
accounts:
  - id: a
    claimed_domains: [a.example]
    directory: {type: ldif, ldif: {path: /dev/null}, okta: %s}
    bindings: [{group: g, permission: pro}]
`
	if _, err := parse([]byte(strings.Replace(base, "%s", `{org_url: "ftp://not-validated", page_size: 5000}`, 1)), t.TempDir(), "c.yaml", nil); err != nil {
		t.Errorf("a well-formed okta section beside type ldif: %v", err)
	}
	_, err := parse([]byte(strings.Replace(base, "%s", `{org_urll: x, request_timeout: soon}`, 1)), t.TempDir(), "c.yaml", nil)
	got := problemsOf(t, err)
	if !strings.Contains(got["accounts[0].directory.okta.org_urll"], `unknown field (did you mean "org_url"?)`) {
		t.Errorf("unknown field in an unused section: %v", got)
	}
	if !strings.Contains(got["accounts[0].directory.okta.request_timeout"], "wrong type") {
		t.Errorf("wrong type in an unused section: %v", got)
	}
	if len(got) != 2 {
		t.Errorf("want exactly the two problems, got %v", got)
	}
}

// TestDirectoryTypeProblems: a missing or unknown directory type, or a
// directory that is not a mapping, is a problem with its path.
func TestDirectoryTypeProblems(t *testing.T) {
	for _, tt := range []struct{ directory, path, want string }{
		{"{ldif: {path: /dev/null}}", "accounts[0].directory.type", "required: active_directory, ldap, okta, ldif, scim or console"},
		{"{type: ldiff}", "accounts[0].directory.type", `"ldiff" is not a directory type`},
		{"ldif", "accounts[0].directory", "wrong type: cannot use text `ldif` into config.Directory"},
		{"{type: [ldif]}", "accounts[0].directory.type", "wrong type"},
	} {
		doc := "cache: {backend: memory}\naccounts:\n  - id: a\n    claimed_domains: [a.example]\n    directory: " + tt.directory + "\n    bindings: [{group: g, permission: pro}]\n"
		_, err := parse([]byte(doc), t.TempDir(), "c.yaml", nil)
		if got := problemsOf(t, err); !strings.Contains(got[tt.path], tt.want) {
			t.Errorf("directory %s: problem at %s = %q; want %q (all: %v)", tt.directory, tt.path, got[tt.path], tt.want, got)
		}
	}
}

package config_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/config"
)

// TestSCIMAccounts: a scim directory needs the PostgreSQL DSN (its kind
// keeps its data there), takes an optional token (never an empty one) and
// gets a one-hour safeguard window by default; other kinds keep per-pass
// limits.
func TestSCIMAccounts(t *testing.T) {
	const good = `
cache: {backend: memory}
console: {postgres_dsn_env: PG_DSN}
accounts:
  - id: acme
    claimed_domains: [acme.example]
    directory: {type: scim, scim: {token_env: ACME_SCIM}}
    bindings: [{group: Pro, permission: pro}]
  - id: globex
    claimed_domains: [globex.example]
    directory: {type: scim}
    safeguard: {window: 10m}
    bindings: [{group: Pro, permission: pro}]
  - id: initech
    claimed_domains: [initech.example]
    directory: {type: ldif, ldif: {path: /dev/null}}
    bindings: [{group: g, permission: pro}]
`
	cfg, err := parse([]byte(good), "", "c.yaml", func(string) string { return "x" })
	if err != nil {
		t.Fatalf("valid scim config: %v", err)
	}
	for i, want := range []time.Duration{time.Hour, 10 * time.Minute, 0} {
		if got := *cfg.Accounts[i].Safeguard.Window; got != want {
			t.Errorf("accounts[%d].safeguard.window = %v, want %v", i, got, want)
		}
	}
	const bad = `
cache: {backend: memory}
accounts:
  - id: acme
    claimed_domains: [acme.example]
    directory: {type: scim, scim: {token_env: EMPTY, tokn_file: x}}
    safeguard: {window: -1s}
    bindings: [{group: Pro, permission: pro}]
`
	_, err = parse([]byte(bad), "", "c.yaml", func(string) string { return " " })
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *Error, got %v", err)
	}
	got := map[string]string{}
	for _, p := range ce.Problems {
		got[p.Path] = p.Message
	}
	for path, want := range map[string]string{
		"console.postgres_dsn_file":            "required",
		"accounts[0].directory.scim.token_env": "empty",
		"accounts[0].directory.scim.tokn_file": "did you mean",
		"accounts[0].safeguard.window":         "negative",
	} {
		if !strings.Contains(got[path], want) {
			t.Errorf("%s: %q; want it to say %q (all: %v)", path, got[path], want, got)
		}
	}
}

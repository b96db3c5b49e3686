package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/dirsync/dirsync/internal/config"
)

func TestConsoleAccounts(t *testing.T) {
	const base = `
cache: {backend: memory}
console: {postgres_dsn_env: PG_DSN}
accounts:
  - id: crew
    type: team
    directory: {type: console}
  - id: globex
    claimed_domains: [globex.example]
    directory: {type: console}
`
	cfg, err := parse([]byte(base), "", "c.yaml", func(string) string { return "postgres://x" })
	if err != nil {
		t.Fatalf("valid console config: %v", err)
	}
	if got := cfg.Accounts[1].Console.AutoJoinPermission; got != "basic" {
		t.Errorf("auto_join_permission default = %q, want basic", got)
	}
	if cfg.Console.MaxConns != config.DefaultConsoleMaxConns {
		t.Errorf("max_conns default = %d", cfg.Console.MaxConns)
	}

	bad := `
cache: {backend: memory}
accounts:
  - id: crew
    type: team
    directory: {type: console}
    console: {auto_join_permission: pro}
    bindings: [{group: g, permission: pro}]
  - id: globex
    directory: {type: console}
    console: {auto_join_permission: gold}
  - id: acme
    claimed_domains: [acme.example]
    directory: {type: ldif, ldif: {path: /dev/null}}
    console: {auto_join_permission: pro}
    bindings: [{group: g, permission: pro}]
`
	_, err = parse([]byte(bad), "", "c.yaml", func(string) string { return "" })
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *config.Error, got %v", err)
	}
	got := map[string]string{}
	for _, p := range ce.Problems {
		got[p.Path] = p.Message
	}
	for path, want := range map[string]string{
		"console.postgres_dsn_file":                "required",
		"accounts[0].bindings":                     "remove bindings",
		"accounts[0].console.auto_join_permission": "invitation only",
		"accounts[1].claimed_domains":              "required",
		"accounts[1].console.auto_join_permission": `"gold" is not a permission`,
		"accounts[2].console.auto_join_permission": "only for accounts with directory.type console",
	} {
		if !strings.Contains(got[path], want) {
			t.Errorf("%s: %q, want it to mention %q", path, got[path], want)
		}
	}
	if _, ok := got["accounts[0].claimed_domains"]; ok {
		t.Error("a console team account needs no claimed_domains")
	}
}

package config_test

import (
	"strings"
	"testing"
)

// FuzzParse: any input gives a config or a *config.Error, never a panic, and a
// secret's value never appears in an error.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"accounts: [{id: a, claimed_domains: [a.example], directory: {type: ldif, ldif: {path: x}}, bindings: [{group: g, permission: pro}]}]",
		"cache: {backend: redis, redis: {addrs: [\"h:1\"], password_env: PW}}\n",
		"api: {listen: \"0.0.0.0:1\"}\nschedule: {full: \"@every 1s\"}\n",
		"accounts:\n  - directory: {ldap: {timeout: x, urls: [\"ldap://h\"]}}\n",
		"&a [*a]", "{",
		// robfig/cron panics on a bare time zone prefix.
		"schedule: {incremental: \"TZ=UTC\"}\n",
		"schedule: {full: \"CRON_TZ=\"}\n",
		"accounts: [{id: a, schedule: {incremental: \"TZ=Europe/Paris\"}}]\n",
		"schedule: {full: \"0 0 30 2 *\", incremental: \"@every -1s\"}\n",
		"schedule: {incremental: \"TZ=UTC\\t@daily\", full: \"CRON_TZ=Europe/Paris\\t0\\t3\\t*\\t*\\t*\"}\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		cfg, err := parse([]byte(in), "/nonexistent-fuzz-dir", "fuzz", func(string) string { return "fuzz-secret-value" })
		if (cfg == nil) == (err == nil) {
			t.Fatalf("Parse returned cfg=%v err=%v", cfg != nil, err)
		}
		if err != nil && strings.Contains(err.Error(), "fuzz-secret-value") && !strings.Contains(in, "fuzz-secret-value") {
			t.Fatalf("error leaks a secret: %v", err)
		}
	})
}

package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNotifyValidation(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "key"), []byte("k\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := "cache: {backend: memory}\naccounts: [{id: a, claimed_domains: [a.example], directory: {type: console}}]\nconsole: {postgres_dsn_env: DSN}\n"
	getenv := func(k string) string { return map[string]string{"DSN": "postgres://x"}[k] }
	good := base + "notify: {webhooks: [{url: \"https://hooks.example/x\", secret_file: key}]}\n"
	cfg, err := parse([]byte(good), dir, "good", getenv)
	if err != nil {
		t.Fatalf("good: %v", err)
	}
	w := cfg.Notify.Webhooks[0]
	if len(w.Events) != 4 || w.Format != "json" || w.SyncFailedAfter != 3 || w.Timeout == 0 || !filepath.IsAbs(w.SecretFile) {
		t.Errorf("defaults: %+v", w)
	}
	bad := base + "notify: {webhooks: [{url: \"ftp://x\", events: [hold, fire], format: teams, sync_failed_after: -1}]}\n"
	_, err = parse([]byte(bad), dir, "bad", getenv)
	for _, want := range []string{
		"notify.webhooks[0].url", "notify.webhooks[0].secret_file: required", "notify.webhooks[0].events[1]",
		"notify.webhooks[0].format", "notify.webhooks[0].sync_failed_after",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("problems %v lack %q", err, want)
		}
	}
}

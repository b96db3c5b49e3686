package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReloadRefusesEmptiedTokenFile: an admin token file emptied while the
// daemon runs is a config error at reload (HTTP 400 naming the field),
// and the daemon keeps requiring the token it started with: an emptied
// secret never becomes "no auth".
func TestReloadRefusesEmptiedTokenFile(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tokenFile, []byte("admin-secret-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, addr := quickStart(t, "\n  admin_token_file: "+tokenFile)
	d := startRun(t, cfg, addr, map[string]string{"DIRSYNC_RUNTIME_DIR": filepath.Join(t.TempDir(), "run")})
	waitListening(t, d)
	auth := map[string]string{"Authorization": "Bearer admin-secret-1"}
	if code, body := d.call(t, "POST", "/v1/sync?account=acme&dry_run=true", "", auth); code != http.StatusOK {
		t.Fatalf("sync with the admin token: HTTP %d %s", code, body)
	}
	for _, content := range []string{"", " \n\t\n"} {
		if err := os.WriteFile(tokenFile, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if code, body := d.call(t, "POST", "/v1/reload", "", auth); code != http.StatusBadRequest || !strings.Contains(body, "api.admin_token_file") {
			t.Errorf("reload with the token file holding %q: HTTP %d %s", content, code, body)
		}
		if code, body := d.call(t, "POST", "/v1/sync?account=acme&dry_run=true", "", nil); code != http.StatusUnauthorized {
			t.Errorf("sync without a token after the reload was refused: HTTP %d %s", code, body)
		}
		if code, body := d.call(t, "POST", "/v1/sync?account=acme&dry_run=true", "", auth); code != http.StatusOK {
			t.Errorf("sync with the running token after the reload was refused: HTTP %d %s", code, body)
		}
	}
}

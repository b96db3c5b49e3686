package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestValidateRefusesPanickingSchedules: cron specs robfig/cron panics on
// (a time zone prefix with no space after it: "slice bounds out of
// range") are config problems naming the field, exit 2, for validate and
// at start; they used to crash `dirsync validate`.
func TestValidateRefusesPanickingSchedules(t *testing.T) {
	ldif, err := filepath.Abs("../../deployments/local/directory.ldif")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ top, account, path string }{
		{`incremental: "TZ=UTC"`, "", "schedule.incremental"},
		{`full: "CRON_TZ="`, "", "schedule.full"},
		{"", `incremental: "TZ=Europe/Paris"`, "accounts[0].schedule.incremental"},
		{"", `full: "TZ=UTC\t@daily"`, "accounts[0].schedule.full"},
	} {
		cfg := filepath.Join(t.TempDir(), "config.yaml")
		body := fmt.Sprintf(`cache: {backend: memory}
schedule: {%s}
accounts:
  - id: acme
    claimed_domains: [acme.example]
    schedule: {%s}
    directory: {type: ldif, ldif: {path: %q}}
    bindings: [{group: "CN=Chime Pro,OU=Groups,DC=acme,DC=example", permission: pro}]
`, tt.top, tt.account, ldif)
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, errOut := runCLI(t, context.Background(), nil, "validate", "--config", cfg)
		if code != exitUsage || !strings.Contains(errOut, tt.path+": ") || !strings.Contains(errOut, "is not a cron spec") {
			t.Errorf("%s: validate exit %d\n%s", tt.path, code, errOut)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		code, _, errOut = runCLI(t, ctx, nil, "run", "--config", cfg)
		cancel()
		if code != exitUsage || !strings.Contains(errOut, tt.path+": ") {
			t.Errorf("%s: run exit %d (want %d, refused at start)\n%s", tt.path, code, exitUsage, errOut)
		}
	}
}

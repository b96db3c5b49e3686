package config_test

import (
	"strings"
	"testing"

	"github.com/dirsync/dirsync/internal/config"
)

func TestParseSchedule(t *testing.T) {
	for _, tt := range []struct {
		spec    string
		wantErr string // "" means valid
	}{
		{"@every 5s", ""},
		{"0 * * * *", ""},
		{"CRON_TZ=Europe/Paris 0 3 * * *", ""},
		{"TZ=UTC @every 1h", ""},
		// robfig/cron panics on these (slice bounds out of range).
		{"TZ=UTC", "cannot parse"},
		{"CRON_TZ=", "cannot parse"},
		{"TZ=", "cannot parse"},
		{"CRON_TZ=Europe/Paris", "cannot parse"},
		// Found by fuzzing robfig/cron: any time zone prefix with no space
		// after it panics, whatever separates the fields.
		{"TZ=UTC\t@daily", "cannot parse"},
		{"CRON_TZ=UTC\t0\t3\t*\t*\t*", "cannot parse"},
		// Accepted by robfig/cron, but never or not as written.
		{"0 0 30 2 *", "never fires"},
		{"@every -1s", "positive duration"},
		{"@every 0s", "positive duration"},
		{"every five seconds", "expected exactly 5 fields"},
		{"", "empty spec"},
	} {
		_, err := config.ParseSchedule(tt.spec)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("config.ParseSchedule(%q) = %v; want it valid", tt.spec, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("config.ParseSchedule(%q) = %v; want an error containing %q", tt.spec, err, tt.wantErr)
		}
	}
}

// TestPanickingSpecIsAProblem: a spec that panics inside robfig/cron is
// reported with its path, like any other mistake (it used to crash
// `dirsync validate` and a reloading daemon).
func TestPanickingSpecIsAProblem(t *testing.T) {
	in := `
cache: {backend: memory}
schedule: {incremental: "TZ=UTC"}
accounts:
  - id: a
    claimed_domains: [a.example]
    schedule: {full: "CRON_TZ="}
    directory: {type: ldif, ldif: {path: x.ldif}}
    bindings: [{group: g, permission: pro}]
`
	_, err := parse([]byte(in), t.TempDir(), "test", nil)
	if err == nil {
		t.Fatal("Parse accepted panicking cron specs")
	}
	for _, want := range []string{"schedule.incremental: \"TZ=UTC\" is not a cron spec", "accounts[0].schedule.full: \"CRON_TZ=\" is not a cron spec"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("problems %v\ndo not contain %q", err, want)
		}
	}
}

package accesscache_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestSignInClientDependencies fails if the sign-in client (this package
// and the decision types) ever links directory, database, logging or
// metrics code: the sign-in service imports it on its hot path and must
// not inherit dirsync's dependencies (in the style of Tailscale's deptest).
func TestSignInClientDependencies(t *testing.T) {
	forbidden := map[string]string{
		"github.com/go-ldap/":                             "LDAP",
		"github.com/go-asn1-ber/":                         "LDAP",
		"github.com/okta/":                                "Okta",
		"github.com/jackc/":                               "PostgreSQL",
		"go.uber.org/zap":                                 "zap logging",
		"github.com/prometheus/":                          "Prometheus",
		"github.com/robfig/cron":                          "scheduling",
		"gopkg.in/yaml":                                   "config parsing",
		"go.yaml.in/yaml":                                 "config parsing",
		"github.com/dirsync/dirsync/internal/directory":   "directory code",
		"github.com/dirsync/dirsync/internal/sync":        "sync code",
		"github.com/dirsync/dirsync/internal/config":      "config code",
		"github.com/dirsync/dirsync/internal/testsupport": "test harnesses",
	}
	for _, pkg := range []string{".", "../../entitlement"} {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 10 {
			t.Fatalf("go list -deps %s listed only %v", pkg, deps)
		}
		for _, dep := range deps {
			for prefix, what := range forbidden {
				if strings.HasPrefix(dep, prefix) {
					t.Errorf("%s depends on %s (%s): the sign-in client must not", pkg, dep, what)
				}
			}
		}
	}
}

package deploytest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

const (
	helmChart = "deployments/helm/dirsync"
	// helmModule is helm, pinned, built by the go command on first use (no
	// install step; the first build takes a minute or two).
	helmModule = "helm.sh/helm/v4/cmd/helm@v4.3.2"
)

// helmDir is where helmBuild installed helm (TestMain removes it).
var helmDir string

// helmBuild installs helm into a temporary directory once per test binary.
var helmBuild = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "dirsync-helm")
	if err != nil {
		return "", err
	}
	helmDir = dir
	cmd := exec.Command("go", "install", helmModule)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s: %w\n%s", helmModule, err, out)
	}
	return filepath.Join(dir, "helm"), nil
})

// helm runs the pinned helm with args and returns its stdout.
func helm(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := helmBuild()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s\n%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// helmFails runs helm expecting it to fail, and returns its error output.
func helmFails(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := helmBuild()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("helm %s succeeded; want an error", strings.Join(args, " "))
	}
	return string(out)
}

// TestHelmChart lints the chart (strict) with its default values and every
// values file under ci/, renders each with `helm template` and puts the
// result through the same checks as the plain manifests: the config
// validates with the real config package, the args are the binary's, the
// ports, probes, selectors, disruption budget, Secret and ServiceMonitor
// agree. Bad values fail the render with a message naming the value.
func TestHelmChart(t *testing.T) {
	cases := []struct {
		values string
		want   manifestWant
	}{
		{"", manifestWant{replicas: 2, secretName: "dirsync-secrets"}},
		{"ci/ha-values.yaml", manifestWant{replicas: 3, secretName: "prod-dirsync", serviceMonitor: true}},
		{"ci/create-secret-values.yaml", manifestWant{replicas: 1, secretName: "rel-dirsync-secrets"}},
	}
	files, err := filepath.Glob(filepath.Join(repoRoot, helmChart, "ci", "*-values.yaml"))
	if err != nil || len(files) != len(cases)-1 {
		t.Fatalf("ci values files %v: every one needs a case here", files)
	}
	for _, c := range cases {
		name := c.values
		if name == "" {
			name = "default values"
		}
		t.Run(name, func(t *testing.T) {
			args := []string{helmChart}
			if c.values != "" {
				args = append(args, "-f", filepath.Join(helmChart, c.values))
			}
			helm(t, append([]string{"lint", "--strict"}, args...)...)
			out := helm(t, append([]string{"template", "rel"}, args...)...)
			checkManifests(t, sortObjects(t, decodeObjects(t, "helm template "+name, []byte(out))), c.want)
		})
	}

	for _, c := range []struct{ set, want string }{
		{"secrets.create=true", "secrets.values.admin-token is required"},
		{"secrets.existingSecret=", "secrets.existingSecret"},
		{"podDisruptionBudget.minAvailable=2", "podDisruptionBudget.minAvailable must be below replicaCount"},
		{"config.cache.backend=memory", "config.cache"},
	} {
		if out := helmFails(t, "template", "rel", helmChart, "--set", c.set); !strings.Contains(out, c.want) {
			t.Errorf("--set %s: error %q does not say %q", c.set, out, c.want)
		}
	}
}

package deploytest

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory/sources"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

const (
	unitPath          = "deployments/systemd/dirsync.service"
	unitConfigPath    = "deployments/systemd/config.yaml"
	unitCredentialDir = "/run/credentials/dirsync.service/"
	unitBinary        = "/usr/local/bin/dirsync"
)

// unit is a parsed systemd unit file: section → key → values in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.HasSuffix(line, `\`) {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", path, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func (u unit) one(t *testing.T, section, key string) string {
	t.Helper()
	v := u[section][key]
	if len(v) != 1 {
		t.Fatalf("[%s] %s: want exactly one value, have %q", section, key, v)
	}
	return v[0]
}

// TestSystemdUnit checks the unit's contract: a dedicated user, the real
// binary's subcommands and flags, reload by SIGHUP after validation,
// restart on failure, hardening, and secrets through LoadCredential that
// match the example config exactly.
func TestSystemdUnit(t *testing.T) {
	u := parseUnit(t, filepath.Join(repoRoot, unitPath))
	c := inspectCLI(t)
	svc := u["Service"]

	if user := u.one(t, "Service", "User"); user == "" || user == "root" || user == "0" {
		t.Errorf("User=%q: the service must run as a dedicated unprivileged user", user)
	}
	want := map[string]string{
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes", "Restart": "on-failure",
		"ProtectHome": "yes", "CapabilityBoundingSet": "",
	}
	for k, v := range want {
		if got := u.one(t, "Service", k); got != v {
			t.Errorf("%s=%q, want %q", k, got, v)
		}
	}

	var configPath string
	checkDirsync := func(key, line string) {
		t.Helper()
		fields := strings.Fields(line)
		if fields[0] != unitBinary {
			t.Errorf("%s=%s: dirsync is installed at %s", key, line, unitBinary)
			return
		}
		if err := c.checkArgs(fields[1:]); err != nil {
			t.Errorf("%s=%s: %v", key, line, err)
		}
		p, ok := flagValue(fields[1:], "config")
		if !ok {
			t.Errorf("%s=%s: no --config", key, line)
		}
		if configPath == "" {
			configPath = p
		} else if p != configPath {
			t.Errorf("%s=%s: --config %s, elsewhere %s", key, line, p, configPath)
		}
	}
	start := u.one(t, "Service", "ExecStart")
	if f := strings.Fields(start); len(f) < 2 || f[1] != "run" {
		t.Errorf("ExecStart=%s: want %s run", start, unitBinary)
	}
	checkDirsync("ExecStart", start)
	for _, pre := range svc["ExecStartPre"] {
		checkDirsync("ExecStartPre", pre)
	}
	reload := svc["ExecReload"]
	if len(reload) == 0 || reload[len(reload)-1] != "/bin/kill -HUP $MAINPID" {
		t.Errorf("ExecReload=%q: the last reload step must be /bin/kill -HUP $MAINPID", reload)
	}
	for _, r := range reload[:max(len(reload)-1, 0)] {
		checkDirsync("ExecReload", r)
	}
	if env := svc["Environment"]; !slices.Contains(env, "DIRSYNC_CONFIG="+configPath) {
		t.Errorf("Environment=%q: want DIRSYNC_CONFIG=%s so the CLI finds the config without --config", env, configPath)
	}
	readOnly := strings.Fields(strings.Join(svc["ReadOnlyPaths"], " "))
	if !slices.ContainsFunc(readOnly, func(p string) bool {
		return p == configPath || strings.HasPrefix(configPath, strings.TrimSuffix(p, "/")+"/")
	}) {
		t.Errorf("ReadOnlyPaths=%q does not cover the config %s", readOnly, configPath)
	}

	// Credentials: every LoadCredential is used by the config, every
	// credential the config reads is loaded, and the config is valid once
	// they exist.
	loaded := map[string]bool{}
	for _, lc := range svc["LoadCredential"] {
		name, src, ok := strings.Cut(lc, ":")
		if !ok || !filepath.IsAbs(src) {
			t.Errorf("LoadCredential=%s: want name:/absolute/source", lc)
		}
		loaded[name] = true
	}
	data, err := os.ReadFile(filepath.Join(repoRoot, unitConfigPath))
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, m := range regexp.MustCompile(regexp.QuoteMeta(unitCredentialDir)+`([A-Za-z0-9_.-]+)`).FindAllStringSubmatch(string(data), -1) {
		used[m[1]] = true
	}
	for name := range used {
		if !loaded[name] {
			t.Errorf("config.yaml reads credential %q but the unit has no LoadCredential=%s:…", name, name)
		}
	}
	for name := range loaded {
		if !used[name] {
			t.Errorf("LoadCredential=%s:… is not used by config.yaml", name)
		}
	}
	creds := t.TempDir()
	for name := range loaded {
		if err := os.WriteFile(filepath.Join(creds, name), []byte("s3cret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rewritten := strings.ReplaceAll(string(data), unitCredentialDir, creds+"/")
	if _, err := config.Parse([]byte(rewritten), filepath.Dir(configPath), unitConfigPath, sources.Config(), func(string) string { return "" }); err != nil {
		t.Errorf("the example config is not valid:\n%v", err)
	}
}

// TestSystemdAnalyzeVerify runs `systemd-analyze verify` on the unit in a
// private root holding the binary it starts, and fails on any complaint
// (systemd reports bad directives as warnings with exit code 0).
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze := servertest.Require(t, "systemd-analyze", "systemd")
	bin := dirsyncBinary(t)
	root := t.TempDir()
	units := "/usr/lib/systemd/system"
	if _, err := os.Stat(units); err != nil {
		units = "/lib/systemd/system"
	}
	kill, err := exec.LookPath("kill")
	if err != nil {
		servertest.Unavailable(t, "kill(1) not found: install procps")
	}
	for _, d := range []string{"usr/local/bin", "bin", "usr/lib/systemd", "etc/systemd/system"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copies := [][2]string{
		{bin, filepath.Join(root, unitBinary)},
		{kill, filepath.Join(root, "bin/kill")},
		{units, filepath.Join(root, "usr/lib/systemd/system")},
		{filepath.Join(repoRoot, unitPath), filepath.Join(root, "etc/systemd/system/dirsync.service")},
	}
	for _, c := range copies {
		if out, err := exec.Command("cp", "-a", c[0], c[1]).CombinedOutput(); err != nil {
			t.Fatalf("cp %s: %v: %s", c[0], err, out)
		}
	}
	cmd := exec.Command(analyze, "verify", "--root="+root, filepath.Join(root, "etc/systemd/system/dirsync.service"))
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestReloadSignalKeepsDaemonRunning is what `systemctl reload` does after
// validating: SIGHUP to the main process. The daemon must survive it (Go's
// default for an unhandled SIGHUP is to exit) and still stop cleanly on
// SIGTERM with exit code 0.
func TestReloadSignalKeepsDaemonRunning(t *testing.T) {
	d := startDaemon(t)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d.wait(t, 20*time.Second); err != nil {
		t.Fatalf("dirsync run after SIGHUP then SIGTERM: %v (want exit 0; a daemon killed by SIGHUP cannot be reloaded by systemd)\n%s", err, d.output())
	}
}

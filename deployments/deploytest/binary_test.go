// Package deploytest checks the deployment files in deployments/ against the
// code they deploy: the systemd unit, the Dockerfile and the Kubernetes
// manifests are parsed, their embedded configs validated with config.Parse,
// their command lines checked against the flags the real binary has, and
// their probe paths requested from a real running daemon.
package deploytest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// repoRoot is the module root, two levels above this package.
var repoRoot = func() string {
	abs, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return abs
}()

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// dirsyncBinary builds cmd/dirsync once per test binary exactly as the
// Dockerfile and `make build` do (CGO_ENABLED=0, -trimpath).
func dirsyncBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dirsync-deploytest-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath, buildErr = servertest.BuildDirsync(dir, []string{"CGO_ENABLED=0"},
			"-trimpath", "-ldflags", "-s -w -X main.version=deploytest")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildPath != "" {
		os.RemoveAll(filepath.Dir(buildPath))
	}
	if helmDir != "" {
		os.RemoveAll(helmDir)
	}
	os.Exit(code)
}

// cli is what the real binary says about its subcommands and flags.
type cli struct {
	bin      string
	commands map[string]bool
	flags    map[string]map[string]bool // subcommand → flag names
}

var flagLineRE = regexp.MustCompile(`^\s+-([A-Za-z0-9][A-Za-z0-9-]*)`)

// commandLineRE matches a subcommand line of `dirsync -h`.
var commandLineRE = regexp.MustCompile(`^  ([a-z][a-z-]*)\s{2,}\S`)

// inspectCLI runs `dirsync -h` and `dirsync <command> -h` for every command
// listed, collecting the flags each one really accepts.
func inspectCLI(t *testing.T) *cli {
	t.Helper()
	bin := dirsyncBinary(t)
	c := &cli{bin: bin, commands: map[string]bool{}, flags: map[string]map[string]bool{}}
	out, err := exec.Command(bin, "-h").CombinedOutput()
	if err != nil {
		t.Fatalf("dirsync -h: %v\n%s", err, out)
	}
	inCommands := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "commands:"):
			inCommands = true
		case inCommands && strings.TrimSpace(line) == "":
			inCommands = false
		case inCommands:
			if m := commandLineRE.FindStringSubmatch(line); m != nil {
				c.commands[m[1]] = true
			}
		}
	}
	if len(c.commands) == 0 {
		t.Fatalf("dirsync -h lists no commands:\n%s", out)
	}
	for name := range c.commands {
		out, err := exec.Command(bin, name, "-h").CombinedOutput()
		if err != nil {
			t.Fatalf("dirsync %s -h: %v\n%s", name, err, out)
		}
		c.flags[name] = map[string]bool{}
		for _, line := range strings.Split(string(out), "\n") {
			if m := flagLineRE.FindStringSubmatch(line); m != nil {
				c.flags[name][m[1]] = true
			}
		}
	}
	return c
}

// checkArgs reports what in a dirsync command line (without the program
// name) is not a real subcommand or flag of it. Flag values are not
// checked here; callers check what they mean.
func (c *cli) checkArgs(args []string) error {
	if len(args) == 0 {
		return errors.New("no subcommand")
	}
	name := args[0]
	if !c.commands[name] {
		return fmt.Errorf("dirsync has no %q subcommand (it has %s)", name, keys(c.commands))
	}
	for _, a := range args[1:] {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		f, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !c.flags[name][f] {
			return fmt.Errorf("dirsync %s has no flag %q (it has %s)", name, a, keys(c.flags[name]))
		}
	}
	// The real parser must accept the line too: `-h` appended makes it
	// parse every flag and stop before doing anything.
	out, err := exec.Command(c.bin, append(append([]string{}, args...), "-h")...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("dirsync %s rejects its arguments: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// flagValue returns the value given for flag name in args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		f := strings.TrimLeft(a, "-")
		if f == name && i+1 < len(args) && a != f {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(f, name+"="); ok && a != f {
			return v, true
		}
	}
	return "", false
}

func keys(m map[string]bool) string {
	return strings.Join(slices.Sorted(maps.Keys(m)), ", ")
}

// daemon is a `dirsync run` started by a test.
type daemon struct {
	cmd    *exec.Cmd
	addr   string
	stderr *bytes.Buffer
	done   chan struct{}
	err    error
}

// startDaemon runs `dirsync run` on the quick-start LDIF directory with the
// memory cache on a free loopback port, and waits until /healthz answers.
// It is stopped (SIGKILL if still running) when the test ends.
func startDaemon(t *testing.T) *daemon {
	t.Helper()
	bin := dirsyncBinary(t)
	dir := t.TempDir()
	ldif, err := os.ReadFile(filepath.Join(repoRoot, "deployments", "local", "directory.ldif"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "directory.ldif"), ldif, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cfg := fmt.Sprintf(`cache: {backend: memory}
api: {listen: "%s"}
accounts:
  - id: acme
    claimed_domains: [acme.example]
    directory: {type: ldif, ldif: {path: directory.ldif}}
    bindings:
      - {group: "CN=Chime Pro,OU=Groups,DC=acme,DC=example", permission: pro}
`, addr)
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &daemon{addr: addr, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(bin, "run", "--config", cfgPath)
	d.cmd.Stderr = &lockedWriter{w: d.stderr}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-d.done:
			t.Fatalf("dirsync run exited during start-up: %v\n%s", d.err, d.output())
		default:
		}
		if code, err := httpStatus(d.url("/healthz")); err == nil && code == http.StatusOK {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("dirsync run did not answer /healthz within 30s\n%s", d.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *daemon) url(path string) string { return "http://" + d.addr + path }

func (d *daemon) output() string {
	lw := d.cmd.Stderr.(*lockedWriter)
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return d.stderr.String()
}

// wait waits for the process to exit, failing t after timeout.
func (d *daemon) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-d.done:
		return d.err
	case <-time.After(timeout):
		t.Fatalf("dirsync run still running %v after being signalled\n%s", timeout, d.output())
		return nil
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
}

func httpStatus(url string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// servedPaths fails t for every path the running daemon does not serve
// (404 or 405 to a GET); any other status, including 503 from /readyz
// before the first sync, means the route exists.
func servedPaths(t *testing.T, d *daemon, what string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		code, err := httpStatus(d.url(p))
		if err != nil {
			t.Errorf("%s: GET %s: %v", what, p, err)
			continue
		}
		if code == http.StatusNotFound || code == http.StatusMethodNotAllowed {
			t.Errorf("%s: GET %s answers %d: dirsync run does not serve this path", what, p, code)
		}
	}
}

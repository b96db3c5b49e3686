package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// daemonRun is `dirsync run` started in-process.
type daemonRun struct {
	addr   string
	cancel context.CancelFunc
	done   chan int
	stderr *lockedBuffer
}

// lockedBuffer is the daemon's stderr: its goroutines log concurrently.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startRun runs the daemon on cfg with env until the test ends.
func startRun(t *testing.T, cfg, addr string, env map[string]string) *daemonRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemonRun{addr: addr, cancel: cancel, done: make(chan int, 1), stderr: &lockedBuffer{}}
	go func() {
		code := run(ctx, []string{"run", "--config", cfg}, func(k string) string { return env[k] }, io.Discard, d.stderr)
		d.done <- code
	}()
	t.Cleanup(func() { d.stop(t) })
	return d
}

// stop cancels the daemon and returns its exit code.
func (d *daemonRun) stop(t *testing.T) int {
	t.Helper()
	d.cancel()
	select {
	case code := <-d.done:
		d.done <- code // for a later stop
		return code
	case <-time.After(15 * time.Second):
		t.Fatal("dirsync run did not stop within 15s of cancellation")
		return -1
	}
}

// call sends a request to the daemon and returns the status and body.
func (d *daemonRun) call(t *testing.T, method, path, body string, headers map[string]string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+d.addr+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// quickStart writes the quick-start config and directory listening on a
// free loopback port, with extra lines appended to its api section.
func quickStart(t *testing.T, apiExtra string) (cfg, addr string) {
	t.Helper()
	dir := t.TempDir()
	ldif, err := os.ReadFile("../../deployments/local/directory.ldif")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "directory.ldif"), ldif, 0o644); err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile("../../deployments/local/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	addr = fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	text := strings.Replace(string(body), "listen: 127.0.0.1:8080", "listen: "+addr+apiExtra, 1)
	cfg = filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg, addr
}

func waitListening(t *testing.T, d *daemonRun) {
	t.Helper()
	if err := servertest.WaitTCP(d.addr, 15*time.Second); err != nil {
		t.Fatalf("daemon did not listen: %v\n%s", err, d.stderr)
	}
}

// TestTokenlessLoopbackDaemon: `make run`'s daemon (loopback, no token)
// serves reads without a token, refuses every state-changing call without
// the per-start token it writes (0600) for the CLI, which finds it, and
// refuses what a browser could be made to send.
func TestTokenlessLoopbackDaemon(t *testing.T) {
	runtimeDir := filepath.Join(t.TempDir(), "run")
	env := map[string]string{"DIRSYNC_RUNTIME_DIR": runtimeDir}
	cfg, addr := quickStart(t, "")
	d := startRun(t, cfg, addr, env)
	waitListening(t, d)
	_, port, _ := net.SplitHostPort(addr)
	tokenFile := filepath.Join(runtimeDir, "admin-token-"+port)

	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body := d.call(t, "GET", "/v1/access/alice@acme.example", "", nil)
		if code == 200 && strings.Contains(body, `"allowed":true`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice not allowed: %d %s\n%s", code, body, d.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}

	for _, path := range []string{"/v1/sync?account=acme", "/v1/sync?account=acme&force=true", "/v1/accounts/acme/release", "/v1/reload"} {
		if code, body := d.call(t, "POST", path, "", nil); code != http.StatusUnauthorized {
			t.Errorf("body-less POST %s without a token: HTTP %d %s", path, code, body)
		}
	}
	fi, err := os.Stat(tokenFile)
	if err != nil {
		t.Fatalf("per-start token file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("per-start token file mode %04o, want 0600", fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(tokenFile)
	token := "Bearer " + strings.TrimSpace(string(raw))
	if code, body := d.call(t, "POST", "/v1/sync?account=acme&dry_run=true", "", map[string]string{"Authorization": token}); code != 200 {
		t.Errorf("POST /v1/sync with the per-start token: HTTP %d %s", code, body)
	}

	// What a web page could make a browser send, even with the token.
	for _, tt := range []struct {
		name    string
		method  string
		path    string
		body    string
		headers map[string]string
		want    int
	}{
		{"cross-site Origin", "POST", "/v1/sync?account=acme", "", map[string]string{"Authorization": token, "Origin": "https://evil.example"}, 403},
		{"text/plain body", "POST", "/v1/sync?account=acme", `{"force":true}`, map[string]string{"Authorization": token, "Content-Type": "text/plain"}, 415},
		{"DNS-rebound Host", "GET", "/v1/access/alice@acme.example", "", map[string]string{"Host": "evil.example:" + port}, 403},
		{"DNS-rebound Host, status", "GET", "/v1/status", "", map[string]string{"Host": "evil.example:" + port}, 403},
	} {
		if code, body := d.call(t, tt.method, tt.path, tt.body, tt.headers); code != tt.want {
			t.Errorf("%s: HTTP %d %s; want %d", tt.name, code, body, tt.want)
		}
	}

	// The CLI finds the per-start token: by --server and by --config.
	for _, args := range [][]string{
		{"sync", "--server", "http://" + addr, "--account", "acme", "--dry-run"},
		{"sync", "--config", cfg, "--account", "acme", "--mode", "incremental"},
		{"status", "--config", cfg},
		{"check", "--config", cfg, "carol@acme.example", "--explain"},
	} {
		if code, out, errOut := runCLI(t, context.Background(), env, args...); code != exitOK {
			t.Errorf("dirsync %s: exit %d\n%s\n%s", strings.Join(args, " "), code, out, errOut)
		}
	}
	if code, _, errOut := runCLI(t, context.Background(), env, "release", "--config", cfg, "--account", "acme"); code != exitRuntime || !strings.Contains(errOut, "no safeguard hold") {
		t.Errorf("release reached the daemon? exit %d %s", code, errOut)
	}
	// Another user's CLI (no access to the file) is refused.
	if code, _, errOut := runCLI(t, context.Background(), map[string]string{"DIRSYNC_RUNTIME_DIR": t.TempDir()}, "sync", "--config", cfg); code != exitRuntime || !strings.Contains(errOut, "admin endpoint") {
		t.Errorf("sync without the per-start token: exit %d %s", code, errOut)
	}

	if code := d.stop(t); code != exitOK {
		t.Errorf("run exit %d", code)
	}
	if _, err := os.Stat(tokenFile); !os.IsNotExist(err) {
		t.Errorf("per-start token file left after exit: %v", err)
	}
}

// TestNonLoopbackNeverServesWithoutTokens: on a non-loopback address a
// daemon whose admin token is empty or blank, or that has no read token,
// refuses to start; it never serves admin routes or decisions without a
// token.
func TestNonLoopbackNeverServesWithoutTokens(t *testing.T) {
	for _, tt := range []struct {
		name         string
		admin, read  string // secret file contents; "-" leaves the field out
		wantInStderr string
	}{
		{"empty admin token file", "", "reader-token", "admin_token"},
		{"blank admin token file", " \n\t\n", "reader-token", "admin_token"},
		{"empty read token file", "admin-token-1", "", "read_token"},
		{"no read token", "admin-token-1", "-", "read_token"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			extra := ""
			for _, s := range []struct{ field, value string }{{"admin_token_file", tt.admin}, {"read_token_file", tt.read}} {
				if s.value == "-" {
					continue
				}
				p := filepath.Join(dir, s.field)
				if err := os.WriteFile(p, []byte(s.value), 0o600); err != nil {
					t.Fatal(err)
				}
				extra += "\n  " + s.field + ": " + p
			}
			cfg, addr := quickStart(t, extra) // then on all interfaces, same port
			body, _ := os.ReadFile(cfg)
			if err := os.WriteFile(cfg, []byte(strings.Replace(string(body), "listen: 127.0.0.1:", "listen: 0.0.0.0:", 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			d := startRun(t, cfg, addr, map[string]string{"DIRSYNC_RUNTIME_DIR": filepath.Join(t.TempDir(), "run")})
			deadline := time.Now().Add(15 * time.Second)
			for time.Now().Before(deadline) {
				select {
				case code := <-d.done:
					d.done <- code
					if code == exitOK || !strings.Contains(d.stderr.String(), tt.wantInStderr) {
						t.Fatalf("exit %d, stderr lacks %q:\n%s", code, tt.wantInStderr, d.stderr)
					}
					return
				default:
				}
				if c, err := net.DialTimeout("tcp", d.addr, 100*time.Millisecond); err == nil {
					c.Close()
					for _, path := range []string{"/v1/sync?account=acme&dry_run=true", "/v1/access/alice@acme.example"} {
						method := "POST"
						if strings.HasPrefix(path, "/v1/access") {
							method = "GET"
						}
						if code, body := d.call(t, method, path, "", nil); code != http.StatusUnauthorized {
							t.Errorf("%s %s on 0.0.0.0 without a token: HTTP %d %s", method, path, code, body)
						}
					}
					t.Fatalf("the daemon serves on 0.0.0.0:\n%s", d.stderr)
				}
				time.Sleep(50 * time.Millisecond)
			}
			t.Fatal("the daemon neither exited nor listened")
		})
	}
}

// TestReadyzHidesBackendErrorsFromStrangers: with the cache unreachable,
// /readyz says so without the backend's error text (addresses, ports) to
// an unauthenticated caller; the admin token shows it.
func TestReadyzHidesBackendErrorsFromStrangers(t *testing.T) {
	dead := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t)) // nothing listens
	cfg, addr := quickStart(t, "")
	body, _ := os.ReadFile(cfg)
	text := strings.Replace(string(body), "backend: memory", fmt.Sprintf("backend: redis\n  redis: {addrs: [%q]}", dead), 1)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	runtimeDir := filepath.Join(t.TempDir(), "run")
	d := startRun(t, cfg, addr, map[string]string{"DIRSYNC_RUNTIME_DIR": runtimeDir})
	waitListening(t, d)
	code, out := d.call(t, "GET", "/readyz", "", nil)
	if code != 503 || !strings.Contains(out, "access cache unreachable") {
		t.Fatalf("readyz with Redis down: HTTP %d %s", code, out)
	}
	_, deadPort, _ := net.SplitHostPort(dead)
	for _, leak := range []string{deadPort, "refused", "dial"} {
		if strings.Contains(out, leak) {
			t.Errorf("readyz tells an unauthenticated caller %q: %s", leak, out)
		}
	}
	_, port, _ := net.SplitHostPort(addr)
	raw, err := os.ReadFile(filepath.Join(runtimeDir, "admin-token-"+port))
	if err != nil {
		t.Fatal(err)
	}
	code, out = d.call(t, "GET", "/readyz", "", map[string]string{"Authorization": "Bearer " + strings.TrimSpace(string(raw))})
	if code != 503 || !strings.Contains(out, deadPort) {
		t.Errorf("readyz for the admin: HTTP %d %s", code, out)
	}
}

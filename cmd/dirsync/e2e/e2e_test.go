// Package e2e runs the real dirsync binary as a daemon against real servers
// (redis-server, a Samba AD DC, the fake Okta org) and checks what the
// sign-in service would see.
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

var (
	binary string
	samba  = servertest.NewSharedSamba(func() servertest.SambaOptions { return servertest.ADDatasetOptions(time.Now()) })
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dirsync-e2e")
	if err != nil {
		panic(err)
	}
	if binary, err = servertest.BuildDirsync(dir, nil, "-race"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	samba.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is a running `dirsync run`.
type daemon struct {
	t    testing.TB
	proc *servertest.Process
	addr string
	dir  string
	cfg  string
}

// writeConfig writes a config file into dir with api.listen on a free port
// (the body's accounts and cache sections are given by the caller).
func writeConfig(t testing.TB, dir, body string) (path, addr string) {
	t.Helper()
	addr = fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	path = filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf("api: {listen: %q}\n%s", addr, body)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, addr
}

func writeSecret(t testing.TB, dir, name, value string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func startDaemon(t testing.TB, dir, cfg, addr string) *daemon {
	t.Helper()
	return startBinary(t, binary, dir, cfg, addr)
}

// startBinary is startDaemon with another build of dirsync (a benchmark's,
// without -race).
func startBinary(t testing.TB, bin, dir, cfg, addr string) *daemon {
	t.Helper()
	p, err := servertest.Start(dir, bin, "run", "--config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, proc: p, addr: addr, dir: dir, cfg: cfg}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("dirsync log:\n%s", p.LogTail())
		}
	})
	if err := servertest.WaitTCP(addr, 15*time.Second); err != nil {
		t.Fatalf("daemon did not listen: %v\n%s", err, p.LogTail())
	}
	return d
}

func (d *daemon) log() string {
	b, _ := os.ReadFile(d.proc.Log)
	return string(b)
}

// decision reads GET /v1/access/{email}.
func (d *daemon) decision(email string) (entitlement.Decision, error) {
	var dec entitlement.Decision
	resp, err := http.Get("http://" + d.addr + "/v1/access/" + email)
	if err != nil {
		return dec, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return dec, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return dec, json.NewDecoder(resp.Body).Decode(&dec)
}

// waitFor polls the decision until ok accepts it or timeout passes, and
// returns how long it took.
func (d *daemon) waitFor(email string, timeout time.Duration, ok func(entitlement.Decision) bool) (time.Duration, entitlement.Decision) {
	d.t.Helper()
	start := time.Now()
	var last entitlement.Decision
	for time.Since(start) < timeout {
		dec, err := d.decision(email)
		if err == nil {
			last = dec
			if ok(dec) {
				return time.Since(start), dec
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	d.t.Fatalf("%s: not as expected within %v; last %+v\nlog:\n%s", email, timeout, last, d.proc.LogTail())
	return 0, last
}

func (d *daemon) post(path string, out any) int {
	d.t.Helper()
	resp, err := http.Post("http://"+d.addr+path, "application/json", nil)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			d.t.Fatal(err)
		}
	}
	return resp.StatusCode
}

// stop sends SIGTERM and returns the exit error and how long the exit took.
func (d *daemon) stop() (time.Duration, error) {
	start := time.Now()
	if err := d.proc.Signal(syscall.SIGTERM); err != nil {
		d.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.proc.Wait() }()
	select {
	case err := <-done:
		return time.Since(start), err
	case <-time.After(15 * time.Second):
		d.proc.Kill()
		return time.Since(start), fmt.Errorf("no exit within 15s")
	}
}

func isSuspended(d entitlement.Decision) bool {
	return !d.Allowed && d.Reason == entitlement.ReasonSuspended
}
func isAllowed(d entitlement.Decision) bool { return d.Allowed }

// assertNoSecrets fails if any secret appears in text.
func assertNoSecrets(t testing.TB, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("%s contains a secret (%q…)", what, s[:3])
		}
	}
}

func mustRead(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t testing.TB, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// scrapeMetrics fetches the daemon's /metrics and fails on anything
// promlint finds.
func scrapeMetrics(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	problems, err := promlint.New(bytes.NewReader(text)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	return string(text)
}

// metricValue returns the value of one series in a Prometheus text
// exposition.
func metricValue(text, series string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

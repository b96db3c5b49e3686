package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// readyWriter collects output and closes ready when the ready line appears.
type readyWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan struct{}
	seen  bool
}

func (w *readyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	if !w.seen && strings.Contains(w.buf.String(), readyLine) {
		w.seen = true
		close(w.ready)
	}
	return n, err
}

func (w *readyWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestDevStack starts the dev stack as a user would, runs the real dirsync
// CLI against the config it printed, checks the sample's decisions come
// through OpenLDAP and Redis, then stops it as Ctrl-C does and checks the
// servers are gone.
func TestDevStack(t *testing.T) {
	servertest.Require(t, "slapd", "slapd", "ldap-utils")
	servertest.Require(t, "redis-server", "redis-server")
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "dirsync")
	build := exec.Command("go", "build", "-o", bin, "./cmd/dirsync")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &readyWriter{ready: make(chan struct{})}
	var stderr readyWriter
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--dir", dir, "--ldif", filepath.Join(root, defaultSampleRel)}, out, &stderr)
	}()
	select {
	case <-out.ready:
	case err := <-done:
		t.Fatalf("dev stack ended before it was ready: %v\n%s%s", err, out.String(), stderr.String())
	case <-time.After(60 * time.Second):
		cancel()
		<-done
		t.Fatalf("dev stack not ready after 60s\n%s%s", out.String(), stderr.String())
	}

	cfg := filepath.Join(dir, "openldap.yaml")
	if !strings.Contains(out.String(), cfg) {
		t.Errorf("the printed usage does not name the config %s:\n%s", cfg, out.String())
	}
	cli := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "DIRSYNC_CONFIG=")
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		if err != nil {
			return o.String(), &cliError{err: err, stderr: e.String()}
		}
		return o.String(), nil
	}
	if o, err := cli("sync", "--config", cfg); err != nil {
		t.Fatalf("dirsync sync against the dev stack: %v\n%s", err, o)
	}
	want := map[string]struct {
		allowed    bool
		permission entitlement.Permission
		reason     entitlement.Reason
	}{
		"alice@acme.example": {true, entitlement.PermissionPro, entitlement.ReasonGranted},
		"bob@acme.example":   {true, entitlement.PermissionBasic, entitlement.ReasonGranted},
		"carol@acme.example": {true, entitlement.PermissionPro, entitlement.ReasonGranted}, // nested, cycle
		"dave@acme.example":  {false, entitlement.PermissionNone, entitlement.ReasonSuspended},
		"erin@acme.example":  {false, entitlement.PermissionNone, entitlement.ReasonNoPermission},
		"heidi@acme.example": {false, entitlement.PermissionNone, entitlement.ReasonUnknownUser}, // domain not claimed
	}
	for email, w := range want {
		o, err := cli("check", "--config", cfg, "--output", "json", email)
		if err != nil {
			t.Errorf("dirsync check %s: %v", email, err)
			continue
		}
		var d entitlement.Decision
		if err := json.Unmarshal([]byte(o), &d); err != nil {
			t.Errorf("dirsync check %s: %v in %q", email, err, o)
			continue
		}
		if d.Allowed != w.allowed || d.Permission != w.permission || d.Reason != w.reason {
			t.Errorf("%s: allowed=%t permission=%s reason=%s, want %t %s %s", email, d.Allowed, d.Permission, d.Reason, w.allowed, w.permission, w.reason)
		}
	}

	// Ctrl-C.
	text, _ := os.ReadFile(cfg)
	redisAddr := regexp.MustCompile(`addrs: \["([^"]+)"\]`).FindSubmatch(text)
	ldapURL := regexp.MustCompile(`ldap://([0-9.:]+)`).FindSubmatch(text)
	if redisAddr == nil || ldapURL == nil {
		t.Fatalf("cannot find the server addresses in %s:\n%s", cfg, text)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("dev stack stopped with %v, want a clean stop", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev stack did not stop within 30s of Ctrl-C")
	}
	for _, addr := range []string{string(redisAddr[1]), string(ldapURL[1])} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after the dev stack stopped", addr)
		}
	}
}

type cliError struct {
	err    error
	stderr string
}

func (e *cliError) Error() string { return e.err.Error() + ": " + e.stderr }

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/directory/sources"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// stalledLDAP accepts connections and reads requests without ever
// answering: a directory that never finishes a pass.
func stalledLDAP(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "ldap://" + l.Addr().String()
}

// TestSyncPassDeadline: a one-off `dirsync sync` has the daemon's pass
// deadline (issue 12 item 9). The directory never answers and ldap.timeout
// is an hour, so only the pass deadline (made short here) can end the
// pass: it fails, says why, and the command returns.
func TestSyncPassDeadline(t *testing.T) {
	redis := servertest.StartRedis(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bind.secret"), []byte("pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`cache:
  backend: redis
  redis: {addrs: [%q], key_prefix: deadline}
log: {level: error}
accounts:
  - id: acme
    claimed_domains: [acme.example]
    directory:
      type: ldap
      ldap:
        urls: [%q]
        allow_insecure: true
        bind_dn: "cn=svc,dc=acme,dc=example"
        bind_password_file: bind.secret
        base_dn: "dc=acme,dc=example"
        timeout: 1h
    bindings:
      - {group: "cn=pro,dc=acme,dc=example", permission: pro}
`, redis.Addr, stalledLDAP(t))
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	var stdout, stderr bytes.Buffer
	e := env{getenv: func(string) string { return "" }, stdout: &stdout, stderr: &stderr, kinds: sources.Kinds(),
		deadlines: &passDeadlines{full: 300 * time.Millisecond, incremental: 300 * time.Millisecond}}
	done := make(chan error, 1)
	go func() { done <- cmdSync(context.Background(), e, []string{"--config", path, "--output", "json"}) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute): // a hang guard, not a timing check
		t.Fatal("dirsync sync still waits on a directory that never answers: no pass deadline")
	}
	if err == nil || !strings.Contains(err.Error(), "sync failed for acme") {
		t.Fatalf("sync against a stalled directory: %v, want it to fail", err)
	}
	var out struct {
		Reports []struct {
			Result string `json:"result"`
			Error  string `json:"error"`
		} `json:"reports"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("report %q: %v", stdout.String(), err)
	}
	if len(out.Reports) != 1 || !strings.Contains(out.Reports[0].Error, "ran past its 300ms deadline") {
		t.Fatalf("reports %+v, want one saying the full pass ran past its 300ms deadline", out.Reports)
	}
}

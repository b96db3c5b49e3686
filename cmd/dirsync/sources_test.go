package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/directory/sources"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// staticSection configures the test-only "static" source kind: a list of
// users, all members of the group "staff".
type staticSection struct {
	Users []string `yaml:"users"`
}

type staticSource struct {
	users []string
	reads atomic.Int64
}

func (s *staticSource) Snapshot(context.Context) (*directory.Snapshot, error) {
	s.reads.Add(1)
	snap := &directory.Snapshot{Source: "static", FetchedAt: time.Now(), Groups: []directory.Group{{Ref: "staff", Name: "staff"}}}
	for i, email := range s.users {
		snap.Users = append(snap.Users, directory.User{ID: fmt.Sprint("static-", i), Email: email})
		snap.Groups[0].Members = append(snap.Groups[0].Members, int32(i))
	}
	return snap, nil
}

func (s *staticSource) Stats() directory.SourceStats {
	return directory.SourceStats{Requests: s.reads.Load(), RateLimitRemaining: -1, EntriesRead: -1}
}

// staticKind is a source kind defined outside the build's table: its one
// registration is all the daemon needs.
func staticKind() directory.Kind {
	return directory.Kind{
		Config: config.NewSourceKind(config.Section[staticSection]{
			Types: []string{"static"},
			Key:   "static",
			Validate: func(s *staticSection, c *config.Check) {
				if len(s.Users) == 0 {
					c.Add("users", "required: list at least one email")
				}
			},
		}),
		Open: func(a *config.Account, _ func(string) string) (directory.Source, error) {
			s, ok := config.SectionOf[staticSection](a.Directory)
			if !ok {
				return nil, fmt.Errorf("no static section")
			}
			return &staticSource{users: s.Users}, nil
		},
	}
}

// runWithKinds is runCLI with the build's table plus kinds.
func runWithKinds(ctx context.Context, kinds []directory.Kind, args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	e := env{getenv: func(string) string { return "" }, stdout: &stdout, stderr: &stderr, kinds: append(sources.Kinds(), kinds...)}
	code := runEnv(ctx, e, args)
	return code, stdout.String(), stderr.String()
}

// TestSourceKindNeedsOnlyTheTable: a source kind the wiring has never
// seen is validated, opened, synced and exported in the metrics once it
// is in the table passed to the commands; nothing else in main names it.
func TestSourceKindNeedsOnlyTheTable(t *testing.T) {
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	write := func(section string) string {
		cfg := filepath.Join(dir, "config.yaml")
		body := fmt.Sprintf(`cache: {backend: memory}
api: {listen: %q}
log: {level: error}
accounts:
  - id: crm
    claimed_domains: [crm.example]
    directory: {type: static, static: %s}
    bindings: [{group: staff, permission: pro}]
`, addr, section)
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	ctx := context.Background()
	if code, _, errOut := runWithKinds(ctx, nil, "validate", "--config", write("{users: [ann@crm.example]}")); code != exitUsage ||
		!strings.Contains(errOut, `accounts[0].directory.type: "static" is not a directory type`) {
		t.Errorf("validate without the kind: exit %d\n%s", code, errOut)
	}
	kinds := []directory.Kind{staticKind()}
	if code, _, errOut := runWithKinds(ctx, kinds, "validate", "--config", write("{}")); code != exitUsage ||
		!strings.Contains(errOut, "accounts[0].directory.static.users: required") {
		t.Errorf("validate an empty static section: exit %d\n%s", code, errOut)
	}
	cfg := write("{users: [ann@crm.example]}")
	if code, _, errOut := runWithKinds(ctx, kinds, "validate", "--config", cfg); code != exitOK {
		t.Fatalf("validate with the kind: exit %d\n%s", code, errOut)
	}

	rctx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	go func() {
		code, _, _ := runWithKinds(rctx, kinds, "run", "--config", cfg)
		done <- code
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("run did not stop within 10s of cancellation")
		}
	}()
	get := func(path string) string {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(get("/v1/access/ann@crm.example"), `"permission":"`+string(entitlement.PermissionPro)+`"`) {
		if time.Now().After(deadline) {
			t.Fatalf("ann never allowed pro: %s", get("/v1/access/ann@crm.example"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if m := get("/metrics"); !strings.Contains(m, `dirsync_directory_requests_total{account="crm",source="static"}`) {
		t.Errorf("the static source's counters are not exported:\n%s", m)
	}
}

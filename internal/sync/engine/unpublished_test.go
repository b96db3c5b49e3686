package engine

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/store"

	"github.com/dirsync/dirsync/internal/entitlement/mapper"

	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/directory"
)

// failingCache fails the next Apply when fail is set.
type failingCache struct {
	*store.Memory
	fail bool
}

func (c *failingCache) Apply(ctx context.Context, account string, changes []mapper.Change, at time.Time) error {
	if c.fail {
		c.fail = false
		return errors.New("cache unreachable")
	}
	return c.Memory.Apply(ctx, account, changes, at)
}

// TestChangeNotLostAfterFailedPublish: the source reports a change once; a
// pass that read it but failed to publish it (or only dry-ran it) must not
// let the next incremental pass skip it as "unchanged".
func TestChangeNotLostAfterFailedPublish(t *testing.T) {
	for _, how := range []string{"failed publish", "dry run"} {
		t.Run(how, func(t *testing.T) {
			src := &fakeSource{}
			cache := &failingCache{Memory: store.NewMemory()}
			clk := &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
			e := New(cache, []Account{{
				Policy:    mapper.Policy{Account: "acme", ClaimedDomains: []string{"acme.example"}, Bindings: []mapper.Binding{{Group: "Pro", Permission: entitlement.PermissionPro}}},
				Source:    src,
				Safeguard: Safeguard{MaxLostAccessPercent: 20, MaxLostAccessUsers: 500},
			}}, zap.NewNop(), clk.now)
			ctx := context.Background()
			src.set(org(3, nil), nil)
			if _, err := e.Run(ctx, "acme", Options{}); err != nil {
				t.Fatal(err)
			}
			src.set(org(3, map[int]func(*directory.User){1: func(u *directory.User) { u.Status = directory.StatusSuspended }}), nil)
			if how == "dry run" {
				if _, err := e.Run(ctx, "acme", Options{Mode: ModeIncremental, DryRun: true}); err != nil {
					t.Fatal(err)
				}
			} else {
				cache.fail = true
				if rep, err := e.Run(ctx, "acme", Options{Mode: ModeIncremental}); err == nil || rep.Result != ResultFailed {
					t.Fatalf("pass with a failing cache: %+v, %v", rep, err)
				}
			}
			rep, err := e.Run(ctx, "acme", Options{Mode: ModeIncremental})
			if err != nil || rep.Result != ResultPublished {
				t.Fatalf("next incremental pass: %+v, %v; want the change published", rep, err)
			}
			if d := allowed(t, cache.Memory, "u001@acme.example"); d.Allowed {
				t.Errorf("u001 = %+v; the suspension was lost", d)
			}
			if rep, _ := e.Run(ctx, "acme", Options{Mode: ModeIncremental}); rep.Result != ResultUnchanged {
				t.Errorf("pass after the publish = %s; want unchanged", rep.Result)
			}
		})
	}
}

package historydb

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/entitlement/history"
	"github.com/dirsync/dirsync/internal/entitlement/mapper"
	"github.com/dirsync/dirsync/internal/entitlement/store"
	"github.com/dirsync/dirsync/internal/pgstore"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

func decision(email string, p entitlement.Permission, r entitlement.Reason) *entitlement.Decision {
	return &entitlement.Decision{Email: email, Account: "acme", Allowed: p != entitlement.PermissionNone, Permission: p, Reason: r, Via: []string{}}
}

// TestHistoryThroughTheCache: changes published through a recording cache
// land in PostgreSQL with their cause and actor, and answer "why did alice
// lose Pro", newest first; pruning removes old entries only.
func TestHistoryThroughTheCache(t *testing.T) {
	pg := servertest.StartPostgres(t)
	ctx := context.Background()
	pool, err := pgstore.Connect(ctx, pg.CreateDatabase(t), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	st, err := Open(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	rec := history.NewRecorder(st, nil)
	cache := store.NewMemory()
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC) // a Tuesday
	pro := decision("alice@acme.example", entitlement.PermissionPro, entitlement.ReasonGranted)
	if err := rec.Apply(ctx, cache, "acme", []mapper.Change{{Email: pro.Email, New: pro, Next: mapper.PublishedOf(pro)}}, t0); err != nil {
		t.Fatal(err)
	}
	old := mapper.PublishedOf(pro)
	lost := decision("alice@acme.example", entitlement.PermissionNone, entitlement.ReasonNoPermission)
	bctx := history.WithCause(ctx, history.CauseBinding, "token:tok_42")
	if err := rec.Apply(bctx, cache, "acme", []mapper.Change{{Email: lost.Email, Old: &old, New: lost, Next: mapper.PublishedOf(lost)}}, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, err := st.User(ctx, "acme", "alice@acme.example", 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("history %+v; want 2 entries", got)
	}
	last := got[0]
	if last.Cause != history.CauseBinding || last.Actor != "token:tok_42" || !last.OldAllowed || last.OldPermission != entitlement.PermissionPro ||
		last.NewAllowed || last.Reason != entitlement.ReasonNoPermission || !last.At.Equal(t0.Add(time.Hour)) {
		t.Errorf("newest entry %+v", last)
	}
	if got[1].Cause != history.CauseDirectory || got[1].Actor != "dirsync" || !got[1].NewAllowed {
		t.Errorf("first entry %+v", got[1])
	}
	if page, _ := st.User(ctx, "acme", "alice@acme.example", 10, got[0].ID); len(page) != 1 || page[0].ID != got[1].ID {
		t.Errorf("paging before %d: %+v", got[0].ID, page)
	}
	n, err := st.Prune(ctx, t0.Add(30*time.Minute))
	if err != nil || n != 1 {
		t.Errorf("prune: %d %v", n, err)
	}
	if left, _ := st.User(ctx, "acme", "alice@acme.example", 10, 0); len(left) != 1 || left[0].Cause != history.CauseBinding {
		t.Errorf("after pruning: %+v", left)
	}
}

type flakySink struct {
	fail    bool
	entries []history.Entry
}

func (f *flakySink) Record(_ context.Context, e []history.Entry) error {
	if f.fail {
		return errors.New("postgres down")
	}
	f.entries = append(f.entries, e...)
	return nil
}

// TestRecorderBacklog: a failing sink never fails the publish; its entries
// are written with the next ones once it is back.
func TestRecorderBacklog(t *testing.T) {
	sink := &flakySink{fail: true}
	rec := history.NewRecorder(sink, nil)
	cache := store.NewMemory()
	ctx := context.Background()
	d := decision("bob@acme.example", entitlement.PermissionBasic, entitlement.ReasonGranted)
	if err := rec.Apply(ctx, cache, "acme", []mapper.Change{{Email: d.Email, New: d, Next: mapper.PublishedOf(d)}}, time.Now()); err != nil {
		t.Fatalf("a failing history failed the publish: %v", err)
	}
	if got, _ := cache.Check(ctx, d.Email); !got.Allowed {
		t.Fatal("not published")
	}
	if waiting, _ := rec.Backlog(); waiting != 1 {
		t.Fatalf("backlog %d", waiting)
	}
	sink.fail = false
	e := decision("eve@acme.example", entitlement.PermissionPro, entitlement.ReasonGranted)
	if err := rec.Apply(ctx, cache, "acme", []mapper.Change{{Email: e.Email, New: e, Next: mapper.PublishedOf(e)}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if len(sink.entries) != 2 || sink.entries[0].Email != "bob@acme.example" {
		t.Errorf("entries %+v; want bob's (kept) then eve's", sink.entries)
	}
	if waiting, _ := rec.Backlog(); waiting != 0 {
		t.Errorf("backlog %d after recovery", waiting)
	}
}

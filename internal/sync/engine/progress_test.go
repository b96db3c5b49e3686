package engine

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/directory"
)

// countingSource is a fakeSource that counts entries like a real one.
type countingSource struct {
	*fakeSource
	entries int64
}

func (c *countingSource) Stats() directory.SourceStats {
	return directory.SourceStats{EntriesRead: c.entries, Requests: c.entries / 10}
}

// TestProgressOfARunningPass: while a pass reads, Progress says so with
// the entries this pass read (not the source's lifetime count); between
// passes there is none.
func TestProgressOfARunningPass(t *testing.T) {
	e, src, _, _ := setup(t)
	cs := &countingSource{fakeSource: src, entries: 500}
	e.accounts["acme"].cfg.Source = cs
	src.set(org(3, nil), nil)
	if _, ok := e.Progress("acme"); ok {
		t.Fatal("progress before any pass")
	}
	block := make(chan struct{})
	src.mu.Lock()
	src.block = block
	src.mu.Unlock()
	done := make(chan error)
	go func() {
		_, err := e.Run(context.Background(), "acme", Options{Mode: ModeFull})
		done <- err
	}()
	var p Progress
	for deadline := time.Now().Add(5 * time.Second); ; {
		var ok bool
		if p, ok = e.Progress("acme"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no progress while the pass reads")
		}
		time.Sleep(time.Millisecond)
	}
	cs.entries = 800 // not raced: Stats reads it only from Progress below
	p, _ = e.Progress("acme")
	if p.Phase != PhaseReading || p.Mode != ModeFull || p.EntriesRead != 300 || p.Requests != 30 {
		t.Errorf("progress %+v; want reading, 300 entries and 30 requests of this pass", p)
	}
	close(block)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if p, ok := e.Progress("acme"); ok {
		t.Errorf("progress after the pass: %+v", p)
	}
}

// TestReleaseBoundToReviewedDiff: a held pass reports the hash of what it
// holds back (not the suspension it published); a release bound to that
// hash publishes it; when the directory moved since, the bound release
// publishes nothing forced, says ErrDiffChanged and reports the new diff,
// whose hash then releases.
func TestReleaseBoundToReviewedDiff(t *testing.T) {
	e, src, cache, _ := setup(t)
	ctx := context.Background()
	src.set(org(10, nil), nil)
	if _, err := e.Run(ctx, "acme", Options{}); err != nil {
		t.Fatal(err)
	}
	next := org(10, map[int]func(*directory.User){9: func(u *directory.User) { u.Status = directory.StatusSuspended }})
	next.Groups[0].Members = next.Groups[0].Members[5:]
	src.set(next, nil)
	held, err := e.Run(ctx, "acme", Options{})
	if !errors.Is(err, ErrHeld) || held.DiffHash == "" {
		t.Fatalf("want a hold with a diff hash: %+v, %v", held, err)
	}
	dry, err := e.Run(ctx, "acme", Options{Mode: ModeFull, DryRun: true})
	if err != nil || dry.DiffHash != held.DiffHash {
		t.Fatalf("a dry run of the held state hashes %q, the hold %q (%v): they must agree (the suspension is published already)", dry.DiffHash, held.DiffHash, err)
	}

	// The directory moves: one more user leaves. The reviewed diff is stale.
	moved := org(10, map[int]func(*directory.User){9: func(u *directory.User) { u.Status = directory.StatusSuspended }})
	moved.Groups[0].Members = moved.Groups[0].Members[6:]
	src.set(moved, nil)
	rep, err := e.Run(ctx, "acme", Options{Mode: ModeFull, Force: true, ReviewedDiffHash: held.DiffHash})
	if !errors.Is(err, ErrDiffChanged) || !errors.Is(err, ErrHeld) || rep.DiffHash == held.DiffHash || len(rep.Diff) != 6 {
		t.Fatalf("release of a stale diff: %+v, %v; want held again with the new 6-entry diff", rep, err)
	}
	if d := allowed(t, cache, "u000@acme.example"); !d.Allowed {
		t.Fatal("a stale reviewed diff was published")
	}
	rep, err = e.Run(ctx, "acme", Options{Mode: ModeFull, Force: true, ReviewedDiffHash: rep.DiffHash})
	if err != nil || rep.Result != ResultPublished || rep.Changes.Published != 6 {
		t.Fatalf("release of the reviewed diff: %+v, %v", rep, err)
	}
	if d := allowed(t, cache, "u005@acme.example"); d.Allowed {
		t.Error("the reviewed diff was not published")
	}
}

// TestReleaseOfALostGroupBoundToReviewedDiff: the same for a read held
// because a bound group emptied: a release of a stale diff says
// ErrDiffChanged (not only "held"), so a console can show the new diff.
func TestReleaseOfALostGroupBoundToReviewedDiff(t *testing.T) {
	e, src, cache, _ := setup(t)
	ctx := context.Background()
	src.set(org(10, nil), nil)
	if _, err := e.Run(ctx, "acme", Options{}); err != nil {
		t.Fatal(err)
	}
	emptied := org(10, nil)
	emptied.Groups[0].Members = nil
	src.set(emptied, nil)
	held, err := e.Run(ctx, "acme", Options{})
	if !errors.Is(err, ErrHeld) || !errors.Is(err, ErrLostGroup) || held.DiffHash == "" {
		t.Fatalf("want a lost-group hold with a diff hash: %+v, %v", held, err)
	}
	moved := org(11, nil)
	moved.Groups[0].Members = nil
	src.set(moved, nil)
	rep, err := e.Run(ctx, "acme", Options{Mode: ModeFull, Force: true, ReviewedDiffHash: held.DiffHash})
	if !errors.Is(err, ErrDiffChanged) || !errors.Is(err, ErrHeld) || rep.DiffHash == held.DiffHash {
		t.Fatalf("release of a stale diff: %+v, %v; want held again, ErrDiffChanged, a new hash", rep, err)
	}
	if d := allowed(t, cache, "u000@acme.example"); !d.Allowed {
		t.Fatal("a stale reviewed diff was published")
	}
	rep, err = e.Run(ctx, "acme", Options{Mode: ModeFull, Force: true, ReviewedDiffHash: rep.DiffHash})
	if err != nil || rep.Result != ResultPublished {
		t.Fatalf("release of the reviewed diff: %+v, %v", rep, err)
	}
	if d := allowed(t, cache, "u000@acme.example"); d.Allowed {
		t.Error("the reviewed diff was not published")
	}
}

// TestFullIfIsDecidedWhenThePassStarts: an incremental pass that waited
// behind a running pass asks FullIf only once that pass is done, so a
// condition the first pass settles (a replica's first full pass after an
// acquisition) keeps the second one incremental.
func TestFullIfIsDecidedWhenThePassStarts(t *testing.T) {
	e, src, _, _ := setup(t)
	ctx := context.Background()
	src.set(org(10, nil), nil)
	if _, err := e.Run(ctx, "acme", Options{}); err != nil {
		t.Fatal(err)
	}
	before := len(e.RecentReports("acme")) // full passes are all recorded there
	src.mu.Lock()
	src.block = make(chan struct{})
	src.mu.Unlock()
	first := make(chan error, 1)
	go func() {
		_, err := e.Run(ctx, "acme", Options{Mode: ModeFull})
		first <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, running := e.Progress("acme"); running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first pass never started")
		}
	}
	// Full unless the first (full) pass has ended by the time it is asked.
	fullIf := func() bool { return len(e.RecentReports("acme")) == before }
	second := make(chan Report, 1)
	go func() {
		rep, _ := e.Run(ctx, "acme", Options{Mode: ModeIncremental, FullIf: fullIf})
		second <- rep
	}()
	time.Sleep(50 * time.Millisecond) // the second pass waits for the account
	src.mu.Lock()
	close(src.block)
	src.block = nil
	src.mu.Unlock()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if rep := <-second; rep.Mode != ModeIncremental {
		t.Errorf("the waiting pass ran as %s: FullIf was asked before the first pass ended", rep.Mode)
	}
	if rep, _ := e.Run(ctx, "acme", Options{Mode: ModeIncremental, FullIf: func() bool { return true }}); rep.Mode != ModeFull {
		t.Errorf("FullIf true: ran as %s", rep.Mode)
	}
}

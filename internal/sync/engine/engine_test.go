package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/store"

	"github.com/dirsync/dirsync/internal/entitlement/mapper"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/directory"
)

// fakeSource serves whatever snapshot (or error) the test sets.
type fakeSource struct {
	mu      sync.Mutex
	snap    *directory.Snapshot
	err     error
	changed bool
	reads   int
	block   chan struct{}
}

func (f *fakeSource) set(s *directory.Snapshot, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snap, f.err, f.changed = s, err, true
}

func (f *fakeSource) Snapshot(context.Context) (*directory.Snapshot, error) {
	f.mu.Lock()
	block := f.block
	f.reads++
	f.changed = false
	s, err := f.snap, f.err
	f.mu.Unlock()
	if block != nil {
		<-block
	}
	return s, err
}

func (f *fakeSource) Incremental(ctx context.Context) (*directory.Snapshot, bool, error) {
	f.mu.Lock()
	changed := f.changed
	f.mu.Unlock()
	s, err := f.Snapshot(ctx)
	return s, changed, err
}

// org builds a snapshot of n users in group "Pro"; mods adjust users.
func org(n int, mods map[int]func(*directory.User)) *directory.Snapshot {
	s := &directory.Snapshot{Source: "fake", Groups: []directory.Group{{Ref: "pro", Name: "Pro"}}}
	for i := range n {
		u := directory.User{ID: fmt.Sprint(i), Email: fmt.Sprintf("u%03d@acme.example", i)}
		if m := mods[i]; m != nil {
			m(&u)
		}
		s.Users = append(s.Users, u)
		s.Groups[0].Members = append(s.Groups[0].Members, int32(i))
	}
	return s
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func setup(t *testing.T) (*Engine, *fakeSource, *store.Memory, *clock) {
	t.Helper()
	src := &fakeSource{}
	cache := store.NewMemory()
	clk := &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	acct := Account{
		Policy:    mapper.Policy{Account: "acme", ClaimedDomains: []string{"acme.example"}, Bindings: []mapper.Binding{{Group: "Pro", Permission: entitlement.PermissionPro}}},
		Source:    src,
		Safeguard: Safeguard{MaxLostAccessPercent: 20, MaxLostAccessUsers: 500},
	}
	return New(cache, []Account{acct}, zap.NewNop(), clk.now), src, cache, clk
}

func allowed(t *testing.T, c *store.Memory, email string) entitlement.Decision {
	t.Helper()
	d, err := c.Check(context.Background(), email)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestFailedReadKeepsLastGood(t *testing.T) {
	e, src, cache, _ := setup(t)
	ctx := context.Background()
	src.set(org(10, nil), nil)
	if rep, err := e.Run(ctx, "acme", Options{}); err != nil || rep.Result != ResultPublished || rep.Changes.Published != 10 {
		t.Fatalf("first sync: %+v, %v", rep, err)
	}
	tests := []struct {
		name string
		snap *directory.Snapshot
		err  error
		want error
		// result: a source error fails; a read that looks broken is held
		// (releasable), publishing only account-state denials.
		result string
	}{
		{"source error", nil, errors.New("ldap: connection reset"), nil, ResultFailed},
		{"no users", &directory.Snapshot{Source: "fake", Groups: []directory.Group{{Ref: "pro", Name: "Pro"}}}, nil, ErrEmptyRead, ResultHeld},
		{"bound group gone", &directory.Snapshot{Source: "fake", Users: org(10, nil).Users}, nil, ErrLostGroup, ResultHeld},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src.set(tt.snap, tt.err)
			rep, err := e.Run(ctx, "acme", Options{})
			if err == nil || rep.Result != tt.result || rep.Error == "" {
				t.Fatalf("report %+v, err %v; want result %s", rep, err, tt.result)
			}
			if tt.result == ResultHeld && (!errors.Is(err, ErrHeld) || rep.Hold == nil) {
				t.Errorf("err = %v, hold %+v; want ErrHeld with a hold", err, rep.Hold)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v; want %v", err, tt.want)
			}
			for i := range 10 {
				if d := allowed(t, cache, fmt.Sprintf("u%03d@acme.example", i)); !d.Allowed {
					t.Fatalf("u%03d lost access after a failed read: %+v", i, d)
				}
			}
		})
	}
	// The daemon recovers by itself on the next good read.
	src.set(org(10, map[int]func(*directory.User){3: func(u *directory.User) { u.Status = directory.StatusSuspended }}), nil)
	if _, err := e.Run(ctx, "acme", Options{}); err != nil {
		t.Fatal(err)
	}
	if d := allowed(t, cache, "u003@acme.example"); d.Allowed || d.Reason != entitlement.ReasonSuspended {
		t.Errorf("after recovery u003 = %+v", d)
	}
}

func TestSafeguardHoldsButPublishesSuspensions(t *testing.T) {
	e, src, cache, _ := setup(t)
	ctx := context.Background()
	src.set(org(10, nil), nil)
	if _, err := e.Run(ctx, "acme", Options{}); err != nil {
		t.Fatal(err)
	}
	// Users 0-4 leave the group (50% > 20%), user 9 is suspended.
	next := org(10, map[int]func(*directory.User){9: func(u *directory.User) { u.Status = directory.StatusSuspended }})
	next.Groups[0].Members = next.Groups[0].Members[5:]
	src.set(next, nil)
	rep, err := e.Run(ctx, "acme", Options{})
	if !errors.Is(err, ErrHeld) || rep.Result != ResultHeld || rep.Hold == nil || rep.Hold.LostAccess != 5 {
		t.Fatalf("want a hold of 5: %+v, %v", rep, err)
	}
	if d := allowed(t, cache, "u009@acme.example"); d.Allowed {
		t.Error("suspension was held back with the mass change")
	}
	if d := allowed(t, cache, "u000@acme.example"); !d.Allowed {
		t.Error("held change was published")
	}
	st, _, _ := cache.Status(ctx, "acme")
	if st.Hold == nil {
		t.Error("hold not recorded in the status record")
	}
	rep, err = e.Run(ctx, "acme", Options{Force: true})
	if err != nil || rep.Result != ResultPublished {
		t.Fatalf("forced release: %+v, %v", rep, err)
	}
	if d := allowed(t, cache, "u000@acme.example"); d.Allowed || d.Reason != entitlement.ReasonNoPermission {
		t.Errorf("after release u000 = %+v", d)
	}
	if st, _, _ := cache.Status(ctx, "acme"); st.Hold != nil {
		t.Error("hold not cleared after release")
	}
}

// TestSafeguardHoldPublishesDuplicateIdentity (issue 12 item 11): an
// email a second active object starts to carry is a doubt about who the
// user is; its duplicate_identity denial is published at once even while
// the same read is held by the safeguard, and it is not counted as an
// unexplained loss.
func TestSafeguardHoldPublishesDuplicateIdentity(t *testing.T) {
	e, src, cache, _ := setup(t)
	ctx := context.Background()
	src.set(org(10, nil), nil)
	if _, err := e.Run(ctx, "acme", Options{}); err != nil {
		t.Fatal(err)
	}
	// Users 0-4 leave the group (50% > 20%); an active object (in no group)
	// now carries u009's address.
	next := org(10, nil)
	next.Groups[0].Members = next.Groups[0].Members[5:]
	next.Users = append(next.Users, directory.User{ID: "twin", Email: "u009@acme.example"})
	src.set(next, nil)
	rep, err := e.Run(ctx, "acme", Options{})
	if !errors.Is(err, ErrHeld) || rep.Result != ResultHeld || rep.Hold == nil || rep.Hold.LostAccess != 5 {
		t.Fatalf("want a hold of 5 (the duplicate not among them): %+v, %v", rep, err)
	}
	if d := allowed(t, cache, "u009@acme.example"); d.Allowed || d.Reason != entitlement.ReasonDuplicateIdentity {
		t.Errorf("u009 = %+v; want duplicate_identity published despite the hold", d)
	}
	if d := allowed(t, cache, "u000@acme.example"); !d.Allowed {
		t.Error("held change was published")
	}
}

// TestLostGroupHoldPublishesSuspensions: a read in which a bound group
// vanished (here a rename) used to fail every pass until someone forced a
// sync, and `release` refused for want of a hold, while users disabled in
// the directory kept access. It is a hold now: the suspension found by the
// same read is published, the rest waits for a release.
func TestLostGroupHoldPublishesSuspensions(t *testing.T) {
	e, src, cache, _ := setup(t)
	ctx := context.Background()
	src.set(org(10, nil), nil)
	if _, err := e.Run(ctx, "acme", Options{}); err != nil {
		t.Fatal(err)
	}
	renamed := org(10, map[int]func(*directory.User){7: func(u *directory.User) { u.Status = directory.StatusSuspended }})
	renamed.Groups[0].Name, renamed.Groups[0].Ref = "Pro (old)", "pro-old"
	src.set(renamed, nil)
	for pass := range 2 { // the next pass holds again: the group is still lost
		rep, err := e.Run(ctx, "acme", Options{Mode: ModeFull})
		if !errors.Is(err, ErrHeld) || !errors.Is(err, ErrLostGroup) || rep.Result != ResultHeld {
			t.Fatalf("pass %d: %+v, %v; want a lost-group hold", pass, rep, err)
		}
		if d := allowed(t, cache, "u007@acme.example"); d.Allowed || d.Reason != entitlement.ReasonSuspended {
			t.Errorf("pass %d: suspended u007 = %+v; want suspended despite the hold", pass, d)
		}
		if d := allowed(t, cache, "u000@acme.example"); !d.Allowed {
			t.Errorf("pass %d: held change published: u000 = %+v", pass, d)
		}
		st, _, _ := cache.Status(ctx, "acme")
		if st.Hold == nil || st.Hold.Kind != accesscache.HoldLostGroup || st.Hold.LostAccess != 9 {
			t.Errorf("pass %d: status hold %+v; want a lost_group hold of 9", pass, st.Hold)
		}
	}
	// A release (forced full pass) publishes the rest and clears the hold.
	if rep, err := e.Run(ctx, "acme", Options{Mode: ModeFull, Force: true}); err != nil || rep.Result != ResultPublished {
		t.Fatalf("release: %+v, %v", rep, err)
	}
	if d := allowed(t, cache, "u000@acme.example"); d.Allowed || d.Reason != entitlement.ReasonNoPermission {
		t.Errorf("after release u000 = %+v", d)
	}
	if st, _, _ := cache.Status(ctx, "acme"); st.Hold != nil {
		t.Errorf("hold not cleared by the release: %+v", st.Hold)
	}
}

// TestExpiryWhileDirectoryDown: an account whose accountExpires passes
// while every read fails is denied on time, from the last published state;
// nothing else moves.
func TestExpiryWhileDirectoryDown(t *testing.T) {
	e, src, cache, clk := setup(t)
	ctx := context.Background()
	expiry := clk.t.Add(time.Minute)
	src.set(org(3, map[int]func(*directory.User){1: func(u *directory.User) { u.ExpiresAt = expiry }}), nil)
	if _, err := e.Run(ctx, "acme", Options{}); err != nil {
		t.Fatal(err)
	}
	src.set(nil, errors.New("ldap: connection refused"))
	clk.t = expiry.Add(-time.Second)
	if _, err := e.Run(ctx, "acme", Options{Mode: ModeIncremental}); err == nil {
		t.Fatal("a failing read succeeded")
	}
	if d := allowed(t, cache, "u001@acme.example"); !d.Allowed {
		t.Fatalf("denied before the expiry: %+v", d)
	}
	clk.t = expiry.Add(time.Second)
	rep, err := e.Run(ctx, "acme", Options{Mode: ModeIncremental})
	if err == nil || !rep.ReadFailed || rep.Changes.Published != 1 {
		t.Errorf("pass after the expiry: %+v, %v; want a failed read that published the expiry", rep, err)
	}
	d := allowed(t, cache, "u001@acme.example")
	if d.Allowed || d.Reason != entitlement.ReasonInactive || d.Permission != entitlement.PermissionNone || len(d.Via) != 0 {
		t.Errorf("after the expiry with the directory down: %+v; want inactive", d)
	}
	if d.Detail == nil || d.Detail.ExpiresAt == nil || !d.Detail.ExpiresAt.Equal(expiry) {
		t.Errorf("detail %+v does not say when it expired", d.Detail)
	}
	for _, other := range []string{"u000@acme.example", "u002@acme.example"} {
		if d := allowed(t, cache, other); !d.Allowed {
			t.Errorf("%s lost access during the outage: %+v", other, d)
		}
	}
	// The directory comes back with the same data: nothing more to publish.
	src.set(org(3, map[int]func(*directory.User){1: func(u *directory.User) { u.ExpiresAt = expiry }}), nil)
	if rep, err := e.Run(ctx, "acme", Options{Mode: ModeFull}); err != nil || rep.Changes.Published != 0 {
		t.Errorf("first good read after the outage: %+v, %v; want nothing to publish", rep, err)
	}
}

func TestSafeguardLimits(t *testing.T) {
	tests := []struct {
		name       string
		allowed    int
		lose       int
		pct        float64
		users      int
		wantHeld   bool
		firstEmpty bool
	}{
		{"under percent", 100, 20, 20, 500, false, false},
		{"over percent", 100, 21, 20, 500, true, false},
		{"absolute limit smaller", 1000, 11, 20, 10, true, false},
		{"first sync never held", 0, 0, 20, 500, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &Engine{}
			d := &mapper.Delta{PreviouslyAllowed: tt.allowed, LostAccess: tt.lose}
			held := e.hold(Safeguard{MaxLostAccessPercent: tt.pct, MaxLostAccessUsers: tt.users}, d, 0, time.Now()) != nil
			if held != tt.wantHeld {
				t.Errorf("held = %t; want %t", held, tt.wantHeld)
			}
		})
	}
}

func TestDryRunPublishesNothing(t *testing.T) {
	e, src, cache, _ := setup(t)
	ctx := context.Background()
	src.set(org(3, nil), nil)
	if _, err := e.Run(ctx, "acme", Options{}); err != nil {
		t.Fatal(err)
	}
	src.set(org(3, map[int]func(*directory.User){1: func(u *directory.User) { u.Status = directory.StatusSuspended }}), nil)
	rep, err := e.Run(ctx, "acme", Options{DryRun: true})
	if err != nil || rep.Result != ResultDryRun {
		t.Fatalf("dry run: %+v, %v", rep, err)
	}
	if len(rep.Diff) != 1 || rep.Diff[0].Email != "u001@acme.example" || rep.Diff[0].Change != "lose" || rep.Diff[0].Reason != entitlement.ReasonSuspended {
		t.Errorf("diff = %+v", rep.Diff)
	}
	if d := allowed(t, cache, "u001@acme.example"); !d.Allowed {
		t.Error("dry run published")
	}
}

func TestIncrementalAndExpiryOnTime(t *testing.T) {
	e, src, cache, clk := setup(t)
	ctx := context.Background()
	expiry := clk.t.Add(3 * time.Second)
	src.set(org(2, map[int]func(*directory.User){0: func(u *directory.User) { u.ExpiresAt = expiry }}), nil)
	if _, err := e.Run(ctx, "acme", Options{}); err != nil {
		t.Fatal(err)
	}
	rep, err := e.Run(ctx, "acme", Options{Mode: ModeIncremental})
	if err != nil || rep.Result != ResultUnchanged {
		t.Fatalf("incremental with no change: %+v, %v", rep, err)
	}
	if d := allowed(t, cache, "u000@acme.example"); !d.Allowed {
		t.Fatal("expiring user denied early")
	}
	clk.t = expiry.Add(time.Millisecond)
	if _, err := e.Run(ctx, "acme", Options{Mode: ModeIncremental}); err != nil {
		t.Fatal(err)
	}
	if d := allowed(t, cache, "u000@acme.example"); d.Allowed || d.Reason != entitlement.ReasonInactive {
		t.Errorf("after expiry, with no directory change: %+v", d)
	}
}

func TestRunsOfOneAccountNeverOverlap(t *testing.T) {
	e, src, _, _ := setup(t)
	src.set(org(1, nil), nil)
	block := make(chan struct{})
	src.mu.Lock()
	src.block = block
	src.mu.Unlock()
	done := make(chan error)
	go func() {
		_, err := e.Run(context.Background(), "acme", Options{})
		done <- err
	}()
	for { // wait until the first run is inside the source
		src.mu.Lock()
		r := src.reads
		src.mu.Unlock()
		if r == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := e.Run(context.Background(), "acme", Options{SkipIfBusy: true}); !errors.Is(err, ErrBusy) {
		t.Errorf("overlapping run: err = %v; want ErrBusy", err)
	}
	close(block)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := e.Run(context.Background(), "nope", Options{}); !errors.Is(err, ErrUnknownAccount) {
		t.Errorf("unknown account: %v", err)
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestAccountsDoNotBlockEachOther: a pass stuck on one account's directory
// does not delay another account's pass.
func TestAccountsDoNotBlockEachOther(t *testing.T) {
	slow, fast := &fakeSource{}, &fakeSource{}
	slow.set(org(1, nil), nil)
	fast.set(org(1, nil), nil)
	block := make(chan struct{})
	slow.block = block
	policy := func(id string) mapper.Policy {
		return mapper.Policy{Account: id, ClaimedDomains: []string{"acme.example"}, Bindings: []mapper.Binding{{Group: "Pro", Permission: entitlement.PermissionPro}}}
	}
	e := New(store.NewMemory(), []Account{{Policy: policy("slow"), Source: slow}, {Policy: policy("fast"), Source: fast}}, zap.NewNop(), time.Now)
	done := make(chan error)
	go func() {
		_, err := e.Run(context.Background(), "slow", Options{})
		done <- err
	}()
	finished := make(chan error)
	go func() {
		_, err := e.Run(context.Background(), "fast", Options{})
		finished <- err
	}()
	select {
	case err := <-finished:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a pass of one account waited for another account's directory")
	}
	close(block)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestKeepReportsCarriesHistoryAcrossEngines(t *testing.T) {
	old, src, cache, _ := setup(t)
	ctx := context.Background()
	src.set(org(2, nil), nil)
	if _, err := old.Run(ctx, "acme", Options{}); err != nil {
		t.Fatal(err)
	}
	// The reloaded config keeps acme and adds globex.
	next := New(cache, []Account{
		{Policy: mapper.Policy{Account: "acme", ClaimedDomains: []string{"acme.example"}, Bindings: []mapper.Binding{{Group: "Pro", Permission: entitlement.PermissionPro}}}, Source: src},
		{Policy: mapper.Policy{Account: "globex", ClaimedDomains: []string{"globex.example"}}, Source: &fakeSource{}},
	}, zap.NewNop(), time.Now)
	next.KeepReports(old)
	if rep := next.LastReports("acme")[ModeFull]; rep.Result != ResultPublished {
		t.Errorf("acme's full run after the reload = %+v, want the old engine's published run", rep)
	}
	if reps := next.LastReports("globex"); len(reps) != 0 {
		t.Errorf("globex has reports %v before any pass", reps)
	}
	// A pass of the new engine replaces the carried report.
	if _, err := next.Run(ctx, "acme", Options{}); err != nil {
		t.Fatal(err)
	}
	if rep := next.LastReports("acme")[ModeFull]; rep.Result != ResultUnchanged {
		t.Errorf("acme's full run after a new pass = %+v, want unchanged", rep)
	}
}

// TestPutAndRemoveAccountsLive: an account added, changed and removed on a
// running engine; the others are untouched.
func TestPutAndRemoveAccountsLive(t *testing.T) {
	e, src, cache, _ := setup(t)
	ctx := context.Background()
	src.set(org(3, nil), nil)
	if _, err := e.Run(ctx, "acme", Options{}); err != nil {
		t.Fatal(err)
	}
	// A second account, added while the engine runs.
	other := &fakeSource{}
	snap := org(2, nil)
	for i := range snap.Users {
		snap.Users[i].Email = fmt.Sprintf("u%03d@globex.example", i)
	}
	other.set(snap, nil)
	e.Put(Account{Policy: mapper.Policy{Account: "globex", ClaimedDomains: []string{"globex.example"},
		Bindings: []mapper.Binding{{Group: "Pro", Permission: entitlement.PermissionBasic}}}, Source: other,
		Safeguard: Safeguard{MaxLostAccessPercent: 20, MaxLostAccessUsers: 500}})
	if got := e.Accounts(); len(got) != 2 || got[1] != "globex" {
		t.Fatalf("accounts %v", got)
	}
	if _, err := e.Run(ctx, "globex", Options{}); err != nil {
		t.Fatal(err)
	}
	if d := allowed(t, cache, "u001@globex.example"); d.Permission != entitlement.PermissionBasic {
		t.Fatalf("globex user = %+v", d)
	}
	// A binding change is applied by the next pass, even an incremental
	// one that reads no directory change.
	e.Put(Account{Policy: mapper.Policy{Account: "globex", ClaimedDomains: []string{"globex.example"},
		Bindings: []mapper.Binding{{Group: "Pro", Permission: entitlement.PermissionPro}}}, Source: other,
		Safeguard: Safeguard{MaxLostAccessPercent: 20, MaxLostAccessUsers: 500}})
	if rep, err := e.Run(ctx, "globex", Options{Mode: ModeIncremental}); err != nil || rep.Changes.Published != 2 {
		t.Fatalf("pass after the binding change: %+v %v", rep, err)
	}
	if d := allowed(t, cache, "u001@globex.example"); d.Permission != entitlement.PermissionPro {
		t.Errorf("after the binding change = %+v", d)
	}
	// Removing globex with unpublish: its users become unknown_user; acme
	// is untouched and the removed account runs no more.
	n, err := e.Remove(ctx, "globex", true)
	if err != nil || n != 2 {
		t.Fatalf("remove: %d %v", n, err)
	}
	if d := allowed(t, cache, "u001@globex.example"); d.Reason != entitlement.ReasonUnknownUser {
		t.Errorf("after removal = %+v", d)
	}
	if _, found, _ := cache.Status(ctx, "globex"); found {
		t.Error("the removed account's status record survives")
	}
	if d := allowed(t, cache, "u001@acme.example"); !d.Allowed {
		t.Errorf("acme's user after globex's removal = %+v", d)
	}
	if _, err := e.Run(ctx, "globex", Options{}); !errors.Is(err, ErrUnknownAccount) {
		t.Errorf("a pass of the removed account: %v", err)
	}
	if _, err := e.Remove(ctx, "globex", true); !errors.Is(err, ErrUnknownAccount) {
		t.Errorf("removing twice: %v", err)
	}
}

// TestSafeguardWindowHoldsPiecemealRemovals: with a window, losses
// published by earlier passes count against the limits, so a mass removal
// pushed one user per pass (a SCIM client unassigning everyone) is held
// once it crosses them; suspensions still go through; time and a release
// empty the window. Without a window each pass is judged alone.
func TestSafeguardWindowHoldsPiecemealRemovals(t *testing.T) {
	removeFirst := func(n int, suspended ...int) *directory.Snapshot {
		s := org(100, nil)
		s.Groups[0].Members = s.Groups[0].Members[n:] // u000..u(n-1) lose the bound group
		for _, i := range suspended {
			s.Users[i].Status = directory.StatusSuspended
		}
		return s
	}
	for _, window := range []time.Duration{0, time.Hour} {
		t.Run(fmt.Sprint("window ", window), func(t *testing.T) {
			e, src, cache, clk := setup(t)
			e.Put(Account{Policy: e.account("acme").cfg.Policy, Source: src,
				Safeguard: Safeguard{MaxLostAccessPercent: 20, MaxLostAccessUsers: 500, Window: window}})
			ctx := context.Background()
			src.set(org(100, nil), nil)
			if _, err := e.Run(ctx, "acme", Options{}); err != nil {
				t.Fatal(err)
			}
			// 20 passes, one removal each: 20% of 100, within the limit.
			for n := 1; n <= 20; n++ {
				clk.t = clk.t.Add(time.Second)
				src.set(removeFirst(n), nil)
				if rep, err := e.Run(ctx, "acme", Options{Mode: ModeIncremental}); err != nil {
					t.Fatalf("removal %d: %+v %v", n, rep.Hold, err)
				}
			}
			// The 21st is one too many within the window; u099's
			// suspension in the same pass is published anyway.
			clk.t = clk.t.Add(time.Second)
			src.set(removeFirst(21, 99), nil)
			rep, err := e.Run(ctx, "acme", Options{Mode: ModeIncremental})
			if window == 0 {
				if err != nil {
					t.Fatalf("without a window each pass is judged alone: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrHeld) || rep.Hold == nil || rep.Hold.LostAccess != 21 || !strings.Contains(rep.Hold.Reason, "within 1h0m0s") {
				t.Fatalf("21st removal within the window: %+v %v; want a safeguard hold of 21", rep.Hold, err)
			}
			if d := allowed(t, cache, "u020@acme.example"); !d.Allowed {
				t.Errorf("u020 lost access although the pass was held: %+v", d)
			}
			if d := allowed(t, cache, "u099@acme.example"); d.Reason != entitlement.ReasonSuspended {
				t.Errorf("u099's suspension waited for the hold: %+v", d)
			}
			// An hour later the earlier losses leave the window: at the
			// next evaluation (the hourly full pass) the held removal alone
			// is within the limit and is published.
			clk.t = clk.t.Add(time.Hour)
			if rep, err := e.Run(ctx, "acme", Options{Mode: ModeFull}); err != nil || rep.Hold != nil {
				t.Fatalf("after the window: %+v %v", rep.Hold, err)
			}
			if d := allowed(t, cache, "u020@acme.example"); d.Allowed {
				t.Errorf("u020 still allowed: %+v", d)
			}
			// 20 more within the new window, then a release confirms them
			// and the next removal starts an empty window.
			for n := 22; n <= 42; n++ {
				clk.t = clk.t.Add(time.Second)
				src.set(removeFirst(n, 99), nil)
				_, err = e.Run(ctx, "acme", Options{Mode: ModeIncremental})
			}
			if !errors.Is(err, ErrHeld) {
				t.Fatalf("21 more removals within the window: %v", err)
			}
			if _, err := e.Run(ctx, "acme", Options{Mode: ModeFull, Force: true}); err != nil {
				t.Fatalf("release: %v", err)
			}
			clk.t = clk.t.Add(time.Second)
			src.set(removeFirst(43, 99), nil)
			if _, err := e.Run(ctx, "acme", Options{Mode: ModeIncremental}); err != nil {
				t.Fatalf("after a release the window is empty: %v", err)
			}
		})
	}
}

// TestGroupsAndPolicyDryRun: the last read's groups are listed with
// direct and transitive member counts (nested, with a cycle), and a dry
// run with another policy previews a binding change without publishing.
func TestGroupsAndPolicyDryRun(t *testing.T) {
	e, src, cache, _ := setup(t)
	ctx := context.Background()
	if _, _, ok := e.Groups("acme", "", 10); ok {
		t.Error("groups listed before any read")
	}
	snap := org(4, nil) // Pro: u000-u003
	snap.Groups = append(snap.Groups,
		directory.Group{Ref: "staff", Name: "Staff", Members: []int32{0, 3}, Subgroups: []int32{2}},
		directory.Group{Ref: "ops", Name: "Ops", Members: []int32{1}, Subgroups: []int32{1}}) // a cycle
	src.set(snap, nil)
	if _, err := e.Run(ctx, "acme", Options{}); err != nil {
		t.Fatal(err)
	}
	got, total, ok := e.Groups("acme", "", 10)
	if !ok || total != 3 || len(got) != 3 {
		t.Fatalf("groups %+v total %d ok %v", got, total, ok)
	}
	byRef := map[string]GroupSummary{}
	for _, g := range got {
		byRef[g.Ref] = g
	}
	if s := byRef["staff"]; s.DirectMembers != 2 || s.TransitiveMembers != 3 || s.Subgroups != 1 {
		t.Errorf("staff %+v; want 2 direct, 3 transitive (ops nested, cycle back)", s)
	}
	if g, _, _ := e.Groups("acme", "OP", 10); len(g) != 1 || g[0].Ref != "ops" || g[0].TransitiveMembers != 3 {
		t.Errorf("search OP: %+v", g)
	}
	if g, total, _ := e.Groups("acme", "", 1); len(g) != 1 || total != 3 || g[0].Name != "Ops" {
		t.Errorf("limit 1: %+v total %d (sorted by name)", g, total)
	}
	// Preview binding Staff to basic instead of Pro to pro.
	preview := mapper.Policy{Account: "acme", ClaimedDomains: []string{"acme.example"},
		Bindings: []mapper.Binding{{Group: "Staff", Permission: entitlement.PermissionBasic}}}
	rep, err := e.Run(ctx, "acme", Options{Mode: ModeIncremental, DryRun: true, Policy: &preview})
	if err != nil || rep.Result != ResultDryRun || len(rep.Diff) != 4 {
		t.Fatalf("dry run: %+v %v", rep, err)
	}
	if d := allowed(t, cache, "u002@acme.example"); d.Permission != entitlement.PermissionPro {
		t.Errorf("the preview published: %+v", d)
	}
}

// failingIndex is a cache whose reads of the published state fail while
// fail is set.
type failingIndex struct {
	*store.Memory
	mu   sync.Mutex
	fail error
}

func (f *failingIndex) err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fail
}

func (f *failingIndex) Published(ctx context.Context, account string) (map[string]mapper.Published, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Memory.Published(ctx, account)
}

func (f *failingIndex) Status(ctx context.Context, account string) (accesscache.AccountStatus, bool, error) {
	if err := f.err(); err != nil {
		return accesscache.AccountStatus{}, false, err
	}
	return f.Memory.Status(ctx, account)
}

// TestCacheReadFailureFailsThePass: a full pass reads the published state
// while it maps; when that read fails, the pass fails with its error and
// publishes nothing (a suspension included: without the index the diff
// cannot be trusted), the reading goroutine ends with the pass (TestMain's
// goleak), and the next pass with a readable cache publishes.
func TestCacheReadFailureFailsThePass(t *testing.T) {
	cache := &failingIndex{Memory: store.NewMemory()}
	src := &fakeSource{}
	e := New(cache, []Account{{Policy: mapper.Policy{Account: "acme", ClaimedDomains: []string{"acme.example"},
		Bindings: []mapper.Binding{{Group: "Pro", Permission: entitlement.PermissionPro}}}, Source: src}}, zap.NewNop(), time.Now)
	ctx := context.Background()
	src.set(org(10, nil), nil)
	if _, err := e.Run(ctx, "acme", Options{}); err != nil {
		t.Fatal(err)
	}
	errDown := errors.New("redis: connection refused")
	cache.mu.Lock()
	cache.fail = errDown
	cache.mu.Unlock()
	src.set(org(10, map[int]func(*directory.User){3: func(u *directory.User) { u.Status = directory.StatusSuspended }}), nil)
	rep, err := e.Run(ctx, "acme", Options{Mode: ModeFull})
	if !errors.Is(err, errDown) || rep.Result != ResultFailed || rep.Changes.Published != 0 {
		t.Fatalf("pass with an unreadable cache: %+v, %v; want failed with the cache's error, nothing published", rep, err)
	}
	if d := allowed(t, cache.Memory, "u003@acme.example"); !d.Allowed {
		t.Fatalf("a pass that could not read the index published %+v", d)
	}
	cache.mu.Lock()
	cache.fail = nil
	cache.mu.Unlock()
	if _, err := e.Run(ctx, "acme", Options{Mode: ModeFull}); err != nil {
		t.Fatal(err)
	}
	if d := allowed(t, cache.Memory, "u003@acme.example"); d.Allowed || d.Reason != entitlement.ReasonSuspended {
		t.Fatalf("after the cache came back u003 = %+v", d)
	}
}

package schedule

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder counts runs per account and the most running at once.
type recorder struct {
	mu       sync.Mutex
	runs     map[string]int
	starts   []time.Time
	running  int
	maxConc  int
	duration map[string]time.Duration // how long an account's pass takes
	triggers map[string]int
}

func newRecorder() *recorder {
	return &recorder{runs: map[string]int{}, duration: map[string]time.Duration{}, triggers: map[string]int{}}
}

func (r *recorder) run(ctx context.Context, account, mode string, triggered bool) {
	r.mu.Lock()
	r.runs[account+"/"+mode]++
	if triggered {
		r.triggers[account+"/"+mode]++
	}
	r.starts = append(r.starts, time.Now())
	r.running++
	r.maxConc = max(r.maxConc, r.running)
	d := r.duration[account]
	r.mu.Unlock()
	if d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	r.mu.Lock()
	r.running--
	r.mu.Unlock()
}

func (r *recorder) count(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs[name]
}

func start(t *testing.T, s *Scheduler) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

// TestJitterSpreadsPasses: 1,000 accounts on "@every 5s" run once per
// period each, spread over the period instead of all in one instant.
func TestJitterSpreadsPasses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRecorder()
		s := New(r.run, Options{Workers: 8})
		for i := range 1000 {
			if err := s.Put(fmt.Sprintf("acct-%04d", i), []Job{{Mode: "incremental", Spec: "@every 5s", Timeout: time.Second}}); err != nil {
				t.Fatal(err)
			}
		}
		stop := start(t, s)
		time.Sleep(10*time.Second - time.Millisecond)
		synctest.Wait()
		stop()
		r.mu.Lock()
		defer r.mu.Unlock()
		for name, n := range r.runs {
			if n != 2 {
				t.Fatalf("%s ran %d times in two periods; want 2", name, n)
			}
		}
		perSecond := map[int64]int{}
		for _, at := range r.starts {
			perSecond[at.Unix()]++
		}
		for sec, n := range perSecond {
			if n > 300 { // uniform: 200 per second
				t.Errorf("%d passes started in second %d; want them spread (about 200)", n, sec)
			}
		}
	})
}

// TestPoolBoundsAndSlowAccount: at most Workers passes run at once, and an
// account whose passes hang (until their timeout) does not hold up the
// others' schedules.
func TestPoolBoundsAndSlowAccount(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRecorder()
		r.duration["slow"] = time.Hour // hangs until its timeout
		s := New(r.run, Options{Workers: 3})
		if err := s.Put("slow", []Job{{Mode: "incremental", Spec: "@every 1s", Timeout: 10 * time.Second}}); err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			a := fmt.Sprintf("fast-%02d", i)
			r.duration[a] = 50 * time.Millisecond
			if err := s.Put(a, []Job{{Mode: "incremental", Spec: "@every 1s", Timeout: 10 * time.Second}}); err != nil {
				t.Fatal(err)
			}
		}
		stop := start(t, s)
		time.Sleep(30 * time.Second)
		synctest.Wait()
		st := s.Stats()
		stop()
		if r.maxConc > 3 {
			t.Errorf("%d passes ran at once; want at most 3 workers", r.maxConc)
		}
		if n := r.count("slow/incremental"); n < 2 || n > 4 {
			t.Errorf("slow ran %d times in 30 s with a 10 s timeout; want its ticks coalesced (about 3)", n)
		}
		for i := range 20 {
			if n := r.count(fmt.Sprintf("fast-%02d/incremental", i)); n < 25 {
				t.Errorf("fast-%02d ran %d times in 30 s; want about 30 despite the slow account", i, n)
			}
		}
		if st.Coalesced == 0 || st.LagMaxSeconds > 2 {
			t.Errorf("stats %+v; want coalesced ticks and little lag", st)
		}
	})
}

// TestPutRemoveTrigger: accounts are added, changed and removed while the
// scheduler runs, touching no other account; Trigger runs a pass at once.
func TestPutRemoveTrigger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRecorder()
		s := New(r.run, Options{Workers: 2})
		job := func(spec string) []Job { return []Job{{Mode: "incremental", Spec: spec, Timeout: time.Second}} }
		if err := s.Put("a", job("@every 1h")); err != nil {
			t.Fatal(err)
		}
		if err := s.Put("b", append(job("@every 1h"), Job{Mode: "full", Spec: "@every 1h", RunAtStart: true, Timeout: time.Second})); err != nil {
			t.Fatal(err)
		}
		stop := start(t, s)
		defer stop()
		synctest.Wait()
		if r.count("b/full") != 1 || r.count("a/incremental") != 0 {
			t.Fatalf("after start: %v; want b's full pass run at start only", r.runs)
		}
		nextA := s.Next("a", "incremental")
		if err := s.Put("b", job("@every 1s")); err != nil { // b changes; its full job goes
			t.Fatal(err)
		}
		if !s.Next("a", "incremental").Equal(nextA) {
			t.Error("changing b moved a's schedule")
		}
		if !s.Next("b", "full").IsZero() {
			t.Error("b's full job survived a Put without it")
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if n := r.count("b/incremental"); n < 2 {
			t.Errorf("b ran %d times on its new 1 s schedule", n)
		}
		s.Remove("b")
		before := r.count("b/incremental")
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if r.count("b/incremental") != before {
			t.Error("b ran after Remove")
		}
		if !s.Trigger("a", "incremental") {
			t.Fatal("Trigger of a's job refused")
		}
		synctest.Wait()
		if r.triggers["a/incremental"] != 1 {
			t.Errorf("triggered runs of a: %d", r.triggers["a/incremental"])
		}
		if s.Trigger("b", "incremental") || s.Trigger("nope", "full") {
			t.Error("Trigger of an unknown job accepted")
		}
	})
}

func TestPanicsAreRecoveredAndStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var runs, cancelled atomic.Int32
		s := New(func(ctx context.Context, account, mode string, _ bool) {
			runs.Add(1)
			if account == "boom" {
				panic("boom")
			}
			<-ctx.Done()
			cancelled.Add(1)
		}, Options{Workers: 2})
		if err := s.Put("boom", []Job{{Mode: "incremental", Spec: "@every 1s", Timeout: time.Second}}); err != nil {
			t.Fatal(err)
		}
		if err := s.Put("long", []Job{{Mode: "full", Spec: "@every 1h", Timeout: time.Hour, RunAtStart: true}}); err != nil {
			t.Fatal(err)
		}
		stop := start(t, s)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if runs.Load() < 3 {
			t.Errorf("runs %d; want the panicking job to keep running", runs.Load())
		}
		stop()
		if cancelled.Load() != 1 {
			t.Error("the running pass was not cancelled before Run returned")
		}
	})
}

func TestBadSpec(t *testing.T) {
	s := New(func(context.Context, string, string, bool) {}, Options{})
	for _, spec := range []string{"every day", "TZ=UTC"} {
		if err := s.Put("x", []Job{{Mode: "full", Spec: spec}}); err == nil {
			t.Errorf("spec %q accepted", spec)
		}
	}
}

// TestGranularityBatchesWakeups: with Granularity, passes due close together
// start together (far fewer distinct start instants: fewer wake-ups), never
// more than Granularity early, so an account's passes stay a period apart
// (less at most Granularity) and none is lost, for @every and cron specs
// alike (a pass queued early is not queued again for the same time).
func TestGranularityBatchesWakeups(t *testing.T) {
	const granularity = 100 * time.Millisecond
	for _, c := range []struct {
		spec    string
		period  time.Duration
		run     time.Duration
		atLeast int
		maxWake int
	}{
		{"@every 5s", 5 * time.Second, 10*time.Second - time.Millisecond, 2, 110},
		{"* * * * *", time.Minute, 3*time.Minute - time.Millisecond, 2, 250},
	} {
		t.Run(c.spec, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var mu sync.Mutex
				starts := map[string][]time.Time{}
				s := New(func(_ context.Context, account, _ string, _ bool) {
					mu.Lock()
					starts[account] = append(starts[account], time.Now())
					mu.Unlock()
				}, Options{Workers: 8, Granularity: granularity})
				for i := range 1000 {
					if err := s.Put(fmt.Sprintf("acct-%04d", i), []Job{{Mode: "incremental", Spec: c.spec, Timeout: time.Second}}); err != nil {
						t.Fatal(err)
					}
				}
				stop := start(t, s)
				time.Sleep(c.run)
				synctest.Wait()
				stop()
				mu.Lock()
				defer mu.Unlock()
				if len(starts) != 1000 {
					t.Fatalf("%d accounts ran; want 1000", len(starts))
				}
				instants := map[time.Time]bool{}
				for name, at := range starts {
					if len(at) < c.atLeast {
						t.Fatalf("%s ran %d times; want at least %d", name, len(at), c.atLeast)
					}
					for i := 1; i < len(at); i++ {
						if gap := at[i].Sub(at[i-1]); gap < c.period-granularity {
							t.Fatalf("%s ran twice %v apart; want a period (%v) less at most %v", name, gap, c.period, granularity)
						}
					}
					for _, a := range at {
						instants[a] = true
					}
				}
				if len(instants) > c.maxWake {
					t.Errorf("%d distinct start instants; want batches (at most %d)", len(instants), c.maxWake)
				}
			})
		})
	}
}

// TestEarlyCronPassIsNotRequeued: a cron pass dispatched early (before its
// minute, within Granularity) is next due a minute later, not again at the
// same time.
func TestEarlyCronPassIsNotRequeued(t *testing.T) {
	s := New(func(context.Context, string, string, bool) {}, Options{Granularity: 100 * time.Millisecond})
	if err := s.Put("a", []Job{{Mode: "full", Spec: "* * * * *"}}); err != nil {
		t.Fatal(err)
	}
	e := s.entries[key{"a", "full"}]
	e.phase = 30 * time.Millisecond
	minute := time.Date(2026, 12, 5, 10, 1, 0, 0, time.UTC)
	due := minute.Add(e.phase)
	if got := s.after(e, due, minute.Add(-20*time.Millisecond)); !got.Equal(due.Add(time.Minute)) {
		t.Errorf("after a pass due %v dispatched 50 ms early: next %v, want %v", due, got, due.Add(time.Minute))
	}
}

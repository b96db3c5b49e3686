// Package schedule decides when each account's passes run and runs them on
// a bounded pool of workers. It is the only package that knows about cron
// specs (parsed with robfig/cron/v3 through config.ParseSchedule).
//
// At thousands of accounts, three things matter:
//   - passes run on Options.Workers workers at most, however many are due;
//   - "@every 5s" for 5,000 accounts does not fire 5,000 passes in one
//     millisecond: each (account, mode) gets a fixed phase within its
//     period, derived from its name, so passes spread evenly over time;
//   - one account cannot starve the others: every pass has a timeout, an
//     account has at most one pass of a mode queued (later ticks coalesce
//     into it) and one running, and the queue is first come, first served,
//     with triggered passes (an Okta event hook, a user's suspension) first.
//
// Accounts are added, changed and removed while the scheduler runs (Put,
// Remove), touching no other account's schedule.
package schedule

import (
	"container/heap"
	"context"
	"fmt"
	"hash/fnv"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
	"go.uber.org/zap"

	"github.com/dirsync/dirsync/internal/config"
)

// Job is one scheduled pass of an account.
type Job struct {
	Mode string
	// Spec is a cron spec such as "@every 5s".
	Spec string
	// Timeout bounds one run; its context is cancelled after it.
	Timeout time.Duration
	// RunAtStart runs the job as soon as it is added, besides its schedule.
	RunAtStart bool
}

// RunFunc runs one pass. triggered is true for a pass asked for by Trigger
// rather than by the schedule.
type RunFunc func(ctx context.Context, account, mode string, triggered bool)

// Options configures a Scheduler.
type Options struct {
	// Workers bounds the passes running at once (schedule.
	// max_concurrent_passes). Default 2 × GOMAXPROCS, at least 4.
	Workers int
	Log     *zap.Logger
	// Now is the clock (tests).
	Now func() time.Time
	// Granularity: passes due within this much of each other are queued
	// together, one wake-up for all of them; a pass may start up to this
	// early, never late. With thousands of accounts on a 5 s schedule it
	// saves a timer wake-up per pass. Default 0 (each pass on its own).
	Granularity time.Duration
}

// Stats describes the queue, for /v1/status and metrics.
type Stats struct {
	Workers int `json:"workers"`
	Running int `json:"running"`
	// Queued is how many passes wait for a worker.
	Queued int `json:"queued"`
	// Jobs is how many (account, mode) schedules exist.
	Jobs int `json:"jobs"`
	// LagSeconds is how late passes started after they were due, over the
	// last 1,024 passes: the 50th and 99th percentiles and the maximum.
	LagP50Seconds float64 `json:"lag_p50_seconds"`
	LagP99Seconds float64 `json:"lag_p99_seconds"`
	LagMaxSeconds float64 `json:"lag_max_seconds"`
	// Coalesced counts ticks that found their pass still queued or running.
	Coalesced int64 `json:"coalesced"`
}

type key struct{ account, mode string }

// entry is one job's state. All fields are guarded by Scheduler.mu.
type entry struct {
	key
	job    Job
	sched  cron.Schedule
	every  time.Duration // > 0 for "@every" schedules
	phase  time.Duration // jitter
	next   time.Time
	index  int // in the heap; -1 when not in it
	queued bool
	// due is when the queued pass was due (lag is measured from it).
	due       time.Time
	triggered bool
	running   bool
	// rerun: triggered while running; run again after.
	rerun   bool
	removed bool
}

// Scheduler runs jobs on a worker pool. Create it with New, add jobs with
// Put, and call Run once.
type Scheduler struct {
	run RunFunc
	o   Options

	mu        sync.Mutex
	cond      *sync.Cond
	entries   map[key]*entry
	timers    timerHeap
	queue     []*entry // FIFO; triggered passes are put in front
	running   int
	stopped   bool
	lags      []time.Duration // ring
	lagAt     int
	coalesced int64
	wake      chan struct{}
}

// New returns a scheduler that runs passes with run.
func New(run RunFunc, o Options) *Scheduler {
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers()
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Scheduler{run: run, o: o, entries: map[key]*entry{}, wake: make(chan struct{}, 1)}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// Put adds the jobs of an account, or replaces its jobs: modes not in jobs
// are removed, the others rescheduled. Other accounts are untouched.
func (s *Scheduler) Put(account string, jobs []Job) error {
	parsed := make([]*entry, 0, len(jobs))
	for _, j := range jobs {
		sched, err := config.ParseSchedule(j.Spec)
		if err != nil {
			return fmt.Errorf("schedule %s/%s %q: %w", account, j.Mode, j.Spec, err)
		}
		e := &entry{key: key{account, j.Mode}, job: j, sched: sched, index: -1}
		if d, ok := sched.(cron.ConstantDelaySchedule); ok {
			e.every = d.Delay
		}
		e.phase = phase(account+"/"+j.Mode, e.every)
		parsed = append(parsed, e)
	}
	now := s.o.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := map[string]bool{}
	for _, e := range parsed {
		keep[e.mode] = true
		old := s.entries[e.key]
		if old != nil {
			if old.job == e.job {
				continue // unchanged: keep its timing
			}
			s.drop(old)
		}
		e.next = s.first(e, now)
		s.entries[e.key] = e
		heap.Push(&s.timers, e)
		if e.job.RunAtStart {
			s.enqueue(e, now, false)
		}
	}
	for k, e := range s.entries {
		if k.account == account && !keep[k.mode] {
			s.drop(e)
		}
	}
	s.poke()
	return nil
}

// Remove deletes an account's jobs; a pass of it already running finishes.
func (s *Scheduler) Remove(account string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, e := range s.entries {
		if k.account == account {
			s.drop(e)
		}
	}
	s.poke()
}

// drop removes e from the schedule (mu held).
func (s *Scheduler) drop(e *entry) {
	e.removed = true
	if e.index >= 0 {
		heap.Remove(&s.timers, e.index)
	}
	if s.entries[e.key] == e {
		delete(s.entries, e.key)
	}
	if e.queued {
		s.queue = slices.DeleteFunc(s.queue, func(q *entry) bool { return q == e })
		e.queued = false
	}
}

// Trigger queues an immediate pass of an account's mode ahead of scheduled
// ones. A pass already queued absorbs it; a pass running is followed by
// one more. It reports whether the account has such a job.
func (s *Scheduler) Trigger(account, mode string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[key{account, mode}]
	if e == nil {
		return false
	}
	switch {
	case e.queued:
	case e.running:
		e.rerun = true
	default:
		s.enqueue(e, s.o.Now(), true)
	}
	return true
}

// Next tells when an account's mode runs next by its schedule (zero when
// unknown).
func (s *Scheduler) Next(account, mode string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries[key{account, mode}]; e != nil {
		return e.next
	}
	return time.Time{}
}

// Stats describes the queue now.
func (s *Scheduler) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Workers: s.o.Workers, Running: s.running, Queued: len(s.queue), Jobs: len(s.entries), Coalesced: s.coalesced}
	if len(s.lags) > 0 {
		lags := slices.Clone(s.lags)
		slices.Sort(lags)
		pct := func(p float64) float64 { return lags[int(p*float64(len(lags)-1))].Seconds() }
		st.LagP50Seconds, st.LagP99Seconds, st.LagMaxSeconds = pct(0.5), pct(0.99), lags[len(lags)-1].Seconds()
	}
	return st
}

// Run dispatches and runs passes until ctx ends, then cancels the running
// passes, waits for them and returns.
func (s *Scheduler) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range s.o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.work(ctx)
		}()
	}
	s.dispatch(ctx)
	s.mu.Lock()
	s.stopped = true
	s.cond.Broadcast()
	s.mu.Unlock()
	cancel()
	wg.Wait()
}

// dispatch queues due passes until ctx ends.
func (s *Scheduler) dispatch(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		now := s.o.Now()
		horizon := now.Add(s.o.Granularity)
		for len(s.timers) > 0 && !s.timers[0].next.After(horizon) {
			e := s.timers[0]
			if e.queued || e.running {
				s.coalesced++
			} else {
				s.enqueue(e, e.next, false)
			}
			e.next = s.after(e, e.next, now)
			heap.Fix(&s.timers, 0)
		}
		wait := time.Hour
		if len(s.timers) > 0 {
			wait = s.timers[0].next.Sub(now)
		}
		s.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// enqueue queues e's pass, due at due (mu held).
func (s *Scheduler) enqueue(e *entry, due time.Time, triggered bool) {
	e.queued, e.due, e.triggered = true, due, triggered
	if triggered {
		s.queue = slices.Insert(s.queue, 0, e)
	} else {
		s.queue = append(s.queue, e)
	}
	s.cond.Signal()
}

// work runs queued passes until the scheduler stops.
func (s *Scheduler) work(ctx context.Context) {
	for {
		s.mu.Lock()
		for len(s.queue) == 0 && !s.stopped {
			s.cond.Wait()
		}
		if s.stopped {
			s.mu.Unlock()
			return
		}
		e := s.queue[0]
		s.queue = s.queue[1:]
		e.queued, e.running = false, true
		triggered := e.triggered
		s.running++
		s.recordLag(s.o.Now().Sub(e.due))
		job := e.job
		s.mu.Unlock()

		s.runOne(ctx, e.account, job, triggered)

		s.mu.Lock()
		e.running = false
		s.running--
		if e.rerun && !e.removed && !s.stopped {
			e.rerun = false
			s.enqueue(e, s.o.Now(), true)
		}
		s.mu.Unlock()
	}
}

func (s *Scheduler) runOne(ctx context.Context, account string, job Job, triggered bool) {
	defer func() {
		if r := recover(); r != nil {
			s.o.Log.Error("schedule: a pass panicked; the scheduler goes on", zap.String("account", account),
				zap.String("mode", job.Mode), zap.Any("panic", r), zap.Stack("stack"))
		}
	}()
	if job.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, job.Timeout)
		defer cancel()
	}
	s.run(ctx, account, job.Mode, triggered)
}

func (s *Scheduler) recordLag(d time.Duration) {
	d = max(d, 0)
	if len(s.lags) < 1024 {
		s.lags = append(s.lags, d)
		return
	}
	s.lags[s.lagAt] = d
	s.lagAt = (s.lagAt + 1) % len(s.lags)
}

// poke wakes the dispatcher (mu may be held).
func (s *Scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// first is e's first scheduled time after now.
func (s *Scheduler) first(e *entry, now time.Time) time.Time {
	if e.every > 0 {
		return now.Add(e.phase)
	}
	return e.sched.Next(now).Add(e.phase)
}

// after is e's next scheduled time after the tick at prev, no earlier than
// now (ticks missed while the process was busy are not replayed).
func (s *Scheduler) after(e *entry, prev, now time.Time) time.Time {
	if e.every > 0 {
		next := prev.Add(e.every)
		if !next.After(now) {
			// Behind by whole periods: keep the phase, skip the backlog.
			next = next.Add(((now.Sub(next) / e.every) + 1) * e.every)
		}
		return next
	}
	// The cron time after both now and prev's own (a pass queued early,
	// before its time, must not be queued again for the same time).
	base := now
	if cronPrev := prev.Add(-e.phase); cronPrev.After(base) {
		base = cronPrev
	}
	return e.sched.Next(base).Add(e.phase)
}

// phase is a stable offset for name: within the period of an "@every"
// schedule, up to 10 s for a cron spec.
func phase(name string, every time.Duration) time.Duration {
	h := fnv.New64a()
	h.Write([]byte(name))
	spread := 10 * time.Second
	if every > 0 {
		spread = every
	}
	return time.Duration(h.Sum64() % uint64(spread))
}

// DefaultWorkers is the default pool size: 2 × GOMAXPROCS, at least 4.
// Passes mostly wait on the network, so a few more workers than cores.
func DefaultWorkers() int {
	return max(4, 2*runtime.GOMAXPROCS(0))
}

// timerHeap orders entries by next fire time.
type timerHeap []*entry

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timerHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *timerHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.index = -1
	return e
}

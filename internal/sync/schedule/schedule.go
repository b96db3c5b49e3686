// Package schedule drives engine passes from robfig/cron/v3 specs. It is
// the only package that knows about cron: jobs are recovered from panics,
// never overlap themselves, run in UTC with a per-run deadline, and Run
// waits for running jobs before it returns.
package schedule

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
	"go.uber.org/zap"

	"github.com/dirsync/dirsync/internal/config"
)

// Job is one scheduled task.
type Job struct {
	// Name identifies the job in logs and in Next, e.g. "acme/full".
	Name string
	// Spec is a cron spec such as "@every 5s".
	Spec string
	// Timeout bounds one run.
	Timeout time.Duration
	// RunAtStart runs the job once immediately.
	RunAtStart bool
	Func       func(ctx context.Context)
}

// Scheduler runs a fixed set of jobs.
type Scheduler struct {
	log     *zap.Logger
	c       *cron.Cron
	jobs    []Job
	entries map[string]cron.EntryID
	startup []cron.Job
	runCtx  context.Context
	cancel  context.CancelFunc
}

// New checks every spec and prepares the jobs; nothing runs before Run.
func New(log *zap.Logger, jobs []Job) (*Scheduler, error) {
	logger := cronLogger{log}
	s := &Scheduler{
		log: log,
		c: cron.New(
			cron.WithLocation(time.UTC),
			// Recover must sit inside SkipIfStillRunning: cron's skip guard
			// has no defer, so a panic passing through it would skip the
			// job forever.
			cron.WithChain(cron.SkipIfStillRunning(logger), cron.Recover(logger)),
		),
		jobs:    jobs,
		entries: map[string]cron.EntryID{},
	}
	s.runCtx, s.cancel = context.WithCancel(context.Background())
	for _, j := range jobs {
		run := func() {
			jctx, jcancel := context.WithTimeout(s.runCtx, j.Timeout)
			defer jcancel()
			j.Func(jctx)
		}
		spec, err := config.ParseSchedule(j.Spec)
		if err != nil {
			s.cancel()
			return nil, fmt.Errorf("schedule %s %q: %w", j.Name, j.Spec, err)
		}
		id := s.c.Schedule(spec, cron.FuncJob(run))
		s.entries[j.Name] = id
		if j.RunAtStart {
			s.startup = append(s.startup, cron.NewChain(cron.Recover(logger)).Then(cron.FuncJob(run)))
		}
	}
	return s, nil
}

// Run schedules the jobs until ctx ends, then cancels running jobs' contexts
// and waits for them to return.
func (s *Scheduler) Run(ctx context.Context) {
	defer s.cancel()
	var wg sync.WaitGroup
	for _, job := range s.startup {
		wg.Add(1)
		go func() {
			defer wg.Done()
			job.Run()
		}()
	}
	s.c.Start()
	<-ctx.Done()
	s.cancel()
	<-s.c.Stop().Done()
	wg.Wait()
}

// Next returns when the named job runs next (zero if unknown or stopped).
func (s *Scheduler) Next(name string) time.Time {
	id, ok := s.entries[name]
	if !ok {
		return time.Time{}
	}
	return s.c.Entry(id).Next
}

// Run is New followed by Run, for callers that need no Next.
func Run(ctx context.Context, log *zap.Logger, jobs []Job) error {
	s, err := New(log, jobs)
	if err != nil {
		return err
	}
	s.Run(ctx)
	return nil
}

type cronLogger struct{ log *zap.Logger }

func (l cronLogger) Info(msg string, kv ...any) {
	if msg == "skip" {
		l.log.Debug("schedule: previous run still going; tick skipped", zap.Any("details", kv))
	}
}

func (l cronLogger) Error(err error, msg string, kv ...any) {
	l.log.Error("schedule: "+msg, zap.Error(err), zap.Any("details", kv))
}

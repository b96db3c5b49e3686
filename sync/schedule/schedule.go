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
)

// Job is one scheduled task.
type Job struct {
	// Name appears in logs, e.g. "acme/full".
	Name string
	// Spec is a cron spec such as "@every 5s".
	Spec string
	// Timeout bounds one run.
	Timeout time.Duration
	// RunAtStart runs the job once immediately.
	RunAtStart bool
	Func       func(ctx context.Context)
}

// Run schedules jobs until ctx ends, then waits for running jobs to finish
// (their contexts are cancelled) and returns.
func Run(ctx context.Context, log *zap.Logger, jobs []Job) error {
	logger := cronLogger{log}
	c := cron.New(
		cron.WithLocation(time.UTC),
		cron.WithChain(cron.Recover(logger), cron.SkipIfStillRunning(logger)),
	)
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var startup []cron.Job
	for _, j := range jobs {
		j := j
		run := func() {
			jctx, jcancel := context.WithTimeout(runCtx, j.Timeout)
			defer jcancel()
			j.Func(jctx)
		}
		if _, err := c.AddFunc(j.Spec, run); err != nil {
			return fmt.Errorf("schedule %s %q: %w", j.Name, j.Spec, err)
		}
		if j.RunAtStart {
			startup = append(startup, cron.NewChain(cron.Recover(logger)).Then(cron.FuncJob(run)))
		}
	}
	var wg sync.WaitGroup
	for _, job := range startup {
		wg.Add(1)
		go func() {
			defer wg.Done()
			job.Run()
		}()
	}
	c.Start()
	<-ctx.Done()
	cancel()
	<-c.Stop().Done()
	wg.Wait()
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

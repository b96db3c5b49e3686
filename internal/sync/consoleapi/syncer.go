package consoleapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/console"
	"github.com/dirsync/dirsync/internal/sync/engine"
)

// Engine is the directory pipeline (engine.Engine).
type Engine interface {
	Run(ctx context.Context, account string, opts engine.Options) (engine.Report, error)
	Accounts() []string
	LastReports(account string) map[engine.Mode]engine.Report
}

// Resyncer rebuilds console accounts from PostgreSQL (console.Service).
type Resyncer interface {
	Resync(ctx context.Context, account string, o console.ResyncOptions) (console.ResyncResult, error)
	Accounts() []string
}

// Syncer runs passes for every account: directory accounts through the
// engine, console accounts through a resync from PostgreSQL. It has the
// method set httpapi.Syncer asks for, so /v1/sync, /v1/status, /readyz and
// the scheduler treat both kinds alike.
//
// A full pass of a console account rebuilds its published decisions from
// PostgreSQL (a Redis that lost its data is refilled); an incremental pass
// only checks the account's status record is still in the cache, because
// every console action publishes as it commits.
type Syncer struct {
	engine  Engine
	console Resyncer // nil when no account is console-managed
	now     func() time.Time

	last *lastReports
}

// NewSyncer combines the engine with the console service (which may be
// nil).
func NewSyncer(e Engine, c Resyncer, now func() time.Time) *Syncer {
	if now == nil {
		now = time.Now
	}
	return &Syncer{engine: e, console: c, now: now, last: newLastReports()}
}

// Accounts lists the directory accounts, then the console accounts.
func (s *Syncer) Accounts() []string {
	out := s.engine.Accounts()
	if s.console != nil {
		out = append(out, s.console.Accounts()...)
	}
	return out
}

func (s *Syncer) isConsole(account string) bool {
	return s.console != nil && slices.Contains(s.console.Accounts(), account)
}

// LastReports returns the last report of each mode.
func (s *Syncer) LastReports(account string) map[engine.Mode]engine.Report {
	if s.isConsole(account) {
		return s.last.get(account)
	}
	return s.engine.LastReports(account)
}

// Run runs one pass of account.
func (s *Syncer) Run(ctx context.Context, account string, opts engine.Options) (engine.Report, error) {
	if !s.isConsole(account) {
		return s.engine.Run(ctx, account, opts)
	}
	if opts.Mode == "" {
		opts.Mode = engine.ModeFull
	}
	start := s.now()
	rep := engine.Report{Account: account, Mode: opts.Mode, DryRun: opts.DryRun, StartedAt: start.UTC(), Source: "console:postgres"}
	res, err := s.console.Resync(ctx, account, console.ResyncOptions{
		DryRun: opts.DryRun, Force: opts.Force, OnlyIfLost: opts.Mode == engine.ModeIncremental && !opts.DryRun,
	})
	rep.DurationSeconds = s.now().Sub(start).Seconds()
	rep.Stats, rep.Problems = res.Stats, res.Problems
	d := &res.Delta
	rep.Changes = engine.ChangeCounts{
		Added: d.Added, Updated: d.Updated, Removed: d.Removed, Unchanged: d.Unchanged, Published: res.Published,
		LostAccess: d.LostAccess, LostAccessByStatus: d.LostAccessByStatus, GainedAccess: d.GainedAccess, Downgrades: d.Downgrades,
	}
	switch {
	case err != nil:
		rep.Result, rep.Error = engine.ResultFailed, err.Error()
		if errors.Is(err, console.ErrEmptyRead) {
			rep.Diff = engine.DiffEntries(d.Changes)
		}
	case opts.DryRun:
		rep.Result, rep.Diff = engine.ResultDryRun, engine.DiffEntries(d.Changes)
	case res.Published > 0:
		rep.Result = engine.ResultPublished
	default:
		rep.Result = engine.ResultUnchanged
	}
	if !opts.DryRun {
		s.last.put(account, rep)
	}
	if err != nil {
		return rep, fmt.Errorf("console account %s: %w", account, err)
	}
	return rep, nil
}

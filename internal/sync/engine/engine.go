// Package engine runs one synchronisation pass for one account: read the
// directory, map it to decisions, check the result is safe to publish, and
// publish only what changed. Scheduling lives elsewhere (package schedule);
// a pass is a synchronous call.
//
// Safety rules every pass applies, whatever the source:
//   - a source error publishes nothing and keeps the last good decisions,
//     except account expiries: a user whose accountExpires passes is denied
//     on time from the last published state, whether or not the directory
//     can be read;
//   - a read with no users, or in which a bound group that had members is
//     gone or empty, is held (unless forced): a hold is recorded in the
//     status record and released with `dirsync release`;
//   - the safeguard holds a pass that would take access away from too many
//     users for reasons other than their account state;
//   - whatever holds a pass, decisions that deny a user because of account
//     state (suspended, inactive, locked out) found by the same read are
//     published even then: a suspension never waits.
package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/history"
	"github.com/dirsync/dirsync/internal/entitlement/mapper"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/directory"
)

// Source reads a whole directory snapshot, or fails: never partial data.
type Source interface {
	Snapshot(ctx context.Context) (*directory.Snapshot, error)
}

// IncrementalSource can bring its last snapshot up to date cheaply.
type IncrementalSource interface {
	Incremental(ctx context.Context) (*directory.Snapshot, bool, error)
}

// Causer is a source whose reads are caused by something other than the
// directory being read (a SCIM source's data is what an identity provider
// pushed): its Cause is the access history's cause of the changes its
// passes publish (default history.CauseDirectory).
type Causer interface {
	Cause() string
}

// Cache is where decisions are published.
type Cache interface {
	Published(ctx context.Context, account string) (map[string]mapper.Published, error)
	Apply(ctx context.Context, account string, changes []mapper.Change, at time.Time) error
	PutStatus(ctx context.Context, st accesscache.AccountStatus) error
	Status(ctx context.Context, account string) (accesscache.AccountStatus, bool, error)
	DeleteStatus(ctx context.Context, account string) error
}

// Safeguard limits how much access one pass may take away.
type Safeguard struct {
	MaxLostAccessPercent float64
	MaxLostAccessUsers   int
	// Window, when positive, counts against the limits every unexplained
	// loss the account's passes published within it, not only the
	// current pass's: a mass removal pushed one user at a time (a SCIM
	// client, an incremental pass every few seconds) is held once it
	// crosses the limits, like one read at once. A release (a forced
	// pass) confirms the losses and empties the window. The window lives
	// in memory: a restart empties it.
	Window time.Duration
}

// Account is one account's configuration as the engine needs it.
type Account struct {
	Policy    mapper.Policy
	Source    Source
	Safeguard Safeguard
}

// Mode is the kind of pass.
type Mode string

// Modes.
const (
	ModeFull        Mode = "full"
	ModeIncremental Mode = "incremental"
)

// Options modify one pass.
type Options struct {
	Mode Mode
	// DryRun computes the diff and publishes nothing.
	DryRun bool
	// Force publishes even what the safeguard or the lost-group check would
	// hold (an operator's release).
	Force bool
	// SkipIfBusy returns ErrBusy instead of waiting for a running pass.
	SkipIfBusy bool
	// Actor is who asked for the pass (an API caller's credential), for the
	// access history; empty for scheduled passes.
	Actor string
	// Policy, with DryRun, maps the read with this policy instead of the
	// account's (a binding change previewed before it is made).
	Policy *mapper.Policy
	// ReviewedDiffHash, with Force, binds a release to the diff an operator
	// reviewed (Report.DiffHash of a held pass or a dry run): the pass is
	// forced only when it would publish exactly that diff. Otherwise it
	// runs as an ordinary pass (held again if the checks say so) and ends
	// with ErrDiffChanged, its report showing the new diff and hash.
	ReviewedDiffHash string
	// FullIf, when set, is asked once the pass holds the account (no other
	// pass of it running): true turns an incremental pass into a full one.
	// It decides when the pass starts, not when it was asked for, so a
	// pass that waited behind a full pass sees that pass's effect.
	FullIf func() bool
}

// Results of a pass.
const (
	ResultPublished = "published"
	ResultUnchanged = "unchanged"
	ResultDryRun    = "dry_run"
	ResultHeld      = "held"
	ResultFailed    = "failed"
)

// Errors a pass can end with.
var (
	ErrBusy           = errors.New("a sync of this account is already running")
	ErrDiffChanged    = errors.New("the directory changed since the diff was reviewed; review the new diff")
	ErrUnknownAccount = errors.New("unknown account")
	ErrEmptyRead      = errors.New("directory returned no users but users are published; keeping the last good state")
	ErrLostGroup      = errors.New("a bound group that had members is missing or empty; keeping the last good state")
	// ErrHeld is returned by a held pass; it wraps ErrEmptyRead or
	// ErrLostGroup when the read check held it.
	ErrHeld = errors.New("sync held: only account-state denials were published")
)

// Report describes one pass. Its JSON form is printed by `dirsync sync
// --output json` and returned by the HTTP API.
type Report struct {
	Account         string           `json:"account"`
	Mode            Mode             `json:"mode"`
	DryRun          bool             `json:"dry_run"`
	StartedAt       time.Time        `json:"started_at"`
	DurationSeconds float64          `json:"duration_seconds"`
	Result          string           `json:"result"`
	Error           string           `json:"error,omitempty"`
	Source          string           `json:"source,omitempty"`
	Stats           mapper.Stats     `json:"stats"`
	Problems        []mapper.Problem `json:"problems,omitempty"`
	Changes         ChangeCounts     `json:"changes"`
	Diff            []DiffEntry      `json:"diff,omitempty"`
	// DiffHash identifies what a release would publish (DiffHash): in a
	// held pass the held-back changes of Diff (account-state denials were
	// published already), in a dry run all of Diff.
	DiffHash string            `json:"diff_hash,omitempty"`
	Hold     *accesscache.Hold `json:"hold,omitempty"`
	// ReadFailed is set when the directory read itself failed.
	ReadFailed bool `json:"read_failed,omitempty"`
	// PublishSeconds is the time spent writing to the cache.
	PublishSeconds float64 `json:"publish_seconds,omitempty"`
	// Remapped is how many users an O(changes) pass re-decided (the users
	// the source patched, and those whose paths through the patched
	// groups changed; see SetRemapMinUsers); RemappedGroups how many
	// groups' memberships it took in. Both are 0 when the pass mapped
	// every user.
	Remapped       int `json:"remapped_users,omitempty"`
	RemappedGroups int `json:"remapped_groups,omitempty"`
}

// ChangeCounts summarises a delta.
type ChangeCounts struct {
	Added              int `json:"added"`
	Updated            int `json:"updated"`
	Removed            int `json:"removed"`
	Unchanged          int `json:"unchanged"`
	Published          int `json:"published"`
	LostAccess         int `json:"lost_access"`
	LostAccessByStatus int `json:"lost_access_by_status"`
	GainedAccess       int `json:"gained_access"`
	Downgrades         int `json:"downgrades"`
}

// DiffEntry is one change in a dry run (or a held pass).
type DiffEntry struct {
	Email         string                 `json:"email"`
	Change        string                 `json:"change"` // gain, lose, upgrade, downgrade, update, remove
	OldPermission entitlement.Permission `json:"old_permission"`
	NewPermission entitlement.Permission `json:"new_permission"`
	OldAllowed    bool                   `json:"old_allowed"`
	NewAllowed    bool                   `json:"new_allowed"`
	Reason        entitlement.Reason     `json:"reason,omitempty"`
}

// Engine runs passes. Passes of one account never overlap; accounts are
// independent.
type Engine struct {
	cache Cache
	log   *zap.Logger
	now   func() time.Time
	// tracer makes the spans of passes (SetTracer); a no-op by default.
	tracer trace.Tracer
	// remapMin is the size (users) from which an account keeps its
	// mapping between passes (SetRemapMinUsers).
	remapMin int

	mu       sync.RWMutex // guards accounts and order
	accounts map[string]*accountState
	order    []string
}

type accountState struct {
	run sync.Mutex // held for the whole pass
	cfg Account

	// Guarded by run.
	// read: a pass has published a snapshot, so incremental passes may
	// follow (the snapshot itself is not kept: the source keeps its own
	// state, and holding the old one would double a full pass's memory).
	read       bool
	published  map[string]mapper.Published
	nextExpiry time.Time
	// expiring holds the published, allowed decisions of users whose
	// account expires in the future, soonest first: enough to deny them on
	// time when the directory cannot be read (not a second snapshot).
	expiring []expiringUser
	// unpublished: a snapshot was read but the pass that read it did not
	// complete (cache error, refused publish, failed check or dry run).
	unpublished bool
	// hold is the hold the last completed pass recorded (nil: none), shown
	// in the reports of passes that find nothing to evaluate.
	hold *accesscache.Hold
	// removed: the account was removed from the engine; a pass that was
	// waiting for the run lock does nothing.
	removed bool
	// losses are the emails whose access a pass published as lost for a
	// reason other than account state, with when (Safeguard.Window).
	losses map[string]time.Time
	// mapped is the last pass's mapping, kept (see SetRemapMinUsers) only
	// when that pass published all of it with no hold: the published
	// decisions are then exactly its decisions, and allowed counts the
	// allowed ones.
	mapped  *mapper.Mapped
	allowed int

	mu   sync.Mutex // guards last, recent, next and groups
	last map[Mode]Report
	// recent are the last recentRuns passes that did something (all but
	// unchanged incremental passes), newest last, without their diffs.
	recent []Report
	// groups are the groups of the last snapshot read (for Groups): the
	// snapshot's own slices, which a source never changes once returned.
	groups    []directory.Group
	userCount int
	// next is a configuration given by Put while the account exists; the
	// next pass takes it over (never in the middle of a pass).
	next *Account
	// running is the running pass's progress (nil between passes).
	running atomic.Pointer[progress]
}

// New returns an engine for accounts publishing to cache.
func New(cache Cache, accounts []Account, log *zap.Logger, now func() time.Time) *Engine {
	if now == nil {
		now = time.Now
	}
	e := &Engine{cache: cache, log: log, now: now, tracer: defaultTracer(), remapMin: DefaultRemapMinUsers, accounts: map[string]*accountState{}}
	for _, a := range accounts {
		e.accounts[a.Policy.Account] = &accountState{cfg: a, last: map[Mode]Report{}}
		e.order = append(e.order, a.Policy.Account)
	}
	return e
}

// DefaultRemapMinUsers is the account size from which the engine keeps
// an account's mapping between passes by default: below it a whole
// re-map costs less than a millisecond or two, and keeping costs memory.
const DefaultRemapMinUsers = 10_000

// SetRemapMinUsers sets the account size (users) from which an account
// keeps its last mapping (its decisions, about 260 bytes per user, and
// its bindings' closures, 4 bytes per user each), so that an incremental
// pass whose source patched only some users' own attributes
// (directory.Snapshot.Patch) re-maps and diffs only those users: O(changes)
// instead of O(users). 0 keeps every account's; a negative value none.
// Call it before the first pass.
func (e *Engine) SetRemapMinUsers(n int) { e.remapMin = n }

// Accounts returns the account ids in configuration order (accounts added
// by Put last).
func (e *Engine) Accounts() []string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return slices.Clone(e.order)
}

// account returns an account's state, or nil.
func (e *Engine) account(id string) *accountState {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.accounts[id]
}

// Put adds an account or changes its configuration, touching no other
// account. A change takes effect at the account's next pass, which
// re-evaluates every decision under the new policy; a new source (another
// directory or new credentials) starts with a full read.
func (e *Engine) Put(acct Account) {
	id := acct.Policy.Account
	e.mu.Lock()
	defer e.mu.Unlock()
	if a := e.accounts[id]; a != nil {
		a.mu.Lock()
		a.next = &acct
		a.mu.Unlock()
		return
	}
	e.accounts[id] = &accountState{cfg: acct, last: map[Mode]Report{}}
	e.order = append(e.order, id)
}

// Remove takes an account out of the engine: a pass running finishes, none
// starts. With unpublish, every decision it published is removed from the
// cache (one change event each: the users become unknown_user) and its
// status record is deleted. It returns how many decisions it removed.
func (e *Engine) Remove(ctx context.Context, id string, unpublish bool) (int, error) {
	e.mu.Lock()
	a := e.accounts[id]
	delete(e.accounts, id)
	e.order = slices.DeleteFunc(e.order, func(o string) bool { return o == id })
	e.mu.Unlock()
	if a == nil {
		return 0, fmt.Errorf("%w %q", ErrUnknownAccount, id)
	}
	a.run.Lock()
	defer a.run.Unlock()
	a.removed = true
	if !unpublish {
		return 0, nil
	}
	published, err := e.cache.Published(ctx, id)
	if err != nil {
		return 0, err
	}
	changes := make([]mapper.Change, 0, len(published))
	for email, p := range published {
		old := p
		changes = append(changes, mapper.Change{Email: email, Old: &old})
	}
	if len(changes) > 0 {
		_, actor := history.CauseOf(ctx) // the caller's (an API principal), else dirsync
		if err := e.cache.Apply(history.WithCause(ctx, history.CauseAccountDeleted, actor), id, changes, e.now()); err != nil {
			return 0, err
		}
	}
	if err := e.cache.DeleteStatus(ctx, id); err != nil {
		return len(changes), err
	}
	e.log.Info("account removed; its decisions were unpublished", zap.String("account", id), zap.Int("removed", len(changes)))
	return len(changes), nil
}

// takeNext applies a configuration Put while the account existed (run
// lock held).
func (a *accountState) takeNext() (changed bool) {
	a.mu.Lock()
	next := a.next
	a.next = nil
	a.mu.Unlock()
	if next == nil {
		return false
	}
	if next.Source != a.cfg.Source {
		if c, ok := a.cfg.Source.(interface{ Close() }); ok {
			c.Close()
		}
		a.read = false // the new source starts with a full read
	}
	a.cfg = *next
	a.unpublished = true // re-evaluate every decision under the new policy
	return true
}

// recentRuns is how many passes RecentReports keeps per account.
const recentRuns = 10

// RecentReports returns an account's last passes that did something (full
// passes, and incremental passes that published, held or failed), newest
// first, without their diffs and problems.
func (e *Engine) RecentReports(account string) []Report {
	a := e.account(account)
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	out := slices.Clone(a.recent)
	slices.Reverse(out)
	return out
}

// LastReports returns the last report of each mode for an account.
func (e *Engine) LastReports(account string) map[Mode]Report {
	a := e.account(account)
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[Mode]Report, len(a.last))
	for k, v := range a.last {
		out[k] = v
	}
	return out
}

// KeepReports takes over from's last reports for the accounts both engines
// sync (modes e has not run yet), so a config reload, which builds a new
// engine, does not blank an account's run history until its next passes.
func (e *Engine) KeepReports(from *Engine) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	for id, a := range e.accounts {
		prev := from.LastReports(id)
		recent := from.RecentReports(id)
		slices.Reverse(recent)
		a.mu.Lock()
		for mode, rep := range prev {
			if _, ok := a.last[mode]; !ok {
				a.last[mode] = rep
			}
		}
		if len(a.recent) == 0 {
			a.recent = recent
		}
		a.mu.Unlock()
	}
}

// Run performs one pass for account. The report is filled in whether or not
// the pass fails; the error says why it did.
func (e *Engine) Run(ctx context.Context, account string, opts Options) (Report, error) {
	a := e.account(account)
	if a == nil {
		return Report{Account: account, Result: ResultFailed, Error: ErrUnknownAccount.Error()}, fmt.Errorf("%w %q", ErrUnknownAccount, account)
	}
	if opts.Mode == "" {
		opts.Mode = ModeFull
	}
	if opts.SkipIfBusy {
		if !a.run.TryLock() {
			return Report{Account: account, Mode: opts.Mode}, ErrBusy
		}
	} else {
		a.run.Lock()
	}
	defer a.run.Unlock()
	if opts.Mode == ModeIncremental && opts.FullIf != nil && opts.FullIf() {
		opts.Mode = ModeFull
	}
	if a.removed {
		return Report{Account: account, Mode: opts.Mode, Result: ResultFailed, Error: ErrUnknownAccount.Error()}, fmt.Errorf("%w %q", ErrUnknownAccount, account)
	}
	cause := history.CauseDirectory
	if c, ok := a.cfg.Source.(Causer); ok {
		cause = c.Cause()
	}
	if a.takeNext() {
		cause = history.CauseBinding
	}
	actor := opts.Actor
	if opts.Force {
		cause = history.CauseRelease
	}
	if actor == "" {
		actor = "dirsync"
	}
	ctx = history.WithCause(ctx, cause, actor)

	start := e.now()
	rep := Report{Account: account, Mode: opts.Mode, DryRun: opts.DryRun, StartedAt: start.UTC()}
	ctx, span := e.startPass(ctx, account, opts)
	a.running.Store(newProgress(opts.Mode, a.cfg.Source, start))
	changed, err := e.pass(ctx, a, opts, &rep)
	a.running.Store(nil)
	endPass(span, &rep, err)
	rep.DurationSeconds = e.now().Sub(start).Seconds()
	if err != nil {
		rep.Error = err.Error()
		if rep.Result == "" {
			rep.Result = ResultFailed
		}
	}
	if changed || err != nil || opts.Mode == ModeFull || opts.DryRun {
		e.logReport(&rep)
	}
	if !opts.DryRun {
		a.mu.Lock()
		a.last[opts.Mode] = rep
		if rep.Mode == ModeFull || rep.Result != ResultUnchanged {
			brief := rep
			brief.Diff, brief.Problems = nil, nil
			a.recent = append(a.recent, brief)
			if len(a.recent) > recentRuns {
				a.recent = slices.Delete(a.recent, 0, len(a.recent)-recentRuns)
			}
		}
		a.mu.Unlock()
	}
	return rep, err
}

// pass does the work of Run under the account's run lock. It reports
// whether the pass did anything worth a log line.
func (e *Engine) pass(ctx context.Context, a *accountState, opts Options, rep *Report) (bool, error) {
	expired := false
	if !opts.DryRun {
		n, err := e.publishExpiries(ctx, a, e.now())
		if err != nil {
			return true, err
		}
		rep.Changes.Published += n
		expired = n > 0
	}
	prog := a.running.Load()
	// The kept mapping serves only a pass that publishes all it maps; it
	// is kept again at the end of such a pass. A full read builds a new
	// snapshot: the old one goes before it is read.
	kept := a.mapped
	a.mapped = nil
	if opts.Mode == ModeFull || opts.DryRun || expired {
		kept = nil
	}
	// A pass that re-reads what is published (below) reads it while the
	// directory is read: the two are independent, and a paged read leaves
	// the CPU idle while it waits on the server (100k users: 100 ms of
	// index read).
	var cached func() (cacheState, error)
	if a.published == nil || opts.Mode == ModeFull || opts.DryRun {
		readCtx, cancel := context.WithCancel(ctx)
		cached = e.readCacheAsync(readCtx, a.cfg.Policy.Account)
		defer func() {
			cancel()
			_, _ = cached() // the pass owns the read: it ends before the pass
		}()
	}
	snap, changed, err := e.read(ctx, a, opts.Mode)
	if err != nil {
		rep.ReadFailed = true
		a.mapped = kept // the source did not move
		return true, fmt.Errorf("read directory: %w", err)
	}
	a.keepGroups(snap)
	now := e.now()
	if !changed && !a.unpublished && (a.nextExpiry.IsZero() || now.Before(a.nextExpiry)) && !opts.DryRun {
		rep.Result = ResultUnchanged
		if expired {
			rep.Result = ResultPublished
		}
		rep.Hold = a.hold // still pending: nothing was evaluated
		rep.Source = snap.Source
		a.mapped = kept
		return expired, nil
	}
	rep.Source = snap.Source
	wasUnpublished := a.unpublished
	// The source has moved on to snap: until a pass publishes it, the next
	// pass must not skip an "unchanged" read (the change would be lost
	// until the next full pass).
	a.unpublished = true

	policy := a.cfg.Policy
	if opts.DryRun && opts.Policy != nil {
		policy = *opts.Policy
	}
	prog.set(PhaseMapping)
	_, mapSpan := e.tracer.Start(ctx, SpanMap)
	var res mapper.Result
	// remapped, when not nil, are the only decisions that may have
	// changed: the kept mapping re-decided the users the source patched.
	var remapped []entitlement.Decision
	if kept != nil && snap.Patch != nil && !wasUnpublished && a.hold == nil && a.published != nil {
		var ok bool
		if remapped, ok = kept.Remap(policy, snap, now); ok {
			res = kept.Result()
			rep.Remapped, rep.RemappedGroups = len(remapped), len(snap.Patch.Groups)
		} else {
			kept, remapped = nil, nil
		}
	} else {
		kept = nil
	}
	switch {
	case kept != nil:
	case !opts.DryRun && e.remapMin >= 0 && len(snap.Users) >= e.remapMin:
		kept = mapper.MapKept(policy, snap, now)
		res = kept.Result()
	default:
		res = mapper.Map(policy, snap, now)
	}
	rep.Stats, rep.Problems = res.Stats, res.Problems
	mapSpan.SetAttributes(attribute.Int("dirsync.decisions", res.Stats.Decisions))
	mapSpan.End()

	var status accesscache.AccountStatus
	published := a.published
	if cached != nil {
		// A full pass always re-reads what is published, so a cache that
		// lost its data (a restarted Redis) is rebuilt.
		cs, err := cached()
		if err != nil {
			return true, err
		}
		status, published = cs.status, cs.published
	} else if status, _, err = e.cache.Status(ctx, a.cfg.Policy.Account); err != nil {
		return true, err
	}
	var delta mapper.Delta
	if remapped != nil {
		// Only the re-decided emails can differ from what is published.
		sub := make(map[string]mapper.Published, len(remapped))
		for i := range remapped {
			if p, ok := published[remapped[i].Email]; ok {
				sub[remapped[i].Email] = p
			}
		}
		delta = mapper.Diff(sub, remapped)
		delta.PreviouslyAllowed = a.allowed
		delta.Unchanged += res.Stats.Decisions - len(remapped)
	} else {
		delta = mapper.Diff(published, res.Decisions)
	}
	rep.Changes = countChanges(&delta)
	if opts.DryRun {
		rep.Diff = DiffEntries(delta.Changes)
		rep.DiffHash = DiffHash(rep.Diff)
	}
	force, diffChanged := opts.Force, false
	if force && opts.ReviewedDiffHash != "" {
		if diff := DiffEntries(delta.Changes); DiffHash(diff) != opts.ReviewedDiffHash {
			// Not what was reviewed: an ordinary pass, and say so.
			force, diffChanged = false, true
			rep.Diff, rep.DiffHash = diff, DiffHash(diff)
		}
	}

	// A read that looks broken (no users, a bound group lost) is held like
	// a safeguard hold: the users' own account states it carries are
	// trustworthy and published; the rest waits for a release.
	var readErr error
	hold := (*accesscache.Hold)(nil)
	if !force {
		if readErr = checkRead(&res, snap, published, status); readErr != nil {
			hold = readHold(readErr, &delta, now)
		} else {
			hold = e.hold(a.cfg.Safeguard, &delta, a.recentLosses(now), now)
		}
	}
	toPublish := delta.Changes
	if prev := status.Hold; hold != nil && prev != nil && holdKind(prev) == hold.Kind {
		// The same hold, still pending: it is held since it began.
		hold.Since = prev.Since
	}
	status.Hold = hold
	if hold != nil {
		rep.Hold = hold
		rep.Result = ResultHeld
		rep.Diff = DiffEntries(delta.Changes)
		// Account-state denials are never held back.
		toPublish = statusDenials(delta.Changes)
		rep.DiffHash = DiffHash(DiffEntries(heldBack(delta.Changes)))
	}
	if opts.DryRun {
		rep.Result = ResultDryRun
		return true, nil
	}
	ctx, publishSpan := e.tracer.Start(ctx, SpanPublish, trace.WithAttributes(attribute.Int("dirsync.changes", len(toPublish))))
	defer publishSpan.End()
	prog.publishing(len(toPublish))
	if len(toPublish) > 0 {
		publishStart := time.Now()
		err := e.cache.Apply(ctx, a.cfg.Policy.Account, toPublish, now)
		rep.PublishSeconds = time.Since(publishStart).Seconds()
		if err != nil {
			a.published = nil // unknown state: re-read before the next diff
			return true, err
		}
		status.Generation++
	}
	rep.Changes.Published += len(toPublish)
	a.recordLosses(toPublish, force, now)
	a.published = applyToIndex(published, toPublish)
	a.read = true
	a.nextExpiry = res.NextExpiry
	if remapped != nil {
		a.expiring = updateExpiring(a.expiring, remapped, a.published, now)
	} else {
		a.expiring = expiringOf(res.Decisions, a.published, now)
	}

	status.Account = a.cfg.Policy.Account
	status.LastSyncAt = now.UTC()
	if opts.Mode == ModeFull {
		status.LastFullSyncAt = now.UTC()
	}
	status.Users = res.Stats.Decisions
	status.ByPermission = res.Stats.ByPermission
	status.ByReason = res.Stats.ByReason
	if readErr == nil {
		// A held read keeps the bindings' last good reach, so the next
		// pass still sees the lost group and holds again until released.
		status.Bindings = res.Bindings
	}
	status.Source = snap.Source
	if err := e.cache.PutStatus(ctx, status); err != nil {
		return true, err
	}
	a.unpublished = false
	a.hold = status.Hold
	if status.Hold == nil && kept != nil {
		a.mapped = kept
		a.allowed = delta.PreviouslyAllowed + delta.GainedAccess - delta.LostAccess
	}
	if rep.Result == ResultHeld {
		switch {
		case diffChanged && readErr != nil:
			return true, fmt.Errorf("%w: %w (%w)", ErrHeld, ErrDiffChanged, readErr)
		case diffChanged:
			return true, fmt.Errorf("%w: %w", ErrHeld, ErrDiffChanged)
		case readErr != nil:
			return true, fmt.Errorf("%w: %w", ErrHeld, readErr)
		}
		return true, ErrHeld
	}
	if diffChanged {
		// Published as an ordinary pass would: nothing forced.
		rep.Changes.Published = len(toPublish)
		return true, ErrDiffChanged
	}
	if rep.Changes.Published > 0 {
		rep.Result = ResultPublished
	} else {
		rep.Result = ResultUnchanged
	}
	return rep.Changes.Published > 0, nil
}

// cacheState is what a pass reads from the cache: the account's status
// record and its published index.
type cacheState struct {
	status    accesscache.AccountStatus
	published map[string]mapper.Published
}

// readCacheAsync reads account's cacheState on a goroutine. The returned
// func waits for it (and may be called again); the caller must call it
// before it returns.
func (e *Engine) readCacheAsync(ctx context.Context, account string) func() (cacheState, error) {
	done := make(chan struct{})
	var (
		cs  cacheState
		err error
	)
	go func() {
		defer close(done)
		if cs.status, _, err = e.cache.Status(ctx, account); err != nil {
			return
		}
		cs.published, err = e.cache.Published(ctx, account)
	}()
	return func() (cacheState, error) {
		<-done
		return cs, err
	}
}

// read gets a snapshot: an incremental update when asked for and the
// source supports it, otherwise a full read.
func (e *Engine) read(ctx context.Context, a *accountState, mode Mode) (snap *directory.Snapshot, changed bool, err error) {
	inc, incremental := a.cfg.Source.(IncrementalSource)
	incremental = incremental && mode == ModeIncremental && a.read
	ctx, span := e.tracer.Start(ctx, SpanRead, trace.WithAttributes(attribute.Bool("dirsync.incremental", incremental)))
	defer func() {
		if snap != nil {
			span.SetAttributes(attribute.Bool("dirsync.changed", changed), attribute.Int("dirsync.users", len(snap.Users)), attribute.Int("dirsync.groups", len(snap.Groups)))
		}
		endSpan(span, err)
	}()
	if incremental {
		return inc.Incremental(ctx)
	}
	snap, err = a.cfg.Source.Snapshot(ctx)
	return snap, true, err
}

// checkRead refuses snapshots that look like a broken read rather than a
// real change: no users at all, or a bound group that reached users in the
// last published sync and is now gone or empty.
func checkRead(res *mapper.Result, snap *directory.Snapshot, published map[string]mapper.Published, status accesscache.AccountStatus) error {
	if len(snap.Users) == 0 && len(published) > 0 {
		return ErrEmptyRead
	}
	var lost []string
	var detail []string
	for _, was := range status.Bindings {
		if was.Users == 0 {
			continue
		}
		for _, now := range res.Bindings {
			if strings.EqualFold(now.Group, was.Group) && now.Users == 0 {
				lost = append(lost, was.Group)
				detail = append(detail, fmt.Sprintf("%s had %d users", was.Group, was.Users))
			}
		}
	}
	if len(lost) > 0 {
		return &lostGroupError{groups: lost, detail: strings.Join(detail, "; ")}
	}
	return nil
}

// lostGroupError names the bound groups a read lost; it wraps ErrLostGroup.
type lostGroupError struct {
	groups []string
	detail string
}

func (e *lostGroupError) Error() string { return ErrLostGroup.Error() + ": " + e.detail }
func (e *lostGroupError) Unwrap() error { return ErrLostGroup }

// hold returns a hold when the delta takes access away, for reasons other
// than account state, from more users than the safeguard allows. A first
// sync (nothing allowed yet) is never held.
//
// recent is how many users lost access, for reasons other than account
// state, in the passes published within the safeguard's window: they
// count against the limits too, and the limits are taken of the users
// allowed before them.
func (e *Engine) hold(sg Safeguard, d *mapper.Delta, recent int, now time.Time) *accesscache.Hold {
	if d.PreviouslyAllowed == 0 {
		return nil
	}
	unexplained := d.LostAccess - d.LostAccessByStatus + recent
	allowed := d.PreviouslyAllowed + recent
	limit := min(int(sg.MaxLostAccessPercent*float64(allowed)/100), sg.MaxLostAccessUsers)
	if unexplained <= limit {
		return nil
	}
	within := ""
	if sg.Window > 0 {
		within = fmt.Sprintf(" within %v (%d of them in passes already published)", sg.Window, recent)
	}
	return &accesscache.Hold{
		Kind:       accesscache.HoldSafeguard,
		Since:      now.UTC(),
		LostAccess: unexplained,
		Allowed:    allowed,
		Downgrades: d.Downgrades,
		Reason: fmt.Sprintf("%d of %d allowed users would lose access%s (limit %d: %.0f%% or %d users); release with `dirsync release --account ID` once the change is confirmed",
			unexplained, allowed, within, limit, sg.MaxLostAccessPercent, sg.MaxLostAccessUsers),
	}
}

// recentLosses forgets the losses older than the safeguard's window and
// counts the others (0 without a window). Run lock held.
func (a *accountState) recentLosses(now time.Time) int {
	w := a.cfg.Safeguard.Window
	if w <= 0 {
		a.losses = nil
		return 0
	}
	for email, at := range a.losses {
		if now.Sub(at) >= w {
			delete(a.losses, email)
		}
	}
	return len(a.losses)
}

// recordLosses notes the published changes that took access away for a
// reason other than account state, and forgets users who regained it. A
// forced pass (a release) confirms every loss: the window starts empty.
// Run lock held.
func (a *accountState) recordLosses(published []mapper.Change, forced bool, now time.Time) {
	if a.cfg.Safeguard.Window <= 0 || forced {
		a.losses = nil
		return
	}
	for _, c := range published {
		wasAllowed := c.Old != nil && c.Old.Allowed
		switch {
		case c.New != nil && c.New.Allowed:
			delete(a.losses, c.Email)
		case wasAllowed && (c.New == nil || !mapper.AccountStateDenial(c.New.Reason)):
			if a.losses == nil {
				a.losses = map[string]time.Time{}
			}
			a.losses[c.Email] = now
		}
	}
}

// holdKind is h's kind; records from before kinds existed are safeguard
// holds.
func holdKind(h *accesscache.Hold) string {
	if h.Kind == "" {
		return accesscache.HoldSafeguard
	}
	return h.Kind
}

// readHold is the hold of a read checkRead refused.
func readHold(err error, d *mapper.Delta, now time.Time) *accesscache.Hold {
	kind := accesscache.HoldLostGroup
	if errors.Is(err, ErrEmptyRead) {
		kind = accesscache.HoldEmptyRead
	}
	var groups []string
	if lg := (*lostGroupError)(nil); errors.As(err, &lg) {
		groups = lg.groups
	}
	return &accesscache.Hold{
		Kind:       kind,
		Groups:     groups,
		Since:      now.UTC(),
		LostAccess: d.LostAccess - d.LostAccessByStatus,
		Allowed:    d.PreviouslyAllowed,
		Downgrades: d.Downgrades,
		Reason: err.Error() + "; account-state denials were published; release with `dirsync release --account ID` " +
			"once the change is confirmed, or fix the binding or the directory",
	}
}

// statusDenials keeps the changes that deny a user because of account state
// (mapper.AccountStateDenial: suspended, inactive, locked_out,
// duplicate_identity).
// heldBack are the changes a hold keeps back: all but account-state
// denials.
func heldBack(changes []mapper.Change) []mapper.Change {
	var out []mapper.Change
	for _, c := range changes {
		if c.New == nil || c.New.Allowed || !mapper.AccountStateDenial(c.New.Reason) {
			out = append(out, c)
		}
	}
	return out
}

func statusDenials(changes []mapper.Change) []mapper.Change {
	var out []mapper.Change
	for _, c := range changes {
		if c.New == nil || c.New.Allowed {
			continue
		}
		if mapper.AccountStateDenial(c.New.Reason) {
			out = append(out, c)
		}
	}
	return out
}

func applyToIndex(published map[string]mapper.Published, changes []mapper.Change) map[string]mapper.Published {
	if published == nil {
		published = map[string]mapper.Published{}
	}
	for _, c := range changes {
		if c.New == nil {
			delete(published, c.Email)
		} else {
			published[c.Email] = c.Next
		}
	}
	return published
}

func countChanges(d *mapper.Delta) ChangeCounts {
	return ChangeCounts{
		Added: d.Added, Updated: d.Updated, Removed: d.Removed, Unchanged: d.Unchanged,
		LostAccess: d.LostAccess, LostAccessByStatus: d.LostAccessByStatus,
		GainedAccess: d.GainedAccess, Downgrades: d.Downgrades,
	}
}

// DiffEntries describes changes for a dry run or a held pass, sorted by
// email.
func DiffEntries(changes []mapper.Change) []DiffEntry {
	out := make([]DiffEntry, 0, len(changes))
	for _, c := range changes {
		e := DiffEntry{Email: c.Email, OldPermission: entitlement.PermissionNone, NewPermission: entitlement.PermissionNone}
		if c.Old != nil {
			e.OldPermission, e.OldAllowed = c.Old.Permission, c.Old.Allowed
		}
		if c.New != nil {
			e.NewPermission, e.NewAllowed, e.Reason = c.New.Permission, c.New.Allowed, c.New.Reason
		}
		switch {
		case c.New == nil:
			e.Change = "remove"
		case !e.OldAllowed && e.NewAllowed:
			e.Change = "gain"
		case e.OldAllowed && !e.NewAllowed:
			e.Change = "lose"
		case e.OldPermission == entitlement.PermissionBasic && e.NewPermission == entitlement.PermissionPro:
			e.Change = "upgrade"
		case e.OldPermission == entitlement.PermissionPro && e.NewPermission == entitlement.PermissionBasic:
			e.Change = "downgrade"
		default:
			e.Change = "update"
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b DiffEntry) int { return strings.Compare(a.Email, b.Email) })
	return out
}

func (e *Engine) logReport(r *Report) {
	fields := []zap.Field{
		zap.String("account", r.Account), zap.String("mode", string(r.Mode)), zap.String("result", r.Result),
		zap.Bool("dry_run", r.DryRun), zap.Float64("duration_seconds", r.DurationSeconds),
		zap.Int("users", r.Stats.Users), zap.Int("decisions", r.Stats.Decisions),
		zap.Int("pro", r.Stats.ByPermission[entitlement.PermissionPro]),
		zap.Int("basic", r.Stats.ByPermission[entitlement.PermissionBasic]),
		zap.Int("denied", r.Stats.ByPermission[entitlement.PermissionNone]),
		zap.Int("published", r.Changes.Published), zap.Int("lost_access", r.Changes.LostAccess),
		zap.Int("gained_access", r.Changes.GainedAccess),
	}
	if len(r.Stats.Skipped) > 0 {
		fields = append(fields, zap.Any("skipped", r.Stats.Skipped))
	}
	for _, p := range r.Problems {
		e.log.Warn("sync problem", zap.String("account", r.Account), zap.String("code", p.Code), zap.String("problem", p.Message))
	}
	switch r.Result {
	case ResultFailed:
		e.log.Error("sync failed; last good decisions kept", append(fields, zap.String("error", r.Error))...)
	case ResultHeld:
		e.log.Error("sync held; only account-state denials published", append(fields, zap.String("kind", r.Hold.Kind), zap.String("hold", r.Hold.Reason))...)
	default:
		e.log.Info("sync", fields...)
	}
}

// Package history records every access change dirsync publishes — from the
// directory, the console, a binding change, a release, an expiry — so that
// "why did alice lose Pro on Tuesday" has an answer long after the Redis
// change stream has moved on.
//
// Recording wraps the cache writer: after each successful Apply, the
// changes become Entries, tagged with the cause and actor the caller put in
// the context (WithCause), and go to a Sink (PostgreSQL: package
// historydb). A Sink that fails never fails the publish — a suspension
// must not wait for the history database — the entries wait in a bounded
// backlog and are written with the next ones.
package history

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/entitlement/mapper"
)

// Causes of a change.
const (
	CauseDirectory      = "directory"       // a directory read (pass)
	CauseBinding        = "binding"         // the account's bindings or policy changed
	CauseRelease        = "release"         // an operator released a held sync
	CauseExpiry         = "expiry"          // an account expiry applied without a read
	CauseConsole        = "console"         // a console account action or resync
	CauseAccountDeleted = "account_deleted" // the account was deleted
	CauseSCIM           = "scim"            // an identity provider's SCIM push
)

// Entry is one published change.
type Entry struct {
	ID            int64                  `json:"id"`
	At            time.Time              `json:"at"`
	Account       string                 `json:"account"`
	Email         string                 `json:"email"`
	OldAllowed    bool                   `json:"old_allowed"`
	OldPermission entitlement.Permission `json:"old_permission"`
	NewAllowed    bool                   `json:"new_allowed"`
	NewPermission entitlement.Permission `json:"new_permission"`
	// Reason is the new decision's reason (unknown_user when removed).
	Reason entitlement.Reason `json:"reason"`
	Cause  string             `json:"cause"`
	// Actor is who caused it: "dirsync" for directory reads and expiries,
	// else the credential of the API caller (a token id), never a
	// client-chosen header.
	Actor string `json:"actor"`
}

type causeKey struct{}

type cause struct{ cause, actor string }

// WithCause returns ctx carrying the cause and actor of the changes
// published under it.
func WithCause(ctx context.Context, c, actor string) context.Context {
	return context.WithValue(ctx, causeKey{}, cause{c, actor})
}

// CauseOf returns the cause and actor WithCause put in ctx, or the
// directory and "dirsync".
func CauseOf(ctx context.Context) (string, string) {
	if c, ok := ctx.Value(causeKey{}).(cause); ok {
		return c.cause, c.actor
	}
	return CauseDirectory, "dirsync"
}

// Entries turns one Apply's changes into entries.
func Entries(ctx context.Context, account string, changes []mapper.Change, at time.Time) []Entry {
	c, actor := CauseOf(ctx)
	out := make([]Entry, 0, len(changes))
	for i := range changes {
		ch := &changes[i]
		e := Entry{At: at.UTC(), Account: account, Email: ch.Email, Cause: c, Actor: actor,
			OldPermission: entitlement.PermissionNone, NewPermission: entitlement.PermissionNone, Reason: entitlement.ReasonUnknownUser}
		if ch.Old != nil {
			e.OldAllowed, e.OldPermission = ch.Old.Allowed, ch.Old.Permission
		}
		if ch.New != nil {
			e.NewAllowed, e.NewPermission, e.Reason = ch.New.Allowed, ch.New.Permission, ch.New.Reason
		}
		out = append(out, e)
	}
	return out
}

// Sink stores entries.
type Sink interface {
	Record(ctx context.Context, entries []Entry) error
}

// Applier is the cache writer Recording wraps.
type Applier interface {
	Apply(ctx context.Context, account string, changes []mapper.Change, at time.Time) error
}

// MaxBacklog bounds the entries kept while the sink fails; older ones are
// dropped (and counted) beyond it.
const MaxBacklog = 200_000

// Recorder records the changes of every successful Apply (see Apply).
type Recorder struct {
	sink Sink
	log  *zap.Logger

	mu      sync.Mutex
	backlog []Entry
	dropped int64
}

// NewRecorder returns a recorder writing to sink.
func NewRecorder(sink Sink, log *zap.Logger) *Recorder {
	if log == nil {
		log = zap.NewNop()
	}
	return &Recorder{sink: sink, log: log}
}

// Record writes entries, with any backlog first. A failure keeps them in
// the backlog and is logged; it is never returned.
func (r *Recorder) Record(ctx context.Context, entries []Entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	batch := append(r.backlog, entries...)
	if len(batch) == 0 {
		return
	}
	if err := r.sink.Record(ctx, batch); err != nil {
		if over := len(batch) - MaxBacklog; over > 0 {
			batch = batch[over:]
			r.dropped += int64(over)
		}
		r.backlog = batch
		r.log.Error("access history not written; kept to retry with the next changes",
			zap.Int("backlog", len(batch)), zap.Int64("dropped", r.dropped), zap.Error(err))
		return
	}
	r.backlog = nil
}

// Backlog reports how many entries wait to be written and how many were
// dropped.
func (r *Recorder) Backlog() (waiting int, dropped int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.backlog), r.dropped
}

// Apply is w.Apply, recording what it published when it succeeds: cache
// writers wrap their Apply with it.
func (r *Recorder) Apply(ctx context.Context, w Applier, account string, changes []mapper.Change, at time.Time) error {
	if err := w.Apply(ctx, account, changes, at); err != nil {
		return err
	}
	if len(changes) > 0 {
		r.Record(context.WithoutCancel(ctx), Entries(ctx, account, changes, at))
	}
	return nil
}

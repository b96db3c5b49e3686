package engine

import (
	"context"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/entitlement/history"
	"github.com/dirsync/dirsync/internal/entitlement/mapper"
)

// expiringUser is a published, allowed decision whose account expires
// later (AD accountExpires): what the engine keeps to deny the user at the
// expiry even when the directory cannot be read then. It is a small copy,
// never a reference into a snapshot's memory.
type expiringUser struct {
	at       time.Time
	decision entitlement.Decision
}

// expiringOf returns the decisions in decisions that published allows and
// that expire after now, soonest first.
func expiringOf(decisions []entitlement.Decision, published map[string]mapper.Published, now time.Time) []expiringUser {
	var out []expiringUser
	for i := range decisions {
		d := &decisions[i]
		if !d.Allowed || d.Detail == nil || d.Detail.ExpiresAt == nil || !d.Detail.ExpiresAt.After(now) {
			continue
		}
		if p, ok := published[d.Email]; !ok || !p.Allowed {
			continue
		}
		out = append(out, expiringUser{at: *d.Detail.ExpiresAt, decision: *d})
	}
	slices.SortFunc(out, func(a, b expiringUser) int { return a.at.Compare(b.at) })
	return out
}

// updateExpiring is expiringOf after a pass that re-decided only changed:
// cur's entries for other users stand (none has expired: a pass whose
// clock passed an expiry maps every user), changed's replace their own.
func updateExpiring(cur []expiringUser, changed []entitlement.Decision, published map[string]mapper.Published, now time.Time) []expiringUser {
	emails := make(map[string]bool, len(changed))
	for i := range changed {
		emails[changed[i].Email] = true
	}
	out := make([]expiringUser, 0, len(cur))
	for _, u := range cur {
		if !emails[u.decision.Email] {
			out = append(out, u)
		}
	}
	out = append(out, expiringOf(changed, published, now)...)
	slices.SortFunc(out, func(a, b expiringUser) int { return a.at.Compare(b.at) })
	return out
}

// expire is the decision of u once its account has expired, built from the
// last published decision exactly as the mapper decides an expired account
// (so no needless republish once the directory answers again).
func (u *expiringUser) expire(now time.Time) entitlement.Decision {
	d := u.decision
	d.Allowed = false
	d.Permission = entitlement.PermissionNone
	d.Reason = entitlement.ReasonInactive
	d.Capabilities = entitlement.CapabilitiesOf(entitlement.PermissionNone)
	d.Via = []string{}
	d.SyncedAt = now
	var detail entitlement.Detail
	if u.decision.Detail != nil {
		detail = *u.decision.Detail
	}
	at := u.at.UTC()
	detail.ExpiresAt = &at
	detail.Rule = "account expired at " + at.Format(time.RFC3339)
	d.Detail = &detail
	return d
}

// publishExpiries denies, from the last published state, every user whose
// account expired by now. It runs before each pass's read, so an expiry
// takes effect on time whether or not the directory answers (a read that
// succeeds decides the same and finds nothing to change). It returns how
// many decisions it published.
func (e *Engine) publishExpiries(ctx context.Context, a *accountState, now time.Time) (int, error) {
	n := 0
	for n < len(a.expiring) && !a.expiring[n].at.After(now) {
		n++
	}
	if n == 0 || a.published == nil {
		return 0, nil
	}
	changes := make([]mapper.Change, 0, n)
	for i := range a.expiring[:n] {
		d := a.expiring[i].expire(now)
		old, ok := a.published[d.Email]
		if !ok || !old.Allowed {
			continue // published state moved on since (removed or denied)
		}
		changes = append(changes, mapper.Change{Email: d.Email, Old: &old, New: &d, Next: mapper.PublishedOf(&d)})
	}
	if len(changes) > 0 {
		if err := e.cache.Apply(history.WithCause(ctx, history.CauseExpiry, "dirsync"), a.cfg.Policy.Account, changes, now); err != nil {
			a.published = nil // unknown state: re-read before the next diff
			return 0, err
		}
		a.published = applyToIndex(a.published, changes)
		e.log.Info("account expiry published from the last published state",
			zap.String("account", a.cfg.Policy.Account), zap.Int("expired", len(changes)))
	}
	a.expiring = a.expiring[n:]
	return len(changes), nil
}

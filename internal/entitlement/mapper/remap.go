package mapper

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/mailaddr"
)

// decisionOf values other than a decision's index.
const (
	notDecided  = -1 // the user's domain is not claimed
	sharedEmail = -2 // the user holds an email other users hold too
)

// Mapped is a mapping kept so that Remap can bring it up to date with a
// snapshot patched in place (directory.Snapshot.Patch) in O(changes): the
// bindings' closures, and which decision each user made.
type Mapped struct {
	policy  Policy
	users   []directory.User // the snapshot mapped (Remap checks identity)
	groups  []directory.Group
	reach   []*closure
	access  *closure
	claimed map[string]bool
	// decisionOf is, by user, the index of its decision in res.Decisions,
	// notDecided or sharedEmail.
	decisionOf []int32
	res        Result
}

// MapKept is Map, keeping what Remap needs. It costs a few bytes per user
// more than Map, for as long as the Mapped is kept.
func MapKept(p Policy, snap *directory.Snapshot, now time.Time) *Mapped {
	_, m := mapSnapshot(p, snap, now, true)
	return m
}

// Result is the mapping as of the last Map or Remap. Its Decisions are
// the Mapped's own (Remap updates them in place: read them before the next
// Remap); its counts are copies.
func (m *Mapped) Result() Result {
	r := m.res
	r.Stats.ByPermission = maps.Clone(r.Stats.ByPermission)
	r.Stats.ByReason = maps.Clone(r.Stats.ByReason)
	return r
}

// Remap re-decides the users snap.Patch lists, under p at now, and returns
// their new decisions (sorted by email, one per email). snap must be the
// snapshot the mapping was made from, patched in place by its source.
//
// ok is false, and the Mapped must then be dropped (it may be partly
// updated), when the patch can move more than those users' own decisions:
// snap is not the mapped snapshot or has no Patch, the policy changed, an
// account expiry passed since the mapping (other users' decisions move
// with the clock), or a patched user changed email, holds an email another
// user holds, or entered the claimed domains. Groups and memberships are
// the same by the Patch's promise, so the closures still hold.
func (m *Mapped) Remap(p Policy, snap *directory.Snapshot, now time.Time) (changed []entitlement.Decision, ok bool) {
	if snap.Patch == nil || len(snap.Users) != len(m.users) || len(snap.Groups) != len(m.groups) ||
		(len(m.users) > 0 && &snap.Users[0] != &m.users[0]) || (len(m.groups) > 0 && &snap.Groups[0] != &m.groups[0]) ||
		!reflect.DeepEqual(p, m.policy) {
		return nil, false
	}
	if next := m.res.NextExpiry; !next.IsZero() && !now.Before(next) {
		return nil, false
	}
	for _, u := range snap.Patch.Users {
		if int(u) >= len(m.decisionOf) {
			return nil, false
		}
		user := &snap.Users[u]
		switch j := m.decisionOf[u]; {
		case j == sharedEmail:
			return nil, false
		case j == notDecided:
			if m.claimed[mailaddr.Domain(user.Email)] {
				return nil, false
			}
		case m.res.Decisions[j].Email != user.Email:
			return nil, false
		}
	}
	changed = make([]entitlement.Decision, 0, len(snap.Patch.Users))
	stats := &m.res.Stats
	for _, u := range snap.Patch.Users {
		j := m.decisionOf[u]
		if j < 0 {
			continue // not decided before or now
		}
		old := &m.res.Decisions[j]
		d := decide(p, snap, int(u), m.reach, m.access, now, new(entitlement.Detail))
		stats.ByPermission[old.Permission]--
		stats.ByReason[old.Reason]--
		stats.ByPermission[d.Permission]++
		stats.ByReason[d.Reason]++
		*old = d
		changed = append(changed, d)
		if exp := snap.Users[u].ExpiresAt; !exp.IsZero() && exp.After(now) && (m.res.NextExpiry.IsZero() || exp.Before(m.res.NextExpiry)) {
			m.res.NextExpiry = exp
		}
	}
	maps.DeleteFunc(stats.ByPermission, func(_ entitlement.Permission, n int) bool { return n == 0 })
	maps.DeleteFunc(stats.ByReason, func(_ entitlement.Reason, n int) bool { return n == 0 })
	slices.SortFunc(changed, func(a, b entitlement.Decision) int { return strings.Compare(a.Email, b.Email) })
	return changed, true
}

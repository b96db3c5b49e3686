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
	policy Policy
	users  []directory.User // the snapshot mapped (Remap checks identity)
	groups []directory.Group
	reach  []*closure
	roots  []int // each binding's group, -1 when not found
	access *closure
	// accessRoot is the access group, -1 when none or not found.
	accessRoot int
	claimed    map[string]bool
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
	r.Bindings = slices.Clone(r.Bindings)
	return r
}

// Remap re-decides the users snap.Patch lists, and the users whose paths
// through the bound groups changed when it lists groups, under p at now,
// and returns their new decisions (sorted by email, one per email). snap
// must be the snapshot the mapping was made from, patched by its source
// (users in place; groups' memberships in a copy of the groups).
//
// ok is false, and the Mapped must then be dropped (it may be partly
// updated), when the patch can move more than those users' own
// decisions: snap is not the mapped snapshot or has no Patch, the policy
// changed, an account expiry passed since the mapping (other users'
// decisions move with the clock), or a re-decided user changed email,
// holds an email another user holds, or entered the claimed domains.
// Group names and references are the same by the Patch's promise, so
// each binding resolves to the same group; its closure is walked again.
func (m *Mapped) Remap(p Policy, snap *directory.Snapshot, now time.Time) (changed []entitlement.Decision, ok bool) {
	sameGroups := len(snap.Groups) == len(m.groups) && (len(m.groups) == 0 || &snap.Groups[0] == &m.groups[0])
	if snap.Patch == nil || len(snap.Users) != len(m.users) || len(snap.Groups) != len(m.groups) ||
		(len(m.users) > 0 && &snap.Users[0] != &m.users[0]) || (len(snap.Patch.Groups) == 0 && !sameGroups) ||
		!reflect.DeepEqual(p, m.policy) {
		return nil, false
	}
	if next := m.res.NextExpiry; !next.IsZero() && !now.Before(next) {
		return nil, false
	}
	users := snap.Patch.Users
	if len(snap.Patch.Groups) > 0 {
		moved := m.rewalk(snap)
		users = slices.Concat(users, moved)
		slices.Sort(users)
		users = slices.Compact(users)
		m.groups = snap.Groups
		m.res.Stats.Skipped = snap.Skipped
	}
	for _, u := range users {
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
	changed = make([]entitlement.Decision, 0, len(users))
	stats := &m.res.Stats
	for _, u := range users {
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

// rewalk walks every found binding's group (and the access group) again
// over snap's groups and returns the users whose reach or path changed:
// O(users + the bound subtrees), no decision made.
func (m *Mapped) rewalk(snap *directory.Snapshot) []int32 {
	moved := make([]bool, len(snap.Users))
	for i, c := range m.reach {
		if c == nil {
			continue
		}
		nc := walk(snap, m.roots[i])
		markMoved(c, nc, moved)
		m.reach[i] = nc
		m.res.Bindings[i].Users = nc.users
	}
	if m.access != nil && m.accessRoot >= 0 {
		nc := walk(snap, m.accessRoot)
		markMoved(m.access, nc, moved)
		m.access = nc
	}
	var out []int32
	for u, mv := range moved {
		if mv {
			out = append(out, int32(u))
		}
	}
	return out
}

// markMoved marks the users reached differently by two closures of one
// root: reached by one only, through another group, or through a group
// whose path from the root changed.
func markMoved(old, cur *closure, moved []bool) {
	pathMoved := make([]bool, len(cur.parent))
	for g := range cur.parent {
		if cur.parent[g] < 0 || old.parent[g] < 0 {
			continue
		}
		for h := int32(g); ; h = cur.parent[h] {
			if old.parent[h] != cur.parent[h] {
				pathMoved[g] = true
				break
			}
			if cur.parent[h] == h {
				break
			}
		}
	}
	for u := range cur.direct {
		if old.direct[u] != cur.direct[u] || (cur.direct[u] >= 0 && pathMoved[cur.direct[u]]) {
			moved[u] = true
		}
	}
}

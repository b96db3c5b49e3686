package mapper

import (
	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/mailaddr"
	"maps"
	"regexp"

	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/dirsync/dirsync/internal/directory"
)

// Policy is what an account's config says about entitlements.
type Policy struct {
	Account        string
	ClaimedDomains []string
	// AccessGroup, when not empty, is a group every allowed user must be a
	// (transitive) member of.
	AccessGroup string
	Bindings    []Binding
}

// Binding grants Permission to the transitive members of Group (a DN, an
// Okta group id, or an exact group name).
type Binding struct {
	Group      string
	Permission entitlement.Permission
}

// Stats counts a mapping's outcome.
type Stats struct {
	// Users is the number of users in the snapshot.
	Users int `json:"users"`
	// Decisions is the number of decisions (users in claimed domains, one
	// per email).
	Decisions    int                            `json:"decisions"`
	ByPermission map[entitlement.Permission]int `json:"by_permission"`
	ByReason     map[entitlement.Reason]int     `json:"by_reason"`
	// DomainNotClaimed counts users outside the account's claimed domains.
	DomainNotClaimed int `json:"domain_not_claimed"`
	// DuplicateEmails counts users whose email another user also has.
	DuplicateEmails int `json:"duplicate_emails"`
	// DuplicateIdentities counts emails denied duplicate_identity: shared
	// by objects the directory does not tell apart (see Map).
	DuplicateIdentities int `json:"duplicate_identities"`
	// Skipped is the snapshot's own count of objects it left out.
	Skipped map[string]int `json:"skipped,omitempty"`
	// UnreadableState counts users denied because an attribute deciding
	// their account state could not be read, by attribute.
	UnreadableState map[string]int `json:"unreadable_state,omitempty"`
}

// Problem is something about the policy or the data an operator should see;
// it does not stop the mapping.
type Problem struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Problem codes.
const (
	ProblemBindingNotFound     = "binding_not_found"
	ProblemBindingAmbiguous    = "binding_ambiguous"
	ProblemAccessGroupNotFound = "access_group_not_found"
	ProblemDuplicateEmail      = "duplicate_email"
	// ProblemDuplicateIdentity: emails shared by objects the directory does
	// not tell apart were denied duplicate_identity.
	ProblemDuplicateIdentity = "duplicate_identity"
	// ProblemUnreadableState: users whose account state could not be
	// read (an ACL hiding userAccountControl, an unparseable value) were
	// denied.
	ProblemUnreadableState = "unreadable_account_state"
)

// Result is a mapping's output.
type Result struct {
	// Decisions holds one decision per email, sorted by email.
	Decisions []entitlement.Decision
	Stats     Stats
	Problems  []Problem
	// Bindings reports, per policy binding in order, whether its group was
	// found and how many users it reaches (transitively).
	Bindings []entitlement.BindingStat
	// NextExpiry is the earliest account expiry after the evaluation time
	// among users it would deny; zero if none. A scheduler re-maps then.
	NextExpiry time.Time
}

// Map computes the decisions for every user of snap under policy p at time
// now. Rules, in order: domain not claimed (not published); suspended;
// inactive (including expiry at or before now); locked out; not in the
// access group; pro; basic; no permission group.
//
// An email several users share is decided by resolveShared: one active
// user whose every other holder is an old account disabled before it was
// created decides; two active users, or an active one and any other
// holder, give duplicate_identity; when none is active the email is
// denied for an account state.
func Map(p Policy, snap *directory.Snapshot, now time.Time) Result {
	res, _ := mapSnapshot(p, snap, now, false)
	return res
}

// mapSnapshot is Map; with keep it also returns what Remap needs.
func mapSnapshot(p Policy, snap *directory.Snapshot, now time.Time, keep bool) (Result, *Mapped) {
	res := Result{Stats: Stats{
		Users:           len(snap.Users),
		ByPermission:    map[entitlement.Permission]int{},
		ByReason:        map[entitlement.Reason]int{},
		Skipped:         snap.Skipped,
		UnreadableState: snap.Unreadable,
	}}
	for _, attr := range slices.Sorted(maps.Keys(snap.Unreadable)) {
		res.Problems = append(res.Problems, Problem{Code: ProblemUnreadableState,
			Message: fmt.Sprintf("%d users denied: their %s could not be read (missing, hidden from the service account, or not a number)", snap.Unreadable[attr], attr)})
	}
	resolver := newGroupResolver(snap.Groups)

	reach := make([]*closure, len(p.Bindings))
	roots := make([]int, len(p.Bindings)) // the bound groups, -1 when not found
	res.Bindings = make([]entitlement.BindingStat, len(p.Bindings))
	for i, b := range p.Bindings {
		res.Bindings[i] = entitlement.BindingStat{Group: b.Group, Permission: b.Permission}
		g, problem := resolver.resolve(b.Group)
		roots[i] = g
		if problem != nil {
			res.Problems = append(res.Problems, *problem)
			continue
		}
		reach[i] = walk(snap, g)
		res.Bindings[i].Found = true
		res.Bindings[i].Users = reach[i].users
	}
	var access *closure
	accessRoot := -1
	if p.AccessGroup != "" {
		g, problem := resolver.resolve(p.AccessGroup)
		if problem != nil {
			problem.Code = ProblemAccessGroupNotFound
			problem.Message = "access group: " + problem.Message + "; every user is denied not_in_access_group"
			res.Problems = append(res.Problems, *problem)
			access = &closure{}
		} else {
			access, accessRoot = walk(snap, g), g
		}
	}

	claimed := make(map[string]bool, len(p.ClaimedDomains))
	for _, d := range p.ClaimedDomains {
		claimed[mailaddr.NormalizeDomain(d)] = true
	}

	byEmail := make(map[string]int, len(snap.Users))
	decisions := make([]entitlement.Decision, 0, len(snap.Users))
	// firstUser[j] is the user decisions[j] was made for; shared[j] holds
	// the further users with that email, when there are any.
	firstUser := make([]int32, 0, len(snap.Users))
	var shared map[int][]holder
	// Every decision's Detail lives in one slab: one allocation instead
	// of one per user.
	details := make([]entitlement.Detail, len(snap.Users))
	for u := range snap.Users {
		user := &snap.Users[u]
		if !claimed[mailaddr.Domain(user.Email)] {
			res.Stats.DomainNotClaimed++
			continue
		}
		d := decide(p, snap, u, reach, access, now, &details[u])
		if !user.ExpiresAt.IsZero() && user.ExpiresAt.After(now) {
			if res.NextExpiry.IsZero() || user.ExpiresAt.Before(res.NextExpiry) {
				res.NextExpiry = user.ExpiresAt
			}
		}
		if j, dup := byEmail[user.Email]; dup {
			res.Stats.DuplicateEmails++
			if shared == nil {
				shared = make(map[int][]holder)
			}
			shared[j] = append(shared[j], holder{user: u, decision: d})
			continue
		}
		byEmail[user.Email] = len(decisions)
		decisions = append(decisions, d)
		firstUser = append(firstUser, int32(u))
	}
	if len(shared) > 0 {
		var explained, conflicts []string
		for _, j := range slices.Sorted(maps.Keys(shared)) {
			holders := append([]holder{{user: int(firstUser[j]), decision: decisions[j]}}, shared[j]...)
			d, conflict := resolveShared(p, snap, holders, now)
			decisions[j] = d
			if conflict {
				conflicts = append(conflicts, d.Email)
			} else {
				explained = append(explained, d.Email)
			}
		}
		res.Stats.DuplicateIdentities = len(conflicts)
		if len(explained) > 0 {
			res.Problems = append(res.Problems, Problem{Code: ProblemDuplicateEmail,
				Message: fmt.Sprintf("%d emails are held by several users (e.g. %s): the active one decides, the others are old accounts disabled before it was created, or none is active", len(explained), explained[0])})
		}
		if len(conflicts) > 0 {
			res.Problems = append(res.Problems, Problem{Code: ProblemDuplicateIdentity,
				Message: fmt.Sprintf("%d emails are held by several users the directory does not tell apart (e.g. %s): denied duplicate_identity until only one of them carries the address, or the others are disabled accounts older than it", len(conflicts), conflicts[0])})
		}
	}
	var kept *Mapped
	if keep {
		kept = &Mapped{policy: p, users: snap.Users, groups: snap.Groups, reach: reach, roots: roots, access: access, accessRoot: accessRoot, claimed: claimed,
			decisionOf: make([]int32, len(snap.Users))}
		for u := range kept.decisionOf {
			kept.decisionOf[u] = notDecided
		}
		for j, others := range shared {
			kept.decisionOf[firstUser[j]] = sharedEmail
			for _, h := range others {
				kept.decisionOf[h.user] = sharedEmail
			}
		}
		sort.Sort(byEmailWithUser{decisions, firstUser})
		for j, u := range firstUser {
			if kept.decisionOf[u] != sharedEmail {
				kept.decisionOf[u] = int32(j)
			}
		}
	} else {
		slices.SortFunc(decisions, func(a, b entitlement.Decision) int { return strings.Compare(a.Email, b.Email) })
	}
	for i := range decisions {
		res.Stats.ByPermission[decisions[i].Permission]++
		res.Stats.ByReason[decisions[i].Reason]++
	}
	res.Stats.Decisions = len(decisions)
	res.Decisions = decisions
	if kept != nil {
		kept.res = res
	}
	return res, kept
}

// byEmailWithUser sorts decisions by email, keeping the user each was
// made for beside it.
type byEmailWithUser struct {
	d []entitlement.Decision
	u []int32
}

func (s byEmailWithUser) Len() int           { return len(s.d) }
func (s byEmailWithUser) Less(i, j int) bool { return s.d[i].Email < s.d[j].Email }
func (s byEmailWithUser) Swap(i, j int) {
	s.d[i], s.d[j] = s.d[j], s.d[i]
	s.u[i], s.u[j] = s.u[j], s.u[i]
}

// holder is one of several users sharing an email, with the decision its
// own state and groups give.
type holder struct {
	user     int
	decision entitlement.Decision
}

// AccountStateDenial reports whether reason denies a user because of what
// the directory says about that user's own account, not about groups or
// bindings: suspended, inactive, locked_out, and duplicate_identity (a
// doubt about who the user is). Such denials are trustworthy even in a read
// that is otherwise held, so they are published under every hold and do
// not count towards the safeguard's threshold.
func AccountStateDenial(reason entitlement.Reason) bool {
	switch reason {
	case entitlement.ReasonSuspended, entitlement.ReasonInactive, entitlement.ReasonLockedOut, entitlement.ReasonDuplicateIdentity:
		return true
	}
	return false
}

// resolveShared decides an email that several users hold; conflict reports
// a duplicate_identity denial. Holders are "active" when their own account
// state does not deny them (whatever their groups give).
//
//   - No active holder: the email is denied for an account state (the first
//     of suspended, inactive, locked_out in rule order, then by user id).
//   - One active holder A, and every other holder D explained by an older
//     disabled account: A's decision. D is explained when it is suspended or
//     inactive (not locked out: that is a live account), the directory gives
//     both D's last change and A's creation time, and D's last change (and,
//     for an account that is only expired, its expiry) is strictly before A
//     was created: D was already disabled, and has not been touched since,
//     when A came to exist.
//   - Otherwise (two active holders, or a disabled one the directory gives
//     no such evidence for): denied duplicate_identity. Letting the "most
//     usable" holder decide would let any active object that carries a
//     suspended user's address keep that user signed in.
func resolveShared(p Policy, snap *directory.Snapshot, holders []holder, now time.Time) (entitlement.Decision, bool) {
	slices.SortFunc(holders, func(a, b holder) int {
		return strings.Compare(snap.Users[a.user].ID, snap.Users[b.user].ID)
	})
	active := -1
	for i := range holders {
		if AccountStateDenial(holders[i].decision.Reason) {
			continue
		}
		if active >= 0 {
			return duplicateIdentity(p, snap, holders, now), true
		}
		active = i
	}
	if active < 0 {
		best := 0
		for i := range holders {
			if stateOrder(holders[i].decision.Reason) < stateOrder(holders[best].decision.Reason) {
				best = i
			}
		}
		return holders[best].decision, false
	}
	a := &snap.Users[holders[active].user]
	for i := range holders {
		if i != active && !olderDisabled(&snap.Users[holders[i].user], holders[i].decision.Reason, a) {
			return duplicateIdentity(p, snap, holders, now), true
		}
	}
	return holders[active].decision, false
}

// olderDisabled reports whether user d, denied for reason, is an old
// account disabled before the active user a was created (see resolveShared).
func olderDisabled(d *directory.User, reason entitlement.Reason, a *directory.User) bool {
	if reason != entitlement.ReasonSuspended && reason != entitlement.ReasonInactive {
		return false
	}
	if a.Created == 0 || d.Changed == 0 || d.Changed >= a.Created {
		return false
	}
	if d.Status == directory.StatusActive {
		// Inactive only because it expired: it must have expired before
		// a existed too.
		return !d.ExpiresAt.IsZero() && d.ExpiresAt.Unix() < a.Created
	}
	return true
}

// stateOrder orders account-state reasons as the rules apply them.
func stateOrder(r entitlement.Reason) int {
	switch r {
	case entitlement.ReasonSuspended:
		return 0
	case entitlement.ReasonInactive:
		return 1
	}
	return 2
}

// maxListedHolders bounds how many holders a duplicate_identity rule names.
const maxListedHolders = 5

// duplicateIdentity is the denial of an email its holders dispute. It names
// no user id (the email has no single owner); the rule lists the holders.
func duplicateIdentity(p Policy, snap *directory.Snapshot, holders []holder, now time.Time) entitlement.Decision {
	var rule strings.Builder
	fmt.Fprintf(&rule, "%d directory objects carry this email and the directory does not say which one owns it:", len(holders))
	for i, h := range holders {
		if i == maxListedHolders {
			fmt.Fprintf(&rule, " and %d more", len(holders)-i)
			break
		}
		u := &snap.Users[h.user]
		name := u.DN
		if name == "" {
			name = u.ID
		}
		if i > 0 {
			rule.WriteByte(';')
		}
		fmt.Fprintf(&rule, " %s (%s, created %s, changed %s)", name, h.decision.Reason, unixLabel(u.Created), unixLabel(u.Changed))
	}
	return entitlement.Decision{
		Email:      holders[0].decision.Email,
		Account:    p.Account,
		Permission: entitlement.PermissionNone,
		Reason:     entitlement.ReasonDuplicateIdentity,
		Via:        []string{},
		SyncedAt:   now,
		Detail: &entitlement.Detail{
			Rule:            rule.String(),
			DirectoryStatus: "duplicate",
			Source:          snap.Source,
		},
	}
}

// unixLabel shows a Created/Changed value.
func unixLabel(sec int64) string {
	if sec == 0 {
		return "unknown"
	}
	return time.Unix(sec, 0).UTC().Format(time.RFC3339)
}

// decide computes user u's decision; detail is where its Detail goes.
func decide(p Policy, snap *directory.Snapshot, u int, reach []*closure, access *closure, now time.Time, detail *entitlement.Detail) entitlement.Decision {
	user := &snap.Users[u]
	*detail = entitlement.Detail{
		DirectoryStatus: user.Status.String(),
		DN:              user.DN,
		Source:          snap.Source,
	}
	d := entitlement.Decision{
		Email:      user.Email,
		Account:    p.Account,
		Permission: entitlement.PermissionNone,
		UserID:     user.ID,
		Via:        []string{},
		SyncedAt:   now,
		Detail:     detail,
	}
	if !user.ExpiresAt.IsZero() {
		t := user.ExpiresAt.UTC()
		d.Detail.ExpiresAt = &t
	}
	reached := 0
	for _, c := range reach {
		if c != nil && c.direct[u] >= 0 {
			reached++
		}
	}
	if reached > 0 {
		d.Detail.Paths = make([]entitlement.GroupPath, 0, reached)
	}
	best := entitlement.PermissionNone
	for i, c := range reach {
		if c == nil || c.direct[u] < 0 {
			continue
		}
		b := p.Bindings[i]
		d.Detail.Paths = append(d.Detail.Paths, entitlement.GroupPath{Binding: b.Group, Permission: b.Permission, Groups: c.path(snap, u)})
		if rank(b.Permission) > rank(best) {
			best = b.Permission
		}
	}
	inAccess := true
	if access != nil {
		inAccess = access.contains(u)
		d.Detail.InAccessGroup = &inAccess
	}

	switch {
	case user.Status == directory.StatusSuspended:
		d.Reason, d.Detail.Rule = entitlement.ReasonSuspended, "directory status is suspended"
	case user.Status == directory.StatusInactive:
		d.Reason, d.Detail.Rule = entitlement.ReasonInactive, "directory status is inactive"
	case !user.ExpiresAt.IsZero() && !user.ExpiresAt.After(now):
		d.Reason, d.Detail.Rule = entitlement.ReasonInactive, "account expired at "+user.ExpiresAt.UTC().Format(time.RFC3339)
	case user.Status == directory.StatusLockedOut:
		d.Reason, d.Detail.Rule = entitlement.ReasonLockedOut, "directory status is locked_out"
	case !inAccess:
		d.Reason, d.Detail.Rule = entitlement.ReasonNotInAccessGroup, "not a member of access group "+p.AccessGroup
	case best == entitlement.PermissionNone:
		d.Reason, d.Detail.Rule = entitlement.ReasonNoPermission, "not a member of any bound group"
	default:
		d.Allowed = true
		d.Permission = best
		d.Reason = entitlement.ReasonGranted
		d.Detail.Rule = grantedRule(best)
		for _, path := range d.Detail.Paths {
			if path.Permission == best {
				d.Via = append(d.Via, path.Groups[0])
			}
		}
	}
	d.Capabilities = entitlement.CapabilitiesOf(d.Permission)
	return d
}

// grantedRule is Detail.Rule of a granted decision; the usual ones are
// constants, not a string per user.
func grantedRule(p entitlement.Permission) string {
	switch p {
	case entitlement.PermissionPro:
		return "member of a group bound to pro"
	case entitlement.PermissionBasic:
		return "member of a group bound to basic"
	}
	return "member of a group bound to " + string(p)
}

// closure is the set of users reachable from one group through nested
// groups, with enough to rebuild one path per user.
type closure struct {
	// direct[u] is a reached group user u is a direct member of, or -1.
	direct []int32
	// users counts the users reached.
	users int
	// parent[g] is the group through which group g was reached (itself for
	// the root), or -1 when g was not reached.
	parent []int32
	// paths[g] memoises path labels per reached group: every user reached
	// through g shares one read-only slice.
	paths [][]string
}

func (c *closure) contains(u int) bool { return c.direct != nil && c.direct[u] >= 0 }

// walk computes the closure of root breadth-first; cycles are safe because
// every group is visited once.
func walk(snap *directory.Snapshot, root int) *closure {
	c := &closure{direct: make([]int32, len(snap.Users)), parent: make([]int32, len(snap.Groups))}
	for i := range c.direct {
		c.direct[i] = -1
	}
	for i := range c.parent {
		c.parent[i] = -1
	}
	c.parent[root] = int32(root)
	queue := []int32{int32(root)}
	for len(queue) > 0 {
		g := queue[0]
		queue = queue[1:]
		grp := &snap.Groups[g]
		for _, u := range grp.Members {
			if c.direct[u] < 0 {
				c.direct[u] = g
				c.users++
			}
		}
		for _, sub := range grp.Subgroups {
			if c.parent[sub] < 0 {
				c.parent[sub] = g
				queue = append(queue, sub)
			}
		}
	}
	return c
}

// path returns the group labels from the closure's root down to the group
// user u was reached through. Users reached through the same group share
// the slice (capacity clipped, so an append copies): callers must not
// modify it.
func (c *closure) path(snap *directory.Snapshot, u int) []string {
	g0 := c.direct[u]
	if c.paths == nil {
		c.paths = make([][]string, len(c.parent))
	}
	if p := c.paths[g0]; p != nil {
		return p
	}
	var rev []string
	for g := g0; ; g = c.parent[g] {
		rev = append(rev, snap.Groups[g].Label())
		if c.parent[g] == g {
			break
		}
	}
	slices.Reverse(rev)
	rev = slices.Clip(rev)
	c.paths[g0] = rev
	return rev
}

// groupResolver finds the group a binding names.
type groupResolver struct {
	byRef  map[string]int
	byName map[string][]int
}

func newGroupResolver(groups []directory.Group) *groupResolver {
	r := &groupResolver{byRef: make(map[string]int, len(groups)), byName: make(map[string][]int, len(groups))}
	for i := range groups {
		r.byRef[groups[i].Ref] = i
		r.byName[groups[i].Name] = append(r.byName[groups[i].Name], i)
	}
	return r
}

// resolve matches a binding by reference (a DN compared in normalised form,
// or an id) and then by exact name. A binding shaped like a reference (a DN,
// an Okta group id, a UUID) is matched by reference only: when that group
// is gone, a group whose *name* happens to be the same string must not take
// over its binding.
func (r *groupResolver) resolve(ref string) (int, *Problem) {
	if g, ok := r.byRef[ref]; ok {
		return g, nil
	}
	if strings.Contains(ref, "=") {
		if g, ok := r.byRef[directory.NormalizeDN(ref)]; ok {
			return g, nil
		}
	}
	if refShaped(ref) {
		return -1, &Problem{Code: ProblemBindingNotFound, Message: fmt.Sprintf("group %q is not in the directory", ref)}
	}
	switch byName := r.byName[ref]; len(byName) {
	case 0:
		return -1, &Problem{Code: ProblemBindingNotFound, Message: fmt.Sprintf("group %q is not in the directory", ref)}
	case 1:
		return byName[0], nil
	default:
		return -1, &Problem{Code: ProblemBindingAmbiguous, Message: fmt.Sprintf("%d groups are named %q; bind it by DN or id", len(byName), ref)}
	}
}

var (
	// oktaGroupID is the shape of an Okta group id (00g + 17 characters).
	oktaGroupID = regexp.MustCompile(`^00g[0-9A-Za-z]{17}$`)
	uuidShape   = regexp.MustCompile(`^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$`)
)

// refShaped reports whether a binding names a group by reference: a DN, an
// Okta group id or a UUID (SCIM ids, entryUUID).
func refShaped(ref string) bool {
	return strings.Contains(ref, "=") || oktaGroupID.MatchString(ref) || uuidShape.MatchString(ref)
}

// rank orders permissions: a higher rank wins (pro beats basic).
func rank(p entitlement.Permission) int {
	switch p {
	case entitlement.PermissionPro:
		return 2
	case entitlement.PermissionBasic:
		return 1
	}
	return 0
}

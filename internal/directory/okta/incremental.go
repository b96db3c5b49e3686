package okta

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	oktasdk "github.com/okta/okta-sdk-golang/v2/okta"
	"github.com/okta/okta-sdk-golang/v2/okta/query"

	"github.com/dirsync/dirsync/internal/directory"
)

// logEventTypes are the System Log events that can change a bound user's
// decision: lifecycle and account state, and group membership.
var logEventTypes = []string{
	"user.lifecycle.activate",
	"user.lifecycle.reactivate",
	"user.lifecycle.deactivate",
	"user.lifecycle.suspend",
	"user.lifecycle.unsuspend",
	"user.lifecycle.delete.initiated",
	"user.lifecycle.delete.completed",
	"user.account.lock",
	"user.account.unlock",
	"user.account.reset_password",
	"user.account.expire_password",
	"user.account.update_profile",
	"group.user_membership.add",
	"group.user_membership.remove",
}

// groupIDsPerFilter bounds the id clauses in one groups filter.
const groupIDsPerFilter = 50

// oktaTime is the timestamp format of Okta filters.
const oktaTime = "2006-01-02T15:04:05.000Z"

// Incremental brings the last snapshot up to date and reports whether any
// user or membership changed. Before any successful Snapshot it does a full
// read. Its requests scale with the number of changes, not the org size:
//
//   - one groups request (per 50 bound groups) for the bound groups whose
//     lastMembershipUpdated moved; those groups are listed again in full
//     (Okta has no membership delta besides the System Log);
//   - users whose lastUpdated moved (org-wide, paged), which carries status
//     and profile changes;
//   - the System Log, polled forward from the last read, for lifecycle and
//     membership events the two filters may have missed (eventual
//     consistency); affected users are read one by one and affected groups
//     listed again.
//
// On error the previous state is kept and nothing partial is returned.
func (p *Poller) Incremental(ctx context.Context) (*directory.Snapshot, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last == nil {
		st, err := p.fullRead(ctx)
		if err != nil {
			return nil, false, err
		}
		p.last = st
		return st.snap, true, nil
	}
	st, err := p.incrementalRead(ctx, p.last)
	if err != nil {
		return nil, false, err
	}
	changed := !sameContent(p.last.snap, st.snap)
	switch {
	case !changed:
		// Keep the previous slices; only FetchedAt moves.
		snap := *p.last.snap
		snap.FetchedAt = st.snap.FetchedAt
		st.snap = &snap
	default:
		if patched, ok := patchUsers(p.last.snap, st.snap); ok {
			st.snap = patched
		}
	}
	p.last = st
	return st.snap, changed, nil
}

// incrementalRead reads what changed since prev in four steps (see
// Incremental) and returns the new state; prev is not modified.
func (p *Poller) incrementalRead(ctx context.Context, prev *state) (*state, error) {
	p.transport.markRead()
	r := &incrementalPass{
		p:     p,
		since: prev.cursor.Format(oktaTime),
		st: &state{
			groups:  slices.Clone(prev.groups),
			users:   maps.Clone(prev.users),
			logNext: prev.logNext,
		},
		byID:      map[string]int{},
		relist:    map[string]bool{},
		refreshed: map[string]bool{},
	}
	for i, g := range r.st.groups {
		r.byID[g.id] = i
	}
	for _, step := range []func(context.Context) error{
		r.movedGroups,  // 1. bound groups whose membership changed
		r.updatedUsers, // 2. users updated since the cursor
		r.systemLog,    // 3. System Log events since the last poll
		r.relistGroups, // 4. list changed groups again
	} {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	r.st.forgetUnheld()
	r.st.cursor = p.cursorFrom(p.transport.readStart())
	r.st.snap = p.build(r.st)
	return r.st, nil
}

// incrementalPass is the working state of one incremental read.
type incrementalPass struct {
	p *Poller
	// since is the change cursor in Okta's filter format.
	since string
	// st is the state being built, from a copy of the previous one.
	st *state
	// byID indexes st.groups by group id.
	byID map[string]int
	// relist holds the bound groups to list again in full (step 4).
	relist map[string]bool
	// refreshed holds the users already read in this pass.
	refreshed map[string]bool
}

// movedGroups marks for relisting the bound groups whose
// lastMembershipUpdated moved since the cursor.
func (r *incrementalPass) movedGroups(ctx context.Context) error {
	ids := make([]string, len(r.st.groups))
	for i, g := range r.st.groups {
		ids[i] = g.id
	}
	for chunk := range slices.Chunk(ids, groupIDsPerFilter) {
		clauses := make([]string, len(chunk))
		for i, id := range chunk {
			clauses[i] = fmt.Sprintf(`id eq "%s"`, id)
		}
		filter := fmt.Sprintf(`lastMembershipUpdated gt "%s" and (%s)`, r.since, strings.Join(clauses, " or "))
		moved, err := listAll(ctx, r.p, "list changed groups", func(ctx context.Context) ([]*oktasdk.Group, *oktasdk.Response, error) {
			return r.p.client.Group.ListGroups(ctx, query.NewQueryParams(query.WithFilter(filter), query.WithLimit(int64(r.p.opts.PageSize))))
		})
		if err != nil {
			return err
		}
		for _, g := range moved {
			if g != nil {
				if _, bound := r.byID[g.Id]; bound {
					r.relist[g.Id] = true
				}
			}
		}
	}
	return nil
}

// updatedUsers takes the status and profile of every bound user whose
// lastUpdated moved since the cursor.
func (r *incrementalPass) updatedUsers(ctx context.Context) error {
	filter := fmt.Sprintf(`lastUpdated gt "%s"`, r.since)
	updated, err := listAll(ctx, r.p, "list updated users", func(ctx context.Context) ([]*oktasdk.User, *oktasdk.Response, error) {
		return r.p.client.User.ListUsers(ctx, query.NewQueryParams(query.WithFilter(filter), query.WithLimit(int64(r.p.opts.PageSize))))
	})
	if err != nil {
		return err
	}
	for _, u := range updated {
		if u == nil {
			continue
		}
		if _, bound := r.st.users[u.Id]; bound {
			r.st.users[u.Id] = memberOf(u)
			r.refreshed[u.Id] = true
		}
	}
	return nil
}

// systemLog polls the System Log forward: a membership event marks its
// bound group for relisting, a user event has its bound user read again
// (once per pass).
func (r *incrementalPass) systemLog(ctx context.Context) error {
	events, next, err := r.p.pollLog(ctx, r.st.logNext, r.since)
	if err != nil {
		return err
	}
	r.st.logNext = next
	var toRead []string
	for _, e := range events {
		if e == nil {
			continue
		}
		var userID, groupID string
		for _, t := range e.Target {
			if t == nil {
				continue
			}
			switch t.Type {
			case "User":
				userID = t.Id
			case "UserGroup":
				groupID = t.Id
			}
		}
		if groupID != "" {
			if _, bound := r.byID[groupID]; bound {
				r.relist[groupID] = true
			}
			continue
		}
		if _, bound := r.st.users[userID]; bound && !r.refreshed[userID] {
			r.refreshed[userID] = true
			toRead = append(toRead, userID)
		}
	}
	for _, id := range toRead {
		if err := r.readUser(ctx, id); err != nil {
			return err
		}
	}
	return nil
}

// readUser reads one bound user again. A deleted user leaves the state,
// and every bound group that held it is listed again.
func (r *incrementalPass) readUser(ctx context.Context, id string) error {
	cctx, cancel := r.p.callContext(ctx)
	u, _, err := r.p.client.User.GetUser(cctx, id)
	cancel()
	switch {
	case isNotFound(err):
		// Deleted: it leaves every group, and so the snapshot.
		delete(r.st.users, id)
		for i := range r.st.groups {
			if slices.Contains(r.st.groups[i].members, id) {
				r.relist[r.st.groups[i].id] = true
			}
		}
	case err != nil:
		return fmt.Errorf("okta: get user %s: %w", id, describe(err))
	case u == nil:
		return fmt.Errorf("okta: get user %s: empty answer", id)
	default:
		r.st.users[id] = memberOf(u)
	}
	return nil
}

// relistGroups lists the marked groups again in full, in a stable order.
func (r *incrementalPass) relistGroups(ctx context.Context) error {
	for _, id := range slices.Sorted(maps.Keys(r.relist)) {
		g := &r.st.groups[r.byID[id]]
		fresh := boundGroup{id: g.id, name: g.name}
		if err := r.p.listMembers(ctx, &fresh, r.st.users); err != nil {
			return err
		}
		*g = fresh
	}
	return nil
}

// forgetUnheld drops the users no bound group holds any more.
func (st *state) forgetUnheld() {
	held := map[string]bool{}
	for _, g := range st.groups {
		for _, id := range g.members {
			held[id] = true
		}
	}
	for id := range st.users {
		if !held[id] {
			delete(st.users, id)
		}
	}
}

// pollLog reads the System Log forward: from the stored next link, or from
// since on the first poll. Okta always sends a next link when polling, even
// on an empty page, so paging stops at the first page shorter than the
// limit and its next link becomes the cursor.
func (p *Poller) pollLog(ctx context.Context, next, since string) ([]*oktasdk.LogEvent, string, error) {
	clauses := make([]string, len(logEventTypes))
	for i, t := range logEventTypes {
		clauses[i] = fmt.Sprintf(`eventType eq "%s"`, t)
	}
	filter := strings.Join(clauses, " or ")
	var all []*oktasdk.LogEvent
	for pages := 1; ; pages++ {
		var page []*oktasdk.LogEvent
		var resp *oktasdk.Response
		var err error
		cctx, cancel := p.callContext(ctx)
		if next == "" {
			page, resp, err = p.client.LogEvent.GetLogs(cctx, query.NewQueryParams(
				query.WithSince(since), query.WithSortOrder("ASCENDING"),
				query.WithFilter(filter), query.WithLimit(DefaultLogPageSize)))
		} else {
			var req *http.Request
			req, err = p.client.CloneRequestExecutor().NewRequest(http.MethodGet, next, nil)
			if err == nil {
				resp, err = p.client.CloneRequestExecutor().Do(cctx, req, &page)
			}
		}
		cancel()
		if err != nil {
			return nil, "", fmt.Errorf("okta: poll system log (page %d): %w", pages, describe(err))
		}
		if resp == nil || resp.NextPage == "" {
			return nil, "", fmt.Errorf("okta: poll system log (page %d): no next link to continue from", pages)
		}
		all = append(all, page...)
		following := withoutSince(resp.NextPage)
		if len(page) < DefaultLogPageSize {
			return all, following, nil
		}
		if following == next {
			return nil, "", fmt.Errorf("okta: poll system log: a full page repeated its cursor")
		}
		next = following
		if pages >= p.opts.MaxPages {
			return nil, "", fmt.Errorf("okta: poll system log: more than %d pages", p.opts.MaxPages)
		}
	}
}

// sameContent reports whether two snapshots hold the same users and
// memberships (FetchedAt aside).
func sameContent(a, b *directory.Snapshot) bool {
	return slices.Equal(a.Users, b.Users) &&
		maps.Equal(a.Skipped, b.Skipped) &&
		slices.EqualFunc(a.Groups, b.Groups, func(x, y directory.Group) bool {
			return x.Ref == y.Ref && x.Name == y.Name && slices.Equal(x.Members, y.Members)
		})
}

// patchUsers returns prev with next's users written over it in place,
// with a Patch naming them (see directory.Snapshot.Patch), when next
// differs from prev only in some users' own fields: the same user ids at
// the same indices, the same groups and memberships, the same skipped
// counts. prev is superseded then (the poller never reads it again); ok
// is false, and prev untouched, otherwise.
func patchUsers(prev, next *directory.Snapshot) (*directory.Snapshot, bool) {
	if len(prev.Users) != len(next.Users) || !maps.Equal(prev.Skipped, next.Skipped) || len(prev.Unreadable) > 0 || len(next.Unreadable) > 0 ||
		!slices.EqualFunc(prev.Groups, next.Groups, func(x, y directory.Group) bool {
			return x.Ref == y.Ref && x.Name == y.Name && x.DN == y.DN && slices.Equal(x.Members, y.Members) && slices.Equal(x.Subgroups, y.Subgroups)
		}) {
		return nil, false
	}
	var changed []int32
	for i := range next.Users {
		if prev.Users[i].ID != next.Users[i].ID {
			return nil, false
		}
		if prev.Users[i] != next.Users[i] {
			changed = append(changed, int32(i))
		}
	}
	if len(changed) == 0 {
		return nil, false
	}
	for _, i := range changed {
		prev.Users[i] = next.Users[i]
	}
	snap := *prev
	snap.FetchedAt = next.FetchedAt
	snap.Patch = &directory.Patch{Users: changed}
	return &snap, true
}

// withoutSince drops since from a next link that has an after cursor: the
// SDK copies the first request's parameters into every next link, and Okta
// documents since and after as mutually exclusive.
func withoutSince(next string) string {
	u, err := url.Parse(next)
	if err != nil {
		return next
	}
	q := u.Query()
	if !q.Has("after") || !q.Has("since") {
		return next
	}
	q.Del("since")
	u.RawQuery = q.Encode()
	return u.String()
}

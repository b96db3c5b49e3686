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
	if !changed {
		// Keep the previous slices; only FetchedAt moves.
		snap := *p.last.snap
		snap.FetchedAt = st.snap.FetchedAt
		st.snap = &snap
	}
	p.last = st
	return st.snap, changed, nil
}

func (p *Poller) incrementalRead(ctx context.Context, prev *state) (*state, error) {
	p.transport.markRead()
	since := prev.cursor.Format(oktaTime)
	st := &state{
		groups:  slices.Clone(prev.groups),
		users:   maps.Clone(prev.users),
		logNext: prev.logNext,
	}
	byID := map[string]int{}
	for i, g := range st.groups {
		byID[g.id] = i
	}
	relist := map[string]bool{}

	// 1. Bound groups whose membership changed.
	ids := make([]string, len(st.groups))
	for i, g := range st.groups {
		ids[i] = g.id
	}
	for chunk := range slices.Chunk(ids, groupIDsPerFilter) {
		clauses := make([]string, len(chunk))
		for i, id := range chunk {
			clauses[i] = fmt.Sprintf(`id eq "%s"`, id)
		}
		filter := fmt.Sprintf(`lastMembershipUpdated gt "%s" and (%s)`, since, strings.Join(clauses, " or "))
		moved, err := listAll(ctx, p, "list changed groups", func(ctx context.Context) ([]*oktasdk.Group, *oktasdk.Response, error) {
			return p.client.Group.ListGroups(ctx, query.NewQueryParams(query.WithFilter(filter), query.WithLimit(int64(p.opts.PageSize))))
		})
		if err != nil {
			return nil, err
		}
		for _, g := range moved {
			if g != nil {
				if _, bound := byID[g.Id]; bound {
					relist[g.Id] = true
				}
			}
		}
	}

	// 2. Users updated since the cursor: status and profile changes.
	refreshed := map[string]bool{}
	filter := fmt.Sprintf(`lastUpdated gt "%s"`, since)
	updated, err := listAll(ctx, p, "list updated users", func(ctx context.Context) ([]*oktasdk.User, *oktasdk.Response, error) {
		return p.client.User.ListUsers(ctx, query.NewQueryParams(query.WithFilter(filter), query.WithLimit(int64(p.opts.PageSize))))
	})
	if err != nil {
		return nil, err
	}
	for _, u := range updated {
		if u == nil {
			continue
		}
		if _, bound := st.users[u.Id]; bound {
			st.users[u.Id] = memberOf(u)
			refreshed[u.Id] = true
		}
	}

	// 3. System Log events since the last poll.
	events, next, err := p.pollLog(ctx, st.logNext, since)
	if err != nil {
		return nil, err
	}
	st.logNext = next
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
			if _, bound := byID[groupID]; bound {
				relist[groupID] = true
			}
			continue
		}
		if _, bound := st.users[userID]; bound && !refreshed[userID] {
			refreshed[userID] = true
			toRead = append(toRead, userID)
		}
	}
	for _, id := range toRead {
		cctx, cancel := p.callContext(ctx)
		u, _, err := p.client.User.GetUser(cctx, id)
		cancel()
		switch {
		case isNotFound(err):
			// Deleted: it leaves every group, and so the snapshot.
			delete(st.users, id)
			for i := range st.groups {
				if slices.Contains(st.groups[i].members, id) {
					relist[st.groups[i].id] = true
				}
			}
		case err != nil:
			return nil, fmt.Errorf("okta: get user %s: %w", id, describe(err))
		case u == nil:
			return nil, fmt.Errorf("okta: get user %s: empty answer", id)
		default:
			st.users[id] = memberOf(u)
		}
	}

	// 4. List changed groups again, in a stable order.
	for _, id := range slices.Sorted(maps.Keys(relist)) {
		g := &st.groups[byID[id]]
		fresh := boundGroup{id: g.id, name: g.name}
		if err := p.listMembers(ctx, &fresh, st.users); err != nil {
			return nil, err
		}
		*g = fresh
	}
	// Forget users no bound group holds any more.
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
	st.cursor = p.cursorFrom(p.transport.readStart())
	st.snap = p.build(st)
	return st, nil
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

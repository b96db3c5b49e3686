package engine

import (
	"slices"
	"strings"

	"github.com/dirsync/dirsync/internal/directory"
)

// GroupSummary is one directory group as the account's last read saw it:
// what an administrator picking groups to bind needs.
type GroupSummary struct {
	// Ref is what a binding names: the DN (LDAP) or the group id (Okta,
	// SCIM).
	Ref  string `json:"ref"`
	Name string `json:"name"`
	// DN is the group's DN as the directory spells it (LDAP only).
	DN string `json:"dn,omitempty"`
	// DirectMembers counts the users directly in the group.
	DirectMembers int `json:"direct_members"`
	// TransitiveMembers counts the distinct users in it or in any group
	// nested in it.
	TransitiveMembers int `json:"transitive_members"`
	// Subgroups counts the groups directly in it.
	Subgroups int `json:"subgroups"`
}

// keepGroups remembers snap's groups for Groups (run lock held).
func (a *accountState) keepGroups(snap *directory.Snapshot) {
	a.mu.Lock()
	a.groups, a.userCount = snap.Groups, len(snap.Users)
	a.mu.Unlock()
}

// Groups lists the groups of an account's last read whose name or
// reference contains search (case-insensitively; empty: all), by name, at
// most limit. ok is false for an unknown account or one not read yet.
func (e *Engine) Groups(account, search string, limit int) (out []GroupSummary, total int, ok bool) {
	a := e.account(account)
	if a == nil {
		return nil, 0, false
	}
	a.mu.Lock()
	groups, users := a.groups, a.userCount
	a.mu.Unlock()
	if groups == nil {
		return nil, 0, false
	}
	search = strings.ToLower(search)
	var matched []int
	for i := range groups {
		g := &groups[i]
		if search == "" || strings.Contains(strings.ToLower(g.Name), search) || strings.Contains(strings.ToLower(g.Ref), search) {
			matched = append(matched, i)
		}
	}
	slices.SortFunc(matched, func(x, y int) int {
		if c := strings.Compare(strings.ToLower(groups[x].Name), strings.ToLower(groups[y].Name)); c != 0 {
			return c
		}
		return strings.Compare(groups[x].Ref, groups[y].Ref)
	})
	total = len(matched)
	if limit > 0 && len(matched) > limit {
		matched = matched[:limit]
	}
	out = make([]GroupSummary, 0, len(matched))
	seen := make([]bool, users)
	visited := make([]bool, len(groups))
	for _, i := range matched {
		g := &groups[i]
		out = append(out, GroupSummary{Ref: g.Ref, Name: g.Name, DN: g.DN, DirectMembers: len(g.Members),
			Subgroups: len(g.Subgroups), TransitiveMembers: transitive(groups, i, seen, visited)})
	}
	return out, total, true
}

// transitive counts the distinct users reachable from group root through
// nested groups (cycles are safe). seen and visited are scratch space,
// all false on entry and on return.
func transitive(groups []directory.Group, root int, seen, visited []bool) int {
	var users []int32
	var visitedGroups []int32
	queue := []int32{int32(root)}
	visited[root] = true
	visitedGroups = append(visitedGroups, int32(root))
	for len(queue) > 0 {
		g := &groups[queue[0]]
		queue = queue[1:]
		for _, u := range g.Members {
			if int(u) < len(seen) && !seen[u] {
				seen[u] = true
				users = append(users, u)
			}
		}
		for _, sub := range g.Subgroups {
			if !visited[sub] {
				visited[sub] = true
				visitedGroups = append(visitedGroups, sub)
				queue = append(queue, sub)
			}
		}
	}
	for _, u := range users {
		seen[u] = false
	}
	for _, g := range visitedGroups {
		visited[g] = false
	}
	return len(users)
}

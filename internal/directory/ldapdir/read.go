package ldapdir

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/directory/ldapentry"
)

// state is one complete read: the snapshot, the compact records it was
// built from (sorted by stable ID, so an incremental pass can patch them;
// member lists as ids of the DN table) and the change cursor. An
// incremental pass builds a new state, sharing unchanged record slices and
// the DN table (append-only: ids stay valid). When its changes are only
// users' own attributes (patchInPlace) it updates those records and
// snapshot users in place, in O(changes), and says so in the snapshot's
// Patch: the previous state is superseded then, never read again.
type state struct {
	snap   *directory.Snapshot
	dns    *ldapentry.DNTable
	users  []ldapentry.Record
	groups []ldapentry.Record
	// index resolves member values to snap's users and groups, for a
	// group patched in place.
	index *ldapentry.Memberships

	url string // the server that served the read; the cursor belongs to it
	// AD: the DC's NTDS Settings DN and invocationId, and its
	// highestCommittedUSN read before the read began.
	dsa, invocationID string
	usn               int64
	// OpenLDAP: the newest modifyTimestamp among the entries read.
	stamp string
}

// dcInfo is what an AD rootDSE says about the DC serving a connection.
type dcInfo struct {
	dsa, invocationID, namingContext string
	usn                              int64
}

func (p *Poller) readDC(ctx context.Context, conn searchConn) (dcInfo, error) {
	root, err := p.searchBase(ctx, conn, "", []string{"dsServiceName", "highestCommittedUSN", "defaultNamingContext"})
	if err != nil {
		return dcInfo{}, fmt.Errorf("read rootDSE: %w", err)
	}
	if root == nil {
		return dcInfo{}, errors.New("read rootDSE: no entry")
	}
	info := dcInfo{dsa: root.First("dsservicename"), namingContext: root.First("defaultnamingcontext")}
	if info.usn, err = strconv.ParseInt(root.First("highestcommittedusn"), 10, 64); err != nil {
		return dcInfo{}, fmt.Errorf("rootDSE highestCommittedUSN %q is not a number (is this an Active Directory DC?)", root.First("highestcommittedusn"))
	}
	if info.dsa == "" {
		return dcInfo{}, errors.New("rootDSE has no dsServiceName (is this an Active Directory DC?)")
	}
	dsa, err := p.searchBase(ctx, conn, info.dsa, []string{"invocationId"})
	if err != nil {
		return dcInfo{}, fmt.Errorf("read invocationId of %q: %w", info.dsa, err)
	}
	if dsa != nil {
		info.invocationID = ldapentry.DecodeGUID([]byte(dsa.First("invocationid")))
	}
	if info.invocationID == "" {
		return dcInfo{}, fmt.Errorf("no invocationId on %q", info.dsa)
	}
	return info, nil
}

func (p *Poller) userAttrs() []string {
	a := []string{"objectClass"}
	if p.ad {
		a = append(a, "objectGUID", "objectSid", "primaryGroupID", "userAccountControl", "accountExpires", "whenCreated", "whenChanged")
	} else {
		a = append(a, "entryUUID", "uid", "createTimestamp", "modifyTimestamp")
		if p.o.DisabledAttribute != "" {
			a = append(a, p.o.DisabledAttribute)
		}
	}
	return append(a, p.o.EmailAttributes...)
}

func (p *Poller) groupAttrs() []string {
	if p.ad {
		return []string{"objectClass", "objectGUID", "objectSid", "cn", "member"}
	}
	return []string{"objectClass", "entryUUID", "cn", "member", "uniqueMember", "memberUid", "modifyTimestamp"}
}

// andFilter narrows filter with cond (already escaped), or returns filter.
func andFilter(filter, cond string) string {
	if cond == "" {
		return filter
	}
	return "(&" + filter + cond + ")"
}

// recordSet is the result of reading one kind of entry.
type recordSet struct {
	recs  []ldapentry.Record // sorted by stable ID, one per ID (the last read wins)
	stamp string             // newest modifyTimestamp (OpenLDAP)
	read  searchCount        // what the search returned
}

// readRecords runs one paged search and turns every entry into its record
// as it arrives (the entry itself is dropped), completing ranged attributes
// (member;range=…) afterwards on the same connection. sizeHint is the
// expected number of entries.
func (p *Poller) readRecords(ctx context.Context, conn searchConn, base, filter string, attrs []string, dns *ldapentry.DNTable, sizeHint int) (recordSet, error) {
	var set recordSet
	recs := recordChunks{next: sizeHint}
	type partial struct {
		e      *ldapentry.Entry
		ranged []rangedAttr
	}
	var incomplete []partial
	read, err := p.search(ctx, conn, query{base: base, scope: ldap.ScopeWholeSubtree, filter: filter, attrs: attrs}, func(e *ldapentry.Entry, ranged []rangedAttr) error {
		// Only the newest timestamp of the set is the cursor; records
		// carry none (per entry it would only make unchanged entries
		// look changed).
		if ts := e.First("modifytimestamp"); ts > set.stamp {
			set.stamp = ts
		}
		if len(ranged) > 0 {
			incomplete = append(incomplete, partial{cloneEntry(e), ranged})
			return nil
		}
		recs.add(p.reader.Record(e, dns))
		return nil
	})
	if err != nil {
		return recordSet{}, err
	}
	for _, pe := range incomplete {
		if err := p.completeRanges(ctx, conn, pe.e, pe.ranged); err != nil {
			return recordSet{}, err
		}
		recs.add(p.reader.Record(pe.e, dns))
	}
	set.recs = sortRecords(recs.slice())
	set.read = read
	return set, nil
}

// recordChunks collects records in chunks that are never copied as they
// grow (appending to one slice of 100k records re-copies it about four
// times); slice copies them once into one slice of the exact length.
type recordChunks struct {
	full [][]ldapentry.Record
	cur  []ldapentry.Record
	n    int
	next int // capacity of the next chunk; 0 picks one
}

func (c *recordChunks) add(r ldapentry.Record) {
	if len(c.cur) == cap(c.cur) {
		if c.cur != nil {
			c.full = append(c.full, c.cur)
		}
		size := c.next
		if size <= 0 {
			size = min(max(c.n, 1024), 64<<10)
		}
		c.next = 0
		c.cur = make([]ldapentry.Record, 0, size)
	}
	c.cur = append(c.cur, r)
	c.n++
}

func (c *recordChunks) slice() []ldapentry.Record {
	if len(c.full) == 0 {
		return c.cur
	}
	out := make([]ldapentry.Record, 0, c.n)
	for i, chunk := range c.full {
		out = append(out, chunk...)
		c.full[i] = nil // garbage as soon as copied
	}
	return append(out, c.cur...)
}

// sortRecords sorts records by stable ID, keeping the last of records
// sharing one.
func sortRecords(recs []ldapentry.Record) []ldapentry.Record {
	slices.SortStableFunc(recs, func(a, b ldapentry.Record) int { return strings.Compare(a.ID, b.ID) })
	out := recs[:0]
	for i := range recs {
		if i+1 < len(recs) && recs[i+1].ID == recs[i].ID {
			continue
		}
		out = append(out, recs[i])
	}
	clear(recs[len(out):])
	return out
}

// sizeHint is a capacity for n entries read last time: a little room to
// grow without the slice doubling.
func sizeHint(n int) int { return n + n/32 }

// fullRead reads every user and group, users and groups concurrently on
// two connections to the same server. prefer is tried first (the server
// an incremental pass found). Full reads go through ldapwire: they are
// nearly all of the entries dirsync ever reads.
func (p *Poller) fullRead(ctx context.Context, prefer string) (*state, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conn, err := p.connect(ctx, prefer, p.dialWire)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	url := conn.serverURL()
	st := &state{url: url}
	var info dcInfo
	if p.ad {
		// The USN is read before the entries: changes made during the read
		// are read again by the next incremental pass, never missed.
		if info, err = p.readDC(ctx, conn); err != nil {
			return nil, fmt.Errorf("%s: %w", url, err)
		}
		st.dsa, st.invocationID, st.usn = info.dsa, info.invocationID, info.usn
	}

	dns := ldapentry.NewDNTable(sizeHint(p.lastUsers + p.lastGroups))
	var (
		wg     sync.WaitGroup
		groups recordSet
		gErr   error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			if gErr != nil {
				cancel()
			}
		}()
		gconn, err := p.dialWire(ctx, url)
		if err != nil {
			gErr = err
			return
		}
		defer gconn.Close()
		if p.ad {
			gi, err := p.readDC(ctx, gconn)
			if err != nil {
				gErr = err
				return
			}
			if gi.dsa != info.dsa {
				gErr = fmt.Errorf("the second connection reached another DC (%s, not %s)", gi.dsa, info.dsa)
				return
			}
		}
		groups, gErr = p.readRecords(ctx, gconn, p.o.GroupBaseDN, p.o.GroupFilter, p.groupAttrs(), dns, sizeHint(p.lastGroups))
	}()
	users, uErr := p.readRecords(ctx, conn, p.o.UserBaseDN, p.o.UserFilter, p.userAttrs(), dns, sizeHint(p.lastUsers))
	if uErr != nil {
		cancel()
	}
	wg.Wait()
	// When one side fails it cancels the other: report the cause, not the
	// cancellation it triggered.
	if errors.Is(uErr, context.Canceled) && gErr != nil && !errors.Is(gErr, context.Canceled) {
		uErr = nil
	}
	switch {
	case uErr != nil:
		return nil, fmt.Errorf("%s: read users: %w", url, uErr)
	case gErr != nil:
		return nil, fmt.Errorf("%s: read groups: %w", url, gErr)
	}
	st.dns, st.users, st.groups = dns, users.recs, groups.recs
	p.lastUsers, p.lastGroups = len(st.users), len(st.groups)
	st.stamp = max(users.stamp, groups.stamp)
	if err := p.build(st); err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	p.lastGood = users.read
	p.lastGood.add(groups.read)
	return st, nil
}

// build maps the state's records to a snapshot with ldapentry, in a stable
// order (by stable ID, users first).
func (p *Poller) build(st *state) error {
	if len(st.users) == 0 {
		return fmt.Errorf("%w under %q with filter %s", ErrNoUsers, p.o.UserBaseDN, p.o.UserFilter)
	}
	b := ldapentry.NewRecordBuilder(p.o.Source, st.dns, len(st.users), len(st.groups))
	for _, recs := range [][]ldapentry.Record{st.users, st.groups} {
		for i := range recs {
			b.AddRecord(&recs[i])
		}
	}
	snap := b.Snapshot(p.o.Now())
	st.index = b.Memberships()
	if len(snap.Users) == 0 {
		return fmt.Errorf("%w: %d user entries read, none with an email in %v", ErrNoUsers, len(st.users), p.o.EmailAttributes)
	}
	st.snap = snap
	return nil
}

// incremental brings prev up to date. It returns fullFrom (the server to
// prefer) instead of a state when only a full read can: the caller drops
// prev before reading, so the two are never held at once.
func (p *Poller) incremental(ctx context.Context, prev *state) (next *state, changed bool, fullFrom string, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conn, err := p.connect(ctx, prev.url, p.dial)
	if err != nil {
		return nil, false, "", fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	url := conn.serverURL()
	if url != prev.url {
		return nil, false, url, nil // another server: the cursor means nothing there
	}
	next = &state{url: prev.url, dns: prev.dns, index: prev.index, dsa: prev.dsa, invocationID: prev.invocationID, usn: prev.usn, stamp: prev.stamp}
	var cond string
	var info dcInfo
	if p.ad {
		if info, err = p.readDC(ctx, conn); err != nil {
			return nil, false, "", fmt.Errorf("%s: %w", url, err)
		}
		if info.dsa != prev.dsa || info.invocationID != prev.invocationID {
			return nil, false, url, nil
		}
		if info.usn == prev.usn {
			return prev, false, "", nil
		}
		cond = fmt.Sprintf("(uSNChanged>=%d)", prev.usn+1)
		next.usn = info.usn
	} else {
		if prev.stamp == "" {
			return nil, false, url, nil // the server shows no modifyTimestamp to follow
		}
		cond = modifiedSince(prev.stamp)
	}
	users, err := p.readRecords(ctx, conn, p.o.UserBaseDN, andFilter(p.o.UserFilter, cond), p.userAttrs(), prev.dns, 0)
	if err != nil {
		return nil, false, "", fmt.Errorf("%s: read changed users: %w", url, err)
	}
	groups, err := p.readRecords(ctx, conn, p.o.GroupBaseDN, andFilter(p.o.GroupFilter, cond), p.groupAttrs(), prev.dns, 0)
	if err != nil {
		return nil, false, "", fmt.Errorf("%s: read changed groups: %w", url, err)
	}
	var deleted map[string]bool
	if p.ad {
		deleted, err = p.readDeleted(ctx, conn, info.namingContext, prev.usn+1)
		switch {
		case ldap.IsErrorAnyOf(err, ldap.LDAPResultNoSuchObject, ldap.LDAPResultInsufficientAccessRights):
			// This account may not read tombstones (the AD default for a
			// non-admin): deletions wait for the next full read, but the
			// pass, and with it every suspension it found, goes on.
			deleted = nil
		case err != nil:
			return nil, false, "", fmt.Errorf("%s: read deleted objects: %w", url, err)
		}
	}
	next.stamp = max(prev.stamp, users.stamp, groups.stamp)
	if snap, ok := patchInPlace(prev, users.recs, groups.recs, deleted, p.o.Now()); ok {
		next.users, next.groups, next.snap = prev.users, prev.groups, snap
		return next, true, "", nil
	}
	renamed := map[int32]int32{} // old DN id → new DN id
	var usersChanged, groupsChanged bool
	next.users, usersChanged = patch(prev.users, users.recs, deleted, renamed)
	next.groups, groupsChanged = patch(prev.groups, groups.recs, deleted, renamed)
	if len(renamed) > 0 && p.ad {
		// AD does not touch a group when a member is renamed or moved (the
		// link follows the object), so the DNs the groups hold are fixed
		// here; copies, since records are shared with prev. Generic LDAP
		// servers store DNs: a group changes (refint overlay) or keeps a
		// dangling DN, as a full read would see it.
		next.groups = renameMembers(next.groups, renamed, !groupsChanged)
	}
	if !usersChanged && !groupsChanged {
		next.snap = prev.snap // the cursor may have moved; the snapshot did not
		return next, false, "", nil
	}
	if err := p.build(next); err != nil {
		return nil, false, "", fmt.Errorf("%s: %w", url, err)
	}
	return next, true, "", nil
}

// patch returns recs (sorted by ID) with the changed records (sorted by ID)
// put in and the deleted IDs taken out, and whether that changed anything;
// records equal to what recs holds are no change. recs is never modified:
// a change returns a new slice, no change returns recs itself. A record
// whose DN changed is noted in renamed (old DN id → new).
func patch(recs, changed []ldapentry.Record, deleted map[string]bool, renamed map[int32]int32) ([]ldapentry.Record, bool) {
	byID := func(r ldapentry.Record, id string) int { return strings.Compare(r.ID, id) }
	put := changed[:0:0]
	for i := range changed {
		c := &changed[i]
		j, ok := slices.BinarySearchFunc(recs, c.ID, byID)
		if ok && ldapentry.Equal(&recs[j], c) {
			continue
		}
		if ok && recs[j].Self != c.Self {
			renamed[recs[j].Self] = c.Self
		}
		put = append(put, *c)
	}
	gone := 0
	for id := range deleted {
		if _, ok := slices.BinarySearchFunc(recs, id, byID); ok {
			gone++
		}
	}
	if len(put) == 0 && gone == 0 {
		return recs, false
	}
	out := make([]ldapentry.Record, 0, len(recs)+len(put)-gone)
	i := 0
	for _, c := range put {
		for ; i < len(recs) && recs[i].ID < c.ID; i++ {
			if !deleted[recs[i].ID] {
				out = append(out, recs[i])
			}
		}
		if i < len(recs) && recs[i].ID == c.ID {
			i++ // replaced
		}
		if !deleted[c.ID] {
			out = append(out, c)
		}
	}
	for ; i < len(recs); i++ {
		if !deleted[recs[i].ID] {
			out = append(out, recs[i])
		}
	}
	return out, true
}

// patchInPlace applies a read's changes to prev in O(changes) when they
// cannot move any user or group: nothing read was deleted, no entry is
// new, every changed user keeps its DN, uid, primary group, unreadable
// attribute and its place in the snapshot (an email before and after),
// and every changed group keeps its DN, name and SID and has members
// ldapentry.Memberships can resolve as the full build did (no memberUid,
// no user's primary group). User records and snapshot users are updated
// in place; changed groups get new member lists in a copy of the groups
// (readers of the previous snapshot's groups may still hold them). It
// returns a snapshot over them with a Patch naming what changed. ok is
// false, prev untouched, when the change needs a rebuild (patch and build)
// or changes nothing.
func patchInPlace(prev *state, users, groups []ldapentry.Record, deleted map[string]bool, now time.Time) (*directory.Snapshot, bool) {
	byID := func(r ldapentry.Record, id string) int { return strings.Compare(r.ID, id) }
	for id := range deleted {
		if _, ok := slices.BinarySearchFunc(prev.users, id, byID); ok {
			return nil, false
		}
		if _, ok := slices.BinarySearchFunc(prev.groups, id, byID); ok {
			return nil, false
		}
	}
	type groupEdit struct {
		changed, rec       int
		group              int32
		members, subgroups []int32
		oldSkips, newSkips map[string]int
	}
	var gedits []groupEdit
	for i := range groups {
		c := &groups[i]
		j, ok := slices.BinarySearchFunc(prev.groups, c.ID, byID)
		if !ok {
			return nil, false // a new entry
		}
		r := &prev.groups[j]
		if ldapentry.Equal(r, c) {
			continue
		}
		if prev.index == nil || r.Kind != ldapentry.KindGroup || c.Kind != ldapentry.KindGroup || r.Group == nil || c.Group == nil ||
			r.Self != c.Self || r.DN != c.DN || r.Group.Name != c.Group.Name || r.Group.SID != c.Group.SID {
			return nil, false
		}
		gi, ok := prev.index.GroupOf(c.Self)
		if !ok {
			return nil, false
		}
		oldMembers, oldSubgroups, oldSkips, ok := prev.index.Resolve(r.Group)
		// The resolution must give what the full build gave, or it is not
		// the same resolution: rebuild.
		if !ok || !slices.Equal(oldMembers, prev.snap.Groups[gi].Members) || !slices.Equal(oldSubgroups, prev.snap.Groups[gi].Subgroups) {
			return nil, false
		}
		members, subgroups, newSkips, ok := prev.index.Resolve(c.Group)
		if !ok {
			return nil, false
		}
		gedits = append(gedits, groupEdit{i, j, gi, members, subgroups, oldSkips, newSkips})
	}
	type userEdit struct{ changed, rec, user int }
	var edits []userEdit
	for i := range users {
		c := &users[i]
		j, ok := slices.BinarySearchFunc(prev.users, c.ID, byID)
		if !ok {
			return nil, false // a new entry
		}
		r := &prev.users[j]
		if ldapentry.Equal(r, c) {
			continue
		}
		if r.Kind != ldapentry.KindUser || c.Kind != ldapentry.KindUser || r.Group != nil || c.Group != nil ||
			r.Self != c.Self || r.DN != c.DN || r.UID != c.UID || r.PrimarySID != c.PrimarySID ||
			r.Unreadable != c.Unreadable || r.Email == "" || c.Email == "" {
			return nil, false
		}
		u, ok := slices.BinarySearchFunc(prev.snap.Users, c.ID, func(u directory.User, id string) int { return strings.Compare(u.ID, id) })
		if !ok || prev.snap.Users[u].DN != c.DN {
			return nil, false
		}
		edits = append(edits, userEdit{i, j, u})
	}
	if len(edits) == 0 && len(gedits) == 0 {
		return nil, false
	}
	snap := *prev.snap
	snap.FetchedAt = now
	patch := &directory.Patch{}
	for _, e := range edits {
		c := users[e.changed]
		prev.users[e.rec] = c
		// As Builder.AddRecord makes it.
		prev.snap.Users[e.user] = directory.User{ID: c.ID, DN: c.DN, Email: c.Email, Status: c.Status, ExpiresAt: c.ExpiresAt,
			Created: c.Created, Changed: c.Changed}
		patch.Users = append(patch.Users, int32(e.user))
	}
	if len(gedits) > 0 {
		snap.Groups = slices.Clone(prev.snap.Groups)
		snap.Skipped = maps.Clone(prev.snap.Skipped)
		if snap.Skipped == nil {
			snap.Skipped = map[string]int{}
		}
		for _, e := range gedits {
			prev.groups[e.rec] = groups[e.changed]
			snap.Groups[e.group].Members, snap.Groups[e.group].Subgroups = e.members, e.subgroups
			for k, n := range e.oldSkips {
				snap.Skipped[k] -= n
			}
			for k, n := range e.newSkips {
				snap.Skipped[k] += n
			}
			patch.Groups = append(patch.Groups, e.group)
		}
		maps.DeleteFunc(snap.Skipped, func(_ string, n int) bool { return n == 0 })
		if len(snap.Skipped) == 0 {
			snap.Skipped = nil
		}
	}
	slices.Sort(patch.Users)
	slices.Sort(patch.Groups)
	snap.Patch = patch
	return &snap, true
}

// modifiedSince is the OpenLDAP change filter. The timestamp comes from
// the server's data, so it is escaped (RFC 4515) like any value.
func modifiedSince(stamp string) string {
	return "(modifyTimestamp>=" + ldap.EscapeFilter(stamp) + ")"
}

// readDeleted returns the objectGUIDs of objects deleted at or after
// fromUSN (AD tombstones, read with the Show Deleted control).
func (p *Poller) readDeleted(ctx context.Context, conn searchConn, namingContext string, fromUSN int64) (map[string]bool, error) {
	if namingContext == "" {
		return nil, errors.New("rootDSE has no defaultNamingContext")
	}
	ids := map[string]bool{}
	q := query{
		base: "CN=Deleted Objects," + namingContext, scope: ldap.ScopeSingleLevel,
		filter:   fmt.Sprintf("(&(isDeleted=TRUE)(uSNChanged>=%d))", fromUSN),
		attrs:    []string{"objectGUID"},
		controls: []ldap.Control{ldap.NewControlMicrosoftShowDeleted()},
	}
	_, err := p.search(ctx, conn, q, func(e *ldapentry.Entry, _ []rangedAttr) error {
		if id := ldapentry.DecodeGUID([]byte(e.First("objectguid"))); id != "" {
			ids[id] = true
		}
		return nil
	})
	return ids, err
}

// renameMembers returns groups with member ids renamed (old DN id → new).
// Groups holding a renamed member get a new record; the slice is copied
// first when shared (it belongs to the previous state too).
func renameMembers(groups []ldapentry.Record, renamed map[int32]int32, shared bool) []ldapentry.Record {
	for i := range groups {
		g := groups[i].Group
		if g == nil {
			continue
		}
		var members []int32
		for j, m := range g.Members {
			if to, ok := renamed[m]; ok {
				if members == nil {
					members = slices.Clone(g.Members)
				}
				members[j] = to
			}
		}
		if members == nil {
			continue
		}
		if shared {
			groups, shared = slices.Clone(groups), false
		}
		ng := *g
		ng.Members = members
		groups[i].Group = &ng
	}
	return groups
}

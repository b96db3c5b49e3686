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

	"github.com/go-ldap/ldap/v3"

	"github.com/dirsync/dirsync/directory"
	"github.com/dirsync/dirsync/directory/ldapentry"
)

// state is one complete read: the snapshot, the entries it was built from
// (keyed by stable ID, so an incremental pass can patch them) and the
// change cursor. A state is never modified once built; an incremental
// pass builds a new one (entries are shared, maps copied).
type state struct {
	snap   *directory.Snapshot
	users  map[string]*ldapentry.Entry
	groups map[string]*ldapentry.Entry

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

func (p *Poller) readDC(conn *session) (dcInfo, error) {
	res, err := conn.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, p.timeLimitSeconds(), false,
		"(objectClass=*)", []string{"dsServiceName", "highestCommittedUSN", "defaultNamingContext"}, nil))
	if err != nil {
		return dcInfo{}, fmt.Errorf("read rootDSE: %w", describe(err))
	}
	if len(res.Entries) != 1 {
		return dcInfo{}, errors.New("read rootDSE: no entry")
	}
	root := res.Entries[0]
	info := dcInfo{dsa: root.GetAttributeValue("dsServiceName"), namingContext: root.GetAttributeValue("defaultNamingContext")}
	if info.usn, err = strconv.ParseInt(root.GetAttributeValue("highestCommittedUSN"), 10, 64); err != nil {
		return dcInfo{}, fmt.Errorf("rootDSE highestCommittedUSN %q is not a number (is this an Active Directory DC?)", root.GetAttributeValue("highestCommittedUSN"))
	}
	if info.dsa == "" {
		return dcInfo{}, errors.New("rootDSE has no dsServiceName (is this an Active Directory DC?)")
	}
	res, err = conn.Search(ldap.NewSearchRequest(info.dsa, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, p.timeLimitSeconds(), false,
		"(objectClass=*)", []string{"invocationId"}, nil))
	if err != nil {
		return dcInfo{}, fmt.Errorf("read invocationId of %q: %w", info.dsa, describe(err))
	}
	if len(res.Entries) == 1 {
		info.invocationID = ldapentry.DecodeGUID(res.Entries[0].GetRawAttributeValue("invocationId"))
	}
	if info.invocationID == "" {
		return dcInfo{}, fmt.Errorf("no invocationId on %q", info.dsa)
	}
	return info, nil
}

func (p *Poller) userAttrs() []string {
	a := []string{"objectClass"}
	if p.ad {
		a = append(a, "objectGUID", "objectSid", "primaryGroupID", "userAccountControl", "accountExpires")
	} else {
		a = append(a, "entryUUID", "uid", "modifyTimestamp")
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

// entrySet is the result of reading one kind of entry.
type entrySet struct {
	byID  map[string]*ldapentry.Entry
	stamp string // newest modifyTimestamp (OpenLDAP)
}

// readEntries runs one paged search and collects entries by stable ID,
// completing ranged attributes (member;range=…) afterwards on the same
// connection.
func (p *Poller) readEntries(ctx context.Context, conn *session, base, filter string, attrs []string) (entrySet, error) {
	set := entrySet{byID: map[string]*ldapentry.Entry{}}
	type partial struct {
		e      *ldapentry.Entry
		ranged []rangedAttr
	}
	var incomplete []partial
	classes := map[string]string{} // objectClass values repeat on every entry: keep one copy
	err := p.search(ctx, conn, query{base: base, scope: ldap.ScopeWholeSubtree, filter: filter, attrs: attrs}, func(le *ldap.Entry) error {
		e, ranged := toEntry(le)
		set.byID[ldapentry.StableID(e)] = e
		if ts := e.First("modifytimestamp"); ts > set.stamp {
			set.stamp = ts
		}
		// Only the newest timestamp of the set is the cursor; per entry
		// it would only make unchanged entries look changed.
		delete(e.Attrs, "modifytimestamp")
		for i, oc := range e.Attrs["objectclass"] {
			if c, ok := classes[oc]; ok {
				e.Attrs["objectclass"][i] = c
			} else {
				classes[oc] = oc
			}
		}
		if len(ranged) > 0 {
			incomplete = append(incomplete, partial{e, ranged})
		}
		return nil
	})
	if err != nil {
		return entrySet{}, err
	}
	for _, pe := range incomplete {
		if err := p.completeRanges(ctx, conn, pe.e, pe.ranged); err != nil {
			return entrySet{}, err
		}
	}
	return set, nil
}

// fullRead reads every user and group, users and groups concurrently on
// two connections to the same server. prefer is tried first (the server
// an incremental pass found).
func (p *Poller) fullRead(ctx context.Context, prefer string) (*state, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conn, err := p.connect(ctx, prefer)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.o.Source, err)
	}
	defer conn.Close()
	st := &state{url: conn.url}
	var info dcInfo
	if p.ad {
		// The USN is read before the entries: changes made during the read
		// are read again by the next incremental pass, never missed.
		if info, err = p.readDC(conn); err != nil {
			return nil, fmt.Errorf("%s: %w", conn.url, err)
		}
		st.dsa, st.invocationID, st.usn = info.dsa, info.invocationID, info.usn
	}

	var (
		wg     sync.WaitGroup
		groups entrySet
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
		gconn, err := p.dial(ctx, conn.url)
		if err != nil {
			gErr = err
			return
		}
		defer gconn.Close()
		if p.ad {
			gi, err := p.readDC(gconn)
			if err != nil {
				gErr = err
				return
			}
			if gi.dsa != info.dsa {
				gErr = fmt.Errorf("the second connection reached another DC (%s, not %s)", gi.dsa, info.dsa)
				return
			}
		}
		groups, gErr = p.readEntries(ctx, gconn, p.o.GroupBaseDN, p.o.GroupFilter, p.groupAttrs())
	}()
	users, uErr := p.readEntries(ctx, conn, p.o.UserBaseDN, p.o.UserFilter, p.userAttrs())
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
		return nil, fmt.Errorf("%s: read users: %w", conn.url, uErr)
	case gErr != nil:
		return nil, fmt.Errorf("%s: read groups: %w", conn.url, gErr)
	}
	st.users, st.groups = users.byID, groups.byID
	st.stamp = max(users.stamp, groups.stamp)
	if err := p.build(st); err != nil {
		return nil, fmt.Errorf("%s: %w", conn.url, err)
	}
	return st, nil
}

// build maps the state's entries to a snapshot with ldapentry, in a stable
// order (by stable ID, users first).
func (p *Poller) build(st *state) error {
	if len(st.users) == 0 {
		return fmt.Errorf("%w under %q with filter %s", ErrNoUsers, p.o.UserBaseDN, p.o.UserFilter)
	}
	b := ldapentry.NewBuilder(p.o.Source, ldapentry.Options{
		EmailAttributes:   slices.Clone(p.o.EmailAttributes),
		DisabledAttribute: p.o.DisabledAttribute,
		DisabledValue:     p.o.DisabledValue,
	})
	for _, m := range []map[string]*ldapentry.Entry{st.users, st.groups} {
		for _, id := range slices.Sorted(maps.Keys(m)) {
			b.Add(m[id])
		}
	}
	snap := b.Snapshot(p.o.Now())
	if len(snap.Users) == 0 {
		return fmt.Errorf("%w: %d user entries read, none with an email in %v", ErrNoUsers, len(st.users), p.o.EmailAttributes)
	}
	st.snap = snap
	return nil
}

func (p *Poller) incremental(ctx context.Context, prev *state) (*state, bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conn, err := p.connect(ctx, prev.url)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", p.o.Source, err)
	}
	full := func() (*state, bool, error) {
		url := conn.url
		conn.Close()
		st, err := p.fullRead(ctx, url)
		return st, err == nil, err
	}
	if conn.url != prev.url {
		return full() // another server: the cursor means nothing there
	}
	defer conn.Close()
	next := &state{url: prev.url, dsa: prev.dsa, invocationID: prev.invocationID, usn: prev.usn, stamp: prev.stamp}
	var cond string
	var info dcInfo
	if p.ad {
		if info, err = p.readDC(conn); err != nil {
			return nil, false, fmt.Errorf("%s: %w", conn.url, err)
		}
		if info.dsa != prev.dsa || info.invocationID != prev.invocationID {
			return full()
		}
		if info.usn == prev.usn {
			return prev, false, nil
		}
		cond = fmt.Sprintf("(uSNChanged>=%d)", prev.usn+1)
		next.usn = info.usn
	} else {
		if prev.stamp == "" {
			return full() // the server shows no modifyTimestamp to follow
		}
		cond = modifiedSince(prev.stamp)
	}
	users, err := p.readEntries(ctx, conn, p.o.UserBaseDN, andFilter(p.o.UserFilter, cond), p.userAttrs())
	if err != nil {
		return nil, false, fmt.Errorf("%s: read changed users: %w", conn.url, err)
	}
	groups, err := p.readEntries(ctx, conn, p.o.GroupBaseDN, andFilter(p.o.GroupFilter, cond), p.groupAttrs())
	if err != nil {
		return nil, false, fmt.Errorf("%s: read changed groups: %w", conn.url, err)
	}
	var deleted []string
	if p.ad {
		if deleted, err = p.readDeleted(ctx, conn, info.namingContext, prev.usn+1); err != nil {
			return nil, false, fmt.Errorf("%s: read deleted objects: %w", conn.url, err)
		}
	}
	next.stamp = max(prev.stamp, users.stamp, groups.stamp)
	next.users, next.groups = maps.Clone(prev.users), maps.Clone(prev.groups)
	changed := false
	renamed := map[string]string{} // old normalised DN → new DN
	apply := func(dst map[string]*ldapentry.Entry, src entrySet) {
		for id, e := range src.byID {
			old, ok := dst[id]
			if ok && equalEntry(old, e) {
				continue
			}
			if ok && directory.NormalizeDN(old.DN) != directory.NormalizeDN(e.DN) {
				renamed[directory.NormalizeDN(old.DN)] = e.DN
			}
			dst[id] = e
			changed = true
		}
	}
	apply(next.users, users)
	apply(next.groups, groups)
	for _, id := range deleted {
		if _, ok := next.users[id]; ok {
			delete(next.users, id)
			changed = true
		}
		if _, ok := next.groups[id]; ok {
			delete(next.groups, id)
			changed = true
		}
	}
	if len(renamed) > 0 && p.ad {
		// AD does not touch a group when a member is renamed or moved (the
		// link follows the object), so the DNs the groups hold are fixed
		// here; copies, since entries are shared with prev. Generic LDAP
		// servers store DNs: a group changes (refint overlay) or keeps a
		// dangling DN, as a full read would see it.
		for id, g := range next.groups {
			if ng, ok := renameMembers(g, renamed); ok {
				next.groups[id] = ng
			}
		}
	}
	if !changed {
		next.snap = prev.snap // the cursor may have moved; the snapshot did not
		return next, false, nil
	}
	if err := p.build(next); err != nil {
		return nil, false, fmt.Errorf("%s: %w", conn.url, err)
	}
	return next, true, nil
}

// modifiedSince is the OpenLDAP change filter. The timestamp comes from
// the server's data, so it is escaped (RFC 4515) like any value.
func modifiedSince(stamp string) string {
	return "(modifyTimestamp>=" + ldap.EscapeFilter(stamp) + ")"
}

// readDeleted returns the objectGUIDs of objects deleted at or after
// fromUSN (AD tombstones, read with the Show Deleted control).
func (p *Poller) readDeleted(ctx context.Context, conn *session, namingContext string, fromUSN int64) ([]string, error) {
	if namingContext == "" {
		return nil, errors.New("rootDSE has no defaultNamingContext")
	}
	var ids []string
	q := query{
		base: "CN=Deleted Objects," + namingContext, scope: ldap.ScopeSingleLevel,
		filter:   fmt.Sprintf("(&(isDeleted=TRUE)(uSNChanged>=%d))", fromUSN),
		attrs:    []string{"objectGUID"},
		controls: []ldap.Control{ldap.NewControlMicrosoftShowDeleted()},
	}
	err := p.search(ctx, conn, q, func(e *ldap.Entry) error {
		if id := ldapentry.DecodeGUID(e.GetRawAttributeValue("objectGUID")); id != "" {
			ids = append(ids, id)
		}
		return nil
	})
	return ids, err
}

func equalEntry(a, b *ldapentry.Entry) bool {
	if a.DN != b.DN || len(a.Attrs) != len(b.Attrs) {
		return false
	}
	for k, v := range a.Attrs {
		if !slices.Equal(v, b.Attrs[k]) {
			return false
		}
	}
	return true
}

// renameMembers returns a copy of g with member DNs renamed, and whether
// any was.
func renameMembers(g *ldapentry.Entry, renamed map[string]string) (*ldapentry.Entry, bool) {
	var out *ldapentry.Entry
	for _, attr := range []string{"member", "uniquemember"} {
		for i, m := range g.Attrs[attr] {
			dn, suffix := m, ""
			if attr == "uniquemember" {
				if j := strings.LastIndex(m, "#'"); j > 0 {
					dn, suffix = m[:j], m[j:]
				}
			}
			nu, ok := renamed[directory.NormalizeDN(dn)]
			if !ok {
				continue
			}
			if out == nil {
				out = &ldapentry.Entry{DN: g.DN, Attrs: maps.Clone(g.Attrs)}
			}
			if &out.Attrs[attr][0] == &g.Attrs[attr][0] {
				out.Attrs[attr] = slices.Clone(g.Attrs[attr])
			}
			out.Attrs[attr][i] = nu + suffix
		}
	}
	return out, out != nil
}

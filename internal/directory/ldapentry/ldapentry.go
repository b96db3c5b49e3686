// Package ldapentry turns LDAP entries into a directory.Snapshot. It holds
// the Active Directory and generic LDAP semantics shared by the LDAP poller
// and the LDIF source: which entries are users and groups, how identity,
// email and account state are read, and how member values resolve to users
// and nested groups.
//
// A Builder accepts entries one at a time in any order (users and groups
// interleaved, pages as they arrive) and resolves references only in
// Snapshot, so callers can stream without holding a whole result set.
package ldapentry

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dirsync/dirsync/internal/mailaddr"

	"github.com/dirsync/dirsync/internal/directory"
)

// Entry is one LDAP entry. Attribute names are lower-case; binary values
// (objectGUID, objectSid) are raw bytes held in a string.
type Entry struct {
	DN    string
	Attrs map[string][]string
}

// First returns the first value of attribute name, or "".
func (e *Entry) First(name string) string {
	if v := e.Attrs[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// DefaultEmailAttributes are read in order when a source's
// email_attributes is empty.
func DefaultEmailAttributes() []string { return []string{"mail", "userPrincipalName"} }

// Options says how to read users.
type Options struct {
	// EmailAttributes are tried in order; the first non-empty value that is
	// an email address wins. Names are case-insensitive.
	EmailAttributes []string
	// DisabledAttribute/DisabledValue mark a suspended user on generic LDAP
	// (the attribute holding the value, case-insensitively, or any value
	// when DisabledValue is empty).
	DisabledAttribute string
	DisabledValue     string
}

// Skip reasons reported in Snapshot.Skipped.
const (
	SkipNoEmail          = "no_email"
	SkipForeignPrincipal = "foreign_principal"
	SkipUnresolvedMember = "unresolved_member"
	SkipComputer         = "computer"
	// SkipAmbiguousMember: a posixGroup memberUid that two user entries
	// carry; it is given to neither.
	SkipAmbiguousMember = "ambiguous_member"
)

// Attributes whose unreadable value denies a user (Snapshot.Unreadable).
const (
	UnreadableUserAccountControl = "userAccountControl"
	UnreadableAccountExpires     = "accountExpires"
)

// AD userAccountControl and accountExpires constants (MS-ADTS).
const (
	uacAccountDisable = 0x2
	accountNeverA     = 0
	accountNeverB     = 0x7FFFFFFFFFFFFFFF
)

// DNTable interns normalised DNs: every DN a read mentions (entries and
// member values) gets one int32 id, so member lists are ids and each DN is
// held once. Ids are never reused or removed; the table is safe for
// concurrent use (a poller reads users and groups at the same time).
type DNTable struct {
	mu      sync.Mutex
	ids     map[string]int32
	foreign []bool // by id: the DN names a foreign security principal
}

// NewDNTable returns an empty table; sizeHint is the expected number of DNs.
func NewDNTable(sizeHint int) *DNTable {
	return &DNTable{ids: make(map[string]int32, sizeHint), foreign: make([]bool, 0, sizeHint)}
}

// Intern returns the id of a DN (any spelling; it is normalised).
func (t *DNTable) Intern(dn string) int32 {
	return t.internNormal(normalDN(dn))
}

// InternAll appends the ids of dns to ids (normalising each; "#'…'B" uid
// suffixes of uniqueMember values cut when trimUID) under one lock.
func (t *DNTable) InternAll(ids []int32, dns []string, trimUID bool) []int32 {
	norm := make([]string, len(dns))
	for i, dn := range dns {
		if trimUID {
			// groupOfUniqueNames values may carry an optional "#'0101'B" uid.
			if j := strings.LastIndex(dn, "#'"); j > 0 {
				dn = dn[:j]
			}
		}
		norm[i] = normalDN(dn)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, n := range norm {
		ids = append(ids, t.internLocked(n))
	}
	return ids
}

func (t *DNTable) internNormal(n string) int32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.internLocked(n)
}

func (t *DNTable) internLocked(n string) int32 {
	if id, ok := t.ids[n]; ok {
		return id
	}
	id := int32(len(t.foreign))
	t.ids[n] = id
	t.foreign = append(t.foreign, isForeignPrincipalDN(n))
	return id
}

// Len is the number of DNs interned so far.
func (t *DNTable) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.foreign)
}

func (t *DNTable) isForeign(id int32) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.foreign[id]
}

// normalDN is directory.NormalizeDN returning dn itself (not a copy) when it
// is already normal, so a DN kept both as spelled and normalised is held
// once.
func normalDN(dn string) string {
	if n := directory.NormalizeDN(dn); n != dn {
		return n
	}
	return dn
}

// Record is what a snapshot needs from one entry, and all an incremental
// poller has to keep per entry: no attribute maps, member values as
// interned DN ids. A Record is read-only once made (GroupRecord included);
// records are compared with Equal to find changed entries.
type Record struct {
	Kind Kind
	// Self is the entry's interned normalised DN.
	Self int32
	// ID is the stable identity (see StableID), DN the DN as spelled.
	ID, DN string
	// Users: the normalised email ("" when none: skipped as no_email),
	// account state and expiry, the lower-cased uid (posixGroup
	// memberUid) and the SID of the primary group (AD).
	Email     string
	Status    directory.Status
	ExpiresAt time.Time
	// Unreadable names the attribute whose value could not be read when
	// Status is a denial for that reason ("" otherwise).
	Unreadable string
	// Created and Changed are the entry's whenCreated/whenChanged (AD) or
	// createTimestamp/modifyTimestamp (OpenLDAP) in Unix seconds; 0 when
	// absent or unparseable (see directory.User).
	Created, Changed int64
	UID              string
	PrimarySID       string
	// Group is set for groups.
	Group *GroupRecord
}

// GroupRecord is the group part of a Record.
type GroupRecord struct {
	Name string // cn, or the DN when the entry has none
	SID  string // objectSid in S-1-… form (AD)
	// Members are the member and uniqueMember values as interned DN ids,
	// MemberUIDs the lower-cased memberUid values.
	Members    []int32
	MemberUIDs []string
}

// Equal reports whether two records would build the same snapshot entry.
func Equal(a, b *Record) bool {
	if a.Kind != b.Kind || a.Self != b.Self || a.ID != b.ID || a.DN != b.DN || a.Email != b.Email ||
		a.Status != b.Status || !a.ExpiresAt.Equal(b.ExpiresAt) || a.UID != b.UID || a.PrimarySID != b.PrimarySID ||
		a.Unreadable != b.Unreadable || a.Created != b.Created || a.Changed != b.Changed {
		return false
	}
	if (a.Group == nil) != (b.Group == nil) {
		return false
	}
	if a.Group == nil {
		return true
	}
	g, h := a.Group, b.Group
	return g.Name == h.Name && g.SID == h.SID && slices.Equal(g.Members, h.Members) && slices.Equal(g.MemberUIDs, h.MemberUIDs)
}

// Reader turns entries into records under Options.
type Reader struct{ opts Options }

// NewReader returns a reader for opts (attribute names are case-insensitive).
func NewReader(opts Options) *Reader {
	opts.EmailAttributes = slices.Clone(opts.EmailAttributes)
	for i, a := range opts.EmailAttributes {
		opts.EmailAttributes[i] = strings.ToLower(a)
	}
	opts.DisabledAttribute = strings.ToLower(opts.DisabledAttribute)
	return &Reader{opts: opts}
}

// Record extracts e's record, interning its DN and member DNs in dns.
func (r *Reader) Record(e *Entry, dns *DNTable) Record {
	rec := Record{Kind: Classify(e), Self: dns.Intern(e.DN), ID: StableID(e), DN: e.DN}
	switch rec.Kind {
	case KindUser:
		rec.Email = r.email(e)
		if rec.Email == "" {
			break
		}
		rec.Status, rec.Unreadable = r.status(e)
		if v := e.First("accountexpires"); v != "" {
			var ok bool
			if rec.ExpiresAt, ok = ParseAccountExpires(v); !ok && rec.Unreadable == "" {
				// An expiry that cannot be read may have passed.
				rec.Status, rec.Unreadable = directory.StatusInactive, UnreadableAccountExpires
			}
		}
		rec.Created = firstTime(e, "whencreated", "createtimestamp")
		rec.Changed = firstTime(e, "whenchanged", "modifytimestamp")
		if uid := e.First("uid"); uid != "" {
			rec.UID = strings.ToLower(uid)
		}
		if rid := e.First("primarygroupid"); rid != "" {
			if sid := e.First("objectsid"); sid != "" {
				if dom, ok := domainSID(DecodeSID([]byte(sid))); ok {
					rec.PrimarySID = dom + "-" + rid
				}
			}
		}
	case KindGroup:
		g := &GroupRecord{Name: e.First("cn")}
		if g.Name == "" {
			g.Name = e.DN
		}
		if sid := e.First("objectsid"); sid != "" {
			g.SID = DecodeSID([]byte(sid))
		}
		n := len(e.Attrs["member"]) + len(e.Attrs["uniquemember"])
		if n > 0 {
			g.Members = make([]int32, 0, n)
		}
		g.Members = dns.InternAll(g.Members, e.Attrs["member"], false)
		g.Members = dns.InternAll(g.Members, e.Attrs["uniquemember"], true)
		for _, uid := range e.Attrs["memberuid"] {
			g.MemberUIDs = append(g.MemberUIDs, strings.ToLower(uid))
		}
		rec.Group = g
	}
	return rec
}

func (r *Reader) email(e *Entry) string {
	for _, attr := range r.opts.EmailAttributes {
		for _, v := range e.Attrs[attr] {
			if email := mailaddr.Normalize(v); email != "" {
				return email
			}
		}
	}
	return ""
}

// status reads a user's account state. On an AD user object (objectClass
// user) userAccountControl decides, and one that is missing (an ACL hiding
// it from the service account) or unparseable denies the user: the second
// result names it (UnreadableUserAccountControl). Generic LDAP uses the
// configured disabled marker.
func (r *Reader) status(e *Entry) (directory.Status, string) {
	if v, ok := e.Attrs["useraccountcontrol"]; ok || isADUser(e) {
		if len(v) == 0 {
			return directory.StatusSuspended, UnreadableUserAccountControl
		}
		uac, err := strconv.ParseInt(strings.TrimSpace(v[0]), 10, 64)
		if err != nil || uac < 0 {
			return directory.StatusSuspended, UnreadableUserAccountControl
		}
		if uac&uacAccountDisable != 0 {
			return directory.StatusSuspended, ""
		}
	}
	if attr := r.opts.DisabledAttribute; attr != "" {
		for _, v := range e.Attrs[attr] {
			if r.opts.DisabledValue == "" || strings.EqualFold(strings.TrimSpace(v), r.opts.DisabledValue) {
				return directory.StatusSuspended, ""
			}
		}
	}
	return directory.StatusActive, ""
}

// isADUser reports whether e is an Active Directory user object, whose
// state userAccountControl always carries.
func isADUser(e *Entry) bool {
	for _, oc := range e.Attrs["objectclass"] {
		if strings.EqualFold(strings.TrimSpace(oc), "user") {
			return true
		}
	}
	return false
}

// Builder accumulates records (or entries) and resolves memberships in
// Snapshot. It is not safe for concurrent use.
type Builder struct {
	reader *Reader // nil for NewRecordBuilder
	dns    *DNTable

	snap directory.Snapshot
	// userOf and groupOf map a DN id to a user or group index, or -1;
	// skipped marks DNs left out (users without email, foreign
	// principals, computers). All grow on demand.
	userOf, groupOf []int32
	skipped         []bool
	uids            []string // by user index
	primary         []string // by user index, SID of the primary group (AD)
	groupSIDs       []string // by group index
	members         [][]int32
	memberUIDs      [][]string
	index           *Memberships // made by Snapshot
}

// NewBuilder returns an empty builder reading entries under opts; source
// names the snapshot's origin.
func NewBuilder(source string, opts Options) *Builder {
	b := NewRecordBuilder(source, NewDNTable(0), 0, 0)
	b.reader = NewReader(opts)
	return b
}

// NewRecordBuilder returns an empty builder for records whose DN ids come
// from dns; users and groups size its slices. Add must not be used on it.
func NewRecordBuilder(source string, dns *DNTable, users, groups int) *Builder {
	return &Builder{
		dns:  dns,
		snap: directory.Snapshot{Source: source, Users: make([]directory.User, 0, users), Groups: make([]directory.Group, 0, groups)},
	}
}

// Kind classifies an entry by its objectClass values.
type Kind uint8

// Entry kinds.
const (
	KindOther Kind = iota
	KindUser
	KindGroup
	KindForeignPrincipal
	KindComputer
)

// Classify returns the kind of an entry.
func Classify(e *Entry) Kind {
	kind := KindOther
	for _, oc := range e.Attrs["objectclass"] {
		switch classOf(oc) {
		case KindForeignPrincipal:
			return KindForeignPrincipal
		case KindComputer:
			return KindComputer
		case KindGroup:
			kind = KindGroup
		case KindUser:
			if kind == KindOther {
				kind = KindUser
			}
		}
	}
	return kind
}

// objectClasses are the object classes Classify knows, lower case.
var objectClasses = []struct {
	name string
	kind Kind
}{
	{"foreignsecurityprincipal", KindForeignPrincipal},
	{"computer", KindComputer},
	{"group", KindGroup}, {"groupofnames", KindGroup}, {"groupofuniquenames", KindGroup}, {"posixgroup", KindGroup},
	{"user", KindUser}, {"person", KindUser}, {"inetorgperson", KindUser}, {"organizationalperson", KindUser}, {"posixaccount", KindUser},
}

// classOf is the kind an object class names, in any ASCII case, without a
// lower-cased copy per entry. Equal lengths keep EqualFold to ASCII: a
// non-ASCII letter that folds to an ASCII one (the Kelvin sign, the long
// s) is longer than it.
func classOf(oc string) Kind {
	for _, c := range objectClasses {
		if len(oc) == len(c.name) && strings.EqualFold(oc, c.name) {
			return c.kind
		}
	}
	return KindOther
}

// Add records one entry. Entries that are neither users nor groups are
// ignored; a DN seen twice keeps its first entry.
func (b *Builder) Add(e *Entry) {
	rec := b.reader.Record(e, b.dns)
	b.AddRecord(&rec)
}

// grow makes the by-DN slices cover every id interned so far.
func (b *Builder) grow(id int32) {
	if int(id) < len(b.userOf) {
		return
	}
	n := b.dns.Len()
	for len(b.userOf) < n {
		b.userOf = append(b.userOf, -1)
		b.groupOf = append(b.groupOf, -1)
		b.skipped = append(b.skipped, false)
	}
}

// AddRecord records one record (see Add). The builder keeps references to
// the record's strings and member slices, never modifying them.
func (b *Builder) AddRecord(r *Record) {
	b.grow(r.Self)
	if b.userOf[r.Self] >= 0 || b.groupOf[r.Self] >= 0 {
		return
	}
	switch r.Kind {
	case KindUser:
		if r.Email == "" {
			b.skipped[r.Self] = true
			b.snap.Skip(SkipNoEmail, 1)
			return
		}
		idx := int32(len(b.snap.Users))
		b.snap.Users = append(b.snap.Users, directory.User{ID: r.ID, DN: r.DN, Email: r.Email, Status: r.Status, ExpiresAt: r.ExpiresAt,
			Created: r.Created, Changed: r.Changed})
		if r.Unreadable != "" {
			b.snap.Doubt(r.Unreadable, 1)
		}
		b.userOf[r.Self] = idx
		if r.UID != "" || b.uids != nil {
			for len(b.uids) < int(idx) {
				b.uids = append(b.uids, "")
			}
			b.uids = append(b.uids, r.UID)
		}
		if r.PrimarySID != "" || b.primary != nil {
			for len(b.primary) < int(idx) {
				b.primary = append(b.primary, "")
			}
			b.primary = append(b.primary, r.PrimarySID)
		}
	case KindGroup:
		ref := normalDN(r.DN)
		b.groupOf[r.Self] = int32(len(b.snap.Groups))
		b.snap.Groups = append(b.snap.Groups, directory.Group{Ref: ref, Name: r.Group.Name, DN: r.DN})
		b.groupSIDs = append(b.groupSIDs, r.Group.SID)
		b.members = append(b.members, r.Group.Members)
		b.memberUIDs = append(b.memberUIDs, r.Group.MemberUIDs)
	case KindForeignPrincipal:
		b.skipped[r.Self] = true
	case KindComputer:
		b.skipped[r.Self] = true
		b.snap.Skip(SkipComputer, 1)
	}
}

// Snapshot resolves every recorded membership and returns the snapshot.
// Member values that name no user or group read are counted: foreign
// security principals as "foreign_principal" (never expanded), anything else
// as "unresolved_member". The builder must not be used afterwards.
func (b *Builder) Snapshot(fetchedAt time.Time) *directory.Snapshot {
	s := &b.snap
	s.FetchedAt = fetchedAt
	b.grow(int32(b.dns.Len()))
	var byUID map[string]int32
	// AD primary groups: count first so member slices are allocated once.
	var primaryOf []int32 // by user: group index or -1
	extra := make([]int32, len(s.Groups))
	if len(b.primary) > 0 {
		bySID := make(map[string]int32)
		for g, sid := range b.groupSIDs {
			if sid != "" {
				bySID[sid] = int32(g)
			}
		}
		primaryOf = make([]int32, len(b.primary))
		for u, sid := range b.primary {
			primaryOf[u] = -1
			if g, ok := bySID[sid]; ok && sid != "" {
				primaryOf[u] = g
				extra[g]++
			}
		}
	}
	for gi, mem := range b.members {
		g := &s.Groups[gi]
		users, subs := int(extra[gi]), 0
		for _, m := range mem {
			if b.userOf[m] >= 0 {
				users++
			} else if b.groupOf[m] >= 0 {
				subs++
			}
		}
		users += len(b.memberUIDs[gi])
		if users > 0 {
			g.Members = make([]int32, 0, users)
		}
		if subs > 0 {
			g.Subgroups = make([]int32, 0, subs)
		}
		for _, m := range mem {
			if u := b.userOf[m]; u >= 0 {
				g.Members = append(g.Members, u)
				continue
			}
			if sub := b.groupOf[m]; sub >= 0 {
				g.Subgroups = append(g.Subgroups, sub)
				continue
			}
			if b.dns.isForeign(m) {
				s.Skip(SkipForeignPrincipal, 1)
				continue
			}
			if !b.skipped[m] {
				s.Skip(SkipUnresolvedMember, 1)
			}
		}
		if len(b.memberUIDs[gi]) > 0 && byUID == nil {
			byUID = make(map[string]int32, len(b.uids))
			for u, uid := range b.uids {
				if uid == "" {
					continue
				}
				if _, dup := byUID[uid]; dup {
					byUID[uid] = -1 // two entries share the uid: it names neither
					continue
				}
				byUID[uid] = int32(u)
			}
		}
		for _, uid := range b.memberUIDs[gi] {
			u, ok := byUID[uid]
			switch {
			case ok && u >= 0:
				g.Members = append(g.Members, u)
			case ok:
				s.Skip(SkipAmbiguousMember, 1)
			default:
				s.Skip(SkipUnresolvedMember, 1)
			}
		}
	}
	for u, g := range primaryOf {
		if g >= 0 {
			s.Groups[g].Members = append(s.Groups[g].Members, int32(u))
		}
	}
	for gi := range s.Groups {
		if len(s.Groups[gi].Members) == 0 {
			s.Groups[gi].Members = nil // capacity reserved for memberUid values that named no one
		}
	}
	b.index = &Memberships{dns: b.dns, userOf: b.userOf, groupOf: b.groupOf, skipped: b.skipped, primarySIDs: map[string]bool{}}
	for _, sid := range b.primary {
		if sid != "" {
			b.index.primarySIDs[sid] = true
		}
	}
	b.userOf, b.groupOf, b.skipped, b.uids, b.primary, b.groupSIDs, b.members, b.memberUIDs = nil, nil, nil, nil, nil, nil, nil, nil
	return s
}

// Memberships returns what Snapshot resolved member values with (call it
// after Snapshot), so that a group's members can be resolved again for
// the same snapshot (Memberships.Resolve).
func (b *Builder) Memberships() *Memberships { return b.index }

// Memberships resolves a group record's member values to a built
// snapshot's user and group indices exactly as Builder.Snapshot did: an
// incremental reader rebuilds a changed group in place with it. It is
// read-only once made.
type Memberships struct {
	dns             *DNTable
	userOf, groupOf []int32 // by DN id; ids interned later are neither
	skipped         []bool
	// primarySIDs are the SIDs of groups some user has as its primary
	// group (AD): such a group has members Resolve does not know of.
	primarySIDs map[string]bool
}

// GroupOf returns the snapshot index of the group with DN id self.
func (m *Memberships) GroupOf(self int32) (int32, bool) {
	if int(self) >= len(m.groupOf) || m.groupOf[self] < 0 {
		return 0, false
	}
	return m.groupOf[self], true
}

// Resolve returns g's members and subgroups as Snapshot would, and the
// skip counts its values add. ok is false when Snapshot would have given
// it members Resolve cannot see: memberUid values (resolved through every
// user's uid) or users whose primary group it is.
func (m *Memberships) Resolve(g *GroupRecord) (members, subgroups []int32, skips map[string]int, ok bool) {
	if len(g.MemberUIDs) > 0 || (g.SID != "" && m.primarySIDs[g.SID]) {
		return nil, nil, nil, false
	}
	skips = map[string]int{}
	for _, v := range g.Members {
		in := int(v) < len(m.userOf)
		switch {
		case in && m.userOf[v] >= 0:
			members = append(members, m.userOf[v])
		case in && m.groupOf[v] >= 0:
			subgroups = append(subgroups, m.groupOf[v])
		case m.dns.isForeign(v):
			skips[SkipForeignPrincipal]++
		case !in || !m.skipped[v]:
			skips[SkipUnresolvedMember]++
		}
	}
	return members, subgroups, skips, true
}

// isForeignPrincipalDN reports whether a normalised DN names an AD foreign
// security principal or well-known SID (CN=S-1-…,CN=ForeignSecurityPrincipals,…).
func isForeignPrincipalDN(dn string) bool {
	return strings.HasPrefix(dn, "cn=s-1-") || strings.Contains(dn, ",cn=foreignsecurityprincipals,")
}

// StableID returns an entry's stable identity: objectGUID in its string form,
// else entryUUID, else the normalised DN.
func StableID(e *Entry) string {
	if g := e.First("objectguid"); len(g) == 16 {
		return DecodeGUID([]byte(g))
	}
	if u := e.First("entryuuid"); u != "" {
		return strings.ToLower(u)
	}
	return directory.NormalizeDN(e.DN)
}

// DecodeGUID formats a 16-byte objectGUID in Microsoft's string form: the
// first three fields are little-endian.
func DecodeGUID(b []byte) string {
	if len(b) != 16 {
		return ""
	}
	// Bytes in the order the string shows them: 3,2,1,0-5,4-7,6-8,9-10…15.
	var out [36]byte
	i := 0
	for k, j := range [16]int{3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15} {
		if k == 4 || k == 6 || k == 8 || k == 10 {
			out[i] = '-'
			i++
		}
		out[i], out[i+1] = hexDigits[b[j]>>4], hexDigits[b[j]&0x0f]
		i += 2
	}
	return string(out[:])
}

const hexDigits = "0123456789abcdef"

// DecodeSID formats a binary SID (MS-DTYP 2.4.2.2) as S-1-…; it returns ""
// for malformed input.
func DecodeSID(b []byte) string {
	if len(b) < 8 || int(b[1])*4+8 != len(b) {
		return ""
	}
	var auth uint64
	for _, x := range b[2:8] {
		auth = auth<<8 | uint64(x)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "S-%d-%d", b[0], auth)
	for i := 0; i < int(b[1]); i++ {
		fmt.Fprintf(&sb, "-%d", binary.LittleEndian.Uint32(b[8+4*i:]))
	}
	return sb.String()
}

// domainSID strips the last sub-authority (the RID) from a user's SID.
func domainSID(sid string) (string, bool) {
	i := strings.LastIndexByte(sid, '-')
	if sid == "" || i < 0 {
		return "", false
	}
	return sid[:i], true
}

// ParseAccountExpires reads AD accountExpires (100 ns intervals since
// 1601-01-01 UTC); 0 and 0x7FFFFFFFFFFFFFFF mean never (zero time). ok is
// false for a value that is not such a number: the caller must deny.
func ParseAccountExpires(v string) (time.Time, bool) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, false
	}
	if n == accountNeverA || n == accountNeverB {
		return time.Time{}, true
	}
	const epochDiff = 116444736000000000 // 1601-01-01 → 1970-01-01 in 100 ns
	n -= epochDiff
	return time.Unix(n/1e7, (n%1e7)*100).UTC(), true
}

// firstTime returns the first of attrs that holds a GeneralizedTime, in
// Unix seconds; 0 when none does.
func firstTime(e *Entry, attrs ...string) int64 {
	for _, a := range attrs {
		if v := e.First(a); v != "" {
			if t, ok := ParseGeneralizedTime(v); ok {
				return t.Unix()
			}
		}
	}
	return 0
}

// ParseGeneralizedTime reads an LDAP GeneralizedTime (RFC 4517 3.3.13) with
// seconds, as AD ("20261127041434.0Z") and OpenLDAP ("20261127041434Z")
// write whenCreated and modifyTimestamp: YYYYMMDDHHMMSS, an optional
// fraction, then Z or a ±HHMM offset. ok is false for anything else,
// including dates that do not exist.
func ParseGeneralizedTime(v string) (time.Time, bool) {
	v = strings.TrimSpace(v)
	if len(v) < 15 {
		return time.Time{}, false
	}
	var f [6]int
	widths := [6]int{4, 2, 2, 2, 2, 2}
	pos := 0
	for i, w := range widths {
		n, ok := digits(v[pos : pos+w])
		if !ok {
			return time.Time{}, false
		}
		f[i], pos = n, pos+w
	}
	rest := v[pos:]
	if rest[0] == '.' || rest[0] == ',' {
		i := 1
		for i < len(rest) && '0' <= rest[i] && rest[i] <= '9' {
			i++
		}
		if i == 1 {
			return time.Time{}, false
		}
		rest = rest[i:] // sub-second precision is not needed
	}
	loc := time.UTC
	switch {
	case rest == "Z":
	case len(rest) == 5 && (rest[0] == '+' || rest[0] == '-'):
		hh, ok1 := digits(rest[1:3])
		mm, ok2 := digits(rest[3:5])
		if !ok1 || !ok2 || hh > 23 || mm > 59 {
			return time.Time{}, false
		}
		off := hh*3600 + mm*60
		if rest[0] == '-' {
			off = -off
		}
		loc = time.FixedZone("", off)
	default:
		return time.Time{}, false
	}
	t := time.Date(f[0], time.Month(f[1]), f[2], f[3], f[4], f[5], 0, loc)
	if t.Year() != f[0] || int(t.Month()) != f[1] || t.Day() != f[2] || t.Hour() != f[3] || t.Minute() != f[4] || t.Second() != f[5] {
		return time.Time{}, false // normalised: the date does not exist
	}
	if t = t.UTC(); t.Year() < 1 || t.Year() > 9999 {
		return time.Time{}, false // an offset carried it out of four digits
	}
	return t, true
}

// digits parses s as a non-negative decimal made of ASCII digits only.
func digits(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

// FileTime converts a time to AD's accountExpires form.
func FileTime(t time.Time) int64 {
	return t.UnixNano()/100 + 116444736000000000
}

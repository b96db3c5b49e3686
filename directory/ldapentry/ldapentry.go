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
	"strconv"
	"strings"
	"time"

	"github.com/dirsync/dirsync/directory"
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
)

// AD userAccountControl and accountExpires constants (MS-ADTS).
const (
	uacAccountDisable = 0x2
	accountNeverA     = 0
	accountNeverB     = 0x7FFFFFFFFFFFFFFF
)

type pendingGroup struct {
	members   []string // normalised DNs from member / uniqueMember
	memberUID []string // posixGroup memberUid values
}

// Builder accumulates entries. It is not safe for concurrent use.
type Builder struct {
	opts   Options
	source string

	snap       directory.Snapshot
	userByDN   map[string]int32
	groupByDN  map[string]int32
	skippedDNs map[string]struct{} // users left out (no email) and foreign principals
	userByUID  map[string]int32
	groupBySID map[string]int32
	// primary holds, per user, the SID of its primary group (AD).
	primary []string
	pending []pendingGroup
}

// NewBuilder returns an empty builder; source names the snapshot's origin.
func NewBuilder(source string, opts Options) *Builder {
	for i, a := range opts.EmailAttributes {
		opts.EmailAttributes[i] = strings.ToLower(a)
	}
	opts.DisabledAttribute = strings.ToLower(opts.DisabledAttribute)
	return &Builder{
		opts:       opts,
		source:     source,
		snap:       directory.Snapshot{Source: source},
		userByDN:   map[string]int32{},
		groupByDN:  map[string]int32{},
		skippedDNs: map[string]struct{}{},
		userByUID:  map[string]int32{},
		groupBySID: map[string]int32{},
	}
}

// Kind classifies an entry by its objectClass values.
type Kind int

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
		switch strings.ToLower(oc) {
		case "foreignsecurityprincipal":
			return KindForeignPrincipal
		case "computer":
			return KindComputer
		case "group", "groupofnames", "groupofuniquenames", "posixgroup":
			kind = KindGroup
		case "user", "person", "inetorgperson", "organizationalperson", "posixaccount":
			if kind == KindOther {
				kind = KindUser
			}
		}
	}
	return kind
}

// Add records one entry. Entries that are neither users nor groups are
// ignored; a DN seen twice keeps its first entry.
func (b *Builder) Add(e *Entry) {
	dn := directory.NormalizeDN(e.DN)
	if _, dup := b.userByDN[dn]; dup {
		return
	}
	if _, dup := b.groupByDN[dn]; dup {
		return
	}
	switch Classify(e) {
	case KindUser:
		b.addUser(e, dn)
	case KindGroup:
		b.addGroup(e, dn)
	case KindForeignPrincipal:
		b.skippedDNs[dn] = struct{}{}
	case KindComputer:
		b.skippedDNs[dn] = struct{}{}
		b.snap.Skip(SkipComputer, 1)
	}
}

func (b *Builder) addUser(e *Entry, dn string) {
	email := b.email(e)
	if email == "" {
		b.skippedDNs[dn] = struct{}{}
		b.snap.Skip(SkipNoEmail, 1)
		return
	}
	u := directory.User{ID: StableID(e), DN: e.DN, Email: email, Status: b.status(e)}
	if v := e.First("accountexpires"); v != "" {
		u.ExpiresAt = ParseAccountExpires(v)
	}
	idx := int32(len(b.snap.Users))
	b.snap.Users = append(b.snap.Users, u)
	b.userByDN[dn] = idx
	if uid := e.First("uid"); uid != "" {
		b.userByUID[strings.ToLower(uid)] = idx
	}
	primary := ""
	if rid := e.First("primarygroupid"); rid != "" {
		if sid := e.First("objectsid"); sid != "" {
			if dom, ok := domainSID(DecodeSID([]byte(sid))); ok {
				primary = dom + "-" + rid
			}
		}
	}
	if primary != "" || b.primary != nil {
		for len(b.primary) < int(idx) {
			b.primary = append(b.primary, "")
		}
		b.primary = append(b.primary, primary)
	}
}

func (b *Builder) email(e *Entry) string {
	for _, attr := range b.opts.EmailAttributes {
		for _, v := range e.Attrs[attr] {
			if email := directory.NormalizeEmail(v); email != "" {
				return email
			}
		}
	}
	return ""
}

func (b *Builder) status(e *Entry) directory.Status {
	if v := e.First("useraccountcontrol"); v != "" {
		if uac, err := strconv.ParseInt(v, 10, 64); err == nil && uac&uacAccountDisable != 0 {
			return directory.StatusSuspended
		}
	}
	if attr := b.opts.DisabledAttribute; attr != "" {
		for _, v := range e.Attrs[attr] {
			if b.opts.DisabledValue == "" || strings.EqualFold(v, b.opts.DisabledValue) {
				return directory.StatusSuspended
			}
		}
	}
	return directory.StatusActive
}

func (b *Builder) addGroup(e *Entry, dn string) {
	g := directory.Group{Ref: dn, Name: e.First("cn"), DN: e.DN}
	if g.Name == "" {
		g.Name = e.DN
	}
	idx := int32(len(b.snap.Groups))
	b.snap.Groups = append(b.snap.Groups, g)
	b.groupByDN[dn] = idx
	if sid := e.First("objectsid"); sid != "" {
		b.groupBySID[DecodeSID([]byte(sid))] = idx
	}
	var p pendingGroup
	for _, attr := range []string{"member", "uniquemember"} {
		for _, m := range e.Attrs[attr] {
			if attr == "uniquemember" {
				// groupOfUniqueNames values may carry an optional "#'0101'B" uid.
				if i := strings.LastIndex(m, "#'"); i > 0 {
					m = m[:i]
				}
			}
			p.members = append(p.members, directory.NormalizeDN(m))
		}
	}
	for _, uid := range e.Attrs["memberuid"] {
		p.memberUID = append(p.memberUID, strings.ToLower(uid))
	}
	b.pending = append(b.pending, p)
}

// Snapshot resolves every recorded membership and returns the snapshot.
// Member values that name no user or group read are counted: foreign
// security principals as "foreign_principal" (never expanded), anything else
// as "unresolved_member". The builder must not be used afterwards.
func (b *Builder) Snapshot(fetchedAt time.Time) *directory.Snapshot {
	s := &b.snap
	s.FetchedAt = fetchedAt
	for gi := range b.pending {
		g := &s.Groups[gi]
		for _, m := range b.pending[gi].members {
			if u, ok := b.userByDN[m]; ok {
				g.Members = append(g.Members, u)
				continue
			}
			if sub, ok := b.groupByDN[m]; ok {
				g.Subgroups = append(g.Subgroups, sub)
				continue
			}
			if _, ok := b.skippedDNs[m]; ok {
				if isForeignPrincipalDN(m) {
					s.Skip(SkipForeignPrincipal, 1)
				}
				continue
			}
			if isForeignPrincipalDN(m) {
				s.Skip(SkipForeignPrincipal, 1)
				continue
			}
			s.Skip(SkipUnresolvedMember, 1)
		}
		for _, uid := range b.pending[gi].memberUID {
			if u, ok := b.userByUID[uid]; ok {
				g.Members = append(g.Members, u)
				continue
			}
			s.Skip(SkipUnresolvedMember, 1)
		}
	}
	for u, sid := range b.primary {
		if sid == "" {
			continue
		}
		if g, ok := b.groupBySID[sid]; ok {
			s.Groups[g].Members = append(s.Groups[g].Members, int32(u))
		}
	}
	b.pending, b.userByDN, b.groupByDN, b.skippedDNs, b.userByUID, b.groupBySID, b.primary = nil, nil, nil, nil, nil, nil, nil
	return s
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
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(b[0:4]), binary.LittleEndian.Uint16(b[4:6]), binary.LittleEndian.Uint16(b[6:8]), b[8:10], b[10:16])
}

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
// 1601-01-01 UTC); 0 and 0x7FFFFFFFFFFFFFFF mean never (zero time).
func ParseAccountExpires(v string) time.Time {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n == accountNeverA || n == accountNeverB || n < 0 {
		return time.Time{}
	}
	const epochDiff = 116444736000000000 // 1601-01-01 → 1970-01-01 in 100 ns
	n -= epochDiff
	return time.Unix(n/1e7, (n%1e7)*100).UTC()
}

// FileTime converts a time to AD's accountExpires form.
func FileTime(t time.Time) int64 {
	return t.UnixNano()/100 + 116444736000000000
}

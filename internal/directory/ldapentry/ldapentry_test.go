package ldapentry

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/directory"
)

func sid(sub ...uint32) string {
	b := []byte{1, byte(len(sub)), 0, 0, 0, 0, 0, 5}
	for _, s := range sub {
		b = binary.LittleEndian.AppendUint32(b, s)
	}
	return string(b)
}

func TestDecoders(t *testing.T) {
	guid := []byte{0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}
	if got := DecodeGUID(guid); got != "00112233-4455-6677-8899-aabbccddeeff" {
		t.Errorf("DecodeGUID = %s", got)
	}
	if got := DecodeSID([]byte(sid(21, 1, 2, 3, 1104))); got != "S-1-5-21-1-2-3-1104" {
		t.Errorf("DecodeSID = %s", got)
	}
	if DecodeSID([]byte{1, 5, 0}) != "" {
		t.Error("malformed SID decoded")
	}
	for _, never := range []string{"0", "9223372036854775807", " 0 "} {
		if at, ok := ParseAccountExpires(never); !ok || !at.IsZero() {
			t.Errorf("accountExpires %q should mean never", never)
		}
	}
	// A value that is not a FILETIME may hide a passed expiry: not "never".
	for _, bad := range []string{"", "junk", "-5", "12x", "1e18"} {
		if _, ok := ParseAccountExpires(bad); ok {
			t.Errorf("accountExpires %q read as valid", bad)
		}
	}
	when := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	if got, ok := ParseAccountExpires(strconv.FormatInt(FileTime(when), 10) + " "); !ok || !got.Equal(when) {
		t.Errorf("FILETIME round trip = %v; want %v", got, when)
	}
}

func entry(dn string, attrs ...string) *Entry {
	e := &Entry{DN: dn, Attrs: map[string][]string{}}
	for i := 0; i+1 < len(attrs); i += 2 {
		e.Attrs[attrs[i]] = append(e.Attrs[attrs[i]], attrs[i+1])
	}
	return e
}

// TestUnreadableStateDenies: on an AD user object, a userAccountControl
// that is missing (hidden by an ACL) or unparseable, and an accountExpires
// that is not a number, deny the user and are counted; a trailing space is
// trimmed, not an error. They used to read as an enabled, never-expiring
// account.
func TestUnreadableStateDenies(t *testing.T) {
	tests := []struct {
		name       string
		attrs      []string
		want       directory.Status
		unreadable string
	}{
		{"enabled", []string{"useraccountcontrol", "512"}, directory.StatusActive, ""},
		{"disabled with trailing space", []string{"useraccountcontrol", "514 "}, directory.StatusSuspended, ""},
		{"enabled with spaces", []string{"useraccountcontrol", " 512\t"}, directory.StatusActive, ""},
		{"uac hidden by an ACL", nil, directory.StatusSuspended, UnreadableUserAccountControl},
		{"uac empty", []string{"useraccountcontrol", ""}, directory.StatusSuspended, UnreadableUserAccountControl},
		{"uac not a number", []string{"useraccountcontrol", "enabled"}, directory.StatusSuspended, UnreadableUserAccountControl},
		{"uac negative", []string{"useraccountcontrol", "-1"}, directory.StatusSuspended, UnreadableUserAccountControl},
		{"expiry not a number", []string{"useraccountcontrol", "512", "accountexpires", "soon"}, directory.StatusInactive, UnreadableAccountExpires},
		{"expiry never", []string{"useraccountcontrol", "512", "accountexpires", "0"}, directory.StatusActive, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBuilder("test", Options{EmailAttributes: []string{"mail"}})
			attrs := append([]string{"objectclass", "top", "objectclass", "user", "mail", "u@x.example"}, tt.attrs...)
			b.Add(entry("CN=U,DC=x", attrs...))
			snap := b.Snapshot(time.Now())
			if len(snap.Users) != 1 || snap.Users[0].Status != tt.want {
				t.Fatalf("users %+v; want one with status %v", snap.Users, tt.want)
			}
			if got := snap.Unreadable[tt.unreadable]; (tt.unreadable == "" && len(snap.Unreadable) != 0) || (tt.unreadable != "" && got != 1) {
				t.Errorf("unreadable %v; want %q counted once", snap.Unreadable, tt.unreadable)
			}
		})
	}
	// A generic LDAP person has no userAccountControl: nothing to doubt.
	b := NewBuilder("test", Options{EmailAttributes: []string{"mail"}})
	b.Add(entry("uid=p,dc=x", "objectclass", "inetOrgPerson", "mail", "p@x.example"))
	if snap := b.Snapshot(time.Now()); snap.Users[0].Status != directory.StatusActive || len(snap.Unreadable) != 0 {
		t.Errorf("inetOrgPerson without UAC: %+v %v", snap.Users, snap.Unreadable)
	}
}

func TestBuilder(t *testing.T) {
	b := NewBuilder("test", Options{EmailAttributes: []string{"mail", "userPrincipalName"}, DisabledAttribute: "employeeType", DisabledValue: "Disabled"})
	// Groups before users, members referencing entries added later.
	b.Add(entry("CN=Pro,DC=x", "objectclass", "group", "cn", "Pro",
		"member", "cn=alice, dc=x", "member", "CN=Nested,DC=x", "member", "CN=S-1-5-11,CN=ForeignSecurityPrincipals,DC=x",
		"member", "CN=NoMail,DC=x", "member", "CN=Gone,DC=x", "member", "CN=PC1,DC=x"))
	b.Add(entry("CN=Nested,DC=x", "objectclass", "groupOfNames", "cn", "Nested", "member", "CN=Pro,DC=x"))
	b.Add(entry("CN=Unique,DC=x", "objectclass", "groupOfUniqueNames", "cn", "Unique", "uniquemember", "CN=Bob,DC=x#'0101'B"))
	b.Add(entry("CN=Posix,DC=x", "objectclass", "posixGroup", "cn", "Posix", "memberuid", "Carol", "memberuid", "nobody"))
	b.Add(entry("CN=Domain Users,DC=x", "objectclass", "group", "cn", "Domain Users", "objectsid", sid(21, 7, 513)))
	b.Add(entry("CN=Alice,DC=x", "objectclass", "user", "mail", "Alice@X.Example", "useraccountcontrol", "514", "objectsid", sid(21, 7, 1000), "primarygroupid", "513"))
	b.Add(entry("CN=Bob,DC=x", "objectclass", "inetOrgPerson", "mail", "not an email", "userprincipalname", "bob@x.example", "entryuuid", "ABC-1", "employeetype", "disabled"))
	b.Add(entry("CN=Carol,DC=x", "objectclass", "posixAccount", "objectclass", "inetOrgPerson", "mail", "carol@x.example", "uid", "carol"))
	b.Add(entry("CN=NoMail,DC=x", "objectclass", "user"))
	b.Add(entry("CN=PC1,DC=x", "objectclass", "user", "objectclass", "computer"))
	b.Add(entry("CN=S-1-5-11,CN=ForeignSecurityPrincipals,DC=x", "objectclass", "foreignSecurityPrincipal"))
	b.Add(entry("CN=Alice,DC=x", "objectclass", "user", "mail", "dup@x.example"))
	snap := b.Snapshot(time.Unix(1, 0))

	if len(snap.Users) != 3 {
		t.Fatalf("users = %d; want 3 (alice, bob, carol)", len(snap.Users))
	}
	alice, bob, carol := snap.Users[0], snap.Users[1], snap.Users[2]
	if alice.Email != "alice@x.example" || alice.Status != directory.StatusSuspended {
		t.Errorf("alice = %+v", alice)
	}
	if bob.Email != "bob@x.example" || bob.ID != "abc-1" || bob.Status != directory.StatusSuspended {
		t.Errorf("bob = %+v (UPN fallback, entryUUID, disabled marker)", bob)
	}
	if carol.Status != directory.StatusActive {
		t.Errorf("carol = %+v", carol)
	}
	groups := map[string]directory.Group{}
	for _, g := range snap.Groups {
		groups[g.Name] = g
	}
	if m := groups["Pro"].Members; len(m) != 1 || m[0] != 0 {
		t.Errorf("Pro members = %v; want [alice]", m)
	}
	if s := groups["Pro"].Subgroups; len(s) != 1 || snap.Groups[s[0]].Name != "Nested" {
		t.Errorf("Pro subgroups = %v", s)
	}
	if s := groups["Nested"].Subgroups; len(s) != 1 || snap.Groups[s[0]].Name != "Pro" {
		t.Errorf("cycle lost: Nested subgroups = %v", s)
	}
	if m := groups["Unique"].Members; len(m) != 1 || m[0] != 1 {
		t.Errorf("Unique members = %v; want [bob]", m)
	}
	if m := groups["Posix"].Members; len(m) != 1 || m[0] != 2 {
		t.Errorf("Posix members = %v; want [carol]", m)
	}
	if m := groups["Domain Users"].Members; len(m) != 1 || m[0] != 0 {
		t.Errorf("primary group members = %v; want [alice]", m)
	}
	want := map[string]int{SkipNoEmail: 1, SkipForeignPrincipal: 1, SkipUnresolvedMember: 2, SkipComputer: 1}
	for k, v := range want {
		if snap.Skipped[k] != v {
			t.Errorf("skipped[%s] = %d; want %d (all: %v)", k, snap.Skipped[k], v, snap.Skipped)
		}
	}
	if groups["Pro"].Ref != "cn=pro,dc=x" {
		t.Errorf("group ref = %q", groups["Pro"].Ref)
	}
}

func TestParseGeneralizedTime(t *testing.T) {
	want := time.Date(2026, 11, 27, 4, 14, 34, 0, time.UTC)
	for _, v := range []string{"20261127041434.0Z", "20261127041434Z", " 20261127041434.123456Z ", "20261127051434+0100", "20261126231434,5-0500"} {
		if got, ok := ParseGeneralizedTime(v); !ok || !got.Equal(want) {
			t.Errorf("%q = %v, %t; want %v", v, got, ok, want)
		}
	}
	for _, bad := range []string{"", "2026112704", "202611270414Z", "20261127041434", "20261127041434.Z", "20261331041434Z",
		"20260230041434Z", "20261127241434Z", "2026112704143xZ", "20261127041434+01", "20261127041434+2500", "20261127041434Zjunk", "٢٠٢٦1127041434Z", "00000101000000+0100", "99991231235959-0100"} {
		if got, ok := ParseGeneralizedTime(bad); ok {
			t.Errorf("%q read as %v", bad, got)
		}
	}
}

// TestCreatedAndChanged: a user's creation and last change come from
// whenCreated/whenChanged (AD) or createTimestamp/modifyTimestamp
// (OpenLDAP); the mapper needs them to tell an old disabled account from
// a live one sharing its email. Unreadable values are 0 (no evidence).
func TestCreatedAndChanged(t *testing.T) {
	b := NewBuilder("test", Options{EmailAttributes: []string{"mail"}})
	b.Add(entry("CN=AD,DC=x", "objectclass", "user", "mail", "ad@x.example", "useraccountcontrol", "512",
		"whencreated", "20200102030405.0Z", "whenchanged", "20250102030405.0Z"))
	b.Add(entry("uid=ol,dc=x", "objectclass", "inetOrgPerson", "mail", "ol@x.example",
		"createtimestamp", "20210102030405Z", "modifytimestamp", "20240102030405Z"))
	b.Add(entry("CN=Bad,DC=x", "objectclass", "user", "mail", "bad@x.example", "useraccountcontrol", "512",
		"whencreated", "yesterday"))
	snap := b.Snapshot(time.Now())
	unix := func(s string) int64 { t, _ := time.Parse("20060102150405Z", s); return t.Unix() }
	want := [][2]int64{{unix("20200102030405Z"), unix("20250102030405Z")}, {unix("20210102030405Z"), unix("20240102030405Z")}, {0, 0}}
	for i, u := range snap.Users {
		if got := [2]int64{u.Created, u.Changed}; got != want[i] {
			t.Errorf("%s: created, changed = %v; want %v", u.Email, got, want[i])
		}
	}
}

func FuzzParseGeneralizedTime(f *testing.F) {
	f.Add("20261127041434.0Z")
	f.Add("20261127041434+0100")
	f.Add("99991231235959,999Z")
	f.Add("00010101000000+0100")
	f.Fuzz(func(t *testing.T, v string) {
		got, ok := ParseGeneralizedTime(v)
		if !ok {
			return
		}
		// Whatever parses must be the instant its digits name.
		again, ok2 := ParseGeneralizedTime(got.Format("20060102150405Z"))
		if !ok2 || !again.Equal(got) {
			t.Fatalf("%q = %v does not round-trip (%v, %t)", v, got, again, ok2)
		}
	})
}

// TestDecodeGUIDMatchesMicrosoftsForm: the hand-written formatter gives
// what the fmt form of Microsoft's layout gives (first three fields
// little-endian), for every byte value in every position.
func TestDecodeGUIDMatchesMicrosoftsForm(t *testing.T) {
	reference := func(b []byte) string {
		return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
			binary.LittleEndian.Uint32(b[0:4]), binary.LittleEndian.Uint16(b[4:6]), binary.LittleEndian.Uint16(b[6:8]), b[8:10], b[10:16])
	}
	for v := range 256 {
		for pos := range 16 {
			b := make([]byte, 16)
			for i := range b {
				b[i] = byte(i*17 + v) // every position differs
			}
			b[pos] = byte(v)
			if got, want := DecodeGUID(b), reference(b); got != want {
				t.Fatalf("DecodeGUID(% x) = %s, want %s", b, got, want)
			}
		}
	}
	if DecodeGUID(make([]byte, 15)) != "" {
		t.Error("a 15-byte GUID decoded")
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		classes []string
		want    Kind
	}{
		{[]string{"top", "person", "organizationalPerson", "user"}, KindUser},
		{[]string{"top", "person", "organizationalPerson", "user", "computer"}, KindComputer},
		{[]string{"inetOrgPerson"}, KindUser},
		{[]string{"INETORGPERSON"}, KindUser},
		{[]string{"posixAccount"}, KindUser},
		{[]string{"top", "Group"}, KindGroup},
		{[]string{"groupOfNames"}, KindGroup},
		{[]string{"GroupOfUniqueNames"}, KindGroup},
		{[]string{"posixGroup", "posixAccount"}, KindGroup}, // a group first, whatever the order
		{[]string{"posixAccount", "posixGroup"}, KindGroup},
		{[]string{"top", "foreignSecurityPrincipal"}, KindForeignPrincipal},
		{[]string{"top", "organizationalUnit"}, KindOther},
		{[]string{"users"}, KindOther},
		{[]string{"grouP "}, KindOther},                        // not trimmed: not a class name
		{[]string{"foreign\u017fecurityprincipal"}, KindOther}, // the long s folds to s: not ASCII
		{nil, KindOther},
	}
	for _, c := range cases {
		if got := Classify(&Entry{DN: "cn=x", Attrs: map[string][]string{"objectclass": c.classes}}); got != c.want {
			t.Errorf("Classify(%q) = %v, want %v", c.classes, got, c.want)
		}
	}
}

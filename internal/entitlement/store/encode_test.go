package store

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/dirsync/dirsync/entitlement"
)

// FuzzEncodeDecision: the cached value is what encoding/json writes for the
// decision, byte for byte when every string is valid UTF-8, and the same
// JSON value otherwise (invalid bytes become U+FFFD either way).
func FuzzEncodeDecision(f *testing.F) {
	f.Add("u0000001@bench.example", "cn=g000000,ou=groups,dc=bench,dc=test", "uid=u1,ou=people,dc=bench,dc=test", "00000001-0000-4000-8000-000000000001", true, int64(1_800_000_000))
	f.Add("a<b>&c@x.example", "cn=\"quoted\" \\, Ünïcode,dc=x", "cn=\u2028\u2029,dc=x", "\x00\x1f\x7f", false, int64(-1))
	f.Add("a@x.example", "\xff\xfe", "cn=\xc3", "id", true, int64(253402300799))
	f.Add("0", "\xe8\xac", "\x80", "0", false, int64(50)) // invalid apart, valid joined
	f.Fuzz(func(t *testing.T, email, group, dn, id string, expires bool, unix int64) {
		perm := entitlement.PermissionPro
		in := expires
		d := entitlement.Decision{Email: email, Account: "acme", Allowed: true, Permission: perm, Reason: entitlement.ReasonGranted,
			Capabilities: entitlement.CapabilitiesOf(perm), UserID: id, Via: []string{group},
			Detail: &entitlement.Detail{Rule: "member of a group bound to pro", DirectoryStatus: "active", InAccessGroup: &in,
				Paths: []entitlement.GroupPath{{Binding: group, Permission: perm, Groups: []string{group, dn}}}, DN: dn, Source: "ldap:" + group}}
		if expires {
			at := time.Unix(unix%(1<<35), 0).UTC()
			d.Detail.ExpiresAt = &at
		}
		at := time.Unix(1_800_000_000, 0)
		got, err := encodeDecision(&d, at)
		c := d
		c.SyncedAt = at.UTC()
		want, wantErr := json.Marshal(&c)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("encodeDecision error %v, encoding/json error %v", err, wantErr)
		}
		if err != nil {
			return
		}
		if utf8.ValidString(email) && utf8.ValidString(group) && utf8.ValidString(dn) && utf8.ValidString(id) {
			if !bytes.Equal(got, want) {
				t.Fatalf("\ngot  %s\nwant %s", got, want)
			}
			return
		}
		var g, w entitlement.Decision
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("%s: %v", got, err)
		}
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("\ngot  %+v\nwant %+v", g, w)
		}
	})
}

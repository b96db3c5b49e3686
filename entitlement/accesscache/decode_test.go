package accesscache

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/dirsync/dirsync/entitlement"
)

func sampleDecision() entitlement.Decision {
	perm := entitlement.PermissionPro
	expires := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	in := true
	return entitlement.Decision{Email: "u0000001@bench.example", Account: "bench", Allowed: true, Permission: perm, Reason: entitlement.ReasonGranted,
		Capabilities: entitlement.CapabilitiesOf(perm), UserID: "00000001-0000-4000-8000-000000000001", Via: []string{"cn=g000000,ou=groups,dc=bench,dc=test"},
		Detail: &entitlement.Detail{Rule: "member of a group bound to pro", DirectoryStatus: "active", ExpiresAt: &expires, InAccessGroup: &in,
			Paths: []entitlement.GroupPath{{Binding: "cn=g000000,ou=groups,dc=bench,dc=test", Permission: perm,
				Groups: []string{"cn=g000000,ou=groups,dc=bench,dc=test", "cn=Ünïcode \"quoted\",dc=bench"}}},
			DN: "uid=u0000001,ou=people,dc=bench,dc=test", Source: "ldap:bench"}}
}

// referenceDecode is DecodeDecision with encoding/json: what the fast
// decoder must agree with.
func referenceDecode(b []byte) (entitlement.Decision, error) {
	var d entitlement.Decision
	if err := json.Unmarshal(b, &d); err != nil {
		return entitlement.Decision{}, err
	}
	if d.Email == "" || d.Reason == "" || d.Permission == "" {
		return entitlement.Decision{}, errIncomplete
	}
	if d.Via == nil {
		d.Via = []string{}
	}
	return d, nil
}

var errIncomplete = json.Unmarshal([]byte("x"), new(int)) // any non-nil error

// FuzzDecodeDecision: the fast decoder accepts exactly what encoding/json
// accepts and decodes it to the same decision.
func FuzzDecodeDecision(f *testing.F) {
	d := sampleDecision()
	v, err := encodeDecision(&d, time.Unix(1_800_000_000, 0))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(v)
	f.Add([]byte(`{"email":"a@b.c","reason":"granted","permission":"pro","allowed":true}`))
	f.Add([]byte(`{"EMAIL":"a@b.c","Reason":"granted","permission":"pro","allowed":"true"}`))
	f.Add([]byte(`{"email":"a@b.c","reason":"granted","permission":"pro","allowed":true,"allowed":false}`))
	f.Add([]byte(`{"email":"a\u0040b.c","reason":"granted","permission":"pro","via":null,"synced_at":"2026-11-27T08:00:00.123+01:00"}`))
	f.Add([]byte(`{"email":"a@b.c","reason":"granted","permission":"pro","allowed":tr`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gotErr := DecodeDecision(b)
		want, wantErr := referenceDecode(b)
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("%q: fast decoder error %v, encoding/json error %v", b, gotErr, wantErr)
		}
		if gotErr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\nfast          %+v\nencoding/json %+v", b, got, want)
		}
	})
}

func TestDecodeDecisionRoundTrip(t *testing.T) {
	d := sampleDecision()
	at := time.Unix(1_800_000_000, 0)
	v, err := encodeDecision(&d, at)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeDecision(v)
	if err != nil {
		t.Fatal(err)
	}
	d.SyncedAt = at.UTC()
	if !reflect.DeepEqual(got, d) {
		t.Fatalf("round trip:\ngot  %+v\nwant %+v", got, d)
	}
}

func BenchmarkDecodeDecision(b *testing.B) {
	d := sampleDecision()
	v, _ := encodeDecision(&d, time.Now())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeDecision(v); err != nil {
			b.Fatal(err)
		}
	}
}

// encodeDecision is a decision as the writer caches it (the writer lives in
// internal/entitlement/store; its own tests check it writes this form).
func encodeDecision(d *entitlement.Decision, at time.Time) ([]byte, error) {
	c := *d
	c.SyncedAt = at.UTC().Truncate(time.Second)
	return json.Marshal(&c)
}

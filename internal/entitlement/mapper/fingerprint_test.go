package mapper

import (
	"github.com/dirsync/dirsync/entitlement"

	"encoding/json"
	"hash/fnv"
	"reflect"
	"testing"
	"time"
)

// fullDecision sets every field of Decision and Detail to a non-zero value.
func fullDecision() entitlement.Decision {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	in := true
	return entitlement.Decision{
		Email: "a@x", Account: "acme", Allowed: true, Permission: entitlement.PermissionPro, Reason: entitlement.ReasonGranted,
		Capabilities: entitlement.Capabilities{HostMeetings: true, AttendMeetings: true, Chat: true},
		UserID:       "id-1", Via: []string{"cn=pro"}, SyncedAt: time.Unix(100, 0),
		Detail: &entitlement.Detail{Rule: "r", DirectoryStatus: "active", ExpiresAt: &exp, InAccessGroup: &in,
			Paths: []entitlement.GroupPath{{Binding: "cn=pro", Permission: entitlement.PermissionPro, Groups: []string{"cn=pro", "cn=team"}}},
			DN:    "uid=a", Source: "ldap:x"},
	}
}

// TestFingerprintCoversEveryField changes each field in turn (walking the
// struct by reflection, so a field added later is covered) and expects a
// different fingerprint, except for SyncedAt.
func TestFingerprintCoversEveryField(t *testing.T) {
	base := fullDecision()
	want := Fingerprint(&base)
	var walk func(path string, v reflect.Value, mutate func(func(reflect.Value)))
	walk = func(path string, v reflect.Value, mutate func(func(reflect.Value))) {
		switch v.Kind() {
		case reflect.Struct:
			if v.Type() == reflect.TypeOf(time.Time{}) {
				break
			}
			for i := 0; i < v.NumField(); i++ {
				i := i
				walk(path+"."+v.Type().Field(i).Name, v.Field(i), func(f func(reflect.Value)) {
					mutate(func(x reflect.Value) { f(x.Field(i)) })
				})
			}
			return
		case reflect.Pointer:
			if v.Type().Elem().Kind() == reflect.Struct && v.Type().Elem() != reflect.TypeOf(time.Time{}) {
				walk(path, v.Elem(), func(f func(reflect.Value)) {
					mutate(func(x reflect.Value) {
						c := reflect.New(x.Type().Elem())
						c.Elem().Set(x.Elem())
						x.Set(c)
						f(c.Elem())
					})
				})
				return
			}
		case reflect.Slice:
			if v.Len() > 0 && v.Type().Elem().Kind() == reflect.Struct {
				walk(path+"[0]", v.Index(0), func(f func(reflect.Value)) {
					mutate(func(x reflect.Value) {
						c := reflect.MakeSlice(x.Type(), x.Len(), x.Len())
						reflect.Copy(c, x)
						x.Set(c)
						f(c.Index(0))
					})
				})
				return
			}
		}
		mutate(func(x reflect.Value) { x.Set(changed(x)) })
	}
	checked := 0
	root := reflect.ValueOf(&base).Elem()
	walk("Decision", root, func(f func(reflect.Value)) {
		d := fullDecision()
		f(reflect.ValueOf(&d).Elem())
		checked++
		if got := Fingerprint(&d); got == want {
			if !reflect.DeepEqual(d.SyncedAt, base.SyncedAt) {
				return // SyncedAt is not content
			}
			t.Errorf("changing a field left the fingerprint unchanged: %+v", d)
		}
	})
	if checked < 15 {
		t.Fatalf("walked only %d fields", checked)
	}
}

// changed returns a different value of x's type.
func changed(x reflect.Value) reflect.Value {
	switch x.Kind() {
	case reflect.String:
		return reflect.ValueOf(x.String() + "!").Convert(x.Type())
	case reflect.Bool:
		return reflect.ValueOf(!x.Bool())
	case reflect.Slice:
		c := reflect.MakeSlice(x.Type(), x.Len(), x.Len()+1)
		reflect.Copy(c, x)
		return reflect.Append(c, reflect.Zero(x.Type().Elem()))
	case reflect.Pointer:
		if x.IsNil() {
			return reflect.New(x.Type().Elem())
		}
		return reflect.Zero(x.Type()) // present → absent
	case reflect.Struct: // time.Time
		return reflect.ValueOf(x.Interface().(time.Time).Add(time.Second))
	}
	panic("unhandled kind " + x.Kind().String())
}

func TestFingerprintIgnoresSyncedAtAndSeparatesFields(t *testing.T) {
	a, b := fullDecision(), fullDecision()
	b.SyncedAt = b.SyncedAt.Add(time.Hour)
	if Fingerprint(&a) != Fingerprint(&b) {
		t.Error("SyncedAt changed the fingerprint")
	}
	// Moving a character between adjacent strings must change the hash.
	c := fullDecision()
	c.Email, c.Account = "a@xa", "cme"
	if Fingerprint(&a) == Fingerprint(&c) {
		t.Error("adjacent strings run together")
	}
	d := fullDecision()
	d.Via = []string{}
	e := fullDecision()
	e.Via = nil
	if Fingerprint(&d) == Fingerprint(&e) {
		t.Error("nil and empty Via (null and [] in JSON) hash alike")
	}
}

func BenchmarkFingerprint(b *testing.B) {
	d := fullDecision()
	for b.Loop() {
		Fingerprint(&d)
	}
}

// BenchmarkFingerprintJSON is the former fingerprint (JSON, then FNV-1a),
// for comparison.
func BenchmarkFingerprintJSON(b *testing.B) {
	d := fullDecision()
	for b.Loop() {
		c := d
		c.SyncedAt = time.Time{}
		buf, _ := json.Marshal(&c)
		h := fnv.New64a()
		h.Write(buf)
		_ = h.Sum64()
	}
}

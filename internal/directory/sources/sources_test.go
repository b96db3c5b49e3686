package sources

import (
	"testing"

	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory"
)

// TestKindsAreDistinct: each directory type is served by one kind, each
// section key belongs to one kind, console stays the console service's,
// and every kind can be opened.
func TestKindsAreDistinct(t *testing.T) {
	kinds := Kinds()
	if len(kinds) < 3 {
		t.Fatalf("%d kinds; want at least ldap, okta and ldif", len(kinds))
	}
	types, keys := map[string]bool{}, map[string]bool{}
	for _, k := range kinds {
		key := k.Config.Key()
		if key == "" || key == "type" || keys[key] {
			t.Errorf("section key %q is empty, reserved or taken", key)
		}
		keys[key] = true
		if len(k.Config.Types()) == 0 || (k.Open == nil) == (k.OpenStored == nil) || k.Config.SectionType() == nil {
			t.Errorf("kind %q: types %v, Open set %v, OpenStored set %v, section type %v", key, k.Config.Types(), k.Open != nil, k.OpenStored != nil, k.Config.SectionType())
		}
		for _, typ := range k.Config.Types() {
			if typ == config.DirectoryConsole || types[typ] {
				t.Errorf("directory type %q is served twice or is console's", typ)
			}
			types[typ] = true
			if got, ok := directory.KindOf(kinds, typ); !ok || got.Config.Key() != key {
				t.Errorf("KindOf(%q) = %q, %v", typ, got.Config.Key(), ok)
			}
		}
	}
	for _, typ := range []string{"active_directory", "ldap", "okta", "ldif", "scim"} {
		if !types[typ] {
			t.Errorf("no kind serves directory type %s", typ)
		}
	}
	if len(Config()) != len(kinds) {
		t.Errorf("Config has %d kinds, Kinds %d", len(Config()), len(kinds))
	}
}

package ldif

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/directory/ldapentry"
)

var opts = ldapentry.Options{EmailAttributes: []string{"mail", "userPrincipalName"}}

func TestParse(t *testing.T) {
	in := "version: 1\n\n# comment\n#  folded comment\n  continues\ndn: CN=A,DC=x\nobjectClass: user\ndescription: long\n  line\nobjectGUID:: AAECAwQFBgcICQoLDA0ODw==\nmail:  a@x.example\n\ndn: CN=B,DC=x\r\nobjectClass: group\r\n"
	var got []*ldapentry.Entry
	if err := Parse(strings.NewReader(in), func(e *ldapentry.Entry) { got = append(got, e) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d entries; want 2", len(got))
	}
	a := got[0]
	if a.DN != "CN=A,DC=x" || a.First("description") != "long line" || a.First("mail") != "a@x.example" {
		t.Errorf("entry A = %+v", a)
	}
	if g := a.First("objectguid"); len(g) != 16 || g[15] != 15 {
		t.Errorf("base64 value not decoded: %q", g)
	}
	if got[1].DN != "CN=B,DC=x" || got[1].First("objectclass") != "group" {
		t.Errorf("entry B = %+v", got[1])
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, give, want string }{
		{"no dn", "cn: x\n", "line 1: expected \"dn:\""},
		{"no colon", "dn: a\nbroken line\n", "line 2"},
		{"change record", "dn: a\nchangetype: modify\n", "change records are not supported"},
		{"url", "dn: a\njpegPhoto:< file:///etc/passwd\n", "URL values are not supported"},
		{"bad base64", "dn: a\nobjectGUID:: !!!\n", "bad base64"},
		{"orphan continuation", " x\n", "continuation line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Parse(strings.NewReader(tt.give), func(*ldapentry.Entry) {})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v; want %q", err, tt.want)
			}
		})
	}
}

// TestQuickStartSample checks the shipped sample LDIF decides as the README
// says.
func TestQuickStartSample(t *testing.T) {
	src := NewSource("../../../deployments/local/directory.ldif", opts, nil)
	snap, err := src.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Users) != 9 || len(snap.Groups) != 4 {
		t.Fatalf("users %d groups %d; want 9 and 4", len(snap.Users), len(snap.Groups))
	}
	byEmail := map[string]directory.User{}
	for _, u := range snap.Users {
		byEmail[u.Email] = u
	}
	if byEmail["dave@acme.example"].Status != directory.StatusSuspended {
		t.Error("dave is not suspended")
	}
	if byEmail["frank@acme.example"].ExpiresAt.IsZero() || !byEmail["grace@acme.example"].ExpiresAt.IsZero() {
		t.Error("accountExpires not read (frank expires, grace never)")
	}
	if _, ok := byEmail["ivan@acme.example"]; !ok {
		t.Error("ivan has no mail and should fall back to userPrincipalName")
	}
	if id := byEmail["alice@acme.example"].ID; id != "5a1e0000-0000-4000-8000-000000000001" {
		t.Errorf("alice id = %s", id)
	}
}

func TestSourceIncremental(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "d.ldif")
	write := func(body string) {
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	user := "dn: CN=A,DC=x\nobjectClass: user\nmail: a@x.example\nuserAccountControl: %s\n"
	write(strings.Replace(user, "%s", "512", 1))
	src := NewSource(path, opts, nil)
	ctx := context.Background()
	first, err := src.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	same, changed, err := src.Incremental(ctx)
	if err != nil || changed || same != first {
		t.Fatalf("unchanged file: changed=%t err=%v same=%t", changed, err, same == first)
	}
	write(strings.Replace(user, "%s", "514", 1))
	// Make sure the modification time moves even on coarse file systems.
	later := time.Now().Add(2 * time.Second)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	next, changed, err := src.Incremental(ctx)
	if err != nil || !changed || next.Users[0].Status != directory.StatusSuspended {
		t.Fatalf("changed file: changed=%t err=%v", changed, err)
	}
	if first.Users[0].Status != directory.StatusActive {
		t.Error("an earlier snapshot was mutated")
	}

	write("# nothing here\n")
	if _, err := src.Snapshot(ctx); !errors.Is(err, ErrNoUsers) {
		t.Errorf("empty file: err = %v; want ErrNoUsers", err)
	}
	write("dn: CN=A,DC=x\nbroken\n")
	if _, err := src.Snapshot(ctx); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("malformed file: err = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("dn: CN=A,DC=x\nobjectClass: user\nmail: a@x.example\n")
	f.Add("dn:: Q049QQ==\nmember: CN=B\n member\n")
	f.Add("version: 1\n\n#c\n x\ndn: a\n")
	f.Fuzz(func(t *testing.T, in string) {
		b := ldapentry.NewBuilder("fuzz", ldapentry.Options{EmailAttributes: []string{"mail"}})
		if err := Parse(strings.NewReader(in), b.Add); err != nil {
			return
		}
		snap := b.Snapshot(time.Time{})
		for _, g := range snap.Groups {
			for _, m := range g.Members {
				if int(m) >= len(snap.Users) {
					t.Fatalf("member index %d out of range", m)
				}
			}
			for _, s := range g.Subgroups {
				if int(s) >= len(snap.Groups) {
					t.Fatalf("subgroup index %d out of range", s)
				}
			}
		}
	})
}

// TestSourceUnreadableAccountState (issue 12 item 5): through the LDIF
// source, a userAccountControl with a trailing space ("514 ", as hand-edited
// exports have it) is still read as disabled, and an AD user whose
// userAccountControl is absent (the export was made by an account an ACL
// hides it from) or not a number is suspended and counted, never active.
func TestSourceUnreadableAccountState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.ldif")
	body := "dn: CN=Trailing,DC=x\nobjectClass: user\nmail: trailing@x.example\nuserAccountControl: 514 \n\n" +
		"dn: CN=Hidden,DC=x\nobjectClass: top\nobjectClass: user\nmail: hidden@x.example\n\n" +
		"dn: CN=Garbled,DC=x\nobjectClass: user\nmail: garbled@x.example\nuserAccountControl: 5l2\n\n" +
		"dn: CN=Enabled,DC=x\nobjectClass: user\nmail: enabled@x.example\nuserAccountControl:  512 \n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	snap, err := NewSource(path, opts, nil).Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]directory.Status{
		"trailing@x.example": directory.StatusSuspended,
		"hidden@x.example":   directory.StatusSuspended,
		"garbled@x.example":  directory.StatusSuspended,
		"enabled@x.example":  directory.StatusActive,
	}
	if len(snap.Users) != len(want) {
		t.Fatalf("users %+v; want %d", snap.Users, len(want))
	}
	for _, u := range snap.Users {
		if u.Status != want[u.Email] {
			t.Errorf("%s: status %v; want %v", u.Email, u.Status, want[u.Email])
		}
	}
	if n := snap.Unreadable[ldapentry.UnreadableUserAccountControl]; n != 2 {
		t.Errorf("unreadable %v; want userAccountControl counted for the hidden and the garbled user (2)", snap.Unreadable)
	}
}

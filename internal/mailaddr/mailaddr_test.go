package mailaddr

import (
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	tests := []struct{ give, want string }{
		{" Alice@Acme.Example ", "alice@acme.example"},
		{"a@b@c.example", "a@b@c.example"},
		{"no-at", ""},
		{"@acme.example", ""},
		{"alice@", ""},
		{"a b@acme.example", ""},
		{"a@x.example; b@y.example", ""},
	}
	for _, tt := range tests {
		if got := Normalize(tt.give); got != tt.want {
			t.Errorf("Normalize(%q) = %q; want %q", tt.give, got, tt.want)
		}
	}
	if Domain("a@b@c.example") != "c.example" {
		t.Error("EmailDomain takes the part after the last @")
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"Alice@Acme.Example", " a@b ", "a@b@c", "\\", "a@b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if e := Normalize(s); e != "" {
			if e != strings.ToLower(e) || !strings.Contains(e, "@") || Normalize(e) != e {
				t.Fatalf("Normalize(%q) = %q is not a normal form", s, e)
			}
			_ = Domain(e)
		}
	})
}

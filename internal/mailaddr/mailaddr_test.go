package mailaddr

import (
	"strings"
	"testing"
	"unicode"
)

func TestNormalize(t *testing.T) {
	tests := []struct{ give, want string }{
		{" Alice@Acme.Example ", "alice@acme.example"},
		{"\talice@acme.example\r\n", "alice@acme.example"},
		{"alice@xn--acm-bla.example", "alice@xn--acm-bla.example"},
		{"no-at", ""},
		{"@acme.example", ""},
		{"alice@", ""},
		{"a b@acme.example", ""},
		{"a@x.example; b@y.example", ""},
		{"a@b@c.example", ""}, // which domain? neither
		{`"a"@acme.example`, ""},
		// Unicode folding and trimming would land these on alice's,
		// kate's or bob's key.
		{"alİce@acme.example", ""},       // U+0130 lower-cases to "i̇"
		{"\u212Aate@acme.example", ""},   // Kelvin sign lower-cases to "k"
		{"\u00a0alice@acme.example", ""}, // NBSP
		{"alice@acme.example\u2003", ""}, // EM SPACE
		{"\u0085bob@acme.example", ""},   // NEL
		{"alice@acme.examp\u217Ce", ""},  // SMALL ROMAN NUMERAL FIFTY
		{"ALICE@ACME.EXAMPLE\u200b", ""}, // zero-width space
		{"alice\x00@acme.example", ""},   // NUL
		{"alice@ac\x7fme.example", ""},   // DEL
		{"alice@\u0430cme.example", ""},  // Cyrillic a
		{"Alice@ACME.example", "alice@acme.example"},
	}
	for _, tt := range tests {
		if got := Normalize(tt.give); got != tt.want {
			t.Errorf("Normalize(%q) = %q; want %q", tt.give, got, tt.want)
		}
	}
	if Domain("a@c.example") != "c.example" {
		t.Error("Domain takes the part after the '@'")
	}
	if got := NormalizeDomain(" ACME.Example "); got != "acme.example" {
		t.Errorf("NormalizeDomain = %q", got)
	}
	if got := NormalizeDomain("\u212Acme.example"); got != "" {
		t.Errorf("NormalizeDomain of a Kelvin sign = %q; want \"\"", got)
	}
}

// FuzzNormalize: a normal form is printable ASCII, lower-case, idempotent,
// and no input that Unicode folding or trimming would change differently
// from ASCII folding ever yields one that a different ASCII input yields.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"Alice@Acme.Example", " a@b ", "a@b@c", "\\", "a@b", "alİce@acme.example", "\u212Aate@x", "\u00a0a@b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := Normalize(s)
		if e == "" {
			return
		}
		if Normalize(e) != e || strings.Count(e, "@") != 1 {
			t.Fatalf("Normalize(%q) = %q is not a normal form", s, e)
		}
		for _, r := range e {
			if r > unicode.MaxASCII || unicode.IsSpace(r) || unicode.IsUpper(r) {
				t.Fatalf("Normalize(%q) = %q holds %q", s, e, r)
			}
		}
		// Only ASCII white space was trimmed and only ASCII letters folded.
		if trimmed := strings.Trim(s, " \t\n\r\v\f"); !strings.EqualFold(trimmed, e) || len(trimmed) != len(e) {
			t.Fatalf("Normalize(%q) = %q changed more than ASCII case and ASCII white space", s, e)
		}
		_ = Domain(e)
	})
}

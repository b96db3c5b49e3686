package directory

import (
	"strings"
	"testing"
	"unicode"
)

func TestNormalizeDN(t *testing.T) {
	tests := []struct{ give, want string }{
		{"CN=Chime Pro,OU=Groups,DC=acme,DC=example", "cn=chime pro,ou=groups,dc=acme,dc=example"},
		{" cn = Chime  Pro , ou=Groups ,dc=ACME", "cn=chime pro,ou=groups,dc=acme"}, // RFC 4518 insignificant spaces
		{`CN=Smith\, John,DC=x`, `cn=smith\, john,dc=x`},
		{`CN=trailing\ ,DC=x`, `cn=trailing\ ,dc=x`},
		{"CN=Zoë Müller,DC=x", "cn=zoë müller,dc=x"},
		{"", ""},
		// Look-alikes keep their non-ASCII letters: they never fold onto
		// another group's DN.
		{"CN=\u212Aitchen,DC=x", "cn=\u212Aitchen,dc=x"}, // KELVIN SIGN
		{"CN=Pro \u0130,DC=x", "cn=pro \u0130,dc=x"},     // İ
		{"\u00a0CN=Pro,DC=x", "\u00a0cn=pro,dc=x"},       // NBSP is not trimmed
	}
	for _, tt := range tests {
		if got := NormalizeDN(tt.give); got != tt.want {
			t.Errorf("NormalizeDN(%q) = %q; want %q", tt.give, got, tt.want)
		}
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"cn=a,ou=x", "\tcn=a", "cn=a\f", "cn=a\\2c", "CN=A\\,B, OU=x", "Alice@Acme.Example", " = , ", "\\", "a@b", "CN=\u212Aitchen", "cn=\\\u00e9 x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		dn := NormalizeDN(s)
		if slow := normalizeDN(s); slow != dn {
			t.Fatalf("NormalizeDN(%q) = %q, without the fast path %q", s, dn, slow)
		}
		if again := NormalizeDN(dn); again != dn {
			t.Fatalf("NormalizeDN not idempotent: %q → %q → %q", s, dn, again)
		}
		// Only ASCII letters change case: outside ASCII, the normal form
		// keeps every character of the input, in order.
		if nonASCII(dn) != nonASCII(s) {
			t.Fatalf("NormalizeDN(%q) = %q changed non-ASCII characters", s, dn)
		}
		if strings.ToLower(dn) != dn && strings.IndexFunc(dn, func(r rune) bool { return r < unicode.MaxASCII && unicode.IsUpper(r) }) >= 0 {
			t.Fatalf("NormalizeDN(%q) = %q left an ASCII capital", s, dn)
		}
	})
}

func nonASCII(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

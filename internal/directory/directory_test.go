package directory

import (
	"testing"
)

func TestNormalizeDN(t *testing.T) {
	tests := []struct{ give, want string }{
		{"CN=Chime Pro,OU=Groups,DC=acme,DC=example", "cn=chime pro,ou=groups,dc=acme,dc=example"},
		{" cn = Chime  Pro , ou=Groups ,dc=ACME", "cn=chime pro,ou=groups,dc=acme"}, // RFC 4518 insignificant spaces
		{`CN=Smith\, John,DC=x`, `cn=smith\, john,dc=x`},
		{`CN=trailing\ ,DC=x`, `cn=trailing\ ,dc=x`},
		{"", ""},
	}
	for _, tt := range tests {
		if got := NormalizeDN(tt.give); got != tt.want {
			t.Errorf("NormalizeDN(%q) = %q; want %q", tt.give, got, tt.want)
		}
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"CN=A\\,B, OU=x", "Alice@Acme.Example", " = , ", "\\", "a@b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		dn := NormalizeDN(s)
		if ref := normalizeDNRunes(s); dn != ref {
			t.Fatalf("NormalizeDN(%q) = %q, but the rune-by-rune form is %q", s, dn, ref)
		}
		if again := NormalizeDN(dn); again != dn {
			t.Fatalf("NormalizeDN not idempotent: %q → %q → %q", s, dn, again)
		}
	})
}

// Package mailaddr is dirsync's one email normalisation: the form every
// directory source, the mapper, the access cache, the HTTP API and the CLI
// use as a user's key.
//
// The rule is ASCII only, so that no two different addresses can meet on
// one key: surrounding ASCII white space is trimmed, ASCII letters are
// lower-cased, and an address with any other byte outside printable ASCII
// (a non-ASCII local part or domain, NBSP, EM SPACE, NEL, U+0130 İ, the
// Kelvin sign K…) is not an address at all. Unicode case folding would map
// "alİce" or "\u212Aate" onto another user's key, and Unicode white space
// trimming would let " alice" in a foreign script pass for "alice".
// Internationalised domains are accepted in their ASCII (xn--) form only;
// internationalised local parts (RFC 6531) are not supported.
package mailaddr

import "strings"

// Normalize returns the canonical form of an email address, or "" when s is
// not an address dirsync accepts: exactly one '@' with something on each
// side, printable ASCII without white space or the separators , ; < > " ( )
// \ [ ], after trimming ASCII white space around it.
func Normalize(s string) string {
	s = strings.Trim(s, " \t\n\r\v\f")
	if s == "" {
		return ""
	}
	at := -1
	lower := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c <= ' ' || c >= 0x7f:
			return "" // white space, control or non-ASCII
		case strings.IndexByte(`,;<>"()\[]`, c) >= 0:
			return ""
		case c == '@':
			if at >= 0 {
				return "" // a second '@'
			}
			at = i
		case 'A' <= c && c <= 'Z':
			lower = false
		}
	}
	if at <= 0 || at == len(s)-1 {
		return ""
	}
	if lower {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Domain returns the part of a normalised address after its '@'.
func Domain(email string) string {
	return email[strings.LastIndexByte(email, '@')+1:]
}

// NormalizeDomain returns a domain name in the same ASCII form Normalize
// gives the domain of an address (ASCII white space trimmed, ASCII letters
// lower-cased), or "" when it holds anything outside printable ASCII.
func NormalizeDomain(d string) string {
	e := Normalize("x@" + strings.Trim(d, " \t\n\r\v\f"))
	if e == "" {
		return ""
	}
	return e[2:]
}

// Package mailaddr is dirsync's one email normalisation: the form every
// directory source, the mapper, the access cache, the HTTP API and the CLI
// use as a user's key.
package mailaddr

import "strings"

// Normalize lower-cases and trims an address; it returns "" for a value
// that is not of the form local@domain.
func Normalize(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 || strings.ContainsAny(s, " \t\r\n,;<>") {
		return ""
	}
	return s
}

// Domain returns the part of a normalised address after the last '@'.
func Domain(email string) string {
	return email[strings.LastIndexByte(email, '@')+1:]
}

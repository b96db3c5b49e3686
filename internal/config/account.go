package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// ParseAccount decodes, defaults and validates one account given on its
// own: a YAML or JSON document with exactly the fields of one accounts[]
// entry (an account created through an API, for example). It runs the
// decoding, defaults and validation that Parse runs for each entry of a
// file, with c's source kinds, so the problems are the same and their
// paths are those of the entry under path: "accounts[3]" gives
// "accounts[3].directory.ldap.urls", "" gives "directory.ldap.urls".
//
// c is the config the account joins: the account inherits its schedule,
// its id and claimed domains must not be taken by c's accounts, and
// relative file paths resolve against c's directory. c is not changed.
// On any problem it returns an *Error (File is "account") listing all of
// them.
func (c *Config) ParseAccount(doc []byte, path string, getenv func(string) string) (*Account, error) {
	var a Account
	d := decode(doc, &a, c.kinds, path)
	if d.fatal {
		return nil, &Error{File: "account", Problems: d.problems}
	}
	c.applyAccountDefaults(&a)
	taken := newTakenNames()
	for i, other := range c.Accounts { // valid: ids and domains are unique
		taken.takeID(i, other.ID)
		for _, d := range other.ClaimedDomains {
			taken.takeDomain(d, other.ID)
		}
	}
	var ps problems
	c.validateAccount(&ps, len(c.Accounts), path, &a, taken, getenv)
	if all := append(d.problems, ps...); len(all) > 0 {
		return nil, &Error{File: "account", Problems: all}
	}
	return &a, nil
}

// Fingerprint identifies what a's configuration says, section included:
// two accounts with the same fingerprint configure the same account (a
// config reload applies only the accounts whose fingerprint changed).
func (a *Account) Fingerprint() string {
	b, err := json.Marshal(struct {
		Account *Account
		Section any
	}{a, a.Directory.section})
	if err != nil { // plain data: cannot happen
		return fmt.Sprintf("unencodable %p", a)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// SameOutside reports whether c and d configure the same daemon apart from
// their accounts: a reload between them can apply account changes alone.
func (c *Config) SameOutside(d *Config) bool {
	strip := func(x *Config) []byte {
		y := *x
		y.Accounts = nil
		b, _ := json.Marshal(&y)
		return b
	}
	return string(strip(c)) == string(strip(d))
}

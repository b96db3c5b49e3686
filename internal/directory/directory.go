// Package directory holds the source-neutral snapshot that every directory
// poller produces and the entitlement mapper consumes, and Kind, the one
// registration of a kind of source (its config section, constructor and
// counters; the build's kinds are listed in package sources).
//
// A Snapshot is the complete state of one account's directory at one moment:
// a poller returns either a whole snapshot or an error, never a partial one.
// Data flows one way: poller → Snapshot → mapper.Map (internal/entitlement/mapper) → access cache.
package directory

import (
	"strings"
	"time"
)

// Status is a user's account state as the directory reports it.
type Status uint8

// Account states, from least to most restrictive in effect: every state but
// StatusActive denies sign-in whatever the user's groups.
const (
	StatusActive    Status = iota // enabled (AD), ACTIVE or PASSWORD_EXPIRED (Okta)
	StatusSuspended               // AD ACCOUNTDISABLE, Okta SUSPENDED, a configured LDAP disabled marker
	StatusInactive                // AD accountExpires passed, Okta DEPROVISIONED/STAGED/PROVISIONED
	StatusLockedOut               // Okta LOCKED_OUT/RECOVERY
)

func (s Status) String() string {
	switch s {
	case StatusActive:
		return "active"
	case StatusSuspended:
		return "suspended"
	case StatusInactive:
		return "inactive"
	case StatusLockedOut:
		return "locked_out"
	}
	return "unknown"
}

// User is one person in the directory.
type User struct {
	// ID is the stable directory identity: objectGUID (AD, string form),
	// entryUUID (OpenLDAP) or the Okta user id. It survives renames and moves.
	ID string
	// DN is the entry's distinguished name as the directory spells it; empty
	// for sources without DNs (Okta).
	DN string
	// Email is the sign-in address, lower-cased; never empty in a snapshot.
	Email  string
	Status Status
	// ExpiresAt is when the account stops being valid (AD accountExpires);
	// zero means never. The mapper compares it with the evaluation time, so
	// an expiry takes effect without any directory change.
	ExpiresAt time.Time
	// Created and Changed are when the directory object was created and
	// last modified, in Unix seconds (AD whenCreated/whenChanged, OpenLDAP
	// createTimestamp/modifyTimestamp, Okta created/lastUpdated); 0 when
	// the directory gave none. They only decide between objects that share
	// an email (an old disabled account is one whose last change precedes
	// the active object's creation; see mapper.Map).
	Created, Changed int64
}

// Group is one directory group. Members and Subgroups index into the
// snapshot's Users and Groups slices.
type Group struct {
	// Ref is the canonical reference bindings are matched against: the
	// normalised DN (see NormalizeDN) for LDAP sources, the group id for Okta.
	Ref string
	// Name is the human name: cn for LDAP, profile.name for Okta. Bindings
	// may also name a group by exact Name when Ref does not match.
	Name string
	// DN is the group's DN as the directory spells it; empty for Okta.
	DN        string
	Members   []int32
	Subgroups []int32
}

// Label is how a group is shown to people (in "via" and explanations).
func (g *Group) Label() string {
	if g.DN != "" {
		return g.DN
	}
	return g.Name
}

// Snapshot is the complete, consistent state of one account's directory.
type Snapshot struct {
	// Source names where the snapshot came from (for logs and explanations).
	Source string
	// FetchedAt is when the read finished.
	FetchedAt time.Time
	Users     []User
	Groups    []Group
	// Skipped counts directory objects left out of the snapshot, by reason
	// (for example "no_email", "foreign_principal", "unresolved_member").
	// Skipping is reported, never fatal.
	Skipped map[string]int
	// Unreadable counts users denied because an attribute deciding their
	// account state could not be read (missing or unparseable), by
	// attribute. They are in Users, with a denying Status.
	Unreadable map[string]int
	// Patch, set by an incremental read, promises that this snapshot
	// differs from the previous one its source returned only in the users
	// and the groups' memberships Patch lists: the same users at the same
	// indices, the same groups (names, references) at the same indices.
	// Such a snapshot shares its Users with the previous one, which it
	// supersedes (the previous snapshot's users must not be read once a
	// newer one is returned). Nil promises nothing: compare everything.
	Patch *Patch
}

// Patch lists what an incremental read changed (see Snapshot.Patch).
type Patch struct {
	// Users are the indices into Users of the users whose entries
	// changed, ascending.
	Users []int32
	// Groups are the indices into Groups of the groups whose members or
	// subgroups changed, ascending. Their names and references did not;
	// the snapshot's Groups is a new slice then (the previous snapshot's
	// groups are left as they were), and Skipped is recounted.
	Groups []int32
}

// Doubt records n users denied because attribute could not be read.
func (s *Snapshot) Doubt(attribute string, n int) {
	if n == 0 {
		return
	}
	if s.Unreadable == nil {
		s.Unreadable = make(map[string]int)
	}
	s.Unreadable[attribute] += n
}

// Skip records n skipped objects under reason.
func (s *Snapshot) Skip(reason string, n int) {
	if n == 0 {
		return
	}
	if s.Skipped == nil {
		s.Skipped = make(map[string]int)
	}
	s.Skipped[reason] += n
}

// NormalizeDN returns the canonical form of a DN for comparison: ASCII
// letters of attribute types and values lower-cased and spaces around RDN
// separators removed. Escaped separators ("\,") are kept. It is not a full
// RFC 4514 parser; it is the comparison LDAP servers apply to the DNs they
// return.
//
// Only ASCII is folded (and only ASCII white space trimmed), as for emails
// (internal/mailaddr): Unicode case folding would let a group named with a
// look-alike letter (the Kelvin sign K folds to k, İ to i̇) take the binding
// of another group's DN. Non-ASCII characters compare exactly, so a binding
// must spell them as the directory does; a mismatch shows as a
// binding_not_found problem, never as another group's binding.
func NormalizeDN(dn string) string {
	if isNormalDN(dn) {
		return dn
	}
	return normalizeDN(dn)
}

// isNormalDN reports whether dn is its own normal form for a reason a
// single scan can see: no white space at either end, and no capital,
// space or escape anywhere (the DNs most servers send). A read normalises
// every DN it meets, group members included, so this is the common case.
func isNormalDN(dn string) bool {
	if dn == "" {
		return true
	}
	if isTrimmed(dn[0]) || isTrimmed(dn[len(dn)-1]) {
		return false
	}
	for i := 0; i < len(dn); i++ {
		if c := dn[i]; 'A' <= c && c <= 'Z' || c == ' ' || c == '\\' {
			return false
		}
	}
	return true
}

func isTrimmed(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// normalizeDN is NormalizeDN without the fast path.
func normalizeDN(dn string) string {
	s := strings.Trim(dn, " \t\n\r\v\f")
	var stack [256]byte
	b := stack[:0]
	// Multi-byte UTF-8 sequences hold no ASCII bytes, so a byte loop is
	// correct for any input: non-ASCII bytes are copied as they are.
	escaped, pendingSpace, atStart := false, false, true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		switch {
		case escaped:
			escaped = false
		case c == '\\':
			escaped = true
		case c == ',' || c == '=' || c == '+':
			pendingSpace = false
			b = append(b, c)
			atStart = true
			continue
		case c == ' ':
			if !atStart {
				pendingSpace = true
			}
			continue
		}
		if pendingSpace {
			b = append(b, ' ')
			pendingSpace = false
		}
		b = append(b, c)
		atStart = false
	}
	if string(b) == dn {
		return dn
	}
	return string(b)
}

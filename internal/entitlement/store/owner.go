package store

import (
	"bytes"
	"fmt"
	"strings"
)

// Ownership of user keys. A user key (accesscache.Keys.User) belongs to the
// account named by the "account" field of the decision it holds. Every
// writer (Redis, Fenced in both modes, Memory) applies one rule, checked
// atomically with the write of each key (inside the script that writes it,
// or under Memory's lock):
//
//   - a decision is written when the key is absent, holds the writing
//     account's decision, or the writing account claims the email's domain
//     (mapper.Change.ByInvitation false): claimed domains win, so an
//     enterprise takes a user over from a team that had invited them;
//   - a decision published by invitation (ByInvitation: a team, for an
//     email outside its claimed domains) never replaces another account's
//     decision: the change is refused, left out of the account's index
//     (removed from it if it was there) and of its change stream, and
//     reported in a *ConflictError once the rest of the publish is done;
//   - a removal deletes the key only when it holds the removing account's
//     decision (the email still leaves the removing account's index).

// Conflict is one change Apply refused because another account holds the
// email's user key.
type Conflict struct {
	Email string
	// Owner is the account whose decision the key holds.
	Owner string
}

// ConflictError is returned by Apply when it refused changes because
// other accounts hold their user keys. Every other change was published:
// it is a report, not a failed publish, and the refused emails are not in
// the account's index, so the next diff tries them again.
type ConflictError struct {
	Account   string
	Conflicts []Conflict
}

func (e *ConflictError) Error() string {
	const show = 5
	parts := make([]string, 0, min(len(e.Conflicts), show))
	for _, c := range e.Conflicts[:min(len(e.Conflicts), show)] {
		parts = append(parts, fmt.Sprintf("%s (held by %s)", c.Email, c.Owner))
	}
	more := ""
	if len(e.Conflicts) > show {
		more = fmt.Sprintf(" and %d more", len(e.Conflicts)-show)
	}
	return fmt.Sprintf("account %s publishes %d users only by invitation but another account, which claims their domain, holds their access-cache keys: %s%s; their keys keep that account's decision",
		e.Account, len(e.Conflicts), strings.Join(parts, ", "), more)
}

// conflictsOf returns nil or a *ConflictError for the refused changes.
func conflictsOf(account string, refused []Conflict) error {
	if len(refused) == 0 {
		return nil
	}
	return &ConflictError{Account: account, Conflicts: refused}
}

// ownerLua defines owner(v): the account of a cached decision value, or
// nil when there is no value or it names none. Account ids are
// [a-z0-9-]+ and the email before the field cannot hold an unescaped
// quote, so the first match is the decision's own "account" field.
const ownerLua = `
local function owner(v)
  if not v then return nil end
  local o = string.match(v, '"account":"([^"]*)"')
  if o == '' then return nil end
  return o
end
`

// ownerOf is ownerLua's owner in Go (Memory).
func ownerOf(v []byte) string {
	const field = `"account":"`
	i := bytes.Index(v, []byte(field))
	if i < 0 {
		return ""
	}
	rest := v[i+len(field):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// invitationArg is a change's ByInvitation as a script argument.
func invitationArg(byInvitation bool) string {
	if byInvitation {
		return "1"
	}
	return "0"
}

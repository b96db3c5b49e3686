// Package entitlement turns a directory snapshot into one access decision
// per user. Map is a pure function: no I/O, no clock, no globals.
//
// The Decision JSON is a public contract read by the sign-in service, the
// CLI and the HTTP API: field names and reason codes are only ever added.
package entitlement

import "time"

// Permission is the plan a user signs in with.
type Permission string

// Permissions. Pro beats Basic.
const (
	PermissionPro   Permission = "pro"
	PermissionBasic Permission = "basic"
	PermissionNone  Permission = "none"
)

// Reason says why a decision is what it is. Codes are stable.
type Reason string

// Reason codes, in the order the mapper applies its rules.
const (
	// ReasonDomainNotClaimed: the email's domain is not claimed by the
	// account. Such users are counted, not published.
	ReasonDomainNotClaimed Reason = "domain_not_claimed"
	ReasonSuspended        Reason = "suspended"
	ReasonInactive         Reason = "inactive"
	ReasonLockedOut        Reason = "locked_out"
	// ReasonDuplicateIdentity: several directory objects carry the email
	// and the directory does not say which one is its owner (two active
	// objects, or an active one and a disabled one that is not an old
	// account disabled before the active one was created). Denied with
	// permission none until one of them gives up the address.
	ReasonDuplicateIdentity Reason = "duplicate_identity"
	ReasonNotInAccessGroup  Reason = "not_in_access_group"
	ReasonGranted           Reason = "granted"
	ReasonNoPermission      Reason = "no_permission_group"
	// ReasonUnknownUser: no account holds the email.
	ReasonUnknownUser Reason = "unknown_user"

	// Console-managed accounts (directory type console; see
	// docs/console-accounts.md) add two codes. Both deny, with
	// permission none.
	//
	// ReasonInvitationPending: a team invited the email and the user has not
	// accepted yet.
	ReasonInvitationPending Reason = "invitation_pending"
	// ReasonRemovedFromTeam: a team administrator removed the user. The
	// person is no longer a member of the account (not in its member list)
	// and may use the service only as an unpaid individual, outside it.
	ReasonRemovedFromTeam Reason = "removed_from_team"
)

// Capabilities are what a permission lets a user do.
type Capabilities struct {
	HostMeetings   bool `json:"host_meetings"`
	AttendMeetings bool `json:"attend_meetings"`
	Chat           bool `json:"chat"`
}

// CapabilitiesOf returns the capabilities of a permission.
func CapabilitiesOf(p Permission) Capabilities {
	switch p {
	case PermissionPro:
		return Capabilities{HostMeetings: true, AttendMeetings: true, Chat: true}
	case PermissionBasic:
		return Capabilities{AttendMeetings: true, Chat: true}
	}
	return Capabilities{}
}

// Decision is whether one email may sign in, and with which plan.
type Decision struct {
	Email        string       `json:"email"`
	Account      string       `json:"account"`
	Allowed      bool         `json:"allowed"`
	Permission   Permission   `json:"permission"`
	Reason       Reason       `json:"reason"`
	Capabilities Capabilities `json:"capabilities"`
	// UserID is the stable directory identity (objectGUID, entryUUID, Okta id).
	UserID string `json:"user_id"`
	// Via lists the bound groups that granted the permission (empty when
	// denied).
	Via []string `json:"via"`
	// SyncedAt is when this decision took its current value.
	SyncedAt time.Time `json:"synced_at"`
	// Detail explains the decision (group paths, directory state). It is
	// stored in the cache so that an explanation reads what sign-in reads.
	Detail *Detail `json:"detail,omitempty"`
}

// Detail is the explanation behind a decision.
type Detail struct {
	// Rule names the mapper rule that decided, e.g. "directory status is
	// suspended" or "member of a group bound to pro".
	Rule string `json:"rule"`
	// DirectoryStatus is the user's state in the directory.
	DirectoryStatus string `json:"directory_status"`
	// ExpiresAt is the account expiry, when the directory sets one.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// InAccessGroup is set when the account has an access group.
	InAccessGroup *bool `json:"in_access_group,omitempty"`
	// Paths are group chains from a bound group down to a group the user is
	// a direct member of, one per bound group the user reaches.
	Paths []GroupPath `json:"paths,omitempty"`
	// DN is the user's entry in an LDAP directory.
	DN string `json:"dn,omitempty"`
	// Source names the directory snapshot the decision came from.
	Source string `json:"source,omitempty"`
}

// GroupPath is one chain of nested groups leading to a binding.
type GroupPath struct {
	Binding    string     `json:"binding"`
	Permission Permission `json:"permission"`
	Groups     []string   `json:"groups"`
}

// Denied returns the decision for an email no account holds.
func Denied(email string, reason Reason) Decision {
	return Decision{Email: email, Permission: PermissionNone, Reason: reason, Via: []string{}}
}

// BindingStat is one binding's reach in a snapshot.
type BindingStat struct {
	Group      string     `json:"group"`
	Permission Permission `json:"permission"`
	Found      bool       `json:"found"`
	Users      int        `json:"users"`
}

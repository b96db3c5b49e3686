// Package accesscache is the access cache as the sign-in service reads it:
// the Redis key layout, the account status record and the reader the
// sign-in service imports (Reader.Check). dirsync's writers live in its
// internal/entitlement/store. The package depends on go-redis, a JSON
// decoder and the decision types only (TestSignInClientDependencies).
//
// Key layout (schema v1; P is the configured key prefix, default "dirsync"):
//
//	P:v1:user:<email>                 STRING  decision JSON (one GET per sign-in)
//	P:v1:account:{<id>}:index         HASH    email → "<permission>|<allowed 0|1>|<fingerprint hex>"
//	P:v1:account:{<id>}:status        STRING  AccountStatus JSON (freshness, counts)
//	P:v1:account:{<id>}:changes       STREAM  one entry per published change
//
// A user key belongs to the account named by its decision's "account"
// field: dirsync's writers check it atomically with every write. An
// account that claims the email's domain replaces any other account's
// decision; a team's decision for an email outside its claimed domains
// (an invitation) never does; a removal deletes only the remover's own
// decision.
//
// Per-account keys share the hash tag {<id>} so they live in one Redis
// Cluster slot. Publishing writes only what changed, in small pipelines
// without MULTI, so a reader never waits on a publish and never sees an
// unchanged user vanish. A missing user key means no account holds the
// email: the decision is unknown_user. Callers must fail closed: any error
// from Check means deny.
package accesscache

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	fastjson "github.com/segmentio/encoding/json"

	"github.com/dirsync/dirsync/entitlement"
)

// SchemaVersion is the version in every key; a new version gets new keys.
const SchemaVersion = 1

// ErrUnavailable wraps every failure to reach or read the cache.
var ErrUnavailable = errors.New("access cache unavailable")

// Keys builds the key names for one prefix.
type Keys struct{ prefix string }

// NewKeys returns the key builder for prefix (default "dirsync" when empty).
func NewKeys(prefix string) Keys {
	if prefix == "" {
		prefix = "dirsync"
	}
	return Keys{prefix: fmt.Sprintf("%s:v%d:", prefix, SchemaVersion)}
}

// User is the key of one email's decision.
func (k Keys) User(email string) string { return k.prefix + "user:" + email }

// Index is the key of an account's published index.
func (k Keys) Index(account string) string { return k.prefix + "account:{" + account + "}:index" }

// Status is the key of an account's status record.
func (k Keys) Status(account string) string { return k.prefix + "account:{" + account + "}:status" }

// Changes is the key of an account's change stream.
func (k Keys) Changes(account string) string { return k.prefix + "account:{" + account + "}:changes" }

// AccountStatus is an account's status record: what was last published and
// when, so a reader can tell how fresh its answer is.
type AccountStatus struct {
	Account string `json:"account"`
	// Generation counts publishes that changed something.
	Generation int64 `json:"generation"`
	// LastSyncAt is the end of the last successful sync (any mode).
	LastSyncAt time.Time `json:"last_sync_at"`
	// LastFullSyncAt is the end of the last successful full sync.
	LastFullSyncAt time.Time `json:"last_full_sync_at"`
	// Users counts published decisions by permission and by reason.
	Users        int                            `json:"users"`
	ByPermission map[entitlement.Permission]int `json:"by_permission"`
	ByReason     map[entitlement.Reason]int     `json:"by_reason"`
	Bindings     []entitlement.BindingStat      `json:"bindings,omitempty"`
	Source       string                         `json:"source,omitempty"`
	Hold         *Hold                          `json:"hold,omitempty"`
	Extra        map[string]json.RawMessage     `json:"extra,omitempty"`
}

// Hold kinds: why a sync was held.
const (
	// HoldSafeguard: the sync would take access away from more users than
	// the account's safeguard allows.
	HoldSafeguard = "safeguard"
	// HoldLostGroup: a bound group that had members is gone or empty in
	// the read (a rename, a wrong binding, a partial read).
	HoldLostGroup = "lost_group"
	// HoldEmptyRead: the directory returned no users at all while users
	// are published.
	HoldEmptyRead = "empty_read"
)

// Hold records a sync that was not published whole. Account-state denials
// (suspended, inactive, locked out) found by the same read are published
// anyway; the rest waits for a release or for a later sync that no longer
// trips the check.
type Hold struct {
	// Kind is HoldSafeguard, HoldLostGroup or HoldEmptyRead (records
	// written before kinds existed have none: a safeguard hold).
	Kind string `json:"kind,omitempty"`
	// Groups are the bound groups a lost_group hold lost.
	Groups     []string  `json:"groups,omitempty"`
	Since      time.Time `json:"since"`
	LostAccess int       `json:"lost_access"`
	Allowed    int       `json:"previously_allowed"`
	Downgrades int       `json:"downgrades"`
	Reason     string    `json:"reason"`
}

// DecodeDecision parses a cached value, rejecting one that is not a whole
// decision (so a torn or foreign value is never read as "allowed"). It is
// on every sign-in's path, so it decodes with segmentio/encoding/json, a
// drop-in for encoding/json about four times faster on a decision (1.6
// against 6.2 µs, a seventh of a loopback GET); FuzzDecodeDecision checks
// the two agree on every input.
func DecodeDecision(b []byte) (entitlement.Decision, error) {
	var d entitlement.Decision
	if err := fastjson.Unmarshal(b, &d); err != nil {
		return entitlement.Decision{}, fmt.Errorf("decode cached decision: %w", err)
	}
	if d.Email == "" || d.Reason == "" || d.Permission == "" {
		return entitlement.Decision{}, fmt.Errorf("decode cached decision: incomplete value")
	}
	if d.Via == nil {
		d.Via = []string{}
	}
	return d, nil
}

// Lease is the key of an account's ownership lease.
func (k Keys) Lease(account string) string { return k.prefix + "account:{" + account + "}:lease" }

// Fence is the key of an account's current fencing token.
func (k Keys) Fence(account string) string { return k.prefix + "account:{" + account + "}:fence" }

// Replicas is the key of the set of live replicas.
func (k Keys) Replicas() string { return k.prefix + "replicas" }

// UserFence is the per-key fencing stamp of an email's decision. Its hash
// tag is the whole user key, so it lives in the user key's Cluster slot.
func (k Keys) UserFence(email string) string {
	return k.prefix + "userfence:{" + k.User(email) + "}"
}

// DecodeDecisionFor decodes the value cached under the key of email (a
// normalised address) and refuses a value whose own email is not that
// address: a decision must never answer for another user's key, whatever
// wrote it there.
func DecodeDecisionFor(b []byte, email string) (entitlement.Decision, error) {
	d, err := DecodeDecision(b)
	if err != nil {
		return d, err
	}
	if d.Email != email {
		return entitlement.Decision{}, fmt.Errorf("decode cached decision: the value under the key of %q is %q's", email, d.Email)
	}
	return d, nil
}

package directory

import (
	"context"

	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/pgstore"
)

// Source is a polled directory: it reads complete snapshots and counts
// what it asks of the directory.
type Source interface {
	// Snapshot reads the whole directory: a complete snapshot or an
	// error, never a partial one. A returned snapshot is never changed
	// afterwards (the engine keeps its groups for the group picker).
	Snapshot(ctx context.Context) (*Snapshot, error)
	// Stats returns the source's counters; safe during a read.
	Stats() SourceStats
}

// SourceStats are a source's own counters since it was created, exported
// as metrics (dirsync_directory_requests_total and its neighbours).
type SourceStats struct {
	// Requests sent to the directory: Okta HTTP requests (retries
	// included); LDAP binds, StartTLS and search requests (one per page);
	// reads of an LDIF file.
	Requests int64
	// RateLimited counts requests the directory refused for its rate
	// limit (HTTP 429).
	RateLimited int64
	// RateLimitRemaining is the last remaining rate-limit budget the
	// directory reported; negative when it reported none.
	RateLimitRemaining int64
	// EntriesRead counts directory entries received; negative when the
	// source does not count them.
	EntriesRead int64
}

// EventHook is the credential of an account's Okta event hook
// deliveries: Okta sends Secret in the Header request header.
type EventHook struct {
	Header string
	Secret string
	// Source names the config field the secret came from, e.g.
	// directory.okta.event_hook_secret_file.
	Source string
}

// Kind is the one registration of a kind of directory source: its config
// section (section type, defaults, validation) and how an account's
// source is built from it. The build's kinds are listed in one table
// (package sources); adding a kind is a new package and one line there.
type Kind struct {
	// Config is the kind as the config schema sees it (see
	// config.NewSourceKind).
	Config config.SourceKind
	// Open builds the source of a validated account whose directory.type
	// is one of the kind's types; getenv resolves *_env secrets. It does
	// not contact the directory.
	Open func(a *config.Account, getenv func(string) string) (Source, error)
	// OpenStored is set instead of Open by a kind whose directory data
	// dirsync keeps in its own PostgreSQL database (its config section
	// sets Database; scim): it builds the account's source on that
	// database (console.postgres_dsn), bringing the kind's tables up to
	// date within ctx.
	OpenStored func(ctx context.Context, a *config.Account, db pgstore.DB) (Source, error)
	// Endpoints, when set, returns the hosts the account's source connects
	// to (checked against the network policy when an account is created
	// through the API). A kind without it connects nowhere.
	Endpoints func(a *config.Account) []string
	// EventHook, when set, returns the account's event hook credential;
	// ok is false when the account accepts no event hooks. Optional.
	EventHook func(a *config.Account, getenv func(string) string) (hook EventHook, ok bool, err error)
}

// ConfigKinds returns the config side of kinds, for config.Load and
// config.Parse.
func ConfigKinds(kinds []Kind) []config.SourceKind {
	out := make([]config.SourceKind, len(kinds))
	for i, k := range kinds {
		out[i] = k.Config
	}
	return out
}

// KindOf returns the kind that serves directory type typ.
func KindOf(kinds []Kind, typ string) (Kind, bool) {
	for _, k := range kinds {
		for _, t := range k.Config.Types() {
			if t == typ {
				return k, true
			}
		}
	}
	return Kind{}, false
}

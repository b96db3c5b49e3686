package scim

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dirsync/dirsync/internal/directory"
)

// SourceName is the Snapshot.Source of SCIM accounts.
const SourceName = "scim"

// Source is one SCIM account as the sync engine reads it (engine.Source
// and engine.IncrementalSource). It keeps a mirror of what the snapshot
// needs of each user (id, sign-in email, active) and group (id, name,
// member ids): a full Snapshot reloads it from PostgreSQL; Incremental
// reads only the rows whose version is above the last one seen, one cheap
// query when nothing changed, so that a pass triggered by a push costs a
// few rows plus rebuilding the snapshot from memory.
//
// The engine calls it for one pass at a time; the mutex only guards
// against misuse.
type Source struct {
	store   *Store
	account string
	now     func() time.Time

	requests, entries atomic.Int64

	mu       sync.Mutex
	loaded   bool
	loadedAt time.Time
	seq      int64
	users    map[string]mirrorUser
	groups   map[string]*mirrorGroup
	snap     *directory.Snapshot
}

type mirrorUser struct {
	email  string
	active bool
}

type mirrorGroup struct {
	name    string
	members []Member
}

// Source returns the engine's source of account.
func (s *Store) Source(account string) *Source {
	return &Source{store: s, account: account, now: s.now}
}

// Cause is the access history's cause of the changes a pass of this
// source publishes: an identity provider's SCIM push.
func (src *Source) Cause() string { return "scim" }

// Stats counts the reads of PostgreSQL (one per Snapshot or Incremental)
// and the user and group rows they returned.
func (src *Source) Stats() directory.SourceStats {
	return directory.SourceStats{Requests: src.requests.Load(), RateLimitRemaining: -1, EntriesRead: src.entries.Load()}
}

// Snapshot reads the whole account from PostgreSQL.
func (src *Source) Snapshot(ctx context.Context) (*directory.Snapshot, error) {
	src.mu.Lock()
	defer src.mu.Unlock()
	if err := src.store.purgeTombstones(ctx, src.account); err != nil {
		return nil, err
	}
	d, err := src.changes(ctx, -1)
	if err != nil {
		return nil, err
	}
	src.users = make(map[string]mirrorUser, len(d.users))
	src.groups = make(map[string]*mirrorGroup, len(d.groups))
	src.apply(d)
	src.loaded, src.loadedAt = true, src.now()
	src.snap = src.build()
	return src.snap, nil
}

// Incremental brings the mirror up to date with the writes committed
// since the last read and reports whether anything changed.
func (src *Source) Incremental(ctx context.Context) (*directory.Snapshot, bool, error) {
	src.mu.Lock()
	loaded, stale := src.loaded, src.now().Sub(src.loadedAt) > tombstoneRetention/2
	src.mu.Unlock()
	if !loaded || stale {
		snap, err := src.Snapshot(ctx)
		return snap, true, err
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	d, err := src.changes(ctx, src.seq)
	if err != nil {
		return nil, false, err
	}
	if d == nil {
		return src.snap, false, nil
	}
	src.apply(d)
	src.snap = src.build()
	return src.snap, true, nil
}

// changes reads the account's rows above version since, counting them.
func (src *Source) changes(ctx context.Context, since int64) (*delta, error) {
	src.requests.Add(1)
	d, err := src.store.changes(ctx, src.account, since)
	if d != nil {
		src.entries.Add(int64(len(d.users) + len(d.groups)))
	}
	return d, err
}

// apply merges a delta into the mirror.
func (src *Source) apply(d *delta) {
	for _, u := range d.users {
		if u.deleted {
			delete(src.users, u.id)
		} else {
			src.users[u.id] = mirrorUser{email: u.email, active: u.active}
		}
	}
	for _, g := range d.groups {
		if g.deleted {
			delete(src.groups, g.id)
			continue
		}
		src.groups[g.id] = &mirrorGroup{name: g.name, members: d.members[g.id]}
	}
	src.seq = d.seq
}

// build makes the snapshot from the mirror.
func (src *Source) build() *directory.Snapshot {
	snap := &directory.Snapshot{Source: SourceName, FetchedAt: src.now().UTC(),
		Users: make([]directory.User, 0, len(src.users)), Groups: make([]directory.Group, 0, len(src.groups))}
	ids := make([]string, 0, len(src.users))
	for id := range src.users {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	userIndex := make(map[string]int32, len(ids))
	noEmail := 0
	for _, id := range ids {
		u := src.users[id]
		if u.email == "" {
			noEmail++
			continue
		}
		status := directory.StatusActive
		if !u.active {
			status = directory.StatusSuspended
		}
		userIndex[id] = int32(len(snap.Users))
		snap.Users = append(snap.Users, directory.User{ID: id, Email: u.email, Status: status})
	}
	snap.Skip("no_email", noEmail)
	gids := make([]string, 0, len(src.groups))
	for id := range src.groups {
		gids = append(gids, id)
	}
	slices.Sort(gids)
	groupIndex := make(map[string]int32, len(gids))
	for i, id := range gids {
		groupIndex[id] = int32(i)
	}
	unresolved := 0
	for _, id := range gids {
		g := src.groups[id]
		grp := directory.Group{Ref: id, Name: g.name}
		for _, m := range g.members {
			if i, ok := userIndex[m.ID]; ok && m.Type == userType.Name {
				grp.Members = append(grp.Members, i)
			} else if i, ok := groupIndex[m.ID]; ok && m.Type == groupType.Name {
				grp.Subgroups = append(grp.Subgroups, i)
			} else if _, known := src.users[m.ID]; !known {
				unresolved++ // a row for a resource not (yet) in the mirror
			}
		}
		snap.Groups = append(snap.Groups, grp)
	}
	snap.Skip("unresolved_member", unresolved)
	return snap
}

// delta is what changed in an account above a version (or, for a full
// read, everything live).
type delta struct {
	seq    int64
	users  []userRow
	groups []groupRow
	// members of every live group in groups.
	members map[string][]Member
}

type userRow struct {
	id, email       string
	active, deleted bool
}

type groupRow struct {
	id, name string
	deleted  bool
}

// changes reads the rows of account whose version is above since (since
// < 0: every live row) in one REPEATABLE READ snapshot, so the rows and
// the account's seq agree. It returns nil when nothing changed.
func (s *Store) changes(ctx context.Context, account string, since int64) (*delta, error) {
	var d *delta
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var seq int64
		err := tx.QueryRow(ctx, `SELECT coalesce((SELECT seq FROM scim_accounts WHERE account_id = $1), 0)`, account).Scan(&seq)
		if err != nil {
			return err
		}
		if since >= 0 && seq == since {
			return nil
		}
		d = &delta{seq: seq, members: map[string][]Member{}}
		live := ""
		if since < 0 {
			live = " AND NOT deleted"
		}
		rows, err := tx.Query(ctx, `SELECT id::text, email, active, deleted FROM scim_users WHERE account_id = $1 AND version > $2`+live, account, since)
		if err != nil {
			return err
		}
		d.users, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (userRow, error) {
			var u userRow
			return u, row.Scan(&u.id, &u.email, &u.active, &u.deleted)
		})
		if err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `SELECT id::text, display_name, deleted FROM scim_groups WHERE account_id = $1 AND version > $2`+live, account, since)
		if err != nil {
			return err
		}
		d.groups, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (groupRow, error) {
			var g groupRow
			return g, row.Scan(&g.id, &g.name, &g.deleted)
		})
		if err != nil {
			return err
		}
		var ids []string
		for _, g := range d.groups {
			if !g.deleted {
				ids = append(ids, g.id)
			}
		}
		if len(ids) == 0 {
			return nil
		}
		d.members, err = membersOfGroups(ctx, tx, account, ids)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read SCIM account %s: %w", account, err)
	}
	return d, nil
}

// purgeTombstones drops deletions older than tombstoneRetention.
func (s *Store) purgeTombstones(ctx context.Context, account string) error {
	cut := s.now().Add(-tombstoneRetention)
	for _, tbl := range []string{"scim_users", "scim_groups"} {
		if _, err := s.pool.Exec(ctx, `DELETE FROM `+tbl+` WHERE account_id = $1 AND deleted AND updated_at < $2`, account, cut); err != nil {
			return fmt.Errorf("purge deleted SCIM resources of %s: %w", account, err)
		}
	}
	return nil
}

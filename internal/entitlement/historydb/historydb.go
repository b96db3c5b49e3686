// Package historydb stores the access history (package history) in
// PostgreSQL: one row per published change, written in bulk with COPY,
// read per user newest first, pruned by age.
package historydb

import (
	"context"
	"embed"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/entitlement/history"
	"github.com/dirsync/dirsync/internal/pgstore"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Store is the access_history table.
type Store struct {
	pool *pgxpool.Pool
}

// Open migrates the history's tables and returns the store.
func Open(ctx context.Context, pool *pgxpool.Pool) (*Store, error) {
	if err := pgstore.Migrate(ctx, pool, pgstore.Schema{Table: "history_schema_migrations", Lock: 1, Files: migrationFiles, Dir: "migrations"}); err != nil {
		return nil, fmt.Errorf("access history: migrate: %w", err)
	}
	return &Store{pool: pool}, nil
}

var columns = []string{"at", "account_id", "email", "old_allowed", "old_permission", "new_allowed", "new_permission", "reason", "cause", "actor"}

// Record appends entries.
func (s *Store) Record(ctx context.Context, entries []history.Entry) error {
	rows := make([][]any, len(entries))
	for i, e := range entries {
		rows[i] = []any{e.At, e.Account, e.Email, e.OldAllowed, string(e.OldPermission), e.NewAllowed, string(e.NewPermission), string(e.Reason), e.Cause, e.Actor}
	}
	if _, err := s.pool.CopyFrom(ctx, pgx.Identifier{"access_history"}, columns, pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("access history: write %d entries: %w", len(entries), err)
	}
	return nil
}

// User returns an account user's history, newest first: at most limit
// entries (1..1000) with an id below before (0: from the newest).
func (s *Store) User(ctx context.Context, account, email string, limit int, before int64) ([]history.Entry, error) {
	limit = min(max(limit, 1), 1000)
	if before <= 0 {
		before = 1<<63 - 1
	}
	rows, err := s.pool.Query(ctx, `SELECT id, at, account_id, email, old_allowed, old_permission, new_allowed, new_permission, reason, cause, actor
		FROM access_history WHERE account_id = $1 AND email = $2 AND id < $3 ORDER BY id DESC LIMIT $4`, account, email, before, limit)
	if err != nil {
		return nil, fmt.Errorf("access history: read: %w", err)
	}
	out := []history.Entry{}
	for rows.Next() {
		var e history.Entry
		var oldP, newP, reason string
		if err := rows.Scan(&e.ID, &e.At, &e.Account, &e.Email, &e.OldAllowed, &oldP, &e.NewAllowed, &newP, &reason, &e.Cause, &e.Actor); err != nil {
			return nil, fmt.Errorf("access history: read: %w", err)
		}
		e.At = e.At.UTC()
		e.OldPermission, e.NewPermission, e.Reason = entitlement.Permission(oldP), entitlement.Permission(newP), entitlement.Reason(reason)
		out = append(out, e)
	}
	return out, rows.Err()
}

// Prune deletes entries older than cutoff, in batches, and returns how
// many it deleted.
func (s *Store) Prune(ctx context.Context, cutoff time.Time) (int64, error) {
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, `DELETE FROM access_history WHERE id IN
			(SELECT id FROM access_history WHERE at < $1 ORDER BY at LIMIT 10000)`, cutoff)
		if err != nil {
			return total, fmt.Errorf("access history: prune: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 10000 {
			return total, nil
		}
	}
}

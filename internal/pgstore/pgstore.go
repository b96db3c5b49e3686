// Package pgstore is dirsync's access to its PostgreSQL database (the
// system of record of console accounts, the access history, and accounts
// and tokens created through the API): one pool, and schema migrations
// that every component owning tables runs the same way.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// LockNamespace is the first key of every advisory lock dirsync takes
// ("dirs"); the second says what is locked (Schema.Lock for migrations).
const LockNamespace = 0x64697273

// DB is dirsync's database as it is handed through code that must not
// depend on the driver (a directory source kind that keeps its data in
// the database, see directory.Kind.OpenStored): only the packages that own
// tables use Pool.
type DB struct {
	Pool *pgxpool.Pool
}

// Connect opens a pool on dsn (a secret: it never appears in errors).
func Connect(ctx context.Context, dsn string, maxConns int) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx echoes the DSN (and its password) in parse errors.
		return nil, errors.New("postgres DSN is not a valid connection string (postgres://user:password@host:5432/db?sslmode=...)")
	}
	if maxConns > 0 {
		cfg.MaxConns = int32(maxConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	return pool, nil
}

// InTx runs fn in a transaction: committed when fn returns nil, rolled
// back otherwise (or when fn panics).
func InTx(ctx context.Context, pool *pgxpool.Pool, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, pool, fn)
}

// Schema is one component's tables: numbered SQL files ("0001_name.sql")
// applied in order and recorded in Table.
type Schema struct {
	// Table records the applied versions, e.g. console_schema_migrations.
	Table string
	// Lock is the second key of the advisory lock migrations run under;
	// each component has its own.
	Lock int32
	// Files holds the SQL files in Dir.
	Files fs.FS
	Dir   string
}

type migration struct {
	version int
	name    string
	sql     string
}

func (s Schema) migrations() ([]migration, error) {
	entries, err := fs.ReadDir(s.Files, s.Dir)
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s: name must start with a number and _", e.Name())
		}
		b, err := fs.ReadFile(s.Files, s.Dir+"/"+e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(b)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no migrations in %s", s.Dir)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// Migrate brings s up to date in one transaction, under an advisory lock so
// that replicas starting together apply each migration once. It refuses a
// database migrated by a newer dirsync.
func Migrate(ctx context.Context, pool *pgxpool.Pool, s Schema) error {
	all, err := s.migrations()
	if err != nil {
		return err
	}
	table := pgx.Identifier{s.Table}.Sanitize()
	return InTx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, $2)", LockNamespace, s.Lock); err != nil {
			return fmt.Errorf("lock migrations: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+table+` (
			version    integer     PRIMARY KEY,
			name       text        NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("create %s: %w", s.Table, err)
		}
		var current int
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+table).Scan(&current); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if latest := all[len(all)-1].version; current > latest {
			return fmt.Errorf("database schema version %d (%s) is newer than this dirsync knows (%d): upgrade dirsync", current, s.Table, latest)
		}
		for _, m := range all {
			if m.version <= current {
				continue
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO "+table+" (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
				return fmt.Errorf("record migration %s: %w", m.name, err)
			}
		}
		return nil
	})
}

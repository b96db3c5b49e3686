package console

import (
	"context"
	"embed"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dirsync/dirsync/internal/pgstore"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// lockNamespace is the first key of every advisory lock dirsync takes;
// the console's second keys are 0 for migrations and hashtext(account id)
// for an account's actions.
const lockNamespace = pgstore.LockNamespace

// Migrate brings the console's tables up to date (see pgstore.Migrate).
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return pgstore.Migrate(ctx, pool, pgstore.Schema{Table: "console_schema_migrations", Lock: 0, Files: migrationFiles, Dir: "migrations"})
}

package servertest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestPostgresKeepsDataAcrossRestarts proves the harness gives a working
// private server whose data survives a crash and a clean restart.
func TestPostgresKeepsDataAcrossRestarts(t *testing.T) {
	p := StartPostgres(t)
	ctx := context.Background()
	exec := func(sql string) {
		t.Helper()
		c, err := pgx.Connect(ctx, p.DatabaseDSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int {
		t.Helper()
		c, err := pgx.Connect(ctx, p.DatabaseDSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM kept").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	exec("CREATE TABLE kept (a int); INSERT INTO kept VALUES (1), (2)")
	p.Crash(t)
	if n := count(); n != 2 {
		t.Fatalf("after a crash: %d rows, want 2", n)
	}
	exec("INSERT INTO kept VALUES (3)")
	p.Restart(t)
	if n := count(); n != 3 {
		t.Fatalf("after a restart: %d rows, want 3", n)
	}
}

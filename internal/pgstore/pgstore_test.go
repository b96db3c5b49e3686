package pgstore

import (
	"context"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

func TestMigrate(t *testing.T) {
	pg := servertest.StartPostgres(t)
	ctx := context.Background()
	pool, err := Connect(ctx, pg.CreateDatabase(t), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	v1 := fstest.MapFS{"m/0001_a.sql": {Data: []byte("CREATE TABLE a (x int);")}}
	s := Schema{Table: "test_schema_migrations", Lock: 99, Files: v1, Dir: "m"}
	for range 2 { // idempotent
		if err := Migrate(ctx, pool, s); err != nil {
			t.Fatal(err)
		}
	}
	v2 := fstest.MapFS{
		"m/0001_a.sql": {Data: []byte("CREATE TABLE a (x int);")},
		"m/0002_b.sql": {Data: []byte("ALTER TABLE a ADD COLUMN y int;")},
	}
	s.Files = v2
	if err := Migrate(ctx, pool, s); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "INSERT INTO a (x, y) VALUES (1, 2)"); err != nil {
		t.Fatalf("migration 2 not applied: %v", err)
	}
	s.Files = v1 // an older dirsync
	if err := Migrate(ctx, pool, s); err == nil || !strings.Contains(err.Error(), "newer than this dirsync knows") {
		t.Errorf("an older binary on a newer schema: %v", err)
	}
	bad := fstest.MapFS{"m/first.sql": {Data: []byte("SELECT 1")}}
	if err := Migrate(ctx, pool, Schema{Table: "t2", Files: bad, Dir: "m"}); err == nil {
		t.Error("an unnumbered migration accepted")
	}
	if _, err := Connect(ctx, "postgres://u:s3cret@@host/db?bad=%zz", 1); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("bad DSN: %v (must not echo the password)", err)
	}
}

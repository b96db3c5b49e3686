package lease

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

func TestAcquireAll(t *testing.T) {
	srv := servertest.StartRedis(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	ctx := context.Background()

	a, err := AcquireAll(ctx, c, "p", "cli-a", []string{"x", "y"}, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tokX, ok := a.Token("x")
	if !ok || Seq(tokX) != 1 {
		t.Fatalf("token x = %q %t", tokX, ok)
	}
	// A second writer gets nothing while the first holds any account, and
	// takes nothing (y stays free of it).
	if _, err := AcquireAll(ctx, c, "p", "cli-b", []string{"z", "x"}, 3*time.Second); !errors.Is(err, ErrLeased) {
		t.Fatalf("second writer: err = %v; want ErrLeased", err)
	}
	if n, _ := c.Exists(ctx, "p:v1:account:{z}:lease").Result(); n != 0 {
		t.Error("a refused writer kept the lease it had taken")
	}
	// Renewal keeps the lease past its period.
	time.Sleep(4 * time.Second)
	if _, ok := a.Token("x"); !ok {
		t.Error("lease lost although renewed")
	}
	a.Release(ctx)
	b, err := AcquireAll(ctx, c, "p", "cli-b", []string{"x"}, 3*time.Second)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	defer b.Release(ctx)
	if tok, _ := b.Token("x"); Seq(tok) != 2 {
		t.Errorf("fence did not advance: %q", tok)
	}
}

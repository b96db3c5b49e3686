package accesscache_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/sync/servertest"
)

// TestRedisCluster runs the writer, fenced writer, reader and change
// stream contracts on a real three-master Redis Cluster, through the client
// the config builds for several addresses (go-redis UniversalClient): user
// keys spread over every master, account keys share one slot ({id}).
func TestRedisCluster(t *testing.T) {
	cl := servertest.StartRedisCluster(t, 3)
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: cl.Addrs})
	t.Cleanup(func() { c.Close() })
	cc, ok := c.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("UniversalClient for %d addresses is a %T, not a cluster client", len(cl.Addrs), c)
	}
	ctx := context.Background()
	flush := func(t *testing.T) {
		t.Helper()
		if err := cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return n.FlushAll(ctx).Err() }); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("writer", func(t *testing.T) {
		flush(t)
		conformance(t, accesscache.NewRedis(c, "test"))
	})
	t.Run("fenced writer", func(t *testing.T) {
		flush(t)
		// FenceAuto picks the per-key mode for a cluster client; the atomic
		// mode's one script over every key would fail with CROSSSLOT.
		fencedConformance(t, accesscache.NewRedis(c, "test"), c, accesscache.FenceAuto)
	})
	t.Run("fenced writer refuses a stale token", func(t *testing.T) {
		flush(t)
		w := accesscache.NewRedis(c, "test")
		keys := accesscache.NewKeys("test")
		c.Set(ctx, keys.Fence("acme"), "2|new", 0)
		stale := accesscache.NewFenced(w, &tokens{m: map[string]string{"acme": "1|old"}}, accesscache.FenceAuto)
		ch := entitlement.Diff(nil, []entitlement.Decision{decision("acme", "alice@acme.example", entitlement.PermissionPro)})
		if err := stale.Apply(ctx, "acme", ch.Changes, time.Now()); err == nil {
			t.Fatal("a stale token published")
		}
		if d, _ := w.Check(ctx, "alice@acme.example"); d.Allowed {
			t.Fatalf("alice = %+v after a refused publish", d)
		}
	})
	t.Run("readers never see unchanged users vanish", func(t *testing.T) {
		flush(t)
		readersNeverSeeUnchangedUsersVanish(t, accesscache.NewRedis(c, "test"), c)
		// 2,000 users: every master must hold some, or this was not a
		// cluster test.
		err := cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			if size := n.DBSize(ctx).Val(); size == 0 {
				t.Errorf("master %s holds no key", n.Options().Addr)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("change stream", func(t *testing.T) {
		flush(t)
		changeStream(t, accesscache.NewRedis(c, "test"), c)
	})
}

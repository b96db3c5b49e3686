package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/store"

	"github.com/dirsync/dirsync/internal/entitlement/mapper"

	"github.com/redis/go-redis/v9"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
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

	// FenceAuto picks the per-key mode for a cluster client; the atomic
	// mode's one script over every key would fail with CROSSSLOT.
	writerContracts(t, c, flush)
	t.Run("fenced writer refuses a stale token", func(t *testing.T) {
		flush(t)
		w := store.NewRedis(c, "test")
		keys := accesscache.NewKeys("test")
		c.Set(ctx, keys.Fence("acme"), "2|new", 0)
		stale := store.NewFenced(w, &tokens{m: map[string]string{"acme": "1|old"}}, store.FenceAuto)
		ch := mapper.Diff(nil, []entitlement.Decision{decision("acme", "alice@acme.example", entitlement.PermissionPro)})
		if err := stale.Apply(ctx, "acme", ch.Changes, time.Now()); err == nil {
			t.Fatal("a stale token published")
		}
		if d, _ := w.Check(ctx, "alice@acme.example"); d.Allowed {
			t.Fatalf("alice = %+v after a refused publish", d)
		}
	})
	t.Run("a refused stamp fails the batch", func(t *testing.T) {
		flush(t)
		refusedStampFailsTheBatch(t, c, store.FenceAuto)
	})
	t.Run("readers never see unchanged users vanish", func(t *testing.T) {
		flush(t)
		readersNeverSeeUnchangedUsersVanish(t, store.NewRedis(c, "test"), c)
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
		changeStream(t, store.NewRedis(c, "test"), c)
	})
}

// TestRedisSentinel runs the same contracts through Sentinel (one address
// and a master name: go-redis's failover client), then fails the master
// over to its replica: published decisions survive, and the writer and
// readers follow the new master without being rebuilt.
func TestRedisSentinel(t *testing.T) {
	s := servertest.StartRedisSentinel(t)
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{s.SentinelAddr}, MasterName: s.MasterName})
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	flush := func(t *testing.T) {
		t.Helper()
		if err := c.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	writerContracts(t, c, flush)
	t.Run("failover", func(t *testing.T) {
		flush(t)
		w := store.NewRedis(c, "test")
		alice := decision("acme", "alice@acme.example", entitlement.PermissionPro)
		bob := decision("acme", "bob@acme.example", entitlement.PermissionBasic)
		publish(t, w, "acme", alice, bob)
		// Replication is asynchronous: wait until the replica has it, as a
		// failover that loses unreplicated writes is Redis's, not ours.
		if n, err := c.Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
			t.Fatalf("WAIT = %d, %v", n, err)
		}
		s.Failover(t)
		var got entitlement.Decision
		var err error
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err = w.Check(ctx, "alice@acme.example")
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil || got.Permission != entitlement.PermissionPro {
			t.Fatalf("alice after failover = %+v, %v", got, err)
		}
		bobSusp := decision("acme", "bob@acme.example", entitlement.PermissionNone)
		publish(t, w, "acme", alice, bobSusp)
		if got, err := w.Check(ctx, "bob@acme.example"); err != nil || got.Allowed || got.Reason != entitlement.ReasonSuspended {
			t.Fatalf("bob suspended after failover = %+v, %v", got, err)
		}
		m := redis.NewClient(&redis.Options{Addr: s.ReplicaAddr})
		defer m.Close()
		if role := m.Do(ctx, "ROLE").Val(); role == nil || role.([]any)[0] != "master" {
			t.Fatalf("the replica's role after failover is %v", role)
		}
	})
}

// writerContracts runs the writer and fenced writer (FenceAuto, the mode
// the daemon picks) conformance and ownership sequences on c, flushing
// before each.
func writerContracts(t *testing.T, c redis.UniversalClient, flush func(*testing.T)) {
	t.Run("writer", func(t *testing.T) {
		flush(t)
		conformance(t, store.NewRedis(c, "test"))
	})
	t.Run("fenced writer", func(t *testing.T) {
		flush(t)
		fencedConformance(t, store.NewRedis(c, "test"), c, store.FenceAuto)
	})
	t.Run("ownership", func(t *testing.T) {
		flush(t)
		ownershipContract(t, store.NewRedis(c, "test"), streamLenOf(c))
	})
	t.Run("fenced ownership", func(t *testing.T) {
		flush(t)
		ownershipContract(t, fencedFor(t, store.NewRedis(c, "test"), c, store.FenceAuto, "crew", "acme"), streamLenOf(c))
	})
}

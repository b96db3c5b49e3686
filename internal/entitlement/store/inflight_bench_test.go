package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/entitlement/mapper"
	"github.com/dirsync/dirsync/internal/entitlement/store"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// BenchmarkPublishInFlight: a first publish of 20,000 decisions by the
// fenced writer (what the daemon and dirsync sync publish with) with 1, 2
// and 4 batches executing at once, on a standalone redis-server and on a
// three-master Cluster (issue 16: do parallel connections shorten the
// publish?). Reported, never asserted: `go test -run '^$' -bench
// PublishInFlight ./internal/entitlement/store/`.
func BenchmarkPublishInFlight(b *testing.B) {
	const n = 20_000
	changes := make([]mapper.Change, n)
	for i := range changes {
		d := decision("acme", fmt.Sprintf("u%06d@acme.example", i), entitlement.PermissionPro)
		changes[i] = mapper.Change{Email: d.Email, New: &d, Next: mapper.PublishedOf(&d)}
	}
	topologies := []struct {
		name   string
		client func(b *testing.B) redis.UniversalClient
	}{
		{"standalone", func(b *testing.B) redis.UniversalClient {
			srv := servertest.StartRedis(b)
			return redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{srv.Addr}})
		}},
		{"cluster", func(b *testing.B) redis.UniversalClient {
			cl := servertest.StartRedisCluster(b, 3)
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs})
		}},
	}
	for _, topo := range topologies {
		b.Run(topo.name, func(b *testing.B) {
			c := topo.client(b)
			defer c.Close()
			ctx := context.Background()
			keys := accesscache.NewKeys("bench")
			for _, depth := range []int{1, 2, 4} {
				b.Run(fmt.Sprintf("in_flight=%d", depth), func(b *testing.B) {
					for b.Loop() {
						b.StopTimer()
						if err := flushAll(ctx, c); err != nil {
							b.Fatal(err)
						}
						if err := c.Set(ctx, keys.Fence("acme"), "1|bench#1|n", 0).Err(); err != nil {
							b.Fatal(err)
						}
						w := store.NewRedis(c, "bench")
						w.SetInFlight(depth)
						f := store.NewFenced(w, &tokens{m: map[string]string{"acme": "1|bench#1|n"}}, store.FenceAuto)
						b.StartTimer()
						if err := f.Apply(ctx, "acme", changes, time.Now()); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/publish")
				})
			}
		})
	}
}

// flushAll empties a standalone server or every master of a Cluster.
func flushAll(ctx context.Context, c redis.UniversalClient) error {
	if cc, ok := c.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, s *redis.Client) error { return s.FlushAll(ctx).Err() })
	}
	return c.FlushAll(ctx).Err()
}

package servertest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a private Redis Cluster of masters (no replicas) on
// loopback ports, the 16384 slots split evenly between them.
type RedisCluster struct {
	Addrs    []string
	busPorts []int // each node's cluster bus port, by Addrs index
	procs    []*Process
}

// StartRedisCluster starts a cluster of n masters (n ≥ 3, Redis's minimum
// for a cluster); it is stopped when t ends.
func StartRedisCluster(t testing.TB, n int) *RedisCluster {
	t.Helper()
	bin := Require(t, "redis-server", "redis-server")
	c := &RedisCluster{}
	t.Cleanup(c.Kill)
	for i := range n {
		dir := t.TempDir()
		port := FreePort(t)
		// The cluster bus gets a reserved port of its own: by default it
		// is port+10000, which lands in Linux's ephemeral range, where
		// any outgoing connection may hold it (seen in CI: "Failed
		// listening on port … (cluster), aborting").
		busPort := FreePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		conf := filepath.Join(dir, "redis.conf")
		body := fmt.Sprintf("bind 127.0.0.1\nport %d\ndir %s\nsave \"\"\nappendonly no\nprotected-mode yes\n"+
			"cluster-enabled yes\ncluster-port %d\ncluster-config-file nodes.conf\ncluster-node-timeout 2000\n", port, dir, busPort)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := Start(dir, bin, conf)
		if err != nil {
			t.Fatalf("redis cluster node %d: %v", i, err)
		}
		c.procs = append(c.procs, p)
		if err := WaitTCP(addr, 10*time.Second); err != nil {
			t.Fatalf("redis cluster node %d: %v; log: %s", i, err, p.LogTail())
		}
		c.Addrs = append(c.Addrs, addr)
		c.busPorts = append(c.busPorts, busPort)
	}
	if err := c.form(); err != nil {
		t.Fatalf("redis cluster: %v", err)
	}
	return c
}

// form assigns slot ranges and config epochs, introduces the nodes to each
// other and waits until every node reports the cluster ok (what
// `redis-cli --cluster create` does).
func (c *RedisCluster) form() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes := make([]*redis.Client, len(c.Addrs))
	for i, a := range c.Addrs {
		nodes[i] = redis.NewClient(&redis.Options{Addr: a})
		defer nodes[i].Close()
	}
	const slots = 16384
	for i, n := range nodes {
		lo, hi := i*slots/len(nodes), (i+1)*slots/len(nodes)-1
		if err := n.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err(); err != nil {
			return fmt.Errorf("%s: add slots: %w", c.Addrs[i], err)
		}
		if err := n.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err(); err != nil {
			return fmt.Errorf("%s: set config epoch: %w", c.Addrs[i], err)
		}
	}
	for i, a := range c.Addrs[1:] {
		host, port, _ := strings.Cut(a, ":")
		if err := nodes[0].Do(ctx, "CLUSTER", "MEET", host, port, c.busPorts[i+1]).Err(); err != nil {
			return fmt.Errorf("meet %s: %w", a, err)
		}
	}
	for {
		ready := 0
		for _, n := range nodes {
			info, err := n.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") &&
				strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", len(nodes))) {
				ready++
			}
		}
		if ready == len(nodes) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ok after 30 s: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Kill stops every node.
func (c *RedisCluster) Kill() {
	for _, p := range c.procs {
		p.Kill()
	}
}

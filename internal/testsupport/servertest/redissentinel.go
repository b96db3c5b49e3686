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

// RedisSentinel is a private Sentinel deployment on loopback: a master, one
// replica and one Sentinel (quorum 1) watching them as MasterName.
type RedisSentinel struct {
	MasterName   string
	SentinelAddr string
	// MasterAddr and ReplicaAddr are the servers as started; after a
	// failover the replica is the master.
	MasterAddr, ReplicaAddr string
	procs                   []*Process
}

// StartRedisSentinel starts the three processes and waits until the
// Sentinel knows the master and its replica; it is stopped when t ends.
func StartRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	bin := Require(t, "redis-server", "redis-server")
	s := &RedisSentinel{MasterName: "dirsync-test"}
	t.Cleanup(s.Kill)
	start := func(name, extra string) string {
		dir := t.TempDir()
		port := FreePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		conf := filepath.Join(dir, name+".conf")
		body := fmt.Sprintf("bind 127.0.0.1\nport %d\ndir %s\nprotected-mode no\n%s", port, dir, extra)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		args := []string{conf}
		if name == "sentinel" {
			args = append(args, "--sentinel")
		}
		p, err := Start(dir, bin, args...)
		if err != nil {
			t.Fatalf("redis %s: %v", name, err)
		}
		s.procs = append(s.procs, p)
		if err := WaitTCP(addr, 10*time.Second); err != nil {
			t.Fatalf("redis %s: %v; log: %s", name, err, p.LogTail())
		}
		return addr
	}
	data := "save \"\"\nappendonly no\n"
	s.MasterAddr = start("master", data)
	host, port, _ := strings.Cut(s.MasterAddr, ":")
	s.ReplicaAddr = start("replica", data+fmt.Sprintf("replicaof %s %s\n", host, port))
	s.SentinelAddr = start("sentinel", fmt.Sprintf("sentinel monitor %s %s %s 1\n"+
		"sentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 5000\n",
		s.MasterName, host, port, s.MasterName, s.MasterName))
	if err := s.waitReplica(); err != nil {
		t.Fatalf("redis sentinel: %v", err)
	}
	return s
}

// waitReplica waits until the Sentinel lists the replica as connected.
func (s *RedisSentinel) waitReplica() error {
	c := redis.NewSentinelClient(&redis.Options{Addr: s.SentinelAddr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		replicas, err := c.Replicas(ctx, s.MasterName).Result()
		if err == nil {
			for _, r := range replicas {
				if r["master-link-status"] == "ok" {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("replica not seen by the sentinel after 30 s (last error: %v)", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Failover makes the Sentinel promote the replica and waits until it
// reports the replica as the master.
func (s *RedisSentinel) Failover(t testing.TB) {
	t.Helper()
	c := redis.NewSentinelClient(&redis.Options{Addr: s.SentinelAddr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Failover(ctx, s.MasterName).Err(); err != nil {
		t.Fatalf("sentinel failover: %v", err)
	}
	for {
		addr, err := c.GetMasterAddrByName(ctx, s.MasterName).Result()
		if err == nil && len(addr) == 2 && addr[0]+":"+addr[1] == s.ReplicaAddr {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("sentinel still names %v (%v) as master after 30 s", addr, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Kill stops every process.
func (s *RedisSentinel) Kill() {
	for _, p := range s.procs {
		p.Kill()
	}
}

package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/dirsync/dirsync/internal/sync/engine"
)

// cmdProfile runs the same full pass as `dirsync sync` (poller, engine,
// Redis writer) in this process with a CPU and an allocation profile, for
// `go tool pprof`. -prefix selects the cache key prefix: a fresh one makes
// a first sync, the CLI's ("bench") a steady-state resync.
func cmdProfile(args []string) error {
	fs := flag.NewFlagSet("profile", flag.ExitOnError)
	url := fs.String("ldap", "", "ldap:// URL")
	bindDN := fs.String("bind-dn", "", "service DN")
	pwFile := fs.String("bind-password-file", "", "service password file")
	suffix := fs.String("suffix", "dc=bench,dc=test", "suffix")
	redisAddr := fs.String("redis", "", "redis address")
	prefix := fs.String("prefix", "bench", "cache key prefix")
	cpu := fs.String("cpuprofile", "cpu.pprof", "CPU profile file")
	mem := fs.String("memprofile", "mem.pprof", "allocation profile file")
	fs.Parse(args)
	pw, err := os.ReadFile(*pwFile)
	if err != nil {
		return err
	}
	runtime.MemProfileRate = 64 << 10
	_, eng, rc, err := newBenchEngine(*url, *bindDN, string(pw), *suffix, *redisAddr, *prefix)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.Create(*cpu)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	start := time.Now()
	rep, err := eng.Run(context.Background(), "bench", engine.Options{Mode: engine.ModeFull})
	pprof.StopCPUProfile()
	if err != nil {
		return err
	}
	say("profile_pass_seconds=%.3f s publish_seconds=%.3f published=%d prefix=%s", time.Since(start).Seconds(), rep.PublishSeconds, rep.Changes.Published, *prefix)
	m, err := os.Create(*mem)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := pprof.Lookup("allocs").WriteTo(m, 0); err != nil {
		return fmt.Errorf("write allocation profile: %w", err)
	}
	return nil
}

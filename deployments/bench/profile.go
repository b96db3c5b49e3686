package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/dirsync/dirsync/config"
	"github.com/dirsync/dirsync/directory/ldapdir"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/sync/engine"
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
	p, err := ldapdir.New(ldapdir.Options{
		Type: config.DirectoryLDAP, URLs: []string{*url}, AllowInsecure: true,
		BindDN: *bindDN, BindPassword: strings.TrimSpace(string(pw)),
		UserBaseDN: "ou=people," + *suffix, GroupBaseDN: "ou=groups," + *suffix,
		DisabledAttribute: "employeeType", DisabledValue: "disabled", Timeout: 10 * time.Minute,
	})
	if err != nil {
		return err
	}
	rc := redis.NewClient(&redis.Options{Addr: *redisAddr})
	defer rc.Close()
	eng := engine.New(accesscache.NewRedis(rc, *prefix), []engine.Account{{
		Policy: policy(*suffix), Source: p,
		Safeguard: engine.Safeguard{MaxLostAccessPercent: 100, MaxLostAccessUsers: 1 << 30},
	}}, zap.NewNop(), time.Now)
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

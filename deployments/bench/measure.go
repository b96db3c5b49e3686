package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/store"

	"github.com/dirsync/dirsync/internal/entitlement/mapper"

	"github.com/go-ldap/ldap/v3"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/directory/ldapdir"
	"github.com/dirsync/dirsync/internal/sync/apimux"
	"github.com/dirsync/dirsync/internal/sync/engine"
	"github.com/dirsync/dirsync/internal/sync/httpapi"
)

func say(format string, a ...any) { fmt.Printf("bench: "+format+"\n", a...) }

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

// pct returns the q-quantile of sorted durations.
func pct(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

func email(i int) string { return fmt.Sprintf("u%07d@bench.example", i) }

func policy(suffix string) mapper.Policy {
	return mapper.Policy{Account: "bench", ClaimedDomains: []string{"bench.example"}, Bindings: []mapper.Binding{
		{Group: "cn=g000000,ou=groups," + suffix, Permission: entitlement.PermissionPro},
		{Group: "cn=g000001,ou=groups," + suffix, Permission: entitlement.PermissionBasic},
	}}
}

// cmdIncremental measures an incremental pass of the engine (read changes,
// map, diff, publish) after changing a few users, with the same poller the
// CLI builds, against the cache `dirsync sync` already filled.
func cmdIncremental(args []string) error {
	fs := flag.NewFlagSet("incremental", flag.ExitOnError)
	url := fs.String("ldap", "", "ldap:// URL")
	bindDN := fs.String("bind-dn", "", "service DN")
	pwFile := fs.String("bind-password-file", "", "service password file")
	rootDN := fs.String("root-dn", "", "DN allowed to modify users")
	rootPW := fs.String("root-password", "", "its password")
	suffix := fs.String("suffix", "dc=bench,dc=test", "suffix")
	users := fs.Int("users", 0, "users in the directory")
	redisAddr := fs.String("redis", "", "redis address")
	changes := fs.Int("changes", 10, "users to change")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the pass after the changes here")
	fs.Parse(args)
	pw, err := os.ReadFile(*pwFile)
	if err != nil {
		return err
	}
	ctx := context.Background()
	p, eng, rc, err := newBenchEngine(*url, *bindDN, string(pw), *suffix, *redisAddr, "bench")
	if err != nil {
		return err
	}
	defer rc.Close()
	cpu0 := cpuTime()
	start := time.Now()
	if _, err := eng.Run(ctx, "bench", engine.Options{Mode: engine.ModeFull}); err != nil {
		return fmt.Errorf("full pass: %w", err)
	}
	fullCPU, fullWall := cpuTime()-cpu0, time.Since(start)
	say("full_pass_seconds=%.3f s cpu_seconds=%.3f (the engine's full pass: read, map, diff against the filled cache)", fullWall.Seconds(), fullCPU.Seconds())
	full := p.EntriesRead()

	// A pass with nothing changed: what the one-second overlap costs.
	before := p.EntriesRead()
	start = time.Now()
	rep, err := eng.Run(ctx, "bench", engine.Options{Mode: engine.ModeIncremental})
	if err != nil {
		return fmt.Errorf("incremental pass: %w", err)
	}
	say("incremental_nochange_seconds=%.3f s entries_read=%d full_read_entries=%d published=%d", time.Since(start).Seconds(), p.EntriesRead()-before, full, rep.Changes.Published)

	conn, err := ldap.DialURL(*url)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.Bind(*rootDN, *rootPW); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(3, 5))
	modify := func(n int) error {
		for range n {
			i := rng.IntN(*users)
			req := ldap.NewModifyRequest(fmt.Sprintf("uid=u%07d,ou=people,%s", i, *suffix), nil)
			req.Replace("employeeType", []string{"disabled"})
			req.Replace("description", []string{fmt.Sprintf("bench change %d", time.Now().UnixNano())})
			if err := conn.Modify(req); err != nil {
				return fmt.Errorf("modify: %w", err)
			}
		}
		return nil
	}
	if err := modify(*changes); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	before = p.EntriesRead()
	cpu0 = cpuTime()
	start = time.Now()
	rep, err = eng.Run(ctx, "bench", engine.Options{Mode: engine.ModeIncremental})
	pprof.StopCPUProfile()
	if err != nil {
		return fmt.Errorf("incremental pass: %w", err)
	}
	wall, cpu := time.Since(start), cpuTime()-cpu0
	say("incremental_seconds=%.3f s entries_read=%d changed_users=%d published=%d remapped_users=%d full_read_entries=%d", wall.Seconds(), p.EntriesRead()-before, *changes, rep.Changes.Published, rep.Remapped, full)
	say("incremental_ms=%s ms goal<=50 %s cpu_seconds=%.4f full_pass_cpu_seconds=%.3f cpu_ratio=%.2f%% goal<=1%% %s",
		ms(wall), metMiss(wall <= 50*time.Millisecond), cpu.Seconds(), fullCPU.Seconds(), 100*cpu.Seconds()/fullCPU.Seconds(), metMiss(cpu.Seconds() <= fullCPU.Seconds()/100))

	// 1,000 changed users: O(changes) means about 100 times the work of
	// 10. The goal allows 10 times the 10-change goal (500 ms); the
	// ratio to the measured 10-change pass is printed beside it.
	if err := modify(100 * *changes); err != nil {
		return err
	}
	before = p.EntriesRead()
	start = time.Now()
	rep, err = eng.Run(ctx, "bench", engine.Options{Mode: engine.ModeIncremental})
	if err != nil {
		return fmt.Errorf("incremental pass: %w", err)
	}
	wall1000 := time.Since(start)
	say("incremental_1000_ms=%s ms goal<=500 %s changed_users=%d entries_read=%d published=%d remapped_users=%d ratio_to_10_change_pass=%.1fx",
		ms(wall1000), metMiss(wall1000 <= 500*time.Millisecond), 100**changes, p.EntriesRead()-before, rep.Changes.Published, rep.Remapped, wall1000.Seconds()/wall.Seconds())

	// A membership change: 10 users join the basic-bound group. The pass
	// walks the bindings' closures again and re-decides the users they
	// moved.
	for joined := 0; joined < 10; {
		req := ldap.NewModifyRequest("cn=g000001,ou=groups,"+*suffix, nil)
		req.Add("member", []string{fmt.Sprintf("uid=u%07d,ou=people,%s", rng.IntN(*users), *suffix)})
		switch err := conn.Modify(req); {
		case err == nil:
			joined++
		case !ldap.IsErrorWithCode(err, ldap.LDAPResultAttributeOrValueExists): // already a member: pick another
			return fmt.Errorf("modify group: %w", err)
		}
	}
	before = p.EntriesRead()
	start = time.Now()
	rep, err = eng.Run(ctx, "bench", engine.Options{Mode: engine.ModeIncremental})
	if err != nil {
		return fmt.Errorf("incremental pass: %w", err)
	}
	say("incremental_group_ms=%s ms vs_10_user_goal<=50 %s (10 users join a bound group; not an issue 16 target, the 10-changed-user goal for comparison) entries_read=%d published=%d remapped_users=%d remapped_groups=%d",
		ms(time.Since(start)), metMiss(time.Since(start) <= 50*time.Millisecond), p.EntriesRead()-before, rep.Changes.Published, rep.Remapped, rep.RemappedGroups)
	return nil
}

func metMiss(met bool) string {
	if met {
		return "met"
	}
	return "MISS"
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cmdLookup measures the sign-in read: Reader.Check against a raw go-redis
// GET of the same key, interleaved so drift hits both alike, from 1 and 32
// goroutines; then the HTTP endpoint at a fixed request rate.
func cmdLookup(args []string) error {
	fs := flag.NewFlagSet("lookup", flag.ExitOnError)
	redisAddr := fs.String("redis", "", "redis address")
	users := fs.Int("users", 0, "users in the directory")
	ops := fs.Int("ops", 20000, "lookups of each kind per concurrency level")
	rate := fs.Int("rate", 5000, "HTTP requests per second")
	dur := fs.Duration("duration", 4*time.Second, "HTTP load duration")
	fs.Parse(args)
	ctx := context.Background()
	rc := redis.NewClient(&redis.Options{Addr: *redisAddr, PoolSize: 64})
	defer rc.Close()
	reader := accesscache.NewReader(rc, "bench")
	keys := accesscache.NewKeys("bench")
	if d, err := reader.Check(ctx, email(1)); err != nil || d.Reason == entitlement.ReasonUnknownUser {
		return fmt.Errorf("the cache holds no decision for %s (was dirsync sync run?): %v", email(1), err)
	}
	for _, workers := range []int{1, 32} {
		per := *ops / workers
		check := make([][]time.Duration, workers)
		raw := make([][]time.Duration, workers)
		var wg sync.WaitGroup
		var firstErr error
		var mu sync.Mutex
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 1))
				for range per {
					e := email(rng.IntN(*users))
					t := time.Now()
					_, err1 := reader.Check(ctx, e)
					check[w] = append(check[w], time.Since(t))
					t = time.Now()
					_, err2 := rc.Get(ctx, keys.User(e)).Bytes()
					raw[w] = append(raw[w], time.Since(t))
					if err := errors.Join(err1, err2); err != nil {
						mu.Lock()
						firstErr = err
						mu.Unlock()
						return
					}
				}
			}()
		}
		wg.Wait()
		if firstErr != nil {
			return firstErr
		}
		c, r := slices.Concat(check...), slices.Concat(raw...)
		slices.Sort(c)
		slices.Sort(r)
		ratio := float64(pct(c, .5)) / float64(pct(r, .5))
		say("check_p50_ms=%s ms goroutines=%d p99=%s raw_get_p50=%s raw_get_p99=%s ratio=%.2f goal<=1.2 %s p99_ratio=%.2f", ms(pct(c, .5)), workers, ms(pct(c, .99)),
			ms(pct(r, .5)), ms(pct(r, .99)), ratio, metMiss(ratio <= 1.2), float64(pct(c, .99))/float64(pct(r, .99)))
	}
	// The floor: the same load on a handler that only GETs the key and
	// writes the stored bytes (net/http, the load generator and one Redis
	// round trip on this machine, nothing of dirsync's).
	floor := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := rc.Get(r.Context(), keys.User(r.PathValue("email"))).Bytes()
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b) //nolint:errcheck // the client went away
	})
	floorMux := http.NewServeMux()
	floorMux.Handle("GET /v1/access/{email}", floor)
	f, err := httpLoad(ctx, floorMux, *users, *rate, *dur)
	if err != nil {
		return err
	}
	// httpLoad serves on 127.0.0.1, where the sign-in read may be open.
	open, err := apimux.LoopbackListener(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	api, err := httpLoad(ctx, httpapi.New(httpapi.Options{Checker: reader, Auth: apimux.Credentials{OpenSignIn: open}, Log: zap.NewNop()}), *users, *rate, *dur)
	if err != nil {
		return err
	}
	say("http_p99_ms=%s ms rate=%d/s p50=%s p999=%s achieved=%.0f/s requests=%d errors=%d floor_p99=%s floor_p50=%s p99_ratio=%.2f",
		ms(api.p99), *rate, ms(api.p50), ms(api.p999), api.achieved, api.requests, api.errors, ms(f.p99), ms(f.p50), float64(api.p99)/float64(f.p99))
	return nil
}

// httpResult is one open-loop run's latency percentiles.
type httpResult struct {
	p50, p99, p999   time.Duration
	achieved         float64
	requests, errors int
}

// httpLoad serves h on loopback and sends GET
// /v1/access/{email} at a fixed rate (open loop: latency counts from when
// each request was due, so a slow answer also delays what queues behind).
func httpLoad(ctx context.Context, h http.Handler, users, rate int, dur time.Duration) (httpResult, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return httpResult{}, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() { srv.Close(); <-served }()

	const workers = 64
	tr := &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	defer tr.CloseIdleConnections()
	base := "http://" + l.Addr().String() + "/v1/access/"
	total := int(float64(rate) * dur.Seconds())
	lat := make([][]time.Duration, workers)
	var failed sync.Map
	var wg sync.WaitGroup
	start := time.Now().Add(50 * time.Millisecond)
	interval := time.Second / time.Duration(rate)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 2))
			for k := w; k < total; k += workers {
				due := start.Add(time.Duration(k) * interval)
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				}
				resp, err := client.Get(base + email(rng.IntN(users)))
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body) // to EOF, so the connection is reused
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("HTTP %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Store(k, err)
				}
				lat[w] = append(lat[w], time.Since(due))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := slices.Concat(lat...)
	slices.Sort(all)
	nfail := 0
	failed.Range(func(_, v any) bool { nfail++; return true })
	return httpResult{p50: pct(all, .5), p99: pct(all, .99), p999: pct(all, .999),
		achieved: float64(len(all)) / elapsed.Seconds(), requests: len(all), errors: nfail}, nil
}

// staticToken holds one fencing token for every account.
type staticToken string

func (t staticToken) Token(string) (string, bool) { return string(t), true }

// cmdPublishProbe publishes a full set of new decisions (an empty cache
// under another prefix, so every decision is an add) while a probe reads a
// live key every millisecond on its own connection, and reports the worst
// read latency during the publish next to the worst in an idle period of
// the same length just after. The publish goes through the fenced writer,
// as `dirsync run` and `dirsync sync` publish to Redis; the plain writer's
// figure follows.
func cmdPublishProbe(args []string) error {
	fs := flag.NewFlagSet("publish-probe", flag.ExitOnError)
	redisAddr := fs.String("redis", "", "redis address")
	n := fs.Int("changes", 100_000, "decisions to publish")
	fs.Parse(args)
	ctx := context.Background()
	wc := redis.NewClient(&redis.Options{Addr: *redisAddr})
	defer wc.Close()
	pc := redis.NewClient(&redis.Options{Addr: *redisAddr, PoolSize: 1})
	defer pc.Close()
	w := store.NewRedis(wc, "probe")
	if err := wc.Set(ctx, accesscache.NewKeys("probe").Fence("probe"), "1|bench", 0).Err(); err != nil {
		return err
	}
	fenced := store.NewFenced(w, staticToken("1|bench"), store.FenceAuto)
	plain := store.NewRedis(wc, "probeplain")
	live := accesscache.NewKeys("bench").User(email(1))
	if err := pc.Get(ctx, live).Err(); err != nil {
		return fmt.Errorf("probe key %s: %w", live, err)
	}
	now := time.Now()
	decisions := make([]entitlement.Decision, *n)
	for i := range decisions {
		allowed := i%4 != 0
		perm, reason := entitlement.PermissionPro, entitlement.ReasonGranted
		if !allowed {
			perm, reason = entitlement.PermissionNone, entitlement.ReasonNoPermission
		}
		decisions[i] = entitlement.Decision{Email: email(i), Account: "probe", Allowed: allowed, Permission: perm, Reason: reason,
			Capabilities: entitlement.CapabilitiesOf(perm), UserID: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), Via: []string{"cn=g000000,ou=groups,dc=bench,dc=test"},
			SyncedAt: now, Detail: &entitlement.Detail{Rule: "member of a group bound to pro", DirectoryStatus: "active",
				Paths: []entitlement.GroupPath{{Binding: "cn=g000000,ou=groups,dc=bench,dc=test", Permission: perm,
					Groups: []string{"cn=g000000,ou=groups,dc=bench,dc=test", "cn=g000004,ou=groups,dc=bench,dc=test"}}},
				DN: fmt.Sprintf("uid=u%07d,ou=people,dc=bench,dc=test", i), Source: "ldap:bench"}}
	}
	delta := mapper.Diff(nil, decisions)

	probe := func(stop <-chan struct{}) (worst time.Duration, all []time.Duration, err error) {
		for {
			select {
			case <-stop:
				return worst, all, nil
			default:
			}
			t := time.Now()
			if err := pc.Get(ctx, live).Err(); err != nil {
				return worst, all, err
			}
			d := time.Since(t)
			worst = max(worst, d)
			all = append(all, d)
			time.Sleep(time.Millisecond)
		}
	}
	run := func(work func() error) (time.Duration, []time.Duration, time.Duration, error) {
		stop := make(chan struct{})
		type res struct {
			worst time.Duration
			all   []time.Duration
			err   error
		}
		done := make(chan res, 1)
		go func() { w, a, err := probe(stop); done <- res{w, a, err} }()
		t := time.Now()
		err := work()
		took := time.Since(t)
		close(stop)
		r := <-done
		return r.worst, r.all, took, errors.Join(err, r.err)
	}
	pw, pall, publishTook, err := run(func() error { return fenced.Apply(ctx, "probe", delta.Changes, now) })
	if err != nil {
		return err
	}
	iw, iall, _, err := run(func() error { time.Sleep(publishTook); return nil })
	if err != nil {
		return err
	}
	plw, plall, plainTook, err := run(func() error { return plain.Apply(ctx, "probe", delta.Changes, now) })
	if err != nil {
		return err
	}
	slices.Sort(pall)
	slices.Sort(iall)
	slices.Sort(plall)
	say("publish_reader_worst_ms=%s ms goal<=10 %s changes=%d publish_seconds=%.3f probe_p99=%s idle_worst=%s idle_p99=%s probes=%d plain_writer_worst=%s plain_p99=%s plain_publish_seconds=%.3f",
		ms(pw), metMiss(pw <= 10*time.Millisecond), *n, publishTook.Seconds(), ms(pct(pall, .99)), ms(iw), ms(pct(iall, .99)), len(pall), ms(plw), ms(pct(plall, .99)), plainTook.Seconds())
	// Leave the cache as the sync left it.
	var cursor uint64
	for {
		keys, next, err := wc.Scan(ctx, cursor, "probe*", 10000).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			if err := wc.Unlink(ctx, keys...).Err(); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// newBenchEngine builds the poller and engine the bench measures: the
// generated directory at url, published to Redis under prefix.
func newBenchEngine(url, bindDN, password, suffix, redisAddr, prefix string) (*ldapdir.Poller, *engine.Engine, *redis.Client, error) {
	p, err := ldapdir.New(ldapdir.Options{
		Type: ldapdir.TypeLDAP, URLs: []string{url}, AllowInsecure: true,
		BindDN: bindDN, BindPassword: strings.TrimSpace(password),
		UserBaseDN: "ou=people," + suffix, GroupBaseDN: "ou=groups," + suffix,
		DisabledAttribute: "employeeType", DisabledValue: "disabled", Timeout: 10 * time.Minute,
		MaxEntries: 4_000_000, // SIZE=1m is exactly the default cap of one search: leave room
	})
	if err != nil {
		return nil, nil, nil, err
	}
	rc := redis.NewClient(&redis.Options{Addr: redisAddr})
	eng := engine.New(store.NewRedis(rc, prefix), []engine.Account{{
		Policy: policy(suffix), Source: p,
		Safeguard: engine.Safeguard{MaxLostAccessPercent: 100, MaxLostAccessUsers: 1 << 30},
	}}, zap.NewNop(), time.Now)
	return p, eng, rc, nil
}

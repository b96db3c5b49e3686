package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	binenc "encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// The multi-tenant scale benchmark (issue 14 item 6), through the real
// daemon (an optimised build) with real PostgreSQL and Redis:
//
//	make bench SCENARIO=tenants            # 5,000 accounts x 200 users
//	TENANTS=500 make bench SCENARIO=tenants
//
// Every account is an LDIF directory created through the accounts API by the
// global administrator. It prints, next to its target:
//   - time from the first PUT until every account's first pass is in the
//     cache, as a ratio to the floor: one account holding all the users
//     (same LDIF format) synced by `dirsync sync`, measured in the same run;
//   - the daemon's CPU over an idle minute with @every 5s incremental
//     passes of every account, in % of one core;
//   - p50/p99 lag from a directory change (a user disabled in its file) to
//     the decision in the cache, over many accounts at once;
//   - RSS per account;
//   - time from a binding change through the API to its decisions.

// tenantFigures are the scale benchmark's results.
type tenantFigures struct {
	tenants, users           int
	floor, create, allSynced time.Duration
	idleCPUPercent           float64
	rssBytes                 int64
	lagP50, lagP99, lagMax   time.Duration
	bindingChange            time.Duration
	changes                  int
}

// tenantDomain is account k's id and claimed domain label.
func tenantID(k int) string { return fmt.Sprintf("t%05d", k) }

// writeTenantLDIF writes an AD-shaped LDIF directory: users u0..u(n-1) of
// domain <id>.example, the first half in group Pro, the rest in Basic;
// disabled users (userAccountControl 514) as given.
func writeTenantLDIF(tb testing.TB, path, id string, k, n int, disabled map[int]bool) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	base := fmt.Sprintf("DC=%s,DC=example", id)
	for _, g := range []struct {
		name     string
		from, to int
	}{{"Pro", 0, n / 2}, {"Basic", n / 2, n}} {
		fmt.Fprintf(w, "dn: CN=%s,OU=G,%s\nobjectClass: group\ncn: %s\n", g.name, base, g.name)
		for i := g.from; i < g.to; i++ {
			fmt.Fprintf(w, "member: CN=u%d,OU=P,%s\n", i, base)
		}
		w.WriteString("\n")
	}
	var guid [16]byte
	for i := range n {
		binenc.BigEndian.PutUint64(guid[:8], uint64(k)+1)
		binenc.BigEndian.PutUint64(guid[8:], uint64(i))
		uac := 512
		if disabled[i] {
			uac = 514
		}
		fmt.Fprintf(w, "dn: CN=u%d,OU=P,%s\nobjectClass: user\nobjectGUID:: %s\ncn: u%d\nmail: u%d@%s.example\nuserAccountControl: %d\n\n",
			i, base, base64.StdEncoding.EncodeToString(guid[:]), i, i, id, uac)
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
}

func tenantBindings(id, proGroup, basicGroup string) []map[string]string {
	return []map[string]string{
		{"group": fmt.Sprintf("CN=%s,OU=G,DC=%s,DC=example", proGroup, id), "permission": "pro"},
		{"group": fmt.Sprintf("CN=%s,OU=G,DC=%s,DC=example", basicGroup, id), "permission": "basic"},
	}
}

// cpuTicks returns a process's user+system CPU time in clock ticks.
func cpuTicks(tb testing.TB, pid int) int64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return utime + stime
}

func clockTicks(tb testing.TB) float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		tb.Fatal(err)
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil || n <= 0 {
		tb.Fatalf("CLK_TCK %q", out)
	}
	return n
}

func rssBytes(tb testing.TB, pid int) int64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	tb.Fatal("no VmRSS")
	return 0
}

// runTenants measures tenants accounts of users users each through bin.
// idle is the CPU measurement window; changes the number of directory
// changes whose lag is measured.
func runTenants(tb testing.TB, bin string, tenants, users int, idle time.Duration, changes int) tenantFigures {
	tb.Helper()
	ctx := context.Background()
	fig := tenantFigures{tenants: tenants, users: users, changes: changes}
	rs := servertest.StartRedis(tb)
	pg := servertest.StartPostgres(tb)
	dsn := pg.CreateDatabase(tb)
	dir := tb.TempDir()
	root := filepath.Join(dir, "ldif")
	if err := os.Mkdir(root, 0o755); err != nil {
		tb.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()

	// The floor: one account with every user, first sync by `dirsync sync`.
	floorFile := filepath.Join(dir, "floor.ldif")
	writeTenantLDIF(tb, floorFile, "floor", 0, tenants*users, nil)
	floorCfg, _ := writeConfig(tb, filepath.Join(dir), fmt.Sprintf(`cache: {backend: redis, redis: {addrs: [%q], key_prefix: floor}}
log: {level: warn}
accounts:
  - id: floor
    claimed_domains: [floor.example]
    directory: {type: ldif, ldif: {path: floor.ldif}}
    bindings: %s
`, rs.Addr, yamlBindings(tenantBindings("floor", "Pro", "Basic"))))
	start := time.Now()
	if out, err := exec.Command(bin, "sync", "--config", floorCfg).CombinedOutput(); err != nil {
		tb.Fatalf("floor sync: %v\n%s", err, out)
	}
	fig.floor = time.Since(start)
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		tb.Fatal(err)
	}
	os.Remove(floorFile)
	os.Remove(floorCfg)

	for k := range tenants {
		writeTenantLDIF(tb, filepath.Join(root, tenantID(k)+".ldif"), tenantID(k), k, users, nil)
	}
	admin := writeSecret(tb, dir, "admin-token", adminToken)
	dsnFile := writeSecret(tb, dir, "dsn", dsn)
	key := writeSecret(tb, dir, "secret-key", hex.EncodeToString(bytes.Repeat([]byte{9}, 32)))
	cfg, addr := writeConfig(tb, dir, fmt.Sprintf(`cache: {backend: redis, redis: {addrs: [%q], key_prefix: tenants}}
log: {level: warn}
schedule: {full: "@every 1h", incremental: "@every 5s"}
console: {postgres_dsn_file: %s, secret_key_file: %s}
accounts_api: {ldif_root: %s}
`, rs.Addr, dsnFile, key, root))
	body := mustRead(tb, cfg)
	writeFile(tb, cfg, strings.Replace(body, "api: {listen: ", "api: {admin_token_file: "+admin+", listen: ", 1))
	d := startBinary(tb, bin, dir, cfg, addr)
	pid := d.proc.Cmd.Process.Pid

	// Create every account through the API, 8 at a time.
	start = time.Now()
	var mu sync.Mutex
	var failures []string
	parallel(8, tenants, func(k int) {
		id := tenantID(k)
		doc := map[string]any{
			"claimed_domains": []string{id + ".example"},
			"directory":       map[string]any{"type": "ldif", "ldif": map[string]any{"path": filepath.Join(root, id+".ldif")}},
			"bindings":        tenantBindings(id, "Pro", "Basic"),
		}
		var answer map[string]any
		if code := d.call("PUT", "/v1/accounts/"+id, adminToken, doc, &answer); code != 201 {
			mu.Lock()
			failures = append(failures, fmt.Sprintf("%s: %d %v", id, code, answer))
			mu.Unlock()
		}
	})
	fig.create = time.Since(start)
	if len(failures) > 0 {
		tb.Fatalf("%d accounts not created, e.g. %s", len(failures), failures[0])
	}
	reader := accesscache.NewReader(rdb, "tenants")
	pending := map[string]bool{}
	for k := range tenants {
		pending[tenantID(k)] = true
	}
	deadline := time.Now().Add(30*time.Minute + time.Duration(tenants)*10*time.Millisecond)
	for len(pending) > 0 {
		for id := range pending {
			st, ok, err := reader.AccountStatus(ctx, id)
			if err != nil {
				tb.Fatal(err)
			}
			if ok && !st.LastSyncAt.IsZero() {
				delete(pending, id)
			}
		}
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d accounts not synced after %v\n%s", len(pending), time.Since(start), d.proc.LogTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	fig.allSynced = time.Since(start)

	// Every decision of a sample of accounts (all of them when small).
	check := func(id string, i int, want entitlement.Permission, reason entitlement.Reason) {
		tb.Helper()
		dec, err := reader.Check(ctx, fmt.Sprintf("u%d@%s.example", i, id))
		if err != nil || dec.Permission != want || dec.Reason != reason {
			tb.Fatalf("%s u%d: %+v %v; want %s/%s", id, i, dec, err, want, reason)
		}
	}
	for k := range tenants {
		if tenants > 100 && k%97 != 0 {
			continue
		}
		for i := range users {
			want := entitlement.PermissionPro
			if i >= users/2 {
				want = entitlement.PermissionBasic
			}
			check(tenantID(k), i, want, entitlement.ReasonGranted)
		}
	}

	// Idle: every account's incremental pass every 5 s, nothing changing.
	time.Sleep(5 * time.Second)
	hz := clockTicks(tb)
	t0, c0 := time.Now(), cpuTicks(tb, pid)
	time.Sleep(idle)
	fig.idleCPUPercent = float64(cpuTicks(tb, pid)-c0) / hz / time.Since(t0).Seconds() * 100
	fig.rssBytes = rssBytes(tb, pid)

	// Change -> cache: disable user 1 of `changes` accounts, 20 at a time,
	// each timed from its file's rewrite to its decision in the cache.
	picks := rand.Perm(tenants)[:min(changes, tenants)]
	lags := make([]time.Duration, len(picks))
	parallel(20, len(picks), func(j int) {
		k := picks[j]
		id := tenantID(k)
		path := filepath.Join(root, id+".ldif")
		tmp := path + ".new"
		writeTenantLDIF(tb, tmp, id, k, users, map[int]bool{1: true})
		if err := os.Rename(tmp, path); err != nil {
			tb.Error(err)
			return
		}
		written := time.Now()
		for {
			dec, err := reader.Check(ctx, "u1@"+id+".example")
			if err == nil && dec.Reason == entitlement.ReasonSuspended {
				lags[j] = time.Since(written)
				return
			}
			if time.Since(written) > 2*time.Minute {
				tb.Errorf("%s: suspension not in the cache after 2 minutes (%+v %v)", id, dec, err)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	slices.Sort(lags)
	fig.lagP50 = lags[len(lags)/2]
	fig.lagP99 = lags[min(len(lags)-1, len(lags)*99/100)]
	fig.lagMax = lags[len(lags)-1]

	// A binding change through the API while the others run: Basic's
	// members become pro.
	id := tenantID(picks[0])
	last := fmt.Sprintf("u%d@%s.example", users-1, id)
	start = time.Now()
	if code := d.call("PUT", "/v1/accounts/"+id+"/bindings", adminToken, tenantBindings(id, "Basic", "Pro"), nil); code != 200 {
		tb.Fatalf("binding change: HTTP %d", code)
	}
	for {
		dec, err := reader.Check(ctx, last)
		if err == nil && dec.Permission == entitlement.PermissionPro {
			fig.bindingChange = time.Since(start)
			break
		}
		if time.Since(start) > 2*time.Minute {
			tb.Fatalf("binding change not in the cache after 2 minutes: %+v %v", dec, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fig
}

func yamlBindings(bs []map[string]string) string {
	var parts []string
	for _, b := range bs {
		parts = append(parts, fmt.Sprintf("{group: %q, permission: %s}", b["group"], b["permission"]))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func metOrMiss(ok bool) string {
	if ok {
		return "met"
	}
	return "miss"
}

// report prints the figures as `make bench` lines, each with its target.
func (f tenantFigures) report() string {
	var b strings.Builder
	ratio := f.allSynced.Seconds() / f.floor.Seconds()
	fmt.Fprintf(&b, "bench: tenants=%d users_per_tenant=%d decisions=%d\n", f.tenants, f.users, f.tenants*f.users)
	fmt.Fprintf(&b, "bench: tenants_create_seconds=%.1f s (%d accounts through PUT /v1/accounts/{id}, 8 clients)\n", f.create.Seconds(), f.tenants)
	fmt.Fprintf(&b, "bench: tenants_all_synced_seconds=%.1f s ratio=%.2f floor=%.1f (one account, all %d users, dirsync sync) target=2x %s\n",
		f.allSynced.Seconds(), ratio, f.floor.Seconds(), f.tenants*f.users, metOrMiss(ratio <= 2))
	fmt.Fprintf(&b, "bench: tenants_idle_cpu_percent=%.1f %% of one core (@every 5s incremental, %d accounts) target=10%% %s\n",
		f.idleCPUPercent, f.tenants, metOrMiss(f.idleCPUPercent <= 10))
	fmt.Fprintf(&b, "bench: tenants_change_lag_p99_seconds=%.2f s p50=%.2f max=%.2f changes=%d target=5s %s\n",
		f.lagP99.Seconds(), f.lagP50.Seconds(), f.lagMax.Seconds(), f.changes, metOrMiss(f.lagP99 <= 5*time.Second))
	fmt.Fprintf(&b, "bench: tenants_rss_bytes_per_account=%d B rss=%d\n", f.rssBytes/int64(f.tenants), f.rssBytes)
	fmt.Fprintf(&b, "bench: tenants_binding_change_seconds=%.2f s target=5s %s\n",
		f.bindingChange.Seconds(), metOrMiss(f.bindingChange <= 5*time.Second))
	return b.String()
}

// BenchmarkTenants is the scale benchmark: TENANTS accounts (default 5,000)
// of TENANT_USERS users (default 200), idle CPU over TENANT_IDLE (default
// 60s), lag over TENANT_CHANGES changes (default 200).
func BenchmarkTenants(b *testing.B) {
	env := func(name string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
			return v
		}
		return def
	}
	bin := benchBinary(b)
	for range b.N {
		f := runTenants(b, bin, env("TENANTS", 5000), env("TENANT_USERS", 200), time.Duration(env("TENANT_IDLE_SECONDS", 60))*time.Second, env("TENANT_CHANGES", 200))
		fmt.Print(f.report())
		b.ReportMetric(f.allSynced.Seconds(), "all-synced-s")
		b.ReportMetric(f.idleCPUPercent, "idle-cpu-%")
		b.ReportMetric(f.lagP99.Seconds(), "lag-p99-s")
	}
}

// TestTenantsScaleSmall runs the scale benchmark's measurement at a small
// size through the race-built daemon: every account created through the API
// syncs with the right decisions, a change in one file and a binding change
// reach the cache, and every figure is produced (timings are printed, never
// asserted).
func TestTenantsScaleSmall(t *testing.T) {
	f := runTenants(t, binary, 20, 20, 2*time.Second, 10)
	t.Log("\n" + f.report())
	if f.floor <= 0 || f.allSynced <= 0 || f.rssBytes <= 0 || f.lagP99 <= 0 || f.bindingChange <= 0 {
		t.Errorf("a figure is missing: %+v", f)
	}
}

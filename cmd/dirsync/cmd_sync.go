package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/store"

	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/sync/engine"
	"github.com/dirsync/dirsync/internal/sync/lease"
	"github.com/dirsync/dirsync/internal/sync/telemetry"
)

func cmdSync(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "sync", "--config FILE [--account ID] [--dry-run] [--force] [--mode full|incremental] [--output text|json] [--server URL]")
	cfgPath := configFlag(fs, e)
	account := fs.String("account", "", "sync only this account (default: all)")
	dryRun := fs.Bool("dry-run", false, "compute and print the diff without publishing")
	force := fs.Bool("force", false, "publish even what the safeguard holds (release a hold)")
	mode := fs.String("mode", "full", "full or incremental")
	output := fs.String("output", "text", "text or json")
	server := fs.String("server", "", "ask the daemon at this URL (e.g. http://127.0.0.1:8080) to sync instead of syncing here")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *output != "text" && *output != "json" {
		return usagef("--output must be text or json")
	}
	opts := engine.Options{Mode: engine.Mode(*mode), DryRun: *dryRun, Force: *force}
	if opts.Mode != engine.ModeFull && opts.Mode != engine.ModeIncremental {
		return usagef("--mode must be full or incremental")
	}

	var reports []engine.Report
	var runErr error
	var cfg *config.Config
	if *server == "" {
		var err error
		if cfg, err = loadConfig(*cfgPath, e); err != nil {
			return err
		}
	}
	if cfg != nil && cfg.Cache.Backend != config.BackendMemory {
		reports, runErr = localSync(ctx, cfg, e, *account, opts)
	} else {
		// --server, or the memory cache, which lives in the daemon: ask it.
		api, err := daemonFor(*server, cfg, e)
		if err != nil {
			return err
		}
		reports, runErr = remoteSync(ctx, api, *account, opts)
	}
	if reports != nil {
		if err := writeReports(e, *output, reports); err != nil {
			return err
		}
	}
	return runErr
}

// writeReports prints reports as text or as {"reports": […]} JSON.
func writeReports(e env, output string, reports []engine.Report) error {
	if output == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"reports": reports})
	}
	printReports(e.stdout, reports)
	return nil
}

func localSync(ctx context.Context, cfg *config.Config, e env, only string, opts engine.Options) ([]engine.Report, error) {
	log, err := newLogger(cfg.Log, e)
	if err != nil {
		return nil, err
	}
	defer log.Sync() //nolint:errcheck
	c, closeCache, err := newCache(cfg, e)
	if err != nil {
		return nil, err
	}
	defer closeCache()
	tuneBatchGC(ctx, cfg, e, c, only)
	db, err := openDatabase(ctx, cfg, e, log)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	opened, err := newAccounts(ctx, cfg, e, db)
	if err != nil {
		return nil, err
	}
	accounts := engineAccounts(opened)
	svc, closeConsole, err := newConsole(ctx, cfg, db, db.record(c), log)
	if err != nil {
		return nil, err
	}
	defer closeConsole()
	publishTo, release, err := leaseForLocalSync(ctx, cfg, e, c, accounts, only, opts)
	if err != nil {
		return nil, err
	}
	defer release()
	publishTo = db.record(publishTo)
	tracing, err := telemetry.New(cfg.Telemetry, version)
	if err != nil {
		return nil, err
	}
	telemetry.LogExportErrors(log)
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		_ = tracing.Shutdown(sctx) // failures were logged by the SDK's handler
	}()
	passes := engine.New(publishTo, accounts, log, time.Now)
	passes.SetTracer(tracing.Tracer)
	passes.SetRemapMinUsers(-1) // one pass per account: nothing to keep a mapping for
	eng := newSyncer(passes, svc)
	ids := eng.Accounts()
	if only != "" {
		ids = []string{only}
	}
	progress := startProgress(ctx, e.stderr, passes)
	defer progress.Stop()
	var reports []engine.Report
	var failed []string
	for _, id := range ids {
		progress.Set(id)
		rep, err := runPass(ctx, eng, id, opts, e.passDeadline(opts.Mode))
		if errors.Is(err, engine.ErrUnknownAccount) {
			return nil, usagef("--account %q is not in the config", id)
		}
		if err != nil {
			failed = append(failed, id)
			log.Debug("sync failed", zap.String("account", id), zap.Error(err))
		}
		reports = append(reports, rep)
	}
	if len(failed) > 0 {
		return reports, fmt.Errorf("sync failed for %s (last good decisions kept; see the report)", strings.Join(failed, ", "))
	}
	return reports, nil
}

// passRunner runs one pass of an account (consoleapi.Syncer).
type passRunner interface {
	Run(ctx context.Context, account string, opts engine.Options) (engine.Report, error)
}

// runPass runs one pass of account under the daemon's pass deadline, so a
// directory that never finishes answering (a stalled or endless server
// behind a generous ldap.timeout) cannot hold a one-off sync, and the
// account's lease, for ever. A pass cut by the deadline says so in its
// report.
func runPass(ctx context.Context, eng passRunner, account string, opts engine.Options, deadline time.Duration) (engine.Report, error) {
	pctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	rep, err := eng.Run(pctx, account, opts)
	if err != nil && ctx.Err() == nil && errors.Is(pctx.Err(), context.DeadlineExceeded) {
		rep.Error = fmt.Sprintf("the %s pass ran past its %s deadline and was cancelled: %s", opts.Mode, deadline, rep.Error)
		err = fmt.Errorf("the %s pass of %s ran past its %s deadline: %w", opts.Mode, account, deadline, err)
	}
	return rep, err
}

// Batch GC settings for the one-off sync (docs/performance.md): a batch job
// can trade a little CPU for a smaller peak, which matters at a million
// users. GOGC and GOMEMLIMIT set in the environment win.
const (
	batchGCPercent     = 50       // with no size known: about +3% CPU, peak heap ~1.5x live instead of 2x
	liveBytesPerUser   = 900      // live heap per user after a sync, measured at 100k and 1M
	memoryLimitHeadway = 1.4      // soft limit over the expected live heap: about +10% CPU
	memoryLimitBase    = 40 << 20 // runtime, connections, buffers
)

// tuneBatchGC bounds the one-off sync's memory. When the cache says how
// many users the accounts had at their last sync, a soft memory limit sized
// for them does it and GOGC stays at its default (GOGC=50 on top of the
// limit cost ~10% more time for a smaller peak the limit already bounds);
// otherwise GOGC is lowered. A soft limit never changes results: past it
// the GC just works harder.
func tuneBatchGC(ctx context.Context, cfg *config.Config, e env, c cache, only string) {
	lowerGOGC := func() {
		if e.getenv("GOGC") == "" {
			debug.SetGCPercent(batchGCPercent)
		}
	}
	if e.getenv("GOMEMLIMIT") != "" {
		lowerGOGC()
		return
	}
	users := 0
	for _, a := range cfg.Accounts {
		if only != "" && a.ID != only {
			continue
		}
		st, found, err := c.Status(ctx, a.ID)
		if err != nil || !found {
			lowerGOGC() // unknown size: no limit
			return
		}
		users += st.Users
	}
	if users == 0 {
		lowerGOGC()
		return
	}
	debug.SetMemoryLimit(int64(float64(users*liveBytesPerUser)*memoryLimitHeadway) + memoryLimitBase)
}

// leaseForLocalSync makes a one-off sync into Redis a writer like any
// replica: it takes the leases of the accounts it syncs (refusing, with the
// holder's name, when a running daemon owns one) and publishes through the
// fenced writer, so it can neither interleave with a daemon's publish nor be
// overwritten by a stale one. Dry runs publish nothing and take no lease.
func leaseForLocalSync(ctx context.Context, cfg *config.Config, e env, c cache, accounts []engine.Account, only string, opts engine.Options) (engine.Cache, func(), error) {
	r, ok := c.(*store.Redis)
	if !ok || opts.DryRun {
		return c, func() {}, nil
	}
	var ids []string
	for _, a := range accounts {
		if only == "" || a.Policy.Account == only {
			ids = append(ids, a.Policy.Account)
		}
	}
	if len(ids) == 0 {
		return c, func() {}, nil
	}
	client, err := newRedisClient(cfg.Cache.Redis, e)
	if err != nil {
		return nil, nil, err
	}
	host, _ := os.Hostname()
	held, err := lease.AcquireAll(ctx, client, cfg.Cache.Redis.KeyPrefix, "dirsync-sync@"+host, ids, cfg.HA.LeasePeriod)
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	release := func() {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		held.Release(rctx)
		client.Close()
	}
	return store.NewFenced(r, held, store.FenceAuto), release, nil
}

// remoteSync asks a running daemon to sync through POST /v1/sync.
func remoteSync(ctx context.Context, api daemonAPI, account string, opts engine.Options) ([]engine.Report, error) {
	q := url.Values{"mode": {string(opts.Mode)}}
	if account != "" {
		q.Set("account", account)
	}
	if opts.DryRun {
		q.Set("dry_run", "true")
	}
	if opts.Force {
		q.Set("force", "true")
	}
	var out struct {
		Reports []engine.Report `json:"reports"`
		Error   string          `json:"error"`
	}
	code, err := callAPI(ctx, http.MethodPost, api.base+"/v1/sync?"+q.Encode(), api.token, &out)
	if err != nil {
		return nil, err
	}
	if out.Error != "" {
		return nil, fmt.Errorf("daemon: %s", out.Error)
	}
	if code != http.StatusOK {
		return out.Reports, fmt.Errorf("sync failed on the daemon (HTTP %d; last good decisions kept)", code)
	}
	return out.Reports, nil
}

// callAPI calls the daemon's HTTP API and decodes its JSON answer.
func callAPI(ctx context.Context, method, u, token string, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("no dirsync daemon answers at %s (the memory cache lives inside the daemon: start it with `make run` or `dirsync run`): %w", req.URL.Host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if err := json.Unmarshal(body, out); err != nil {
		return resp.StatusCode, fmt.Errorf("daemon answered HTTP %d with %q", resp.StatusCode, truncate(string(body), 200))
	}
	return resp.StatusCode, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func printReports(w io.Writer, reports []engine.Report) {
	for _, r := range reports {
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "account %s\t%s sync\tresult: %s\t(%.2fs)\n", r.Account, r.Mode, r.Result, r.DurationSeconds)
		if r.Error != "" {
			fmt.Fprintf(tw, "  error:\t%s\n", r.Error)
		}
		s := r.Stats
		fmt.Fprintf(tw, "  users seen:\t%d\n", s.Users)
		fmt.Fprintf(tw, "  decisions:\t%d\tpro %d, basic %d, denied %d\n", s.Decisions,
			s.ByPermission[entitlement.PermissionPro], s.ByPermission[entitlement.PermissionBasic], s.ByPermission[entitlement.PermissionNone])
		if len(s.ByReason) > 0 {
			fmt.Fprintf(tw, "  by reason:\t%s\n", formatCounts(s.ByReason))
		}
		if s.DomainNotClaimed > 0 {
			fmt.Fprintf(tw, "  not in claimed domains:\t%d (not published)\n", s.DomainNotClaimed)
		}
		if len(s.Skipped) > 0 {
			fmt.Fprintf(tw, "  skipped:\t%s\n", formatCounts(s.Skipped))
		}
		c := r.Changes
		fmt.Fprintf(tw, "  changed:\t%d added, %d updated, %d removed, %d unchanged; %d published\n", c.Added, c.Updated, c.Removed, c.Unchanged, c.Published)
		if c.LostAccess+c.GainedAccess+c.Downgrades > 0 {
			fmt.Fprintf(tw, "  access:\t%d gained, %d lost (%d by account state), %d pro→basic\n", c.GainedAccess, c.LostAccess, c.LostAccessByStatus, c.Downgrades)
		}
		for _, p := range r.Problems {
			fmt.Fprintf(tw, "  problem:\t%s: %s\n", p.Code, p.Message)
		}
		if r.Hold != nil {
			fmt.Fprintf(tw, "  HELD:\t%s\n", r.Hold.Reason)
		}
		tw.Flush()
		if len(r.Diff) > 0 {
			fmt.Fprintln(w, "  diff:")
			for _, d := range r.Diff {
				fmt.Fprintf(w, "    %-9s %s: %s → %s (%s)\n", d.Change, d.Email, d.OldPermission, d.NewPermission, d.Reason)
			}
		}
	}
}

func formatCounts[K ~string](m map[K]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, string(k))
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[K(k)])
	}
	return strings.Join(parts, ", ")
}

// cmdRelease publishes a sync the safeguard held: a forced full sync of the
// account, refused when no hold is pending.
func cmdRelease(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "release", "--config FILE --account ID [--output text|json] [--server URL]")
	cfgPath := configFlag(fs, e)
	account := fs.String("account", "", "the account whose hold to release (required)")
	output := fs.String("output", "text", "text or json")
	server := fs.String("server", "", "ask the daemon at this URL to release instead of releasing here")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *account == "" {
		return usagef("--account is required")
	}
	if *output != "text" && *output != "json" {
		return usagef("--output must be text or json")
	}
	var reports []engine.Report
	var runErr error
	var cfg *config.Config
	if *server == "" {
		var err error
		if cfg, err = loadConfig(*cfgPath, e); err != nil {
			return err
		}
	}
	if cfg != nil && cfg.Cache.Backend != config.BackendMemory {
		c, closeCache, err := newCache(cfg, e)
		if err != nil {
			return err
		}
		st, found, err := c.Status(ctx, *account)
		closeCache()
		if err != nil {
			return err
		}
		if !found || st.Hold == nil {
			return fmt.Errorf("no safeguard hold is pending for account %s; to force a sync anyway use dirsync sync --force", *account)
		}
		reports, runErr = localSync(ctx, cfg, e, *account, engine.Options{Mode: engine.ModeFull, Force: true})
	} else {
		api, err := daemonFor(*server, cfg, e)
		if err != nil {
			return err
		}
		var out struct {
			Reports []engine.Report `json:"reports"`
			Error   string          `json:"error"`
		}
		code, err := callAPI(ctx, http.MethodPost, api.base+"/v1/accounts/"+url.PathEscape(*account)+"/release", api.token, &out)
		if err != nil {
			return err
		}
		if out.Error != "" {
			return fmt.Errorf("daemon: %s", out.Error)
		}
		reports = out.Reports
		if code != http.StatusOK {
			runErr = fmt.Errorf("release failed on the daemon (HTTP %d)", code)
		}
	}
	if err := writeReports(e, *output, reports); err != nil {
		return err
	}
	return runErr
}

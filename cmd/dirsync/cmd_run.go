package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/directory/scim"
	"github.com/dirsync/dirsync/internal/sync/accountsapi"
	"github.com/dirsync/dirsync/internal/sync/apimux"
	"github.com/dirsync/dirsync/internal/sync/consoleapi"
	"github.com/dirsync/dirsync/internal/sync/engine"
	"github.com/dirsync/dirsync/internal/sync/httpapi"
	"github.com/dirsync/dirsync/internal/sync/metrics"
	"github.com/dirsync/dirsync/internal/sync/notify"
	"github.com/dirsync/dirsync/internal/sync/schedule"
	"github.com/dirsync/dirsync/internal/sync/telemetry"
)

// Pass deadlines, the same in the daemon and in a one-off `dirsync sync`
// or `release`: a pass that runs longer is cancelled and counts as failed.
const (
	fullRunTimeout        = 15 * time.Minute
	incrementalRunTimeout = 2 * time.Minute
	shutdownTimeout       = 8 * time.Second
)

// passDeadlines are how long one pass of each mode may run.
type passDeadlines struct{ full, incremental time.Duration }

// passDeadline is how long one pass of mode may run: the deadlines env
// carries (tests), else fullRunTimeout or incrementalRunTimeout.
func (e env) passDeadline(mode engine.Mode) time.Duration {
	d := passDeadlines{full: fullRunTimeout, incremental: incrementalRunTimeout}
	if e.deadlines != nil {
		d = *e.deadlines
	}
	if mode == engine.ModeIncremental {
		return d.incremental
	}
	return d.full
}

func cmdRun(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "run", "--config FILE")
	cfgPath := configFlag(fs, e)
	if _, err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath, e)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.Log, e)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // nothing to do about a failed flush
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	d := &daemon{cfgPath: *cfgPath, env: e, log: log, metrics: metrics.New(), reloads: make(chan reloadRequest)}
	return d.serve(ctx, cfg, hup)
}

// daemon is `dirsync run`: an HTTP server that lives as long as the process
// and a generation (cache, engine, schedules) that a config reload replaces.
type daemon struct {
	cfgPath string
	env     env
	log     *zap.Logger
	metrics *metrics.Metrics
	handler atomic.Pointer[http.Handler]
	reloads chan reloadRequest
	// listenAddr is the address the API is really bound to: credentials
	// that need a loopback listener are checked against it.
	listenAddr net.Addr
	// perStart is the admin token generated for this process when the
	// config sets none (loopback only); removePerStart deletes its file.
	perStart       apimux.Token
	removePerStart func()
}

type reloadRequest struct {
	reply chan error
}

// generation is everything built from one config.
type generation struct {
	cfg *config.Config
	// tracing exports the engine's pass spans (telemetry.otlp_endpoint).
	tracing    telemetry.Tracing
	cache      cache
	closeCache func()
	engine     *observedEngine
	// syncer runs passes of every account: directory accounts through the
	// engine, console accounts as resyncs from PostgreSQL.
	syncer       *consoleapi.Syncer
	closeConsole func()
	// db is the PostgreSQL database (console accounts, access history).
	db *database
	// sched runs every account's passes on a bounded worker pool.
	sched    *schedule.Scheduler
	ha       *replicaHA // nil unless the cache is Redis
	notifier *notify.Notifier
	// live adds, changes and removes accounts one at a time.
	live   *liveAccounts
	cancel context.CancelFunc
	done   chan struct{}
}

func (d *daemon) serve(ctx context.Context, cfg *config.Config, hup <-chan os.Signal) error {
	ln, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return fmt.Errorf("api.listen: %w", err)
	}
	d.listenAddr = ln.Addr()
	defer func() {
		if d.removePerStart != nil {
			d.removePerStart()
		}
	}()
	gen, err := d.build(cfg, nil)
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*d.handler.Load()).ServeHTTP(w, r) }),
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
	}
	telemetry.LogExportErrors(d.log)
	d.log.Info("dirsync started", zap.String("version", version), zap.String("listen", ln.Addr().String()),
		zap.String("console", "http://"+ln.Addr().String()+"/ui/"),
		zap.String("cache", cfg.Cache.Backend), zap.Int("accounts", len(cfg.Accounts)))

	g, gctx := errgroup.WithContext(ctx)
	// Requests (a sync started through the API included) end with the
	// daemon, so shutdown never waits on a slow directory.
	srv.BaseContext = func(net.Listener) context.Context { return gctx }
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		d.start(gctx, gen)
		defer func() {
			d.stop(gen)
			gen.closeCache()
		}()
		for {
			select {
			case <-gctx.Done():
				sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
				defer cancel()
				return srv.Shutdown(sctx)
			case <-hup:
				if next, err := d.reload(gctx, gen); err == nil {
					gen = next
				}
			case req := <-d.reloads:
				next, err := d.reload(gctx, gen)
				if err == nil {
					gen = next
				}
				req.reply <- err
			}
		}
	})
	err = g.Wait()
	d.log.Info("dirsync stopped")
	return err
}

// reload loads the config file again. An invalid config, or one that cannot
// be built, is rejected with its errors and the running generation stays.
func (d *daemon) reload(ctx context.Context, old *generation) (*generation, error) {
	cfg, err := config.Load(d.cfgPath, directory.ConfigKinds(d.env.kinds), d.env.getenv)
	if err != nil {
		d.log.Error("config reload rejected; the running config is kept", zap.Error(err))
		return nil, err
	}
	if cfg.API.Listen != old.cfg.API.Listen {
		d.log.Warn("api.listen changed: restart dirsync to listen on the new address", zap.String("listening", old.cfg.API.Listen))
	}
	if cfg.SameOutside(old.cfg) && !d.hooksChange(old.cfg, cfg) && !scimChange(old.cfg, cfg) {
		// Only accounts changed: apply those, touching no other account
		// (no engine rebuild, no pass of the others, leases kept).
		if err := old.live.applyFile(ctx, cfg); err != nil {
			d.log.Error("config reload: some accounts could not be applied; they keep running as before", zap.Error(err))
			return old, err
		}
		old.cfg = cfg
		return old, nil
	}
	next, err := d.build(cfg, old)
	if err != nil {
		d.log.Error("config reload rejected; the running config is kept", zap.Error(err))
		return nil, err
	}
	d.stop(old)
	if next.closeCache == nil { // the cache was carried over
		next.closeCache = old.closeCache
	} else {
		old.closeCache()
	}
	d.start(ctx, next)
	d.log.Info("config reloaded", zap.Int("accounts", len(cfg.Accounts)))
	return next, nil
}

// hooksChange reports whether the event hook credentials of a and b
// differ (they are part of the API's credentials, built with a
// generation).
func (d *daemon) hooksChange(a, b *config.Config) bool {
	ha, errA := eventHooks(a, d.env)
	hb, errB := eventHooks(b, d.env)
	if errA != nil || errB != nil || len(ha) != len(hb) {
		return true
	}
	for i := range ha {
		if ha[i].Account != hb[i].Account || ha[i].Header != hb[i].Header || !ha[i].Secret.Equal(hb[i].Secret) {
			return true
		}
	}
	return false
}

// scimChange reports whether a and b differ in their SCIM or console
// accounts, whose services are built with a generation.
func scimChange(a, b *config.Config) bool {
	prints := func(c *config.Config) map[string]string {
		out := map[string]string{}
		for i := range c.Accounts {
			if t := c.Accounts[i].Directory.Type; t == scim.Type || t == config.DirectoryConsole {
				out[c.Accounts[i].ID] = c.Accounts[i].Fingerprint()
			}
		}
		return out
	}
	return !maps.Equal(prints(a), prints(b))
}

// build makes a generation from cfg. When the cache config is unchanged the
// previous generation's cache is reused (the memory cache keeps its data)
// and closeCache is left nil.
func (d *daemon) build(cfg *config.Config, prev *generation) (*generation, error) {
	gen := &generation{cfg: cfg}
	if prev != nil && reflect.DeepEqual(prev.cfg.Cache, cfg.Cache) {
		gen.cache = prev.cache
	} else {
		c, closeFn, err := newCache(cfg, d.env)
		if err != nil {
			return nil, err
		}
		gen.cache, gen.closeCache = c, closeFn
	}
	fail := func(err error) (*generation, error) {
		if gen.closeCache != nil {
			gen.closeCache()
		}
		gen.db.Close()
		gen.closeTracing()
		return nil, err
	}
	mctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	if gen.db, err = openDatabase(mctx, cfg, d.env, d.log); err != nil {
		return fail(err)
	}
	accounts, err := newAccounts(mctx, cfg, d.env, gen.db)
	if err != nil {
		return fail(err)
	}
	scimService, err := newSCIM(mctx, cfg, d.env, gen.db, gen.trigger, d.log)
	if err != nil {
		return fail(err)
	}
	hooks, err := eventHooks(cfg, d.env)
	if err != nil {
		return fail(err)
	}
	auth, err := d.apiCredentials(cfg, hooks)
	if err != nil {
		return fail(err)
	}
	if scimService != nil {
		auth.SCIM = scimService.auth
	}
	var publishTo engine.Cache
	gen.ha, publishTo = newReplicaHA(cfg, d.env, gen.cache, d.log)
	publishTo = gen.db.record(publishTo)
	if gen.notifier, err = newNotifier(cfg.Notify, d.env, d.log); err != nil {
		return fail(err)
	}
	if gen.sched, err = d.newScheduler(gen); err != nil {
		return fail(err)
	}
	if gen.tracing, err = telemetry.New(cfg.Telemetry, version); err != nil {
		return fail(err)
	}
	gen.engine = &observedEngine{Engine: engine.New(publishTo, engineAccounts(accounts), d.log, time.Now), metrics: d.metrics, ha: gen.ha, notifier: gen.notifier}
	gen.engine.SetTracer(gen.tracing.Tracer)
	if prev != nil {
		gen.engine.KeepReports(prev.engine.Engine)
	}
	if gen.live, err = newLiveAccounts(d, gen, accounts); err != nil {
		return fail(err)
	}
	var accountsRoutes *accountsapi.Options
	if gen.db.registry != nil {
		accountsRoutes = &accountsapi.Options{Registry: gen.db.registry, Live: gen.live, Kinds: d.env.kinds, Network: gen.live.network}
		auth.Tenants = accountsapi.TenantTokens{Registry: gen.db.registry}
	}
	// Console accounts publish through the plain writer: their actions are
	// serialised by PostgreSQL, on whichever replica takes the request.
	svc, closeConsole, err := newConsole(mctx, cfg, gen.db, gen.db.record(gen.cache), d.log)
	if err != nil {
		return fail(err)
	}
	gen.closeConsole = closeConsole
	gen.syncer = newSyncer(gen.engine, svc)
	var consoleRoutes consoleapi.Console
	if svc != nil {
		consoleRoutes = svc
	}
	var accessHistory httpapi.History
	if gen.db.history != nil {
		accessHistory = gen.db.history
	}
	pages, err := d.consolePages(gen, auth, svc, accessHistory)
	if err != nil {
		return fail(err)
	}
	var h http.Handler = httpapi.New(httpapi.Options{
		Checker: gen.cache, Status: gen.cache, Syncer: gen.syncer, Console: consoleRoutes, History: accessHistory, SCIM: scimService.routes(), Accounts: accountsRoutes, Pages: pages,
		Auth: auth, Hosts: apimux.HostsFor(d.listenAddr, cfg.API.AllowedHosts),
		Staleness: cfg.API.ReadyMaxStaleness, Metrics: d.metrics.Handler(), Recorder: d.metrics,
		Reload: d.requestReload, Trigger: gen.trigger, NextRun: gen.nextRun, Scheduler: func() any { return gen.sched.Stats() }, Progress: gen.engine.Progress, Ownership: gen.ha.statusFunc(), Log: d.log.Named("api"),
	})
	d.handler.Store(&h)
	return gen, nil
}

// requestReload asks the serve loop to reload and waits for the outcome.
func (d *daemon) requestReload(ctx context.Context) error {
	req := reloadRequest{reply: make(chan error, 1)}
	select {
	case d.reloads <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// trigger queues an immediate incremental pass ahead of scheduled ones; a
// pass already queued absorbs it.
func (g *generation) trigger(account string) bool {
	return g.sched.Trigger(account, string(engine.ModeIncremental))
}

// schedulingGranularity batches the wake-ups of passes due within 50 ms
// of each other (thousands of accounts on a 5 s schedule).
const schedulingGranularity = 50 * time.Millisecond

// newScheduler builds the generation's scheduler with every account's jobs
// (a full pass at start and on schedule.full, incremental passes on
// schedule.incremental).
func (d *daemon) newScheduler(gen *generation) (*schedule.Scheduler, error) {
	sched := schedule.New(func(ctx context.Context, account, mode string, triggered bool) {
		opts := engine.Options{Mode: engine.Mode(mode)}
		// A scheduled incremental pass finding the account busy has
		// nothing to add; a triggered one (an event hook) waits its turn.
		opts.SkipIfBusy = opts.Mode == engine.ModeIncremental && !triggered
		_, _ = gen.syncer.Run(ctx, account, opts)
	}, schedule.Options{Workers: gen.cfg.Schedule.MaxConcurrentPasses, Log: d.log.Named("schedule"), Granularity: schedulingGranularity})
	for _, a := range gen.cfg.Accounts {
		err := sched.Put(a.ID, []schedule.Job{
			{Mode: string(engine.ModeFull), Spec: a.Schedule.Full, Timeout: d.env.passDeadline(engine.ModeFull), RunAtStart: true},
			{Mode: string(engine.ModeIncremental), Spec: a.Schedule.Incremental, Timeout: d.env.passDeadline(engine.ModeIncremental)},
		})
		if err != nil {
			return nil, fmt.Errorf("account %s: %w", a.ID, err)
		}
	}
	return sched, nil
}

// start runs the generation's schedules and triggered passes until stop.
func (d *daemon) start(ctx context.Context, gen *generation) {
	ctx, gen.cancel = context.WithCancel(ctx)
	gen.done = make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		gen.notifier.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		gen.sched.Run(ctx)
	}()
	wg.Add(2)
	go func() {
		defer wg.Done()
		gen.db.prune(ctx, d.log.Named("history"))
	}()
	go func() {
		defer wg.Done()
		gen.live.follow(ctx)
	}()
	if gen.ha != nil {
		wg.Add(2)
		go func() {
			defer wg.Done()
			gen.ha.serve(ctx)
		}()
		go func() {
			defer wg.Done()
			gen.passOnAcquire(ctx)
		}()
	}
	go func() {
		wg.Wait()
		close(gen.done)
	}()
}

// nextRun tells when an account's scheduled pass of a mode runs next.
func (g *generation) nextRun(account string, mode engine.Mode) time.Time {
	return g.sched.Next(account, string(mode))
}

// passOnAcquire starts a pass as soon as this replica acquires an account
// (at start-up or when taking over from a replica that died), rather than
// at the account's next scheduled tick; the HA gate makes it a full pass.
func (g *generation) passOnAcquire(ctx context.Context) {
	seen := map[string]string{}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	scanned := uint64(0)
	for {
		// Scan the accounts only when the lease manager acquired one
		// since the last scan (an idle tick costs nothing with thousands
		// of accounts).
		if n := g.ha.Acquisitions(); n != scanned {
			scanned = n
			for _, id := range g.engine.Accounts() {
				if token, ok := g.ha.Token(id); ok && token != seen[id] {
					seen[id] = token
					g.trigger(id)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// stop cancels the generation's passes and waits for them to end.
func (d *daemon) stop(gen *generation) {
	if gen.cancel == nil {
		return
	}
	gen.cancel()
	<-gen.done
	if gen.closeConsole != nil {
		gen.closeConsole()
	}
	gen.db.Close()
	gen.closeTracing()
}

// closeTracing exports the generation's buffered spans (bounded by
// shutdownTimeout) and stops its exporter.
func (g *generation) closeTracing() {
	if g.tracing.Shutdown == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	_ = g.tracing.Shutdown(ctx) // failures were logged by the SDK's handler
	g.tracing.Shutdown = nil
}

// observedEngine records every pass in the metrics.
type observedEngine struct {
	*engine.Engine
	metrics  *metrics.Metrics
	ha       *replicaHA // runs only passes of accounts this replica owns
	notifier *notify.Notifier
}

func (o *observedEngine) Run(ctx context.Context, account string, opts engine.Options) (engine.Report, error) {
	rep, err := o.ha.gate(ctx, account, opts, o.Engine.Run)
	if !errors.Is(err, engine.ErrBusy) && !errors.Is(err, errNotOwned) {
		o.metrics.ObserveRun(rep)
		o.notifier.Observe(rep, opts.Force)
	}
	return rep, err
}

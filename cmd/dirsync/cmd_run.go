package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/dirsync/dirsync/config"
	"github.com/dirsync/dirsync/sync/engine"
	"github.com/dirsync/dirsync/sync/httpapi"
	"github.com/dirsync/dirsync/sync/schedule"
)

// Run deadlines. A pass that runs longer is cancelled and counts as failed.
const (
	fullRunTimeout        = 15 * time.Minute
	incrementalRunTimeout = 2 * time.Minute
	shutdownTimeout       = 8 * time.Second
)

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
	return serve(ctx, cfg, e, log)
}

// serve runs the daemon until ctx ends.
func serve(ctx context.Context, cfg *config.Config, e env, log *zap.Logger) error {
	c, closeCache, err := newCache(cfg, e)
	if err != nil {
		return err
	}
	defer closeCache()
	if err := c.Ping(ctx); err != nil {
		// Not fatal: syncs fail (and /readyz says so) until it is reachable.
		log.Error("access cache unreachable at start-up; will keep trying", zap.Error(err))
	}
	accounts, err := newAccounts(cfg, e, log)
	if err != nil {
		return err
	}
	eng := engine.New(c, accounts, log, time.Now)
	token, err := config.ReadSecret(cfg.API.AdminTokenFile, cfg.API.AdminTokenEnv, e.getenv)
	if err != nil {
		return fmt.Errorf("api.admin_token: %w", err)
	}
	handler := httpapi.New(httpapi.Options{
		Checker: c, Status: c, Syncer: eng, AdminToken: token, Log: log.Named("api"),
	})

	ln, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return fmt.Errorf("api.listen: %w", err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}

	var jobs []schedule.Job
	for _, a := range cfg.Accounts {
		id := a.ID
		jobs = append(jobs,
			schedule.Job{Name: id + "/full", Spec: a.Schedule.Full, Timeout: fullRunTimeout, RunAtStart: true,
				Func: func(ctx context.Context) { _, _ = eng.Run(ctx, id, engine.Options{Mode: engine.ModeFull}) }},
			schedule.Job{Name: id + "/incremental", Spec: a.Schedule.Incremental, Timeout: incrementalRunTimeout,
				Func: func(ctx context.Context) {
					_, _ = eng.Run(ctx, id, engine.Options{Mode: engine.ModeIncremental, SkipIfBusy: true})
				}},
		)
	}

	log.Info("dirsync started", zap.String("version", version), zap.String("listen", ln.Addr().String()),
		zap.String("cache", cfg.Cache.Backend), zap.Int("accounts", len(cfg.Accounts)))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	g.Go(func() error { return schedule.Run(gctx, log.Named("schedule"), jobs) })
	err = g.Wait()
	log.Info("dirsync stopped")
	return err
}

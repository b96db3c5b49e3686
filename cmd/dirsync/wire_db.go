package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/entitlement/history"
	"github.com/dirsync/dirsync/internal/entitlement/historydb"
	"github.com/dirsync/dirsync/internal/entitlement/mapper"
	"github.com/dirsync/dirsync/internal/pgstore"
	"github.com/dirsync/dirsync/internal/secretbox"
	"github.com/dirsync/dirsync/internal/sync/engine"
	"github.com/dirsync/dirsync/internal/sync/registry"
)

// database is dirsync's PostgreSQL (console.postgres_dsn): one pool shared
// by the console accounts and the access history. Its zero value (no
// database configured) records no history.
type database struct {
	pool    *pgxpool.Pool
	history *historydb.Store
	// registry holds the accounts created through the accounts API.
	registry  *registry.Store
	recorder  *history.Recorder
	retention time.Duration
}

// openDatabase connects and migrates when console.postgres_dsn is set.
func openDatabase(ctx context.Context, cfg *config.Config, e env, log *zap.Logger) (*database, error) {
	if cfg.Console.PostgresDSNFile == "" && cfg.Console.PostgresDSNEnv == "" {
		return &database{}, nil
	}
	dsn, err := config.ReadSecret(cfg.Console.PostgresDSNFile, cfg.Console.PostgresDSNEnv, e.getenv)
	if err != nil {
		return nil, fmt.Errorf("console.postgres_dsn: %w", err)
	}
	pool, err := pgstore.Connect(ctx, dsn, cfg.Console.MaxConns)
	if err != nil {
		return nil, fmt.Errorf("console.postgres_dsn: %w", err)
	}
	st, err := historydb.Open(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, err
	}
	keys, err := secretKeys(cfg.Console, e)
	if err != nil {
		pool.Close()
		return nil, err
	}
	reg, err := registry.Open(ctx, pool, keys)
	if err != nil {
		pool.Close()
		return nil, err
	}
	if n, err := reg.Reseal(ctx); err != nil {
		log.Warn("re-sealing account secrets with the current key failed; will retry at the next start", zap.Error(err))
	} else if n > 0 {
		log.Info("account secrets re-sealed with the current key", zap.Int("accounts", n))
	}
	return &database{pool: pool, history: st, registry: reg, recorder: history.NewRecorder(st, log.Named("history")),
		retention: cfg.Console.HistoryRetention}, nil
}

// secretKeys reads console.secret_key_file (and the previous keys) into
// the keyring that seals API accounts' secrets; nil when none is set.
func secretKeys(c config.Console, e env) (*secretbox.Keyring, error) {
	if c.SecretKeyFile == "" && c.SecretKeyEnv == "" {
		return nil, nil
	}
	text, err := config.ReadSecret(c.SecretKeyFile, c.SecretKeyEnv, e.getenv)
	if err != nil {
		return nil, fmt.Errorf("console.secret_key: %w", err)
	}
	primary, err := secretbox.ParseKey(text)
	if err != nil {
		return nil, fmt.Errorf("console.secret_key: %w", err)
	}
	var previous [][]byte
	for i, f := range c.PreviousSecretKeyFiles {
		text, err := config.ReadSecret(f, "", e.getenv)
		if err != nil {
			return nil, fmt.Errorf("console.previous_secret_key_files[%d]: %w", i, err)
		}
		k, err := secretbox.ParseKey(text)
		if err != nil {
			return nil, fmt.Errorf("console.previous_secret_key_files[%d]: %w", i, err)
		}
		previous = append(previous, k)
	}
	return secretbox.NewKeyring(primary, previous...)
}

// Close releases the pool.
func (db *database) Close() {
	if db != nil && db.pool != nil {
		db.pool.Close()
	}
}

// record returns c with every published change also written to the access
// history (c itself when no database is configured).
func (db *database) record(c engine.Cache) engine.Cache {
	if db.recorder == nil {
		return c
	}
	return historyCache{Cache: c, rec: db.recorder}
}

// historyCache is a cache writer whose Apply records the access history.
type historyCache struct {
	engine.Cache
	rec *history.Recorder
}

func (h historyCache) Apply(ctx context.Context, account string, changes []mapper.Change, at time.Time) error {
	return h.rec.Apply(ctx, h.Cache, account, changes, at)
}

// prune deletes history older than the retention every few hours until
// ctx ends.
func (db *database) prune(ctx context.Context, log *zap.Logger) {
	if db.history == nil || db.retention <= 0 {
		return
	}
	tick := time.NewTicker(6 * time.Hour)
	defer tick.Stop()
	for {
		n, err := db.history.Prune(ctx, time.Now().Add(-db.retention))
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("access history pruning failed; will retry", zap.Error(err))
		case n > 0:
			log.Info("access history pruned", zap.Int64("deleted", n), zap.Duration("retention", db.retention))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

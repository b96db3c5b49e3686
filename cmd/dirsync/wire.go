package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/entitlement/mapper"
	"github.com/dirsync/dirsync/internal/entitlement/store"
	"github.com/dirsync/dirsync/internal/pgstore"
	"github.com/dirsync/dirsync/internal/sync/apimux"
	"github.com/dirsync/dirsync/internal/sync/engine"
	"github.com/dirsync/dirsync/internal/sync/notify"
)

// loadConfig reads and validates the config named by a --config flag.
func loadConfig(path string, e env) (*config.Config, error) {
	if path == "" {
		return nil, usagef("no config: pass --config FILE or set DIRSYNC_CONFIG")
	}
	cfg, err := config.Load(path, directory.ConfigKinds(e.kinds), e.getenv)
	if err != nil {
		return nil, usageError{err}
	}
	return cfg, nil
}

func newLogger(c config.Log, e env) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, err
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey = "ts"
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if c.Format == "console" {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, zapcore.AddSync(e.stderr), level)
	return zap.New(core), nil
}

// cache is what the commands need of a cache backend.
type cache interface {
	engine.Cache
	Check(ctx context.Context, email string) (entitlement.Decision, error)
	Ping(ctx context.Context) error
}

// newCache builds the configured cache. close releases its connections.
func newCache(cfg *config.Config, e env) (c cache, closeFn func(), err error) {
	switch cfg.Cache.Backend {
	case config.BackendMemory:
		return store.NewMemory(), func() {}, nil
	case config.BackendRedis:
		client, err := newRedisClient(cfg.Cache.Redis, e)
		if err != nil {
			return nil, nil, err
		}
		return store.NewRedis(client, cfg.Cache.Redis.KeyPrefix), func() { client.Close() }, nil
	}
	return nil, nil, fmt.Errorf("cache backend %q", cfg.Cache.Backend)
}

func newRedisClient(r config.Redis, e env) (redis.UniversalClient, error) {
	password, err := config.ReadSecret(r.PasswordFile, r.PasswordEnv, e.getenv)
	if err != nil {
		return nil, fmt.Errorf("cache.redis.password: %w", err)
	}
	opts := &redis.UniversalOptions{
		Addrs:        r.Addrs,
		MasterName:   r.MasterName,
		Username:     r.Username,
		Password:     password,
		DB:           r.DB,
		DialTimeout:  2 * time.Second,
		ReadTimeout:  2 * time.Second,
		WriteTimeout: 2 * time.Second,
	}
	if r.TLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if r.CAFile != "" {
			pool, err := config.ReadCAFile(r.CAFile)
			if err != nil {
				return nil, fmt.Errorf("cache.redis.ca_file: %w", err)
			}
			tc.RootCAs = pool
		}
		opts.TLSConfig = tc
	}
	return redis.NewUniversalClient(opts), nil
}

// account is a directory account's part of the engine and what the
// daemon exports of its source.
type account struct {
	engine.Account
	// kind is the account's directory type (the metrics' source label).
	kind   string
	source directory.Source
}

// newAccounts opens, through its kind, the source of every account that
// has one (console accounts are served from PostgreSQL by the console
// service). A kind that keeps its data in dirsync's database (scim) gets
// db's pool; ctx bounds bringing its tables up to date.
func newAccounts(ctx context.Context, cfg *config.Config, e env, db *database) ([]account, error) {
	var out []account
	for _, a := range cfg.Accounts {
		if a.Directory.Type == config.DirectoryConsole {
			continue
		}
		acct, err := openAccount(ctx, &a, e.getenv, e.kinds, db)
		if err != nil {
			return nil, err
		}
		out = append(out, acct)
	}
	return out, nil
}

// openAccount opens, through its kind, the source of one account (not a
// console account); getenv resolves its *_env secrets.
func openAccount(ctx context.Context, a *config.Account, getenv func(string) string, kinds []directory.Kind, db *database) (account, error) {
	kind, ok := directory.KindOf(kinds, a.Directory.Type)
	if !ok { // config validation accepts only the kinds' types
		return account{}, fmt.Errorf("account %s: directory type %q has no source kind in this build", a.ID, a.Directory.Type)
	}
	var src directory.Source
	var err error
	switch {
	case kind.OpenStored != nil && db.pool == nil: // validation requires the DSN
		err = fmt.Errorf("console.postgres_dsn: required by directory type %s", a.Directory.Type)
	case kind.OpenStored != nil:
		src, err = kind.OpenStored(ctx, a, pgstore.DB{Pool: db.pool})
	default:
		src, err = kind.Open(a, getenv)
	}
	if err != nil {
		return account{}, fmt.Errorf("account %s: %w", a.ID, err)
	}
	return account{
		Account: engine.Account{
			Policy: policyOf(*a),
			Source: src,
			Safeguard: engine.Safeguard{
				MaxLostAccessPercent: *a.Safeguard.MaxLostAccessPercent,
				MaxLostAccessUsers:   *a.Safeguard.MaxLostAccessUsers,
				Window:               *a.Safeguard.Window,
			},
		},
		kind:   a.Directory.Type,
		source: src,
	}, nil
}

// engineAccounts is the engine's view of accounts.
func engineAccounts(accounts []account) []engine.Account {
	out := make([]engine.Account, len(accounts))
	for i, a := range accounts {
		out[i] = a.Account
	}
	return out
}

// eventHooks reads the event hook credential of every account whose kind
// accepts event hooks and that configures one.
func eventHooks(cfg *config.Config, e env) ([]apimux.OktaHookSecret, error) {
	var hooks []apimux.OktaHookSecret
	for _, a := range cfg.Accounts {
		kind, ok := directory.KindOf(e.kinds, a.Directory.Type)
		if !ok || kind.EventHook == nil {
			continue
		}
		hook, ok, err := kind.EventHook(&a, e.getenv)
		if err != nil {
			return nil, fmt.Errorf("account %s: %w", a.ID, err)
		}
		if !ok {
			continue
		}
		secret, err := apimux.NewToken(hook.Source, hook.Secret)
		if err != nil {
			return nil, fmt.Errorf("account %s: %w", a.ID, err)
		}
		hooks = append(hooks, apimux.OktaHookSecret{Account: a.ID, Header: hook.Header, Secret: secret})
	}
	return hooks, nil
}

func policyOf(a config.Account) mapper.Policy {
	p := mapper.Policy{Account: a.ID, ClaimedDomains: a.ClaimedDomains, AccessGroup: a.AccessGroup}
	for _, b := range a.Bindings {
		p.Bindings = append(p.Bindings, mapper.Binding{Group: b.Group, Permission: entitlement.Permission(b.Permission)})
	}
	return p
}

// newNotifier builds the webhook notifier of notify.webhooks (one with no
// receivers when none are configured).
func newNotifier(n config.Notify, e env, log *zap.Logger) (*notify.Notifier, error) {
	var hooks []notify.Webhook
	for i, w := range n.Webhooks {
		secret, err := config.ReadSecret(w.SecretFile, w.SecretEnv, e.getenv)
		if err != nil {
			return nil, fmt.Errorf("notify.webhooks[%d].secret: %w", i, err)
		}
		hooks = append(hooks, notify.Webhook{URL: w.URL, Secret: secret, Events: w.Events, Slack: w.Format == "slack",
			SyncFailedAfter: w.SyncFailedAfter, Timeout: w.Timeout})
	}
	return notify.New(hooks, notify.Options{Log: log.Named("notify")}), nil
}

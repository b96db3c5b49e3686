package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/store"

	"github.com/dirsync/dirsync/internal/entitlement/mapper"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory/ldapdir"
	"github.com/dirsync/dirsync/internal/directory/ldapentry"
	"github.com/dirsync/dirsync/internal/directory/ldif"
	"github.com/dirsync/dirsync/internal/directory/okta"
	"github.com/dirsync/dirsync/internal/sync/engine"
	"github.com/dirsync/dirsync/internal/sync/notify"
)

// loadConfig reads and validates the config named by a --config flag.
func loadConfig(path string, e env) (*config.Config, error) {
	if path == "" {
		return nil, usagef("no config: pass --config FILE or set DIRSYNC_CONFIG")
	}
	cfg, err := config.Load(path, e.getenv)
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
			pem, err := os.ReadFile(r.CAFile)
			if err != nil {
				return nil, fmt.Errorf("cache.redis.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("cache.redis.ca_file: no PEM certificates in %s", r.CAFile)
			}
			tc.RootCAs = pool
		}
		opts.TLSConfig = tc
	}
	return redis.NewUniversalClient(opts), nil
}

// errUnsupportedDirectory is returned for directory types this build cannot
// read yet.
var errUnsupportedDirectory = errors.New("directory type not available in this build")

// newAccounts builds the engine's view of every configured account.
func newAccounts(cfg *config.Config, e env, log *zap.Logger) ([]engine.Account, error) {
	var out []engine.Account
	for _, a := range cfg.Accounts {
		if a.Directory.Type == config.DirectoryConsole {
			continue // served from PostgreSQL by the console service
		}
		src, err := newSource(a, e, log)
		if err != nil {
			return nil, fmt.Errorf("account %s: %w", a.ID, err)
		}
		out = append(out, engine.Account{
			Policy: policyOf(a),
			Source: src,
			Safeguard: engine.Safeguard{
				MaxLostAccessPercent: *a.Safeguard.MaxLostAccessPercent,
				MaxLostAccessUsers:   *a.Safeguard.MaxLostAccessUsers,
			},
		})
	}
	return out, nil
}

func policyOf(a config.Account) mapper.Policy {
	p := mapper.Policy{Account: a.ID, ClaimedDomains: a.ClaimedDomains, AccessGroup: a.AccessGroup}
	for _, b := range a.Bindings {
		p.Bindings = append(p.Bindings, mapper.Binding{Group: b.Group, Permission: entitlement.Permission(b.Permission)})
	}
	return p
}

func newSource(a config.Account, e env, log *zap.Logger) (engine.Source, error) {
	d := a.Directory
	switch d.Type {
	case config.DirectoryActiveDirectory, config.DirectoryLDAP:
		password, err := config.ReadSecret(d.LDAP.BindPasswordFile, d.LDAP.BindPasswordEnv, e.getenv)
		if err != nil {
			return nil, fmt.Errorf("directory.ldap.bind_password: %w", err)
		}
		tc, err := ldapdir.TLSConfigFromCAFile(d.LDAP.CAFile)
		if err != nil {
			return nil, fmt.Errorf("directory.ldap.%w", err)
		}
		return ldapdir.New(ldapdir.OptionsFromConfig(d, password, tc))
	case config.DirectoryOkta:
		token, err := config.ReadSecret(d.Okta.TokenFile, d.Okta.TokenEnv, e.getenv)
		if err != nil {
			return nil, fmt.Errorf("directory.okta.token: %w", err)
		}
		return okta.New(okta.OptionsFromAccount(&a, token))
	case config.DirectoryLDIF:
		return ldif.NewSource(d.LDIF.Path, ldapentry.Options{
			EmailAttributes:   d.LDIF.EmailAttributes,
			DisabledAttribute: d.LDIF.DisabledAttribute,
			DisabledValue:     d.LDIF.DisabledValue,
		}, time.Now), nil
	}
	return nil, fmt.Errorf("%w: %s", errUnsupportedDirectory, d.Type)
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

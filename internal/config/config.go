// Package config is dirsync's configuration file schema: one strict YAML
// document, decoded with unknown fields rejected, defaults applied, then
// validated so that every problem is reported at once with its path and fix.
//
// The schema is a public contract (see docs/configuration.md): fields are
// only ever added, never renamed or removed.
package config

import (
	"time"

	"github.com/dirsync/dirsync/internal/netpolicy"

	"go.yaml.in/yaml/v3"
)

// Config is the whole file.
type Config struct {
	Cache    Cache    `yaml:"cache"`
	API      API      `yaml:"api"`
	Schedule Schedule `yaml:"schedule"`
	Log      Log      `yaml:"log"`
	// HA configures replicas sharing one Redis cache (lease per account).
	HA HA `yaml:"ha"`
	// Notify configures webhooks told about holds, failing and recovered
	// accounts and releases.
	Notify Notify `yaml:"notify"`
	// AccountsAPI configures accounts created through the API.
	AccountsAPI AccountsAPI `yaml:"accounts_api"`
	// Telemetry configures OpenTelemetry traces of passes (off by default).
	Telemetry Telemetry `yaml:"telemetry"`
	// Console configures the store of console-managed accounts (directory
	// type console); required when any account uses it.
	Console  Console   `yaml:"console"`
	Accounts []Account `yaml:"accounts"`

	// dir is the directory of the file the config was read from; relative
	// paths inside the file are resolved against it.
	dir string
	// kinds are the source kinds the config was parsed with (ParseAccount
	// uses them again).
	kinds []SourceKind
}

// Cache selects and configures the access cache the sign-in service reads.
type Cache struct {
	// Backend is "redis" (default) or "memory" (in-process, for trials: only
	// this process and its HTTP API can read it).
	Backend string `yaml:"backend"`
	Redis   Redis  `yaml:"redis"`
}

// Redis configures the go-redis UniversalClient.
type Redis struct {
	// Addrs: one address is a standalone server; several are a cluster;
	// with MasterName set they are Sentinel addresses. Default 127.0.0.1:6379.
	Addrs        []string `yaml:"addrs"`
	MasterName   string   `yaml:"master_name"`
	Username     string   `yaml:"username"`
	PasswordFile string   `yaml:"password_file"`
	PasswordEnv  string   `yaml:"password_env"`
	DB           int      `yaml:"db"`
	TLS          bool     `yaml:"tls"`
	CAFile       string   `yaml:"ca_file"`
	// KeyPrefix starts every key dirsync writes. Default "dirsync".
	KeyPrefix string `yaml:"key_prefix"`
}

// API configures the HTTP API (sign-in reads and ops endpoints).
type API struct {
	// Listen is the address to serve on. Default 127.0.0.1:8080.
	Listen string `yaml:"listen"`
	// AdminTokenFile (or AdminTokenEnv) holds the bearer token admin
	// endpoints require. Without one (loopback only) the daemon generates
	// a per-start token for state-changing calls.
	AdminTokenFile string `yaml:"admin_token_file"`
	AdminTokenEnv  string `yaml:"admin_token_env"`
	// ReadTokenFile (or ReadTokenEnv), when set, is a bearer token that
	// GET /v1/access/{email} requires (the admin token is accepted too).
	// Default: the sign-in read needs no token, which only a loopback
	// address may have.
	ReadTokenFile string `yaml:"read_token_file"`
	ReadTokenEnv  string `yaml:"read_token_env"`
	// AllowedHosts are host names (without port) the API answers in the
	// Host header besides IP addresses and localhost: a guard against DNS
	// rebinding. Default: none on a loopback address; any name on another
	// address while the list is empty.
	AllowedHosts []string `yaml:"allowed_hosts"`
	// ReadyMaxStaleness: /readyz fails when an account's last successful
	// sync is older than this. Default 0: any successful sync will do (a
	// directory outage then alerts through metrics instead of taking the
	// sign-in read path out of service).
	ReadyMaxStaleness time.Duration `yaml:"ready_max_staleness"`
}

// Schedule holds robfig/cron/v3 specs ("@every 5s", "0 * * * *").
type Schedule struct {
	// Full is the periodic full reconciliation. Default "@every 1h".
	Full string `yaml:"full"`
	// Incremental is the frequent change-detection pass. Default "@every 5s".
	Incremental string `yaml:"incremental"`
	// MaxConcurrentPasses bounds the passes (of all accounts) running at
	// once; the others queue. Top level only. Default 0: twice the number
	// of CPUs, at least 4.
	MaxConcurrentPasses int `yaml:"max_concurrent_passes"`
}

// Log configures the zap logger.
type Log struct {
	// Level is debug, info (default), warn or error.
	Level string `yaml:"level"`
	// Format is json (default) or console.
	Format string `yaml:"format"`
}

// Console configures the PostgreSQL database that is the system of record
// for console-managed accounts (see docs/console-accounts.md).
type Console struct {
	// PostgresDSNFile (or PostgresDSNEnv) holds the connection string, e.g.
	// postgres://dirsync:secret@db.example:5432/dirsync?sslmode=verify-full.
	// It is a secret (it may carry the password) and never logged.
	PostgresDSNFile string `yaml:"postgres_dsn_file"`
	PostgresDSNEnv  string `yaml:"postgres_dsn_env"`
	// MaxConns bounds the connection pool. Default 8.
	MaxConns int `yaml:"max_conns"`
	// HistoryRetention is how long the access history (every published
	// change, kept when a database is configured) is kept. Default 8760h
	// (a year); 0 with the default applied means the default.
	HistoryRetention time.Duration `yaml:"history_retention"`
	// SecretKeyFile (or SecretKeyEnv) holds the 32-byte key (64 hex digits
	// or base64) that seals the directory secrets of accounts created
	// through the API (AES-256-GCM). Without it, such accounts cannot carry
	// secrets.
	SecretKeyFile string `yaml:"secret_key_file"`
	SecretKeyEnv  string `yaml:"secret_key_env"`
	// PreviousSecretKeyFiles are older keys, used only to open values
	// sealed before a rotation (dirsync re-seals them with the current key
	// at start-up).
	PreviousSecretKeyFiles []string `yaml:"previous_secret_key_files"`
}

// AccountConsole configures a console-managed account.
type AccountConsole struct {
	// AutoJoinPermission is what users who register with an email in a
	// claimed domain of an enterprise account get: pro, basic (default) or
	// none. Team accounts join by invitation only.
	AutoJoinPermission string `yaml:"auto_join_permission"`
}

// Account is one tenant: a set of claimed domains, a directory and the
// bindings from its groups to permissions.
type Account struct {
	// ID is stable and matches [a-z0-9-]+; it appears in cache keys.
	ID   string `yaml:"id"`
	Name string `yaml:"name"`
	// Type is "enterprise" (default) or "team".
	Type           string    `yaml:"type"`
	ClaimedDomains []string  `yaml:"claimed_domains"`
	Directory      Directory `yaml:"directory"`
	// AccessGroup, when set, is a group every allowed user must belong to.
	AccessGroup string    `yaml:"access_group"`
	Bindings    []Binding `yaml:"bindings"`
	Safeguard   Safeguard `yaml:"safeguard"`
	// Schedule overrides the top-level schedule for this account; empty
	// fields inherit.
	Schedule Schedule `yaml:"schedule"`
	// Console configures an account whose directory type is console.
	Console AccountConsole `yaml:"console"`

	// Network, when set, restricts the addresses the account's source may
	// connect to (accounts created through the API: see package
	// netpolicy). Not part of the file's schema; nil for accounts from the
	// file.
	Network *netpolicy.Policy `yaml:"-" json:"-"`
}

// Directory selects the account's source of users and groups.
type Directory struct {
	// Type is one of the directory types of the build's source kinds
	// (active_directory, ldap, okta, ldif) or console (users and
	// permissions managed through dirsync's admin API, stored in
	// PostgreSQL; no bindings). Each source kind configures its type
	// with its own section beside type (ldap, okta, ldif; see SourceKind).
	Type string `yaml:"type"`

	// raw holds each section's YAML until decodeSections decodes it with
	// its kind; section is then the decoded section of Type's kind (see
	// SectionOf).
	raw     map[string]*yaml.Node
	section any
}

// Binding grants a permission to the (transitive) members of a group.
type Binding struct {
	// Group is a DN (LDAP/AD/LDIF, compared case-insensitively) or an Okta
	// group id; a group may also be named by its exact name.
	Group string `yaml:"group"`
	// Permission is pro or basic.
	Permission string `yaml:"permission"`
}

// Safeguard configures the mass-change breaker: a sync that would take
// access away from more than the smaller of the two limits is held.
type Safeguard struct {
	// MaxLostAccessPercent of currently allowed users. Default 20.
	MaxLostAccessPercent *float64 `yaml:"max_lost_access_percent"`
	// MaxLostAccessUsers. Default 500.
	MaxLostAccessUsers *int `yaml:"max_lost_access_users"`
	// Window, when positive, makes the limits apply to the losses of all
	// the passes within it rather than of one pass, so that a mass removal
	// arriving piecemeal (a SCIM push, one request per user) is held like
	// one arriving at once. Default: the source kind's (1h for scim), else
	// 0 (each pass alone).
	Window *time.Duration `yaml:"window"`
}

// DirectoryConsole is the directory type of console-managed accounts:
// no polled source, users and permissions in PostgreSQL. The other
// directory types belong to source kinds (see SourceKind).
const DirectoryConsole = "console"

// Account types.
const (
	AccountEnterprise = "enterprise"
	AccountTeam       = "team"
)

// DefaultConsoleMaxConns is the default PostgreSQL pool size.
const DefaultConsoleMaxConns = 8

// DefaultHistoryRetention is the default console.history_retention.
const DefaultHistoryRetention = 8760 * time.Hour

// Cache backends.
const (
	BackendRedis  = "redis"
	BackendMemory = "memory"
)

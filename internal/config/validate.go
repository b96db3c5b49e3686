package config

import (
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/dirsync/dirsync/internal/mailaddr"
)

// Defaults, also documented in docs/configuration.md.
const (
	DefaultRedisAddr            = "127.0.0.1:6379"
	DefaultKeyPrefix            = "dirsync"
	DefaultListen               = "127.0.0.1:8080"
	DefaultFullSchedule         = "@every 1h"
	DefaultIncrementalSchedule  = "@every 5s"
	DefaultMaxLostAccessPercent = 20.0
	DefaultMaxLostAccessUsers   = 500
)

func (c *Config) applyDefaults() {
	if c.Cache.Backend == "" {
		c.Cache.Backend = BackendRedis
	}
	if len(c.Cache.Redis.Addrs) == 0 {
		c.Cache.Redis.Addrs = []string{DefaultRedisAddr}
	}
	if c.Cache.Redis.KeyPrefix == "" {
		c.Cache.Redis.KeyPrefix = DefaultKeyPrefix
	}
	c.Cache.Redis.PasswordFile = c.path(c.Cache.Redis.PasswordFile)
	c.Cache.Redis.CAFile = c.path(c.Cache.Redis.CAFile)
	if c.API.Listen == "" {
		c.API.Listen = DefaultListen
	}
	c.API.AdminTokenFile = c.path(c.API.AdminTokenFile)
	c.API.ReadTokenFile = c.path(c.API.ReadTokenFile)
	c.Console.PostgresDSNFile = c.path(c.Console.PostgresDSNFile)
	if c.Console.MaxConns == 0 {
		c.Console.MaxConns = DefaultConsoleMaxConns
	}
	if c.Console.HistoryRetention == 0 {
		c.Console.HistoryRetention = DefaultHistoryRetention
	}
	if c.Schedule.Full == "" {
		c.Schedule.Full = DefaultFullSchedule
	}
	if c.Schedule.Incremental == "" {
		c.Schedule.Incremental = DefaultIncrementalSchedule
	}
	c.HA.applyDefaults()
	c.Notify.applyDefaults(c)
	c.AccountsAPI.applyDefaults(c)
	c.Telemetry.applyDefaults(c)
	c.Console.SecretKeyFile = c.path(c.Console.SecretKeyFile)
	for i, f := range c.Console.PreviousSecretKeyFiles {
		c.Console.PreviousSecretKeyFiles[i] = c.path(f)
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	for i := range c.Accounts {
		c.applyAccountDefaults(&c.Accounts[i])
	}
}

// applyAccountDefaults fills what a leaves unset: from the top-level
// schedule, the built-in defaults and the defaults of its source kind.
func (c *Config) applyAccountDefaults(a *Account) {
	if a.Type == "" {
		a.Type = AccountEnterprise
	}
	if a.Directory.Type == DirectoryConsole && a.Type == AccountEnterprise && a.Console.AutoJoinPermission == "" {
		a.Console.AutoJoinPermission = "basic"
	}
	for j, d := range a.ClaimedDomains {
		// ASCII folding only, as for emails; anything else stays as
		// written and fails validation.
		if n := mailaddr.NormalizeDomain(d); n != "" {
			a.ClaimedDomains[j] = n
		}
	}
	if a.Schedule.Full == "" {
		a.Schedule.Full = c.Schedule.Full
	}
	if a.Schedule.Incremental == "" {
		a.Schedule.Incremental = c.Schedule.Incremental
	}
	if a.Safeguard.MaxLostAccessPercent == nil {
		v := DefaultMaxLostAccessPercent
		a.Safeguard.MaxLostAccessPercent = &v
	}
	if a.Safeguard.MaxLostAccessUsers == nil {
		v := DefaultMaxLostAccessUsers
		a.Safeguard.MaxLostAccessUsers = &v
	}
	if a.Safeguard.Window == nil {
		var v time.Duration
		if k, ok := kindFor(c.kinds, a.Directory.Type); ok {
			v = k.safeguardWindow
		}
		a.Safeguard.Window = &v
	}
	applyDirectoryDefaults(&a.Directory, c.kinds, c.path)
}

// path resolves a relative file path against the config file's directory.
func (c *Config) path(p string) string {
	if p == "" || filepath.IsAbs(p) || c.dir == "" {
		return p
	}
	return filepath.Join(c.dir, p)
}

var (
	accountIDRE = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)
	domainRE    = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z][a-z0-9-]*[a-z0-9]$`)
)

type problems []Problem

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (c *Config) validate(getenv func(string) string) []Problem {
	var ps problems
	switch c.Cache.Backend {
	case BackendRedis:
		r := c.Cache.Redis
		for i, addr := range r.Addrs {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				ps.add(fmt.Sprintf("cache.redis.addrs[%d]", i), "%q is not host:port; write for example 127.0.0.1:6379", addr)
			}
		}
		if r.MasterName == "" && len(r.Addrs) > 1 && r.DB != 0 {
			ps.add("cache.redis.db", "a Redis Cluster (several addrs) has only db 0; remove db or list one address")
		}
		checkSecret(&ps, "cache.redis.password", r.PasswordFile, r.PasswordEnv, false, getenv)
		checkFile(&ps, "cache.redis.ca_file", r.CAFile)
		if r.CAFile != "" && !r.TLS {
			ps.add("cache.redis.ca_file", "set but tls is false; set tls: true to use it")
		}
		if strings.ContainsAny(r.KeyPrefix, " {}\t\n") {
			ps.add("cache.redis.key_prefix", "%q may not contain spaces or braces", r.KeyPrefix)
		}
	case BackendMemory:
	default:
		ps.add("cache.backend", "%q is not a backend; use redis or memory", c.Cache.Backend)
	}

	host, _, err := net.SplitHostPort(c.API.Listen)
	if err != nil {
		ps.add("api.listen", "%q is not host:port; write for example 127.0.0.1:8080", c.API.Listen)
	} else if !isLoopback(host) {
		if c.API.AdminTokenFile == "" && c.API.AdminTokenEnv == "" {
			ps.add("api.listen", "%q is not a loopback address and no admin token is set; set api.admin_token_file or listen on 127.0.0.1", c.API.Listen)
		}
		if c.API.ReadTokenFile == "" && c.API.ReadTokenEnv == "" {
			ps.add("api.read_token_file", "required because api.listen %q is not a loopback address: GET /v1/access/{email} answers user ids and group DNs; set it (the sign-in service sends it as Authorization: Bearer) or listen on 127.0.0.1", c.API.Listen)
		}
	}
	for i, h := range c.API.AllowedHosts {
		if h == "" || strings.ContainsAny(h, ":/ []@") {
			ps.add(fmt.Sprintf("api.allowed_hosts[%d]", i), "%q is not a host name; write it without scheme or port, e.g. dirsync.internal.example", h)
		}
	}
	checkSecret(&ps, "api.admin_token", c.API.AdminTokenFile, c.API.AdminTokenEnv, false, getenv)
	checkSecret(&ps, "api.read_token", c.API.ReadTokenFile, c.API.ReadTokenEnv, false, getenv)
	if c.API.ReadyMaxStaleness < 0 {
		ps.add("api.ready_max_staleness", "must not be negative; 0 disables the staleness check")
	}

	checkSchedule(&ps, "schedule.full", c.Schedule.Full)
	checkSchedule(&ps, "schedule.incremental", c.Schedule.Incremental)
	if n := c.Schedule.MaxConcurrentPasses; n < 0 || n > 10000 {
		ps.add("schedule.max_concurrent_passes", "%d is outside 0..10000; 0 picks twice the number of CPUs", n)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		ps.add("log.level", "%q is not a level; use debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		ps.add("log.format", "%q is not a format; use json or console", c.Log.Format)
	}

	c.HA.validate(&ps)
	c.Notify.validate(&ps, getenv)
	c.AccountsAPI.validate(&ps)
	c.Telemetry.validate(&ps)
	checkSecret(&ps, "console.secret_key", c.Console.SecretKeyFile, c.Console.SecretKeyEnv, false, getenv)
	for i, f := range c.Console.PreviousSecretKeyFiles {
		checkFile(&ps, fmt.Sprintf("console.previous_secret_key_files[%d]", i), f)
	}
	if len(c.Accounts) == 0 && c.Console.PostgresDSNFile == "" && c.Console.PostgresDSNEnv == "" {
		// With a database, accounts may all come from the accounts API.
		ps.add("accounts", "no accounts; add at least one account with an id, claimed_domains and a directory, or set console.postgres_dsn_file to create accounts through the accounts API")
	}
	taken := newTakenNames()
	needDatabase := false
	for i := range c.Accounts {
		c.validateAccount(&ps, i, fmt.Sprintf("accounts[%d]", i), &c.Accounts[i], taken, getenv)
		k, _ := kindFor(c.kinds, c.Accounts[i].Directory.Type)
		if c.Accounts[i].Directory.Type == DirectoryConsole || k.database {
			needDatabase = true
		}
	}
	if needDatabase {
		checkSecret(&ps, "console.postgres_dsn", c.Console.PostgresDSNFile, c.Console.PostgresDSNEnv, true, getenv)
	} else {
		checkSecret(&ps, "console.postgres_dsn", c.Console.PostgresDSNFile, c.Console.PostgresDSNEnv, false, getenv)
	}
	if c.Console.HistoryRetention < 24*time.Hour {
		ps.add("console.history_retention", "%v is shorter than a day; keep the access history at least 24h (default %v)", c.Console.HistoryRetention, DefaultHistoryRetention)
	}
	if c.Console.MaxConns < 1 || c.Console.MaxConns > 1000 {
		ps.add("console.max_conns", "%d is outside 1..1000", c.Console.MaxConns)
	}
	return ps
}

// takenNames are the account ids and claimed domains of the accounts
// validated so far: each belongs to one account.
type takenNames struct {
	ids     map[string]int    // id → index in accounts
	domains map[string]string // claimed domain → account id
}

func newTakenNames() takenNames {
	return takenNames{ids: map[string]int{}, domains: map[string]string{}}
}

// takeID gives id to accounts[i]; dup reports the account that had it.
func (t takenNames) takeID(i int, id string) (prev int, dup bool) {
	prev, dup = t.ids[id]
	t.ids[id] = i
	return prev, dup
}

// takeDomain gives domain d to account id unless another has it.
func (t takenNames) takeDomain(d, id string) (owner string, dup bool) {
	if owner, dup = t.domains[d]; !dup {
		t.domains[d] = id
	}
	return owner, dup
}

// validateAccount checks accounts[i], at path p, against the accounts
// before it, whose ids and domains taken holds (and gets a's). Parse runs
// it for every entry of the file and ParseAccount for an entry given on
// its own.
func (c *Config) validateAccount(ps *problems, i int, p string, a *Account, taken takenNames, getenv func(string) string) {
	switch {
	case a.ID == "":
		ps.add(joinPath(p, "id"), "required; use a stable id of lower-case letters, digits and dashes, e.g. acme")
	case !accountIDRE.MatchString(a.ID):
		ps.add(joinPath(p, "id"), "%q must match [a-z0-9-]+ (lower-case letters, digits, single dashes)", a.ID)
	default:
		if j, dup := taken.takeID(i, a.ID); dup {
			ps.add(joinPath(p, "id"), "%q is already used by accounts[%d]; account ids must be unique", a.ID, j)
		}
	}
	switch a.Type {
	case AccountEnterprise, AccountTeam:
	default:
		ps.add(joinPath(p, "type"), "%q is not an account type; use enterprise or team", a.Type)
	}
	console := a.Directory.Type == DirectoryConsole
	// A console-managed team invites users from any domain: it needs none.
	if len(a.ClaimedDomains) == 0 && !(console && a.Type == AccountTeam) {
		ps.add(joinPath(p, "claimed_domains"), "required: list the email domains this account owns, e.g. [acme.example]")
	}
	for j, d := range a.ClaimedDomains {
		dp := joinPath(p, fmt.Sprintf("claimed_domains[%d]", j))
		if !domainRE.MatchString(d) {
			ps.add(dp, "%q is not a domain name; write it like acme.example, without @", d)
			continue
		}
		if owner, dup := taken.takeDomain(d, a.ID); dup {
			ps.add(dp, "%q is already claimed by account %q; a domain belongs to one account", d, owner)
		}
	}
	validateDirectory(ps, joinPath(p, "directory"), &a.Directory, c.kinds, getenv)
	validateAccountConsole(ps, p, a)
	switch {
	case console && len(a.Bindings) > 0:
		ps.add(joinPath(p, "bindings"), "a console account has no directory groups: permissions are assigned through the admin API; remove bindings")
	case !console && len(a.Bindings) == 0:
		ps.add(joinPath(p, "bindings"), "no bindings: nobody could sign in; bind at least one group to pro or basic")
	}
	if console && a.AccessGroup != "" {
		ps.add(joinPath(p, "access_group"), "a console account has no directory groups; remove access_group")
	}
	seen := map[string]int{}
	for j, b := range a.Bindings {
		bp := joinPath(p, fmt.Sprintf("bindings[%d]", j))
		if strings.TrimSpace(b.Group) == "" {
			ps.add(bp+".group", "required: the group DN (LDAP/AD) or Okta group id or name")
		} else {
			key := strings.ToLower(b.Group)
			if k, dup := seen[key]; dup {
				ps.add(bp+".group", "%q is already bound by bindings[%d]; bind each group once", b.Group, k)
			}
			seen[key] = j
		}
		switch b.Permission {
		case "pro", "basic":
		case "":
			ps.add(bp+".permission", "required: pro or basic")
		default:
			ps.add(bp+".permission", "%q is not a permission; use pro or basic", b.Permission)
		}
	}
	if v := *a.Safeguard.MaxLostAccessPercent; v < 0 || v > 100 {
		ps.add(joinPath(p, "safeguard.max_lost_access_percent"), "%v is outside 0..100", v)
	}
	if v := *a.Safeguard.MaxLostAccessUsers; v < 0 {
		ps.add(joinPath(p, "safeguard.max_lost_access_users"), "%d is negative; use 0 or more", v)
	}
	if v := *a.Safeguard.Window; v < 0 {
		ps.add(joinPath(p, "safeguard.window"), "%v is negative; use a duration such as 1h, or 0 to judge each pass alone", v)
	}
	// An inherited schedule was checked at the top level already.
	if a.Schedule.Full != c.Schedule.Full {
		checkSchedule(ps, joinPath(p, "schedule.full"), a.Schedule.Full)
	}
	if a.Schedule.Incremental != c.Schedule.Incremental {
		checkSchedule(ps, joinPath(p, "schedule.incremental"), a.Schedule.Incremental)
	}
	if a.Schedule.MaxConcurrentPasses != 0 {
		ps.add(p+".schedule.max_concurrent_passes", "the pass pool is shared by every account: set schedule.max_concurrent_passes at the top level")
	}
}

func validateAccountConsole(ps *problems, p string, a *Account) {
	ap := joinPath(p, "console.auto_join_permission")
	v := a.Console.AutoJoinPermission
	switch {
	case v == "":
	case a.Directory.Type != DirectoryConsole:
		ps.add(ap, "only for accounts with directory.type console; the directory's group bindings decide permissions here")
	case a.Type == AccountTeam:
		ps.add(ap, "team accounts join by invitation only; remove auto_join_permission")
	case v != "pro" && v != "basic" && v != "none":
		ps.add(ap, "%q is not a permission; use pro, basic or none", v)
	}
}

func checkSchedule(ps *problems, path, spec string) {
	if _, err := ParseSchedule(spec); err != nil {
		ps.add(path, "%q is not a cron spec (%v); write for example \"@every 5s\" or \"0 * * * *\"", spec, err)
	}
}

// checkSecret reports a secret given both ways, a missing required one, an
// unreadable file or an unset variable. It never echoes a secret's value.
func checkSecret(ps *problems, path, file, env string, required bool, getenv func(string) string) {
	switch {
	case file != "" && env != "":
		ps.add(path+"_file", "both %s_file and %s_env are set; keep one", path, path)
	case file != "":
		b, err := os.ReadFile(file)
		switch {
		case err != nil:
			ps.add(path+"_file", "cannot read %s: %v", file, unwrapPathError(err))
		case strings.TrimSpace(string(b)) == "":
			ps.add(path+"_file", "%s is empty or only white space; an empty secret never means \"no secret\": write the secret into it, or remove %s_file", file, path)
		}
	case env != "":
		if getenv == nil || strings.TrimSpace(getenv(env)) == "" {
			ps.add(path+"_env", "environment variable %s is empty, white space or unset; an empty secret never means \"no secret\"", env)
		}
	case required:
		ps.add(path+"_file", "required: a file holding the secret (or %s_env naming an environment variable); secrets are never written inline", path)
	}
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ReadSecret returns the secret held in file or, when file is empty, in the
// environment variable env. Surrounding white space is trimmed. A file or
// variable that holds nothing else is an error, never an empty secret (a
// token file emptied after validation must not turn into "no auth"); ""
// with a nil error means no secret is configured at all. Errors name the
// file or variable, never the value.
func ReadSecret(file, env string, getenv func(string) string) (string, error) {
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read secret: %w", err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("read secret: %s is empty or only white space", file)
		}
		return v, nil
	case env != "":
		v := strings.TrimSpace(getenv(env))
		if v == "" {
			return "", fmt.Errorf("read secret: environment variable %s is empty", env)
		}
		return v, nil
	}
	return "", nil
}

// ReadCAFile returns a certificate pool holding only the PEM certificates
// in file (a ca_file field): the one way dirsync turns a CA file into the
// roots a TLS client trusts. A file without a certificate is an error.
func ReadCAFile(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

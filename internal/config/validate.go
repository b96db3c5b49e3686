package config

import (
	"fmt"
	"net"
	"net/url"
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
	DefaultPageSize             = 1000
	DefaultLDAPTimeout          = 30 * time.Second
	DefaultLDAPMaxEntries       = 1_000_000
	DefaultLDAPMaxPages         = 10_000
	DefaultMaxLostAccessPercent = 20.0
	DefaultMaxLostAccessUsers   = 500
	DefaultOktaPageSize         = 200
	DefaultOktaRequestTimeout   = 30 * time.Second
	DefaultOktaRateLimitShare   = 0.5
)

// DefaultEmailAttributes are read in order when email_attributes is empty.
func DefaultEmailAttributes() []string { return []string{"mail", "userPrincipalName"} }

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
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	for i := range c.Accounts {
		a := &c.Accounts[i]
		if a.Type == "" {
			a.Type = "enterprise"
		}
		if a.Directory.Type == DirectoryConsole && a.Type == AccountEnterprise && a.Console.AutoJoinPermission == "" {
			a.Console.AutoJoinPermission = "basic"
		}
		for j, d := range a.ClaimedDomains {
			// ASCII folding only, as for emails; anything else stays as
			// written and fails validation below.
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
		l := &a.Directory.LDAP
		if len(l.EmailAttributes) == 0 {
			l.EmailAttributes = DefaultEmailAttributes()
		}
		if l.PageSize == 0 {
			l.PageSize = DefaultPageSize
		}
		if l.Timeout == 0 {
			l.Timeout = DefaultLDAPTimeout
		}
		if l.MaxEntries == 0 {
			l.MaxEntries = DefaultLDAPMaxEntries
		}
		if l.MaxPages == 0 {
			l.MaxPages = DefaultLDAPMaxPages
		}
		if l.UserBaseDN == "" {
			l.UserBaseDN = l.BaseDN
		}
		if l.GroupBaseDN == "" {
			l.GroupBaseDN = l.BaseDN
		}
		l.CAFile = c.path(l.CAFile)
		l.BindPasswordFile = c.path(l.BindPasswordFile)
		a.Directory.Okta.TokenFile = c.path(a.Directory.Okta.TokenFile)
		a.Directory.Okta.EventHookSecretFile = c.path(a.Directory.Okta.EventHookSecretFile)
		if a.Directory.Okta.EventHookHeader == "" {
			a.Directory.Okta.EventHookHeader = "Authorization"
		}
		if a.Directory.Okta.PageSize == 0 {
			a.Directory.Okta.PageSize = DefaultOktaPageSize
		}
		if a.Directory.Okta.RequestTimeout == 0 {
			a.Directory.Okta.RequestTimeout = DefaultOktaRequestTimeout
		}
		if a.Directory.Okta.RateLimitShare == 0 {
			a.Directory.Okta.RateLimitShare = DefaultOktaRateLimitShare
		}
		a.Directory.LDIF.Path = c.path(a.Directory.LDIF.Path)
		if len(a.Directory.LDIF.EmailAttributes) == 0 {
			a.Directory.LDIF.EmailAttributes = DefaultEmailAttributes()
		}
	}
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
	if len(c.Accounts) == 0 {
		ps.add("accounts", "no accounts; add at least one account with an id, claimed_domains and a directory")
	}
	ids := map[string]int{}
	domains := map[string]string{}
	consoleAccounts := 0
	for i := range c.Accounts {
		c.validateAccount(&ps, i, ids, domains, getenv)
		if c.Accounts[i].Directory.Type == DirectoryConsole {
			consoleAccounts++
		}
	}
	if consoleAccounts > 0 {
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

func (c *Config) validateAccount(ps *problems, i int, ids map[string]int, domains map[string]string, getenv func(string) string) {
	a := &c.Accounts[i]
	p := fmt.Sprintf("accounts[%d]", i)
	switch {
	case a.ID == "":
		ps.add(p+".id", "required; use a stable id of lower-case letters, digits and dashes, e.g. acme")
	case !accountIDRE.MatchString(a.ID):
		ps.add(p+".id", "%q must match [a-z0-9-]+ (lower-case letters, digits, single dashes)", a.ID)
	default:
		if j, dup := ids[a.ID]; dup {
			ps.add(p+".id", "%q is already used by accounts[%d]; account ids must be unique", a.ID, j)
		}
		ids[a.ID] = i
	}
	switch a.Type {
	case AccountEnterprise, AccountTeam:
	default:
		ps.add(p+".type", "%q is not an account type; use enterprise or team", a.Type)
	}
	console := a.Directory.Type == DirectoryConsole
	// A console-managed team invites users from any domain: it needs none.
	if len(a.ClaimedDomains) == 0 && !(console && a.Type == AccountTeam) {
		ps.add(p+".claimed_domains", "required: list the email domains this account owns, e.g. [acme.example]")
	}
	for j, d := range a.ClaimedDomains {
		dp := fmt.Sprintf("%s.claimed_domains[%d]", p, j)
		if !domainRE.MatchString(d) {
			ps.add(dp, "%q is not a domain name; write it like acme.example, without @", d)
			continue
		}
		if owner, dup := domains[d]; dup {
			ps.add(dp, "%q is already claimed by account %q; a domain belongs to one account", d, owner)
			continue
		}
		domains[d] = a.ID
	}
	c.validateDirectory(ps, p+".directory", &a.Directory, getenv)
	validateAccountConsole(ps, p, a)
	switch {
	case console && len(a.Bindings) > 0:
		ps.add(p+".bindings", "a console account has no directory groups: permissions are assigned through the admin API; remove bindings")
	case !console && len(a.Bindings) == 0:
		ps.add(p+".bindings", "no bindings: nobody could sign in; bind at least one group to pro or basic")
	}
	if console && a.AccessGroup != "" {
		ps.add(p+".access_group", "a console account has no directory groups; remove access_group")
	}
	seen := map[string]int{}
	for j, b := range a.Bindings {
		bp := fmt.Sprintf("%s.bindings[%d]", p, j)
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
		ps.add(p+".safeguard.max_lost_access_percent", "%v is outside 0..100", v)
	}
	if v := *a.Safeguard.MaxLostAccessUsers; v < 0 {
		ps.add(p+".safeguard.max_lost_access_users", "%d is negative; use 0 or more", v)
	}
	// An inherited schedule was checked at the top level already.
	if a.Schedule.Full != c.Schedule.Full {
		checkSchedule(ps, p+".schedule.full", a.Schedule.Full)
	}
	if a.Schedule.Incremental != c.Schedule.Incremental {
		checkSchedule(ps, p+".schedule.incremental", a.Schedule.Incremental)
	}
	if a.Schedule.MaxConcurrentPasses != 0 {
		ps.add(p+".schedule.max_concurrent_passes", "the pass pool is shared by every account: set schedule.max_concurrent_passes at the top level")
	}
}

func validateAccountConsole(ps *problems, p string, a *Account) {
	ap := p + ".console.auto_join_permission"
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

func (c *Config) validateDirectory(ps *problems, p string, d *Directory, getenv func(string) string) {
	switch d.Type {
	case DirectoryActiveDirectory, DirectoryLDAP:
		l := d.LDAP
		lp := p + ".ldap"
		if len(l.URLs) == 0 {
			ps.add(lp+".urls", "required: list the directory servers, e.g. [\"ldaps://dc1.example:636\"]")
		}
		for j, raw := range l.URLs {
			up := fmt.Sprintf("%s.urls[%d]", lp, j)
			u, err := url.Parse(raw)
			if err != nil || u.Host == "" {
				ps.add(up, "%q is not a URL; write ldaps://host:636 or ldap://host:389", raw)
				continue
			}
			switch u.Scheme {
			case "ldaps":
				if l.StartTLS {
					ps.add(up, "ldaps:// already uses TLS; remove start_tls or use ldap://")
				}
			case "ldap":
				if !l.StartTLS && !l.AllowInsecure {
					ps.add(up, "plain ldap:// sends the bind password in clear; use ldaps://, set start_tls: true, or set allow_insecure: true for a test server")
				}
			default:
				ps.add(up, "scheme %q is not ldap or ldaps", u.Scheme)
			}
		}
		if l.BindDN == "" {
			ps.add(lp+".bind_dn", "required: the DN of the read-only service account dirsync binds as")
		}
		checkSecret(ps, lp+".bind_password", l.BindPasswordFile, l.BindPasswordEnv, l.BindDN != "", getenv)
		checkFile(ps, lp+".ca_file", l.CAFile)
		if l.BaseDN == "" {
			ps.add(lp+".base_dn", "required: the subtree to read, e.g. DC=acme,DC=example")
		}
		if l.PageSize < 1 || l.PageSize > 100000 {
			ps.add(lp+".page_size", "%d is outside 1..100000; AD serves at most 1000 per page", l.PageSize)
		}
		if l.Timeout < 0 {
			ps.add(lp+".timeout", "must be positive, e.g. 30s")
		}
		if l.MaxEntries < 0 {
			ps.add(lp+".max_entries", "%d is negative; give the most entries one search may return, e.g. %d (leave it out for the default)", l.MaxEntries, DefaultLDAPMaxEntries)
		}
		if l.MaxPages < 0 {
			ps.add(lp+".max_pages", "%d is negative; give the most pages one search may take, e.g. %d (leave it out for the default)", l.MaxPages, DefaultLDAPMaxPages)
		}
		checkFilter(ps, lp+".user_filter", l.UserFilter)
		checkFilter(ps, lp+".group_filter", l.GroupFilter)
		if l.DisabledValue != "" && l.DisabledAttribute == "" {
			ps.add(lp+".disabled_value", "set but disabled_attribute is empty; name the attribute that holds it")
		}
	case DirectoryOkta:
		o := d.Okta
		op := p + ".okta"
		u, err := url.Parse(o.OrgURL)
		switch {
		case o.OrgURL == "":
			ps.add(op+".org_url", "required: the Okta org URL, e.g. https://acme.okta.com")
		case err != nil || u.Host == "":
			ps.add(op+".org_url", "%q is not a URL; write https://acme.okta.com", o.OrgURL)
		case u.Scheme == "http" && !o.AllowHTTP:
			ps.add(op+".org_url", "http:// sends the API token in clear; use https://, or set allow_http: true for a local test server")
		case u.Scheme != "https" && u.Scheme != "http":
			ps.add(op+".org_url", "scheme %q is not https", u.Scheme)
		}
		checkSecret(ps, op+".token", o.TokenFile, o.TokenEnv, true, getenv)
		checkSecret(ps, op+".event_hook_secret", o.EventHookSecretFile, o.EventHookSecretEnv, false, getenv)
		if o.PageSize < 1 || o.PageSize > 1000 {
			ps.add(op+".page_size", "%d is outside 1..1000; Okta recommends 200", o.PageSize)
		}
		if o.RequestTimeout < 0 {
			ps.add(op+".request_timeout", "must be positive, e.g. 30s")
		}
		if o.RateLimitShare <= 0 || o.RateLimitShare > 1 {
			ps.add(op+".rate_limit_share", "%v is outside (0, 1]; e.g. 0.5 uses at most half of each rate-limit window", o.RateLimitShare)
		}
	case DirectoryLDIF:
		if d.LDIF.Path == "" {
			ps.add(p+".ldif.path", "required: the LDIF file to read")
		} else {
			checkFile(ps, p+".ldif.path", d.LDIF.Path)
		}
		if d.LDIF.DisabledValue != "" && d.LDIF.DisabledAttribute == "" {
			ps.add(p+".ldif.disabled_value", "set but disabled_attribute is empty; name the attribute that holds it")
		}
	case DirectoryConsole:
		// Users and permissions live in PostgreSQL (top-level console).
	case "":
		ps.add(p+".type", "required: active_directory, ldap, okta, ldif or console")
	default:
		ps.add(p+".type", "%q is not a directory type; use active_directory, ldap, okta, ldif or console", d.Type)
	}
}

func checkSchedule(ps *problems, path, spec string) {
	if _, err := ParseSchedule(spec); err != nil {
		ps.add(path, "%q is not a cron spec (%v); write for example \"@every 5s\" or \"0 * * * *\"", spec, err)
	}
}

func checkFilter(ps *problems, path, filter string) {
	if filter == "" {
		return
	}
	depth := 0
	for _, r := range filter {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
		}
		if depth < 0 {
			break
		}
	}
	if !strings.HasPrefix(filter, "(") || depth != 0 {
		ps.add(path, "%q is not an LDAP filter: it must be wrapped in balanced parentheses, e.g. (objectClass=user)", filter)
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

func checkFile(ps *problems, path, file string) {
	if file == "" {
		return
	}
	if _, err := os.Stat(file); err != nil {
		ps.add(path, "cannot read %s: %v", file, unwrapPathError(err))
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

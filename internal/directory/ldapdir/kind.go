package ldapdir

import (
	"crypto/tls"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/directory/ldapentry"
)

// Directory types this package serves, both configured by the ldap
// section.
const (
	TypeActiveDirectory = "active_directory"
	TypeLDAP            = "ldap"
)

// Defaults of the ldap section (documented in docs/configuration.md).
const (
	DefaultPageSize = 1000
	DefaultTimeout  = 30 * time.Second
	// DefaultMaxEntries and DefaultMaxPages are the floors of one search's
	// caps (see Section.MaxEntries).
	DefaultMaxEntries = 1_000_000
	DefaultMaxPages   = 10_000
)

// Section is the ldap section of an account's directory: it configures
// the directory types active_directory and ldap.
type Section struct {
	// URLs are tried in order (DC failover): ldaps://, or ldap:// with
	// StartTLS, or plain ldap:// only with AllowInsecure.
	URLs             []string `yaml:"urls"`
	StartTLS         bool     `yaml:"start_tls"`
	CAFile           string   `yaml:"ca_file"`
	AllowInsecure    bool     `yaml:"allow_insecure"`
	BindDN           string   `yaml:"bind_dn"`
	BindPasswordFile string   `yaml:"bind_password_file"`
	BindPasswordEnv  string   `yaml:"bind_password_env"`
	BaseDN           string   `yaml:"base_dn"`
	// UserBaseDN and GroupBaseDN default to BaseDN.
	UserBaseDN  string `yaml:"user_base_dn"`
	GroupBaseDN string `yaml:"group_base_dn"`
	// UserFilter and GroupFilter default per directory type (see the
	// Default*Filter constants).
	UserFilter  string `yaml:"user_filter"`
	GroupFilter string `yaml:"group_filter"`
	// EmailAttributes are read in order; the first non-empty value is the
	// user's email. Default [mail, userPrincipalName].
	EmailAttributes []string `yaml:"email_attributes"`
	// PageSize is the RFC 2696 page size. Default 1000.
	PageSize int `yaml:"page_size"`
	// Timeout bounds each LDAP operation. Default 30s.
	Timeout time.Duration `yaml:"timeout"`
	// MaxEntries and MaxPages cap one search (a runaway or hostile server
	// pages without end): it may return at most the larger of MaxEntries
	// and 4x the entries of the last good full read, in at most the larger
	// of MaxPages and 4x its pages (requests). A search past a cap fails
	// the read. Defaults 1000000 and 10000.
	MaxEntries int `yaml:"max_entries"`
	MaxPages   int `yaml:"max_pages"`
	// DisabledAttribute and DisabledValue mark a disabled user on generic
	// LDAP: the user is suspended when the attribute holds the value (any
	// value when DisabledValue is empty). AD uses userAccountControl instead.
	DisabledAttribute string `yaml:"disabled_attribute"`
	DisabledValue     string `yaml:"disabled_value"`
}

// Kind registers Active Directory and generic LDAP: the ldap section, its
// defaults and validation, and the Poller built from it.
func Kind() directory.Kind {
	return directory.Kind{
		Config: config.NewSourceKind(config.Section[Section]{
			Types:    []string{TypeActiveDirectory, TypeLDAP},
			Key:      "ldap",
			Defaults: applyDefaults,
			Validate: validate,
		}),
		Open:      open,
		Endpoints: endpoints,
	}
}

// endpoints are the hosts of the account's LDAP URLs.
func endpoints(a *config.Account) []string {
	s, ok := config.SectionOf[Section](a.Directory)
	if !ok {
		return nil
	}
	var out []string
	for _, raw := range s.URLs {
		if u, err := url.Parse(raw); err == nil && u.Hostname() != "" {
			out = append(out, u.Hostname())
		}
	}
	return out
}

func applyDefaults(s *Section, resolve func(string) string) {
	if len(s.EmailAttributes) == 0 {
		s.EmailAttributes = ldapentry.DefaultEmailAttributes()
	}
	if s.PageSize == 0 {
		s.PageSize = DefaultPageSize
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if s.MaxEntries == 0 {
		s.MaxEntries = DefaultMaxEntries
	}
	if s.MaxPages == 0 {
		s.MaxPages = DefaultMaxPages
	}
	if s.UserBaseDN == "" {
		s.UserBaseDN = s.BaseDN
	}
	if s.GroupBaseDN == "" {
		s.GroupBaseDN = s.BaseDN
	}
	s.CAFile = resolve(s.CAFile)
	s.BindPasswordFile = resolve(s.BindPasswordFile)
}

func validate(s *Section, c *config.Check) {
	if len(s.URLs) == 0 {
		c.Add("urls", "required: list the directory servers, e.g. [\"ldaps://dc1.example:636\"]")
	}
	for j, raw := range s.URLs {
		field := fmt.Sprintf("urls[%d]", j)
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			c.Add(field, "%q is not a URL; write ldaps://host:636 or ldap://host:389", raw)
			continue
		}
		switch u.Scheme {
		case "ldaps":
			if s.StartTLS {
				c.Add(field, "ldaps:// already uses TLS; remove start_tls or use ldap://")
			}
		case "ldap":
			if !s.StartTLS && !s.AllowInsecure {
				c.Add(field, "plain ldap:// sends the bind password in clear; use ldaps://, set start_tls: true, or set allow_insecure: true for a test server")
			}
		default:
			c.Add(field, "scheme %q is not ldap or ldaps", u.Scheme)
		}
	}
	if s.BindDN == "" {
		c.Add("bind_dn", "required: the DN of the read-only service account dirsync binds as")
	}
	c.Secret("bind_password", s.BindPasswordFile, s.BindPasswordEnv, s.BindDN != "")
	c.File("ca_file", s.CAFile)
	if s.BaseDN == "" {
		c.Add("base_dn", "required: the subtree to read, e.g. DC=acme,DC=example")
	}
	if s.PageSize < 1 || s.PageSize > 100000 {
		c.Add("page_size", "%d is outside 1..100000; AD serves at most 1000 per page", s.PageSize)
	}
	if s.Timeout < 0 {
		c.Add("timeout", "must be positive, e.g. 30s")
	}
	if s.MaxEntries < 0 {
		c.Add("max_entries", "%d is negative; give the most entries one search may return, e.g. %d (leave it out for the default)", s.MaxEntries, DefaultMaxEntries)
	}
	if s.MaxPages < 0 {
		c.Add("max_pages", "%d is negative; give the most pages one search may take, e.g. %d (leave it out for the default)", s.MaxPages, DefaultMaxPages)
	}
	checkFilter(c, "user_filter", s.UserFilter)
	checkFilter(c, "group_filter", s.GroupFilter)
	if s.DisabledValue != "" && s.DisabledAttribute == "" {
		c.Add("disabled_value", "set but disabled_attribute is empty; name the attribute that holds it")
	}
}

// checkFilter catches the common mistakes in an LDAP filter (missing outer
// parentheses, unbalanced ones); the server judges the rest.
func checkFilter(c *config.Check, field, filter string) {
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
		c.Add(field, "%q is not an LDAP filter: it must be wrapped in balanced parentheses, e.g. (objectClass=user)", filter)
	}
}

// open builds the poller of an account whose ldap section was validated:
// it reads the bind password and the CA file, and does not connect.
func open(a *config.Account, getenv func(string) string) (directory.Source, error) {
	s, ok := config.SectionOf[Section](a.Directory)
	if !ok {
		return nil, fmt.Errorf("directory.ldap: no ldap section for directory type %q", a.Directory.Type)
	}
	password, err := config.ReadSecret(s.BindPasswordFile, s.BindPasswordEnv, getenv)
	if err != nil {
		return nil, fmt.Errorf("directory.ldap.bind_password: %w", err)
	}
	var tc *tls.Config
	if s.CAFile != "" {
		pool, err := config.ReadCAFile(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("directory.ldap.ca_file: %w", err)
		}
		tc = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	o := optionsFrom(a.Directory.Type, s, password, tc)
	if a.Network != nil {
		o.Dialer = a.Network.Dialer(nil)
	}
	p, err := New(o)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// optionsFrom builds a Poller's options from an ldap section.
func optionsFrom(typ string, s *Section, bindPassword string, tlsConfig *tls.Config) Options {
	return Options{
		Type: typ, URLs: s.URLs, StartTLS: s.StartTLS, AllowInsecure: s.AllowInsecure, TLSConfig: tlsConfig,
		BindDN: s.BindDN, BindPassword: bindPassword,
		UserBaseDN: firstNonEmpty(s.UserBaseDN, s.BaseDN), GroupBaseDN: firstNonEmpty(s.GroupBaseDN, s.BaseDN),
		UserFilter: s.UserFilter, GroupFilter: s.GroupFilter, EmailAttributes: s.EmailAttributes,
		DisabledAttribute: s.DisabledAttribute, DisabledValue: s.DisabledValue,
		PageSize: s.PageSize, Timeout: s.Timeout, MaxEntries: s.MaxEntries, MaxPages: s.MaxPages,
	}
}

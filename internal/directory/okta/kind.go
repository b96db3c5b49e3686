package okta

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory"
)

// Type is the directory type this package serves, configured by the okta
// section.
const Type = "okta"

// DefaultEventHookHeader is the header Okta sends an event hook's secret
// in unless event_hook_header says otherwise.
const DefaultEventHookHeader = "Authorization"

// Section is the okta section of an account's directory. Its defaults are
// the package's Default* constants, which also apply to Options left zero.
type Section struct {
	OrgURL    string `yaml:"org_url"`
	TokenFile string `yaml:"token_file"`
	TokenEnv  string `yaml:"token_env"`
	// AllowHTTP permits an http:// org URL, for local test servers only.
	AllowHTTP bool `yaml:"allow_http"`
	// PageSize is the limit of list requests (group members, groups,
	// users). Default 200, Okta's recommended page size; at most 1000.
	PageSize int `yaml:"page_size"`
	// RequestTimeout bounds one API call including its rate-limit retries.
	// Default 30s.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// RateLimitShare is the largest share (0 < share <= 1) of the org's
	// per-window API rate limit dirsync may use; when less than that is
	// left, it waits for the window to reset. Default 0.5.
	RateLimitShare float64 `yaml:"rate_limit_share"`
	// EventHookSecretFile (or EventHookSecretEnv) holds the secret Okta
	// sends with event hook deliveries to /v1/hooks/okta; without one, the
	// account accepts no event hooks (polling still applies).
	EventHookSecretFile string `yaml:"event_hook_secret_file"`
	EventHookSecretEnv  string `yaml:"event_hook_secret_env"`
	// EventHookHeader is the header Okta sends the secret in. Default
	// Authorization.
	EventHookHeader string `yaml:"event_hook_header"`
}

// Kind registers Okta: the okta section, its defaults and validation, the
// Poller built from it and the account's event hook credential.
func Kind() directory.Kind {
	return directory.Kind{
		Config: config.NewSourceKind(config.Section[Section]{
			Types:    []string{Type},
			Key:      "okta",
			Defaults: applyDefaults,
			Validate: validate,
		}),
		Open:      open,
		EventHook: eventHook,
		Endpoints: endpoints,
	}
}

// endpoints is the host of the account's org URL.
func endpoints(a *config.Account) []string {
	s, err := section(a)
	if err != nil {
		return nil
	}
	if u, err := url.Parse(s.OrgURL); err == nil && u.Hostname() != "" {
		return []string{u.Hostname()}
	}
	return nil
}

func applyDefaults(s *Section, resolve func(string) string) {
	s.TokenFile = resolve(s.TokenFile)
	s.EventHookSecretFile = resolve(s.EventHookSecretFile)
	if s.EventHookHeader == "" {
		s.EventHookHeader = DefaultEventHookHeader
	}
	if s.PageSize == 0 {
		s.PageSize = DefaultPageSize
	}
	if s.RequestTimeout == 0 {
		s.RequestTimeout = DefaultRequestTimeout
	}
	if s.RateLimitShare == 0 {
		s.RateLimitShare = DefaultRateLimitShare
	}
}

func validate(s *Section, c *config.Check) {
	u, err := url.Parse(s.OrgURL)
	switch {
	case s.OrgURL == "":
		c.Add("org_url", "required: the Okta org URL, e.g. https://acme.okta.com")
	case err != nil || u.Host == "":
		c.Add("org_url", "%q is not a URL; write https://acme.okta.com", s.OrgURL)
	case u.Scheme == "http" && !s.AllowHTTP:
		c.Add("org_url", "http:// sends the API token in clear; use https://, or set allow_http: true for a local test server")
	case u.Scheme != "https" && u.Scheme != "http":
		c.Add("org_url", "scheme %q is not https", u.Scheme)
	}
	c.Secret("token", s.TokenFile, s.TokenEnv, true)
	c.Secret("event_hook_secret", s.EventHookSecretFile, s.EventHookSecretEnv, false)
	if s.PageSize < 1 || s.PageSize > 1000 {
		c.Add("page_size", "%d is outside 1..1000; Okta recommends %d", s.PageSize, DefaultPageSize)
	}
	if s.RequestTimeout < 0 {
		c.Add("request_timeout", "must be positive, e.g. 30s")
	}
	if s.RateLimitShare <= 0 || s.RateLimitShare > 1 {
		c.Add("rate_limit_share", "%v is outside (0, 1]; e.g. 0.5 uses at most half of each rate-limit window", s.RateLimitShare)
	}
}

func section(a *config.Account) (*Section, error) {
	s, ok := config.SectionOf[Section](a.Directory)
	if !ok {
		return nil, fmt.Errorf("directory.okta: no okta section for directory type %q", a.Directory.Type)
	}
	return s, nil
}

// open builds the poller of an account whose okta section was validated:
// it reads the API token and makes no request.
func open(a *config.Account, getenv func(string) string) (directory.Source, error) {
	s, err := section(a)
	if err != nil {
		return nil, err
	}
	token, err := config.ReadSecret(s.TokenFile, s.TokenEnv, getenv)
	if err != nil {
		return nil, fmt.Errorf("directory.okta.token: %w", err)
	}
	o := optionsFrom(a, s, token)
	if a.Network != nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = a.Network.Dialer(&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		o.HTTPClient = &http.Client{Transport: tr}
	}
	p, err := New(o)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// optionsFrom builds a poller's options for account a: its okta section
// and the groups its bindings and access group name.
func optionsFrom(a *config.Account, s *Section, token string) Options {
	groups := make([]string, 0, len(a.Bindings)+1)
	for _, b := range a.Bindings {
		groups = append(groups, b.Group)
	}
	if a.AccessGroup != "" {
		groups = append(groups, a.AccessGroup)
	}
	return Options{
		OrgURL:         s.OrgURL,
		Token:          token,
		AllowHTTP:      s.AllowHTTP,
		Groups:         groups,
		PageSize:       s.PageSize,
		RequestTimeout: s.RequestTimeout,
		RateLimitShare: s.RateLimitShare,
	}
}

// eventHook reads the account's event hook secret, when it has one.
func eventHook(a *config.Account, getenv func(string) string) (directory.EventHook, bool, error) {
	s, err := section(a)
	if err != nil {
		return directory.EventHook{}, false, err
	}
	if s.EventHookSecretFile == "" && s.EventHookSecretEnv == "" {
		return directory.EventHook{}, false, nil
	}
	secret, err := config.ReadSecret(s.EventHookSecretFile, s.EventHookSecretEnv, getenv)
	if err != nil {
		return directory.EventHook{}, false, fmt.Errorf("directory.okta.event_hook_secret: %w", err)
	}
	source := "directory.okta.event_hook_secret_file"
	if s.EventHookSecretFile == "" {
		source = "directory.okta.event_hook_secret_env"
	}
	return directory.EventHook{Header: s.EventHookHeader, Secret: secret, Source: source}, true, nil
}

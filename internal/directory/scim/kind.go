package scim

import (
	"context"
	"fmt"
	"time"

	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/pgstore"
)

// Type is the directory type this package serves, configured by the scim
// section.
const Type = "scim"

// Section is the scim section of an account's directory.
type Section struct {
	// TokenFile (or TokenEnv) holds a bearer token the identity provider
	// sends to /scim/v2/{account}/; only its SHA-256 is kept. Optional:
	// tokens can also be issued with POST /v1/accounts/{id}/scim/tokens.
	TokenFile string `yaml:"token_file"`
	TokenEnv  string `yaml:"token_env"`
}

// DefaultSafeguardWindow is safeguard.window of SCIM accounts: a mass
// removal pushed one user per request is held once, within an hour, it
// crosses the safeguard's limits.
const DefaultSafeguardWindow = time.Hour

// Kind registers SCIM accounts: the scim section, and a Source on
// dirsync's own database (the identity provider pushes; nothing is
// polled).
func Kind() directory.Kind {
	return directory.Kind{
		Config: config.NewSourceKind(config.Section[Section]{
			Types:           []string{Type},
			Key:             "scim",
			Defaults:        func(s *Section, resolve func(string) string) { s.TokenFile = resolve(s.TokenFile) },
			Validate:        func(s *Section, c *config.Check) { c.Secret("token", s.TokenFile, s.TokenEnv, false) },
			Database:        true,
			SafeguardWindow: DefaultSafeguardWindow,
		}),
		OpenStored: func(ctx context.Context, a *config.Account, db pgstore.DB) (directory.Source, error) {
			st, err := Open(ctx, db.Pool, nil)
			if err != nil {
				return nil, err
			}
			return st.Source(a.ID), nil
		},
	}
}

// Token returns an account's configured SCIM token secret and the config
// field it came from ("" when the account configures none); getenv
// resolves token_env.
func Token(a *config.Account, getenv func(string) string) (secret, source string, err error) {
	s, ok := config.SectionOf[Section](a.Directory)
	if !ok {
		return "", "", fmt.Errorf("directory.scim: no scim section for directory type %q", a.Directory.Type)
	}
	secret, err = config.ReadSecret(s.TokenFile, s.TokenEnv, getenv)
	if err != nil {
		return "", "", fmt.Errorf("directory.scim.token: %w", err)
	}
	source = "directory.scim.token_file"
	if s.TokenFile == "" {
		source = "directory.scim.token_env"
	}
	return secret, source, nil
}

package main

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory/scim"
	"github.com/dirsync/dirsync/internal/sync/scimapi"
)

// scimService is the API side of the SCIM accounts: their routes and the
// authenticator of their tokens.
type scimService struct {
	options scimapi.Options
	auth    *scimapi.Authenticator
}

// newSCIM builds the SCIM service when an account's directory type is
// scim (nil otherwise): the store on db's pool, the configured tokens
// (kept as hashes) and trigger, which starts an account's pass after
// every write.
func newSCIM(ctx context.Context, cfg *config.Config, e env, db *database, trigger func(string) bool, log *zap.Logger) (*scimService, error) {
	accounts := map[string]bool{}
	var static []scimapi.StaticToken
	for _, a := range cfg.Accounts {
		if a.Directory.Type != scim.Type {
			continue
		}
		accounts[a.ID] = true
		secret, source, err := scim.Token(&a, e.getenv)
		if err != nil {
			return nil, fmt.Errorf("account %s: %w", a.ID, err)
		}
		if secret == "" {
			continue // tokens issued through the API only
		}
		tok, err := scimapi.NewStaticToken(a.ID, source, secret)
		if err != nil {
			return nil, fmt.Errorf("account %s: %w", a.ID, err)
		}
		static = append(static, tok)
	}
	if len(accounts) == 0 {
		return nil, nil
	}
	if db.pool == nil { // validation requires the DSN with scim accounts
		return nil, fmt.Errorf("console.postgres_dsn: required by directory type scim")
	}
	store, err := scim.Open(ctx, db.pool, time.Now)
	if err != nil {
		return nil, err
	}
	return &scimService{
		options: scimapi.Options{Store: store, Tokens: store, IsAccount: func(id string) bool { return accounts[id] },
			Trigger: trigger, Log: log.Named("scim")},
		auth: &scimapi.Authenticator{Static: static, Store: store},
	}, nil
}

// routes are the options of the SCIM routes (nil without SCIM accounts).
func (s *scimService) routes() *scimapi.Options {
	if s == nil {
		return nil
	}
	return &s.options
}

package main

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/entitlement/console"
	"github.com/dirsync/dirsync/internal/sync/consoleapi"
)

// consoleAccountsOf describes every configured account to the console
// service: console-managed ones, and directory ones (so that console
// actions on them are refused with the right message and their claimed
// domains are never invited into a team).
func consoleAccountsOf(cfg *config.Config) []console.Account {
	out := make([]console.Account, 0, len(cfg.Accounts))
	for _, a := range cfg.Accounts {
		ca := console.Account{ID: a.ID, ClaimedDomains: a.ClaimedDomains, DirectoryType: a.Directory.Type,
			AutoJoinPermission: entitlement.Permission(a.Console.AutoJoinPermission)}
		switch {
		case a.Directory.Type != config.DirectoryConsole:
			ca.Kind = console.KindDirectory
		case a.Type == config.AccountTeam:
			ca.Kind = console.KindTeam
		default:
			ca.Kind = console.KindEnterprise
		}
		out = append(out, ca)
	}
	return out
}

// hasConsoleAccounts reports whether any account is console-managed.
func hasConsoleAccounts(cfg *config.Config) bool {
	for _, a := range cfg.Accounts {
		if a.Directory.Type == config.DirectoryConsole {
			return true
		}
	}
	return false
}

// newConsole opens the console store (PostgreSQL, migrated at start-up)
// when an account is console-managed; it returns nil otherwise. It must be
// given the plain cache writer: console publishes are serialised by
// PostgreSQL advisory locks, on whichever replica takes the request.
func newConsole(ctx context.Context, cfg *config.Config, db *database, c console.Cache, log *zap.Logger) (*console.Service, func(), error) {
	if !hasConsoleAccounts(cfg) {
		return nil, func() {}, nil
	}
	if db.pool == nil { // validation requires the DSN with console accounts
		return nil, nil, fmt.Errorf("console.postgres_dsn: required by console accounts")
	}
	svc, err := console.Open(ctx, console.Options{
		Pool: db.pool, Accounts: consoleAccountsOf(cfg), Cache: c, Now: time.Now, Log: log.Named("console"),
	})
	if err != nil {
		return nil, nil, err
	}
	return svc, svc.Close, nil
}

// newSyncer runs directory accounts through the engine and console
// accounts through a resync from PostgreSQL (svc may be nil).
func newSyncer(eng consoleapi.Engine, svc *console.Service) *consoleapi.Syncer {
	if svc == nil {
		return consoleapi.NewSyncer(eng, nil, time.Now)
	}
	return consoleapi.NewSyncer(eng, svc, time.Now)
}

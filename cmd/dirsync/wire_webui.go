package main

import (
	"context"
	"strings"

	"github.com/dirsync/dirsync/internal/entitlement/console"
	"github.com/dirsync/dirsync/internal/sync/apimux"
	"github.com/dirsync/dirsync/internal/sync/httpapi"
	"github.com/dirsync/dirsync/internal/sync/webui"
)

// consolePages builds the web console's routes for a generation.
func (d *daemon) consolePages(gen *generation, auth apimux.Credentials, svc *console.Service, hist httpapi.History) ([]apimux.Route, error) {
	c, ok := gen.cache.(webui.Cache)
	if !ok { // every cache backend implements it
		return nil, nil
	}
	o := webui.Options{
		Credentials: &auth, Passes: gen.syncer, Cache: c,
		Recent: gen.engine.RecentReports, Progress: gen.engine.Progress, Kind: gen.live.Kind,
		SyncTimeout: d.env.passDeadline("full"), Log: d.log.Named("console"),
	}
	if svc != nil {
		o.Console = svc
	}
	if hist != nil {
		o.History = hist
	}
	if !d.perStart.IsZero() {
		o.PerStartTokenPath = strings.TrimPrefix(d.perStart.Source(), "per-start token file ")
	}
	if gen.ha != nil {
		o.Owner = func(_ context.Context, account string) string {
			if _, owned := gen.ha.Token(account); owned {
				return "this replica"
			}
			return "another replica"
		}
	}
	return webui.Routes(o), nil
}

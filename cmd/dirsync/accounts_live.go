package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/entitlement/mapper"
	"github.com/dirsync/dirsync/internal/netpolicy"
	"github.com/dirsync/dirsync/internal/sync/accountsapi"
	"github.com/dirsync/dirsync/internal/sync/engine"
	"github.com/dirsync/dirsync/internal/sync/metrics"
	"github.com/dirsync/dirsync/internal/sync/schedule"
)

// liveAccounts keeps a generation's running accounts in step with the
// config file and the account registry one account at a time: adding,
// changing or deleting an account opens its source, puts it in the engine,
// the scheduler and the replicas' leases, and touches no other account.
type liveAccounts struct {
	d       *daemon
	gen     *generation
	network *netpolicy.Policy

	mu      sync.Mutex
	cfg     *config.Config            // the file's
	api     map[string]apiAccount     // accounts run from the registry
	sources map[string]metrics.Source // every directory account's source
	// seen is the registry version last applied.
	seen int64
}

// apiAccount is an account run from the registry.
type apiAccount struct {
	acct    config.Account
	version int64
}

var _ accountsapi.Live = (*liveAccounts)(nil)

func newLiveAccounts(d *daemon, gen *generation, accounts []account) (*liveAccounts, error) {
	network, err := netpolicy.New(gen.cfg.AccountsAPI.AllowedNetworks)
	if err != nil { // validated with the config
		return nil, fmt.Errorf("accounts_api.allowed_networks: %w", err)
	}
	l := &liveAccounts{d: d, gen: gen, network: network, cfg: gen.cfg, api: map[string]apiAccount{}, sources: map[string]metrics.Source{}}
	for _, a := range accounts {
		l.sources[a.Policy.Account] = metrics.Source{Kind: a.kind, Stats: a.source}
	}
	d.metrics.SetSources(maps.Clone(l.sources))
	return l, nil
}

// Config is the running config file.
func (l *liveAccounts) Config() *config.Config {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cfg
}

// Others returns the registry's accounts run here, except id.
func (l *liveAccounts) Others(id string) []config.Account {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []config.Account
	for other, a := range l.api {
		if other != id {
			out = append(out, a.acct)
		}
	}
	return out
}

// ids are every account run here (file first), for the leases.
func (l *liveAccounts) idsLocked() []string {
	out := make([]string, 0, len(l.cfg.Accounts)+len(l.api))
	file := make(map[string]bool, len(l.cfg.Accounts))
	for _, a := range l.cfg.Accounts {
		out = append(out, a.ID)
		file[a.ID] = true
	}
	for id := range l.api {
		if !file[id] {
			out = append(out, id)
		}
	}
	return out
}

// jobs are an account's scheduled passes.
func (l *liveAccounts) jobs(a *config.Account) []schedule.Job {
	return []schedule.Job{
		{Mode: string(engine.ModeFull), Spec: a.Schedule.Full, Timeout: l.d.env.passDeadline(engine.ModeFull), RunAtStart: true},
		{Mode: string(engine.ModeIncremental), Spec: a.Schedule.Incremental, Timeout: l.d.env.passDeadline(engine.ModeIncremental)},
	}
}

// put runs account a (from the file, or the registry with its sealed
// secrets resolved by getenv): a new source, or a new policy for the next
// pass, which it triggers. Locked by the caller.
func (l *liveAccounts) putLocked(ctx context.Context, a *config.Account, getenv func(string) string) error {
	acct, err := openAccount(ctx, a, getenv, l.d.env.kinds, l.gen.db)
	if err != nil {
		return err
	}
	_, existed := l.sources[a.ID]
	l.gen.engine.Put(acct.Account)
	if err := l.gen.sched.Put(a.ID, l.jobs(a)); err != nil {
		return err
	}
	l.sources[a.ID] = metrics.Source{Kind: acct.kind, Stats: acct.source}
	l.d.metrics.PutSource(a.ID, l.sources[a.ID])
	if existed {
		l.gen.sched.Trigger(a.ID, string(engine.ModeIncremental)) // apply the change now
	}
	return nil
}

// removeLocked stops account id; with unpublish its decisions leave the
// cache (they become unknown_user). It returns how many it removed.
func (l *liveAccounts) removeLocked(ctx context.Context, id string, unpublish bool) (int, error) {
	l.gen.sched.Remove(id)
	n, err := l.gen.engine.Remove(ctx, id, unpublish)
	delete(l.sources, id)
	l.d.metrics.RemoveAccount(id)
	if errors.Is(err, engine.ErrUnknownAccount) {
		err = nil
	}
	return n, err
}

// Apply runs stored account id as the registry holds it now, or stops it
// when the registry no longer does.
func (l *liveAccounts) Apply(ctx context.Context, id string) (int, error) {
	reg := l.gen.db.registry
	if reg == nil {
		return 0, errors.New("no account registry: accounts API needs console.postgres_dsn")
	}
	rec, ok, err := reg.Get(ctx, id)
	if err != nil {
		return 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.cfg.Accounts {
		if a.ID == id {
			if ok {
				l.d.log.Warn("an account of the registry has the id of an account of the config file; the file's is run", zap.String("account", id))
			}
			return 0, nil
		}
	}
	if !ok {
		if _, ran := l.api[id]; !ran {
			return 0, nil
		}
		delete(l.api, id)
		n, err := l.removeLocked(ctx, id, true)
		l.gen.ha.setAccounts(l.idsLocked())
		l.d.log.Info("account deleted through the API", zap.String("account", id), zap.Int("decisions_removed", n), zap.Error(err))
		return n, err
	}
	if cur, ran := l.api[id]; ran && cur.version == rec.Version {
		return 0, nil
	}
	base := *l.cfg
	base.Accounts = slices.Clone(l.cfg.Accounts)
	for other, a := range l.api {
		if other != id {
			base.Accounts = append(base.Accounts, a.acct)
		}
	}
	a, getenv, err := accountsapi.Decode(&base, rec.Doc, rec.Secrets)
	if err != nil {
		return 0, fmt.Errorf("account %s (registry version %d): %w", id, rec.Version, err)
	}
	a.Network = l.network
	if err := l.putLocked(ctx, a, getenv); err != nil {
		return 0, err
	}
	l.api[id] = apiAccount{acct: *a, version: rec.Version}
	l.gen.ha.setAccounts(l.idsLocked())
	l.d.log.Info("account applied from the registry", zap.String("account", id), zap.Int64("version", rec.Version), zap.String("by", rec.UpdatedBy))
	return 0, nil
}

// follow applies the registry's changes (made here or on another replica)
// until ctx ends: it reads the registry's version every second and, when
// it moved, applies each account whose version changed.
func (l *liveAccounts) follow(ctx context.Context) {
	reg := l.gen.db.registry
	if reg == nil {
		return
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if err := l.syncRegistry(ctx); err != nil && ctx.Err() == nil {
			l.d.log.Warn("account registry not read; its accounts stay as they are", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (l *liveAccounts) syncRegistry(ctx context.Context) error {
	reg := l.gen.db.registry
	v, err := reg.Version(ctx)
	if err != nil {
		return err
	}
	l.mu.Lock()
	seen := l.seen
	l.mu.Unlock()
	if v == seen {
		return nil
	}
	recs, err := reg.List(ctx)
	if err != nil {
		return err
	}
	stored := map[string]int64{}
	for _, r := range recs {
		stored[r.ID] = r.Version
	}
	// Only the accounts that changed: deleted (running, no longer stored),
	// new, or stored at another version. The rest are not read again.
	l.mu.Lock()
	var ids []string
	for id := range l.api {
		if _, ok := stored[id]; !ok {
			ids = append(ids, id)
		}
	}
	for id, ver := range stored {
		if cur, ok := l.api[id]; !ok || cur.version != ver {
			ids = append(ids, id)
		}
	}
	l.mu.Unlock()
	var failed error
	for _, id := range ids {
		if _, err := l.Apply(ctx, id); err != nil {
			failed = errors.Join(failed, err)
		}
	}
	if failed == nil {
		l.mu.Lock()
		l.seen = v
		l.mu.Unlock()
	}
	return failed
}

// applyFile applies a reloaded config file whose settings outside the
// accounts are unchanged: only the accounts it adds, changes or removes
// are touched. A removed account's decisions leave the cache.
func (l *liveAccounts) applyFile(ctx context.Context, next *config.Config) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := map[string]string{}
	for _, a := range l.cfg.Accounts {
		old[a.ID] = a.Fingerprint()
	}
	var errs error
	changed := 0
	for i := range next.Accounts {
		a := &next.Accounts[i]
		if fp, ok := old[a.ID]; ok && fp == a.Fingerprint() {
			delete(old, a.ID)
			continue
		}
		delete(old, a.ID)
		changed++
		if a.Directory.Type == config.DirectoryConsole {
			continue // console accounts are the console service's
		}
		if err := l.putLocked(ctx, a, l.d.env.getenv); err != nil {
			errs = errors.Join(errs, fmt.Errorf("account %s: %w", a.ID, err))
		}
	}
	l.cfg = next
	for id := range old {
		changed++
		if _, err := l.removeLocked(ctx, id, true); err != nil {
			errs = errors.Join(errs, fmt.Errorf("account %s: %w", id, err))
		}
	}
	l.gen.ha.setAccounts(l.idsLocked())
	l.d.log.Info("config reloaded: only the accounts that changed were applied", zap.Int("accounts_changed", changed))
	return errs
}

// Groups lists the groups of an account's last read.
func (l *liveAccounts) Groups(id, search string, limit int) ([]engine.GroupSummary, int, bool) {
	return l.gen.engine.Groups(id, search, limit)
}

// Preview is a dry run of the account with policy p.
func (l *liveAccounts) Preview(ctx context.Context, id string, p mapper.Policy) (engine.Report, error) {
	return l.gen.engine.Engine.Run(ctx, id, engine.Options{Mode: engine.ModeIncremental, DryRun: true, Policy: &p})
}

// Kind returns an account's directory type ("" for an unknown account).
func (l *liveAccounts) Kind(id string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.cfg.Accounts {
		if l.cfg.Accounts[i].ID == id {
			return l.cfg.Accounts[i].Directory.Type
		}
	}
	if a, ok := l.api[id]; ok {
		return a.acct.Directory.Type
	}
	return ""
}

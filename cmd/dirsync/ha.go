package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/store"

	"go.uber.org/zap"

	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/sync/engine"
	"github.com/dirsync/dirsync/internal/sync/lease"
)

// errNotOwned marks a pass skipped because another replica owns the
// account (no pass ran; nothing to record in metrics).
var errNotOwned = fmt.Errorf("owned by another replica: %w", store.ErrNotOwner)

// replicaHA makes one generation of `dirsync run` a replica among several
// sharing one Redis (see docs/high-availability.md): a lease manager decides
// which accounts this replica syncs, and the engine publishes through a
// fenced writer holding this replica's tokens. It is nil for the memory
// cache, where there is only ever one process.
type replicaHA struct {
	redis    config.Redis
	ha       config.HA
	env      env
	log      *zap.Logger
	accounts []string

	mu sync.Mutex
	m  *lease.Manager // set while serve runs
	// synced is the token under which each account last completed a pass:
	// after a (re)acquisition the first pass is a full one, because another
	// replica (or an emptied Redis) may have changed what is published.
	synced map[string]string
}

// newReplicaHA returns the HA state for cfg and the cache the engine must
// publish through: the fenced writer when the cache is Redis, c otherwise.
func newReplicaHA(cfg *config.Config, e env, c cache, log *zap.Logger) (*replicaHA, engine.Cache) {
	r, ok := c.(*store.Redis)
	if !ok {
		return nil, c
	}
	h := &replicaHA{redis: cfg.Cache.Redis, ha: cfg.HA, env: e, log: log.Named("ha"), synced: map[string]string{}}
	for _, a := range cfg.Accounts {
		h.accounts = append(h.accounts, a.ID)
	}
	return h, store.NewFenced(r, h, store.FenceAuto)
}

// serve runs the lease manager until ctx ends, then releases the leases
// (another replica takes over at once) and returns. Its Redis connections
// are its own, so lease renewal never queues behind a large publish.
func (h *replicaHA) serve(ctx context.Context) {
	client, err := newRedisClient(h.redis, h.env)
	if err != nil {
		h.log.Error("lease manager not started; this replica syncs nothing", zap.Error(err))
		return
	}
	defer client.Close()
	m, err := lease.New(client, lease.Options{
		Replica: h.ha.ReplicaID, KeyPrefix: h.redis.KeyPrefix, Accounts: h.accountIDs(), Period: h.ha.LeasePeriod, Log: h.log,
	})
	if err != nil {
		h.log.Error("lease manager not started; this replica syncs nothing", zap.Error(err))
		return
	}
	h.mu.Lock()
	h.m = m
	ids := slices.Clone(h.accounts) // changed since New was given them?
	h.mu.Unlock()
	m.SetAccounts(ids)
	h.log.Info("replica started: accounts are shared with other replicas through Redis leases",
		zap.String("holder", m.Holder()), zap.Duration("lease_period", m.Period()))
	_ = m.Run(ctx) // only fails when already running
	h.mu.Lock()
	h.m = nil
	h.mu.Unlock()
}

func (h *replicaHA) manager() *lease.Manager {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m
}

// Acquisitions counts the leases this replica acquired (0 before the
// lease manager runs).
func (h *replicaHA) Acquisitions() uint64 {
	m := h.manager()
	if m == nil {
		return 0
	}
	return m.Acquisitions()
}

// Token is the fencing token source of the fenced writer.
func (h *replicaHA) Token(account string) (string, bool) {
	m := h.manager()
	if m == nil {
		return "", false
	}
	return m.Token(account)
}

// gate runs next (a pass) only when this replica owns the account. A pass
// on an account owned elsewhere is skipped with an error wrapping
// errNotOwned; the first incremental pass after an acquisition is run as a
// full pass (unless a full pass under the same lease ran first). Dry runs
// publish nothing and are never skipped. A nil h runs every pass.
func (h *replicaHA) gate(ctx context.Context, account string, opts engine.Options,
	next func(context.Context, string, engine.Options) (engine.Report, error),
) (engine.Report, error) {
	if h == nil || opts.DryRun {
		return next(ctx, account, opts)
	}
	token, ok := h.Token(account)
	if !ok {
		err := fmt.Errorf("sync of account %s skipped: %w; send syncs for it to the replica that owns it (see /v1/status)", account, errNotOwned)
		h.log.Debug("sync skipped: account owned by another replica", zap.String("account", account), zap.String("mode", string(opts.Mode)))
		return engine.Report{Account: account, Mode: opts.Mode, StartedAt: time.Now().UTC(), Result: "skipped", Error: err.Error()}, err
	}
	// Decided when the pass starts: a pass that waited behind the first
	// full pass under this token stays incremental.
	opts.FullIf = func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.synced[account] != token
	}
	rep, err := next(ctx, account, opts)
	if err == nil || errors.Is(err, engine.ErrHeld) {
		h.mu.Lock()
		h.synced[account] = token
		h.mu.Unlock()
	}
	return rep, err
}

// Ownership is an account's entry in /v1/status in HA mode.
type Ownership struct {
	// Replica is this replica's holder id.
	Replica string `json:"replica"`
	// Owned says whether this replica syncs the account.
	Owned bool `json:"owned"`
	// Holder is the replica holding the account's lease in Redis ("" when
	// nobody does or Redis cannot be read).
	Holder     string    `json:"holder"`
	Token      string    `json:"token,omitempty"`
	ValidUntil time.Time `json:"valid_until,omitzero"`
	// LiveReplicas is the number of replicas at the last heartbeat.
	LiveReplicas int `json:"live_replicas"`
}

// statusFunc returns the ownership reporter for /v1/status (nil without HA).
func (h *replicaHA) statusFunc() func(ctx context.Context, account string) any {
	if h == nil {
		return nil
	}
	return func(ctx context.Context, account string) any {
		m := h.manager()
		if m == nil {
			return Ownership{}
		}
		st := m.State()
		own := st.Accounts[account]
		out := Ownership{Replica: st.Holder, Owned: own.Owned, Token: own.Token, ValidUntil: own.ValidUntil, LiveReplicas: st.LiveReplicas}
		if holder, err := m.CurrentHolder(ctx, account); err == nil {
			out.Holder = holder
		}
		return out
	}
}

// accountIDs returns the accounts the replicas share.
func (h *replicaHA) accountIDs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.accounts)
}

// setAccounts changes the accounts the replicas share (an account created
// or deleted through the API, a reload). A nil h does nothing.
func (h *replicaHA) setAccounts(ids []string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	h.accounts = slices.Clone(ids)
	m := h.m
	h.mu.Unlock()
	if m != nil {
		m.SetAccounts(ids)
	}
}

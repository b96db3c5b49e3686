// Package lease divides accounts between dirsync replicas that share one
// Redis, so that each account has at most one writer at a time.
//
// Each account has a lease key holding its owner's fencing token and
// expiring unless renewed, and a fence key holding the account's current
// token (see accesscache.Keys: both carry the account's hash tag, so they
// are Redis Cluster safe). A token is "<seq>|<holder>|<nonce>": seq grows by
// one on every acquisition of the account, holder names the replica process
// and the nonce makes each acquisition's token unique. The
// fenced cache writer (store.Fenced) refuses any publish whose token is
// not the account's current one, so a replica that was paused or cut off past
// its lease cannot overwrite the replica that took over.
//
// A Manager acquires accounts (SET of the lease only if absent, inside a Lua
// script that also advances the fence), renews them by a Lua
// check-and-extend, releases them by a Lua compare-and-delete, and spreads
// them: replicas announce themselves with a heartbeat in a sorted set and
// each owns at most ceil(accounts / live replicas), giving up its surplus
// when more replicas appear. See docs/high-availability.md.
package lease

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement/accesscache"
)

// DefaultPeriod is the default lease period.
const DefaultPeriod = 15 * time.Second

// Options configure a Manager.
type Options struct {
	// Replica names this replica; a random suffix is added to form the
	// holder id. Default: host name and process id.
	Replica string
	// KeyPrefix is the cache key prefix (cache.redis.key_prefix).
	KeyPrefix string
	// Accounts are every configured account id. All replicas must be
	// configured with the same accounts.
	Accounts []string
	// Period is how long a lease lasts without renewal. Renewal, heartbeat
	// and acquisition run every third of it. Default DefaultPeriod.
	Period time.Duration
	Log    *zap.Logger
}

// Manager owns the leases of one replica. Run drives it; Owns and Token may
// be called concurrently from any goroutine.
type Manager struct {
	c       redis.UniversalClient
	keys    accesscache.Keys
	holder  string
	replica string
	period  time.Duration
	log     *zap.Logger

	// wake asks Run for a step before the next tick (SetAccounts).
	wake chan struct{}
	// acquisitions counts leases acquired (Acquisitions).
	acquisitions atomic.Uint64

	mu sync.Mutex
	// accounts are the accounts to share, in this holder's order of
	// preference; SetAccounts changes them.
	accounts []string
	owned    map[string]held
	alive    int
	running  bool
}

// held is one owned account: its token and until when this process may
// consider it owned (measured from before the command that set the lease
// period was sent, so it is never later than Redis's own expiry).
type held struct {
	token string
	until time.Time
}

// New returns a manager over c. It does not touch Redis until Run.
func New(c redis.UniversalClient, o Options) (*Manager, error) {
	if o.Period == 0 {
		o.Period = DefaultPeriod
	}
	if o.Period < 300*time.Millisecond {
		return nil, fmt.Errorf("lease period %v is too short", o.Period)
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Replica == "" {
		host, _ := os.Hostname()
		o.Replica = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if strings.ContainsAny(o.Replica, "|{} ") {
		return nil, fmt.Errorf("replica id %q may not contain '|', braces or spaces", o.Replica)
	}
	m := &Manager{
		c:      c,
		keys:   accesscache.NewKeys(o.KeyPrefix),
		holder: o.Replica + "#" + newNonce(),
		period: o.Period,
		log:    o.Log,
		owned:  map[string]held{},
		wake:   make(chan struct{}, 1),
	}
	m.replica = o.Replica
	m.accounts = m.preferenceOrder(o.Accounts)
	return m, nil
}

// preferenceOrder sorts accounts in this replica's order of preference.
func (m *Manager) preferenceOrder(accounts []string) []string {
	// Each account's hash once (not once per comparison): thousands of
	// accounts are sorted on every SetAccounts.
	type ranked struct {
		account string
		hash    uint64
	}
	rs := make([]ranked, len(accounts))
	for i, a := range accounts {
		rs[i] = ranked{a, preference(m.replica, a)}
	}
	slices.SortFunc(rs, func(a, b ranked) int {
		if c := cmp.Compare(a.hash, b.hash); c != 0 {
			return c
		}
		return strings.Compare(a.account, b.account)
	})
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.account
	}
	return out
}

// SetAccounts replaces the accounts to share (an account created or
// deleted through the accounts API, a config reload). The leases of
// accounts no longer listed are released at the next step; new accounts
// are acquired like any other. Every replica must come to the same list.
func (m *Manager) SetAccounts(accounts []string) {
	sorted := m.preferenceOrder(accounts)
	m.mu.Lock()
	m.accounts = sorted
	m.mu.Unlock()
	select { // take or give up leases now, not at the next tick
	case m.wake <- struct{}{}:
	default:
	}
}

// preference spreads first choices: each replica tries accounts in its own
// pseudo-random order, so replicas starting together rarely contend.
func preference(replica, account string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(replica + "\x00" + account))
	return h.Sum64()
}

// Holder is this process's holder id ("<replica>#<nonce>").
func (m *Manager) Holder() string { return m.holder }

// Period is the lease period.
func (m *Manager) Period() time.Duration { return m.period }

// Owns reports whether this replica owns account now.
func (m *Manager) Owns(account string) bool {
	_, ok := m.Token(account)
	return ok
}

// Acquisitions counts the leases this manager has acquired: a caller that
// acts on new ownership (a pass right after an acquisition) looks at the
// owned accounts only when it moved.
func (m *Manager) Acquisitions() uint64 { return m.acquisitions.Load() }

// Token returns this replica's fencing token for account, if it owns it.
func (m *Manager) Token(account string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.owned[account]
	if !ok || !m.running || !time.Now().Before(h.until) {
		return "", false
	}
	return h.token, true
}

// AccountState is one account's ownership as this replica sees it.
type AccountState struct {
	Owned bool   `json:"owned"`
	Token string `json:"token,omitempty"`
	// ValidUntil is when the lease lapses unless renewed.
	ValidUntil time.Time `json:"valid_until,omitzero"`
}

// State is this replica's view: its holder id, the number of live
// replicas at the last heartbeat, and the accounts it owns.
type State struct {
	Holder       string                  `json:"holder"`
	LiveReplicas int                     `json:"live_replicas"`
	Accounts     map[string]AccountState `json:"accounts"`
}

// State returns a copy of the replica's current view.
func (m *Manager) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := State{Holder: m.holder, LiveReplicas: m.alive, Accounts: map[string]AccountState{}}
	now := time.Now()
	for _, a := range m.accounts {
		h, ok := m.owned[a]
		if ok && m.running && now.Before(h.until) {
			st.Accounts[a] = AccountState{Owned: true, Token: h.token, ValidUntil: h.until.UTC()}
		} else {
			st.Accounts[a] = AccountState{}
		}
	}
	return st
}

// CurrentHolder reads who holds account's lease in Redis ("" when nobody).
func (m *Manager) CurrentHolder(ctx context.Context, account string) (string, error) {
	v, err := m.c.Get(ctx, m.keys.Lease(account)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read lease of %s: %w", account, err)
	}
	return holderOf(v), nil
}

// Run heartbeats, renews, rebalances and acquires every third of the lease
// period until ctx ends, then releases every lease it holds (so another
// replica can take over at once) and returns. Redis errors are logged and
// retried at the next step; they never end Run.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.running {
		m.mu.Unlock()
		return errors.New("lease manager already running")
	}
	m.running = true
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.running = false
		m.mu.Unlock()
	}()

	tick := time.NewTicker(m.period / 3)
	defer tick.Stop()
	var renewed time.Time
	for {
		sctx, cancel := context.WithTimeout(ctx, m.period/3)
		// A step woken by SetAccounts renews only when a renewal is due:
		// thousands of accounts added one by one must not each renew every
		// owned lease.
		renew := time.Since(renewed) >= m.period/3
		if renew {
			renewed = time.Now()
		}
		m.step(sctx, renew)
		cancel()
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			m.releaseAll(rctx)
			cancel()
			return nil
		case <-tick.C:
			renewed = time.Time{}
		case <-m.wake:
		}
	}
}

// heartbeat announces this replica until a lease period from now (Redis
// clock) and returns how many replicas are live.
var heartbeat = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])`)

// acquire takes a free lease, advancing the fence to a new token
// "<seq+1>|<holder>|<acquisition nonce>", or adopts this holder's own live
// lease (a renewal whose reply was lost). It returns the token, or nil when
// another holder has the lease. The nonce makes every acquisition's token
// unique even when Redis lost the fence and seq starts again.
//
//	KEYS: lease, fence   ARGV: holder, period ms, acquisition nonce
var acquire = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
local f = redis.call('GET', KEYS[2])
if v then
  if v == f and string.find(v, '|' .. ARGV[1] .. '|', 1, true) then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return v
  end
  return false
end
local seq = 0
if f then seq = tonumber(string.match(f, '^(%d+)')) or 0 end
local tok = string.format('%d', seq + 1) .. '|' .. ARGV[1] .. '|' .. ARGV[3]
redis.call('SET', KEYS[2], tok)
redis.call('SET', KEYS[1], tok, 'PX', ARGV[2])
return tok`)

// renew extends a lease that still holds this token while the token is
// still the account's current one.
//
//	KEYS: lease, fence   ARGV: token, period ms
var renew = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`)

// release deletes a lease only if it still holds this token.
//
//	KEYS: lease   ARGV: token
var release = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

// step heartbeats, releases unlisted accounts, renews the owned leases
// when renew is set, and takes or gives up accounts to reach this
// replica's share.
func (m *Manager) step(ctx context.Context, renew bool) {
	ms := m.period.Milliseconds()
	alive, err := heartbeat.Run(ctx, m.c, []string{m.keys.Replicas()}, m.holder, ms).Int()
	if err != nil {
		m.log.Warn("lease heartbeat failed; will retry", zap.Error(err))
	} else {
		m.mu.Lock()
		m.alive = alive
		m.mu.Unlock()
	}
	m.releaseUnlisted(ctx)
	if renew {
		m.renewAll(ctx)
	}
	if err != nil {
		return // without a live count, neither take nor give up accounts
	}
	m.mu.Lock()
	n := len(m.accounts)
	m.mu.Unlock()
	target := (n + alive - 1) / max(alive, 1)
	owned := m.ownedAccounts()
	if len(owned) > target {
		m.giveUp(ctx, owned, len(owned)-target)
	} else if len(owned) < target {
		m.acquireUpTo(ctx, target-len(owned))
	}
}

// ownedAccounts lists owned accounts in preference order.
func (m *Manager) ownedAccounts() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, a := range m.accounts {
		if _, ok := m.owned[a]; ok {
			out = append(out, a)
		}
	}
	return out
}

func (m *Manager) renewAll(ctx context.Context) {
	owned := m.ownedAccounts()
	if len(owned) == 0 {
		return
	}
	m.mu.Lock()
	tokens := make([]string, len(owned))
	for i, a := range owned {
		tokens[i] = m.owned[a].token
	}
	m.mu.Unlock()
	sent := time.Now()
	pipe := m.c.Pipeline()
	cmds := make([]*redis.Cmd, len(owned))
	for i, a := range owned {
		cmds[i] = renew.Eval(ctx, pipe, []string{m.keys.Lease(a), m.keys.Fence(a)}, tokens[i], m.period.Milliseconds())
	}
	_, _ = pipe.Exec(ctx) // errors are per command
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, a := range owned {
		n, err := cmds[i].Int()
		switch {
		case err == nil && n == 1:
			m.owned[a] = held{token: tokens[i], until: sent.Add(m.period)}
		case err == nil:
			delete(m.owned, a)
			m.log.Warn("lease lost: another replica owns the account now, or the lease expired", zap.String("account", a), zap.String("token", tokens[i]))
		default:
			// Unknown outcome: stop publishing now; the next step adopts the
			// lease again if it is still ours.
			delete(m.owned, a)
			m.log.Warn("lease renewal failed; account dropped until it can be re-acquired", zap.String("account", a), zap.Error(err))
		}
	}
}

// releaseUnlisted gives up the leases of owned accounts SetAccounts no
// longer lists.
func (m *Manager) releaseUnlisted(ctx context.Context) {
	m.mu.Lock()
	listed := make(map[string]bool, len(m.accounts))
	for _, a := range m.accounts {
		listed[a] = true
	}
	var gone []string
	for a := range m.owned {
		if !listed[a] {
			gone = append(gone, a)
		}
	}
	m.mu.Unlock()
	for _, a := range gone {
		m.releaseOne(ctx, a, "account removed")
	}
}

// acquireUpTo takes up to n free accounts, in preference order.
func (m *Manager) acquireUpTo(ctx context.Context, n int) {
	m.mu.Lock()
	var candidates []string
	for _, a := range m.accounts {
		if _, ok := m.owned[a]; !ok {
			candidates = append(candidates, a)
		}
	}
	m.mu.Unlock()
	// One round trip to see which leases are free.
	pipe := m.c.Pipeline()
	exists := make([]*redis.IntCmd, len(candidates))
	for i, a := range candidates {
		exists[i] = pipe.Exists(ctx, m.keys.Lease(a))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		m.log.Warn("lease scan failed; will retry", zap.Error(err))
		return
	}
	for i, a := range candidates {
		if n == 0 {
			return
		}
		if exists[i].Val() != 0 {
			continue
		}
		sent := time.Now()
		tok, err := acquire.Run(ctx, m.c, []string{m.keys.Lease(a), m.keys.Fence(a)}, m.holder, m.period.Milliseconds(), newNonce()).Text()
		if errors.Is(err, redis.Nil) {
			continue // another replica was quicker
		}
		if err != nil {
			m.log.Warn("lease acquisition failed; will retry", zap.String("account", a), zap.Error(err))
			return
		}
		m.mu.Lock()
		m.owned[a] = held{token: tok, until: sent.Add(m.period)}
		m.mu.Unlock()
		m.acquisitions.Add(1)
		m.log.Info("lease acquired: this replica now syncs the account", zap.String("account", a), zap.String("token", tok))
		n--
	}
}

// giveUp releases the n least preferred owned accounts so that replicas
// below their share can take them.
func (m *Manager) giveUp(ctx context.Context, owned []string, n int) {
	for _, a := range slices.Backward(owned[len(owned)-n:]) {
		m.releaseOne(ctx, a, "rebalancing: more replicas are live")
	}
}

func (m *Manager) releaseAll(ctx context.Context) {
	for _, a := range m.ownedAccounts() {
		m.releaseOne(ctx, a, "shutting down")
	}
	if err := m.c.ZRem(ctx, m.keys.Replicas(), m.holder).Err(); err != nil {
		m.log.Warn("leaving the replica set failed; it expires by itself", zap.Error(err))
	}
}

func (m *Manager) releaseOne(ctx context.Context, account, why string) {
	m.mu.Lock()
	h, ok := m.owned[account]
	delete(m.owned, account)
	m.mu.Unlock()
	if !ok {
		return
	}
	if err := release.Run(ctx, m.c, []string{m.keys.Lease(account)}, h.token).Err(); err != nil {
		m.log.Warn("lease release failed; it expires by itself", zap.String("account", account), zap.Error(err))
		return
	}
	m.log.Info("lease released", zap.String("account", account), zap.String("reason", why))
}

// holderOf returns the holder part of a token.
func holderOf(token string) string {
	_, rest, _ := strings.Cut(token, "|")
	if i := strings.LastIndexByte(rest, '|'); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// newNonce returns 8 random hex digits.
func newNonce() string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// Seq is the sequence number of a token, 0 if malformed.
func Seq(token string) int64 {
	s, _, _ := strings.Cut(token, "|")
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

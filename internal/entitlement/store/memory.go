package store

import (
	"fmt"
	"github.com/dirsync/dirsync/entitlement/accesscache"

	"context"
	"encoding/json"
	"maps"
	"sync"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/mapper"
	"github.com/dirsync/dirsync/internal/mailaddr"

	"github.com/dirsync/dirsync/entitlement"
)

// Memory is an in-process cache with the same behaviour as Redis, for trials
// (make run) and tests. Only its own process can read it.
type Memory struct {
	mu     sync.RWMutex
	values map[string][]byte // email → encoded decision
	index  map[string]map[string]mapper.Published
	status map[string][]byte
	// changes are each account's latest change events, oldest first
	// (memoryChangesKept of them), as the Redis stream would hold them.
	changes map[string][]ChangeEvent
	seq     uint64
}

// memoryChangesKept is how many change events the memory cache keeps per
// account (for the console's change feed).
const memoryChangesKept = 200

// NewMemory returns an empty memory cache.
func NewMemory() *Memory {
	return &Memory{
		values:  map[string][]byte{},
		index:   map[string]map[string]mapper.Published{},
		status:  map[string][]byte{},
		changes: map[string][]ChangeEvent{},
	}
}

// Ping always succeeds.
func (m *Memory) Ping(context.Context) error { return nil }

// Check returns the decision for email, as Reader.Check does.
func (m *Memory) Check(_ context.Context, email string) (entitlement.Decision, error) {
	norm := mailaddr.Normalize(email)
	m.mu.RLock()
	b, ok := m.values[norm]
	m.mu.RUnlock()
	if norm == "" || !ok {
		if norm == "" {
			norm = email
		}
		return entitlement.Denied(norm, entitlement.ReasonUnknownUser), nil
	}
	d, err := accesscache.DecodeDecisionFor(b, norm)
	if err != nil {
		return entitlement.Decision{}, fmt.Errorf("%w: %w", accesscache.ErrUnavailable, err)
	}
	return d, nil
}

// Published returns a copy of an account's index.
func (m *Memory) Published(_ context.Context, account string) (map[string]mapper.Published, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return maps.Clone(m.index[account]), nil
}

// Apply publishes changes as Redis.Apply does, with the same ownership
// rule (owner.go) checked under the lock.
func (m *Memory) Apply(_ context.Context, account string, changes []mapper.Change, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	idx := m.index[account]
	if idx == nil {
		idx = map[string]mapper.Published{}
		m.index[account] = idx
	}
	var refused []Conflict
	for i := range changes {
		ch := &changes[i]
		owner := ownerOf(m.values[ch.Email])
		switch {
		case ch.New == nil:
			if owner == account {
				delete(m.values, ch.Email)
			}
			delete(idx, ch.Email)
		case owner != "" && owner != account && ch.ByInvitation:
			refused = append(refused, Conflict{Email: ch.Email, Owner: owner})
			delete(idx, ch.Email)
			continue
		default:
			v, err := encodeDecision(ch.New, at)
			if err != nil {
				return err
			}
			m.values[ch.Email] = v
			idx[ch.Email] = ch.Next
		}
		m.seq++
		ev := eventOf(fmt.Sprintf("%d-0", m.seq), account, ch, at)
		feed := append(m.changes[account], ev)
		if len(feed) > memoryChangesKept {
			feed = feed[len(feed)-memoryChangesKept:]
		}
		m.changes[account] = feed
	}
	return conflictsOf(account, refused)
}

// PutStatus stores an account's status record.
func (m *Memory) PutStatus(_ context.Context, st accesscache.AccountStatus) error {
	b, err := json.Marshal(&st)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.status[st.Account] = b
	m.mu.Unlock()
	return nil
}

// Status reads an account's status record.
func (m *Memory) Status(_ context.Context, account string) (accesscache.AccountStatus, bool, error) {
	m.mu.RLock()
	b, ok := m.status[account]
	m.mu.RUnlock()
	if !ok {
		return accesscache.AccountStatus{Account: account}, false, nil
	}
	var st accesscache.AccountStatus
	err := json.Unmarshal(b, &st)
	return st, true, err
}

// DeleteStatus removes an account's status record.
func (m *Memory) DeleteStatus(_ context.Context, account string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.status, account)
	return nil
}

// RecentChanges returns up to n of account's latest change events, newest
// first.
func (m *Memory) RecentChanges(_ context.Context, account string, n int) ([]ChangeEvent, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	feed := m.changes[account]
	out := make([]ChangeEvent, 0, min(n, len(feed)))
	for i := len(feed) - 1; i >= 0 && len(out) < n; i-- {
		out = append(out, feed[i])
	}
	return out, nil
}

// Statuses reads the status records of accounts (those that have one).
func (m *Memory) Statuses(ctx context.Context, accounts []string) (map[string]accesscache.AccountStatus, error) {
	out := make(map[string]accesscache.AccountStatus, len(accounts))
	for _, a := range accounts {
		st, ok, err := m.Status(ctx, a)
		if err != nil {
			return nil, err
		}
		if ok {
			out[a] = st
		}
	}
	return out, nil
}

package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dirsync/dirsync/entitlement/accesscache"
)

// ErrLeased is returned when another process holds an account's lease.
var ErrLeased = errors.New("another dirsync holds this account's lease")

// Single holds the leases of a short-lived writer, such as a one-off
// `dirsync sync`, on a set of accounts: taken with the same script as
// replicas take them (so the fence advances and a running replica cannot
// publish over it), renewed while held, released by Release. It is a
// TokenSource for store.NewFenced.
type Single struct {
	c      redis.UniversalClient
	keys   accesscache.Keys
	period time.Duration

	mu     sync.Mutex
	tokens map[string]string // account → token; removed when renewal fails
	stop   chan struct{}
	done   chan struct{}
}

// AcquireAll takes the lease of every account for holder (e.g. "cli@host"),
// or none: when any is held by another process it releases what it took
// and returns an error wrapping ErrLeased that names the holder.
func AcquireAll(ctx context.Context, c redis.UniversalClient, keyPrefix, holder string, accounts []string, period time.Duration) (*Single, error) {
	if period <= 0 {
		period = DefaultPeriod
	}
	s := &Single{c: c, keys: accesscache.NewKeys(keyPrefix), period: period, tokens: map[string]string{}, stop: make(chan struct{}), done: make(chan struct{})}
	holder = holder + "#" + newNonce()
	for _, a := range accounts {
		tok, err := acquire.Run(ctx, c, []string{s.keys.Lease(a), s.keys.Fence(a)}, holder, period.Milliseconds(), newNonce()).Text()
		if errors.Is(err, redis.Nil) {
			owner, _ := c.Get(ctx, s.keys.Lease(a)).Result()
			s.release(ctx)
			return nil, fmt.Errorf("account %s: %w (%s); sync it through that replica's API (dirsync sync --server URL)", a, ErrLeased, holderOf(owner))
		}
		if err != nil {
			s.release(ctx)
			return nil, fmt.Errorf("%w: lease %s: %w", accesscache.ErrUnavailable, a, err)
		}
		s.tokens[a] = tok
	}
	go s.renewLoop()
	return s, nil
}

// Token returns the held token of account.
func (s *Single) Token(account string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok, ok := s.tokens[account]
	return tok, ok
}

func (s *Single) renewLoop() {
	defer close(s.done)
	t := time.NewTicker(s.period / 3)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.mu.Lock()
		held := make(map[string]string, len(s.tokens))
		for a, tok := range s.tokens {
			held[a] = tok
		}
		s.mu.Unlock()
		for a, tok := range held {
			ctx, cancel := context.WithTimeout(context.Background(), s.period/3)
			n, err := renew.Run(ctx, s.c, []string{s.keys.Lease(a), s.keys.Fence(a)}, tok, s.period.Milliseconds()).Int()
			cancel()
			if err == nil && n == 0 { // lost: the fence refuses our publishes now
				s.mu.Lock()
				delete(s.tokens, a)
				s.mu.Unlock()
			}
		}
	}
}

// Release stops renewal and frees every held lease.
func (s *Single) Release(ctx context.Context) {
	close(s.stop)
	<-s.done
	s.release(ctx)
}

func (s *Single) release(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for a, tok := range s.tokens {
		_ = release.Run(ctx, s.c, []string{s.keys.Lease(a)}, tok).Err() // expires by itself otherwise
		delete(s.tokens, a)
	}
}

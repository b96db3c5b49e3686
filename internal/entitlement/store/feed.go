package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/entitlement/mapper"
)

// ChangeEvent is one entry of an account's change stream (the documented
// fields of docs/sign-in-integration.md, decoded).
type ChangeEvent struct {
	ID            string                 `json:"id"`
	Email         string                 `json:"email"`
	Allowed       bool                   `json:"allowed"`
	Permission    entitlement.Permission `json:"permission"`
	Reason        entitlement.Reason     `json:"reason"`
	OldAllowed    bool                   `json:"old_allowed"`
	OldPermission entitlement.Permission `json:"old_permission"`
	At            time.Time              `json:"at"`
}

// eventOf is the change event of ch, as changeEvent writes it.
func eventOf(id, account string, ch *mapper.Change, at time.Time) ChangeEvent {
	f := changeEvent(account, ch, eventTime(at))
	get := func(k string) string {
		for i := 0; i+1 < len(f); i += 2 {
			if f[i] == k {
				return f[i+1].(string)
			}
		}
		return ""
	}
	return ChangeEvent{ID: id, Email: get("email"), Allowed: get("allowed") == "1", Permission: entitlement.Permission(get("permission")),
		Reason: entitlement.Reason(get("reason")), OldAllowed: get("old_allowed") == "1", OldPermission: entitlement.Permission(get("old_permission")), At: at.UTC()}
}

// RecentChanges returns up to n of account's latest change events, newest
// first (XREVRANGE).
func (r *Redis) RecentChanges(ctx context.Context, account string, n int) ([]ChangeEvent, error) {
	msgs, err := r.c.XRevRangeN(ctx, r.keys.Changes(account), "+", "-", int64(n)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%w: read change stream: %w", accesscache.ErrUnavailable, err)
	}
	out := make([]ChangeEvent, 0, len(msgs))
	for _, m := range msgs {
		s := func(k string) string { v, _ := m.Values[k].(string); return v }
		at, _ := time.Parse(time.RFC3339Nano, s("at"))
		out = append(out, ChangeEvent{ID: m.ID, Email: s("email"), Allowed: s("allowed") == "1", Permission: entitlement.Permission(s("permission")),
			Reason: entitlement.Reason(s("reason")), OldAllowed: s("old_allowed") == "1", OldPermission: entitlement.Permission(s("old_permission")), At: at})
	}
	return out, nil
}

// Statuses reads the status records of accounts in one pipeline (those
// that have one); thousands of accounts cost one round trip per node.
func (r *Redis) Statuses(ctx context.Context, accounts []string) (map[string]accesscache.AccountStatus, error) {
	pipe := r.c.Pipeline()
	cmds := make([]*redis.StringCmd, len(accounts))
	for i, a := range accounts {
		cmds[i] = pipe.Get(ctx, r.keys.Status(a))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%w: read status records: %w", accesscache.ErrUnavailable, err)
	}
	out := make(map[string]accesscache.AccountStatus, len(accounts))
	for i, a := range accounts {
		b, err := cmds[i].Bytes()
		if errors.Is(err, redis.Nil) {
			continue
		}
		var st accesscache.AccountStatus
		if err == nil {
			err = json.Unmarshal(b, &st)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: status record of %s: %w", accesscache.ErrUnavailable, a, err)
		}
		out[a] = st
	}
	return out, nil
}

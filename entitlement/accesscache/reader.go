package accesscache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/mailaddr"
)

// Reader is the sign-in read path: one GET per check. It is safe for
// concurrent use and has no dependency on any directory code.
type Reader struct {
	c    redis.UniversalClient
	keys Keys
}

// NewReader returns a reader over c using keys under prefix.
func NewReader(c redis.UniversalClient, prefix string) *Reader {
	return &Reader{c: c, keys: NewKeys(prefix)}
}

// Check returns the decision for email in one round trip. The address is
// normalised first (internal/mailaddr: ASCII trimming and lower-casing
// only); one that does not normalise, like an email no account holds, gives
// a denied decision with reason unknown_user and a nil error. A cached
// value whose email is not the normalised address is refused. Any error
// (wrapping ErrUnavailable) means the caller must deny.
func (r *Reader) Check(ctx context.Context, email string) (entitlement.Decision, error) {
	norm := mailaddr.Normalize(email)
	if norm == "" {
		return entitlement.Denied(email, entitlement.ReasonUnknownUser), nil
	}
	b, err := r.c.Get(ctx, r.keys.User(norm)).Bytes()
	if errors.Is(err, redis.Nil) {
		return entitlement.Denied(norm, entitlement.ReasonUnknownUser), nil
	}
	if err != nil {
		return entitlement.Decision{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	d, err := DecodeDecisionFor(b, norm)
	if err != nil {
		return entitlement.Decision{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return d, nil
}

// AccountStatus reads an account's status record; ok is false when the
// account has never been published.
func (r *Reader) AccountStatus(ctx context.Context, account string) (AccountStatus, bool, error) {
	return readStatus(ctx, r.c, r.keys, account)
}

func readStatus(ctx context.Context, c redis.UniversalClient, keys Keys, account string) (AccountStatus, bool, error) {
	b, err := c.Get(ctx, keys.Status(account)).Bytes()
	if errors.Is(err, redis.Nil) {
		return AccountStatus{Account: account}, false, nil
	}
	if err != nil {
		return AccountStatus{}, false, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	var st AccountStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return AccountStatus{}, false, fmt.Errorf("%w: decode status: %w", ErrUnavailable, err)
	}
	return st, true, nil
}

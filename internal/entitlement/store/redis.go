package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	fastjson "github.com/segmentio/encoding/json"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/entitlement/mapper"
)

// Redis is the writer side of the Redis cache.
type Redis struct {
	c    redis.UniversalClient
	keys accesscache.Keys
	// batch is how many changes go in one pipeline.
	batch int
	// inFlight is how many batches may execute at once (SetInFlight).
	inFlight int
	// streamMaxLen caps each account's change stream (approximately).
	streamMaxLen int64
	*accesscache.Reader
}

// NewRedis returns the writer over c using keys under prefix.
func NewRedis(c redis.UniversalClient, prefix string) *Redis {
	return &Redis{c: c, keys: accesscache.NewKeys(prefix), batch: 256, inFlight: 4, streamMaxLen: 100_000, Reader: accesscache.NewReader(c, prefix)}
}

// SetInFlight sets how many publish batches may execute at once (1: each
// waits for the previous one, while the next is encoded). The default, 4,
// keeps Redis busy instead of idle between batches: a first publish of
// 20,000 decisions by the fenced writer takes 235 ms with 1, 195 ms with 2
// and 162 ms with 4 on a standalone server, and 640 / 540 / 465 ms on a
// three-master Cluster (BenchmarkPublishInFlight, this machine). Batches
// in flight together may reach the change stream in either order; a
// user's entries keep the order of their changes (one per pass, passes in
// turn). Call it before publishing.
func (r *Redis) SetInFlight(n int) { r.inFlight = max(n, 1) }

// Ping checks the cache can be reached.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("%w: %w", accesscache.ErrUnavailable, err)
	}
	return nil
}

// Published reads an account's index: what is published for each email.
func (r *Redis) Published(ctx context.Context, account string) (map[string]mapper.Published, error) {
	// Sized once: growing a map to 100k entries rehashes it a dozen times.
	n, err := r.c.HLen(ctx, r.keys.Index(account)).Result()
	if err != nil {
		return nil, fmt.Errorf("%w: read index: %w", accesscache.ErrUnavailable, err)
	}
	out := make(map[string]mapper.Published, n)
	iter := r.c.HScan(ctx, r.keys.Index(account), 0, "", 4096).Iterator()
	for iter.Next(ctx) {
		field := iter.Val()
		if !iter.Next(ctx) {
			break
		}
		p, err := decodeIndex(iter.Val())
		if err != nil {
			return nil, fmt.Errorf("published index %s: %w", account, err)
		}
		out[field] = p
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("%w: read index: %w", accesscache.ErrUnavailable, err)
	}
	return out, nil
}

// setOwned writes a user key unless the ownership rule (owner.go) refuses:
// it returns 1 when written, or the owner's id when refused.
//
//	KEYS: user key   ARGV: account, by invitation '1'|'0', decision JSON
var setOwned = redis.NewScript(ownerLua + `
local o = owner(redis.call('GET', KEYS[1]))
if o and o ~= ARGV[1] and ARGV[2] == '1' then return o end
redis.call('SET', KEYS[1], ARGV[3])
return 1`)

// delIfOwned deletes a user key only if it holds this account's decision,
// so a removal never erases another account's user.
//
//	KEYS: user key   ARGV: account
var delIfOwned = redis.NewScript(ownerLua + `
if owner(redis.call('GET', KEYS[1])) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

// Apply publishes changes for account: each changed decision is written,
// each removed email deleted, as the ownership rule allows (owner.go), then
// the index and change stream are updated for what was written. Changes go
// in pipelines of a few hundred commands without MULTI, so readers are
// never blocked behind a large transaction; per batch, the user keys are
// written first and the index after them, so the index never names a
// change that is not in the user keys. Changes refused by the ownership
// rule are reported in a *ConflictError after everything else is
// published.
func (r *Redis) Apply(ctx context.Context, account string, changes []mapper.Change, at time.Time) error {
	// Load once so the pipelines can use EVALSHA (on every node of a
	// Cluster).
	for _, s := range []*redis.Script{setOwned, delIfOwned} {
		if err := s.Load(ctx, r.c).Err(); err != nil {
			return fmt.Errorf("%w: publish %s: %w", accesscache.ErrUnavailable, account, err)
		}
	}
	refused, err := inFlight(len(changes), r.batch, r.inFlight, func(start, end int) (func() ([]Conflict, error), error) {
		batch := changes[start:end]
		values := make([][]byte, len(batch))
		for i := range batch {
			if batch[i].New == nil {
				continue
			}
			v, err := encodeDecision(batch[i].New, at)
			if err != nil {
				return nil, fmt.Errorf("encode %s: %w", batch[i].Email, err)
			}
			values[i] = v
		}
		return func() ([]Conflict, error) { return r.applyBatch(ctx, account, batch, values, at) }, nil
	})
	if err != nil {
		return err
	}
	return conflictsOf(account, refused)
}

// applyBatch writes a batch's user keys in one pipeline, then its index
// and change stream entries in a second one, leaving refused changes out.
func (r *Redis) applyBatch(ctx context.Context, account string, batch []mapper.Change, values [][]byte, at time.Time) ([]Conflict, error) {
	pipe := r.c.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i := range batch {
		ch := &batch[i]
		if ch.New == nil {
			cmds[i] = delIfOwned.EvalSha(ctx, pipe, []string{r.keys.User(ch.Email)}, account)
		} else {
			cmds[i] = setOwned.EvalSha(ctx, pipe, []string{r.keys.User(ch.Email)}, account, invitationArg(ch.ByInvitation), values[i])
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%w: publish %s: %w", accesscache.ErrUnavailable, account, err)
	}
	// The batch's index fields go in one HSET and one HDEL: one command
	// each instead of one per change.
	var set []any
	var del []string
	var refused []Conflict
	published := make([]*mapper.Change, 0, len(batch))
	for i := range batch {
		ch := &batch[i]
		if owner, isRefusal := cmds[i].Val().(string); isRefusal && ch.New != nil {
			refused = append(refused, Conflict{Email: ch.Email, Owner: owner})
			del = append(del, ch.Email)
			continue
		}
		if ch.New == nil {
			del = append(del, ch.Email)
		} else {
			set = append(set, ch.Email, encodeIndex(ch.Next))
		}
		published = append(published, ch)
	}
	pipe = r.c.Pipeline()
	if len(set) > 0 {
		pipe.HSet(ctx, r.keys.Index(account), set...)
	}
	if len(del) > 0 {
		pipe.HDel(ctx, r.keys.Index(account), del...)
	}
	for _, ch := range published {
		pipe.XAdd(ctx, &redis.XAddArgs{
			Stream: r.keys.Changes(account),
			MaxLen: r.streamMaxLen,
			Approx: true,
			Values: changeEvent(account, ch, eventTime(at)),
		})
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return refused, fmt.Errorf("%w: publish %s: %w", accesscache.ErrUnavailable, account, err)
	}
	return refused, nil
}

// inFlight publishes n changes in batches of size, preparing batch i+1
// (encoding: the writer's CPU-heavy part) while Redis executes earlier
// ones, with at most depth batches executing at once (1: strictly one
// after the other). prepare returns the batch's execution, which returns
// the changes the ownership rule refused. The first error stops it: no
// batch is started after it (with depth > 1, batches already started run
// to their end). It returns, once nothing it started is running, every
// refused change and the first error.
func inFlight(n, size, depth int, prepare func(start, end int) (exec func() ([]Conflict, error), err error)) ([]Conflict, error) {
	type result struct {
		refused []Conflict
		err     error
	}
	depth = max(depth, 1)
	done := make(chan result, depth)
	running := 0
	var (
		refused []Conflict
		first   error
	)
	settle := func() {
		r := <-done
		refused = append(refused, r.refused...)
		if r.err != nil && first == nil {
			first = r.err
		}
		running--
	}
	for start := 0; start < n && first == nil; start += size {
		exec, err := prepare(start, min(start+size, n))
		for running >= depth {
			settle()
		}
		if err != nil && first == nil {
			first = err
		}
		if first != nil {
			break
		}
		running++
		go func() {
			refused, err := exec()
			done <- result{refused, err}
		}()
	}
	for running > 0 {
		settle()
	}
	return refused, first
}

// changeEvent is one change stream entry (documented in
// docs/sign-in-integration.md).
func changeEvent(account string, ch *mapper.Change, at string) []any {
	oldPerm, oldAllowed := "none", "0"
	if ch.Old != nil {
		oldPerm = string(ch.Old.Permission)
		if ch.Old.Allowed {
			oldAllowed = "1"
		}
	}
	newPerm, newAllowed, reason := "none", "0", string(entitlement.ReasonUnknownUser)
	if ch.New != nil {
		newPerm, reason = string(ch.New.Permission), string(ch.New.Reason)
		if ch.New.Allowed {
			newAllowed = "1"
		}
	}
	return []any{
		"email", ch.Email, "account", account,
		"allowed", newAllowed, "permission", newPerm, "reason", reason,
		"old_allowed", oldAllowed, "old_permission", oldPerm,
		"at", at,
	}
}

// eventTime is the "at" field of the change events of changes published at
// at (formatted once per publish, not once per change).
func eventTime(at time.Time) string { return at.UTC().Format(time.RFC3339Nano) }

// PutStatus writes an account's status record.
func (r *Redis) PutStatus(ctx context.Context, st accesscache.AccountStatus) error {
	b, err := json.Marshal(&st)
	if err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	if err := r.c.Set(ctx, r.keys.Status(st.Account), b, 0).Err(); err != nil {
		return fmt.Errorf("%w: write status: %w", accesscache.ErrUnavailable, err)
	}
	return nil
}

// Status reads an account's status record.
func (r *Redis) Status(ctx context.Context, account string) (accesscache.AccountStatus, bool, error) {
	return r.Reader.AccountStatus(ctx, account)
}

// encodeIndex and decodeIndex are the index field format.
func encodeIndex(p mapper.Published) string {
	allowed := "0"
	if p.Allowed {
		allowed = "1"
	}
	return string(p.Permission) + "|" + allowed + "|" + strconv.FormatUint(p.Fingerprint, 16)
}

func decodeIndex(v string) (mapper.Published, error) {
	perm, rest, ok1 := strings.Cut(v, "|")
	allowed, fp, ok2 := strings.Cut(rest, "|")
	n, err := strconv.ParseUint(fp, 16, 64)
	if !ok1 || !ok2 || err != nil {
		return mapper.Published{}, fmt.Errorf("malformed index value %q", v)
	}
	return mapper.Published{Permission: entitlement.Permission(perm), Allowed: allowed == "1", Fingerprint: n}, nil
}

// encodeDecision is the cached value of a decision. It encodes with
// segmentio/encoding/json (a third of encoding/json's CPU; a first publish
// encodes every decision), which writes what encoding/json writes
// (FuzzEncodeDecision) except that it escapes invalid UTF-8 as \ufffd
// where encoding/json writes the replacement character itself: the same
// JSON value.
func encodeDecision(d *entitlement.Decision, at time.Time) ([]byte, error) {
	c := *d
	c.SyncedAt = at.UTC().Truncate(time.Second)
	return fastjson.Marshal(&c)
}

// DeleteStatus removes an account's status record (the account was
// deleted).
func (r *Redis) DeleteStatus(ctx context.Context, account string) error {
	if err := r.c.Del(ctx, r.keys.Status(account)).Err(); err != nil {
		return fmt.Errorf("%w: delete status: %w", accesscache.ErrUnavailable, err)
	}
	return nil
}

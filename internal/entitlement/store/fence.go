package store

import (
	"github.com/dirsync/dirsync/entitlement/accesscache"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/mapper"

	"github.com/redis/go-redis/v9"
)

// Keys used for ownership of an account when several dirsync replicas share
// one Redis (see package lease and docs/high-availability.md):
//
//	P:v1:account:{<id>}:lease         STRING  owner's token "<seq>|<holder>|<nonce>", expires (PX) unless renewed
//	P:v1:account:{<id>}:fence         STRING  the account's current fencing token (same form)
//	P:v1:replicas                     ZSET    replica holder → heartbeat expiry (ms, Redis clock)
//	P:v1:userfence:{P:v1:user:<email>} STRING "<account>|<seq>" (per-key fencing, Redis Cluster only)
//
// The lease and fence keys carry the account's hash tag, so they share a
// Cluster slot with the account's index, status and change stream.

// ErrNotOwner is returned by a fenced publish when the caller's fencing
// token is not the account's current one: another replica owns the account
// now (or this one never did), and nothing was written.
var ErrNotOwner = errors.New("not the account's owner (stale fencing token); nothing published")

// ErrStaleStamp is returned (with ErrNotOwner) by a fenced publish on the
// per-key path when a user key's stamp carries a newer sequence number of
// the account than the caller's token. The token is current, so the
// account's fence was lost and its sequence started again below the
// stamps. Nothing of the batch is recorded as published; the fence is
// raised to the newest stamp met and the caller's lease is dropped, so the
// account's next acquisition (any replica's next lease step) gets a token
// above the stamps, and its first pass, a full one, publishes again.
var ErrStaleStamp = errors.New("a user key's fencing stamp is newer than the account's current token (the fence key was lost); the fence was raised above it and the account is re-acquired with a newer token")

// TokenSource gives the fencing token this process holds for an account.
// ok is false when it holds none. A token starts with "<seq>|", where seq
// increases with every acquisition of the account's lease (see package
// lease); the rest makes it unique.
type TokenSource interface {
	Token(account string) (token string, ok bool)
}

// FenceMode selects how a fenced publish is made atomic with its check.
type FenceMode int

// Fence modes.
const (
	// FenceAuto is FencePerKey for a Redis Cluster client and FenceAtomic
	// otherwise.
	FenceAuto FenceMode = iota
	// FenceAtomic checks the token and writes a whole batch in one Lua
	// script. It needs every key in one server: standalone or Sentinel.
	FenceAtomic
	// FencePerKey is for Redis Cluster, where the user keys of an account
	// live in other slots than its fence key: the token is checked before
	// the batch, every user key is written by a script that refuses to
	// overwrite a value stamped with a newer token of the same account, and
	// the index and change stream are written by a script that checks the
	// token again. See docs/high-availability.md for the residual window.
	FencePerKey
)

// Fenced is the Redis writer for a replica that owns accounts through
// leases: every Apply and PutStatus is refused, atomically, unless the
// caller's fencing token for the account is the account's current token.
// Reads are those of Redis.
type Fenced struct {
	*Redis
	tokens TokenSource
	perKey bool
	// batch is how many changes one script call writes. A script holds
	// Redis for its whole run (~12 µs a change), unlike a pipeline whose
	// commands interleave with readers', so batches are half the plain
	// writer's: with 128 a 100k publish kept the probe's p99 at 3.2–3.5 ms
	// against 5.8–6.5 ms with 256, in the same time.
	batch int
}

// NewFenced returns a fenced writer over r taking tokens from tokens.
func NewFenced(r *Redis, tokens TokenSource, mode FenceMode) *Fenced {
	perKey := mode == FencePerKey
	if mode == FenceAuto {
		_, perKey = r.c.(*redis.ClusterClient)
	}
	return &Fenced{Redis: r, tokens: tokens, perKey: perKey, batch: 128}
}

// fenceRefused is the error reply of the fenced scripts.
const fenceRefused = "DIRSYNC_FENCED"

// fencedBatch checks the fencing token, then (ARGV[4] == '1') writes the
// user keys as the ownership rule allows (owner.go), then the index and
// the change stream, for ARGV[5] changes. A change refused by the
// ownership rule here, or marked 'x' (refused by stampedUser), is removed
// from the index and gets no stream entry. It returns the number of
// changes published followed by an email and owner per change it refused.
//
//	KEYS: fence, index, changes stream, then one user key per change when
//	      user keys are written
//	ARGV: token, account, stream max length, write users '1'|'0', count,
//	      then per change: op ('s' set | 'd' delete | 'x' refused), email,
//	      index value, decision JSON, by invitation '1'|'0', n, n stream
//	      entry field/values
var fencedBatch = redis.NewScript(ownerLua + `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('DIRSYNC_FENCED stale fencing token')
end
local users = ARGV[4] == '1'
local set, del, out = {}, {}, {0}
local a = 6
for i = 1, tonumber(ARGV[5]) do
  local op, email, idx, val, inv, n = ARGV[a], ARGV[a+1], ARGV[a+2], ARGV[a+3], ARGV[a+4], tonumber(ARGV[a+5])
  if users and op ~= 'x' then
    local o = owner(redis.call('GET', KEYS[3+i]))
    if op == 'd' then
      if o == ARGV[2] then redis.call('DEL', KEYS[3+i]) end
    elseif o and o ~= ARGV[2] and inv == '1' then
      out[#out+1] = email
      out[#out+1] = o
      op = 'x'
    else
      redis.call('SET', KEYS[3+i], val)
    end
  end
  if op == 's' then
    set[#set+1] = email
    set[#set+1] = idx
  else
    del[#del+1] = email
  end
  if op ~= 'x' then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, a+6, a+5+n))
    out[1] = out[1] + 1
  end
  a = a + 6 + n
end
-- One HSET and one HDEL for the batch: a call from Lua costs more than
-- the command itself.
if #set > 0 then redis.call('HSET', KEYS[2], unpack(set)) end
if #del > 0 then redis.call('HDEL', KEYS[2], unpack(del)) end
return out`)

// stampedUser writes one user key unless its stamp says a newer token of
// the same account wrote it (per-key fencing) or the ownership rule
// (owner.go) refuses. A write stamps the key with the writer's account and
// seq; a refused write, or a removal of a key another account holds,
// leaves the stamp alone. It returns {1, ""} when done, {0, owner} when
// the ownership rule refused, {-1, stamp seq} when a newer stamp refused.
//
//	KEYS: user key, stamp key
//	ARGV: account, seq, op ('s'|'d'), decision JSON, by invitation '1'|'0'
var stampedUser = redis.NewScript(ownerLua + `
local s = redis.call('GET', KEYS[2])
if s then
  local sep = string.find(s, '|', 1, true)
  if sep and string.sub(s, 1, sep-1) == ARGV[1] and tonumber(string.sub(s, sep+1)) > tonumber(ARGV[2]) then
    return {-1, string.sub(s, sep+1)}
  end
end
local o = owner(redis.call('GET', KEYS[1]))
local stamp = ARGV[1] .. '|' .. ARGV[2]
if ARGV[3] == 's' then
  if o and o ~= ARGV[1] and ARGV[5] == '1' then return {0, o} end
  redis.call('SET', KEYS[1], ARGV[4])
  redis.call('SET', KEYS[2], stamp)
elseif not o or o == ARGV[1] then
  if o then redis.call('DEL', KEYS[1]) end
  redis.call('SET', KEYS[2], stamp, 'PX', 604800000)
end
return {1, ''}`)

// fencedStatus writes the status record if the token is current.
var fencedStatus = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('DIRSYNC_FENCED stale fencing token')
end
redis.call('SET', KEYS[2], ARGV[2])
return 1`)

// Apply publishes changes as Redis.Apply does, batch by batch, each batch
// refused unless the caller holds the account's current fencing token. A
// refusal returns an error wrapping ErrNotOwner; batches published before
// it were published while the caller was the owner. Changes refused by the
// ownership rule (owner.go) are reported in a *ConflictError after
// everything else is published.
func (f *Fenced) Apply(ctx context.Context, account string, changes []mapper.Change, at time.Time) error {
	token, ok := f.tokens.Token(account)
	if !ok {
		return fmt.Errorf("publish %s: %w", account, ErrNotOwner)
	}
	refused, err := inFlight(len(changes), f.batch, f.inFlight, func(start, end int) (func() ([]Conflict, error), error) {
		b, err := f.prepareBatch(account, token, changes[start:end], at)
		if err != nil {
			return nil, err
		}
		return func() ([]Conflict, error) { return f.execBatch(ctx, b) }, nil
	})
	if err != nil {
		return err
	}
	return conflictsOf(account, refused)
}

// fencedCall is one batch encoded for fencedBatch.
type fencedCall struct {
	account, token string
	batch          []mapper.Change
	values         [][]byte // decision JSON per change (nil for a removal)
	keys           []string
	args           []any
	opAt           []int // index in args of each change's op
	// plain: a batch for execPlain, with its change events.
	plain  bool
	events [][]any
}

// prepareBatch encodes a batch: for execPlain when it is plain sets on a
// single node, else for fencedBatch.
func (f *Fenced) prepareBatch(account, token string, batch []mapper.Change, at time.Time) (*fencedCall, error) {
	if !f.perKey && plainSets(batch) {
		b := &fencedCall{account: account, token: token, batch: batch, plain: true, values: make([][]byte, len(batch)), events: make([][]any, len(batch))}
		evAt := eventTime(at)
		for i := range batch {
			v, err := encodeDecision(batch[i].New, at)
			if err != nil {
				return nil, fmt.Errorf("encode %s: %w", batch[i].Email, err)
			}
			b.values[i], b.events[i] = v, changeEvent(account, &batch[i], evAt)
		}
		return b, nil
	}
	b := &fencedCall{account: account, token: token, batch: batch, values: make([][]byte, len(batch)), opAt: make([]int, len(batch)),
		keys: []string{f.keys.Fence(account), f.keys.Index(account), f.keys.Changes(account)}}
	b.args = []any{token, account, f.streamMaxLen, "1", len(batch)}
	evAt := eventTime(at)
	for i := range batch {
		ch := &batch[i]
		op, idx := "d", ""
		if ch.New != nil {
			v, err := encodeDecision(ch.New, at)
			if err != nil {
				return nil, fmt.Errorf("encode %s: %w", ch.Email, err)
			}
			op, idx, b.values[i] = "s", encodeIndex(ch.Next), v
		}
		ev := changeEvent(account, ch, evAt)
		b.opAt[i] = len(b.args)
		b.args = append(b.args, op, ch.Email, idx, b.values[i], invitationArg(ch.ByInvitation), len(ev))
		b.args = append(b.args, ev...)
		if !f.perKey {
			b.keys = append(b.keys, f.keys.User(ch.Email))
		}
	}
	return b, nil
}

// execBatch publishes a prepared batch and returns the changes the
// ownership rule refused.
func (f *Fenced) execBatch(ctx context.Context, b *fencedCall) (refused []Conflict, err error) {
	if f.perKey {
		// Cluster: user keys are in other slots. Check first, write the
		// user keys with per-key stamps, then the index and stream with a
		// second check, so the index never runs ahead of the user keys.
		b.args[3] = "0"
		cur, err := f.c.Get(ctx, f.keys.Fence(b.account)).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("%w: publish %s: %w", accesscache.ErrUnavailable, b.account, err)
		}
		if cur != b.token {
			return nil, fmt.Errorf("publish %s: %w", b.account, ErrNotOwner)
		}
		var newestStamp int64
		if refused, newestStamp, err = f.stampUsers(ctx, b); err != nil {
			return nil, err
		}
		if newestStamp > 0 {
			// Some user keys were refused: the index and stream are not
			// written, so nothing of the batch counts as published.
			return nil, f.raiseFence(ctx, b, newestStamp)
		}
	}
	if b.plain {
		return nil, f.execPlain(ctx, b)
	}
	reply, err := fencedBatch.Run(ctx, f.c, b.keys, b.args...).Slice()
	if err != nil {
		return nil, fenceError(b.account, err)
	}
	for i := 1; i+1 < len(reply); i += 2 { // atomic mode's refusals
		email, _ := reply[i].(string)
		owner, _ := reply[i+1].(string)
		refused = append(refused, Conflict{Email: email, Owner: owner})
	}
	return refused, nil
}

// plainSets reports whether every change of b sets a decision of an
// account that claims its email's domain (no removal, no invitation): the
// ownership rule writes those without reading the key (see fencedBatch),
// so the batch needs no script.
func plainSets(batch []mapper.Change) bool {
	for i := range batch {
		if batch[i].New == nil || batch[i].ByInvitation {
			return false
		}
	}
	return true
}

// execPlain publishes a batch of plain sets (plainSets) as fencedBatch
// would, with native commands in MULTI/EXEC under WATCH of the fence: the
// token is read and compared after WATCH, and EXEC fails if the fence
// moved in between, so nothing is written unless the caller's token is
// current when the batch lands. Redis spends about a third of the
// script's time on it: the script's cost is mostly Lua handling its
// arguments, not the commands (INFO commandstats: 10.4 µs per change in
// EVALSHA, of which SET, GET and XADD are 2.5).
func (f *Fenced) execPlain(ctx context.Context, b *fencedCall) error {
	fence := f.keys.Fence(b.account)
	err := f.c.Watch(ctx, func(tx *redis.Tx) error {
		cur, err := tx.Get(ctx, fence).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("%w: publish %s: %w", accesscache.ErrUnavailable, b.account, err)
		}
		if cur != b.token {
			return fmt.Errorf("publish %s: %w", b.account, ErrNotOwner)
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			// One MSET and one HSET for the batch's user keys and index
			// fields: a command per change only for the stream entries.
			users := make([]any, 0, 2*len(b.batch))
			index := make([]any, 0, 2*len(b.batch))
			for i := range b.batch {
				ch := &b.batch[i]
				users = append(users, f.keys.User(ch.Email), b.values[i])
				index = append(index, ch.Email, encodeIndex(ch.Next))
			}
			p.MSet(ctx, users...)
			p.HSet(ctx, f.keys.Index(b.account), index...)
			for i := range b.batch {
				p.XAdd(ctx, &redis.XAddArgs{Stream: f.keys.Changes(b.account), MaxLen: f.streamMaxLen, Approx: true,
					Values: b.events[i]})
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.TxFailedErr) {
			return fmt.Errorf("%w: publish %s: %w", accesscache.ErrUnavailable, b.account, err)
		}
		return err
	}, fence)
	switch {
	case err == nil, errors.Is(err, ErrNotOwner), errors.Is(err, accesscache.ErrUnavailable):
		return err
	case errors.Is(err, redis.TxFailedErr):
		return fmt.Errorf("publish %s: the fence moved during the batch: %w", b.account, ErrNotOwner)
	}
	return fmt.Errorf("%w: publish %s: %w", accesscache.ErrUnavailable, b.account, err) // WATCH itself failed
}

// stampUsers writes a batch's user keys with per-key stamps (Cluster). It
// returns the changes the ownership rule refused, marked 'x' in b.args for
// fencedBatch to leave out of the index and stream, and the newest stamp
// sequence number that refused a write (0 when none did).
func (f *Fenced) stampUsers(ctx context.Context, b *fencedCall) (refused []Conflict, newestStamp int64, err error) {
	seq, _, _ := strings.Cut(b.token, "|")
	if _, err := strconv.ParseInt(seq, 10, 64); err != nil {
		return nil, 0, fmt.Errorf("publish %s: malformed fencing token: %w", b.account, ErrNotOwner)
	}
	// Load the scripts once so the pipeline can use EVALSHA on every node.
	for _, s := range []*redis.Script{stampedUser, setOwned, delIfOwned} {
		if err := s.Load(ctx, f.c).Err(); err != nil {
			return nil, 0, fmt.Errorf("%w: publish %s: %w", accesscache.ErrUnavailable, b.account, err)
		}
	}
	pipe := f.c.Pipeline()
	cmds := make([]*redis.Cmd, len(b.batch))
	for i := range b.batch {
		ch := &b.batch[i]
		user := f.keys.User(ch.Email)
		switch {
		case !strings.ContainsAny(ch.Email, "{}"):
			op := "d"
			if ch.New != nil {
				op = "s"
			}
			cmds[i] = stampedUser.EvalSha(ctx, pipe, []string{user, f.keys.UserFence(ch.Email)}, b.account, seq, op, b.values[i], invitationArg(ch.ByInvitation))
		// The stamp could not share the user key's slot: write unstamped.
		case ch.New != nil:
			cmds[i] = setOwned.EvalSha(ctx, pipe, []string{user}, b.account, invitationArg(ch.ByInvitation), b.values[i])
		default:
			cmds[i] = delIfOwned.EvalSha(ctx, pipe, []string{user}, b.account)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, 0, fmt.Errorf("%w: publish %s: %w", accesscache.ErrUnavailable, b.account, err)
	}
	for i := range b.batch {
		owner := ""
		switch v := cmds[i].Val().(type) {
		case string: // setOwned refused
			owner = v
		case []any:
			code, _ := v[0].(int64)
			info, _ := v[1].(string)
			switch code {
			case 0:
				owner = info
			case -1:
				stamp, err := strconv.ParseInt(info, 10, 64)
				if err != nil || stamp < 1 {
					return nil, 0, fmt.Errorf("publish %s: malformed stamp %q on %s", b.account, info, b.batch[i].Email)
				}
				newestStamp = max(newestStamp, stamp)
			}
		}
		if owner != "" && b.batch[i].New != nil {
			b.args[b.opAt[i]] = "x"
			refused = append(refused, Conflict{Email: b.batch[i].Email, Owner: owner})
		}
	}
	return refused, newestStamp, nil
}

// raiseFence moves the account's fence to the newest stamp met, if the
// caller's token is still the current one, and drops the caller's lease,
// so the next acquisition's sequence number (the fence's plus one) is
// above every stamp met: stamps stay monotonic though the fence was lost.
// It returns the error of the refused publish.
//
//	KEYS: fence, lease   ARGV: token, newest stamp
var raiseFence = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2] .. '|raised-above-stamps|-')
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1`)

func (f *Fenced) raiseFence(ctx context.Context, b *fencedCall, newestStamp int64) error {
	err := raiseFence.Run(ctx, f.c, []string{f.keys.Fence(b.account), f.keys.Lease(b.account)}, b.token, newestStamp).Err()
	if err != nil {
		return fmt.Errorf("%w: publish %s: %w; raising the fence failed: %w", accesscache.ErrUnavailable, b.account, ErrStaleStamp, err)
	}
	return fmt.Errorf("publish %s: %w: %w", b.account, ErrStaleStamp, ErrNotOwner)
}

// PutStatus writes an account's status record if the caller holds the
// account's current fencing token.
func (f *Fenced) PutStatus(ctx context.Context, st accesscache.AccountStatus) error {
	token, ok := f.tokens.Token(st.Account)
	if !ok {
		return fmt.Errorf("write status %s: %w", st.Account, ErrNotOwner)
	}
	b, err := json.Marshal(&st)
	if err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	err = fencedStatus.Run(ctx, f.c, []string{f.keys.Fence(st.Account), f.keys.Status(st.Account)}, token, b).Err()
	if err != nil {
		return fenceError(st.Account, err)
	}
	return nil
}

// CurrentToken reads an account's current fencing token ("" when none).
func (f *Fenced) CurrentToken(ctx context.Context, account string) (string, error) {
	v, err := f.c.Get(ctx, f.keys.Fence(account)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("%w: %w", accesscache.ErrUnavailable, err)
	}
	return v, nil
}

func fenceError(account string, err error) error {
	if strings.Contains(err.Error(), fenceRefused) {
		return fmt.Errorf("publish %s: %w", account, ErrNotOwner)
	}
	return fmt.Errorf("%w: publish %s: %w", accesscache.ErrUnavailable, account, err)
}

// fencedDelete deletes the status record if the token is current.
var fencedDelete = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('DIRSYNC_FENCED stale fencing token')
end
redis.call('DEL', KEYS[2])
return 1`)

// DeleteStatus removes an account's status record if the caller holds the
// account's current fencing token.
func (f *Fenced) DeleteStatus(ctx context.Context, account string) error {
	token, ok := f.tokens.Token(account)
	if !ok {
		return fmt.Errorf("delete status %s: %w", account, ErrNotOwner)
	}
	if err := fencedDelete.Run(ctx, f.c, []string{f.keys.Fence(account), f.keys.Status(account)}, token).Err(); err != nil {
		return fenceError(account, err)
	}
	return nil
}

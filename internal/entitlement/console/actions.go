package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/history"
	"github.com/dirsync/dirsync/internal/entitlement/mapper"
	"github.com/dirsync/dirsync/internal/entitlement/store"
	"github.com/dirsync/dirsync/internal/mailaddr"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
)

// MaxBatch is the most emails one request may carry.
const MaxBatch = 1000

// DefaultActor is audited when a request names no actor.
const DefaultActor = "admin-api"

// Item results.
const (
	ResultInvited           = "invited"
	ResultAccepted          = "accepted"
	ResultJoined            = "joined"
	ResultUpdated           = "updated"
	ResultRemoved           = "removed"
	ResultInvitationRevoked = "invitation_revoked"
	ResultSuspended         = "suspended"
	ResultUnsuspended       = "unsuspended"
	ResultUnchanged         = "unchanged"
	ResultRejected          = "rejected"
)

// ItemResult is the outcome for one email of a request.
type ItemResult struct {
	Email  string `json:"email"`
	Result string `json:"result"`
	// Code and Error say why an item was rejected (nothing changed for it).
	Code  Code   `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
	// Decision is what is now published for the email (absent when
	// rejected, unchanged, or when the email left the cache).
	Decision *entitlement.Decision `json:"decision,omitempty"`
}

// Result is the outcome of one request over one or more emails. Valid
// items are applied in one transaction; rejected ones change nothing.
type Result struct {
	Account   string       `json:"account"`
	Action    string       `json:"action"`
	Applied   int          `json:"applied"`
	Unchanged int          `json:"unchanged"`
	Rejected  int          `json:"rejected"`
	Items     []ItemResult `json:"items"`
}

// FirstRejection returns the first rejected item's error, or nil.
func (r *Result) FirstRejection() *Error {
	for _, it := range r.Items {
		if it.Result == ResultRejected {
			return &Error{Code: it.Code, Message: it.Error}
		}
	}
	return nil
}

// outcome is one email's change decided by a step.
type outcome struct {
	next   *Member // row to write; nil with del: delete; nil otherwise: unchanged
	del    bool
	result string
	audit  string
	detail map[string]any
}

// step decides one email's change from its locked row (nil when absent).
type step func(email string, cur *Member, now time.Time) (outcome, *Error)

// Invite invites emails (from any domain) to a team account with a
// permission they get when they accept. Malformed addresses, addresses in
// a domain another account claims, and addresses already invited or
// members (here or in another account) are rejected; the others are
// invited and published as invitation_pending.
func (s *Service) Invite(ctx context.Context, actor, account string, emails []string, permission string) (Result, error) {
	a, err := s.account(account, actionInvite, KindTeam)
	if err != nil {
		return Result{}, err
	}
	perm, err := ParsePermission(permission)
	if err != nil {
		return Result{}, err
	}
	actor = cleanActor(actor)
	return s.run(ctx, emails, request{account: a, action: actionInvite, actor: actor, step: func(email string, cur *Member, now time.Time) (outcome, *Error) {
		switch {
		case cur != nil && cur.State == StateInvited:
			return outcome{}, refuse(CodeConflict, "%s already has a pending invitation to account %q", email, a.ID)
		case cur != nil && cur.State == StateMember:
			return outcome{}, refuse(CodeConflict, "%s is already a member of account %q", email, a.ID)
		}
		next := &Member{State: StateInvited, Permission: perm, Source: "invitation", InvitedAt: &now, InvitedBy: actor, UpdatedAt: now}
		if cur != nil { // removed earlier: invited again, same user id
			next.TrialEndedAt = cur.TrialEndedAt
		}
		return outcome{next: next, result: ResultInvited, audit: actionInvite, detail: map[string]any{"permission": perm}}, nil
	}})
}

// Accept accepts a pending team invitation: the user becomes a paid member
// with the invited permission, and their free Pro trial ends now (the
// first acceptance's time is kept).
func (s *Service) Accept(ctx context.Context, actor, account, email string) (Result, error) {
	a, err := s.account(account, actionAccept, KindTeam)
	if err != nil {
		return Result{}, err
	}
	return s.run(ctx, []string{email}, request{account: a, action: actionAccept, actor: actor, step: func(email string, cur *Member, now time.Time) (outcome, *Error) {
		switch {
		case cur == nil || cur.State == StateRemoved:
			return outcome{}, refuse(CodeNotFound, "no pending invitation for %s in account %q", email, a.ID)
		case cur.State == StateMember:
			return outcome{}, refuse(CodeConflict, "%s has already accepted the invitation to account %q", email, a.ID)
		}
		next := *cur
		next.State, next.JoinedAt, next.UpdatedAt = StateMember, &now, now
		if next.TrialEndedAt == nil {
			next.TrialEndedAt = &now
		}
		return outcome{next: &next, result: ResultAccepted, audit: actionAccept,
			detail: map[string]any{"permission": next.Permission, "trial_ended_at": next.TrialEndedAt}}, nil
	}})
}

// Register records a user who signed up with an email in a claimed domain
// of an enterprise account: they join it with the account's auto-join
// permission. Claimed domains win: a membership or invitation of the email
// in another account (a team that invited it before the domain was
// claimed) ends in the same transaction, audited in that account.
func (s *Service) Register(ctx context.Context, actor, account, email string) (Result, error) {
	a, err := s.account(account, actionRegister, KindEnterprise)
	if err != nil {
		return Result{}, err
	}
	return s.run(ctx, []string{email}, request{account: a, action: actionRegister, actor: actor, check: func(email string) *Error {
		if !slices.Contains(a.ClaimedDomains, mailaddr.Domain(email)) {
			return refuse(CodeInvalid, "%s is not in a domain claimed by account %q (%s): it cannot join it", email, a.ID, strings.Join(a.ClaimedDomains, ", "))
		}
		return nil
	}, step: func(email string, cur *Member, now time.Time) (outcome, *Error) {
		if cur != nil {
			return outcome{}, refuse(CodeConflict, "%s is already registered in account %q", email, a.ID)
		}
		next := &Member{State: StateMember, Permission: a.AutoJoinPermission, Source: "registration", JoinedAt: &now, UpdatedAt: now}
		return outcome{next: next, result: ResultJoined, audit: actionRegister, detail: map[string]any{"permission": a.AutoJoinPermission}}, nil
	}})
}

// SetPermission assigns pro or basic to members (or, in a team, to pending
// invitations: the permission they will get).
func (s *Service) SetPermission(ctx context.Context, actor, account string, emails []string, permission string) (Result, error) {
	a, err := s.account(account, actionSetPermission, KindTeam, KindEnterprise)
	if err != nil {
		return Result{}, err
	}
	perm, err := ParsePermission(permission)
	if err != nil {
		return Result{}, err
	}
	return s.run(ctx, emails, request{account: a, action: actionSetPermission, actor: actor, step: func(email string, cur *Member, now time.Time) (outcome, *Error) {
		if cur == nil || cur.State == StateRemoved {
			return outcome{}, refuse(CodeNotFound, "%s is not a member of account %q", email, a.ID)
		}
		if cur.Permission == perm {
			return outcome{result: ResultUnchanged}, nil
		}
		next := *cur
		next.Permission, next.UpdatedAt = perm, now
		return outcome{next: &next, result: ResultUpdated, audit: actionSetPermission,
			detail: map[string]any{"from": cur.Permission, "to": perm}}, nil
	}})
}

// Remove takes users out of a team: members lose their permission and paid
// membership (published as removed_from_team) and leave the member list;
// pending invitations are revoked (the email leaves the cache).
func (s *Service) Remove(ctx context.Context, actor, account string, emails []string) (Result, error) {
	a, err := s.account(account, actionRemove, KindTeam)
	if err != nil {
		return Result{}, err
	}
	return s.run(ctx, emails, request{account: a, action: actionRemove, actor: actor, step: func(email string, cur *Member, now time.Time) (outcome, *Error) {
		switch {
		case cur == nil || cur.State == StateRemoved:
			return outcome{}, refuse(CodeNotFound, "%s is not a member of account %q", email, a.ID)
		case cur.State == StateInvited:
			return outcome{del: true, result: ResultInvitationRevoked, audit: actionRevokeInvitation}, nil
		}
		next := *cur
		next.State, next.Permission, next.Suspended, next.SuspendedAt = StateRemoved, entitlement.PermissionNone, false, nil
		next.RemovedAt, next.UpdatedAt = &now, now
		return outcome{next: &next, result: ResultRemoved, audit: actionRemove, detail: map[string]any{"permission": cur.Permission}}, nil
	}})
}

// Suspend denies members of an enterprise account (reason suspended).
func (s *Service) Suspend(ctx context.Context, actor, account string, emails []string) (Result, error) {
	return s.suspension(ctx, actor, account, emails, true)
}

// Unsuspend lets suspended members of an enterprise account in again.
func (s *Service) Unsuspend(ctx context.Context, actor, account string, emails []string) (Result, error) {
	return s.suspension(ctx, actor, account, emails, false)
}

func (s *Service) suspension(ctx context.Context, actor, account string, emails []string, suspend bool) (Result, error) {
	action, result := actionUnsuspend, ResultUnsuspended
	if suspend {
		action, result = actionSuspend, ResultSuspended
	}
	a, err := s.account(account, action, KindEnterprise)
	if err != nil {
		return Result{}, err
	}
	return s.run(ctx, emails, request{account: a, action: action, actor: actor, step: func(email string, cur *Member, now time.Time) (outcome, *Error) {
		if cur == nil || cur.State != StateMember {
			return outcome{}, refuse(CodeNotFound, "%s is not a member of account %q", email, a.ID)
		}
		if cur.Suspended == suspend {
			return outcome{result: ResultUnchanged}, nil
		}
		next := *cur
		next.Suspended, next.UpdatedAt, next.SuspendedAt = suspend, now, nil
		if suspend {
			next.SuspendedAt = &now
		}
		return outcome{next: &next, result: result, audit: action}, nil
	}})
}

func cleanActor(actor string) string {
	actor = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, strings.TrimSpace(actor))
	if actor == "" {
		return DefaultActor
	}
	if len(actor) > 200 {
		actor = actor[:200]
	}
	return actor
}

// errRetry asks run to start its transaction again (the set of accounts to
// lock changed under it).
var errRetry = errors.New("lock set changed")

// request is one administrator action over one or more emails.
type request struct {
	account *Account
	action  string
	actor   string
	// check, when set, rejects an email before the database is consulted.
	// Every action but a removal or a suspension is also refused for an
	// email the account may not publish (Service.claimRefusal).
	check func(email string) *Error
	// step decides each email's change from its locked row.
	step step
}

// run applies req's step to each email in one transaction holding the
// advisory locks of every account it touches, publishes the changes to
// the cache, then commits.
func (s *Service) run(ctx context.Context, rawEmails []string, req request) (Result, error) {
	req.actor = cleanActor(req.actor)
	ctx = history.WithCause(ctx, history.CauseConsole, req.actor)
	res := Result{Account: req.account.ID, Action: req.action}
	if len(rawEmails) == 0 {
		return res, refuse(CodeInvalid, "no email addresses given")
	}
	if len(rawEmails) > MaxBatch {
		return res, refuse(CodeInvalid, "%d email addresses: at most %d per request", len(rawEmails), MaxBatch)
	}
	res.Items = make([]ItemResult, len(rawEmails))
	var valid []int // indexes into res.Items
	seen := map[string]bool{}
	for i, raw := range rawEmails {
		it := &res.Items[i]
		email, err := NormalizeEmail(raw)
		it.Email = email
		if err != nil {
			it.Email = raw
			reject(it, err.(*Error))
			continue
		}
		if seen[email] {
			reject(it, refuse(CodeInvalid, "%s is listed twice in this request", email))
			continue
		}
		seen[email] = true
		if req.check != nil {
			if e := req.check(email); e != nil {
				reject(it, e)
				continue
			}
		}
		if req.action != actionRemove && req.action != actionSuspend {
			if e := s.claimRefusal(req.account, email); e != nil {
				reject(it, e)
				continue
			}
		}
		valid = append(valid, i)
	}
	var err error
	for attempt := 0; attempt < 5 && len(valid) > 0; attempt++ {
		err = s.runTx(ctx, &req, &res, valid)
		var conflict *store.ConflictError
		if errors.As(err, &conflict) && conflict.Account == req.account.ID {
			// The cache refused some of the account's writes: another
			// account holds those users' keys. The transaction was rolled
			// back; reject them and apply the others.
			valid = s.rejectConflicts(&res, valid, conflict)
			err = nil
			continue
		}
		if !errors.Is(err, errRetry) {
			break
		}
	}
	if err != nil {
		return Result{Account: req.account.ID, Action: req.action}, err
	}
	for _, it := range res.Items {
		switch it.Result {
		case ResultRejected:
			res.Rejected++
		case ResultUnchanged:
			res.Unchanged++
		default:
			res.Applied++
		}
	}
	return res, nil
}

// rejectConflicts rejects the items the cache refused and returns the
// others.
func (s *Service) rejectConflicts(res *Result, valid []int, conflict *store.ConflictError) []int {
	owners := map[string]string{}
	for _, c := range conflict.Conflicts {
		owners[c.Email] = c.Owner
		s.log.Warn("console action refused for a user another account holds in the access cache; its key keeps that account's decision",
			zap.String("account", res.Account), zap.String("action", res.Action), zap.String("email", c.Email), zap.String("held_by", c.Owner))
	}
	kept := valid[:0:0]
	for _, i := range valid {
		it := &res.Items[i]
		if owner, refused := owners[it.Email]; refused {
			reject(it, refuse(CodeConflict, "%s is held in the access cache by account %q (which claims its domain): nothing changed", it.Email, owner))
			continue
		}
		kept = append(kept, i)
	}
	return kept
}

func reject(it *ItemResult, e *Error) {
	it.Result, it.Code, it.Error, it.Decision = ResultRejected, e.Code, e.Message, nil
}

// txAction is one attempt of a request inside its transaction.
type txAction struct {
	*request
	svc *Service
	tx  pgx.Tx
	now time.Time
	// locked are the accounts whose advisory locks the transaction holds.
	locked []string
	// changes are the cache changes to publish, by account.
	changes map[string][]mapper.Change
}

// runTx is one attempt of run's transaction.
func (s *Service) runTx(ctx context.Context, req *request, res *Result, valid []int) error {
	emails := make([]string, len(valid))
	for j, i := range valid {
		emails[j] = res.Items[i].Email
	}
	var order []string // accounts published, in order
	err := inTx(ctx, s.pool, func(tx pgx.Tx) error {
		locked, err := accountsToLock(ctx, tx, req, emails)
		if err != nil {
			return err
		}
		if err := lockAccounts(ctx, tx, locked); err != nil {
			return err
		}
		act := &txAction{request: req, svc: s, tx: tx, now: s.now().UTC().Truncate(time.Microsecond), locked: locked, changes: map[string][]mapper.Change{}}
		for _, i := range valid {
			it := &res.Items[i]
			it.Result, it.Code, it.Error, it.Decision = "", "", "", nil
			if err := act.applyOne(ctx, it); err != nil {
				return err
			}
		}
		// Other accounts' removals first, so the key is free when this
		// account writes it.
		for id := range act.changes {
			if id != req.account.ID {
				order = append(order, id)
			}
		}
		slices.Sort(order)
		if _, ok := act.changes[req.account.ID]; ok {
			order = append(order, req.account.ID)
		}
		for _, id := range order {
			if err := s.publishLocked(ctx, tx, id, act.changes[id], act.now); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, errCommit) {
		// The cache may now be ahead of the database: republish the
		// committed state (whatever the commit did) under the locks.
		errs := []error{err}
		for _, id := range order {
			if _, rerr := s.Resync(context.WithoutCancel(ctx), id, ResyncOptions{}); rerr != nil {
				errs = append(errs, rerr)
			}
		}
		return errors.Join(errs...)
	}
	return err
}

// accountsToLock lists the accounts a request's transaction locks: its
// own; for an invitation, the other teams whose removed_from_team rows it
// deletes; for a registration, the other accounts whose memberships it
// ends (one account per email).
func accountsToLock(ctx context.Context, tx pgx.Tx, req *request, emails []string) ([]string, error) {
	locked := []string{req.account.ID}
	var states string
	switch req.action {
	case actionInvite:
		states = "state = 'removed'"
	case actionRegister:
		states = "state <> 'removed'"
	default:
		return locked, nil
	}
	rows, err := tx.Query(ctx, "SELECT DISTINCT account_id FROM console_members WHERE email = ANY($1) AND "+states+" AND account_id <> $2", emails, req.account.ID)
	if err != nil {
		return nil, fmt.Errorf("find earlier teams: %w", err)
	}
	others, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("find earlier teams: %w", err)
	}
	return append(locked, others...), nil
}

// applyOne decides one email's change and writes it inside a savepoint, so
// that a constraint violation rejects the email and leaves the others
// applied. A refused item is marked in it and is not an error.
func (act *txAction) applyOne(ctx context.Context, it *ItemResult) error {
	a := act.account
	cur, err := getMember(ctx, act.tx, a.ID, it.Email)
	if err != nil {
		return err
	}
	out, refusal := act.step(it.Email, cur, act.now)
	if refusal != nil {
		reject(it, refusal)
		return nil
	}
	it.Result = out.result
	if out.next == nil && !out.del {
		return nil
	}
	var pending []accountChange
	var ch mapper.Change
	err = inTx(ctx, act.tx, func(sp pgx.Tx) error {
		var err error
		switch act.action {
		case actionInvite:
			pending, err = act.clearEarlierTeams(ctx, sp, it.Email)
		case actionRegister:
			pending, err = act.endOtherMemberships(ctx, sp, it.Email)
		}
		if err != nil {
			return err
		}
		if ch, err = act.write(ctx, sp, it, cur, &out); err != nil {
			return err
		}
		detail, _ := json.Marshal(out.detail) // maps of plain values always marshal
		if out.detail == nil {
			detail = []byte("{}")
		}
		if _, err := sp.Exec(ctx, "INSERT INTO console_audit (at, account_id, actor, action, email, detail) VALUES ($1, $2, $3, $4, $5, $6)",
			act.now, a.ID, act.actor, out.audit, it.Email, detail); err != nil {
			return fmt.Errorf("audit %s: %w", it.Email, err)
		}
		return nil
	})
	var refused *Error
	if errors.As(err, &refused) {
		reject(it, refused)
		return nil
	}
	if err != nil {
		return err
	}
	for _, p := range pending {
		act.changes[p.account] = append(act.changes[p.account], p.change)
	}
	act.changes[a.ID] = append(act.changes[a.ID], ch)
	if publish, _, _ := act.svc.claim(a, it.Email); !publish {
		it.Decision = nil // removed from a team that may not publish it
	}
	return nil
}

// endOtherMemberships ends the invitation or membership a registering
// email has in other accounts (claimed domains win over invitations): the
// rows become removed, audited in their accounts, and their decisions
// leave the cache. It asks for a retry when such an account is not locked.
func (act *txAction) endOtherMemberships(ctx context.Context, sp pgx.Tx, email string) ([]accountChange, error) {
	rows, err := sp.Query(ctx, "SELECT account_id, "+memberColumns+" FROM console_members WHERE email = $1 AND state <> 'removed' AND account_id <> $2 FOR UPDATE", email, act.account.ID)
	if err != nil {
		return nil, fmt.Errorf("end other memberships of %s: %w", email, err)
	}
	type held struct {
		account string
		m       *Member
	}
	others, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (held, error) {
		var h held
		var m Member
		err := r.Scan(&h.account, &m.Email, &m.UserID, &m.State, &m.Permission, &m.Suspended, &m.Source, &m.InvitedAt,
			&m.InvitedBy, &m.JoinedAt, &m.TrialEndedAt, &m.SuspendedAt, &m.RemovedAt, &m.UpdatedAt)
		h.m = &m
		return h, err
	})
	if err != nil {
		return nil, fmt.Errorf("end other memberships of %s: %w", email, err)
	}
	var pending []accountChange
	for _, h := range others {
		if !slices.Contains(act.locked, h.account) {
			return nil, errRetry
		}
		if _, err := sp.Exec(ctx, `UPDATE console_members SET state = 'removed', permission = 'none', suspended = false,
				suspended_at = NULL, removed_at = $3, updated_at = $3 WHERE account_id = $1 AND email = $2`, h.account, email, act.now); err != nil {
			return nil, fmt.Errorf("end membership of %s in %s: %w", email, h.account, err)
		}
		detail, _ := json.Marshal(map[string]any{"reason": "domain_claimed", "claimed_by": act.account.ID, "permission": h.m.Permission, "state": h.m.State})
		if _, err := sp.Exec(ctx, "INSERT INTO console_audit (at, account_id, actor, action, email, detail) VALUES ($1, $2, $3, $4, $5, $6)",
			act.now, h.account, act.actor, actionRemove, email, detail); err != nil {
			return nil, fmt.Errorf("audit %s in %s: %w", email, h.account, err)
		}
		old := h.m.Decision(h.account)
		p := mapper.PublishedOf(&old)
		pending = append(pending, accountChange{h.account, mapper.Change{Email: email, Old: &p}})
	}
	return pending, nil
}

// clearEarlierTeams deletes the removed_from_team rows an invited email
// left in other teams and returns their unpublishing. It asks for a retry
// when such a team is not locked (it appeared after the locks were taken).
func (act *txAction) clearEarlierTeams(ctx context.Context, sp pgx.Tx, email string) ([]accountChange, error) {
	rows, err := sp.Query(ctx, "DELETE FROM console_members WHERE email = $1 AND state = 'removed' AND account_id <> $2 RETURNING account_id, "+memberColumns, email, act.account.ID)
	if err != nil {
		return nil, fmt.Errorf("clear earlier teams of %s: %w", email, err)
	}
	defer rows.Close()
	var pending []accountChange
	for rows.Next() {
		var id string
		var m Member
		if err := rows.Scan(&id, &m.Email, &m.UserID, &m.State, &m.Permission, &m.Suspended, &m.Source, &m.InvitedAt,
			&m.InvitedBy, &m.JoinedAt, &m.TrialEndedAt, &m.SuspendedAt, &m.RemovedAt, &m.UpdatedAt); err != nil {
			return nil, err
		}
		if !slices.Contains(act.locked, id) {
			return nil, errRetry
		}
		old := m.Decision(id)
		p := mapper.PublishedOf(&old)
		pending = append(pending, accountChange{id, mapper.Change{Email: m.Email, Old: &p}})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("clear earlier teams of %s: %w", email, err)
	}
	return pending, nil
}

// write stores an email's new row (or deletes it) and returns the cache
// change. A unique-index violation (the email is active in another
// account) is returned as a refusal.
func (act *txAction) write(ctx context.Context, sp pgx.Tx, it *ItemResult, cur *Member, out *outcome) (mapper.Change, error) {
	a := act.account
	ch := mapper.Change{Email: it.Email}
	if cur != nil {
		d := cur.Decision(a.ID)
		p := mapper.PublishedOf(&d)
		ch.Old = &p
	}
	if out.del {
		if _, err := sp.Exec(ctx, "DELETE FROM console_members WHERE account_id = $1 AND email = $2", a.ID, it.Email); err != nil {
			return ch, fmt.Errorf("delete %s: %w", it.Email, err)
		}
		return ch, nil
	}
	next := out.next
	next.Email = it.Email
	err := sp.QueryRow(ctx, `INSERT INTO console_members (account_id, email, state, permission, suspended, source,
			invited_at, invited_by, joined_at, trial_ended_at, suspended_at, removed_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, nullif($8, ''), $9, $10, $11, $12, $13)
		ON CONFLICT (account_id, email) DO UPDATE SET state = EXCLUDED.state, permission = EXCLUDED.permission,
			suspended = EXCLUDED.suspended, source = EXCLUDED.source, invited_at = EXCLUDED.invited_at,
			invited_by = EXCLUDED.invited_by, joined_at = EXCLUDED.joined_at, trial_ended_at = EXCLUDED.trial_ended_at,
			suspended_at = EXCLUDED.suspended_at, removed_at = EXCLUDED.removed_at, updated_at = EXCLUDED.updated_at
		RETURNING user_id::text`,
		a.ID, next.Email, next.State, next.Permission, next.Suspended, next.Source, next.InvitedAt, next.InvitedBy,
		next.JoinedAt, next.TrialEndedAt, next.SuspendedAt, next.RemovedAt, next.UpdatedAt).Scan(&next.UserID)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "console_members_active_email" {
		return ch, refuse(CodeConflict, "%s is already invited to, or a member of, another account", it.Email)
	}
	if err != nil {
		return ch, fmt.Errorf("write %s: %w", it.Email, err)
	}
	d := next.Decision(a.ID)
	ch.New, ch.Next = &d, mapper.PublishedOf(&d)
	it.Decision = &d
	return ch, nil
}

type accountChange struct {
	account string
	change  mapper.Change
}

// errCommit marks an error of the final COMMIT: whatever fn published to
// the cache may or may not be in the database.
var errCommit = errors.New("commit")

// beginner opens a transaction: a pool, or a transaction (a savepoint).
type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// inTx runs fn in a transaction of db (a savepoint when db is a
// transaction) and commits it when fn returns nil; otherwise it rolls it
// back and returns fn's error. A failed commit is returned wrapping
// errCommit.
func inTx(ctx context.Context, db beginner, fn func(tx pgx.Tx) error) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback(ctx) // fn's error is the one that matters
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("%w: %w", errCommit, err)
	}
	return nil
}

// lockAccounts takes the transaction-scoped advisory locks of accounts in
// sorted order (so two transactions never wait on each other in a cycle).
func lockAccounts(ctx context.Context, tx pgx.Tx, accounts []string) error {
	ids := slices.Clone(accounts)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	for _, id := range ids {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, hashtext($2))", lockNamespace, id); err != nil {
			return fmt.Errorf("lock account %s: %w", id, err)
		}
	}
	return nil
}

// publishLocked publishes an account's changes and its status record,
// inside the transaction that made them (locks held). When the cache has
// no status record for the account (a Redis that lost its data) it
// publishes the whole account instead, so that one action never leaves a
// half-published account looking fresh.
func (s *Service) publishLocked(ctx context.Context, tx pgx.Tx, account string, changes []mapper.Change, now time.Time) error {
	a := s.accounts[account]
	st, found, err := s.cache.Status(ctx, account)
	if err != nil {
		return err
	}
	if !found {
		members, err := allMembers(ctx, tx, account)
		if err != nil {
			return err
		}
		decisions, _ := s.decisionsOf(a, members)
		published, err := s.cache.Published(ctx, account)
		if err != nil {
			return err
		}
		changes = mapper.Diff(published, decisions).Changes
		st.LastSyncAt, st.LastFullSyncAt = now, now
		fillStatus(&st, account, decisions)
	} else if err := s.countStatus(ctx, tx, &st, a); err != nil {
		return err
	}
	st.Generation++
	if err := s.cache.PutStatus(ctx, st); err != nil {
		return err
	}
	return s.apply(ctx, a, changes, now)
}

// apply publishes an account's changes as the claim rule allows (see
// Service.claim): a change for an email the account may not publish is
// sent as its removal (the user key is deleted only if the account holds
// it), and a team's changes outside its claimed domains are marked
// ByInvitation, so the cache never lets them replace another account's
// decision. A refusal by the cache is returned as a *store.ConflictError.
func (s *Service) apply(ctx context.Context, a *Account, changes []mapper.Change, now time.Time) error {
	out := changes[:0:0]
	for _, ch := range changes {
		publish, byInvitation, _ := s.claim(a, ch.Email)
		if !publish {
			if ch.Old == nil {
				continue
			}
			ch.New, ch.Next = nil, mapper.Published{}
		}
		ch.ByInvitation = byInvitation
		out = append(out, ch)
	}
	if len(out) == 0 {
		return nil
	}
	return s.cache.Apply(ctx, a.ID, out, now)
}

// countStatus sets the counts of a status record with one aggregate query,
// counting only the members the account may publish.
func (s *Service) countStatus(ctx context.Context, tx pgx.Tx, st *accesscache.AccountStatus, a *Account) error {
	rows, err := tx.Query(ctx, `SELECT split_part(email, '@', 2), state, permission, suspended, count(*) FROM console_members
		WHERE account_id = $1 GROUP BY 1, state, permission, suspended`, a.ID)
	if err != nil {
		return fmt.Errorf("count members of %s: %w", a.ID, err)
	}
	defer rows.Close()
	fillStatus(st, a.ID, nil)
	for rows.Next() {
		var domain string
		var m Member
		var n int
		if err := rows.Scan(&domain, &m.State, &m.Permission, &m.Suspended, &n); err != nil {
			return fmt.Errorf("count members of %s: %w", a.ID, err)
		}
		if publish, _, _ := s.claim(a, "@"+domain); !publish {
			continue
		}
		d := m.Decision(a.ID)
		st.Users += n
		st.ByPermission[d.Permission] += n
		st.ByReason[d.Reason] += n
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("count members of %s: %w", a.ID, err)
	}
	return nil
}

// decisionsOf returns the decisions account a publishes for its members,
// and the emails it withholds because it may not publish them (see
// Service.claim).
func (s *Service) decisionsOf(a *Account, members []*Member) (decisions []entitlement.Decision, withheld []string) {
	decisions = make([]entitlement.Decision, 0, len(members))
	for _, m := range members {
		if publish, _, _ := s.claim(a, m.Email); !publish {
			withheld = append(withheld, m.Email)
			continue
		}
		decisions = append(decisions, m.Decision(a.ID))
	}
	return decisions, withheld
}

// fillStatus sets the counts of a status record from the decisions.
func fillStatus(st *accesscache.AccountStatus, account string, decisions []entitlement.Decision) {
	st.Account = account
	st.Source = "console:postgres"
	st.Users = len(decisions)
	st.ByPermission = map[entitlement.Permission]int{}
	st.ByReason = map[entitlement.Reason]int{}
	for i := range decisions {
		st.ByPermission[decisions[i].Permission]++
		st.ByReason[decisions[i].Reason]++
	}
	st.Bindings = nil
	st.Hold = nil
}

package console

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dirsync/dirsync/entitlement"
)

// Member states.
const (
	StateInvited = "invited"
	StateMember  = "member"
	StateRemoved = "removed"
)

// Member is one user of a console account, as stored and as listed.
type Member struct {
	Email        string                 `json:"email"`
	UserID       string                 `json:"user_id"`
	State        string                 `json:"state"`
	Permission   entitlement.Permission `json:"permission"`
	Suspended    bool                   `json:"suspended"`
	Source       string                 `json:"source"`
	InvitedAt    *time.Time             `json:"invited_at,omitempty"`
	InvitedBy    string                 `json:"invited_by,omitempty"`
	JoinedAt     *time.Time             `json:"joined_at,omitempty"`
	TrialEndedAt *time.Time             `json:"trial_ended_at,omitempty"`
	SuspendedAt  *time.Time             `json:"suspended_at,omitempty"`
	RemovedAt    *time.Time             `json:"removed_at,omitempty"`
	UpdatedAt    time.Time              `json:"updated_at"`
}

const memberColumns = `email, user_id::text, state, permission, suspended, source, invited_at,
	coalesce(invited_by, ''), joined_at, trial_ended_at, suspended_at, removed_at, updated_at`

func scanMember(row pgx.Row) (*Member, error) {
	var m Member
	err := row.Scan(&m.Email, &m.UserID, &m.State, &m.Permission, &m.Suspended, &m.Source, &m.InvitedAt,
		&m.InvitedBy, &m.JoinedAt, &m.TrialEndedAt, &m.SuspendedAt, &m.RemovedAt, &m.UpdatedAt)
	if err != nil {
		return nil, err
	}
	return &m, nil
}

// Decision is what the sign-in service is told about a member of account.
func (m *Member) Decision(account string) entitlement.Decision {
	d := entitlement.Decision{
		Email: m.Email, Account: account, UserID: m.UserID,
		Permission: entitlement.PermissionNone, Via: []string{},
		Detail: &entitlement.Detail{Source: "console"},
	}
	switch {
	case m.State == StateInvited:
		d.Reason = entitlement.ReasonInvitationPending
		d.Detail.DirectoryStatus = StateInvited
		d.Detail.Rule = "invitation pending: the user has not accepted it yet"
	case m.State == StateRemoved:
		d.Reason = entitlement.ReasonRemovedFromTeam
		d.Detail.DirectoryStatus = StateRemoved
		d.Detail.Rule = "removed from the team by an administrator: not a member of the account; may use the service only as an unpaid individual"
	case m.Suspended:
		d.Reason = entitlement.ReasonSuspended
		d.Detail.DirectoryStatus = "suspended"
		d.Detail.Rule = "suspended by an account administrator"
	case m.Permission == entitlement.PermissionPro || m.Permission == entitlement.PermissionBasic:
		d.Allowed = true
		d.Permission = m.Permission
		d.Reason = entitlement.ReasonGranted
		d.Via = []string{"console"}
		d.Detail.DirectoryStatus = "active"
		d.Detail.Rule = fmt.Sprintf("permission %s assigned in the admin console", m.Permission)
	default:
		d.Reason = entitlement.ReasonNoPermission
		d.Detail.DirectoryStatus = "active"
		d.Detail.Rule = "no permission assigned in the admin console"
	}
	d.Capabilities = entitlement.CapabilitiesOf(d.Permission)
	return d
}

// getMember reads one row, locking it for the transaction; nil when absent.
func getMember(ctx context.Context, tx pgx.Tx, account, email string) (*Member, error) {
	m, err := scanMember(tx.QueryRow(ctx, "SELECT "+memberColumns+" FROM console_members WHERE account_id = $1 AND email = $2 FOR UPDATE", account, email))
	if err == pgx.ErrNoRows {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", email, err)
	}
	return m, nil
}

// allMembers reads every row of an account (removed ones included: they
// are published as removed_from_team).
func allMembers(ctx context.Context, q pgx.Tx, account string) ([]*Member, error) {
	rows, err := q.Query(ctx, "SELECT "+memberColumns+" FROM console_members WHERE account_id = $1 ORDER BY email", account)
	if err != nil {
		return nil, fmt.Errorf("read members of %s: %w", account, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*Member, error) { return scanMember(r) })
	if err != nil {
		return nil, fmt.Errorf("read members of %s: %w", account, err)
	}
	return out, nil
}

// ListOptions pages the member list.
type ListOptions struct {
	// State filters: "member", "invited", or "" for both. Removed users
	// are never listed.
	State string
	// After is the last email of the previous page.
	After string
	// Limit is the page size: 1..1000, default 100.
	Limit int
}

// Page is one page of the member list.
type Page struct {
	Account string   `json:"account"`
	Members []Member `json:"members"`
	// Next is the After of the next page; empty on the last page.
	Next string `json:"next,omitempty"`
}

// Members lists an account's members and pending invitees by email: the
// list that powers contact autocomplete. Removed users are not in it.
func (s *Service) Members(ctx context.Context, account string, o ListOptions) (Page, error) {
	if _, err := s.account(account, "list users", KindTeam, KindEnterprise); err != nil {
		return Page{}, err
	}
	switch o.State {
	case "", StateMember, StateInvited:
	default:
		return Page{}, refuse(CodeInvalid, "state %q: use member or invited", o.State)
	}
	if o.Limit == 0 {
		o.Limit = 100
	}
	if o.Limit < 1 || o.Limit > 1000 {
		return Page{}, refuse(CodeInvalid, "limit %d is outside 1..1000", o.Limit)
	}
	rows, err := s.pool.Query(ctx, "SELECT "+memberColumns+` FROM console_members
		WHERE account_id = $1 AND state <> 'removed' AND ($2 = '' OR state = $2) AND email > $3
		ORDER BY email LIMIT $4`, account, o.State, o.After, o.Limit+1)
	if err != nil {
		return Page{}, fmt.Errorf("list members of %s: %w", account, err)
	}
	ms, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Member, error) {
		m, err := scanMember(r)
		if err != nil {
			return Member{}, err
		}
		return *m, nil
	})
	if err != nil {
		return Page{}, fmt.Errorf("list members of %s: %w", account, err)
	}
	p := Page{Account: account, Members: ms}
	if len(ms) > o.Limit {
		p.Members = ms[:o.Limit]
		p.Next = p.Members[o.Limit-1].Email
	}
	if p.Members == nil {
		p.Members = []Member{}
	}
	return p, nil
}

// AuditEntry is one audited change.
type AuditEntry struct {
	ID      int64           `json:"id"`
	At      time.Time       `json:"at"`
	Account string          `json:"account"`
	Actor   string          `json:"actor"`
	Action  string          `json:"action"`
	Email   string          `json:"email"`
	Detail  json.RawMessage `json:"detail"`
}

// Audit returns an account's audit entries, newest first, before id
// (0: from the newest), at most limit (1..1000).
func (s *Service) Audit(ctx context.Context, account string, before int64, limit int) ([]AuditEntry, error) {
	if _, err := s.account(account, "audit", KindTeam, KindEnterprise); err != nil {
		return nil, err
	}
	if limit < 1 || limit > 1000 {
		return nil, refuse(CodeInvalid, "limit %d is outside 1..1000", limit)
	}
	rows, err := s.pool.Query(ctx, `SELECT id, at, account_id, actor, action, email, detail FROM console_audit
		WHERE account_id = $1 AND ($2 = 0 OR id < $2) ORDER BY id DESC LIMIT $3`, account, before, limit)
	if err != nil {
		return nil, fmt.Errorf("read audit of %s: %w", account, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AuditEntry, error) {
		var e AuditEntry
		err := r.Scan(&e.ID, &e.At, &e.Account, &e.Actor, &e.Action, &e.Email, &e.Detail)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read audit of %s: %w", account, err)
	}
	if out == nil {
		out = []AuditEntry{}
	}
	return out, nil
}

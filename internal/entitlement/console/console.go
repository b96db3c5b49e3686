// Package console is the system of record and the rules of console-managed
// accounts: Team accounts, whose administrators invite users from any
// domain, and Enterprise accounts without a directory, whose users join by
// registering with an email in a claimed domain. Assignments live in
// PostgreSQL (migrations embedded, applied by Open); every administrator
// action is one transaction, audited, and published to the access cache
// before it commits, with the same Decision JSON the directory pipeline
// publishes. Resync rebuilds an account's published decisions from
// PostgreSQL (after a Redis restart, on the daemon's full-sync schedule).
//
// Claimed domains win over invitations: an email in a domain an account
// claims (in the config) is that account's. A team never publishes an
// email in a domain another account claims (its actions on it are refused,
// except removal; its resync leaves it out and reports it), an enterprise
// publishes only emails in its own claimed domains, a registration in an
// enterprise ends the email's membership of any other account, and the
// cache writer refuses a team's write over another account's key (see
// package store). The rule is applied with the config in force, so every
// action and every resync (each config reload starts with one) re-checks
// it.
//
// Concurrency: every action and every resync of an account holds a
// PostgreSQL advisory lock on the account for its whole transaction,
// including the cache write, so replicas sharing one database publish an
// account's changes in commit order and never apply one action twice.
// Unique constraints make double invitations fail whatever the timing.
package console

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/mapper"
	"github.com/dirsync/dirsync/internal/mailaddr"
	"github.com/dirsync/dirsync/internal/pgstore"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
)

// Cache is where decisions are published (store.Redis or Memory).
type Cache interface {
	Published(ctx context.Context, account string) (map[string]mapper.Published, error)
	Apply(ctx context.Context, account string, changes []mapper.Change, at time.Time) error
	PutStatus(ctx context.Context, st accesscache.AccountStatus) error
	Status(ctx context.Context, account string) (accesscache.AccountStatus, bool, error)
}

// Kind is how an account's users are managed.
type Kind string

// Kinds.
const (
	// KindTeam: console-managed Team account (invitations, any domain).
	KindTeam Kind = "team"
	// KindEnterprise: console-managed Enterprise account without a
	// directory (registration in claimed domains, suspension).
	KindEnterprise Kind = "enterprise"
	// KindDirectory: users and permissions come from a directory (AD,
	// LDAP, Okta, LDIF); console actions that would change them refuse.
	KindDirectory Kind = "directory"
)

// Account is one configured account as the console needs it. Directory
// accounts are listed too, so that actions on them are refused with the
// right message and their claimed domains are never invited into a team.
type Account struct {
	ID             string
	Kind           Kind
	ClaimedDomains []string
	// AutoJoinPermission is given to users registering in a claimed
	// domain (enterprise accounts): pro, basic or none.
	AutoJoinPermission entitlement.Permission
	// DirectoryType names the directory of a KindDirectory account, for
	// messages (active_directory, ldap, okta, ldif).
	DirectoryType string
}

// Options configures Open.
type Options struct {
	// Pool, when set, is the database to use (shared with other
	// components; Close leaves it open). Otherwise Open connects to DSN.
	Pool *pgxpool.Pool
	// DSN is the PostgreSQL connection string (a secret: never logged).
	DSN string
	// MaxConns bounds the pool. Default 8.
	MaxConns int
	// Accounts are all configured accounts.
	Accounts []Account
	Cache    Cache
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Log receives a line per conflict between accounts over a user (a
	// claimed domain, a cache key another account holds). Default: none.
	Log *zap.Logger
}

// Service applies the console rules. It is safe for concurrent use, and
// several Services (replicas) may share one database.
type Service struct {
	pool     *pgxpool.Pool
	ownsPool bool
	cache    Cache
	now      func() time.Time
	log      *zap.Logger
	accounts map[string]*Account
	// domainOwner maps every claimed domain of every account to its id.
	domainOwner map[string]string
	order       []string
}

// Open connects to PostgreSQL, applies the migrations and returns the
// service. Close releases the pool.
func Open(ctx context.Context, o Options) (*Service, error) {
	pool, owned := o.Pool, false
	if pool == nil {
		var err error
		if pool, err = pgstore.Connect(ctx, o.DSN, o.MaxConns); err != nil {
			return nil, fmt.Errorf("console: %w", err)
		}
		owned = true
	}
	if err := Migrate(ctx, pool); err != nil {
		if owned {
			pool.Close()
		}
		return nil, fmt.Errorf("console: migrate database: %w", err)
	}
	s := &Service{pool: pool, ownsPool: owned, cache: o.Cache, now: o.Now, log: o.Log, accounts: map[string]*Account{}, domainOwner: map[string]string{}}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	for i := range o.Accounts {
		a := o.Accounts[i]
		s.accounts[a.ID] = &a
		s.order = append(s.order, a.ID)
		for _, d := range a.ClaimedDomains {
			s.domainOwner[strings.ToLower(d)] = a.ID
		}
	}
	return s, nil
}

// Close releases the database connections.
func (s *Service) Close() {
	if s.ownsPool {
		s.pool.Close()
	}
}

// Accounts returns the ids of the console-managed accounts (team and
// enterprise), in configuration order.
func (s *Service) Accounts() []string {
	var out []string
	for _, id := range s.order {
		if s.accounts[id].Kind != KindDirectory {
			out = append(out, id)
		}
	}
	return out
}

// Manages reports whether account is console-managed.
func (s *Service) Manages(account string) bool {
	a := s.accounts[account]
	return a != nil && a.Kind != KindDirectory
}

// claim says whether account a may publish email, and how. An email in a
// domain another account claims is that account's (claimedBy): a never
// publishes it. An enterprise publishes only emails in its own claimed
// domains. A team publishes the others; outside its own claimed domains
// only by invitation (byInvitation: its cache write never replaces another
// account's decision).
func (s *Service) claim(a *Account, email string) (publish, byInvitation bool, claimedBy string) {
	owner := s.domainOwner[mailaddr.Domain(email)]
	switch {
	case owner == a.ID:
		return true, false, owner
	case owner != "":
		return false, false, owner
	case a.Kind == KindTeam:
		return true, true, ""
	}
	return false, false, ""
}

// claimRefusal refuses an action that would give or keep access to an
// email account a may not publish (see claim).
func (s *Service) claimRefusal(a *Account, email string) *Error {
	publish, _, claimedBy := s.claim(a, email)
	switch {
	case publish:
		return nil
	case claimedBy != "":
		return refuse(CodeConflict, "%s is in domain %s, claimed by account %q: its users belong to that account", email, mailaddr.Domain(email), claimedBy)
	}
	return refuse(CodeConflict, "%s is not in a domain claimed by account %q (%s): the account no longer holds it", email, a.ID, strings.Join(a.ClaimedDomains, ", "))
}

// Code classifies a refused request; the HTTP API maps it to a status.
type Code string

// Codes.
const (
	CodeInvalid          Code = "invalid"           // 400: malformed input
	CodeUnknownAccount   Code = "unknown_account"   // 404
	CodeNotFound         Code = "not_found"         // 404: no such user/invitation in the account
	CodeConflict         Code = "conflict"          // 409: duplicate, or state forbids it
	CodeDirectoryManaged Code = "directory_managed" // 409: the directory decides
	CodeNotAllowed       Code = "not_allowed"       // 403: the account type forbids the action
)

// Error is a refused request (or item of a bulk request). Nothing was
// changed for it.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return e.Message }

func refuse(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of a refusal, or "" for other errors (database
// or cache failures).
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// action names, as audited.
const (
	actionInvite           = "invite"
	actionAccept           = "accept"
	actionRegister         = "register"
	actionSetPermission    = "set_permission"
	actionRemove           = "remove"
	actionRevokeInvitation = "revoke_invitation"
	actionSuspend          = "suspend"
	actionUnsuspend        = "unsuspend"
)

// account returns a console account allowed to take op, or the refusal.
func (s *Service) account(id, op string, kinds ...Kind) (*Account, error) {
	a := s.accounts[id]
	if a == nil {
		return nil, refuse(CodeUnknownAccount, "unknown account %q: accounts are defined in the config file", id)
	}
	if a.Kind == KindDirectory {
		return nil, refuse(CodeDirectoryManaged,
			"account %q takes its users, permissions and suspensions from its %s directory: change the user's directory group membership (or disable the user in the directory) instead", id, a.DirectoryType)
	}
	if !slices.Contains(kinds, a.Kind) {
		return nil, refuse(CodeNotAllowed, "%s", notAllowedMessage(a, op))
	}
	return a, nil
}

func notAllowedMessage(a *Account, op string) string {
	switch {
	case a.Kind == KindTeam && (op == actionSuspend || op == actionUnsuspend):
		return fmt.Sprintf("team administrators cannot suspend users (account %q is a team account): remove the user from the team instead", a.ID)
	case a.Kind == KindTeam && op == actionRegister:
		return fmt.Sprintf("account %q is a team account: users join it by accepting an invitation (POST /v1/accounts/%s/invitations)", a.ID, a.ID)
	case a.Kind == KindEnterprise && (op == actionInvite || op == actionAccept):
		return fmt.Sprintf("account %q is an enterprise account: users with an email in its claimed domains join when they register (POST /v1/accounts/%s/registrations)", a.ID, a.ID)
	case a.Kind == KindEnterprise && op == actionRemove:
		return fmt.Sprintf("users of enterprise account %q belong to it through its claimed domains and cannot be removed: suspend them instead", a.ID)
	}
	return fmt.Sprintf("%s is not available for %s account %q", op, a.Kind, a.ID)
}

var (
	localPartRE = regexp.MustCompile("^[a-z0-9.!#$%&'*+/=?^_`{|}~-]+$")
	domainRE    = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z][a-z0-9-]*[a-z0-9]$`)
)

// NormalizeEmail lower-cases and checks an address (one @, a plain local
// part, a dotted domain), returning the reason when it is malformed.
func NormalizeEmail(raw string) (string, error) {
	e := mailaddr.Normalize(raw)
	local, domain, ok := strings.Cut(e, "@")
	switch {
	case strings.TrimSpace(raw) == "":
		return "", refuse(CodeInvalid, "empty email address")
	case e == "" || !ok || strings.Contains(domain, "@"):
		return "", refuse(CodeInvalid, "%q is not an email address", raw)
	case len(e) > 254 || len(local) > 64:
		return "", refuse(CodeInvalid, "%q is too long for an email address", raw)
	case !localPartRE.MatchString(local) || strings.HasPrefix(local, ".") || strings.HasSuffix(local, ".") || strings.Contains(local, ".."):
		return "", refuse(CodeInvalid, "%q is not an email address: the part before @ has characters addresses cannot have", raw)
	case !domainRE.MatchString(domain):
		return "", refuse(CodeInvalid, "%q is not an email address: %q is not a domain name", raw, domain)
	}
	return e, nil
}

// SplitEmails splits a list of addresses separated by ';' (as pasted into
// an invitation form), dropping empty entries.
func SplitEmails(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ";") {
		if p := strings.TrimSpace(part); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// ParsePermission accepts the permissions an administrator may assign.
func ParsePermission(p string) (entitlement.Permission, error) {
	switch entitlement.Permission(strings.ToLower(strings.TrimSpace(p))) {
	case entitlement.PermissionPro:
		return entitlement.PermissionPro, nil
	case entitlement.PermissionBasic:
		return entitlement.PermissionBasic, nil
	case "":
		return "", refuse(CodeInvalid, "permission is required: pro or basic")
	}
	return "", refuse(CodeInvalid, "%q is not a permission: use pro or basic", p)
}

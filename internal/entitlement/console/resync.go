package console

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/history"
	"github.com/dirsync/dirsync/internal/entitlement/mapper"
	"github.com/dirsync/dirsync/internal/entitlement/store"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement"
)

// ErrEmptyRead refuses a resync that would unpublish every user of an
// account because the database holds none of them (a wrong or freshly
// created database looks like that).
var ErrEmptyRead = errors.New("the database holds no users for this account but users are published: keeping the published decisions (wrong database?); force the resync to unpublish them")

// Problems a resync reports (Problem.Code): users it does not publish
// because another account holds them. The rest of the account is
// published.
const (
	// ProblemClaimedByAnotherAccount: members in a domain another account
	// claims (for an enterprise: outside its own claimed domains).
	ProblemClaimedByAnotherAccount = "claimed_by_another_account"
	// ProblemKeyHeldByAnotherAccount: the cache refused to replace the
	// decision another account published for the user (store.ConflictError).
	ProblemKeyHeldByAnotherAccount = "key_held_by_another_account"
)

// ResyncOptions modify a resync.
type ResyncOptions struct {
	// DryRun computes the difference and publishes nothing.
	DryRun bool
	// Force publishes even an empty account over published users.
	Force bool
	// OnlyIfLost does nothing when the account's status record is in the
	// cache: used by frequent passes to notice a cache that lost its data.
	OnlyIfLost bool
}

// ResyncResult describes one resync.
type ResyncResult struct {
	Account string
	// Skipped is set when OnlyIfLost found the cache intact.
	Skipped bool
	Stats   mapper.Stats
	Delta   mapper.Delta
	// Published is the number of changes written to the cache.
	Published int
	// Problems are the users the account holds but does not publish
	// (ProblemClaimedByAnotherAccount, ProblemKeyHeldByAnotherAccount).
	Problems []mapper.Problem
}

// Resync makes the cache hold exactly the decisions PostgreSQL implies for
// a console account, writing only the differences, and refreshes its
// status record. It holds the account's lock, so it never publishes a
// state older than an action that committed before it.
func (s *Service) Resync(ctx context.Context, account string, o ResyncOptions) (ResyncResult, error) {
	ctx = history.WithCause(ctx, history.CauseConsole, "dirsync")
	res := ResyncResult{Account: account}
	a := s.accounts[account]
	if a == nil || a.Kind == KindDirectory {
		return res, refuse(CodeUnknownAccount, "account %q is not a console account", account)
	}
	if o.OnlyIfLost {
		if _, found, err := s.cache.Status(ctx, account); err != nil || found {
			res.Skipped = err == nil
			return res, err
		}
	}
	err := inTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockAccounts(ctx, tx, []string{account}); err != nil {
			return err
		}
		members, err := allMembers(ctx, tx, account)
		if err != nil {
			return err
		}
		decisions, withheld := s.decisionsOf(a, members)
		res.Stats = statsOf(decisions)
		if len(withheld) > 0 {
			res.Problems = append(res.Problems, s.withheldProblem(a, withheld))
		}
		published, err := s.cache.Published(ctx, account)
		if err != nil {
			return err
		}
		res.Delta = mapper.Diff(published, decisions)
		if len(members) == 0 && len(published) > 0 && !o.Force {
			return fmt.Errorf("account %s: %w", account, ErrEmptyRead)
		}
		if o.DryRun {
			return nil
		}
		now := s.now().UTC()
		st, _, err := s.cache.Status(ctx, account)
		if err != nil {
			return err
		}
		if len(res.Delta.Changes) > 0 {
			err := s.apply(ctx, a, res.Delta.Changes, now)
			var conflict *store.ConflictError
			if errors.As(err, &conflict) {
				// Reported; the rest of the account is published.
				res.Problems = append(res.Problems, s.conflictProblem(conflict))
				res.Published -= len(conflict.Conflicts)
				err = nil
			}
			if err != nil {
				return err
			}
			st.Generation++
			res.Published += len(res.Delta.Changes)
		}
		fillStatus(&st, account, decisions)
		st.LastSyncAt, st.LastFullSyncAt = now.Truncate(time.Second), now.Truncate(time.Second)
		return s.cache.PutStatus(ctx, st)
	})
	return res, err
}

// withheldProblem reports, and logs, the members account a does not
// publish because their domain is another account's.
func (s *Service) withheldProblem(a *Account, withheld []string) mapper.Problem {
	examples := make([]string, 0, min(len(withheld), 5))
	for _, email := range withheld[:cap(examples)] {
		_, _, claimedBy := s.claim(a, email)
		if claimedBy == "" {
			claimedBy = "no account"
		}
		examples = append(examples, fmt.Sprintf("%s (claimed by %s)", email, claimedBy))
	}
	msg := fmt.Sprintf("%d members are in domains this account does not hold, e.g. %s: claimed domains win over invitations, so this account publishes no decision for them",
		len(withheld), strings.Join(examples, ", "))
	s.log.Warn("console account withholds members whose domain another account claims", zap.String("account", a.ID),
		zap.Int("members", len(withheld)), zap.Strings("examples", examples))
	return mapper.Problem{Code: ProblemClaimedByAnotherAccount, Message: msg}
}

// conflictProblem reports, and logs, the cache's refusals.
func (s *Service) conflictProblem(conflict *store.ConflictError) mapper.Problem {
	for _, c := range conflict.Conflicts {
		s.log.Warn("console account's decision refused: another account holds the user's access-cache key; it keeps that account's decision",
			zap.String("account", conflict.Account), zap.String("email", c.Email), zap.String("held_by", c.Owner))
	}
	return mapper.Problem{Code: ProblemKeyHeldByAnotherAccount, Message: conflict.Error()}
}

func statsOf(decisions []entitlement.Decision) mapper.Stats {
	st := mapper.Stats{
		Users: len(decisions), Decisions: len(decisions),
		ByPermission: map[entitlement.Permission]int{}, ByReason: map[entitlement.Reason]int{},
	}
	for i := range decisions {
		st.ByPermission[decisions[i].Permission]++
		st.ByReason[decisions[i].Reason]++
	}
	return st
}

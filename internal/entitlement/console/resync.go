package console

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/mapper"

	"github.com/jackc/pgx/v5"

	"github.com/dirsync/dirsync/entitlement"
)

// ErrEmptyRead refuses a resync that would unpublish every user of an
// account because the database holds none of them (a wrong or freshly
// created database looks like that).
var ErrEmptyRead = errors.New("the database holds no users for this account but users are published: keeping the published decisions (wrong database?); force the resync to unpublish them")

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
}

// Resync makes the cache hold exactly the decisions PostgreSQL implies for
// a console account, writing only the differences, and refreshes its
// status record. It holds the account's lock, so it never publishes a
// state older than an action that committed before it.
func (s *Service) Resync(ctx context.Context, account string, o ResyncOptions) (ResyncResult, error) {
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
		decisions := decisionsOf(account, members)
		res.Stats = statsOf(decisions)
		published, err := s.cache.Published(ctx, account)
		if err != nil {
			return err
		}
		res.Delta = mapper.Diff(published, decisions)
		if len(decisions) == 0 && len(published) > 0 && !o.Force {
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
			if err := s.cache.Apply(ctx, account, res.Delta.Changes, now); err != nil {
				return err
			}
			st.Generation++
			res.Published = len(res.Delta.Changes)
		}
		fillStatus(&st, account, decisions)
		st.LastSyncAt, st.LastFullSyncAt = now.Truncate(time.Second), now.Truncate(time.Second)
		return s.cache.PutStatus(ctx, st)
	})
	return res, err
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

package webui

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/entitlement/console"
	"github.com/dirsync/dirsync/internal/entitlement/history"
	"github.com/dirsync/dirsync/internal/entitlement/store"
	"github.com/dirsync/dirsync/internal/mailaddr"
	"github.com/dirsync/dirsync/internal/sync/apimux"
	"github.com/dirsync/dirsync/internal/sync/engine"
)

// pageSize is how many accounts the overview shows per page.
const pageSize = 50

// accountRow is one account of the overview.
type accountRow struct {
	ID, Kind   string
	Full, Incr *engine.Report
	LastSync   time.Time
	Users      int
	Pro, Basic int
	Denied     int
	Hold       *accesscache.Hold
	Failing    bool
	Running    *engine.Progress
	Owner      string
}

type accountsPage struct {
	Now            time.Time
	Rows           []accountRow
	Total, Matched int
	Q, State, Sort string
	Page, Pages    int
	Holding        int
	FailingCount   int
}

// accounts is the overview: every account, filtered, sorted and paged on
// the server (5,000 accounts cost one pipelined read of their status
// records).
func (u *ui) accounts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	pg := accountsPage{Now: u.o.Now(), Q: strings.TrimSpace(q.Get("q")), State: q.Get("state"), Sort: q.Get("sort"), Page: 1}
	if n, err := strconv.Atoi(q.Get("page")); err == nil && n > 0 {
		pg.Page = n
	}
	ids := u.o.Passes.Accounts()
	statuses, err := u.o.Cache.Statuses(r.Context(), ids)
	if err != nil {
		u.o.Log.Warn("console: status records unreadable", zap.Error(err))
		u.fail(w, r, http.StatusServiceUnavailable, "the access cache cannot be read right now: "+err.Error())
		return
	}
	pg.Total = len(ids)
	for _, id := range ids {
		row := u.row(r.Context(), id, statuses)
		if row.Hold != nil {
			pg.Holding++
		}
		if row.Failing {
			pg.FailingCount++
		}
		if pg.Q != "" && !strings.Contains(strings.ToLower(id), strings.ToLower(pg.Q)) && !strings.Contains(row.Kind, strings.ToLower(pg.Q)) {
			continue
		}
		switch pg.State {
		case "hold":
			if row.Hold == nil {
				continue
			}
		case "failing":
			if !row.Failing {
				continue
			}
		case "running":
			if row.Running == nil {
				continue
			}
		}
		pg.Rows = append(pg.Rows, row)
	}
	sortRows(pg.Rows, pg.Sort)
	pg.Matched = len(pg.Rows)
	pg.Pages = max(1, (pg.Matched+pageSize-1)/pageSize)
	pg.Page = min(pg.Page, pg.Pages)
	from := (pg.Page - 1) * pageSize
	pg.Rows = pg.Rows[from:min(from+pageSize, len(pg.Rows))]
	l := layout{Title: "Accounts", Page: pg}
	for _, row := range pg.Rows {
		if row.Running != nil {
			l.Refresh = 2
		}
	}
	u.render(w, r, http.StatusOK, "accounts", l)
}

func (u *ui) row(ctx context.Context, id string, statuses map[string]accesscache.AccountStatus) accountRow {
	row := accountRow{ID: id}
	if u.o.Kind != nil {
		row.Kind = u.o.Kind(id)
	}
	last := u.o.Passes.LastReports(id)
	if rep, ok := last[engine.ModeFull]; ok {
		row.Full = &rep
	}
	if rep, ok := last[engine.ModeIncremental]; ok {
		row.Incr = &rep
	}
	latest := row.Full
	if row.Incr != nil && (latest == nil || row.Incr.StartedAt.After(latest.StartedAt)) {
		latest = row.Incr
	}
	row.Failing = latest != nil && latest.Result == engine.ResultFailed
	if st, ok := statuses[id]; ok {
		row.LastSync, row.Users, row.Hold = st.LastSyncAt, st.Users, st.Hold
		row.Pro, row.Basic = st.ByPermission[entitlement.PermissionPro], st.ByPermission[entitlement.PermissionBasic]
		row.Denied = st.Users - row.Pro - row.Basic
	}
	if u.o.Progress != nil {
		if p, ok := u.o.Progress(id); ok {
			row.Running = &p
		}
	}
	if u.o.Owner != nil {
		row.Owner = u.o.Owner(ctx, id)
	}
	return row
}

func sortRows(rows []accountRow, by string) {
	state := func(r accountRow) int {
		switch {
		case r.Hold != nil:
			return 0
		case r.Failing:
			return 1
		case r.Running != nil:
			return 2
		}
		return 3
	}
	slices.SortStableFunc(rows, func(a, b accountRow) int {
		switch by {
		case "last": // stalest first
			if c := a.LastSync.Compare(b.LastSync); c != 0 {
				return c
			}
		case "users":
			if a.Users != b.Users {
				return b.Users - a.Users
			}
		case "state":
			if c := state(a) - state(b); c != 0 {
				return c
			}
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// diffShown bounds the diff a page lists (the counts are always whole).
const diffShown = 500

type accountPage struct {
	Now      time.Time
	ID, Kind string
	Status   *accesscache.AccountStatus
	Full     *engine.Report
	Incr     *engine.Report
	Runs     []engine.Report
	Progress *engine.Progress
	Owner    string
	Problems []string
	Skipped  map[string]int
	Changes  []store.ChangeEvent
	// The hold, and the diff under review: from the held pass, or from a
	// dry run the page ran on request (Review).
	Hold       *accesscache.Hold
	Diff       []engine.DiffEntry
	DiffTotal  int
	DiffHash   string
	DiffFrom   string // "held pass", "dry run"
	DiffMoved  bool   // a release found the directory moved: this is the new diff
	CanRelease bool
	CanWrite   bool
	// Console accounts: their users.
	Console bool
	Members []console.Member
	// Lookup is the account's own user lookup (a tenant's).
	LookupPath string
}

// account is one account's page.
func (u *ui) account(w http.ResponseWriter, r *http.Request) {
	pg, ok := u.accountData(w, r)
	if !ok {
		return
	}
	if r.URL.Query().Get("review") == "1" && pg.Hold != nil {
		ctx, cancel := context.WithTimeout(r.Context(), u.o.SyncTimeout)
		defer cancel()
		rep, err := u.o.Passes.Run(ctx, pg.ID, engine.Options{Mode: engine.ModeFull, DryRun: true, Actor: apimux.PrincipalOf(r.Context()).Credential})
		if err != nil {
			pg.Problems = append(pg.Problems, "the dry run failed: "+err.Error())
		} else {
			pg.setDiff(rep.Diff, rep.DiffHash, "dry run")
		}
	}
	l := layout{Title: pg.ID, Page: pg}
	if pg.Progress != nil {
		l.Refresh = 2
	}
	u.render(w, r, http.StatusOK, "account", l)
}

func (pg *accountPage) setDiff(diff []engine.DiffEntry, hash, from string) {
	pg.DiffTotal, pg.DiffHash, pg.DiffFrom = len(diff), hash, from
	pg.Diff = diff[:min(len(diff), diffShown)]
}

// accountData gathers an account's page; it answers the request itself
// when it cannot (unknown account, unreadable cache).
func (u *ui) accountData(w http.ResponseWriter, r *http.Request) (*accountPage, bool) {
	id := r.PathValue("id")
	if !slices.Contains(u.o.Passes.Accounts(), id) {
		u.fail(w, r, http.StatusNotFound, fmt.Sprintf("no account %s", id))
		return nil, false
	}
	p := apimux.PrincipalOf(r.Context())
	pg := &accountPage{Now: u.o.Now(), ID: id, CanWrite: u.o.Credentials.Admits(p, apimux.AccountWrite, id), LookupPath: "/ui/accounts/" + id + "/lookup"}
	if u.o.Kind != nil {
		pg.Kind = u.o.Kind(id)
	}
	st, found, err := u.o.Cache.Status(r.Context(), id)
	if err != nil {
		u.fail(w, r, http.StatusServiceUnavailable, "the access cache cannot be read right now: "+err.Error())
		return nil, false
	}
	if found {
		pg.Status, pg.Hold = &st, st.Hold
	}
	last := u.o.Passes.LastReports(id)
	if rep, ok := last[engine.ModeFull]; ok {
		pg.Full = &rep
	}
	if rep, ok := last[engine.ModeIncremental]; ok {
		pg.Incr = &rep
	}
	if u.o.Recent != nil {
		pg.Runs = u.o.Recent(id)
	}
	if u.o.Progress != nil {
		if pr, ok := u.o.Progress(id); ok {
			pg.Progress = &pr
		}
	}
	if u.o.Owner != nil {
		pg.Owner = u.o.Owner(r.Context(), id)
	}
	for _, rep := range []*engine.Report{pg.Full, pg.Incr} {
		if rep == nil {
			continue
		}
		for _, pr := range rep.Problems {
			if !slices.Contains(pg.Problems, pr.Message) {
				pg.Problems = append(pg.Problems, pr.Message)
			}
		}
		if len(rep.Stats.Skipped) > 0 && pg.Skipped == nil {
			pg.Skipped = rep.Stats.Skipped
		}
	}
	if pg.Hold != nil {
		// The held pass's diff, if this replica ran it (the latest held
		// report); otherwise the page offers a dry run.
		var held *engine.Report
		for _, rep := range []*engine.Report{pg.Full, pg.Incr} {
			if rep != nil && rep.Result == engine.ResultHeld && rep.DiffHash != "" && (held == nil || rep.StartedAt.After(held.StartedAt)) {
				held = rep
			}
		}
		if held != nil {
			pg.setDiff(held.Diff, held.DiffHash, "held pass")
		}
		pg.CanRelease = pg.CanWrite
	}
	if changes, err := u.o.Cache.RecentChanges(r.Context(), id, 50); err == nil {
		pg.Changes = changes
	}
	if pg.Kind == "console" && u.o.Console != nil {
		pg.Console = true
		page, err := u.o.Console.Members(r.Context(), id, console.ListOptions{Limit: 200})
		if err != nil {
			pg.Problems = append(pg.Problems, "the account's users cannot be listed: "+err.Error())
		}
		pg.Members = page.Members
	}
	return pg, true
}

// release publishes exactly the diff the administrator reviewed (its hash
// is in the form). If the directory moved since, nothing is forced and the
// page shows the new diff to review.
func (u *ui) release(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	hash := strings.TrimSpace(r.PostForm.Get("diff_hash"))
	if hash == "" {
		u.fail(w, r, http.StatusBadRequest, "the release form carries no reviewed diff: review the diff first")
		return
	}
	if st, found, err := u.o.Cache.Status(r.Context(), id); err != nil || !found || st.Hold == nil {
		redirect(w, r, "/ui/accounts/"+id, "error", "No hold is pending for this account: nothing to release.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), u.o.SyncTimeout)
	defer cancel()
	rep, err := u.o.Passes.Run(ctx, id, engine.Options{Mode: engine.ModeFull, Force: true, ReviewedDiffHash: hash, Actor: apimux.PrincipalOf(r.Context()).Credential})
	switch {
	case errors.Is(err, engine.ErrDiffChanged):
		pg, ok := u.accountData(w, r)
		if !ok {
			return
		}
		pg.setDiff(rep.Diff, rep.DiffHash, "the directory now")
		pg.DiffMoved = true
		u.render(w, r, http.StatusConflict, "account", layout{Title: id, Page: pg, FlashKind: "error",
			Flash: "Nothing was released: the directory changed since you reviewed the diff. Review the new diff below."})
	case err != nil:
		redirect(w, r, "/ui/accounts/"+id, "error", "The release failed: "+err.Error())
	default:
		redirect(w, r, "/ui/accounts/"+id, "ok", fmt.Sprintf("Released: %d changes published.", rep.Changes.Published))
	}
}

// users runs a console account action: invite, set the permission,
// suspend, unsuspend or remove ';'-separated addresses.
func (u *ui) users(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if u.o.Console == nil {
		u.fail(w, r, http.StatusNotFound, "no console accounts are configured")
		return
	}
	emails := splitEmails(r.PostForm.Get("emails"))
	if len(emails) == 0 {
		redirect(w, r, "/ui/accounts/"+id, "error", "Give at least one email address (several separated by ;).")
		return
	}
	actor := apimux.PrincipalOf(r.Context()).Credential
	if a := strings.TrimSpace(r.PostForm.Get("actor")); a != "" {
		actor += " (" + a + ")"
	}
	perm := r.PostForm.Get("permission")
	var res console.Result
	var err error
	switch action := r.PostForm.Get("action"); action {
	case "invite":
		res, err = u.o.Console.Invite(r.Context(), actor, id, emails, perm)
	case "permission":
		res, err = u.o.Console.SetPermission(r.Context(), actor, id, emails, perm)
	case "suspend":
		res, err = u.o.Console.Suspend(r.Context(), actor, id, emails)
	case "unsuspend":
		res, err = u.o.Console.Unsuspend(r.Context(), actor, id, emails)
	case "remove":
		res, err = u.o.Console.Remove(r.Context(), actor, id, emails)
	default:
		u.fail(w, r, http.StatusBadRequest, fmt.Sprintf("unknown action %q", action))
		return
	}
	if err != nil {
		redirect(w, r, "/ui/accounts/"+id, "error", err.Error())
		return
	}
	msg := fmt.Sprintf("%s: %d applied, %d unchanged, %d rejected.", res.Action, res.Applied, res.Unchanged, res.Rejected)
	kind := "ok"
	if rej := res.FirstRejection(); rej != nil {
		msg += " " + rej.Message
		kind = "error"
	}
	redirect(w, r, "/ui/accounts/"+id, kind, msg)
}

func splitEmails(s string) []string {
	var out []string
	for _, e := range strings.FieldsFunc(s, func(r rune) bool { return r == ';' || r == ',' || r == '\n' || r == '\r' }) {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

type lookupPage struct {
	Email    string
	Account  string // the tenant's account, for an account's own lookup
	Decision *entitlement.Decision
	Status   *accesscache.AccountStatus
	History  []history.Entry
	Error    string
	Action   string
	Now      time.Time
}

// lookup shows a user's decision as sign-in reads it, why, and its access
// history. An account's own lookup (/ui/accounts/{id}/lookup) shows only
// that account's users.
func (u *ui) lookup(w http.ResponseWriter, r *http.Request) {
	account := r.PathValue("id")
	pg := lookupPage{Email: strings.TrimSpace(r.URL.Query().Get("email")), Account: account, Action: "/ui/lookup", Now: u.o.Now()}
	if account != "" {
		pg.Action = "/ui/accounts/" + account + "/lookup"
	}
	if pg.Email != "" {
		u.lookupInto(r.Context(), &pg)
	}
	u.render(w, r, http.StatusOK, "lookup", layout{Title: "User lookup", Page: pg})
}

func (u *ui) lookupInto(ctx context.Context, pg *lookupPage) {
	email := mailaddr.Normalize(pg.Email)
	if email == "" {
		pg.Error = fmt.Sprintf("%q is not an email address", pg.Email)
		return
	}
	d, err := u.o.Cache.Check(ctx, email)
	if err != nil {
		pg.Error = "the access cache cannot be read right now (sign-in is denied meanwhile): " + err.Error()
		return
	}
	if pg.Account != "" && d.Account != pg.Account {
		// A tenant learns nothing about other accounts' users.
		d = entitlement.Denied(email, entitlement.ReasonUnknownUser)
		d.Account = pg.Account
	}
	pg.Decision = &d
	if d.Account != "" {
		if st, ok, err := u.o.Cache.Status(ctx, d.Account); err == nil && ok {
			pg.Status = &st
		}
	}
	if u.o.History != nil {
		account := d.Account
		if account == "" {
			account = pg.Account
		}
		if account != "" {
			if entries, err := u.o.History.User(ctx, account, email, 50, 0); err == nil {
				pg.History = entries
			} else {
				pg.Error = "the access history cannot be read right now: " + err.Error()
			}
		}
	}
}

package scim

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dirsync/dirsync/internal/pgstore"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// schemaTables are the SCIM tables in the shared database (pgstore); the
// migration lock key is 17, the issue that added them (console 0, history 1).
var schemaTables = pgstore.Schema{Table: "scim_schema_migrations", Lock: 17, Files: migrationFiles, Dir: "migrations"}

// tombstoneRetention is how long a deleted resource is kept so that
// incremental reads see the deletion. A Source older than half of it
// reads everything again.
const tombstoneRetention = 7 * 24 * time.Hour

// Store is the system of record of every SCIM account: users, groups,
// memberships and tokens in PostgreSQL (the database of console accounts,
// console.postgres_dsn). It is safe for concurrent use, and several Stores
// (replicas) may share one database: an account's writes are serialised
// by a row lock on its scim_accounts row.
type Store struct {
	pool *pgxpool.Pool
	now  func() time.Time
}

// Open applies the SCIM migrations to the database of pool and returns
// the store; the caller owns the pool. now is the clock (nil: time.Now).
func Open(ctx context.Context, pool *pgxpool.Pool, now func() time.Time) (*Store, error) {
	if err := pgstore.Migrate(ctx, pool, schemaTables); err != nil {
		return nil, fmt.Errorf("scim: migrate database: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	return &Store{pool: pool, now: now}, nil
}

// newID returns a random (version 4) UUID.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// validID reports whether s is a UUID in its canonical text form (any
// case): anything else is no resource's id.
func validID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// table names a kind's table and its name column.
func table(kind string) (tbl, nameKey string) {
	if kind == groupType.Name {
		return "scim_groups", "display_name_key"
	}
	return "scim_users", "user_name_key"
}

// write runs fn in a transaction of account; fn calls bump once, after
// locking every row it changes, to take the account's next version (and
// its lock, held to commit). Deadlocks and serialisation failures are
// retried.
func (s *Store) write(ctx context.Context, account string, fn func(tx pgx.Tx, bump func() (int64, error)) error) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			bump := func() (int64, error) {
				var seq int64
				err := tx.QueryRow(ctx, `INSERT INTO scim_accounts (account_id, seq) VALUES ($1, 1)
					ON CONFLICT (account_id) DO UPDATE SET seq = scim_accounts.seq + 1 RETURNING seq`, account).Scan(&seq)
				return seq, err
			}
			return fn(tx, bump)
		})
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || (pe.Code != "40P01" && pe.Code != "40001") {
			return err
		}
	}
	return err
}

// uniqueViolation reports a unique index refusing a write.
func uniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

func preconditionFailed(current int64) *Error {
	return &Error{Status: http.StatusPreconditionFailed, ScimType: TypeInvalidVers,
		Detail: fmt.Sprintf("If-Match does not match the resource's version %s: read it again and retry", ETag(current))}
}

// Create stores a new User or Group from a POST body.
func (s *Store) Create(ctx context.Context, account, kind string, body []byte) (*Resource, error) {
	rt := typeOf(kind)
	d, e := parseResource(rt, body)
	if e != nil {
		return nil, e
	}
	r := &Resource{ID: newID(), Kind: rt.Name, Doc: d}
	err := s.write(ctx, account, func(tx pgx.Tx, bump func() (int64, error)) error {
		now := s.now().UTC()
		r.Created, r.Modified = now, now
		if rt == userType {
			return s.putUser(ctx, tx, account, r, nil, bump, true)
		}
		return s.putGroup(ctx, tx, account, r, nil, bump, true)
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// putUser writes r (new, or replacing old) after deriving its columns.
func (s *Store) putUser(ctx context.Context, tx pgx.Tx, account string, r *Resource, old *Resource, bump func() (int64, error), create bool) error {
	if _, ok := r.Doc["active"]; !ok {
		// A new user without active is active (RFC 7643 leaves it to the
		// service provider); a replace without it keeps the current
		// value, so a PUT that leaves active out never lifts a
		// suspension.
		active := true
		if old != nil {
			if b, ok := old.Doc["active"].(bool); ok {
				active = b
			}
		}
		r.Doc["active"] = active
	}
	f, e := deriveUser(r.Doc)
	if e != nil {
		return e
	}
	raw, err := json.Marshal(r.Doc)
	if err != nil {
		return err
	}
	seq, err := bump()
	if err != nil {
		return err
	}
	r.Version = seq
	if create {
		_, err = tx.Exec(ctx, `INSERT INTO scim_users (account_id, id, user_name, user_name_key, external_id, active, email, doc, version, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)`,
			account, r.ID, f.userName, foldASCII(f.userName), f.externalID, *f.active, f.email, raw, seq, r.Created)
	} else {
		_, err = tx.Exec(ctx, `UPDATE scim_users SET user_name = $3, user_name_key = $4, external_id = $5, active = $6, email = $7, doc = $8, version = $9, updated_at = $10
			WHERE account_id = $1 AND id = $2`,
			account, r.ID, f.userName, foldASCII(f.userName), f.externalID, *f.active, f.email, raw, seq, r.Modified)
	}
	if uniqueViolation(err) {
		return &Error{Status: http.StatusConflict, ScimType: TypeUniqueness,
			Detail: fmt.Sprintf("userName %q is already taken in this account (compared case-insensitively)", f.userName)}
	}
	return err
}

// putGroup writes r (new, or replacing old) and its member rows.
func (s *Store) putGroup(ctx context.Context, tx pgx.Tx, account string, r *Resource, old *Resource, bump func() (int64, error), create bool) error {
	name, externalID, members, e := deriveGroup(r.Doc)
	if e != nil {
		return e
	}
	members, err := s.resolveMembers(ctx, tx, account, r.ID, members)
	if err != nil {
		return err
	}
	r.Members = members
	raw, err := json.Marshal(r.Doc)
	if err != nil {
		return err
	}
	seq, err := bump()
	if err != nil {
		return err
	}
	r.Version = seq
	if create {
		_, err = tx.Exec(ctx, `INSERT INTO scim_groups (account_id, id, display_name, display_name_key, external_id, doc, version, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)`, account, r.ID, name, foldASCII(name), externalID, raw, seq, r.Created)
	} else {
		_, err = tx.Exec(ctx, `UPDATE scim_groups SET display_name = $3, display_name_key = $4, external_id = $5, doc = $6, version = $7, updated_at = $8
			WHERE account_id = $1 AND id = $2`, account, r.ID, name, foldASCII(name), externalID, raw, seq, r.Modified)
	}
	if err != nil {
		return err
	}
	var before []Member
	if old != nil {
		before = old.Members
	}
	add, remove := diffMembers(before, members)
	return writeMembers(ctx, tx, account, r.ID, add, remove)
}

// diffMembers returns the members of next not in prev, and of prev not in
// next.
func diffMembers(prev, next []Member) (add, remove []Member) {
	had := make(map[string]bool, len(prev))
	for _, m := range prev {
		had[m.ID] = true
	}
	has := make(map[string]bool, len(next))
	for _, m := range next {
		has[m.ID] = true
		if !had[m.ID] {
			add = append(add, m)
		}
	}
	for _, m := range prev {
		if !has[m.ID] {
			remove = append(remove, m)
		}
	}
	return add, remove
}

func writeMembers(ctx context.Context, tx pgx.Tx, account, groupID string, add, remove []Member) error {
	if len(remove) > 0 {
		ids := make([]string, len(remove))
		for i, m := range remove {
			ids[i] = m.ID
		}
		if _, err := tx.Exec(ctx, `DELETE FROM scim_members WHERE account_id = $1 AND group_id = $2 AND member_id = ANY($3::uuid[])`,
			account, groupID, ids); err != nil {
			return err
		}
	}
	if len(add) > 0 {
		ids, types := make([]string, len(add)), make([]string, len(add))
		for i, m := range add {
			ids[i], types[i] = m.ID, m.Type
		}
		if _, err := tx.Exec(ctx, `INSERT INTO scim_members (account_id, group_id, member_id, member_type)
			SELECT $1, $2, m, t FROM unnest($3::uuid[], $4::text[]) AS x(m, t) ON CONFLICT DO NOTHING`,
			account, groupID, ids, types); err != nil {
			return err
		}
	}
	return nil
}

// resolveMembers checks that every member is a User or Group of the
// account (and fills in its type); an unknown id, a wrong type or the
// group itself is refused with the ids named. Duplicates are dropped.
func (s *Store) resolveMembers(ctx context.Context, tx pgx.Tx, account, groupID string, members []Member) ([]Member, error) {
	if len(members) == 0 {
		return nil, nil
	}
	ids := make([]string, 0, len(members))
	seen := make(map[string]bool, len(members))
	out := make([]Member, 0, len(members))
	for _, m := range members {
		if !validID(m.ID) {
			return nil, badRequest(TypeInvalidValue, "member %q is not the id of a User or Group of this account", m.ID)
		}
		m.ID = strings.ToLower(m.ID)
		if m.ID == groupID {
			return nil, badRequest(TypeInvalidValue, "a group cannot be a member of itself")
		}
		if !seen[m.ID] {
			seen[m.ID] = true
			ids = append(ids, m.ID)
			out = append(out, m)
		}
	}
	rows, err := tx.Query(ctx, `SELECT id::text, 'User' FROM scim_users WHERE account_id = $1 AND id = ANY($2::uuid[]) AND NOT deleted
		UNION ALL SELECT id::text, 'Group' FROM scim_groups WHERE account_id = $1 AND id = ANY($2::uuid[]) AND NOT deleted`, account, ids)
	if err != nil {
		return nil, err
	}
	typeOf := make(map[string]string, len(ids))
	for rows.Next() {
		var id, t string
		if err := rows.Scan(&id, &t); err != nil {
			rows.Close()
			return nil, err
		}
		typeOf[id] = t
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var unknown []string
	for i := range out {
		t := typeOf[out[i].ID]
		switch {
		case t == "":
			unknown = append(unknown, out[i].ID)
		case out[i].Type != "" && out[i].Type != t:
			return nil, badRequest(TypeInvalidValue, "member %s is a %s, not a %s", out[i].ID, t, out[i].Type)
		}
		out[i].Type = t
	}
	if len(unknown) > 0 {
		more := ""
		if len(unknown) > 5 {
			more = fmt.Sprintf(" and %d more", len(unknown)-5)
			unknown = unknown[:5]
		}
		return nil, badRequest(TypeInvalidValue, "members %s%s are not Users or Groups of this account: provision them first", strings.Join(unknown, ", "), more)
	}
	return out, nil
}

// Get returns one resource.
func (s *Store) Get(ctx context.Context, account, kind, id string) (*Resource, error) {
	return s.get(ctx, s.pool, account, typeOf(kind), id, false)
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// get reads a resource (FOR UPDATE when lock is set, inside a write).
func (s *Store) get(ctx context.Context, q querier, account string, rt *resourceType, id string, lock bool) (*Resource, error) {
	if !validID(id) {
		return nil, notFound(rt.Name, id)
	}
	tbl, _ := table(rt.Name)
	sql := `SELECT id::text, doc, version, created_at, updated_at FROM ` + tbl + ` WHERE account_id = $1 AND id = $2 AND NOT deleted`
	if lock {
		sql += " FOR UPDATE"
	}
	r := &Resource{Kind: rt.Name}
	var raw []byte
	err := q.QueryRow(ctx, sql, account, id).Scan(&r.ID, &raw, &r.Version, &r.Created, &r.Modified)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound(rt.Name, id)
	}
	if err != nil {
		return nil, err
	}
	if r.Doc, err = decodeDoc(raw); err != nil {
		return nil, err
	}
	if rt == groupType {
		ms, err := membersOfGroups(ctx, q, account, []string{r.ID})
		if err != nil {
			return nil, err
		}
		r.Members = ms[r.ID]
	}
	return r, nil
}

func decodeDoc(raw []byte) (doc, error) {
	d, e := decodeJSON(raw)
	if e != nil {
		return nil, fmt.Errorf("stored resource: %s", e.Detail)
	}
	return d, nil
}

// membersOfGroups reads the member rows of groups.
func membersOfGroups(ctx context.Context, q querier, account string, groups []string) (map[string][]Member, error) {
	rows, err := q.Query(ctx, `SELECT group_id::text, member_id::text, member_type FROM scim_members
		WHERE account_id = $1 AND group_id = ANY($2::uuid[]) ORDER BY group_id, member_id`, account, groups)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]Member{}
	for rows.Next() {
		var g string
		var m Member
		if err := rows.Scan(&g, &m.ID, &m.Type); err != nil {
			return nil, err
		}
		out[g] = append(out[g], m)
	}
	return out, rows.Err()
}

// Replace replaces a resource with a PUT body (RFC 7644 §3.5.1). ifMatch,
// when not zero, is the version the client read (If-Match).
func (s *Store) Replace(ctx context.Context, account, kind, id string, body []byte, ifMatch int64) (*Resource, error) {
	rt := typeOf(kind)
	d, e := parseResource(rt, body)
	if e != nil {
		return nil, e
	}
	var r *Resource
	err := s.write(ctx, account, func(tx pgx.Tx, bump func() (int64, error)) error {
		old, err := s.get(ctx, tx, account, rt, id, true)
		if err != nil {
			return err
		}
		if ifMatch != 0 && ifMatch != old.Version {
			return preconditionFailed(old.Version)
		}
		r = &Resource{ID: old.ID, Kind: rt.Name, Doc: d, Created: old.Created, Modified: s.now().UTC()}
		if rt == userType {
			return s.putUser(ctx, tx, account, r, old, bump, false)
		}
		return s.putGroup(ctx, tx, account, r, old, bump, false)
	})
	return r, err
}

// Patch applies a PatchOp body (RFC 7644 §3.5.2). A Group PATCH that only
// adds or removes members is applied to the member rows directly; it
// returns the group without its members (Members nil).
func (s *Store) Patch(ctx context.Context, account, kind, id string, body []byte, ifMatch int64) (*Resource, error) {
	rt := typeOf(kind)
	ops, e := parsePatch(body)
	if e != nil {
		return nil, e
	}
	if rt == groupType {
		if mc, ok := memberOnly(ops); ok {
			return s.patchMembers(ctx, account, id, mc, ifMatch)
		}
	}
	var r *Resource
	err := s.write(ctx, account, func(tx pgx.Tx, bump func() (int64, error)) error {
		old, err := s.get(ctx, tx, account, rt, id, true)
		if err != nil {
			return err
		}
		if ifMatch != 0 && ifMatch != old.Version {
			return preconditionFailed(old.Version)
		}
		d := deepCopy(old.Doc)
		if rt == groupType {
			ms := make([]any, 0, len(old.Members))
			for _, m := range old.Members {
				ms = append(ms, map[string]any{"value": m.ID, "type": m.Type})
			}
			if len(ms) > 0 {
				d["members"] = ms
			}
		}
		if e := applyPatch(rt, d, ops); e != nil {
			return e
		}
		r = &Resource{ID: old.ID, Kind: rt.Name, Doc: d, Created: old.Created, Modified: s.now().UTC()}
		if rt == userType {
			if sameDoc(old.Doc, d) {
				*r = *old // nothing changed: no new version, no pass
				return nil
			}
			return s.putUser(ctx, tx, account, r, old, bump, false)
		}
		return s.putGroup(ctx, tx, account, r, old, bump, false)
	})
	return r, err
}

// patchMembers applies member additions and removals to a group's rows.
func (s *Store) patchMembers(ctx context.Context, account, id string, mc memberChange, ifMatch int64) (*Resource, error) {
	if !validID(id) {
		return nil, notFound(groupType.Name, id)
	}
	r := &Resource{Kind: groupType.Name}
	err := s.write(ctx, account, func(tx pgx.Tx, bump func() (int64, error)) error {
		var raw []byte
		err := tx.QueryRow(ctx, `SELECT id::text, doc, version, created_at FROM scim_groups WHERE account_id = $1 AND id = $2 AND NOT deleted FOR UPDATE`,
			account, id).Scan(&r.ID, &raw, &r.Version, &r.Created)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound(groupType.Name, id)
		}
		if err != nil {
			return err
		}
		if ifMatch != 0 && ifMatch != r.Version {
			return preconditionFailed(r.Version)
		}
		if r.Doc, err = decodeDoc(raw); err != nil {
			return err
		}
		add, err := s.resolveMembers(ctx, tx, account, r.ID, mc.add)
		if err != nil {
			return err
		}
		var remove []Member
		for _, m := range mc.remove {
			if validID(m.ID) { // an id that is no member's is nothing to remove
				remove = append(remove, Member{ID: strings.ToLower(m.ID)})
			}
		}
		seq, err := bump()
		if err != nil {
			return err
		}
		r.Version, r.Modified = seq, s.now().UTC()
		if _, err := tx.Exec(ctx, `UPDATE scim_groups SET version = $3, updated_at = $4 WHERE account_id = $1 AND id = $2`,
			account, r.ID, seq, r.Modified); err != nil {
			return err
		}
		return writeMembers(ctx, tx, account, r.ID, add, remove)
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

func deepCopy(d doc) doc {
	b, _ := json.Marshal(d)
	out, _ := decodeDoc(b)
	return out
}

func sameDoc(a, b doc) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// Delete removes a resource (RFC 7644 §3.6) and its memberships.
func (s *Store) Delete(ctx context.Context, account, kind, id string, ifMatch int64) error {
	rt := typeOf(kind)
	tbl, _ := table(rt.Name)
	return s.write(ctx, account, func(tx pgx.Tx, bump func() (int64, error)) error {
		old, err := s.get(ctx, tx, account, rt, id, true)
		if err != nil {
			return err
		}
		if ifMatch != 0 && ifMatch != old.Version {
			return preconditionFailed(old.Version)
		}
		// Lock the groups whose member lists change before taking the
		// account's version (every write locks rows first: no deadlock).
		rows, err := tx.Query(ctx, `SELECT id::text FROM scim_groups WHERE account_id = $1 AND NOT deleted
			AND id IN (SELECT group_id FROM scim_members WHERE account_id = $1 AND member_id = $2) ORDER BY id FOR UPDATE`, account, old.ID)
		if err != nil {
			return err
		}
		parents, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		seq, err := bump()
		if err != nil {
			return err
		}
		now := s.now().UTC()
		if _, err := tx.Exec(ctx, `UPDATE `+tbl+` SET deleted = true, version = $3, updated_at = $4 WHERE account_id = $1 AND id = $2`,
			account, old.ID, seq, now); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM scim_members WHERE account_id = $1 AND (member_id = $2 OR group_id = $2)`, account, old.ID); err != nil {
			return err
		}
		if len(parents) > 0 {
			_, err = tx.Exec(ctx, `UPDATE scim_groups SET version = $3, updated_at = $4 WHERE account_id = $1 AND id = ANY($2::uuid[])`,
				account, parents, seq, now)
		}
		return err
	})
}

// ListOptions are a list request's query (RFC 7644 §3.4.2).
type ListOptions struct {
	// Filter is the filter expression ("" for all).
	Filter string
	// StartIndex is 1-based (values below 1 mean 1).
	StartIndex int
	// Count is the page size (negative means 0; 0 with CountSet means
	// totalResults only).
	Count int
	// WithMembers loads Group members (false when excludedAttributes
	// leaves them out).
	WithMembers bool
}

// DefaultCount and MaxCount bound a list page.
const (
	DefaultCount = 100
	MaxCount     = 1000
)

// ListResult is one page of a list.
type ListResult struct {
	Total      int
	StartIndex int
	Resources  []*Resource
}

// List returns one page of the resources of kind that match the filter,
// oldest first.
func (s *Store) List(ctx context.Context, account, kind string, o ListOptions) (*ListResult, error) {
	rt := typeOf(kind)
	tbl, _ := table(rt.Name)
	if o.StartIndex < 1 {
		o.StartIndex = 1
	}
	o.Count = max(min(o.Count, MaxCount), 0)
	res := &ListResult{StartIndex: o.StartIndex}
	var f *Filter
	if strings.TrimSpace(o.Filter) != "" {
		pf, err := ParseFilter(rt.Name, o.Filter)
		if err != nil {
			return nil, err
		}
		f = pf
	}
	base := `SELECT id::text, doc, version, created_at, updated_at FROM ` + tbl + ` WHERE account_id = $1 AND NOT deleted`
	var rows []*Resource
	var err error
	switch {
	case f == nil:
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM `+tbl+` WHERE account_id = $1 AND NOT deleted`, account).Scan(&res.Total); err != nil {
			return nil, err
		}
		if o.Count == 0 {
			return res, nil
		}
		rows, err = s.scan(ctx, rt, base+` ORDER BY created_at, id OFFSET $2 LIMIT $3`, account, o.StartIndex-1, o.Count)
	default:
		terms, indexed := f.hints()
		if indexed {
			where, args := hintClause(terms, account)
			if where == "" {
				return res, nil // only ids that are no UUID: nothing matches
			}
			rows, err = s.scan(ctx, rt, base+` AND (`+where+`) ORDER BY created_at, id`, args...)
		} else {
			rows, err = s.scan(ctx, rt, base+` ORDER BY created_at, id`, account)
		}
	}
	if err != nil {
		return nil, err
	}
	if rt == groupType && (o.WithMembers || f != nil) && len(rows) > 0 {
		ids := make([]string, len(rows))
		for i, r := range rows {
			ids[i] = r.ID
		}
		ms, err := membersOfGroups(ctx, s.pool, account, ids)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			r.Members = ms[r.ID]
		}
	}
	if f == nil {
		res.Resources = rows
		return res, nil
	}
	matched := rows[:0]
	for _, r := range rows {
		if f.Match(r) {
			matched = append(matched, r)
		}
	}
	res.Total = len(matched)
	from := min(o.StartIndex-1, len(matched))
	res.Resources = matched[from:min(from+o.Count, len(matched))]
	return res, nil
}

// hintClause is the SQL condition of index terms, with its arguments
// ($1 is the account).
func hintClause(terms []indexTerm, account string) (string, []any) {
	byColumn := map[string][]string{}
	for _, t := range terms {
		if t.column == "id" && !validID(t.value) {
			continue
		}
		byColumn[t.column] = append(byColumn[t.column], t.value)
	}
	args := []any{account}
	var parts []string
	cols := make([]string, 0, len(byColumn))
	for c := range byColumn {
		cols = append(cols, c)
	}
	slices.Sort(cols)
	for _, c := range cols {
		args = append(args, byColumn[c])
		cast := "::text[]"
		if c == "id" {
			cast = "::uuid[]"
		}
		parts = append(parts, fmt.Sprintf("%s = ANY($%d%s)", c, len(args), cast))
	}
	return strings.Join(parts, " OR "), args
}

func (s *Store) scan(ctx context.Context, rt *resourceType, sql string, args ...any) ([]*Resource, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Resource
	for rows.Next() {
		r := &Resource{Kind: rt.Name}
		var raw []byte
		if err := rows.Scan(&r.ID, &raw, &r.Version, &r.Created, &r.Modified); err != nil {
			return nil, err
		}
		if r.Doc, err = decodeDoc(raw); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

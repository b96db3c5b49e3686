// Package registry stores the accounts created through the accounts API
// and the tenant tokens that manage them, in PostgreSQL: each account's
// accounts[] document (validated by the caller with the config schema),
// its inline directory secrets sealed with secretbox, and a version every
// replica polls to apply changes within a second or two.
package registry

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dirsync/dirsync/internal/pgstore"
	"github.com/dirsync/dirsync/internal/secretbox"
)

// ErrNoKey is returned when a secret must be sealed or opened and no
// console.secret_key_file is configured.
var ErrNoKey = errors.New("directory secrets need console.secret_key_file (a 32-byte key) to be stored")

// Record is one stored account.
type Record struct {
	ID string `json:"id"`
	// Doc is the accounts[] document without secret values.
	Doc json.RawMessage `json:"doc"`
	// Secrets are the account's inline secrets by field path (e.g.
	// "directory.ldap.bind_password"), opened. Never serialised.
	Secrets   map[string]string `json:"-"`
	CreatedBy string            `json:"created_by"`
	CreatedAt time.Time         `json:"created_at"`
	UpdatedBy string            `json:"updated_by"`
	UpdatedAt time.Time         `json:"updated_at"`
	Version   int64             `json:"version"`
}

// Store is the registry. Safe for concurrent use; replicas share it.
type Store struct {
	pool *pgxpool.Pool
	keys *secretbox.Keyring // nil: no secret may be stored
	now  func() time.Time
}

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Open migrates the registry's tables and returns the store. keys seals
// secrets (nil when console.secret_key_file is not configured).
func Open(ctx context.Context, pool *pgxpool.Pool, keys *secretbox.Keyring) (*Store, error) {
	if err := pgstore.Migrate(ctx, pool, pgstore.Schema{Table: "registry_schema_migrations", Lock: 2, Files: migrationFiles, Dir: "migrations"}); err != nil {
		return nil, fmt.Errorf("account registry: migrate: %w", err)
	}
	return &Store{pool: pool, keys: keys, now: time.Now}, nil
}

// aad binds a sealed value to its account.
func aad(id string) string { return "registry/" + id + "/secrets" }

func (s *Store) seal(id string, secrets map[string]string) ([]byte, error) {
	if len(secrets) == 0 {
		return nil, nil
	}
	if s.keys == nil {
		return nil, ErrNoKey
	}
	b, err := json.Marshal(secrets)
	if err != nil {
		return nil, err
	}
	return s.keys.Seal(b, aad(id))
}

func (s *Store) open(id string, sealed []byte) (map[string]string, error) {
	if len(sealed) == 0 {
		return map[string]string{}, nil
	}
	if s.keys == nil {
		return nil, ErrNoKey
	}
	b, err := s.keys.Open(sealed, aad(id))
	if err != nil {
		return nil, fmt.Errorf("account %s: %w", id, err)
	}
	out := map[string]string{}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("account %s: sealed secrets: %w", id, err)
	}
	return out, nil
}

// tick bumps the registry clock in tx and returns the new version.
func tick(ctx context.Context, tx pgx.Tx) (int64, error) {
	var v int64
	err := tx.QueryRow(ctx, "UPDATE registry_clock SET version = version + 1 RETURNING version").Scan(&v)
	return v, err
}

// Put creates or replaces account id with doc. Secrets given replace those
// stored for the same fields; with keepOthers, stored secrets of fields
// not given are kept (a tenant changes its bindings without sending its
// password again). It reports whether the account was created.
func (s *Store) Put(ctx context.Context, id string, doc []byte, secrets map[string]string, keepOthers bool, actor string) (created bool, err error) {
	now := s.now().UTC()
	err = pgstore.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		var sealed []byte
		err := tx.QueryRow(ctx, "SELECT secrets FROM registry_accounts WHERE id = $1 FOR UPDATE", id).Scan(&sealed)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			created = true
		case err != nil:
			return err
		}
		merged := map[string]string{}
		if keepOthers && !created {
			if merged, err = s.open(id, sealed); err != nil {
				return err
			}
		}
		for k, v := range secrets {
			merged[k] = v
		}
		sealedNew, err := s.seal(id, merged)
		if err != nil {
			return err
		}
		v, err := tick(ctx, tx)
		if err != nil {
			return err
		}
		if created {
			_, err = tx.Exec(ctx, `INSERT INTO registry_accounts (id, doc, secrets, created_by, created_at, updated_by, updated_at, version)
				VALUES ($1, $2, $3, $4, $5, $4, $5, $6)`, id, doc, sealedNew, actor, now, v)
		} else {
			_, err = tx.Exec(ctx, `UPDATE registry_accounts SET doc = $2, secrets = $3, updated_by = $4, updated_at = $5, version = $6 WHERE id = $1`,
				id, doc, sealedNew, actor, now, v)
		}
		return err
	})
	if err != nil {
		return false, fmt.Errorf("account registry: put %s: %w", id, err)
	}
	return created, nil
}

const selectAccount = "SELECT id, doc, secrets, created_by, created_at, updated_by, updated_at, version FROM registry_accounts"

func (s *Store) scan(row pgx.Row, withSecrets bool) (Record, error) {
	var r Record
	var sealed []byte
	if err := row.Scan(&r.ID, &r.Doc, &sealed, &r.CreatedBy, &r.CreatedAt, &r.UpdatedBy, &r.UpdatedAt, &r.Version); err != nil {
		return r, err
	}
	r.CreatedAt, r.UpdatedAt = r.CreatedAt.UTC(), r.UpdatedAt.UTC()
	if withSecrets {
		sec, err := s.open(r.ID, sealed)
		if err != nil {
			return r, err
		}
		r.Secrets = sec
	} else if len(sealed) > 0 {
		r.Secrets = map[string]string{} // present, not opened
	}
	return r, nil
}

// Get returns account id with its secrets opened; ok is false when it does
// not exist.
func (s *Store) Get(ctx context.Context, id string) (Record, bool, error) {
	r, err := s.scan(s.pool.QueryRow(ctx, selectAccount+" WHERE id = $1", id), true)
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("account registry: get %s: %w", id, err)
	}
	return r, true, nil
}

// List returns every stored account, by id, with secrets opened.
func (s *Store) List(ctx context.Context) ([]Record, error) {
	rows, err := s.pool.Query(ctx, selectAccount+" ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("account registry: list: %w", err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		r, err := s.scan(rows, true)
		if err != nil {
			return nil, fmt.Errorf("account registry: list: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Delete removes account id and revokes its tokens; ok is false when it did
// not exist.
func (s *Store) Delete(ctx context.Context, id string) (ok bool, err error) {
	err = pgstore.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "DELETE FROM registry_accounts WHERE id = $1", id)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		ok = true
		if _, err := tx.Exec(ctx, "UPDATE registry_tokens SET revoked_at = $2 WHERE account_id = $1 AND revoked_at IS NULL", id, s.now().UTC()); err != nil {
			return err
		}
		_, err = tick(ctx, tx)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("account registry: delete %s: %w", id, err)
	}
	return ok, nil
}

// Version is the registry's clock: it changes with every write, so a
// replica that saw the same version has nothing to apply.
func (s *Store) Version(ctx context.Context) (int64, error) {
	var v int64
	if err := s.pool.QueryRow(ctx, "SELECT version FROM registry_clock").Scan(&v); err != nil {
		return 0, fmt.Errorf("account registry: version: %w", err)
	}
	return v, nil
}

// Reseal re-seals every account's secrets that were sealed with a key
// other than the primary one (a key rotation) and returns how many it
// re-sealed.
func (s *Store) Reseal(ctx context.Context) (int, error) {
	if s.keys == nil {
		return 0, nil
	}
	rows, err := s.pool.Query(ctx, "SELECT id, secrets FROM registry_accounts WHERE secrets IS NOT NULL")
	if err != nil {
		return 0, fmt.Errorf("account registry: reseal: %w", err)
	}
	stale := map[string][]byte{}
	for rows.Next() {
		var id string
		var sealed []byte
		if err := rows.Scan(&id, &sealed); err != nil {
			rows.Close()
			return 0, err
		}
		if s.keys.Stale(sealed) {
			stale[id] = sealed
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	n := 0
	for id, sealed := range stale {
		plain, err := s.keys.Open(sealed, aad(id))
		if err != nil {
			return n, fmt.Errorf("account registry: reseal %s: %w", id, err)
		}
		fresh, err := s.keys.Seal(plain, aad(id))
		if err != nil {
			return n, err
		}
		tag, err := s.pool.Exec(ctx, "UPDATE registry_accounts SET secrets = $2 WHERE id = $1 AND secrets = $3", id, fresh, sealed)
		if err != nil {
			return n, fmt.Errorf("account registry: reseal %s: %w", id, err)
		}
		n += int(tag.RowsAffected())
	}
	return n, nil
}

// Token is a tenant token as issued: Secret is shown once.
type Token struct {
	ID        string     `json:"id"`
	Account   string     `json:"account"`
	Name      string     `json:"name"`
	Secret    string     `json:"token,omitempty"`
	CreatedBy string     `json:"created_by"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

func hashToken(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// IssueToken creates a tenant token for account and returns it, with its
// secret, once. The secret is stored only as its SHA-256 (256 random bits:
// a fast hash is enough).
func (s *Store) IssueToken(ctx context.Context, account, name, actor string) (Token, error) {
	idPart, err := randomHex(8)
	if err != nil {
		return Token{}, err
	}
	secretPart, err := randomHex(32)
	if err != nil {
		return Token{}, err
	}
	t := Token{ID: "tok_" + idPart, Account: account, Name: name, CreatedBy: actor, CreatedAt: s.now().UTC()}
	t.Secret = "dst_" + account + "_" + secretPart
	_, err = s.pool.Exec(ctx, `INSERT INTO registry_tokens (id, account_id, hash, name, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)`,
		t.ID, account, hashToken(t.Secret), name, actor, t.CreatedAt)
	if err != nil {
		return Token{}, fmt.Errorf("account registry: issue token: %w", err)
	}
	return t, nil
}

// RevokeToken revokes a token of account; ok is false when no such live
// token exists.
func (s *Store) RevokeToken(ctx context.Context, account, id string) (bool, error) {
	tag, err := s.pool.Exec(ctx, "UPDATE registry_tokens SET revoked_at = $3 WHERE id = $1 AND account_id = $2 AND revoked_at IS NULL", id, account, s.now().UTC())
	if err != nil {
		return false, fmt.Errorf("account registry: revoke token: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// Tokens lists an account's tokens (without secrets), newest first.
func (s *Store) Tokens(ctx context.Context, account string) ([]Token, error) {
	rows, err := s.pool.Query(ctx, "SELECT id, account_id, name, created_by, created_at, revoked_at FROM registry_tokens WHERE account_id = $1 ORDER BY created_at DESC", account)
	if err != nil {
		return nil, fmt.Errorf("account registry: tokens: %w", err)
	}
	defer rows.Close()
	out := []Token{}
	for rows.Next() {
		var t Token
		if err := rows.Scan(&t.ID, &t.Account, &t.Name, &t.CreatedBy, &t.CreatedAt, &t.RevokedAt); err != nil {
			return nil, err
		}
		t.CreatedAt = t.CreatedAt.UTC()
		out = append(out, t)
	}
	return out, rows.Err()
}

// ResolveToken finds the live token whose secret is secret: its account
// and id; ok is false for an unknown or revoked token.
func (s *Store) ResolveToken(ctx context.Context, secret string) (account, id string, ok bool, err error) {
	err = s.pool.QueryRow(ctx, "SELECT account_id, id FROM registry_tokens WHERE hash = $1 AND revoked_at IS NULL", hashToken(secret)).Scan(&account, &id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, fmt.Errorf("account registry: resolve token: %w", err)
	}
	return account, id, true, nil
}

package scim

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// TokenPrefix starts every SCIM token dirsync issues, so that a leaked
// one is recognisable (secret scanners, logs).
const TokenPrefix = "dsscim_"

// Errors of the token calls.
var (
	// ErrUnknownToken: no live token has this secret.
	ErrUnknownToken = errors.New("unknown or revoked SCIM token")
	// ErrTokenNotFound: the account has no token with this id.
	ErrTokenNotFound = errors.New("no such SCIM token")
)

// TokenInfo describes an issued token; the secret is never kept.
type TokenInfo struct {
	ID        string     `json:"id"`
	Account   string     `json:"account"`
	CreatedAt time.Time  `json:"created_at"`
	CreatedBy string     `json:"created_by"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// HashToken is the stored form of a token secret. Tokens are 256 random
// bits, so one SHA-256 is enough (a slow password hash protects guessable
// secrets; these are not).
func HashToken(secret string) [32]byte { return sha256.Sum256([]byte(secret)) }

// IssueToken makes a new token for account and stores its hash. The
// secret is returned once and never again.
func (s *Store) IssueToken(ctx context.Context, account, actor string) (string, TokenInfo, error) {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	secret := TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	h := HashToken(secret)
	info := TokenInfo{ID: newID(), Account: account, CreatedAt: s.now().UTC().Truncate(time.Microsecond), CreatedBy: actor}
	_, err := s.pool.Exec(ctx, `INSERT INTO scim_tokens (id, account_id, sha256, created_at, created_by) VALUES ($1, $2, $3, $4, $5)`,
		info.ID, account, h[:], info.CreatedAt, actor)
	if err != nil {
		return "", TokenInfo{}, fmt.Errorf("store SCIM token: %w", err)
	}
	return secret, info, nil
}

// Tokens lists account's tokens, newest first.
func (s *Store) Tokens(ctx context.Context, account string) ([]TokenInfo, error) {
	rows, err := s.pool.Query(ctx, `SELECT id::text, account_id, created_at, created_by, revoked_at FROM scim_tokens
		WHERE account_id = $1 ORDER BY created_at DESC, id`, account)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (TokenInfo, error) {
		var t TokenInfo
		err := row.Scan(&t.ID, &t.Account, &t.CreatedAt, &t.CreatedBy, &t.RevokedAt)
		return t, err
	})
}

// RevokeToken revokes one of account's tokens; it stops working at once
// on every replica (each request looks its hash up).
func (s *Store) RevokeToken(ctx context.Context, account, id string) error {
	if !validID(id) {
		return ErrTokenNotFound
	}
	tag, err := s.pool.Exec(ctx, `UPDATE scim_tokens SET revoked_at = coalesce(revoked_at, $3) WHERE account_id = $1 AND id = $2`,
		account, id, s.now().UTC())
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return ErrTokenNotFound
	}
	return nil
}

// Authenticate returns the account and token id of a live token secret,
// or ErrUnknownToken.
func (s *Store) Authenticate(ctx context.Context, secret string) (account, id string, err error) {
	h := HashToken(secret)
	err = s.pool.QueryRow(ctx, `SELECT account_id, id::text FROM scim_tokens WHERE sha256 = $1 AND revoked_at IS NULL`, h[:]).Scan(&account, &id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", ErrUnknownToken
	}
	if err != nil {
		return "", "", fmt.Errorf("look up SCIM token: %w", err)
	}
	return account, id, nil
}

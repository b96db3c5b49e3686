package scimapi

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/dirsync/dirsync/internal/directory/scim"
	"github.com/dirsync/dirsync/internal/sync/apimux"
)

// StaticToken is a SCIM token from the config (directory.scim.token_file
// or token_env): only its hash is kept.
type StaticToken struct {
	Account string
	// Source names the config field, as the principal's credential.
	Source string
	SHA256 [32]byte
}

// NewStaticToken hashes a configured token secret; an empty or blank
// secret is an error, never "no token".
func NewStaticToken(account, source, secret string) (StaticToken, error) {
	if _, err := apimux.NewToken(source, secret); err != nil {
		return StaticToken{}, err
	}
	return StaticToken{Account: account, Source: source, SHA256: scim.HashToken(secret)}, nil
}

// TokenStore looks issued tokens up by their hash (scim.Store).
type TokenStore interface {
	Authenticate(ctx context.Context, secret string) (account, id string, err error)
}

// Authenticator checks SCIM bearer tokens: the configured ones (compared
// by hash in constant time) and those issued through the API (looked up
// by hash in PostgreSQL on every request, so a revocation holds at once on
// every replica). It is the apimux.SCIMAuthenticator of the API.
type Authenticator struct {
	Static []StaticToken
	Store  TokenStore // nil: configured tokens only
}

var _ apimux.SCIMAuthenticator = (*Authenticator)(nil)

// AuthenticateSCIM implements apimux.SCIMAuthenticator.
func (a *Authenticator) AuthenticateSCIM(ctx context.Context, token string) (account, credential string, err error) {
	h := scim.HashToken(token)
	found := -1
	for i := range a.Static {
		if subtle.ConstantTimeCompare(h[:], a.Static[i].SHA256[:]) == 1 {
			found = i
		}
	}
	if found >= 0 {
		return a.Static[found].Account, a.Static[found].Source, nil
	}
	if a.Store == nil {
		return "", "", apimux.ErrUnknownCredential
	}
	account, id, err := a.Store.Authenticate(ctx, token)
	switch {
	case errors.Is(err, scim.ErrUnknownToken):
		return "", "", fmt.Errorf("%w: %w", apimux.ErrUnknownCredential, err)
	case err != nil:
		return "", "", err
	}
	return account, "scim token " + id, nil
}

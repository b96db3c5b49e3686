package apimux

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
)

// Token is a bearer credential. Only NewToken and GenerateToken make one,
// and NewToken refuses an empty secret: "no token" is never spelled as an
// empty string. The zero Token matches nothing.
type Token struct {
	source string
	secret []byte
}

// NewToken returns the token secret, which came from source (a config
// path such as api.admin_token_file, named in refusals and as the
// principal's credential). An empty or blank secret is an error.
func NewToken(source, secret string) (Token, error) {
	if strings.TrimSpace(secret) == "" {
		return Token{}, fmt.Errorf("%s: the token is empty; write a long random string into it (e.g. openssl rand -hex 32)", source)
	}
	return Token{source: source, secret: []byte(secret)}, nil
}

// GenerateToken returns a new random token (256 bits) named source.
func GenerateToken(source string) (Token, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return Token{}, fmt.Errorf("generate %s: %w", source, err)
	}
	return Token{source: source, secret: []byte(hex.EncodeToString(b))}, nil
}

// Equal reports whether t and u hold the same secret (in constant time).
func (t Token) Equal(u Token) bool {
	return len(t.secret) == len(u.secret) && subtle.ConstantTimeCompare(t.secret, u.secret) == 1
}

// IsZero reports whether t is the zero Token.
func (t Token) IsZero() bool { return len(t.secret) == 0 }

// Source names where the token came from.
func (t Token) Source() string { return t.source }

// matches compares in constant time; the zero Token matches nothing.
func (t Token) matches(got string) bool {
	return len(t.secret) > 0 && subtle.ConstantTimeCompare([]byte(got), t.secret) == 1
}

// Loopback is the proof that the API listens on a loopback address only.
// Only LoopbackListener makes one, from the listener's real address; the
// zero value proves nothing. It is the only way a route that normally
// needs a token can be opened (Credentials.OpenSignIn, OpenAdminReads).
type Loopback struct{ addr string }

// LoopbackListener returns the proof for addr, the address a listener is
// really bound to (net.Listener.Addr), or an error when it is not a
// loopback address (0.0.0.0 and :: are not).
func LoopbackListener(addr net.Addr) (Loopback, error) {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok || !tcp.IP.IsLoopback() {
		return Loopback{}, fmt.Errorf("%v is not a loopback address", addr)
	}
	return Loopback{addr: tcp.String()}, nil
}

func (l Loopback) proven() bool { return l.addr != "" }

// OktaHookSecret is one account's Okta event hook credential: Okta sends Secret
// in Header.
type OktaHookSecret struct {
	Account string
	Header  string
	Secret  Token
}

// Credentials are everything a caller can present. Their zero value
// admits no one to any route but Public ones.
type Credentials struct {
	// Admin is the global administrator's token (api.admin_token_file, or
	// the daemon's per-start token): every state-changing route needs it.
	Admin Token
	// Reader is the sign-in read token (api.read_token_file), if any.
	Reader Token
	// OpenSignIn, when proven, lets any caller of the loopback listener
	// read decisions without a token (no read token is configured).
	OpenSignIn Loopback
	// OpenAdminReads, when proven, lets any caller of the loopback
	// listener call read-only admin routes without a token (neither an
	// admin nor a read token is configured). State-changing routes still
	// need Admin.
	OpenAdminReads Loopback
	// OktaHooks are the accounts' event hook secrets.
	OktaHooks []OktaHookSecret
	// SCIM, when set, checks the bearer tokens of SCIM routes (each token
	// belongs to one account). It is asked only on SCIM routes, after the
	// admin and read tokens.
	SCIM SCIMAuthenticator
	// Tenants, when set, checks tenant tokens.
	Tenants TenantAuthenticator
}

// TenantAuthenticator resolves a tenant token (issued by POST
// /v1/accounts/{id}/tokens; they start with TenantTokenPrefix) into its
// account and its id (the audit actor). An unknown or revoked token is
// ErrUnknownCredential; another error means it could not be checked.
type TenantAuthenticator interface {
	AuthenticateTenant(ctx context.Context, token string) (account, credential string, err error)
}

// TenantTokenPrefix starts every tenant token, so other bearer tokens
// never cost a lookup.
const TenantTokenPrefix = "dst_"

// SCIMAuthenticator resolves a SCIM bearer token into the one account it
// belongs to and the name of the credential (for audit), or returns an
// error wrapping ErrUnknownCredential. Any other error means the token
// could not be checked (its store is down): the request is answered 503,
// so the identity provider retries instead of disabling provisioning.
type SCIMAuthenticator interface {
	AuthenticateSCIM(ctx context.Context, token string) (account, credential string, err error)
}

// ErrUnknownCredential: the token is no one's (unknown or revoked).
var ErrUnknownCredential = errors.New("unknown or revoked credential")

// Kind is what a principal is.
type Kind int

const (
	// Anonymous presented no credential dirsync knows.
	Anonymous Kind = iota
	// GlobalAdmin presented the admin token.
	GlobalAdmin
	// SignInReader presented the read token.
	SignInReader
	// HookSender presented the event hook secret of Accounts.
	HookSender
	// SCIMClient presented the SCIM token of its one account (an identity
	// provider pushing users and groups).
	SCIMClient
	// Tenant presented a tenant token: one account's administrator, who
	// may call that account's routes (/v1/accounts/{id}/…) and no other.
	Tenant
)

// Principal is who is calling, resolved from the request's credentials
// alone (never from a client-chosen header).
type Principal struct {
	Kind Kind
	// Credential names the credential presented (its Token.Source): the
	// actor an audit trail can record.
	Credential string
	// Accounts are the accounts the principal acts for (HookSender; next,
	// a tenant's account).
	Accounts []string
}

// Scope is what a route requires of its caller.
type Scope int

const (
	// Public routes answer anyone: health, readiness, metrics.
	Public Scope = iota
	// SignInRead is GET /v1/access: the read or admin token, or anyone
	// when OpenSignIn is proven.
	SignInRead
	// AdminRead routes read global state: the admin token, or anyone when
	// OpenAdminReads is proven.
	AdminRead
	// AdminWrite routes change state: the admin token, always.
	AdminWrite
	// AccountRead routes read the account named by the {id} path value:
	// as AdminRead, or a tenant token of that account.
	AccountRead
	// AccountWrite routes change the account named by {id}: as AdminWrite,
	// or a tenant token of that account.
	AccountWrite
	// OktaHook routes take Okta event hook deliveries: a hook secret.
	OktaHook
	// SCIM routes are one account's SCIM service provider, under
	// /scim/v2/{account}/: that account's SCIM token only. No token or an
	// unknown one is 401; any other credential (the admin token, the read
	// token, another account's SCIM token) is 403.
	SCIM
)

var scopeNames = map[Scope]string{
	Public: "public", SignInRead: "sign-in read", AdminRead: "admin read", AdminWrite: "admin write",
	AccountRead: "account read", AccountWrite: "account write", OktaHook: "okta hook", SCIM: "scim",
}

func (s Scope) String() string { return scopeNames[s] }

// StateChanging reports whether the scope's routes change state (and so
// always need a token).
func (s Scope) StateChanging() bool {
	return s == AdminWrite || s == AccountWrite || s == OktaHook || s == SCIM
}

// resolve finds the principal whose credential the request carries. The
// SCIM authenticator is asked on SCIM routes only; its error (other than
// an unknown token) is returned: the credential could not be checked.
func (c *Credentials) resolve(r *http.Request, s Scope, browser bool) (Principal, error) {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if browser {
		got = SessionOf(r)
		ok = got != ""
	}
	if ok {
		switch {
		case c.Admin.matches(got):
			return Principal{Kind: GlobalAdmin, Credential: c.Admin.source}, nil
		case c.Reader.matches(got):
			return Principal{Kind: SignInReader, Credential: c.Reader.source}, nil
		case s == SCIM && c.SCIM != nil && strings.TrimSpace(got) != "":
			account, credential, err := c.SCIM.AuthenticateSCIM(r.Context(), got)
			switch {
			case err == nil:
				return Principal{Kind: SCIMClient, Credential: credential, Accounts: []string{account}}, nil
			case !errors.Is(err, ErrUnknownCredential):
				return Principal{Kind: Anonymous}, err
			}
		case s != SCIM && c.Tenants != nil && strings.HasPrefix(got, TenantTokenPrefix):
			account, credential, err := c.Tenants.AuthenticateTenant(r.Context(), got)
			switch {
			case err == nil:
				return Principal{Kind: Tenant, Credential: credential, Accounts: []string{account}}, nil
			case !errors.Is(err, ErrUnknownCredential):
				return Principal{Kind: Anonymous}, err
			}
		}
	}
	var accounts []string
	for _, h := range c.OktaHooks {
		if h.Secret.matches(strings.TrimSpace(r.Header.Get(h.Header))) {
			accounts = append(accounts, h.Account)
		}
	}
	if len(accounts) > 0 {
		return Principal{Kind: HookSender, Credential: "okta event hook secret", Accounts: accounts}, nil
	}
	return Principal{Kind: Anonymous}, nil
}

// refused returns 0 when p may call a route of scope s, else the status
// to answer: 401 for a caller without a credential the route takes, 403
// for a known principal a SCIM route does not admit.
func (c *Credentials) refused(p Principal, s Scope, r *http.Request) int {
	if s == SCIM {
		switch {
		case p.Kind == SCIMClient && slices.Contains(p.Accounts, r.PathValue("account")):
			return 0
		case p.Kind == Anonymous:
			return http.StatusUnauthorized
		}
		return http.StatusForbidden
	}
	if p.Kind == Tenant {
		// A tenant may call its own account's routes, nothing else.
		if (s == AccountRead || s == AccountWrite) && slices.Contains(p.Accounts, r.PathValue("id")) {
			return 0
		}
		return http.StatusForbidden
	}
	if c.admits(p, s) {
		return 0
	}
	return http.StatusUnauthorized
}

// admits reports whether p may call a route of scope s.
func (c *Credentials) admits(p Principal, s Scope) bool {
	switch s {
	case Public:
		return true
	case SignInRead:
		return p.Kind == GlobalAdmin || p.Kind == SignInReader || c.OpenSignIn.proven()
	case AdminRead, AccountRead:
		return p.Kind == GlobalAdmin || c.OpenAdminReads.proven()
	case AdminWrite, AccountWrite:
		return p.Kind == GlobalAdmin
	case OktaHook:
		return p.Kind == HookSender
	}
	return false
}

// refusal tells a refused caller what to send.
func (c *Credentials) refusal(s Scope) string {
	switch s {
	case SignInRead:
		return "send Authorization: Bearer <token from api.read_token_file>"
	case OktaHook:
		return "unknown or missing event hook secret"
	case SCIM:
		return "send Authorization: Bearer <the account's SCIM token> (directory.scim.token_file, or one issued with POST /v1/accounts/{id}/scim/tokens); " +
			"a token of another account, the admin token and the read token are refused"
	}
	source := c.Admin.source
	if source == "" {
		source = "api.admin_token_file"
	}
	return "admin endpoint: send Authorization: Bearer <token from " + source + ">"
}

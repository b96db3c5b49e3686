// Package okta reads an Okta org's bound groups into a directory.Snapshot
// with github.com/okta/okta-sdk-golang/v2, and brings that snapshot up to
// date incrementally from Okta's change signals.
//
// The SDK is configured explicitly (see New): its response cache is off (it
// would serve list pages up to five minutes old), nothing is taken from
// ~/.okta/okta.yaml or OKTA_* environment variables, 429 retries and their
// back-off are bounded, every call has a deadline, and a custom transport
// bounds the SDK's unlimited retry of dropped connections and paces requests
// by X-Rate-Limit-Remaining/Reset.
//
// Failure rule: any error, exhausted retry or page cap fails the whole read;
// a Poller never returns partial data, and a failed read leaves its
// previous state untouched. A bound group that became empty is read as
// empty: judging it is the engine's job (it holds such a pass and still
// publishes the suspensions the same read found, see package engine).
//
// Errors: every error New and the Poller's methods return starts with
// "okta: ", once. Errors made below them (the transport, sentinels such as
// errMalformed) carry no prefix: they reach callers wrapped in one that
// does.
package okta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dirsync/dirsync/internal/mailaddr"

	oktasdk "github.com/okta/okta-sdk-golang/v2/okta"
	"github.com/okta/okta-sdk-golang/v2/okta/query"

	"github.com/dirsync/dirsync/internal/directory"
)

// Defaults for Options fields left zero.
const (
	DefaultPageSize       = 200
	DefaultMaxPages       = 1000
	DefaultRequestTimeout = 30 * time.Second
	DefaultMaxRetries     = 2
	DefaultMaxBackoff     = 30 * time.Second
	DefaultRateLimitShare = 0.5
	DefaultMaxDropped     = 3
	DefaultChangeOverlap  = time.Minute
	DefaultLogPageSize    = 1000
)

// Options configure a Poller.
type Options struct {
	// OrgURL is the org, e.g. "https://acme.okta.com"; a trailing slash is
	// removed.
	OrgURL string
	// Token is the API token (sent as "SSWS <token>"). It never appears in
	// errors.
	Token string
	// AllowHTTP permits an http:// OrgURL (local test servers only).
	AllowHTTP bool
	// Groups are the groups to read: every binding's group and the access
	// group, each an Okta group id or an exact group name (a name matching
	// several groups reads them all; the mapper reports the ambiguity).
	Groups []string
	// HTTPClient is the client to send requests with (tests pass the fake
	// server's). Default: a client with http.DefaultTransport's settings.
	// It is copied, not modified.
	HTTPClient *http.Client
	// PageSize is the limit of list requests. Default 200 (Okta's
	// recommended page size for users and group members).
	PageSize int
	// MaxPages caps the pages of one listing; more is an error, so a
	// paging loop can never run forever. Default 1000.
	MaxPages int
	// RequestTimeout bounds one API call, its 429 retries and back-off
	// included. Default 30s.
	RequestTimeout time.Duration
	// MaxRetries is how many times the SDK retries a call answered 429.
	// Default 2. Negative means no retry.
	MaxRetries int
	// MaxBackoff caps the SDK's wait before retrying a 429 (whole seconds).
	// Default 30s. Negative means retry at once (tests).
	MaxBackoff time.Duration
	// RateLimitShare is the largest share of each rate-limit window the
	// poller uses, counting every client's requests as Okta does: once
	// X-Rate-Limit-Remaining falls to (1-share)×limit, the poller waits for
	// the window to reset. Default 0.5.
	RateLimitShare float64
	// MaxDropped is how many dropped connections one API call tolerates
	// before failing. Default 3.
	MaxDropped int
	// ChangeOverlap is subtracted from the change cursors (lastUpdated,
	// lastMembershipUpdated, System Log since), because Okta's change
	// data is eventually consistent. Default 1m.
	ChangeOverlap time.Duration
}

func (o *Options) applyDefaults() {
	o.OrgURL = strings.TrimRight(strings.TrimSpace(o.OrgURL), "/")
	if o.PageSize <= 0 {
		o.PageSize = DefaultPageSize
	}
	if o.MaxPages <= 0 {
		o.MaxPages = DefaultMaxPages
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	switch {
	case o.MaxRetries == 0:
		o.MaxRetries = DefaultMaxRetries
	case o.MaxRetries < 0:
		o.MaxRetries = 0
	}
	switch {
	case o.MaxBackoff == 0:
		o.MaxBackoff = DefaultMaxBackoff
	case o.MaxBackoff < 0:
		o.MaxBackoff = 0
	}
	if o.RateLimitShare <= 0 || o.RateLimitShare > 1 {
		o.RateLimitShare = DefaultRateLimitShare
	}
	if o.MaxDropped <= 0 {
		o.MaxDropped = DefaultMaxDropped
	}
	if o.ChangeOverlap <= 0 {
		o.ChangeOverlap = DefaultChangeOverlap
	}
}

// Poller reads one Okta org. It is synchronous; its methods may be called
// from several goroutines but run one at a time.
type Poller struct {
	opts      Options
	source    string
	client    *oktasdk.Client
	transport *transport

	mu sync.Mutex
	// last is the state of the last successful read; nil before the first.
	last *state
}

// New builds a Poller. It makes no request.
func New(opts Options) (*Poller, error) {
	opts.applyDefaults()
	u, err := url.Parse(opts.OrgURL)
	switch {
	case opts.OrgURL == "" || err != nil || u.Host == "":
		return nil, fmt.Errorf("okta: org URL %q is not a URL like https://acme.okta.com", opts.OrgURL)
	case u.Scheme == "http" && !opts.AllowHTTP:
		return nil, errors.New("okta: an http:// org URL sends the token in clear; use https:// (or AllowHTTP for a local test server)")
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, fmt.Errorf("okta: org URL scheme %q is not https", u.Scheme)
	case strings.TrimSpace(opts.Token) == "":
		return nil, errors.New("okta: API token is empty")
	case len(opts.Groups) == 0:
		return nil, errors.New("okta: no groups to read")
	}

	var httpClient http.Client
	if opts.HTTPClient != nil {
		httpClient = *opts.HTTPClient
	}
	base := httpClient.Transport
	if base == nil {
		base = http.DefaultTransport.(*http.Transport).Clone()
	}
	tr := &transport{base: base, share: opts.RateLimitShare, maxDropped: opts.MaxDropped}
	httpClient.Transport = tr
	if httpClient.Timeout == 0 {
		httpClient.Timeout = opts.RequestTimeout
	}

	seconds := func(d time.Duration) int64 { return int64(math.Ceil(d.Seconds())) }
	// Every setting the SDK would otherwise take from ~/.okta/okta.yaml,
	// the SDK's own .okta.yaml or OKTA_* variables is set here: explicit
	// setters are applied last and win.
	_, client, err := oktasdk.NewClient(context.Background(),
		oktasdk.WithOrgUrl(opts.OrgURL),
		oktasdk.WithToken(opts.Token),
		oktasdk.WithAuthorizationMode("SSWS"),
		oktasdk.WithClientId(""),
		oktasdk.WithScopes(nil),
		oktasdk.WithPrivateKey(""),
		oktasdk.WithPrivateKeyId(""),
		oktasdk.WithClientAssertion(""),
		oktasdk.WithCache(false),
		oktasdk.WithCacheTtl(0),
		oktasdk.WithCacheTti(0),
		oktasdk.WithProxyHost(""),
		oktasdk.WithProxyPort(0),
		oktasdk.WithProxyUsername(""),
		oktasdk.WithProxyPassword(""),
		oktasdk.WithTestingDisableHttpsCheck(opts.AllowHTTP),
		oktasdk.WithConnectionTimeout(seconds(opts.RequestTimeout)),
		oktasdk.WithRequestTimeout(seconds(opts.RequestTimeout)),
		oktasdk.WithRateLimitMaxRetries(int32(opts.MaxRetries)),
		oktasdk.WithRateLimitMaxBackOff(seconds(opts.MaxBackoff)),
		oktasdk.WithUserAgentExtra("dirsync"),
		oktasdk.WithHttpClientPtr(&httpClient),
	)
	if err != nil {
		return nil, fmt.Errorf("okta: configure client: %w", err)
	}
	return &Poller{opts: opts, source: "okta:" + u.Host, client: client, transport: tr}, nil
}

// Counters returns the request and pacing counters.
func (p *Poller) Counters() Counters { return p.transport.snapshot() }

// Stats returns the counters the metrics export.
func (p *Poller) Stats() directory.SourceStats {
	c := p.transport.snapshot()
	return directory.SourceStats{
		Requests: int64(c.Requests), RateLimited: int64(c.RateLimited),
		RateLimitRemaining: int64(c.RateLimitRemaining), EntriesRead: -1,
	}
}

// state is what a successful read leaves behind.
type state struct {
	snap *directory.Snapshot
	// groups are the resolved bound groups, in resolution order.
	groups []boundGroup
	// users holds every member of a bound group, by id.
	users map[string]member
	// cursor is the server time from which changes are looked for.
	cursor time.Time
	// logNext is the System Log next link ("" until the first
	// incremental read, which polls from cursor).
	logNext string
}

type boundGroup struct {
	id, name string
	members  []string // user ids, as listed
}

type member struct {
	status directory.Status
	// email and login are profile.email and profile.login normalised; ""
	// when not an address. build chooses the sign-in key from them.
	email, login string
	// created and changed are the user's created and lastUpdated in Unix
	// seconds (0: absent).
	created, changed int64
}

// Snapshot reads the bound groups and their members in full.
func (p *Poller) Snapshot(ctx context.Context) (*directory.Snapshot, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st, err := p.fullRead(ctx)
	if err != nil {
		return nil, err
	}
	p.last = st
	return st.snap, nil
}

func (p *Poller) fullRead(ctx context.Context) (*state, error) {
	p.transport.markRead()
	st := &state{users: map[string]member{}}
	seen := map[string]bool{}
	for _, ref := range p.opts.Groups {
		groups, err := p.resolveGroup(ctx, ref)
		if err != nil {
			return nil, err
		}
		for _, g := range groups {
			if seen[g.Id] {
				continue
			}
			seen[g.Id] = true
			bg := boundGroup{id: g.Id}
			if g.Profile != nil {
				bg.name = g.Profile.Name
			}
			if err := p.listMembers(ctx, &bg, st.users); err != nil {
				return nil, err
			}
			st.groups = append(st.groups, bg)
		}
	}
	st.cursor = p.cursorFrom(p.transport.readStart())
	st.snap = p.build(st)
	return st, nil
}

// cursorFrom turns the server time at a read's start into a change cursor.
func (p *Poller) cursorFrom(serverStart time.Time) time.Time {
	if serverStart.IsZero() {
		serverStart = time.Now()
	}
	return serverStart.Add(-p.opts.ChangeOverlap).UTC()
}

// oktaGroupID matches Okta group ids ("00g" and 17 more characters).
var oktaGroupID = regexp.MustCompile(`^00g[0-9A-Za-z]{17}$`)

// resolveGroup finds the groups a binding names: by id when ref looks like
// one, else (or when no group has that id) by exact name.
func (p *Poller) resolveGroup(ctx context.Context, ref string) ([]*oktasdk.Group, error) {
	if oktaGroupID.MatchString(ref) {
		cctx, cancel := p.callContext(ctx)
		g, _, err := p.client.Group.GetGroup(cctx, ref)
		cancel()
		switch {
		case err == nil && g != nil:
			return []*oktasdk.Group{g}, nil
		case !isNotFound(err):
			return nil, fmt.Errorf("okta: get group %s: %w", ref, describe(err))
		}
	}
	search := fmt.Sprintf(`profile.name eq "%s"`, strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(ref))
	found, err := listAll(ctx, p, "search groups", func(ctx context.Context) ([]*oktasdk.Group, *oktasdk.Response, error) {
		return p.client.Group.ListGroups(ctx, query.NewQueryParams(query.WithSearch(search), query.WithLimit(int64(p.opts.PageSize))))
	})
	if err != nil {
		return nil, err
	}
	var exact []*oktasdk.Group
	for _, g := range found {
		if g != nil && g.Profile != nil && g.Profile.Name == ref {
			exact = append(exact, g)
		}
	}
	if len(exact) == 0 {
		return nil, fmt.Errorf("okta: bound group %q not found by id or exact name", ref)
	}
	return exact, nil
}

func isNotFound(err error) bool {
	var oe *oktasdk.Error
	return errors.As(err, &oe) && oe.ErrorCode == "E0000007"
}

// listMembers lists a group's members into g.members and users.
func (p *Poller) listMembers(ctx context.Context, g *boundGroup, users map[string]member) error {
	list, err := listAll(ctx, p, "list members of group "+g.id, func(ctx context.Context) ([]*oktasdk.User, *oktasdk.Response, error) {
		return p.client.Group.ListGroupUsers(ctx, g.id, query.NewQueryParams(query.WithLimit(int64(p.opts.PageSize))))
	})
	if err != nil {
		return err
	}
	g.members = make([]string, 0, len(list))
	for _, u := range list {
		if u == nil || u.Id == "" {
			return fmt.Errorf("okta: group %s listed a member without an id", g.id)
		}
		g.members = append(g.members, u.Id)
		users[u.Id] = memberOf(u)
	}
	return nil
}

// memberOf maps an Okta user to its status, addresses and timestamps.
func memberOf(u *oktasdk.User) member {
	m := member{status: mapStatus(u.Status), created: unixOf(u.Created), changed: unixOf(u.LastUpdated)}
	if u.Profile != nil {
		if s, ok := (*u.Profile)["email"].(string); ok {
			m.email = mailaddr.Normalize(s)
		}
		if s, ok := (*u.Profile)["login"].(string); ok {
			m.login = mailaddr.Normalize(s)
		}
	}
	return m
}

func unixOf(t *time.Time) int64 {
	if t == nil || t.IsZero() {
		return 0
	}
	return t.Unix()
}

// addressHolders counts, per address, the users among ids whose
// profile.email or login it is (a user whose email is its login counts once).
func addressHolders(ids []string, users map[string]member) map[string]int {
	holders := make(map[string]int, len(ids))
	for _, id := range ids {
		m, ok := users[id]
		if !ok {
			continue
		}
		if m.email != "" {
			holders[m.email]++
		}
		if m.login != "" && m.login != m.email {
			holders[m.login]++
		}
	}
	return holders
}

// signInKey chooses m's sign-in email given addressHolders of every user
// read. profile.email is the key when no other user read has that address
// as its email or login; else login, which Okta keeps unique in an org (a
// user may be allowed to set profile.email to any address, so an email
// two users carry proves nothing about either). A user whose email is
// shared and whose login is not an address keeps the email: the mapper then
// denies it duplicate_identity unless one holder is an old disabled
// account. "" means no usable address.
func (m *member) signInKey(holders map[string]int) string {
	switch {
	case m.email != "" && holders[m.email] == 1:
		return m.email
	case m.login != "":
		return m.login
	}
	return m.email
}

// mapStatus maps Okta's user status to the directory status. A status this
// code does not know (Okta may add some) denies sign-in as inactive.
func mapStatus(s string) directory.Status {
	switch s {
	case "ACTIVE", "PASSWORD_EXPIRED":
		return directory.StatusActive
	case "SUSPENDED":
		return directory.StatusSuspended
	case "LOCKED_OUT", "RECOVERY":
		return directory.StatusLockedOut
	default: // DEPROVISIONED, STAGED, PROVISIONED and unknown states
		return directory.StatusInactive
	}
}

// callContext bounds one API call and carries its dropped-connection count.
func (p *Poller) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, p.opts.RequestTimeout)
	return withCall(ctx), cancel
}

// listAll runs first and follows next links, with a fresh slice per page
// (the SDK decodes into the slice it is given), a page cap and a
// repeated-cursor guard. It never returns a partial list.
func listAll[T any](ctx context.Context, p *Poller, what string, first func(context.Context) ([]T, *oktasdk.Response, error)) ([]T, error) {
	cctx, cancel := p.callContext(ctx)
	page, resp, err := first(cctx)
	cancel()
	var all []T
	seen := map[string]bool{}
	for pages := 1; ; pages++ {
		if err != nil {
			return nil, fmt.Errorf("okta: %s (page %d): %w", what, pages, describe(err))
		}
		if resp == nil {
			return nil, fmt.Errorf("okta: %s (page %d): no response", what, pages)
		}
		all = append(all, page...)
		if !resp.HasNextPage() {
			return all, nil
		}
		if pages >= p.opts.MaxPages {
			return nil, fmt.Errorf("okta: %s: more than %d pages; refusing a partial read", what, p.opts.MaxPages)
		}
		if seen[resp.NextPage] {
			return nil, fmt.Errorf("okta: %s: the server repeated a page cursor", what)
		}
		seen[resp.NextPage] = true
		var next []T
		cctx, cancel := p.callContext(ctx)
		resp, err = resp.Next(cctx, &next)
		cancel()
		page = next
	}
}

// build makes the snapshot of st: users sorted by id, each once however
// many bound groups hold them; users without a usable email are skipped.
func (p *Poller) build(st *state) *directory.Snapshot {
	snap := &directory.Snapshot{Source: p.source, FetchedAt: time.Now().UTC()}
	ids := make([]string, 0, len(st.users))
	for _, g := range st.groups {
		ids = append(ids, g.members...)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	index := make(map[string]int32, len(ids))
	holders := addressHolders(ids, st.users)
	noEmail := 0
	for _, id := range ids {
		m, ok := st.users[id]
		if !ok {
			continue
		}
		email := m.signInKey(holders)
		if email == "" {
			noEmail++
			continue
		}
		index[id] = int32(len(snap.Users))
		snap.Users = append(snap.Users, directory.User{ID: id, Email: email, Status: m.status, Created: m.created, Changed: m.changed})
	}
	snap.Skip("no_email", noEmail)
	for _, g := range st.groups {
		dg := directory.Group{Ref: g.id, Name: g.name, Members: []int32{}}
		for _, id := range g.members {
			if i, ok := index[id]; ok {
				dg.Members = append(dg.Members, i)
			}
		}
		snap.Groups = append(snap.Groups, dg)
	}
	return snap
}

// errMalformed marks an answer whose body is not the JSON the API
// documents (truncated or garbled).
var errMalformed = errors.New("malformed JSON in the response")

// describe names decoding failures, which the SDK returns as bare
// io.ErrUnexpectedEOF or *json.SyntaxError.
func describe(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &syntax) || errors.As(err, &typ) {
		return fmt.Errorf("%w: %w", errMalformed, err)
	}
	return err
}

// Package ldapdir polls Active Directory (directory.type: active_directory)
// and generic LDAP servers such as OpenLDAP (directory.type: ldap),
// producing a complete directory.Snapshot or an error. Incremental passes
// use go-ldap; full reads, nearly every entry dirsync reads, stream through
// package ldapwire, which decodes responses in place (go-ldap's packet tree
// was most of a full read's CPU).
//
// Reads are all-or-nothing: a failed bind, a network error, a timeout, a
// size- or time-limit result (even with entries already received), a
// disconnect mid-search, or a read that finds no user where users are
// expected is an error, never a partial snapshot. Entry semantics (which
// entries are users and groups, identity, email, account state, member
// resolution, primary groups, foreign principals) live in package
// ldapentry, shared with the LDIF source.
//
// Errors carry no package prefix: each says what failed (the option, the
// server URL, the search and page, the DN) and wraps its cause with %w;
// the caller adds the account. Result codes stay reachable as
// *ldap.Error (from go-ldap and from package ldapwire alike).
package ldapdir

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/directory/ldapentry"
)

// Default filters per directory type.
const (
	DefaultADUserFilter    = "(&(objectCategory=person)(objectClass=user))"
	DefaultADGroupFilter   = "(objectClass=group)"
	DefaultLDAPUserFilter  = "(|(objectClass=inetOrgPerson)(objectClass=person))"
	DefaultLDAPGroupFilter = "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup))"
)

// Options configures a Poller. Kind builds it from an account's ldap
// section.
type Options struct {
	// Type is TypeActiveDirectory or TypeLDAP.
	Type string
	// URLs are tried in order: ldaps://, or ldap:// with StartTLS, or plain
	// ldap:// only with AllowInsecure.
	URLs          []string
	StartTLS      bool
	AllowInsecure bool
	// Dialer, when set, makes the TCP connections (a netpolicy dialer for
	// accounts created through the API). Default: a plain net.Dialer.
	Dialer *net.Dialer
	// TLSConfig verifies the server (RootCAs from the account's ca_file);
	// nil uses the system roots. ServerName defaults to the URL's host.
	TLSConfig *tls.Config
	// BindDN and BindPassword: a simple bind; an empty password is refused
	// (it would be an unauthenticated bind that "succeeds").
	BindDN       string
	BindPassword string
	UserBaseDN   string
	GroupBaseDN  string
	// UserFilter and GroupFilter default per Type (see the Default*
	// constants).
	UserFilter  string
	GroupFilter string
	// EmailAttributes are read in order; default mail, userPrincipalName.
	EmailAttributes []string
	// DisabledAttribute/DisabledValue: generic LDAP disabled marker.
	DisabledAttribute string
	DisabledValue     string
	// PageSize is the RFC 2696 page size; default 1000.
	PageSize int
	// Timeout bounds dialing, each request (one page) and is sent as the
	// server-side time limit; default 30s. A timed-out connection is
	// closed, never reused.
	Timeout time.Duration
	// MaxEntries and MaxPages are the floors of the caps on one search
	// (see searchLimits): it may return at most max(MaxEntries, 4 x the
	// entries of the last good full read) entries in at most max(MaxPages,
	// 4 x its pages) pages. Defaults DefaultMaxEntries and
	// DefaultMaxPages.
	MaxEntries int
	MaxPages   int
	// Now is the clock stamped on snapshots; default time.Now. Account
	// expiry is evaluated by the mapper against its own clock.
	Now func() time.Time
	// Source names snapshots; default "<type>:<first URL>".
	Source string
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// ErrNoUsers is returned when a read finds no user entry at all: far more
// likely a wrong base DN, filter or permission than an empty directory.
var ErrNoUsers = errors.New("the read found no users")

// ErrAllUsersGone is returned when every user of the last snapshot has
// vanished (no user with an email left).
var ErrAllUsersGone = errors.New("the read returned no usable users where the last snapshot had users")

// Poller reads one directory. Snapshot and Incremental are synchronous and
// serialised by a mutex; the poller keeps its last read as the base for
// incremental passes.
type Poller struct {
	o  Options
	ad bool

	reader *ldapentry.Reader

	mu   sync.Mutex
	last *state
	// lastUsers and lastGroups size the next full read.
	lastUsers, lastGroups int
	// lastGood is what the searches of the last good full read returned:
	// the caps of later searches grow with it.
	lastGood searchCount

	// entriesRead counts entries received from the directory; requests
	// counts the operations sent (binds, StartTLS, search requests: one
	// per page).
	entriesRead, requests atomic.Int64
}

// EntriesRead returns how many entries the poller has received from the
// directory since it was created, over full and incremental reads: what
// an incremental pass costs the directory.
func (p *Poller) EntriesRead() int64 { return p.entriesRead.Load() }

// Stats returns the poller's counters (safe during a pass): Requests are
// the LDAP operations sent (binds, StartTLS and search requests, one per
// page), EntriesRead the entries received. LDAP has no rate limit.
func (p *Poller) Stats() directory.SourceStats {
	return directory.SourceStats{Requests: p.requests.Load(), EntriesRead: p.entriesRead.Load(), RateLimitRemaining: -1}
}

// New validates o and returns a poller. It does not connect.
func New(o Options) (*Poller, error) {
	switch o.Type {
	case TypeActiveDirectory, TypeLDAP:
	default:
		return nil, fmt.Errorf("directory type %q is not %s or %s", o.Type, TypeActiveDirectory, TypeLDAP)
	}
	if len(o.URLs) == 0 {
		return nil, errors.New("urls: none given; list the directory servers")
	}
	for _, raw := range o.URLs {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("urls: %q is not an ldap:// or ldaps:// URL", raw)
		}
		switch u.Scheme {
		case "ldaps":
			if o.StartTLS {
				return nil, fmt.Errorf("urls: %s already uses TLS; start_tls applies to ldap:// only", raw)
			}
		case "ldap":
			if !o.StartTLS && !o.AllowInsecure {
				return nil, fmt.Errorf("urls: %s would send the bind password in clear; use ldaps://, start_tls or allow_insecure", raw)
			}
		default:
			return nil, fmt.Errorf("urls: %q is not an ldap:// or ldaps:// URL", raw)
		}
	}
	if o.BindDN == "" || o.BindPassword == "" {
		return nil, errors.New("bind_dn and the bind password are required (an empty password is an unauthenticated bind)")
	}
	if o.UserBaseDN == "" || o.GroupBaseDN == "" {
		return nil, errors.New("user_base_dn and group_base_dn (or base_dn) are required")
	}
	ad := o.Type == TypeActiveDirectory
	if o.UserFilter == "" {
		o.UserFilter = DefaultLDAPUserFilter
		if ad {
			o.UserFilter = DefaultADUserFilter
		}
	}
	if o.GroupFilter == "" {
		o.GroupFilter = DefaultLDAPGroupFilter
		if ad {
			o.GroupFilter = DefaultADGroupFilter
		}
	}
	if len(o.EmailAttributes) == 0 {
		o.EmailAttributes = ldapentry.DefaultEmailAttributes()
	}
	o.EmailAttributes = slices.Clone(o.EmailAttributes)
	if o.PageSize <= 0 {
		o.PageSize = DefaultPageSize
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	if o.MaxPages <= 0 {
		o.MaxPages = DefaultMaxPages
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Source == "" {
		o.Source = o.Type + ":" + o.URLs[0]
	}
	reader := ldapentry.NewReader(ldapentry.Options{
		EmailAttributes:   o.EmailAttributes,
		DisabledAttribute: o.DisabledAttribute,
		DisabledValue:     o.DisabledValue,
	})
	return &Poller{o: o, ad: ad, reader: reader}, nil
}

// Snapshot reads the whole directory. The last read is kept until the new
// one succeeds (both are held during a full read in the daemon; a one-off
// sync has only one): when a full read fails, incremental passes continue
// from the last good state.
func (p *Poller) Snapshot(ctx context.Context) (*directory.Snapshot, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st, err := p.fullRead(ctx, "")
	if err != nil {
		// The previous state stays: incremental passes go on from it, so a
		// fault that breaks only full reads (a size limit, a huge group)
		// never stops suspensions from propagating.
		return nil, err
	}
	p.last = st
	return st.snap, nil
}

// Incremental brings the last snapshot up to date, reading only entries
// changed since the last read, and reports whether anything changed. It
// does a full read before any snapshot exists, when the server that
// answers is not the one the cursor belongs to, and (AD) when the DC's
// invocationId changed (restore from backup).
//
// AD: entries with uSNChanged above the highestCommittedUSN read before
// the previous pass; deletions are found as tombstones (Show Deleted
// control) in the same USN window. OpenLDAP: entries with modifyTimestamp
// at or after the newest one seen (one-second granularity: the overlap is
// re-read and compared). Deleted OpenLDAP entries and entries moved out
// of the base DN are not visible to an incremental query; the periodic
// full read (Snapshot, schedule.full) removes them. With OpenLDAP's refint
// overlay a deleted user also leaves its groups, which bumps the groups'
// modifyTimestamp, so the user loses its permissions at the next
// incremental pass.
func (p *Poller) Incremental(ctx context.Context) (*directory.Snapshot, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last == nil {
		st, err := p.fullRead(ctx, "")
		if err != nil {
			return nil, false, err
		}
		p.last = st
		return st.snap, true, nil
	}
	st, changed, fullFrom, err := p.incremental(ctx, p.last)
	if err != nil {
		return nil, false, err
	}
	if fullFrom != "" {
		p.last = nil
		if st, err = p.fullRead(ctx, fullFrom); err != nil {
			return nil, false, err
		}
		changed = true
	}
	p.last = st
	return st.snap, changed, nil
}

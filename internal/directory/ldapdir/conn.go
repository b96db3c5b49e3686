package ldapdir

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/dirsync/dirsync/internal/directory/ldapentry"
	"github.com/dirsync/dirsync/internal/directory/ldapwire"
)

// searchConn is one bound connection that runs searches: go-ldap's
// (session) or ldapwire's (wireSession, for the bulk reads of a full pass).
type searchConn interface {
	// searchPage runs req once and calls fn for every entry as it arrives;
	// it returns the paging cookie of the result (nil when none). The
	// entry is valid only during the call (its attribute values are not
	// reused): keep a clone.
	searchPage(ctx context.Context, req *ldap.SearchRequest, fn func(*ldapentry.Entry, []rangedAttr) error) ([]byte, error)
	// serverURL is the URL the connection was made to.
	serverURL() string
	Close()
}

// pagedConn is a searchConn that runs a whole paged search itself, reading
// ahead: the next page is requested as soon as a page's result arrives,
// while fn still works through its entries (ldapwire.SearchPaged), and at
// most maxPages are requested. endPage gets each page's cookie (empty
// after the last page); an error from it or fn ends the search, at most
// one request after that page.
type pagedConn interface {
	searchPages(ctx context.Context, req *ldap.SearchRequest, pageSize uint32, maxPages int, fn func(*ldapentry.Entry, []rangedAttr) error, endPage func(cookie []byte) error) error
}

// dialFunc connects to one URL, negotiates TLS and binds.
type dialFunc func(ctx context.Context, rawURL string) (searchConn, error)

// dialNet opens the TCP connection to rawURL, with TLS for ldaps://. It
// returns the connection, the TCP connection under it and the URL.
func (p *Poller) dialNet(ctx context.Context, rawURL string) (net.Conn, net.Conn, *url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%q is not a URL", rawURL)
	}
	host := u.Hostname()
	port := u.Port()
	if port == "" {
		port = "389"
		if u.Scheme == "ldaps" {
			port = "636"
		}
	}
	dctx, cancel := context.WithTimeout(ctx, p.o.Timeout)
	defer cancel()
	d := p.o.Dialer
	if d == nil {
		d = &net.Dialer{}
	}
	raw, err := d.DialContext(dctx, "tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("connect: %w", err)
	}
	if u.Scheme != "ldaps" {
		return raw, raw, u, nil
	}
	tc := tls.Client(raw, p.tlsConfig(host))
	if err := tc.HandshakeContext(dctx); err != nil {
		raw.Close()
		return nil, nil, nil, fmt.Errorf("tls handshake: %w", err)
	}
	return tc, raw, u, nil
}

// dial connects to one URL with go-ldap, negotiates TLS as configured and
// binds. The connection is closed when ctx ends, so a stalled server never
// outlives the caller's deadline; each request is also bounded by
// Options.Timeout.
func (p *Poller) dial(ctx context.Context, rawURL string) (searchConn, error) {
	netConn, raw, u, err := p.dialNet(ctx, rawURL)
	if err != nil {
		return nil, err
	}
	conn := ldap.NewConn(netConn, u.Scheme == "ldaps")
	conn.Start()
	conn.SetTimeout(p.o.Timeout)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	err = p.negotiate(ctx, u, stop, func() { conn.Close() },
		func() error {
			// go-ldap's StartTLS handshake has no deadline of its own.
			_ = raw.SetDeadline(time.Now().Add(p.o.Timeout))
			defer raw.SetDeadline(time.Time{}) //nolint:errcheck // best effort
			return conn.StartTLS(p.tlsConfig(u.Hostname()))
		},
		func() error { return conn.Bind(p.o.BindDN, p.o.BindPassword) })
	if err != nil {
		return nil, err
	}
	return &session{Conn: conn, url: rawURL, stop: stop}, nil
}

// dialWire is dial with ldapwire: the connection full reads stream
// through (see package ldapwire for why).
func (p *Poller) dialWire(ctx context.Context, rawURL string) (searchConn, error) {
	netConn, _, u, err := p.dialNet(ctx, rawURL)
	if err != nil {
		return nil, err
	}
	conn := ldapwire.NewConn(netConn, p.o.Timeout)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	err = p.negotiate(ctx, u, stop, func() { conn.Close() },
		func() error { return conn.StartTLS(ctx, p.tlsConfig(u.Hostname())) },
		func() error { return conn.Bind(ctx, p.o.BindDN, p.o.BindPassword) })
	if err != nil {
		return nil, err
	}
	return &wireSession{Conn: conn, url: rawURL, stop: stop}, nil
}

// negotiate runs StartTLS when the URL and options ask for it, then the
// bind, counting each as a request. On failure it drops the close-on-cancel
// hook (stop), closes the connection and returns the error: a refused bind
// as a *BindError.
func (p *Poller) negotiate(ctx context.Context, u *url.URL, stop func() bool, closeConn func(), startTLS, bind func() error) error {
	fail := func(err error) error {
		stop()
		closeConn()
		return err
	}
	if u.Scheme == "ldap" && p.o.StartTLS {
		p.requests.Add(1)
		if err := startTLS(); err != nil {
			return fail(fmt.Errorf("starttls: %w", err))
		}
	}
	p.requests.Add(1)
	if err := bind(); err != nil {
		return fail(bindError(p.o.BindDN, err))
	}
	if ctx.Err() != nil {
		return fail(ctx.Err())
	}
	return nil
}

// session is one bound go-ldap connection. Close it when done: it also
// drops the close-on-cancel hook.
type session struct {
	*ldap.Conn
	url  string
	stop func() bool
}

func (s *session) serverURL() string { return s.url }

func (s *session) Close() {
	s.stop()
	s.Conn.Close()
}

// wireSession is one bound ldapwire connection.
type wireSession struct {
	*ldapwire.Conn
	url  string
	stop func() bool
	// entry is reused for every entry a search returns.
	entry ldapentry.Entry
}

func (s *wireSession) serverURL() string { return s.url }

func (s *wireSession) Close() {
	s.stop()
	s.Conn.Close()
}

func (p *Poller) tlsConfig(host string) *tls.Config {
	var c *tls.Config
	if p.o.TLSConfig != nil {
		c = p.o.TLSConfig.Clone()
	} else {
		c = &tls.Config{}
	}
	if c.ServerName == "" {
		c.ServerName = host
	}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	return c
}

// connect tries the URLs in order (DC failover) and returns the first
// connection that binds. A bind that the server refuses is not retried
// on the next URL: every DC would refuse it too, and each try counts
// towards the account's lockout.
func (p *Poller) connect(ctx context.Context, prefer string, dial dialFunc) (searchConn, error) {
	urls := p.o.URLs
	if prefer != "" {
		urls = append([]string{prefer}, without(p.o.URLs, prefer)...)
	}
	var errs []error
	for _, u := range urls {
		conn, err := dial(ctx, u)
		if err == nil {
			return conn, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", u, err))
		var be *BindError
		if errors.As(err, &be) || ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

func without(list []string, s string) []string {
	out := make([]string, 0, len(list))
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

// BindError is a bind the server refused, with the Active Directory reason
// when the server gave one.
type BindError struct {
	BindDN string
	// Code is the AD "data" code from the diagnostic message (52e, 533,
	// 701, 775, …), empty for other servers.
	Code   string
	Reason string
	Err    error
}

func (e *BindError) Error() string {
	msg := fmt.Sprintf("bind as %q refused: %s", e.BindDN, e.Reason)
	if e.Code != "" {
		msg += " (AD data " + e.Code + ")"
	}
	return msg + ": " + e.Err.Error()
}

func (e *BindError) Unwrap() error { return e.Err }

var adDataCode = regexp.MustCompile(`(?i)\bdata ([0-9a-f]{3,8})\b`)

// adBindReasons are the AcceptSecurityContext data codes AD puts in the
// diagnostic message of a failed bind.
var adBindReasons = map[string]string{
	"525": "no such user",
	"52e": "wrong bind DN or password",
	"530": "logon not permitted at this time",
	"531": "logon not permitted from this workstation",
	"532": "the service account's password has expired",
	"533": "the service account is disabled",
	"568": "the service account is in too many groups",
	"701": "the service account has expired",
	"773": "the service account must reset its password",
	"775": "the service account is locked out",
}

// bindError maps a failed bind to a clear message; network errors pass
// through (the caller fails over on those).
func bindError(bindDN string, err error) error {
	var le *ldap.Error
	if !errors.As(err, &le) || le.ResultCode == ldap.ErrorNetwork {
		return fmt.Errorf("bind: %w", err)
	}
	be := &BindError{BindDN: bindDN, Err: err, Reason: ldap.LDAPResultCodeMap[le.ResultCode]}
	if le.ResultCode == ldap.LDAPResultInvalidCredentials {
		be.Reason = "invalid credentials"
		if le.Err != nil {
			if m := adDataCode.FindStringSubmatch(le.Err.Error()); m != nil {
				be.Code = strings.ToLower(m[1])
				if r, ok := adBindReasons[be.Code]; ok {
					be.Reason = r
				}
			}
		}
	}
	return be
}

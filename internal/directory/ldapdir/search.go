package ldapdir

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"strconv"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/dirsync/dirsync/internal/directory/ldapentry"
	"github.com/dirsync/dirsync/internal/directory/ldapwire"
)

// query is one logical subtree search.
type query struct {
	base     string
	scope    int
	filter   string
	attrs    []string
	controls []ldap.Control // extra controls (Show Deleted); paging is added per page
}

// capGrowth is how much more than the last good full read one search may
// return: the directory may grow between two full reads, a server that
// pages without end is stopped.
const capGrowth = 4

// searchCount is what searches returned: entries and pages (requests).
type searchCount struct{ entries, pages int }

func (c *searchCount) add(o searchCount) {
	c.entries += o.entries
	c.pages += o.pages
}

// searchLimits are the caps on one search: the configured floors
// (Options.MaxEntries, MaxPages), raised to capGrowth times what the last
// good full read returned.
type searchLimits struct{ entries, pages int }

func (p *Poller) limits() searchLimits {
	return searchLimits{
		entries: max(p.o.MaxEntries, capGrowth*p.lastGood.entries),
		pages:   max(p.o.MaxPages, capGrowth*p.lastGood.pages),
	}
}

// ErrLimitExceeded is wrapped by the error of a search that passed its
// entry or page cap (see Options.MaxEntries); the error names the cap and
// the config field that raises it.
var ErrLimitExceeded = errors.New("the search passed its cap")

// ErrPagingLoop is wrapped by the error of a paged search whose server
// repeated a page: the same cookie with no entries, or the same entries
// again. Such a server would page forever.
var ErrPagingLoop = errors.New("the server repeated a page")

func (p *Poller) entryCapError(lim searchLimits) error {
	return capError(lim.entries, "entries", "max_entries", p.o.MaxEntries, p.lastGood.entries)
}

func (p *Poller) pageCapError(lim searchLimits) error {
	return capError(lim.pages, "pages", "max_pages", p.o.MaxPages, p.lastGood.pages)
}

// capError says which cap a search passed, how it was derived, and which
// field raises it.
func capError(limit int, what, field string, floor, lastGood int) error {
	derived := fmt.Sprintf("directory.ldap.%s, the cap until a full read succeeds", field)
	if lastGood > 0 {
		derived = fmt.Sprintf("the larger of directory.ldap.%s, %d, and %dx the %d %s of the last good full read", field, floor, capGrowth, lastGood, what)
	}
	return fmt.Errorf("%w: more than %d %s (%s): either the server pages without end or the directory outgrew the cap; "+
		"if it really is this big, raise directory.ldap.%s", ErrLimitExceeded, limit, what, derived, field)
}

// pageLog remembers the pages of one paged search, to stop a server that
// repeats one. A cookie alone is no evidence (389-DS answers every page of
// a search with the same cookie, its slot number, and new entries), so a
// page is its entries' DNs in order, or, when it has none, its cookie.
type pageLog struct {
	h    maphash.Hash
	seen map[uint64]bool
}

func newPageLog() *pageLog {
	l := &pageLog{seen: map[uint64]bool{}}
	l.h.SetSeed(maphash.MakeSeed())
	return l
}

// entry adds an entry of the current page.
func (l *pageLog) entry(dn string) {
	l.h.WriteString(dn)
	l.h.WriteByte(0)
}

// repeated ends the current page (entries of it were added, cookie is
// what it returned) and reports whether an earlier page was the same.
func (l *pageLog) repeated(entries int, cookie []byte) bool {
	if entries == 0 {
		l.h.WriteByte(1)
		l.h.Write(cookie)
	}
	sum := l.h.Sum64()
	l.h.Reset()
	if l.seen[sum] {
		return true
	}
	l.seen[sum] = true
	return false
}

// search runs q page by page (RFC 2696) and calls fn for every entry as it
// arrives, so memory stays bounded by a few pages. Every page is a fresh
// request with a fresh paging control carrying the cookie the previous
// page returned (go-ldap reuses a stale cookie when a request is reused);
// on a connection that reads ahead (pagedConn) the next page is requested
// while fn still works through the last one.
// Any error — a non-success result such as sizeLimitExceeded or
// timeLimitExceeded (even after entries arrived), a network error, a
// timeout, ctx ending, more entries or pages than p.limits allows
// (ErrLimitExceeded), a repeated page (ErrPagingLoop) — fails the whole
// search; the caller must discard what fn received. Continuation
// references are ignored (never chased). Ranged attributes
// (member;range=0-1499) are merged into the entry under their base name
// and listed in ranged. It returns what the search read.
func (p *Poller) search(ctx context.Context, conn searchConn, q query, fn func(e *ldapentry.Entry, ranged []rangedAttr) error) (searchCount, error) {
	lim := p.limits()
	pages := newPageLog()
	read := searchCount{pages: 1}
	page, onPage := 1, 0
	fail := func(err error) (searchCount, error) {
		return read, fmt.Errorf("search %q under %q (page %d): %w", q.filter, q.base, page, describe(err))
	}
	count := func(e *ldapentry.Entry, ranged []rangedAttr) error {
		if read.entries == lim.entries {
			return p.entryCapError(lim)
		}
		read.entries++
		onPage++
		pages.entry(e.DN)
		p.entriesRead.Add(1)
		return fn(e, ranged)
	}
	// endPage ends the page that returned cookie and counts the next
	// request, if any.
	endPage := func(cookie []byte) error {
		if len(cookie) == 0 {
			return nil
		}
		if pages.repeated(onPage, cookie) {
			return fmt.Errorf("%w (the same cookie with no entries, or the same entries again): it would page forever", ErrPagingLoop)
		}
		if page == lim.pages {
			return p.pageCapError(lim)
		}
		page++
		read.pages++
		onPage = 0
		p.requests.Add(1)
		return nil
	}
	req := func(cookie []byte) *ldap.SearchRequest {
		paging := ldap.NewControlPaging(uint32(p.o.PageSize))
		paging.SetCookie(cookie)
		return ldap.NewSearchRequest(q.base, q.scope, ldap.NeverDerefAliases, 0, p.timeLimitSeconds(), false,
			q.filter, q.attrs, append(append([]ldap.Control(nil), q.controls...), paging))
	}
	p.requests.Add(1)
	if pc, ok := conn.(pagedConn); ok {
		if err := pc.searchPages(ctx, req(nil), uint32(p.o.PageSize), lim.pages, count, endPage); err != nil {
			return fail(err)
		}
		return read, nil
	}
	var cookie []byte
	for {
		next, err := conn.searchPage(ctx, req(cookie), count)
		if err == nil {
			err = endPage(next)
		}
		if err != nil {
			return fail(err)
		}
		if len(next) == 0 {
			return read, nil
		}
		cookie = next
	}
}

// searchBase reads the one entry at dn (a base-scope search, no paging);
// nil when the search returned none.
func (p *Poller) searchBase(ctx context.Context, conn searchConn, dn string, attrs []string) (*ldapentry.Entry, error) {
	req := ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, p.timeLimitSeconds(), false,
		"(objectClass=*)", attrs, nil)
	var got *ldapentry.Entry
	_, err := p.page(ctx, conn, req, func(e *ldapentry.Entry, _ []rangedAttr) error {
		p.entriesRead.Add(1)
		if got != nil {
			return fmt.Errorf("base search of %q returned more than one entry", dn)
		}
		got = cloneEntry(e)
		return nil
	})
	if err != nil {
		return nil, describe(err)
	}
	return got, nil
}

// page sends one search request on conn (counted in Stats).
func (p *Poller) page(ctx context.Context, conn searchConn, req *ldap.SearchRequest, fn func(*ldapentry.Entry, []rangedAttr) error) ([]byte, error) {
	p.requests.Add(1)
	return conn.searchPage(ctx, req, fn)
}

func (s *session) searchPage(ctx context.Context, req *ldap.SearchRequest, fn func(*ldapentry.Entry, []rangedAttr) error) ([]byte, error) {
	pctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops go-ldap's reader goroutine if we leave early
	resp := s.SearchAsync(pctx, req, 64)
	var cookie []byte
	for resp.Next() {
		if e := resp.Entry(); e != nil {
			if err := fn(toEntry(e)); err != nil {
				return nil, err
			}
			continue
		}
		if resp.Referral() != "" {
			continue
		}
		if c, ok := ldap.FindControl(resp.Controls(), ldap.ControlTypePaging).(*ldap.ControlPaging); ok {
			cookie = c.Cookie
		}
	}
	if err := resp.Err(); err != nil {
		return nil, err
	}
	// go-ldap ends the stream silently when ctx ends.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.IsClosing() {
		return nil, errors.New("connection closed during the search")
	}
	return cookie, nil
}

func (s *wireSession) searchPage(ctx context.Context, req *ldap.SearchRequest, fn func(*ldapentry.Entry, []rangedAttr) error) ([]byte, error) {
	controls, err := s.Search(ctx, req, func(we *ldapwire.Entry) error {
		return fn(s.fromWire(we))
	})
	if err != nil {
		return nil, err
	}
	return pagingCookie(controls), nil
}

func (s *wireSession) searchPages(ctx context.Context, req *ldap.SearchRequest, pageSize uint32, maxPages int, fn func(*ldapentry.Entry, []rangedAttr) error, endPage func([]byte) error) error {
	return s.SearchPaged(ctx, req, pageSize, maxPages, func(we *ldapwire.Entry) error {
		return fn(s.fromWire(we))
	}, func(controls []ldap.Control) error {
		return endPage(pagingCookie(controls))
	})
}

// pagingCookie is the cookie of a result's paging control (nil when none).
func pagingCookie(controls []ldap.Control) []byte {
	if c, ok := ldap.FindControl(controls, ldap.ControlTypePaging).(*ldap.ControlPaging); ok {
		return c.Cookie
	}
	return nil
}

func (p *Poller) timeLimitSeconds() int {
	s := int(p.o.Timeout.Seconds())
	if s < 1 {
		s = 1
	}
	return s
}

// describe adds advice to the errors operators can act on.
func describe(err error) error {
	var le *ldap.Error
	if !errors.As(err, &le) {
		return err
	}
	switch le.ResultCode {
	case ldap.LDAPResultSizeLimitExceeded:
		return fmt.Errorf("the server's size limit cut the read short (OpenLDAP applies its default 500-entry limit to paged searches too; lift it for the bind DN, e.g. limits dn.exact=\"<bind dn>\" size=unlimited time=unlimited): %w", err)
	case ldap.LDAPResultTimeLimitExceeded:
		return fmt.Errorf("the server's time limit cut the read short: %w", err)
	case ldap.LDAPResultAdminLimitExceeded:
		return fmt.Errorf("an administrative limit cut the read short: %w", err)
	case ldap.ErrorNetwork:
		return fmt.Errorf("connection failed during the read: %w", err)
	}
	return err
}

// toEntry converts a go-ldap entry: attribute names lower-cased, binary
// values kept as raw bytes in strings. Ranged attributes
// (member;range=0-1499) are merged under their base name and returned in
// ranged.
func toEntry(e *ldap.Entry) (*ldapentry.Entry, []rangedAttr) {
	out := &ldapentry.Entry{DN: e.DN, Attrs: make(map[string][]string, len(e.Attributes))}
	var ranged []rangedAttr
	for _, a := range e.Attributes {
		ranged = addAttr(out, strings.ToLower(a.Name), a.Values, ranged)
	}
	return out, ranged
}

// fromWire is toEntry for an ldapwire entry (names already lower case),
// into the session's reused entry.
func (s *wireSession) fromWire(we *ldapwire.Entry) (*ldapentry.Entry, []rangedAttr) {
	e := &s.entry
	if e.Attrs == nil {
		e.Attrs = make(map[string][]string, len(we.Attrs))
	}
	clear(e.Attrs)
	e.DN = we.DN
	var ranged []rangedAttr
	for _, a := range we.Attrs {
		ranged = addAttr(e, a.Name, a.Values, ranged)
	}
	return e, ranged
}

// cloneEntry returns a copy of e that outlives a searchPage callback (the
// value slices are the decoder's own, never reused, so they are shared).
func cloneEntry(e *ldapentry.Entry) *ldapentry.Entry {
	return &ldapentry.Entry{DN: e.DN, Attrs: maps.Clone(e.Attrs)}
}

func addAttr(e *ldapentry.Entry, name string, values []string, ranged []rangedAttr) []rangedAttr {
	if base, r, ok := parseRange(name); ok {
		e.Attrs[base] = append(e.Attrs[base], values...)
		return append(ranged, rangedAttr{name: base, r: r})
	}
	if have, ok := e.Attrs[name]; ok {
		e.Attrs[name] = append(have, values...)
	} else {
		e.Attrs[name] = values
	}
	return ranged
}

type rangedAttr struct {
	name string
	r    valueRange
}

// valueRange is the "low-high" part of "attr;range=low-high"; high is -1
// for "*" (the last values).
type valueRange struct{ low, high int }

// parseRange splits "member;range=0-1499" into member and 0..1499.
func parseRange(name string) (string, valueRange, bool) {
	base, opts, ok := strings.Cut(name, ";")
	if !ok {
		return name, valueRange{}, false
	}
	for _, opt := range strings.Split(opts, ";") {
		spec, ok := strings.CutPrefix(opt, "range=")
		if !ok {
			continue
		}
		lo, hi, ok := strings.Cut(spec, "-")
		if !ok {
			return base, valueRange{}, false
		}
		low, err := strconv.Atoi(lo)
		if err != nil {
			return base, valueRange{}, false
		}
		if hi == "*" {
			return base, valueRange{low: low, high: -1}, true
		}
		high, err := strconv.Atoi(hi)
		if err != nil || high < low {
			return base, valueRange{}, false
		}
		return base, valueRange{low: low, high: high}, true
	}
	return base, valueRange{}, false
}

// completeRanges fetches the rest of every ranged attribute of e (AD
// returns at most MaxValRange values per attribute and names the rest
// "member;range=1500-*"), appending values until a range ends in "*".
// Each range must start where the last ended; one attribute takes at most
// as many requests as a search has pages and holds at most as many values
// as a search has entries (p.limits), so a server answering ranges without
// end is stopped.
func (p *Poller) completeRanges(ctx context.Context, conn searchConn, e *ldapentry.Entry, ranged []rangedAttr) error {
	lim := p.limits()
	for _, ra := range ranged {
		r := ra.r
		for requests := 1; r.high >= 0; requests++ {
			want := fmt.Sprintf("%s;range=%d-*", ra.name, r.high+1)
			if requests > lim.pages {
				return fmt.Errorf("range retrieval of %s on %q: %w", want, e.DN, p.pageCapError(lim))
			}
			if len(e.Attrs[ra.name]) > lim.entries {
				return fmt.Errorf("range retrieval of %s on %q: %w", want, e.DN, p.entryCapError(lim))
			}
			req := ldap.NewSearchRequest(e.DN, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, p.timeLimitSeconds(), false,
				"(objectClass=*)", []string{want}, nil)
			var got *valueRange
			entries := 0
			_, err := p.page(ctx, conn, req, func(part *ldapentry.Entry, ranges []rangedAttr) error {
				entries++
				for _, nr := range ranges {
					if nr.name != ra.name {
						continue
					}
					if nr.r.low != r.high+1 {
						return fmt.Errorf("server answered range %d-%d", nr.r.low, nr.r.high)
					}
					e.Attrs[ra.name] = append(e.Attrs[ra.name], part.Attrs[ra.name]...)
					got = &nr.r
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("range retrieval of %s on %q: %w", want, e.DN, describe(err))
			}
			if entries != 1 {
				return fmt.Errorf("range retrieval of %s on %q: %d entries returned", want, e.DN, entries)
			}
			if got == nil {
				break // nothing past the last range
			}
			r = *got
		}
	}
	return nil
}

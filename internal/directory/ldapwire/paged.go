package ldapwire

import (
	"context"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// A paged search (RFC 2696) is a run of requests, each sent with the
// cookie the previous page's result carried. A client that works through
// a page's entries before it asks for the next page leaves the server
// idle for that long at every page: at 1,000 entries a page (Active
// Directory's MaxPageSize) and a few microseconds an entry, that is a
// third of a full read's time (docs/performance.md). SearchPaged reads
// ahead instead: a goroutine reads the responses and sends the next
// page's request the moment a page's result arrives, while the caller's
// goroutine decodes and handles the entries already read.

// Read-ahead bounds: the reader hands frames over in runs of at most
// frameRun messages (sooner when the socket has nothing more buffered),
// at most runsAhead runs wait for the caller, and the reader requests
// page n+2 only after the caller ended page n: it is at most one page
// ahead, so memory stays bounded by two pages and a caller that stops the
// search (a cap, a repeated page) does so at most one request late.
const (
	frameRun  = 256
	runsAhead = 8
	slabSize  = 1 << 20
)

// frame is one response message, copied out of the read buffer.
type frame struct {
	tag      byte
	body     []byte
	controls []byte
}

// frames is what the reader hands over: messages in order, then the error
// that ended the read, if one did.
type frames struct {
	list []frame
	err  error
}

// SearchPaged runs req as a paged search of pageSize entries a page and
// calls fn for every entry, in order, and endPage at the end of every
// page with the controls of its result (a result other than success ends
// the search with that *ldap.Error before endPage). Any paging control in
// req is replaced by the search's own. The next page is requested as soon
// as a page's result arrives with a non-empty cookie, before fn has seen
// that page's entries, and at most maxPages requests are sent (0: no
// bound; endPage must refuse the cookie of page maxPages). An error from
// fn or endPage ends the search with that error, at most one request
// after the page it came from. After any error the connection is unusable
// (a response may be half read) and must be closed.
//
// Timeout bounds the server's time to answer: each page's request starts
// it again, and so does each time the reader waited for the caller.
func (c *Conn) SearchPaged(ctx context.Context, req *ldap.SearchRequest, pageSize uint32, maxPages int, fn func(*Entry) error, endPage func([]ldap.Control) error) error {
	op, err := searchOp(req)
	if err != nil {
		return err
	}
	var controls []ldap.Control
	for _, ctl := range req.Controls {
		if ctl.GetControlType() != ldap.ControlTypePaging {
			controls = append(controls, ctl)
		}
	}

	defer c.watch(ctx)()
	s := &pagedSearch{
		op: op, controls: controls, pageSize: pageSize, maxPages: maxPages,
		runs: make(chan frames, runsAhead), ended: make(chan struct{}, 2), stop: make(chan struct{}),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(s.runs)
		c.readPages(ctx, s)
	}()
	err = c.handlePages(s, fn, endPage)
	if err != nil {
		// Unblock a reader waiting on the server or on us, then wait.
		close(s.stop)
		_ = c.nc.SetDeadline(time.Unix(1, 0))
	}
	<-done
	return err
}

// pagedSearch is what the two sides of a SearchPaged share.
type pagedSearch struct {
	op       *ber.Packet
	controls []ldap.Control // the caller's, without paging
	pageSize uint32
	maxPages int
	runs     chan frames   // reader → caller
	ended    chan struct{} // caller → reader: one per page ended
	stop     chan struct{} // closed when the caller ends the search
}

// handlePages decodes the frames the reader hands over and calls fn and
// endPage. It returns nil when the reader ended after a last page.
func (c *Conn) handlePages(s *pagedSearch, fn func(*Entry) error, endPage func([]ldap.Control) error) error {
	var e Entry
	for run := range s.runs {
		for _, f := range run.list {
			switch f.tag {
			case tagSearchEntry:
				if err := c.decodeEntry(f.body, &e); err != nil {
					return err
				}
				if err := fn(&e); err != nil {
					return err
				}
			case tagSearchReference:
			case tagSearchDone:
				if err := decodeResult(f.body); err != nil {
					return err
				}
				controls, err := decodeControls(f.controls)
				if err != nil {
					return err
				}
				if err := endPage(controls); err != nil {
					return err
				}
				select {
				case s.ended <- struct{}{}:
				default: // the reader has ended: nothing waits for it
				}
			default:
				return protocolError("unexpected response tag 0x%02x to a search", f.tag)
			}
		}
		if run.err != nil {
			return run.err
		}
	}
	return nil
}

// readPages sends the requests of a paged search and hands every response
// message to s.runs, until a page's result ends the search (no cookie, a
// result other than success, maxPages), an error, or s.stop.
func (c *Conn) readPages(ctx context.Context, s *pagedSearch) {
	var (
		cookie []byte
		slab   []byte
		run    []frame
	)
	// hand gives the frames read so far to the caller, and awaitEnd waits
	// until the caller ended a page; both return false when the caller
	// stopped the search. A wait for the caller starts the Timeout bound
	// again: it bounds the server, not the caller.
	hand := func() bool {
		select {
		case s.runs <- frames{list: run}:
			run = nil
			return true
		default:
		}
		select {
		case s.runs <- frames{list: run}:
			run = nil
		case <-s.stop:
			return false
		}
		return c.restartTimeout(ctx)
	}
	awaitEnd := func() bool {
		select {
		case <-s.ended:
		case <-s.stop:
			return false
		}
		return c.restartTimeout(ctx)
	}
	fail := func(err error) {
		select {
		case s.runs <- frames{list: run, err: err}:
		case <-s.stop:
		}
	}
	for page := 1; ; page++ {
		if page > 2 && !awaitEnd() {
			return // page-2 must have ended first (the read-ahead bounds)
		}
		paging := ldap.NewControlPaging(s.pageSize)
		paging.SetCookie(cookie)
		id, err := c.send(s.op, append(s.controls[:len(s.controls):len(s.controls)], paging))
		if err != nil {
			fail(err)
			return
		}
		if !c.restartTimeout(ctx) {
			fail(ctx.Err())
			return
		}
		for {
			gotID, tag, body, ctl, err := c.readMessage(ctx)
			if err != nil {
				fail(err)
				return
			}
			if gotID != id {
				fail(unexpected(gotID, tag, body, id))
				return
			}
			// The frame is copied: the read buffer is reused.
			if n := len(body) + len(ctl); n > len(slab) {
				slab = make([]byte, max(n, slabSize))
			}
			f := frame{tag: tag, body: slab[:len(body):len(body)]}
			copy(f.body, body)
			slab = slab[len(body):]
			if len(ctl) > 0 {
				f.controls = slab[:len(ctl):len(ctl)]
				copy(f.controls, ctl)
				slab = slab[len(ctl):]
			}
			run = append(run, f)
			if tag == tagSearchDone {
				var more bool
				cookie, more = nextCookie(body, ctl)
				if !hand() || !more || page == s.maxPages {
					return
				}
				break
			}
			if len(run) >= frameRun || c.r.Buffered() == 0 {
				// The caller gets what was read before the reader waits
				// on the socket, or before a run grows long.
				if !hand() {
					return
				}
			}
		}
	}
}

// restartTimeout starts the Timeout bound again; false when ctx ended (its
// watch may have set a past deadline this would override).
func (c *Conn) restartTimeout(ctx context.Context) bool {
	if c.Timeout > 0 {
		_ = c.nc.SetDeadline(time.Now().Add(c.Timeout))
	}
	return ctx.Err() == nil
}

// nextCookie returns the paging cookie of a search result (its content
// and controls) and whether another page follows: the result is success
// and the cookie is not empty. Anything malformed is left for the caller
// to report: no next page.
func nextCookie(body, controls []byte) ([]byte, bool) {
	if decodeResult(body) != nil {
		return nil, false
	}
	cs, err := decodeControls(controls)
	if err != nil {
		return nil, false
	}
	pc, ok := ldap.FindControl(cs, ldap.ControlTypePaging).(*ldap.ControlPaging)
	if !ok || len(pc.Cookie) == 0 {
		return nil, false
	}
	return pc.Cookie, true
}

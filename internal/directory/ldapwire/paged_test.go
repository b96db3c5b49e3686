package ldapwire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pager is a paging server on a net.Pipe: page i (from 1) holds the
// entries named by pages[i-1]; a page's result carries the cookie "i"
// unless it is the last. It records each request's cookie, and stops when
// the client closes the connection. endless makes every page carry a
// cookie (a server that pages without end).
type pager struct {
	pages   [][]string
	endless bool
	code    int // result code of the last page (0: success)

	mu       sync.Mutex
	cookies  []string      // of the requests received, in order
	received chan struct{} // a send per request
}

func (p *pager) start(t *testing.T) *Conn {
	p.received = make(chan struct{}, 1000)
	return pipeServer(t, func(server net.Conn) {
		for {
			pkt, err := ber.ReadPacket(server)
			if err != nil {
				return
			}
			if _, err := server.Write(p.answer(pkt)); err != nil {
				return
			}
		}
	})
}

// answer records a request and returns its page.
func (p *pager) answer(pkt *ber.Packet) []byte {
	id := pkt.Children[0].Value.(int64)
	cookie := ""
	if len(pkt.Children) > 2 {
		if c, ok := ldap.FindControl(decodeRequestControls(pkt.Children[2]), ldap.ControlTypePaging).(*ldap.ControlPaging); ok {
			cookie = string(c.Cookie)
		}
	}
	p.mu.Lock()
	p.cookies = append(p.cookies, cookie)
	p.mu.Unlock()
	p.received <- struct{}{}
	page := 1
	if cookie != "" {
		page, _ = strconv.Atoi(cookie)
		page++
	}
	var reply bytes.Buffer
	if page <= len(p.pages) {
		for _, dn := range p.pages[page-1] {
			reply.Write(message(id, entryOp(dn, []string{"cn", dn})))
		}
	}
	paging := ldap.NewControlPaging(0)
	code := 0
	if page < len(p.pages) || p.endless {
		paging.SetCookie([]byte(strconv.Itoa(page)))
	} else {
		code = p.code
	}
	reply.Write(message(id, resultOp(ldap.ApplicationSearchResultDone, code, ""), paging.Encode()))
	return reply.Bytes()
}

func (p *pager) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.cookies...)
}

func decodeRequestControls(p *ber.Packet) []ldap.Control {
	var out []ldap.Control
	for _, c := range p.Children {
		if ctl, err := ldap.DecodeControl(c); err == nil {
			out = append(out, ctl)
		}
	}
	return out
}

func pagesOf(n, size int) [][]string {
	var pages [][]string
	for i := 0; i < n; i += size {
		var page []string
		for j := i; j < min(i+size, n); j++ {
			page = append(page, fmt.Sprintf("cn=u%05d,dc=example", j))
		}
		pages = append(pages, page)
	}
	return pages
}

var pagedReq = ldap.NewSearchRequest("dc=example", ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, "(cn=*)", []string{"cn"}, nil)

// TestSearchPagedReadsEveryPageInOrder: every entry of every page reaches
// fn once, in order; each request carries the cookie of the page before;
// endPage sees each page's cookie, the last one empty.
func TestSearchPagedReadsEveryPageInOrder(t *testing.T) {
	p := &pager{pages: pagesOf(2500, 300)}
	c := p.start(t)
	var got []string
	var ends []string
	err := c.SearchPaged(context.Background(), pagedReq, 300, 0, func(e *Entry) error {
		if v := e.Values("cn"); len(v) != 1 || v[0] != e.DN {
			return fmt.Errorf("entry %q has cn %v", e.DN, v)
		}
		got = append(got, e.DN)
		return nil
	}, func(cs []ldap.Control) error {
		pc, _ := ldap.FindControl(cs, ldap.ControlTypePaging).(*ldap.ControlPaging)
		if pc == nil {
			return errors.New("a page result without a paging control")
		}
		ends = append(ends, string(pc.Cookie))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := pagesOf(2500, 2500)[0]
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %d entries (first %q), want %d in order", len(got), got[:min(3, len(got))], len(want))
	}
	wantCookies := []string{"", "1", "2", "3", "4", "5", "6", "7", "8"}
	if fmt.Sprint(p.requests()) != fmt.Sprint(wantCookies) {
		t.Errorf("request cookies %q, want %q", p.requests(), wantCookies)
	}
	if fmt.Sprint(ends) != fmt.Sprint(append(wantCookies[1:], "")) {
		t.Errorf("endPage saw cookies %q", ends)
	}
}

// TestSearchPagedReadsOnePageAhead: the next page is requested while fn
// still holds the first entry of the page before (no idle server at a page
// boundary), and never a second page ahead of the one fn is in.
func TestSearchPagedReadsOnePageAhead(t *testing.T) {
	p := &pager{pages: pagesOf(40, 10)}
	c := p.start(t)
	release := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		first := true
		errc <- c.SearchPaged(context.Background(), pagedReq, 10, 0, func(e *Entry) error {
			if first {
				first = false
				<-release // hold page 1
			}
			return nil
		}, func([]ldap.Control) error { return nil })
	}()
	for range 2 {
		select {
		case <-p.received:
		case <-time.After(5 * time.Second):
			t.Fatalf("requests %q while fn holds page 1: page 2 was not requested ahead", p.requests())
		}
	}
	select {
	case <-p.received:
		t.Fatalf("requests %q while fn holds page 1: more than one page ahead", p.requests())
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n := len(p.requests()); n != 4 {
		t.Fatalf("%d requests, want 4", n)
	}
}

// TestSearchPagedStops: a server that pages without end gets maxPages
// requests; an error from endPage or fn ends the search with it, at most
// one request after its page; a result code after entries is the error.
// Every case leaves no goroutine behind (TestMain).
func TestSearchPagedStops(t *testing.T) {
	noop := func(*Entry) error { return nil }
	t.Run("maxPages", func(t *testing.T) {
		p := &pager{pages: pagesOf(30, 10), endless: true}
		c := p.start(t)
		pages := 0
		errCap := errors.New("page cap")
		err := c.SearchPaged(context.Background(), pagedReq, 10, 5, noop, func([]ldap.Control) error {
			if pages++; pages == 5 {
				return errCap
			}
			return nil
		})
		if !errors.Is(err, errCap) {
			t.Fatalf("error %v, want the cap", err)
		}
		if n := len(p.requests()); n != 5 {
			t.Fatalf("%d requests, want exactly maxPages (5)", n)
		}
	})
	t.Run("endPage", func(t *testing.T) {
		p := &pager{pages: pagesOf(100, 10)}
		c := p.start(t)
		errLoop := errors.New("repeated page")
		err := c.SearchPaged(context.Background(), pagedReq, 10, 0, noop, func([]ldap.Control) error { return errLoop })
		if !errors.Is(err, errLoop) {
			t.Fatalf("error %v", err)
		}
		if n := len(p.requests()); n > 2 {
			t.Fatalf("%d requests after endPage refused page 1, want at most 2", n)
		}
	})
	t.Run("fn", func(t *testing.T) {
		p := &pager{pages: pagesOf(100, 10)}
		c := p.start(t)
		errFn := errors.New("entry refused")
		n := 0
		err := c.SearchPaged(context.Background(), pagedReq, 10, 0, func(*Entry) error {
			if n++; n == 15 {
				return errFn
			}
			return nil
		}, func([]ldap.Control) error { return nil })
		if !errors.Is(err, errFn) {
			t.Fatalf("error %v", err)
		}
		if got := len(p.requests()); got > 3 {
			t.Fatalf("%d requests after fn refused an entry of page 2, want at most 3", got)
		}
	})
	t.Run("result code", func(t *testing.T) {
		p := &pager{pages: pagesOf(25, 10), code: ldap.LDAPResultSizeLimitExceeded}
		c := p.start(t)
		entries := 0
		err := c.SearchPaged(context.Background(), pagedReq, 10, 0, func(*Entry) error { entries++; return nil }, func([]ldap.Control) error { return nil })
		if !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
			t.Fatalf("error %v, want sizeLimitExceeded", err)
		}
		if entries != 25 {
			t.Fatalf("%d entries before the result, want 25", entries)
		}
	})
}

// TestSearchPagedTimeoutAndCancellation: a server that stops answering in
// the middle of a page ends the search with a timeout, or with the
// context's error when the context ends first.
func TestSearchPagedTimeoutAndCancellation(t *testing.T) {
	stalled := func(t *testing.T) *Conn {
		client, server := net.Pipe()
		go func() {
			pkt, err := ber.ReadPacket(server)
			if err != nil {
				return
			}
			id := pkt.Children[0].Value.(int64)
			_, _ = server.Write(message(id, entryOp("cn=a,dc=example", []string{"cn", "a"}))) // then silence
		}()
		t.Cleanup(func() { client.Close(); server.Close() })
		return NewConn(client, 0)
	}
	noop := func(*Entry) error { return nil }
	end := func([]ldap.Control) error { return nil }

	c := stalled(t)
	c.Timeout = 50 * time.Millisecond
	if err := c.SearchPaged(context.Background(), pagedReq, 10, 0, noop, end); !ldap.IsErrorWithCode(err, ldap.ErrorNetwork) {
		t.Fatalf("stalled server with a timeout: %v, want a network error", err)
	}

	c = stalled(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.SearchPaged(ctx, pagedReq, 10, 0, noop, end); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stalled server, context ending: %v, want the context's error", err)
	}
}

package ldapdir

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// guarded is a context that ends a read the code under test failed to
// stop, so such a failure reports instead of hanging the test binary (it
// bounds nothing the tests assert: a correct read ends long before).
func guarded(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// A server that pages without end (issue 12 item 9: a broken server made a
// read take 869k entries and 491 MiB in 8 s) is stopped by the repeated-page
// check or by the caps, on both paths: full reads (ldapwire) and incremental
// passes (go-ldap). The read fails, the last good state stays, and the work
// done before stopping is bounded by the caps.
func TestHostilePagingStopsTheRead(t *testing.T) {
	const (
		maxEntries = 3000 // floors; the last good read (101 entries, 2 pages) is far below
		maxPages   = 20
		pageSize   = 1000 // the fake serves full pages of 1000
	)
	cases := []struct {
		name    string
		mode    pagingMode
		wantErr error
		field   string // the config field the error names
		// maxRequests bounds the user search requests the server gets.
		// A full read asks for the next page before it has handled the
		// last one (ldapwire.SearchPaged): a stop decided on a page's
		// entries or cookie comes one request later there, while the
		// page cap is exact on both paths.
		maxRequests int
	}{
		{"same cookie and entries forever", pagingSameCookie, ErrPagingLoop, "", 2},
		{"same cookie and no entries forever", pagingSameCookieEmpty, ErrPagingLoop, "", 2},
		{"new entries and cookies forever", pagingEndlessEntries, ErrLimitExceeded, "directory.ldap.max_entries", maxEntries/pageSize + 1},
		{"empty pages with new cookies forever", pagingEndlessEmpty, ErrLimitExceeded, "directory.ldap.max_pages", maxPages},
	}
	for _, tc := range cases {
		for _, path := range []string{"full", "incremental"} {
			t.Run(tc.name+"/"+path, func(t *testing.T) {
				f := newFakeAD(100, 0)
				o := fakeOptions(f.start(t))
				o.MaxEntries, o.MaxPages = maxEntries, maxPages
				p := newPoller(t, o)
				var good *state
				if path == "incremental" {
					if _, err := p.Snapshot(guarded(t)); err != nil {
						t.Fatal(err)
					}
					good = p.last
				}
				f.mu.Lock()
				f.paging, f.userPages, f.usnBump = tc.mode, 0, 1
				f.mu.Unlock()
				before := p.Stats().EntriesRead
				var err error
				if path == "full" {
					_, err = p.Snapshot(guarded(t))
				} else {
					_, _, err = p.Incremental(guarded(t))
				}
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("read error %v, want %v", err, tc.wantErr)
				}
				if tc.field != "" && !strings.Contains(err.Error(), tc.field) {
					t.Errorf("error %q does not name %s", err, tc.field)
				}
				if p.last != good {
					t.Error("the failed read replaced the last good state")
				}
				f.mu.Lock()
				requests := f.userPages
				f.mu.Unlock()
				maxRequests := tc.maxRequests
				if path == "full" && tc.mode != pagingEndlessEmpty {
					maxRequests++
				}
				if requests > maxRequests {
					t.Errorf("the server got %d user search requests, want at most %d", requests, maxRequests)
				}
				// Entries received: the user pages before the stop, plus the
				// group and rootDSE entries of the pass.
				if got := p.Stats().EntriesRead - before; got > maxEntries+pageSize {
					t.Errorf("%d entries read, want at most %d", got, maxEntries+pageSize)
				}
			})
		}
	}
}

// TestSlotCookieServerReads: 389-DS answers every page of a search with the
// same cookie (its paged-results slot number) and the next entries. That is
// no loop: the read completes on both paths.
func TestSlotCookieServerReads(t *testing.T) {
	f := newFakeAD(2500, 0)
	f.paging = pagingSlotCookie
	p := newPoller(t, fakeOptions(f.start(t)))
	snap, err := p.Snapshot(guarded(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Users) != 2500 {
		t.Fatalf("full read: %d users, want 2500", len(snap.Users))
	}
	f.mu.Lock()
	f.usnBump = 1
	f.users = append(f.users, fakeUser(2500))
	f.mu.Unlock()
	snap, changed, err := p.Incremental(guarded(t))
	if err != nil {
		t.Fatal(err)
	}
	if !changed || len(snap.Users) != 2501 {
		t.Fatalf("incremental pass: changed %v, %d users, want 2501", changed, len(snap.Users))
	}
}

// TestCapsGrowWithTheLastGoodRead: before any good read the configured
// floor caps a search; after one, the cap is 4x what it returned, so the
// directory may grow past the floor but not without bound.
func TestCapsGrowWithTheLastGoodRead(t *testing.T) {
	f := newFakeAD(2500, 0)
	o := fakeOptions(f.start(t))
	o.MaxEntries = 1000
	p := newPoller(t, o)
	_, err := p.Snapshot(guarded(t))
	if !errors.Is(err, ErrLimitExceeded) || !strings.Contains(err.Error(), "more than 1000 entries") || !strings.Contains(err.Error(), "directory.ldap.max_entries") {
		t.Fatalf("2500 users under a floor of 1000 with no good read yet: %v, want the entry cap naming max_entries", err)
	}

	o.MaxEntries = 3000
	p = newPoller(t, o)
	if _, err := p.Snapshot(guarded(t)); err != nil {
		t.Fatal(err)
	}
	grow := func(n int) {
		f.mu.Lock()
		defer f.mu.Unlock()
		for i := len(f.users); i < n; i++ {
			f.users = append(f.users, fakeUser(i))
		}
	}
	grow(9000) // past the floor, within 4x the 2501 entries of the last good read
	snap, err := p.Snapshot(guarded(t))
	if err != nil {
		t.Fatalf("a directory grown to 9000 users after a read of 2500: %v", err)
	}
	if len(snap.Users) != 9000 {
		t.Fatalf("%d users, want 9000", len(snap.Users))
	}
	good := p.last
	grow(40000) // past 4x the 9001 entries of the last good read
	if _, err := p.Snapshot(guarded(t)); !errors.Is(err, ErrLimitExceeded) || !strings.Contains(err.Error(), "4x the 9001 entries") {
		t.Fatalf("a directory grown past 4x the last good read: %v, want the entry cap", err)
	}
	if p.last != good {
		t.Fatal("the failed read replaced the last good state")
	}
}

// TestEndlessRangeRetrievalStops: a server that answers member;range=…
// requests with ranges that never end is stopped by the page cap.
func TestEndlessRangeRetrievalStops(t *testing.T) {
	f := newFakeAD(2000, 1600) // one group of 1600 members: ranged
	f.endlessRanges = true
	o := fakeOptions(f.start(t))
	o.MaxPages = 10
	_, err := newPoller(t, o).Snapshot(guarded(t))
	if !errors.Is(err, ErrLimitExceeded) || !strings.Contains(err.Error(), "range retrieval") || !strings.Contains(err.Error(), "directory.ldap.max_pages") {
		t.Fatalf("endless ranges: %v, want the page cap during range retrieval", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rangeRequests > 10 {
		t.Fatalf("%d range requests, want at most 10", f.rangeRequests)
	}
}

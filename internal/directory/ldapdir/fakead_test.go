package ldapdir

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/jimlambrt/gldap"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// fakeAD is an in-process LDAP server that behaves like Windows AD where
// Samba does not: it caps pages at MaxPageSize and returns big multi-valued
// attributes as member;range=0-1499, serving the rest only on request.
type fakeAD struct {
	maxPage, maxValRange int

	mu      sync.Mutex
	users   []fakeEntry
	groups  []fakeEntry
	cookies []string // paging cookies received on user searches, in order
	// failOnPage, when > 0, answers that page of a subtree search with its
	// entries and then timeLimitExceeded.
	failOnPage int
	// stall, when non-nil, blocks every subtree search until closed.
	stall chan struct{}
	// bindDiag, when set, refuses binds with invalidCredentials and this
	// diagnostic message.
	bindDiag string
	// deletedCode, when set, answers searches of CN=Deleted Objects with
	// this result code (as AD does for an account that may not see it).
	deletedCode int
	// usnBump is added to the highestCommittedUSN the rootDSE reports.
	usnBump int
	// paging, when not pagingNormal, changes how user searches page (the
	// hostile and odd servers of the paging tests); userPages counts the
	// user search requests received.
	paging    pagingMode
	userPages int
	// endlessRanges answers every range request with a full range that
	// is never the last, made-up values included.
	endlessRanges bool
	rangeRequests int
	// slotOffset is where a pagingSlotCookie search stands (kept by the
	// server, as 389-DS keeps it in the connection's paged-results slot).
	slotOffset int
}

// pagingMode is how the fake pages user searches.
type pagingMode int

const (
	pagingNormal pagingMode = iota
	// pagingSlotCookie answers every page with cookie "0" and the next
	// entries, as 389-DS does (the cookie is its slot number): legitimate.
	pagingSlotCookie
	// pagingSameCookie answers every page with the first page's entries
	// and the same cookie, forever.
	pagingSameCookie
	// pagingSameCookieEmpty answers every page with no entries and the
	// same cookie, forever.
	pagingSameCookieEmpty
	// pagingEndlessEntries answers every page with a full page of new
	// users and a new cookie, forever.
	pagingEndlessEntries
	// pagingEndlessEmpty answers every page with no entries and a new
	// cookie, forever.
	pagingEndlessEmpty
)

// fakeUser is user i of a fake directory.
func fakeUser(i int) fakeEntry {
	return fakeEntry{fmt.Sprintf("CN=u%05d,OU=People,%s", i, fakeBase), map[string][]string{
		"objectClass": {"top", "person", "organizationalPerson", "user"}, "objectGUID": {guid(i)},
		"mail": {fmt.Sprintf("u%05d@corp.example", i)}, "userAccountControl": {"512"},
	}}
}

type fakeEntry struct {
	dn    string
	attrs map[string][]string
}

const fakeBase = "DC=corp,DC=example"

func guid(n int) string {
	b := make([]byte, 16)
	b[0], b[1], b[15] = byte(n), byte(n>>8), 0xab
	return string(b)
}

func newFakeAD(users, bigMembers int) *fakeAD {
	f := &fakeAD{maxPage: 1000, maxValRange: 1500}
	var members []string
	for i := range users {
		u := fakeUser(i)
		f.users = append(f.users, u)
		if i < bigMembers {
			members = append(members, u.dn)
		}
	}
	f.groups = append(f.groups, fakeEntry{"CN=Big,OU=Groups," + fakeBase, map[string][]string{
		"objectClass": {"top", "group"}, "objectGUID": {guid(1 << 15)}, "cn": {"Big"}, "member": members,
	}})
	return f
}

func (f *fakeAD) start(t *testing.T) string {
	t.Helper()
	srv, err := gldap.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	mux, _ := gldap.NewMux()
	mux.Bind(f.bind)
	mux.Search(f.search)
	srv.Router(mux)
	addr := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	done := make(chan error, 1)
	go func() { done <- srv.Run(addr) }()
	t.Cleanup(func() {
		f.mu.Lock()
		if f.stall != nil {
			select {
			case <-f.stall:
			default:
				close(f.stall)
			}
		}
		f.mu.Unlock()
		srv.Stop()
		<-done
	})
	if err := servertest.WaitTCP(addr, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return "ldap://" + addr
}

func (f *fakeAD) bind(w *gldap.ResponseWriter, r *gldap.Request) {
	f.mu.Lock()
	diag := f.bindDiag
	f.mu.Unlock()
	if diag != "" {
		resp := r.NewBindResponse(gldap.WithResponseCode(gldap.ResultInvalidCredentials))
		resp.SetDiagnosticMessage(diag)
		w.Write(resp)
		return
	}
	w.Write(r.NewBindResponse(gldap.WithResponseCode(gldap.ResultSuccess)))
}

func (f *fakeAD) search(w *gldap.ResponseWriter, r *gldap.Request) {
	m, err := r.GetSearchMessage()
	if err != nil {
		w.Write(r.NewSearchDoneResponse(gldap.WithResponseCode(gldap.ResultProtocolError)))
		return
	}
	entry := func(dn string, attrs map[string][]string) {
		e := r.NewSearchResponseEntry(dn)
		for k, v := range attrs {
			e.AddAttribute(k, v)
		}
		w.Write(e)
	}
	f.mu.Lock()
	usn := 100 + f.usnBump
	f.mu.Unlock()
	switch {
	case m.BaseDN == "" && m.Scope == gldap.BaseObject:
		entry("", map[string][]string{"dsServiceName": {"CN=NTDS Settings,CN=DC1," + fakeBase},
			"highestCommittedUSN": {strconv.Itoa(usn)}, "defaultNamingContext": {fakeBase}})
	case strings.HasPrefix(m.BaseDN, "CN=NTDS Settings"):
		entry(m.BaseDN, map[string][]string{"invocationId": {guid(999)}})
	case m.Scope == gldap.BaseObject:
		f.rangeRequest(entry, m)
	default:
		f.subtree(w, r, m, entry)
		return
	}
	w.Write(r.NewSearchDoneResponse(gldap.WithResponseCode(gldap.ResultSuccess)))
}

// rangeRequest answers a base search for "member;range=N-*".
func (f *fakeAD) rangeRequest(entry func(string, map[string][]string), m *gldap.SearchMessage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, g := range f.groups {
		if !strings.EqualFold(g.dn, m.BaseDN) {
			continue
		}
		for _, a := range m.Attributes {
			name, spec, ok := strings.Cut(a, ";range=")
			if !ok {
				continue
			}
			lo, _ := strconv.Atoi(strings.TrimSuffix(spec, "-*"))
			name, vals := f.ranged(name, g.attrs["member"], lo)
			entry(g.dn, map[string][]string{name: vals})
		}
	}
}

// ranged returns at most maxValRange values from lo, named as AD does
// (f.mu held).
func (f *fakeAD) ranged(attr string, all []string, lo int) (string, []string) {
	if lo > 0 && f.endlessRanges {
		f.rangeRequests++
		vals := make([]string, f.maxValRange)
		for i := range vals {
			vals[i] = fmt.Sprintf("CN=made-up-%d,%s", lo+i, fakeBase)
		}
		return fmt.Sprintf("%s;range=%d-%d", attr, lo, lo+f.maxValRange-1), vals
	}
	lo = min(lo, len(all))
	hi := min(lo+f.maxValRange, len(all))
	if hi == len(all) {
		return fmt.Sprintf("%s;range=%d-*", attr, lo), all[lo:hi]
	}
	return fmt.Sprintf("%s;range=%d-%d", attr, lo, hi-1), all[lo:hi]
}

func (f *fakeAD) subtree(w *gldap.ResponseWriter, r *gldap.Request, m *gldap.SearchMessage, entry func(string, map[string][]string)) {
	f.mu.Lock()
	stall := f.stall
	f.mu.Unlock()
	if stall != nil {
		<-stall
		return
	}
	f.mu.Lock()
	set := f.users
	isUsers := !strings.Contains(m.Filter, "objectClass=group")
	if !isUsers {
		set = f.groups
	}
	if strings.HasPrefix(m.BaseDN, "CN=Deleted Objects") {
		set, isUsers = nil, false
		if code := f.deletedCode; code != 0 {
			f.mu.Unlock()
			w.Write(r.NewSearchDoneResponse(gldap.WithResponseCode(code)))
			return
		}
	}
	size, cookie := len(set), ""
	for _, c := range m.Controls {
		if pc, ok := c.(*gldap.ControlPaging); ok {
			size, cookie = int(pc.PagingSize), string(pc.Cookie)
		}
	}
	if isUsers {
		f.cookies = append(f.cookies, cookie)
		f.userPages++
	}
	size = min(size, f.maxPage)
	if isUsers && f.paging != pagingNormal {
		page, next := f.hostilePage(cookie, size)
		f.mu.Unlock()
		for _, e := range page {
			entry(e.dn, e.attrs)
		}
		done := r.NewSearchDoneResponse(gldap.WithResponseCode(gldap.ResultSuccess))
		done.SetControls(&gldap.ControlPaging{Cookie: []byte(next)})
		w.Write(done)
		return
	}
	off, _ := strconv.Atoi(cookie)
	end := min(off+size, len(set))
	page := slices.Clone(set[off:end])
	failHere := f.failOnPage > 0 && off/max(size, 1)+1 == f.failOnPage
	f.mu.Unlock()
	for _, e := range page {
		attrs := map[string][]string{}
		for k, v := range e.attrs {
			if strings.EqualFold(k, "member") && len(v) > f.maxValRange {
				k, v = f.ranged(k, v, 0)
			}
			attrs[k] = v
		}
		entry(e.dn, attrs)
	}
	if failHere {
		w.Write(r.NewSearchDoneResponse(gldap.WithResponseCode(gldap.ResultTimeLimitExceeded)))
		return
	}
	next := ""
	if end < len(set) {
		next = strconv.Itoa(end)
	}
	done := r.NewSearchDoneResponse(gldap.WithResponseCode(gldap.ResultSuccess))
	done.SetControls(&gldap.ControlPaging{Cookie: []byte(next)})
	w.Write(done)
}

// hostilePage answers a user search page in f.paging mode (f.mu held):
// the entries and the cookie to return.
func (f *fakeAD) hostilePage(cookie string, size int) ([]fakeEntry, string) {
	switch f.paging {
	case pagingSlotCookie:
		if cookie == "" {
			f.slotOffset = 0
		}
		off := f.slotOffset
		end := min(off+size, len(f.users))
		f.slotOffset = end
		if end == len(f.users) {
			return slices.Clone(f.users[off:end]), ""
		}
		return slices.Clone(f.users[off:end]), "0"
	case pagingSameCookie:
		return slices.Clone(f.users[:min(size, len(f.users))]), "again"
	case pagingSameCookieEmpty:
		return nil, "again"
	case pagingEndlessEntries:
		off, _ := strconv.Atoi(cookie)
		page := make([]fakeEntry, size)
		for i := range page {
			page[i] = fakeUser(off + i)
		}
		return page, strconv.Itoa(off + size)
	case pagingEndlessEmpty:
		n, _ := strconv.Atoi(cookie)
		return nil, strconv.Itoa(n + 1)
	}
	panic("unknown paging mode")
}

func fakeOptions(url string) Options {
	return Options{
		Type: TypeActiveDirectory, URLs: []string{url}, AllowInsecure: true,
		BindDN: "CN=svc," + fakeBase, BindPassword: "pw", UserBaseDN: fakeBase, GroupBaseDN: fakeBase,
		PageSize: 5000, Timeout: 10 * time.Second,
	}
}

func TestFakeADPageCapRangeRetrievalAndFreshCookies(t *testing.T) {
	f := newFakeAD(2500, 2200)
	p := newPoller(t, fakeOptions(f.start(t)))
	for run := range 2 { // a second read must not reuse a stale cookie
		snap, err := p.Snapshot(context.Background())
		if err != nil {
			t.Fatalf("read %d: %v", run, err)
		}
		if len(snap.Users) != 2500 {
			t.Fatalf("read %d: %d users, want 2500 (pages capped at 1000)", run, len(snap.Users))
		}
		if len(snap.Groups) != 1 || len(snap.Groups[0].Members) != 2200 {
			t.Fatalf("read %d: big group has %d members, want 2200 via member;range", run, len(snap.Groups[0].Members))
		}
		got := decisions(t, snap, "corp.example", map[string]string{"CN=Big,OU=Groups," + fakeBase: "pro"}, time.Now())
		if d := got["u02199@corp.example"]; d.Permission != entitlement.PermissionPro {
			t.Errorf("read %d: member 2200 is %s, want pro", run, d.Permission)
		}
		if d := got["u02200@corp.example"]; d.Permission != entitlement.PermissionNone {
			t.Errorf("read %d: non-member is %s", run, d.Permission)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if want := []string{"", "1000", "2000", "", "1000", "2000"}; !slices.Equal(f.cookies, want) {
		t.Fatalf("cookies sent %q, want %q", f.cookies, want)
	}
}

func TestFakeADTimeLimitAfterEntriesFailsTheRead(t *testing.T) {
	f := newFakeAD(2500, 10)
	p := newPoller(t, fakeOptions(f.start(t)))
	good, err := p.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.failOnPage = 2
	f.mu.Unlock()
	snap, err := p.Snapshot(context.Background())
	if err == nil || snap != nil {
		t.Fatalf("page 2 ended in timeLimitExceeded, yet the read returned %v, %v", snap, err)
	}
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultTimeLimitExceeded) {
		t.Fatalf("error %v is not timeLimitExceeded", err)
	}
	if p.last.snap != good {
		t.Fatal("the failed read replaced the last good snapshot")
	}
}

func TestFakeADStalledServerTimesOut(t *testing.T) {
	f := newFakeAD(10, 0)
	f.stall = make(chan struct{})
	o := fakeOptions(f.start(t))
	o.Timeout = 300 * time.Millisecond
	_, err := newPoller(t, o).Snapshot(context.Background())
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("stalled server: %v, want a timeout", err)
	}
}

func TestFakeADCancelledContextFailsTheRead(t *testing.T) {
	f := newFakeAD(10, 0)
	f.stall = make(chan struct{})
	p := newPoller(t, fakeOptions(f.start(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := p.Snapshot(ctx); err == nil {
		t.Fatal("a read cut by its context succeeded")
	}
}

func TestFakeADBindLockedOut(t *testing.T) {
	f := newFakeAD(10, 0)
	f.bindDiag = "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 775, v4563"
	_, err := newPoller(t, fakeOptions(f.start(t))).Snapshot(context.Background())
	var be *BindError
	if !errors.As(err, &be) || be.Code != "775" || !strings.Contains(err.Error(), "locked out") {
		t.Fatalf("locked-out bind: %v", err)
	}
	if strings.Contains(err.Error(), `"pw"`) {
		t.Fatal("the bind password leaked into the error")
	}
}

func TestFakeADUsersVanishingIsAnError(t *testing.T) {
	f := newFakeAD(10, 0)
	p := newPoller(t, fakeOptions(f.start(t)))
	if _, err := p.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.users = nil
	f.mu.Unlock()
	if _, err := p.Snapshot(context.Background()); !errors.Is(err, ErrNoUsers) {
		t.Fatalf("read with every user gone: %v, want ErrNoUsers", err)
	}
	if _, _, err := p.Incremental(context.Background()); err != nil {
		// The fake serves no uSNChanged filter; the pass must not fail on
		// an unchanged USN either.
		t.Fatalf("incremental with an unchanged USN: %v", err)
	}
}

// TestFakeADTombstonesHidden: an account that may not read CN=Deleted
// Objects (AD answers noSuchObject or insufficientAccessRights) still gets
// incremental passes, so suspensions keep propagating; deletions then wait
// for the next full read. Any other failure of that search fails the pass.
func TestFakeADTombstonesHidden(t *testing.T) {
	for _, tt := range []struct {
		code    int
		wantErr bool
	}{
		{gldap.ResultNoSuchObject, false},
		{gldap.ResultInsufficientAccessRights, false},
		{gldap.ResultOperationsError, true},
	} {
		f := newFakeAD(10, 0)
		p := newPoller(t, fakeOptions(f.start(t)))
		if _, err := p.Snapshot(context.Background()); err != nil {
			t.Fatal(err)
		}
		f.mu.Lock()
		f.deletedCode = tt.code
		f.usnBump = 1 // something changed: the pass reads changes and tombstones
		f.mu.Unlock()
		_, _, err := p.Incremental(context.Background())
		if (err != nil) != tt.wantErr {
			t.Errorf("Deleted Objects answering %d: incremental err = %v; want error %t", tt.code, err, tt.wantErr)
		}
	}
}

func TestParseRange(t *testing.T) {
	cases := []struct {
		in       string
		base     string
		low, hi  int
		isRanged bool
	}{
		{"member;range=0-1499", "member", 0, 1499, true},
		{"member;range=1500-*", "member", 1500, -1, true},
		{"member", "member", 0, 0, false},
		{"member;range=5-2", "member", 0, 0, false},
		{"member;binary", "member", 0, 0, false},
	}
	for _, c := range cases {
		base, r, ok := parseRange(c.in)
		if base != c.base || ok != c.isRanged || (ok && (r.low != c.low || r.high != c.hi)) {
			t.Errorf("parseRange(%q) = %q %+v %v", c.in, base, r, ok)
		}
	}
}

func TestFilterValuesAreEscaped(t *testing.T) {
	got := modifiedSince("20260101000000Z)(uid=*")
	if want := `(modifyTimestamp>=20260101000000Z\29\28uid=\2a)`; got != want {
		t.Fatalf("modifiedSince = %s, want %s", got, want)
	}
}

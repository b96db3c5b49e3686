package ldapwire

import (
	"bytes"
	"context"
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// Responses are built with go-asn1-ber, the encoder go-ldap and servers
// written in Go use, so the decoder is checked against an independent
// encoding.

func message(id int64, op *ber.Packet, controls ...*ber.Packet) []byte {
	env := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "")
	env.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, id, ""))
	env.AppendChild(op)
	if len(controls) > 0 {
		cs := ber.Encode(ber.ClassContext, ber.TypeConstructed, 0, nil, "")
		for _, c := range controls {
			cs.AppendChild(c)
		}
		env.AppendChild(cs)
	}
	return env.Bytes()
}

func entryOp(dn string, attrs ...[]string) *ber.Packet {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationSearchResultEntry, nil, "")
	op.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, dn, ""))
	list := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "")
	for _, a := range attrs {
		one := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "")
		one.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, a[0], ""))
		vals := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSet, nil, "")
		for _, v := range a[1:] {
			vals.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, v, ""))
		}
		one.AppendChild(vals)
		list.AppendChild(one)
	}
	op.AppendChild(list)
	return op
}

func resultOp(app int, code int, diag string) *ber.Packet {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ber.Tag(app), nil, "")
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, code, ""))
	op.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "", ""))
	op.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, diag, ""))
	return op
}

func entryWithoutAttributes() *ber.Packet {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationSearchResultEntry, nil, "")
	op.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "CN=A", ""))
	return op
}

func referenceOp(uri string) *ber.Packet {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationSearchResultReference, nil, "")
	op.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, uri, ""))
	return op
}

// serve answers each request read from the client with the next script
// entry, written as is; it closes the connection after the last one.
func serve(t testing.TB, script ...[]byte) *Conn {
	return pipeServer(t, func(server net.Conn) {
		for _, reply := range script {
			if _, err := ber.ReadPacket(server); err != nil {
				return
			}
			if _, err := server.Write(reply); err != nil {
				return
			}
		}
	})
}

// pipeServer runs server on the far end of a net.Pipe and returns a Conn
// on the near end; server's end is closed when server returns, and the
// test's cleanup closes the Conn and waits for server.
func pipeServer(t testing.TB, server func(net.Conn)) *Conn {
	client, end := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer end.Close()
		server(end)
	}()
	c := NewConn(client, 5*time.Second)
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return c
}

func searchAll(c *Conn) ([]Entry, []ldap.Control, error) {
	var got []Entry
	req := ldap.NewSearchRequest("dc=example", ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", nil, nil)
	controls, err := c.Search(context.Background(), req, func(e *Entry) error {
		cp := Entry{DN: e.DN}
		for _, a := range e.Attrs {
			cp.Attrs = append(cp.Attrs, Attribute{Name: a.Name, Values: append([]string(nil), a.Values...)})
		}
		got = append(got, cp)
		return nil
	})
	return got, controls, err
}

func TestSearchDecodesEntriesReferencesAndPagingCookie(t *testing.T) {
	paging := ldap.NewControlPaging(100)
	paging.SetCookie([]byte{0, 1, 0xff})
	var reply bytes.Buffer
	reply.Write(message(1, entryOp("CN=Alice,DC=example", []string{"objectClass", "top", "person"}, []string{"Mail", "alice@example.test"},
		[]string{"objectGUID", "\x00\x01\x02\xff"}, []string{"member;range=0-1", "a", "b"})))
	reply.Write(message(1, referenceOp("ldap://other.example/DC=other")))
	reply.Write(message(1, entryOp("CN=Bob,DC=example", []string{"OBJECTCLASS", "top", "person"}, []string{"empty"})))
	reply.Write(message(1, resultOp(ldap.ApplicationSearchResultDone, 0, ""), paging.Encode()))
	c := serve(t, reply.Bytes())

	got, controls, err := searchAll(c)
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{DN: "CN=Alice,DC=example", Attrs: []Attribute{
			{"objectclass", []string{"top", "person"}}, {"mail", []string{"alice@example.test"}},
			{"objectguid", []string{"\x00\x01\x02\xff"}}, {"member;range=0-1", []string{"a", "b"}},
		}},
		{DN: "CN=Bob,DC=example", Attrs: []Attribute{{"objectclass", []string{"top", "person"}}, {"empty", nil}}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i].DN != want[i].DN || len(got[i].Attrs) != len(want[i].Attrs) {
			t.Fatalf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
		for j, a := range want[i].Attrs {
			g := got[i].Attrs[j]
			if g.Name != a.Name || strings.Join(g.Values, "|") != strings.Join(a.Values, "|") || len(g.Values) != len(a.Values) {
				t.Errorf("entry %d attribute %d = %+v, want %+v", i, j, g, a)
			}
		}
	}
	pc, ok := ldap.FindControl(controls, ldap.ControlTypePaging).(*ldap.ControlPaging)
	if !ok || !bytes.Equal(pc.Cookie, []byte{0, 1, 0xff}) {
		t.Fatalf("controls %v, want the paging cookie 00 01 ff", controls)
	}
}

func TestSearchResultErrorsAreLDAPErrors(t *testing.T) {
	var reply bytes.Buffer
	reply.Write(message(1, entryOp("CN=Alice,DC=example", []string{"cn", "Alice"})))
	reply.Write(message(1, resultOp(ldap.ApplicationSearchResultDone, ldap.LDAPResultSizeLimitExceeded, "size limit exceeded")))
	c := serve(t, reply.Bytes())
	got, _, err := searchAll(c)
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) || !strings.Contains(err.Error(), "size limit exceeded") {
		t.Fatalf("error %v, want sizeLimitExceeded with the diagnostic", err)
	}
	if len(got) != 1 {
		t.Fatalf("%d entries reached fn before the error, want 1 (the caller discards them)", len(got))
	}
}

func TestBind(t *testing.T) {
	t.Run("accepted", func(t *testing.T) {
		c := serve(t, message(1, resultOp(ldap.ApplicationBindResponse, 0, "")))
		if err := c.Bind(context.Background(), "cn=svc", "secret"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("refused with AD diagnostic", func(t *testing.T) {
		diag := "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 52e, v4563"
		c := serve(t, message(1, resultOp(ldap.ApplicationBindResponse, ldap.LDAPResultInvalidCredentials, diag)))
		err := c.Bind(context.Background(), "cn=svc", "wrong")
		var le *ldap.Error
		if !errors.As(err, &le) || le.ResultCode != ldap.LDAPResultInvalidCredentials || !strings.Contains(le.Err.Error(), "data 52e") {
			t.Fatalf("error %v, want invalidCredentials carrying the diagnostic", err)
		}
	})
	t.Run("empty password never sent", func(t *testing.T) {
		c := serve(t) // the server would fail the test by reading nothing
		if err := c.Bind(context.Background(), "cn=svc", ""); !ldap.IsErrorWithCode(err, ldap.ErrorEmptyPassword) {
			t.Fatalf("error %v, want ErrorEmptyPassword", err)
		}
	})
}

func TestBrokenResponsesFailTheSearch(t *testing.T) {
	good := message(1, entryOp("CN=A,DC=example", []string{"cn", "A"}))
	cases := map[string]struct {
		reply []byte
		want  string
	}{
		"notice of disconnection": {
			message(0, resultOp(ldap.ApplicationExtendedResponse, ldap.LDAPResultUnavailable, "server shutting down")),
			"server closed the connection",
		},
		"another message ID":        {message(7, resultOp(ldap.ApplicationSearchResultDone, 0, "")), "message ID 7"},
		"truncated mid-message":     {append(good[:len(good):len(good)], good[:len(good)-3]...), "unexpected EOF"},
		"closed before the result":  {good, "unexpected EOF"},
		"not a sequence":            {[]byte{0x04, 0x01, 0x00}, "not a SEQUENCE"},
		"element overruns":          {[]byte{0x30, 0x05, 0x02, 0x01, 0x01, 0x64, 0x7f}, "overruns"},
		"bind response to a search": {message(1, resultOp(ldap.ApplicationBindResponse, 0, "")), "unexpected response tag"},
		"indefinite length":         {[]byte{0x30, 0x80, 0x02, 0x01, 0x01, 0x00, 0x00}, "bad message length"},
		"entry without attributes":  {message(1, entryWithoutAttributes()), "without an attribute list"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := serve(t, tc.reply)
			_, _, err := searchAll(c)
			if !ldap.IsErrorWithCode(err, ldap.ErrorNetwork) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want a network error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestLongFormLengthsAreAccepted(t *testing.T) {
	// AD encodes every length in the 4-byte long form (0x84 …).
	long := []byte{
		0x30, 0x84, 0, 0, 0, 0x14,
		0x02, 0x84, 0, 0, 0, 0x01, 0x01,
		0x65, 0x84, 0, 0, 0, 0x07,
		0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00,
	}
	c := serve(t, long)
	if _, _, err := searchAll(c); err != nil {
		t.Fatal(err)
	}
}

func TestTimeoutAndCancellation(t *testing.T) {
	stalled := func(t *testing.T) *Conn {
		client, server := net.Pipe()
		go func() { _, _ = ber.ReadPacket(server) }() // read the request, never answer
		t.Cleanup(func() { client.Close(); server.Close() })
		return NewConn(client, 0)
	}
	req := ldap.NewSearchRequest("dc=example", ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, "(cn=*)", nil, nil)
	noop := func(*Entry) error { return nil }

	c := stalled(t)
	c.Timeout = 50 * time.Millisecond
	if _, err := c.Search(context.Background(), req, noop); !ldap.IsErrorWithCode(err, ldap.ErrorNetwork) || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("stalled server with a timeout: %v, want a network error saying it timed out", err)
	}

	c = stalled(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Search(ctx, req, noop); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stalled server, context ending: %v, want the context's error", err)
	}
}

// TestAnnouncedLengthIsNotAllocated: a server that announces a message of
// (almost) 256 MiB and sends a few bytes costs a few bytes (issue 12 item
// 9: the buffer was allocated at the announced size before any byte
// arrived), and so does one that sends 1 MiB of it: the buffer grows with
// what arrives.
func TestAnnouncedLengthIsNotAllocated(t *testing.T) {
	for _, sent := range []int{10, 1 << 20} {
		reply := append([]byte{0x30, 0x84, 0x0f, 0xff, 0xff, 0xff}, make([]byte, sent)...)
		c := serve(t, reply)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, _, err := searchAll(c)
		runtime.ReadMemStats(&after)
		if !ldap.IsErrorWithCode(err, ldap.ErrorNetwork) || !strings.Contains(err.Error(), "unexpected EOF") {
			t.Fatalf("%d of 256 MiB sent: %v, want a network error (unexpected EOF)", sent, err)
		}
		if limit := 2*sent + minGrowth; cap(c.msg) > limit {
			t.Errorf("%d bytes arrived: buffer of %d bytes, want at most %d", sent, cap(c.msg), limit)
		}
		// Everything the search allocated, the buffer's earlier sizes
		// included: far below the announced 256 MiB.
		if got := after.TotalAlloc - before.TotalAlloc; got > 16<<20 {
			t.Errorf("%d bytes arrived: the search allocated %d bytes", sent, got)
		}
	}
}

// TestLengthsAreUnsigned: a 4-byte length of 0xffffffff is a length, not
// -1 (it was, where int has 32 bits: the message buffer's make panicked and
// an element slice ran out of range). Run with GOARCH=386 too.
func TestLengthsAreUnsigned(t *testing.T) {
	c := serve(t, []byte{0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x02, 0x01, 0x01})
	if _, _, err := searchAll(c); !ldap.IsErrorWithCode(err, ldap.ErrorNetwork) || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("message of 0xffffffff bytes: %v, want a network error saying it is too long", err)
	}
	for _, b := range [][]byte{
		{0x04, 0x84, 0xff, 0xff, 0xff, 0xff, 0x00},
		{0x04, 0x84, 0x80, 0x00, 0x00, 0x00, 0x00},
		{0x04, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x00},
	} {
		if _, _, _, err := next(b); err == nil || !strings.Contains(err.Error(), "overruns") {
			t.Errorf("next(% x) = %v, want an overrun error", b, err)
		}
	}
}

func TestParseInt(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want int64
		ok   bool
	}{
		{[]byte{0x00}, 0, true},
		{[]byte{0x7f}, 127, true},
		{[]byte{0x00, 0x80}, 128, true},
		{[]byte{0xff}, -1, true},
		{[]byte{0x01, 0x00, 0x00, 0x00}, 1 << 24, true},
		{nil, 0, false},
		{make([]byte, 9), 0, false},
	} {
		got, ok := parseInt(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseInt(% x) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzSearchResponse feeds arbitrary bytes to a search as the server's
// answer: the client must return (an entry stream and an error or a
// result), never panic or hang, and never hold a buffer much larger than
// the bytes that arrived, whatever lengths they announce.
func FuzzSearchResponse(f *testing.F) {
	var ok bytes.Buffer
	ok.Write(message(1, entryOp("CN=A,DC=example", []string{"objectClass", "top"}, []string{"member;range=0-*", "x"})))
	ok.Write(message(1, referenceOp("ldap://x/")))
	ok.Write(message(1, resultOp(ldap.ApplicationSearchResultDone, 0, ""), ldap.NewControlPaging(10).Encode()))
	f.Add(ok.Bytes())
	f.Add(message(1, resultOp(ldap.ApplicationSearchResultDone, 4, "limit")))
	f.Add(message(0, resultOp(ldap.ApplicationExtendedResponse, 52, "bye")))
	f.Add([]byte{0x30, 0x84, 0x0f, 0xff, 0xff, 0xff, 0x02, 0x01, 0x01})                   // 256 MiB announced, 3 bytes sent
	f.Add([]byte{0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x02, 0x01, 0x01})                   // 4 GiB announced
	f.Add([]byte{0x30, 0x0a, 0x02, 0x01, 0x01, 0x64, 0x84, 0xff, 0xff, 0xff, 0xff, 0x04}) // an element of 4 GiB inside
	f.Fuzz(func(t *testing.T, reply []byte) {
		c := serve(t, reply)
		c.Timeout = time.Second
		entries, _, err := searchAll(c)
		if err == nil && len(reply) == 0 {
			t.Fatal("an empty answer succeeded")
		}
		if limit := 2*len(reply) + minGrowth; cap(c.msg) > limit {
			t.Fatalf("%d bytes arrived, the message buffer holds %d", len(reply), cap(c.msg))
		}
		for _, e := range entries {
			for _, a := range e.Attrs {
				if a.Name != strings.ToLower(a.Name) {
					t.Fatalf("attribute name %q not lower case", a.Name)
				}
			}
		}
		// The read-ahead path reads the same answer to the same end.
		pc := serve(t, reply)
		pc.Timeout = time.Second
		var paged []string
		pagedErr := pc.SearchPaged(context.Background(), pagedReq, 10, 1, func(e *Entry) error {
			paged = append(paged, e.DN)
			return nil
		}, func([]ldap.Control) error { return nil })
		if (pagedErr == nil) != (err == nil) {
			t.Fatalf("Search error %v, SearchPaged error %v", err, pagedErr)
		}
		if err == nil && len(paged) != len(entries) {
			t.Fatalf("Search read %d entries, SearchPaged %d", len(entries), len(paged))
		}
	})
}

package ldapwire

import (
	"bytes"
	"context"
	"errors"
	"net"
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
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer server.Close()
		for _, reply := range script {
			if _, err := ber.ReadPacket(server); err != nil {
				return
			}
			if _, err := server.Write(reply); err != nil {
				return
			}
		}
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
// result), never panic or hang.
func FuzzSearchResponse(f *testing.F) {
	var ok bytes.Buffer
	ok.Write(message(1, entryOp("CN=A,DC=example", []string{"objectClass", "top"}, []string{"member;range=0-*", "x"})))
	ok.Write(message(1, referenceOp("ldap://x/")))
	ok.Write(message(1, resultOp(ldap.ApplicationSearchResultDone, 0, ""), ldap.NewControlPaging(10).Encode()))
	f.Add(ok.Bytes())
	f.Add(message(1, resultOp(ldap.ApplicationSearchResultDone, 4, "limit")))
	f.Add(message(0, resultOp(ldap.ApplicationExtendedResponse, 52, "bye")))
	f.Fuzz(func(t *testing.T, reply []byte) {
		c := serve(t, reply)
		c.Timeout = time.Second
		entries, _, err := searchAll(c)
		if err == nil && len(reply) == 0 {
			t.Fatal("an empty answer succeeded")
		}
		for _, e := range entries {
			for _, a := range e.Attrs {
				if a.Name != strings.ToLower(a.Name) {
					t.Fatalf("attribute name %q not lower case", a.Name)
				}
			}
		}
	})
}

// Package ldapwire is a small LDAPv3 client for one job: streaming a large
// paged subtree search fast. It speaks simple bind, StartTLS and search;
// requests are encoded with go-asn1-ber and go-ldap's filter compiler and
// controls, so they are byte for byte what go-ldap sends.
//
// It exists because go-ldap decodes every response into a tree of BER
// packets, each element copying its bytes into its own buffer: reading a
// directory of 100k users that way costs several times what ldapsearch
// spends (docs/performance.md). Here each response message is read into
// one reused buffer and walked in place; only attribute values become
// strings. The buffer grows only as a message's bytes arrive, never to a
// length the server merely announces.
//
// Errors are *ldap.Error values (result codes, and ldap.ErrorNetwork for
// I/O and malformed responses), so callers treat them as go-ldap's; like
// go-ldap's they carry no package prefix, and a context that ended is
// returned as the context's error.
//
// A Conn is used by one goroutine at a time and runs one request at a time.
package ldapwire

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// maxMessage bounds one response message (a group with a million members
// is about 60 MB); a longer length is a protocol error, not an allocation.
const maxMessage = 256 << 20

// minGrowth is the least a message buffer grows by (see readBody).
const minGrowth = 64 << 10

// BER tags of the messages this client reads and writes (RFC 4511).
const (
	tagInteger    = 0x02
	tagOctets     = 0x04
	tagEnumerated = 0x0a
	tagSequence   = 0x30
	tagSet        = 0x31

	tagBindResponse     = 0x61 // [APPLICATION 1]
	tagSearchEntry      = 0x64 // [APPLICATION 4]
	tagSearchDone       = 0x65 // [APPLICATION 5]
	tagSearchReference  = 0x73 // [APPLICATION 19]
	tagExtendedResponse = 0x78 // [APPLICATION 24]
	tagControls         = 0xa0 // [0]
)

// Conn is one LDAP connection.
type Conn struct {
	nc net.Conn
	r  *bufio.Reader
	// Timeout bounds each request: a bind, a StartTLS, one search (for a
	// paged search, one page). Zero means no bound.
	Timeout time.Duration

	lastID int32
	msg    []byte            // the message being decoded, reused
	attrs  []Attribute       // the entry being decoded, reused
	names  map[string]string // attribute name as sent → lower case
	consts map[string]string // objectClass values, shared
}

// NewConn wraps an established connection (plain TCP or TLS).
func NewConn(nc net.Conn, timeout time.Duration) *Conn {
	return &Conn{
		nc: nc, r: bufio.NewReaderSize(nc, 64<<10), Timeout: timeout,
		names: map[string]string{}, consts: map[string]string{},
	}
}

// Close closes the connection.
func (c *Conn) Close() error { return c.nc.Close() }

// Attribute is one attribute of an entry: the name in lower case, as
// sent otherwise (options such as ";range=0-1499" included).
type Attribute struct {
	Name   string
	Values []string
}

// Entry is one search result entry. It and its Attrs slice are reused for
// the next entry: keep the strings, not the slices.
type Entry struct {
	DN    string
	Attrs []Attribute
}

// Values returns the values of the attribute named name (lower case).
func (e *Entry) Values(name string) []string {
	for i := range e.Attrs {
		if e.Attrs[i].Name == name {
			return e.Attrs[i].Values
		}
	}
	return nil
}

// StartTLS upgrades the connection (RFC 4511 extended operation
// 1.3.6.1.4.1.1466.20037) and verifies the server with cfg.
func (c *Conn) StartTLS(ctx context.Context, cfg *tls.Config) error {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationExtendedRequest, nil, "Start TLS")
	op.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 0, "1.3.6.1.4.1.1466.20037", "TLS Extended Command"))
	defer c.watch(ctx)()
	id, err := c.send(op, nil)
	if err != nil {
		return err
	}
	if _, err := c.readResult(ctx, id, tagExtendedResponse); err != nil {
		return err
	}
	if c.r.Buffered() > 0 {
		return ldap.NewError(ldap.ErrorNetwork, errors.New("server sent data before the TLS handshake"))
	}
	tc := tls.Client(c.nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return ldap.NewError(ldap.ErrorNetwork, fmt.Errorf("tls handshake: %w", err))
	}
	c.nc = tc
	c.r.Reset(tc)
	return nil
}

// Bind does a simple bind. An empty password is refused here: servers
// treat it as an unauthenticated bind that "succeeds" (RFC 4513 5.1.2).
func (c *Conn) Bind(ctx context.Context, dn, password string) error {
	if password == "" {
		return ldap.NewError(ldap.ErrorEmptyPassword, errors.New("empty password not allowed by the client"))
	}
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationBindRequest, nil, "Bind Request")
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, 3, "Version"))
	op.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, dn, "User Name"))
	op.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 0, password, "Password"))
	defer c.watch(ctx)()
	id, err := c.send(op, nil)
	if err != nil {
		return err
	}
	_, err = c.readResult(ctx, id, tagBindResponse)
	return err
}

// Search runs req once (no paging of its own; put a paging control in
// req.Controls) and calls fn for every entry as it arrives. It returns the
// controls of the final result; a result other than success (including
// sizeLimitExceeded after entries) is an *ldap.Error. Continuation
// references are skipped. An error from fn ends the search with that
// error; the connection is then unusable (the rest of the response was not
// read) and must be closed.
func (c *Conn) Search(ctx context.Context, req *ldap.SearchRequest, fn func(*Entry) error) ([]ldap.Control, error) {
	op, err := searchOp(req)
	if err != nil {
		return nil, err
	}
	defer c.watch(ctx)()
	id, err := c.send(op, req.Controls)
	if err != nil {
		return nil, err
	}
	var e Entry
	for {
		gotID, tag, body, controls, err := c.readMessage(ctx)
		if err != nil {
			return nil, err
		}
		if gotID != id {
			return nil, unexpected(gotID, tag, body, id)
		}
		switch tag {
		case tagSearchEntry:
			if err := c.decodeEntry(body, &e); err != nil {
				return nil, err
			}
			if err := fn(&e); err != nil {
				return nil, err
			}
		case tagSearchReference:
		case tagSearchDone:
			if err := decodeResult(body); err != nil {
				return nil, err
			}
			return decodeControls(controls)
		default:
			return nil, protocolError("unexpected response tag 0x%02x to a search", tag)
		}
	}
}

// searchOp encodes req's SearchRequest operation (RFC 4511 4.5.1); its
// controls are not part of it.
func searchOp(req *ldap.SearchRequest) (*ber.Packet, error) {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationSearchRequest, nil, "Search Request")
	op.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, req.BaseDN, "Base DN"))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, uint64(req.Scope), "Scope"))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, uint64(req.DerefAliases), "Deref Aliases"))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, uint64(req.SizeLimit), "Size Limit"))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, uint64(req.TimeLimit), "Time Limit"))
	op.AppendChild(ber.NewBoolean(ber.ClassUniversal, ber.TypePrimitive, ber.TagBoolean, req.TypesOnly, "Types Only"))
	filter, err := ldap.CompileFilter(req.Filter)
	if err != nil {
		return nil, err
	}
	op.AppendChild(filter)
	attrs := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "Attributes")
	for _, a := range req.Attributes {
		attrs.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, a, "Attribute"))
	}
	op.AppendChild(attrs)
	return op, nil
}

// watch bounds the request by Timeout and by ctx: either unblocks a
// pending read or write with a deadline in the past. The returned func
// ends the watch.
func (c *Conn) watch(ctx context.Context) func() {
	if c.Timeout > 0 {
		_ = c.nc.SetDeadline(time.Now().Add(c.Timeout))
	}
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
	return func() {
		stop()
		_ = c.nc.SetDeadline(time.Time{})
	}
}

// send writes one request with the next message ID, which it returns.
func (c *Conn) send(op *ber.Packet, controls []ldap.Control) (int32, error) {
	c.lastID++
	env := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "LDAP Request")
	env.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, int64(c.lastID), "Message ID"))
	env.AppendChild(op)
	if len(controls) > 0 {
		cs := ber.Encode(ber.ClassContext, ber.TypeConstructed, 0, nil, "Controls")
		for _, ctl := range controls {
			cs.AppendChild(ctl.Encode())
		}
		env.AppendChild(cs)
	}
	if _, err := c.nc.Write(env.Bytes()); err != nil {
		return 0, ldap.NewError(ldap.ErrorNetwork, err)
	}
	return c.lastID, nil
}

// readResult reads the one response to request id, of type tag, and
// returns its controls; a result other than success is an *ldap.Error.
func (c *Conn) readResult(ctx context.Context, id int32, tag byte) ([]byte, error) {
	gotID, gotTag, body, controls, err := c.readMessage(ctx)
	if err != nil {
		return nil, err
	}
	if gotID != id || gotTag != tag {
		return nil, unexpected(gotID, gotTag, body, id)
	}
	return controls, decodeResult(body)
}

// readMessage reads one LDAPMessage and returns its ID, the tag and
// content of its protocolOp and the content of its controls (nil when
// none). body and controls alias the reused buffer.
func (c *Conn) readMessage(ctx context.Context) (id int32, tag byte, body, controls []byte, err error) {
	first, err := c.r.ReadByte()
	if err != nil {
		return 0, 0, nil, nil, c.ioError(ctx, err)
	}
	if first != tagSequence {
		return 0, 0, nil, nil, protocolError("message starts with tag 0x%02x, not a SEQUENCE", first)
	}
	n, err := readLength(c.r)
	if err != nil {
		return 0, 0, nil, nil, c.ioError(ctx, err)
	}
	if n > maxMessage {
		return 0, 0, nil, nil, protocolError("message of %d bytes is longer than %d", n, maxMessage)
	}
	if err := c.readBody(int(n)); err != nil {
		return 0, 0, nil, nil, c.ioError(ctx, err)
	}
	t, idBytes, rest, err := next(c.msg)
	if err != nil || t != tagInteger {
		return 0, 0, nil, nil, protocolError("message has no message ID")
	}
	id64, ok := parseInt(idBytes)
	if !ok || id64 < 0 || id64 > 1<<31-1 {
		return 0, 0, nil, nil, protocolError("bad message ID")
	}
	tag, body, rest, err = next(rest)
	if err != nil {
		return 0, 0, nil, nil, err
	}
	if len(rest) > 0 {
		t, controls, _, err = next(rest)
		if err != nil {
			return 0, 0, nil, nil, err
		}
		if t != tagControls {
			controls = nil
		}
	}
	return int32(id64), tag, body, controls, nil
}

// readBody reads the n bytes of a message into c.msg. The length comes
// from the server, so the buffer grows only as bytes arrive: at most
// doubling, by at least minGrowth, never past n. A server that announces
// 256 MiB and sends a few bytes costs a few bytes, not the announced
// length. c.msg keeps its capacity for the next message.
func (c *Conn) readBody(n int) error {
	buf := c.msg[:0]
	for len(buf) < n {
		if len(buf) == cap(buf) {
			// Grow by the larger of minGrowth and what arrived so far,
			// never past n.
			grow := min(max(len(buf), minGrowth), n-len(buf))
			nb := make([]byte, len(buf), len(buf)+grow)
			copy(nb, buf)
			buf = nb
		}
		k, err := c.r.Read(buf[len(buf):min(cap(buf), n)])
		buf = buf[:len(buf)+k]
		if err != nil {
			c.msg = buf[:0]
			return err
		}
	}
	c.msg = buf
	return nil
}

// ioError turns a read failure into an ErrorNetwork *ldap.Error, or the
// context's error when the context ended it.
func (c *Conn) ioError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("request timed out after %s: %w", c.Timeout, err)
	}
	return ldap.NewError(ldap.ErrorNetwork, err)
}

// decodeEntry fills e from a SearchResultEntry's content.
func (c *Conn) decodeEntry(body []byte, e *Entry) error {
	t, dn, rest, err := next(body)
	if err != nil || t != tagOctets {
		return protocolError("search entry without a DN")
	}
	t, list, _, err := next(rest)
	if err != nil || t != tagSequence {
		return protocolError("search entry %q without an attribute list", dn)
	}
	e.DN = string(dn)
	attrs := c.attrs[:0]
	for len(list) > 0 {
		var one []byte
		if t, one, list, err = next(list); err != nil || t != tagSequence {
			return protocolError("bad attribute in entry %q", e.DN)
		}
		t, name, vals, err := next(one)
		if err != nil || t != tagOctets {
			return protocolError("attribute without a name in entry %q", e.DN)
		}
		if t, vals, _, err = next(vals); err != nil || t != tagSet {
			return protocolError("attribute %q without a value set in entry %q", name, e.DN)
		}
		a := Attribute{Name: c.lowerName(name)}
		shared := a.Name == "objectclass"
		for len(vals) > 0 {
			var v []byte
			if t, v, vals, err = next(vals); err != nil || t != tagOctets {
				return protocolError("bad value of %q in entry %q", a.Name, e.DN)
			}
			if shared {
				a.Values = append(a.Values, c.constant(v))
			} else {
				a.Values = append(a.Values, string(v))
			}
		}
		attrs = append(attrs, a)
	}
	clear(attrs[len(attrs):cap(attrs)])
	c.attrs = attrs
	e.Attrs = attrs
	return nil
}

// lowerName returns the attribute name in lower case; the few names a
// search returns are converted once.
func (c *Conn) lowerName(b []byte) string {
	if s, ok := c.names[string(b)]; ok {
		return s
	}
	s := strings.ToLower(string(b))
	if len(c.names) < 1024 {
		c.names[string(b)] = s
	}
	return s
}

// constant returns v as a string shared by every entry holding the same
// value (objectClass: a handful of values on every entry).
func (c *Conn) constant(v []byte) string {
	if s, ok := c.consts[string(v)]; ok {
		return s
	}
	s := string(v)
	if len(c.consts) < 1024 {
		c.consts[s] = s
	}
	return s
}

// decodeResult returns nil for an LDAPResult with resultCode success, or
// the result as an *ldap.Error.
func decodeResult(body []byte) error {
	t, code, rest, err := next(body)
	if err != nil || t != tagEnumerated {
		return protocolError("result without a result code")
	}
	rc, ok := parseInt(code)
	if !ok || rc < 0 || rc > 0xffff {
		return protocolError("bad result code")
	}
	if rc == ldap.LDAPResultSuccess {
		return nil
	}
	var matched, diag []byte
	if t, matched, rest, err = next(rest); err == nil && t == tagOctets {
		if t, diag, _, err = next(rest); err != nil || t != tagOctets {
			diag = nil
		}
	}
	le := &ldap.Error{ResultCode: uint16(rc), MatchedDN: string(matched), Err: errors.New(string(diag))}
	return le
}

// decodeControls decodes the content of a [0] Controls element.
func decodeControls(b []byte) ([]ldap.Control, error) {
	var out []ldap.Control
	for len(b) > 0 {
		start := b
		t, _, rest, err := next(b)
		if err != nil || t != tagSequence {
			return nil, protocolError("bad control")
		}
		p, err := ber.DecodePacketErr(start[:len(start)-len(rest)])
		if err != nil {
			return nil, protocolError("bad control: %v", err)
		}
		ctl, err := ldap.DecodeControl(p)
		if err != nil {
			return nil, protocolError("bad control: %v", err)
		}
		out = append(out, ctl)
		b = rest
	}
	return out, nil
}

// unexpected describes a message that is not the awaited response: a
// notice of disconnection (message ID 0) carries the server's reason.
func unexpected(id int32, tag byte, body []byte, want int32) error {
	if id == 0 && tag == tagExtendedResponse {
		err := decodeResult(body)
		if err == nil {
			err = errors.New("notice of disconnection")
		}
		return ldap.NewError(ldap.ErrorNetwork, fmt.Errorf("server closed the connection: %w", err))
	}
	return protocolError("response with message ID %d and tag 0x%02x while waiting for %d", id, tag, want)
}

func protocolError(format string, args ...any) error {
	return ldap.NewError(ldap.ErrorNetwork, fmt.Errorf("malformed LDAP response: "+format, args...))
}

// next splits b into its first BER element (single-byte tag, definite
// length: RFC 4511 5.1 allows no other) and what follows it.
func next(b []byte) (tag byte, content, rest []byte, err error) {
	if len(b) < 2 {
		return 0, nil, nil, protocolError("truncated element")
	}
	tag = b[0]
	if tag&0x1f == 0x1f {
		return 0, nil, nil, protocolError("multi-byte tag")
	}
	// Lengths are unsigned and at most 4 bytes (32 bits), computed in 64
	// bits and compared with what is left before any conversion to int:
	// no overflow, also where int has 32 bits.
	n, hdr := uint64(b[1]), 2
	if n&0x80 != 0 {
		k := int(n & 0x7f)
		if k == 0 || k > 4 || len(b) < 2+k {
			return 0, nil, nil, protocolError("bad length")
		}
		n = 0
		for _, x := range b[2 : 2+k] {
			n = n<<8 | uint64(x)
		}
		hdr += k
	}
	if n > uint64(len(b)-hdr) {
		return 0, nil, nil, protocolError("element of %d bytes overruns its container", n)
	}
	end := hdr + int(n)
	return tag, b[hdr:end], b[end:], nil
}

// readLength reads a definite BER length (at most 4 bytes) from r.
func readLength(r *bufio.Reader) (uint64, error) {
	b, err := r.ReadByte()
	if err != nil {
		return 0, err
	}
	if b&0x80 == 0 {
		return uint64(b), nil
	}
	k := int(b & 0x7f)
	if k == 0 || k > 4 {
		return 0, protocolError("bad message length")
	}
	var n uint64
	for range k {
		if b, err = r.ReadByte(); err != nil {
			return 0, err
		}
		n = n<<8 | uint64(b)
	}
	return n, nil
}

// parseInt decodes a BER INTEGER or ENUMERATED of up to 8 bytes.
func parseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 8 {
		return 0, false
	}
	v := int64(int8(b[0]))
	for _, x := range b[1:] {
		v = v<<8 | int64(x)
	}
	return v, true
}

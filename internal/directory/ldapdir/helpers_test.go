package ldapdir

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/mapper"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/directory"
)

// decisions maps snap under bindings (group → permission) for domain and
// returns the decisions by email.
func decisions(t *testing.T, snap *directory.Snapshot, domain string, bindings map[string]string, now time.Time) map[string]entitlement.Decision {
	t.Helper()
	p := mapper.Policy{Account: "acme", ClaimedDomains: []string{domain}}
	for g, perm := range bindings {
		p.Bindings = append(p.Bindings, mapper.Binding{Group: g, Permission: entitlement.Permission(perm)})
	}
	res := mapper.Map(p, snap, now)
	if len(res.Problems) > 0 {
		t.Fatalf("mapping problems: %+v", res.Problems)
	}
	out := map[string]entitlement.Decision{}
	for _, d := range res.Decisions {
		out[d.Email] = d
	}
	return out
}

// want is an expected decision.
type want struct {
	perm   entitlement.Permission
	reason entitlement.Reason
}

func checkDecisions(t *testing.T, got map[string]entitlement.Decision, wants map[string]want) {
	t.Helper()
	for email, w := range wants {
		d, ok := got[email]
		if w.reason == entitlement.ReasonUnknownUser {
			if ok {
				t.Errorf("%s: got a decision %s/%s, want none (skipped)", email, d.Permission, d.Reason)
			}
			continue
		}
		if !ok {
			t.Errorf("%s: no decision, want %s/%s", email, w.perm, w.reason)
			continue
		}
		if d.Permission != w.perm || d.Reason != w.reason {
			t.Errorf("%s: got %s/%s, want %s/%s", email, d.Permission, d.Reason, w.perm, w.reason)
		}
	}
}

// cutProxy forwards one TCP connection at a time to target and cuts every
// connection after limit bytes of server→client traffic: a disconnect in
// the middle of a search.
type cutProxy struct {
	l      net.Listener
	target string
	limit  int64
	wg     sync.WaitGroup
}

func newCutProxy(t *testing.T, target string, limit int64) *cutProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l, target: target, limit: limit}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() { l.Close(); p.wg.Wait() })
	return p
}

func (p *cutProxy) Addr() string { return p.l.Addr().String() }

func (p *cutProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.wg.Add(2)
		go func() { defer p.wg.Done(); io.Copy(s, c); s.Close() }()
		go func() {
			defer p.wg.Done()
			io.CopyN(c, s, p.limit)
			c.Close()
			s.Close()
		}()
	}
}

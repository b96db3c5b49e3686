package netpolicy

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	p, err := New([]string{"10.20.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	for addr, ok := range map[string]bool{
		"8.8.8.8": true, "2606:4700::1111": true, "10.20.3.4": true,
		"127.0.0.1": false, "::1": false, "10.0.0.1": false, "192.168.1.1": false, "172.16.5.5": false,
		"169.254.169.254": false, "100.64.0.1": false, "0.0.0.0": false, "::": false, "fd00::1": false,
		"fe80::1": false, "::ffff:127.0.0.1": false, "::ffff:10.20.0.1": true, "224.0.0.1": false,
	} {
		if err := p.Check(netip.MustParseAddr(addr)); (err == nil) != ok {
			t.Errorf("Check(%s) = %v; want allowed=%t", addr, err, ok)
		}
	}
	if _, err := New([]string{"not a cidr"}); err == nil {
		t.Error("a bad CIDR accepted")
	}
}

type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if ips, ok := f[host]; ok {
		return ips, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func TestCheckHost(t *testing.T) {
	p, _ := New(nil)
	r := fakeResolver{
		"dc.acme.example":   {netip.MustParseAddr("203.0.113.10")},
		"sneaky.example":    {netip.MustParseAddr("203.0.113.11"), netip.MustParseAddr("127.0.0.1")},
		"metadata.internal": {netip.MustParseAddr("169.254.169.254")},
	}
	ctx := context.Background()
	if err := p.CheckHost(ctx, r, "dc.acme.example"); err != nil {
		t.Errorf("public host refused: %v", err)
	}
	for _, host := range []string{"sneaky.example", "metadata.internal", "127.0.0.1", "[::1]", "nowhere.example"} {
		if err := p.CheckHost(ctx, r, host); err == nil {
			t.Errorf("CheckHost(%s) allowed", host)
		}
	}
}

// TestDialerRefusesAtConnect: the dialer refuses a denied address on the
// real connect, whatever resolved it (DNS rebinding after validation).
func TestDialerRefusesAtConnect(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	strict, _ := New(nil)
	_, err = strict.Dialer(&net.Dialer{Timeout: time.Second}).Dial("tcp", l.Addr().String())
	if err == nil || !strings.Contains(err.Error(), "may not reach") {
		t.Errorf("dial of a loopback listener: %v; want refused by the policy", err)
	}
	allowLoopback, _ := New([]string{"127.0.0.0/8"})
	c, err := allowLoopback.Dialer(nil).Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("dial with loopback allowed: %v", err)
	}
	c.Close()
	var none *Policy
	c, err = none.Dialer(nil).Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("a nil policy refused: %v", err)
	}
	c.Close()
}

// Package netpolicy decides which addresses dirsync may connect to on a
// tenant's behalf. An account created through the accounts API names its
// own LDAP URLs and Okta org URL; without a policy, a tenant could point
// them at our internal network (a Redis, a metadata service, a database)
// and use the sync's error messages to probe it.
//
// The policy is checked twice: when an account is created (every address
// its host names resolve to) and again on every connection, on the address
// actually dialled (a net.Dialer Control hook), so DNS rebinding between
// the two does not get through.
package netpolicy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
)

// defaultDenied are the ranges refused unless explicitly allowed:
// loopback, link-local (cloud metadata at 169.254.169.254), private
// (RFC 1918, RFC 6598 shared, ULA), unspecified, multicast and the other
// special-purpose blocks no directory lives in.
var defaultDenied = mustPrefixes(
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
	"192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
	"::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8", "64:ff9b::/96", "2001:db8::/32",
)

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// Policy allows every address except the default-denied ranges, of which
// it allows those listed in Allowed.
type Policy struct {
	allowed []netip.Prefix
}

// New returns the policy with allowed networks in CIDR form
// (accounts_api.allowed_networks), e.g. "10.20.0.0/16" for directories
// reached over a private link.
func New(allowed []string) (*Policy, error) {
	p := &Policy{}
	for _, s := range allowed {
		pf, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%q is not a network in CIDR form (e.g. 10.20.0.0/16): %w", s, err)
		}
		p.allowed = append(p.allowed, pf.Masked())
	}
	return p, nil
}

// Check returns an error when ip may not be connected to.
func (p *Policy) Check(ip netip.Addr) error {
	ip = ip.Unmap()
	for _, a := range p.allowed {
		if a.Contains(ip) {
			return nil
		}
	}
	for _, d := range defaultDenied {
		if d.Contains(ip) {
			return fmt.Errorf("%s is in %s, which accounts created through the API may not reach (allow it in accounts_api.allowed_networks)", ip, d)
		}
	}
	return nil
}

// Resolver is what CheckHost needs of a resolver (net.DefaultResolver).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// CheckHost resolves host (a name or an address) and returns an error when
// any of its addresses is refused, or when it does not resolve.
func (p *Policy) CheckHost(ctx context.Context, r Resolver, host string) error {
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return p.Check(ip)
	}
	ips, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", host, err)
	}
	for _, ip := range ips {
		if err := p.Check(ip); err != nil {
			return fmt.Errorf("%s resolves to %w", host, err)
		}
	}
	return nil
}

// Control is a net.Dialer Control hook enforcing the policy on the address
// actually dialled.
func (p *Policy) Control(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("netpolicy: dialled %q, not an address", address)
	}
	return p.Check(ip)
}

// Dialer returns a copy of base (nil: a zero Dialer) that refuses, at
// connect time, every address the policy refuses. A nil policy returns
// base unchanged: accounts from the YAML file, which only ops edit, are not
// restricted.
func (p *Policy) Dialer(base *net.Dialer) *net.Dialer {
	d := &net.Dialer{}
	if base != nil {
		c := *base
		d = &c
	}
	if p == nil {
		return d
	}
	prev := d.Control
	d.Control = func(network, address string, c syscall.RawConn) error {
		if err := p.Control(network, address, c); err != nil {
			return err
		}
		if prev != nil {
			return prev(network, address, c)
		}
		return nil
	}
	return d
}

package apimux

import (
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Hosts are the Host header values the API answers. A browser tricked by
// DNS rebinding sends the attacker's host name, so a name is answered
// only when it is localhost or allowed; an IP address (what probes and
// local tools use) is always answered. The zero Hosts answers IP
// addresses and localhost only.
type Hosts struct {
	allowed map[string]bool
	anyName bool
}

// HostsFor returns the Host policy of a listener bound to addr: IP
// addresses, localhost and the allowed names (api.allowed_hosts). A
// listener that is not loopback-only and has no allowed names answers any
// name: the network already reaches it, and every route but the public
// ones needs a token there.
func HostsFor(addr net.Addr, allowed []string) Hosts {
	h := Hosts{allowed: map[string]bool{}}
	for _, a := range allowed {
		h.allowed[hostName(a)] = true
	}
	if _, err := LoopbackListener(addr); err != nil && len(allowed) == 0 {
		h.anyName = true
	}
	return h
}

// hostName is host without port, brackets or trailing dot, lower-cased.
func hostName(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
}

func (h Hosts) admits(host string) bool {
	name := hostName(host)
	if name == "" {
		return true // HTTP/1.0 without Host: no browser sends that
	}
	return net.ParseIP(name) != nil || name == "localhost" || h.anyName || h.allowed[name]
}

// sameOrigin refuses requests a browser sends for another site: an Origin
// that is not this API's own (scheme http or https, same host and port as
// the Host header), or a Sec-Fetch-Site of cross-site or same-site.
// Requests without those headers (CLI, curl, services, probes) pass.
func sameOrigin(r *http.Request) (string, bool) {
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "cross-site", "same-site":
		return fmt.Sprintf("cross-site request refused (Sec-Fetch-Site: %s): the dirsync API is not for web pages", site), false
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return "", true
	}
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !strings.EqualFold(u.Host, r.Host) {
		return fmt.Sprintf("cross-origin request refused: Origin %q is not this API's own (http://%s)", origin, r.Host), false
	}
	return "", true
}

// jsonBody reports whether the request has no body or a JSON one
// (application/json, or SCIM's application/scim+json). A browser can send
// text/plain or a form cross-site without asking; it cannot send a JSON
// media type without a preflight dirsync never grants.
func jsonBody(r *http.Request) bool {
	if r.ContentLength == 0 {
		return true
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && (mt == "application/json" || mt == "application/scim+json")
}

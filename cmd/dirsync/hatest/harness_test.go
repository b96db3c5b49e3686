// Package hatest runs real `dirsync run` replicas against a real
// redis-server to test high availability and Redis faults: account
// ownership across replicas, failover, fencing of a paused owner, Redis
// restarted empty or unreachable, and SIGKILL mid-publish. See
// docs/high-availability.md.
package hatest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/sync/apimux"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dirsync-hatest")
	if err != nil {
		panic(err)
	}
	if binary, err = servertest.BuildDirsync(dir, nil, "-race"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	prefix      = "hat"
	leasePeriod = 3 * time.Second
	// takeoverBound is the worst case from a replica's death to another
	// replica owning its accounts: a lease period after its last renewal,
	// plus one step (a third of the period), plus slack for a loaded CI box.
	takeoverBound = leasePeriod + leasePeriod/3 + 1500*time.Millisecond
)

// user is one directory user of a generated LDIF.
type user struct {
	name      string // local part; the email is name@<account>.example
	group     string // "pro", "basic" or ""
	suspended bool
}

func email(account, name string) string { return name + "@" + account + ".example" }

// writeLDIF atomically writes an AD-style export for account.
func writeLDIF(t *testing.T, path, account string, users []user) {
	t.Helper()
	var b bytes.Buffer
	base := "DC=" + account + ",DC=example"
	b.WriteString("version: 1\n\n")
	members := map[string][]string{}
	for _, u := range users {
		dn := "CN=" + u.name + ",OU=People," + base
		uac := 512
		if u.suspended {
			uac = 514
		}
		fmt.Fprintf(&b, "dn: %s\nobjectClass: user\ncn: %s\nuserAccountControl: %d\nmail: %s\n\n", dn, u.name, uac, email(account, u.name))
		if u.group != "" {
			members[u.group] = append(members[u.group], dn)
		}
	}
	for _, g := range []string{"Pro", "Basic"} {
		fmt.Fprintf(&b, "dn: CN=%s,OU=Groups,%s\nobjectClass: group\ncn: %s\n", g, base, g)
		for _, m := range members[strings.ToLower(g)] {
			fmt.Fprintf(&b, "member: %s\n", m)
		}
		b.WriteString("\n")
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// setup is one test's accounts and their LDIF files.
type setup struct {
	dir      string
	accounts []string
}

func (s *setup) ldif(account string) string { return filepath.Join(s.dir, account+".ldif") }

// newSetup writes n accounts, each with users (or a default small set).
func newSetup(t *testing.T, n int, users []user) *setup {
	s := &setup{dir: t.TempDir()}
	if users == nil {
		users = []user{{"alice", "pro", false}, {"bob", "basic", false}, {"dave", "pro", true}, {"erin", "", false}}
	}
	for i := range n {
		id := fmt.Sprintf("acct%d", i)
		s.accounts = append(s.accounts, id)
		writeLDIF(t, s.ldif(id), id, users)
	}
	return s
}

// daemon is a running `dirsync run` replica.
type daemon struct {
	name string
	proc *servertest.Process
	addr string
}

// startDaemon starts a replica publishing to redisAddr.
func startDaemon(t *testing.T, s *setup, name, redisAddr string) *daemon {
	t.Helper()
	dir := filepath.Join(s.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	var cfg strings.Builder
	fmt.Fprintf(&cfg, `cache:
  backend: redis
  redis: {addrs: [%q], key_prefix: %s}
api: {listen: %q}
schedule: {full: "@every 1h", incremental: "@every 1s"}
log: {level: info, format: json}
ha: {lease_period: %s, replica_id: %s}
accounts:
`, redisAddr, prefix, addr, leasePeriod, name)
	for _, id := range s.accounts {
		fmt.Fprintf(&cfg, `  - id: %s
    claimed_domains: [%s.example]
    directory: {type: ldif, ldif: {path: %q}}
    bindings:
      - {group: "CN=Pro,OU=Groups,DC=%s,DC=example", permission: pro}
      - {group: "CN=Basic,OU=Groups,DC=%s,DC=example", permission: basic}
`, id, id, s.ldif(id), id, id)
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := servertest.Start(dir, binary, "run", "--config", cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{name: name, proc: p, addr: addr}
	t.Cleanup(func() {
		p.Kill()
		// A killed daemon cannot remove its per-start token file.
		_, port, _ := net.SplitHostPort(addr)
		os.Remove(apimux.PerStartTokenPath(os.Getenv, port))
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.LogTail())
		}
	})
	if err := servertest.WaitTCP(addr, 30*time.Second); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, p.LogTail())
	}
	return d
}

// ownership is the ownership part of /v1/status.
type ownership struct {
	Replica string `json:"replica"`
	Owned   bool   `json:"owned"`
	Holder  string `json:"holder"`
	Token   string `json:"token"`
}

// owned returns the accounts the replica says it owns (nil if it cannot be
// asked).
func (d *daemon) owned() []string {
	resp, err := http.Get("http://" + d.addr + "/v1/status")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var body struct {
		Accounts []struct {
			Account   string     `json:"account"`
			Ownership *ownership `json:"ownership"`
		} `json:"accounts"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil
	}
	var out []string
	for _, a := range body.Accounts {
		if a.Ownership != nil && a.Ownership.Owned {
			out = append(out, a.Account)
		}
	}
	return out
}

// syncNow asks the replica's API for a full sync of account, with the
// per-start admin token the tokenless replica wrote for its port.
func (d *daemon) syncNow(account string) (int, string) {
	_, port, _ := net.SplitHostPort(d.addr)
	token, err := apimux.ReadPerStartToken(apimux.PerStartTokenPath(os.Getenv, port))
	if err != nil || token == "" {
		return 0, fmt.Sprintf("no per-start token for port %s: %v", port, err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+d.addr+"/v1/sync?account="+account, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// cacheClient reads the cache as the sign-in service does.
type cacheClient struct {
	c    *redis.Client
	r    *accesscache.Reader
	keys accesscache.Keys
}

func newCacheClient(t *testing.T, addr string) *cacheClient {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 300 * time.Millisecond, ReadTimeout: time.Second})
	t.Cleanup(func() { c.Close() })
	return &cacheClient{c: c, r: accesscache.NewReader(c, prefix), keys: accesscache.NewKeys(prefix)}
}

func (c *cacheClient) check(account, name string) (entitlement.Decision, error) {
	return c.r.Check(context.Background(), email(account, name))
}

// is reports whether name's cached decision has the given permission and
// reason.
func (c *cacheClient) is(account, name string, perm entitlement.Permission, reason entitlement.Reason) bool {
	d, err := c.check(account, name)
	return err == nil && d.Permission == perm && d.Reason == reason
}

func (c *cacheClient) published(account string) bool {
	return c.is(account, "alice", entitlement.PermissionPro, entitlement.ReasonGranted) &&
		c.is(account, "dave", entitlement.PermissionNone, entitlement.ReasonSuspended)
}

// proxy is a TCP proxy between a replica and Redis that the test can cut
// (Redis unreachable), slow down, or make hold one command.
type proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	down    bool
	delay   time.Duration
	pattern []string // a client write containing all of these is held
	holds   chan *hold
	pending []*hold

	wg sync.WaitGroup
}

// hold is a client write the proxy has not forwarded yet.
type hold struct {
	release chan struct{}
	once    sync.Once
	reply   chan []byte // the server's first reply after release
}

// forward lets the held write through.
func (h *hold) forward() { h.once.Do(func() { close(h.release) }) }

func startProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, holds: make(chan *hold, 1)}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		if !down {
			p.conns[c] = struct{}{}
		}
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *proxy) serve(c net.Conn) {
	defer p.wg.Done()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[s] = struct{}{}
	p.mu.Unlock()
	var capture chan []byte // set when the next server reply is wanted
	var captureMu sync.Mutex
	p.wg.Add(1)
	go func() { // server → client
		defer p.wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, err := s.Read(buf)
			if n > 0 {
				captureMu.Lock()
				if capture != nil {
					capture <- bytes.Clone(buf[:n])
					capture = nil
				}
				captureMu.Unlock()
				if _, werr := c.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		c.Close()
		s.Close()
	}()
	buf := make([]byte, 64<<10)
	for { // client → server
		n, err := c.Read(buf)
		if n > 0 {
			p.mu.Lock()
			delay, pattern := p.delay, p.pattern
			match := len(pattern) > 0
			for _, want := range pattern {
				match = match && bytes.Contains(buf[:n], []byte(want))
			}
			if match {
				p.pattern = nil
			}
			p.mu.Unlock()
			if delay > 0 {
				time.Sleep(delay)
			}
			if match {
				h := &hold{release: make(chan struct{}), reply: make(chan []byte, 1)}
				p.mu.Lock()
				p.pending = append(p.pending, h)
				p.mu.Unlock()
				p.holds <- h
				<-h.release
				captureMu.Lock()
				capture = h.reply
				captureMu.Unlock()
			}
			if _, werr := s.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	c.Close()
	s.Close()
}

// holdNext makes the proxy hold the next client write containing every
// one of parts.
func (p *proxy) holdNext(parts ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pattern = parts
}

func (p *proxy) setDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

// cut closes every connection and refuses new ones until restore.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *proxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

func (p *proxy) close() {
	p.ln.Close()
	p.cut()
	p.mu.Lock()
	pending := p.pending
	p.mu.Unlock()
	for _, h := range pending {
		h.forward()
	}
	p.wg.Wait()
}

// errNoHold is returned when no command was held in time.
var errNoHold = errors.New("no command held")

func (p *proxy) waitHold(limit time.Duration) (*hold, error) {
	select {
	case h := <-p.holds:
		return h, nil
	case <-time.After(limit):
		return nil, errNoHold
	}
}

// get returns the status code and body of a GET.
func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

package okta

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/mapper"
	"github.com/dirsync/dirsync/internal/entitlement/store"
	"github.com/dirsync/dirsync/internal/sync/engine"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/testsupport/oktafake"
)

// The tests drive the real okta-sdk-golang client against oktafake, the
// in-process fake Okta whose responses are checked against Okta's
// published OpenAPI spec in its own tests.

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newPoller(t *testing.T, f *oktafake.Server, groups []string, modify func(*Options)) *Poller {
	t.Helper()
	opts := Options{
		OrgURL:         f.URL,
		Token:          f.Token(),
		AllowHTTP:      strings.HasPrefix(f.URL, "http://"),
		Groups:         groups,
		HTTPClient:     f.Client(),
		PageSize:       5,
		MaxBackoff:     -1, // retry a 429 at once
		RequestTimeout: 10 * time.Second,
		RateLimitShare: 1,
	}
	if modify != nil {
		modify(&opts)
	}
	p, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

// org is a fake org for the mapping test, with what each email must get.
type org struct {
	fake       *oktafake.Server
	proID      string // bound to pro by id
	basicName  string // bound to basic by name
	accessName string // access group, by name
	want       map[string]wantDecision
	users      map[string]string // email → user id
}

type wantDecision struct {
	permission entitlement.Permission
	reason     entitlement.Reason
}

func newOrg(t *testing.T, tls bool) *org {
	f := oktafake.New(oktafake.Options{TLS: tls, RateLimit: 100000})
	t.Cleanup(f.Close)
	o := &org{fake: f, basicName: "AD Sales", accessName: "Everyone", want: map[string]wantDecision{}, users: map[string]string{}}
	o.proID = f.AddGroup("Engineering", oktafake.GroupOkta)
	basic := f.AddGroup(o.basicName, oktafake.GroupApp)
	everyone := f.AddGroup(o.accessName, oktafake.GroupBuiltIn)
	f.AddGroup("Unbound", oktafake.GroupOkta)
	add := func(email, login, status string, groups []string, want wantDecision) string {
		id := f.AddUser(oktafake.UserSpec{Login: login, Email: email, FirstName: "F", LastName: status, Status: status})
		for _, g := range groups {
			f.AddMember(g, id)
		}
		if want.reason != "" {
			key := strings.ToLower(email)
			if key == "" {
				key = login
			}
			o.want[key] = want
			o.users[key] = id
		}
		return id
	}
	denied := func(r entitlement.Reason) wantDecision { return wantDecision{entitlement.PermissionNone, r} }
	pro := wantDecision{entitlement.PermissionPro, entitlement.ReasonGranted}
	basicOK := wantDecision{entitlement.PermissionBasic, entitlement.ReasonGranted}
	both := []string{o.proID, basic, everyone}
	// Every status, in the pro group (and the access group).
	for _, c := range []struct {
		status string
		want   wantDecision
	}{
		{oktafake.StatusActive, pro},
		{oktafake.StatusPasswordExpired, pro},
		{oktafake.StatusSuspended, denied(entitlement.ReasonSuspended)},
		{oktafake.StatusDeprovisioned, denied(entitlement.ReasonInactive)},
		{oktafake.StatusStaged, denied(entitlement.ReasonInactive)},
		{oktafake.StatusProvisioned, denied(entitlement.ReasonInactive)},
		{oktafake.StatusLockedOut, denied(entitlement.ReasonLockedOut)},
		{oktafake.StatusRecovery, denied(entitlement.ReasonLockedOut)},
	} {
		e := strings.ToLower(c.status) + "@acme.example"
		add(e, e, c.status, []string{o.proID, everyone}, c.want)
	}
	// In both bound groups: pro wins, and the user appears once.
	add("both@acme.example", "both@acme.example", oktafake.StatusActive, both, pro)
	add("Both.Suspended@ACME.example", "both.suspended@acme.example", oktafake.StatusSuspended, both, denied(entitlement.ReasonSuspended))
	// Basic only (APP_GROUP bound by name), enough to page.
	for i := range 7 {
		e := fmt.Sprintf("basic%d@acme.example", i)
		add(e, e, oktafake.StatusActive, []string{basic, everyone}, basicOK)
	}
	// Bound group but not in the access group.
	add("outsider@acme.example", "outsider@acme.example", oktafake.StatusActive, []string{o.proID}, denied(entitlement.ReasonNotInAccessGroup))
	// Only in the access group: no permission group.
	add("everyone-only@acme.example", "everyone-only@acme.example", oktafake.StatusActive, []string{everyone}, denied(entitlement.ReasonNoPermission))
	// Email outside the claimed domains: not decided.
	add("contractor@other.example", "contractor@other.example", oktafake.StatusActive, []string{o.proID, everyone}, wantDecision{})
	// No profile.email: the login is the address.
	add("", "login-only@acme.example", oktafake.StatusActive, []string{o.proID, everyone}, pro)
	// No usable email at all: skipped.
	add("", "jdoe", oktafake.StatusActive, []string{o.proID, everyone}, wantDecision{})
	add("not-an-address", "jroe", oktafake.StatusActive, []string{basic}, wantDecision{})
	// In no bound group: not in the snapshot.
	add("nogroup@acme.example", "nogroup@acme.example", oktafake.StatusActive, nil, wantDecision{})
	add("unbound@acme.example", "unbound@acme.example", oktafake.StatusActive, []string{f.AddGroup("Other", oktafake.GroupOkta)}, wantDecision{})
	return o
}

func (o *org) policy() mapper.Policy {
	return mapper.Policy{
		Account:        "acme",
		ClaimedDomains: []string{"acme.example"},
		AccessGroup:    o.accessName,
		Bindings: []mapper.Binding{
			{Group: o.proID, Permission: entitlement.PermissionPro},
			{Group: o.basicName, Permission: entitlement.PermissionBasic},
		},
	}
}

func (o *org) groups() []string { return []string{o.proID, o.basicName, o.accessName} }

func checkDecisions(t *testing.T, o *org, snap *directory.Snapshot) {
	t.Helper()
	res := mapper.Map(o.policy(), snap, time.Now())
	if len(res.Problems) != 0 {
		t.Errorf("mapping problems: %+v", res.Problems)
	}
	got := map[string]entitlement.Decision{}
	for _, d := range res.Decisions {
		got[d.Email] = d
	}
	for email, want := range o.want {
		d, ok := got[email]
		if !ok {
			t.Errorf("%s: no decision", email)
			continue
		}
		if d.Permission != want.permission || d.Reason != want.reason || d.Allowed != (want.reason == entitlement.ReasonGranted) {
			t.Errorf("%s: got %s/%s allowed=%v, want %s/%s", email, d.Permission, d.Reason, d.Allowed, want.permission, want.reason)
		}
		if d.UserID != o.users[email] {
			t.Errorf("%s: user id %s, want %s", email, d.UserID, o.users[email])
		}
	}
	if len(got) != len(o.want) {
		t.Errorf("%d decisions, want %d", len(got), len(o.want))
	}
	if res.Stats.DomainNotClaimed != 1 {
		t.Errorf("domain_not_claimed %d, want 1 (contractor@other.example)", res.Stats.DomainNotClaimed)
	}
	if snap.Skipped["no_email"] != 2 {
		t.Errorf("skipped %v, want no_email=2", snap.Skipped)
	}
	for _, email := range []string{"nogroup@acme.example", "unbound@acme.example"} {
		if _, ok := got[email]; ok {
			t.Errorf("%s is in no bound group but was decided", email)
		}
	}
	seen := map[string]bool{}
	for _, u := range snap.Users {
		if seen[u.ID] {
			t.Errorf("user %s appears twice", u.ID)
		}
		seen[u.ID] = true
	}
	if len(snap.Groups) != 3 {
		t.Errorf("%d groups in snapshot, want the 3 bound ones", len(snap.Groups))
	}
}

func TestSnapshotDecisionsForEveryStatusAndGroupType(t *testing.T) {
	for _, tls := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tls), func(t *testing.T) {
			o := newOrg(t, tls)
			p := newPoller(t, o.fake, o.groups(), nil)
			snap, err := p.Snapshot(testContext(t))
			if err != nil {
				t.Fatalf("Snapshot: %v", err)
			}
			checkDecisions(t, o, snap)
			c := o.fake.Counters()
			// Groups larger than one page (page size 5) were paged.
			if c.ByRoute["GET /api/v1/groups/{id}/users"] <= len(snap.Groups) {
				t.Errorf("member listing took %d requests for %d groups; the groups should need several pages", c.ByRoute["GET /api/v1/groups/{id}/users"], len(snap.Groups))
			}
			if s := p.Stats(); s.Requests != int64(c.Requests) {
				t.Errorf("poller counted %d requests, server %d", s.Requests, c.Requests)
			}
			// Cache off: the same read again reaches the server again.
			o.fake.ResetCounters()
			if _, err := p.Snapshot(testContext(t)); err != nil {
				t.Fatal(err)
			}
			if again := o.fake.Counters().Requests; again != c.Requests {
				t.Errorf("second snapshot sent %d requests, first %d: responses are being cached", again, c.Requests)
			}
		})
	}
}

func TestSDKConfigIgnoresOktaFileAndEnvironment(t *testing.T) {
	o := newOrg(t, true)
	// The SDK reads ~/.okta/okta.yaml (home from the passwd entry, so HOME
	// only matters where they agree) and OKTA_* variables, which cover
	// the same fields; every one of them must lose to New's settings.
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".okta"), 0o700); err != nil {
		t.Fatal(err)
	}
	bogus := "okta:\n  client:\n    orgUrl: https://bogus.okta.example\n    token: bogus-token\n    cache:\n      enabled: true\n    requestTimeout: 999\n    rateLimit:\n      maxRetries: 9\n      maxBackoff: 999\n"
	if err := os.WriteFile(filepath.Join(home, ".okta", "okta.yaml"), []byte(bogus), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", home)
	for k, v := range map[string]string{
		"OKTA_CLIENT_ORGURL":                 "https://bogus.okta.example",
		"OKTA_CLIENT_TOKEN":                  "bogus-token",
		"OKTA_CLIENT_AUTHORIZATIONMODE":      "Bearer",
		"OKTA_CLIENT_CACHE_ENABLED":          "true",
		"OKTA_CLIENT_RATE_LIMIT_MAX_RETRIES": "9",
		"OKTA_CLIENT_RATE_LIMIT_MAX_BACKOFF": "999",
		"OKTA_CLIENT_REQUEST_TIMEOUT":        "999",
		"OKTA_CLIENT_CONNECTION_TIMEOUT":     "999",
		"OKTA_CLIENT_PROXY_HOST":             "proxy.bogus.example",
		"OKTA_TESTING_DISABLE_HTTPS_CHECK":   "true",
	} {
		t.Setenv(k, v)
	}
	p := newPoller(t, o.fake, o.groups(), func(opts *Options) {
		opts.MaxRetries = 1
		opts.MaxBackoff = 5 * time.Second
		opts.RequestTimeout = 7 * time.Second
	})
	cfg := p.client.GetConfig()
	c := cfg.Okta.Client
	if c.OrgUrl != o.fake.URL || c.Token != o.fake.Token() || c.AuthorizationMode != "SSWS" ||
		c.Cache.Enabled || c.RateLimit.MaxRetries != 1 || c.RateLimit.MaxBackoff != 5 ||
		c.RequestTimeout != 7 || c.ConnectionTimeout != 7 || c.Proxy.Host != "" || cfg.Okta.Testing.DisableHttpsCheck {
		t.Errorf("SDK config took outside values: %+v", c)
	}
	snap, err := p.Snapshot(testContext(t))
	if err != nil {
		t.Fatalf("Snapshot with a hostile environment: %v", err)
	}
	checkDecisions(t, o, snap)
	if u := o.fake.Counters().Unauthorized; u != 0 {
		t.Errorf("%d requests carried a wrong token", u)
	}
	// The environment's https-check switch does not let http through.
	if _, err := New(Options{OrgURL: "http://127.0.0.1:1", Token: "x", Groups: []string{"g"}}); err == nil {
		t.Error("http:// org URL accepted without AllowHTTP")
	}
}

func TestRateLimitedEveryNRequests(t *testing.T) {
	o := newOrg(t, false)
	o.fake.Inject(oktafake.Fault{Kind: oktafake.TooManyRequests, Every: 3})
	p := newPoller(t, o.fake, o.groups(), nil)
	snap, err := p.Snapshot(testContext(t))
	if err != nil {
		t.Fatalf("Snapshot under 429 every 3 requests: %v", err)
	}
	checkDecisions(t, o, snap)
	c, s := o.fake.Counters(), p.Counters()
	if c.Injected["429"] == 0 || s.RateLimited != c.Injected["429"] {
		t.Errorf("server injected %d 429s, poller saw %d", c.Injected["429"], s.RateLimited)
	}
	// Every third request was refused and retried: a third of all requests.
	if s.Requests != c.Requests || c.Requests < 3*c.Injected["429"] {
		t.Errorf("requests: poller %d, server %d, 429s %d", s.Requests, c.Requests, c.Injected["429"])
	}
}

func TestPacingKeepsWithinRateLimitShare(t *testing.T) {
	f := oktafake.New(oktafake.Options{RateLimit: 8, RateWindow: time.Second})
	defer f.Close()
	g := f.AddGroup("Engineering", oktafake.GroupOkta)
	for i := range 12 {
		f.AddMember(g, f.AddUser(oktafake.UserSpec{Login: fmt.Sprintf("u%d@acme.example", i), Email: fmt.Sprintf("u%d@acme.example", i)}))
	}
	p := newPoller(t, f, []string{g}, func(o *Options) {
		o.PageSize = 2
		o.RateLimitShare = 0.5
	})
	snap, err := p.Snapshot(testContext(t))
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if len(snap.Users) != 12 {
		t.Errorf("%d users, want 12", len(snap.Users))
	}
	c, s := f.Counters(), p.Counters()
	t.Logf("requests %d, pacing waits %d (%v), max used in a window %d of 8", c.Requests, s.PacingWaits, s.PacingWaited, c.MaxWindowUsed)
	if s.PacingWaits == 0 {
		t.Error("no pacing although the read needs more than half of a window")
	}
	if c.RateLimited != 0 || c.MaxWindowUsed > 4 {
		t.Errorf("used %d requests of a window of 8 (share 0.5), %d refused", c.MaxWindowUsed, c.RateLimited)
	}
}

func TestFailuresReturnErrorsNotPartialData(t *testing.T) {
	cases := []struct {
		name  string
		fault oktafake.Fault
		want  string
	}{
		{"retries exhausted", oktafake.Fault{Kind: oktafake.TooManyRequests, PathPrefix: "/api/v1/groups/"}, "too many requests"},
		{"429 without reset", oktafake.Fault{Kind: oktafake.TooManyRequestsNoReset, Every: 2}, "X-Rate-Limit-Reset"},
		{"server error", oktafake.Fault{Kind: oktafake.ServerError, Every: 4, Times: 1}, "Internal Server Error"},
		{"dropped connection", oktafake.Fault{Kind: oktafake.DropConnection, PathPrefix: "/api/v1/groups/"}, "connection dropped"},
		{"malformed json", oktafake.Fault{Kind: oktafake.MalformedJSON, Every: 3, Times: 1}, "malformed JSON in the response"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := newOrg(t, false)
			p := newPoller(t, o.fake, o.groups(), nil)
			good, err := p.Snapshot(testContext(t))
			if err != nil {
				t.Fatal(err)
			}
			o.fake.Inject(c.fault)
			snap, err := p.Snapshot(testContext(t))
			if err == nil || snap != nil {
				t.Fatalf("Snapshot under %s: snapshot %v, err %v; want an error and no data", c.name, snap != nil, err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "okta: ") || strings.Count(err.Error(), "okta:") != 1 {
				t.Errorf("error %q: want the package's prefix \"okta: \" exactly once, in front", err)
			}
			if strings.Contains(err.Error(), o.fake.Token()) {
				t.Errorf("error leaks the token: %v", err)
			}
			if _, _, err := p.Incremental(testContext(t)); err == nil && c.fault.Times == 0 {
				t.Errorf("Incremental under %s succeeded", c.name)
			}
			// The failure left the last good state alone.
			o.fake.ClearFaults()
			again, changed, err := p.Incremental(testContext(t))
			if err != nil || changed || !sameContent(good, again) {
				t.Errorf("after recovery: changed=%v err=%v same=%v", changed, err, err == nil && sameContent(good, again))
			}
		})
	}
	t.Run("dropped connections are bounded", func(t *testing.T) {
		o := newOrg(t, false)
		p := newPoller(t, o.fake, o.groups(), func(o *Options) { o.MaxDropped = 2 })
		o.fake.Inject(oktafake.Fault{Kind: oktafake.DropConnection})
		_, err := p.Snapshot(testContext(t))
		if !errors.Is(err, errConnectionDropped) {
			t.Fatalf("err %v, want errConnectionDropped", err)
		}
		if d := p.Counters().Dropped; d != 3 {
			t.Errorf("%d dropped attempts, want 3 (MaxDropped 2 plus the failing one)", d)
		}
	})
	t.Run("latency beyond the request timeout", func(t *testing.T) {
		o := newOrg(t, false)
		p := newPoller(t, o.fake, o.groups(), func(o *Options) { o.RequestTimeout = 100 * time.Millisecond })
		o.fake.SetLatency(5 * time.Second)
		if _, err := p.Snapshot(testContext(t)); err == nil || !strings.Contains(err.Error(), "deadline") && !strings.Contains(err.Error(), "Timeout") {
			t.Errorf("err %v, want a timeout", err)
		}
	})
	t.Run("bad token", func(t *testing.T) {
		o := newOrg(t, false)
		p := newPoller(t, o.fake, o.groups(), func(o *Options) { o.Token = "wrong" })
		if _, err := p.Snapshot(testContext(t)); err == nil || !strings.Contains(err.Error(), "Invalid token") {
			t.Errorf("err %v, want Invalid token provided", err)
		}
	})
	t.Run("unknown group", func(t *testing.T) {
		o := newOrg(t, false)
		p := newPoller(t, o.fake, []string{o.proID, "No Such Group"}, nil)
		if _, err := p.Snapshot(testContext(t)); err == nil || !strings.Contains(err.Error(), "No Such Group") {
			t.Errorf("err %v, want the unknown group named", err)
		}
	})
	t.Run("page cap", func(t *testing.T) {
		o := newOrg(t, false)
		p := newPoller(t, o.fake, o.groups(), func(o *Options) { o.MaxPages = 2 })
		if _, err := p.Snapshot(testContext(t)); err == nil || !strings.Contains(err.Error(), "more than 2 pages") {
			t.Errorf("err %v, want the page cap", err)
		}
	})
}

// TestEmptiedGroupIsHeldByTheEngine (issue 12 item 4): the poller used to
// refuse any read, full or incremental, in which a bound group that had
// members was empty; every pass then failed at the source, so a user
// suspended meanwhile kept access, and even a release (a forced full pass)
// could not get past the refusal. The poller now reads the empty group as
// it is and the engine holds the pass: the suspension read in the same
// pass is published, the emptied group's members keep their access until
// the release, which publishes the rest.
func TestEmptiedGroupIsHeldByTheEngine(t *testing.T) {
	f := oktafake.New(oktafake.Options{})
	defer f.Close()
	pro := f.AddGroup("Engineering", oktafake.GroupOkta)
	basic := f.AddGroup("Sales", oktafake.GroupOkta)
	ann := f.AddUser(oktafake.UserSpec{Login: "ann@acme.example", Email: "ann@acme.example"})
	bob := f.AddUser(oktafake.UserSpec{Login: "bob@acme.example", Email: "bob@acme.example"})
	cat := f.AddUser(oktafake.UserSpec{Login: "cat@acme.example", Email: "cat@acme.example"})
	f.AddMember(pro, ann)
	f.AddMember(pro, bob)
	f.AddMember(basic, cat)
	p := newPoller(t, f, []string{pro, basic}, nil)
	cache := store.NewMemory()
	e := engine.New(cache, []engine.Account{{
		Policy: mapper.Policy{Account: "acme", ClaimedDomains: []string{"acme.example"}, Bindings: []mapper.Binding{
			{Group: pro, Permission: entitlement.PermissionPro}, {Group: basic, Permission: entitlement.PermissionBasic}}},
		Source:    p,
		Safeguard: engine.Safeguard{MaxLostAccessPercent: 100, MaxLostAccessUsers: 100},
	}}, zap.NewNop(), nil)
	ctx := testContext(t)
	if _, err := e.Run(ctx, "acme", engine.Options{Mode: engine.ModeFull}); err != nil {
		t.Fatal(err)
	}
	decision := func(email string) entitlement.Decision {
		t.Helper()
		d, err := cache.Check(ctx, email)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	// One change: Sales loses its only member, ann is suspended.
	f.RemoveMember(basic, cat)
	f.SetStatus(ann, oktafake.StatusSuspended)
	for _, mode := range []engine.Mode{engine.ModeIncremental, engine.ModeFull} {
		rep, err := e.Run(ctx, "acme", engine.Options{Mode: mode})
		if !errors.Is(err, engine.ErrLostGroup) || rep.Result != engine.ResultHeld || rep.Hold == nil || len(rep.Hold.Groups) != 1 || rep.Hold.Groups[0] != basic {
			t.Fatalf("%s pass after Sales emptied: %s, hold %+v, %v; want held for Sales", mode, rep.Result, rep.Hold, err)
		}
		if d := decision("ann@acme.example"); d.Allowed || d.Reason != entitlement.ReasonSuspended {
			t.Errorf("%s pass: ann = %+v; want suspended", mode, d)
		}
		if d := decision("cat@acme.example"); !d.Allowed || d.Permission != entitlement.PermissionBasic {
			t.Errorf("%s pass: cat = %+v; the held loss was published", mode, d)
		}
		if d := decision("bob@acme.example"); !d.Allowed || d.Permission != entitlement.PermissionPro {
			t.Errorf("%s pass: bob = %+v", mode, d)
		}
	}
	rep, err := e.Run(ctx, "acme", engine.Options{Mode: engine.ModeFull, Force: true})
	if err != nil || rep.Result != engine.ResultPublished {
		t.Fatalf("release: %s, %v", rep.Result, err)
	}
	if d := decision("cat@acme.example"); d.Allowed || d.Reason != entitlement.ReasonUnknownUser {
		t.Errorf("after the release cat = %+v; want gone (in no bound group)", d)
	}
}

// incrementalRun builds an org with size users in the bound group and as
// many outside it, takes a full snapshot, suspends one user and runs the
// incremental pass. It returns the requests the pass sent.
func incrementalRun(t *testing.T, size int) int {
	f := oktafake.New(oktafake.Options{RateLimit: 100000})
	defer f.Close()
	g := f.AddGroup("Engineering", oktafake.GroupOkta)
	var target string
	for i := range size {
		e := fmt.Sprintf("u%d@acme.example", i)
		id := f.AddUser(oktafake.UserSpec{Login: e, Email: e})
		f.AddMember(g, id)
		if i == size/2 {
			target = id
		}
		f.AddUser(oktafake.UserSpec{Login: fmt.Sprintf("x%d@acme.example", i)})
	}
	f.Advance(time.Hour) // the org was built long before the first read
	p := newPoller(t, f, []string{g}, func(o *Options) { o.PageSize = 200 })
	if _, err := p.Snapshot(testContext(t)); err != nil {
		t.Fatal(err)
	}
	// Nothing changed: nothing to report, and few requests.
	if _, changed, err := p.Incremental(testContext(t)); err != nil || changed {
		t.Fatalf("quiet incremental: changed=%v err=%v", changed, err)
	}
	f.Advance(time.Minute)
	f.SetStatus(target, oktafake.StatusSuspended)
	f.ResetCounters()
	snap, changed, err := p.Incremental(testContext(t))
	if err != nil || !changed {
		t.Fatalf("incremental after a suspension: changed=%v err=%v", changed, err)
	}
	found := false
	for _, u := range snap.Users {
		if u.ID == target {
			found = true
			if u.Status != directory.StatusSuspended {
				t.Errorf("target status %v, want suspended", u.Status)
			}
		} else if u.Status != directory.StatusActive {
			t.Errorf("user %s status %v changed", u.ID, u.Status)
		}
	}
	if !found || len(snap.Users) != size {
		t.Errorf("snapshot has %d users (target found %v), want %d", len(snap.Users), found, size)
	}
	c := f.Counters()
	t.Logf("org of %d bound + %d other users: incremental sent %d requests %v", size, size, c.Requests, c.ByRoute)
	return c.Requests
}

func TestIncrementalCostIndependentOfOrgSize(t *testing.T) {
	small := incrementalRun(t, 20)
	large := incrementalRun(t, 1000)
	// One groups filter, one users filter, one System Log poll.
	if small != 3 || large != 3 {
		t.Errorf("incremental requests: %d for a small org, %d for a large one; want 3 for both", small, large)
	}
}

func TestIncrementalMembershipChanges(t *testing.T) {
	o := newOrg(t, false)
	p := newPoller(t, o.fake, o.groups(), nil)
	before, err := p.Snapshot(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	newcomer := o.fake.AddUser(oktafake.UserSpec{Login: "new@acme.example", Email: "new@acme.example"})
	o.fake.AddMember(o.proID, newcomer)
	o.fake.RemoveMember(o.proID, o.users["outsider@acme.example"])
	o.fake.SetEmail(o.users["active@acme.example"], "renamed@acme.example")
	snap, changed, err := p.Incremental(testContext(t))
	if err != nil || !changed {
		t.Fatalf("changed=%v err=%v", changed, err)
	}
	emails := map[string]bool{}
	for _, u := range snap.Users {
		emails[u.Email] = true
	}
	if !emails["new@acme.example"] || emails["outsider@acme.example"] || !emails["renamed@acme.example"] || emails["active@acme.example"] {
		t.Errorf("emails after changes: %v", emails)
	}
	// The earlier snapshot was not modified.
	old := map[string]bool{}
	for _, u := range before.Users {
		old[u.Email] = true
	}
	if !old["outsider@acme.example"] || old["new@acme.example"] || !old["active@acme.example"] {
		t.Errorf("the previous snapshot changed under its reader: %v", old)
	}
	// A full read agrees with the incremental result.
	full, err := newPoller(t, o.fake, o.groups(), nil).Snapshot(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if !sameContent(full, snap) {
		t.Error("incremental snapshot differs from a full read")
	}
}

func TestOptionsFromAccount(t *testing.T) {
	s := &Section{
		OrgURL: "https://acme.okta.com/", AllowHTTP: false, PageSize: 150,
		RequestTimeout: 12 * time.Second, RateLimitShare: 0.25,
	}
	a := config.Account{
		AccessGroup: "Everyone",
		Bindings:    []config.Binding{{Group: "00g00000000000000001", Permission: "pro"}, {Group: "Sales", Permission: "basic"}},
		Directory:   config.NewDirectory(Type, s),
	}
	o := optionsFrom(&a, s, "tok")
	if o.OrgURL != "https://acme.okta.com/" || o.Token != "tok" || o.PageSize != 150 || o.RequestTimeout != 12*time.Second ||
		o.RateLimitShare != 0.25 || strings.Join(o.Groups, "|") != "00g00000000000000001|Sales|Everyone" {
		t.Errorf("options %+v", o)
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.client.GetConfig().Okta.Client.OrgUrl; got != "https://acme.okta.com" {
		t.Errorf("org URL %q: trailing slash kept", got)
	}
	if withoutSince("/api/v1/logs?after=5&since=x&filter=f") != "/api/v1/logs?after=5&filter=f" {
		t.Errorf("since kept next to after")
	}
}

// TestMain checks that the poller leaves no goroutine behind. The SDK's
// request executor always creates an OAuth token cache (go-cache) whose
// janitor goroutine ends only when the cache is garbage collected (a
// finalizer): that one is the SDK's, not ours.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/patrickmn/go-cache.(*janitor).Run"))
}

// TestIncrementalStatusChangeIsAPatch (issue 16): a status change alone
// comes back as a Patch of that user (groups and the other users as they
// were), the engine re-maps only that user, and what it publishes equals a
// fresh full read's mapping; a membership change is no Patch.
func TestIncrementalStatusChangeIsAPatch(t *testing.T) {
	o := newOrg(t, false)
	p := newPoller(t, o.fake, o.groups(), nil)
	cache := store.NewMemory()
	e := engine.New(cache, []engine.Account{{Policy: o.policy(), Source: p,
		Safeguard: engine.Safeguard{MaxLostAccessPercent: 100, MaxLostAccessUsers: 1000}}}, zap.NewNop(), nil)
	e.SetRemapMinUsers(0)
	ctx := testContext(t)
	if _, err := e.Run(ctx, "acme", engine.Options{Mode: engine.ModeFull}); err != nil {
		t.Fatal(err)
	}
	target := o.users["active@acme.example"]
	o.fake.SetStatus(target, oktafake.StatusSuspended)
	rep, err := e.Run(ctx, "acme", engine.Options{Mode: engine.ModeIncremental})
	if err != nil || rep.Remapped != 1 || rep.Changes.Published != 1 {
		t.Fatalf("a suspension: %+v, %v; want one user re-mapped and published", rep.Changes, err)
	}
	if d, _ := cache.Check(ctx, "active@acme.example"); d.Reason != entitlement.ReasonSuspended {
		t.Fatalf("suspended user = %+v", d)
	}
	o.fake.RemoveMember(o.proID, o.users["outsider@acme.example"])
	if rep, err := e.Run(ctx, "acme", engine.Options{Mode: engine.ModeIncremental}); err != nil || rep.Remapped != 0 || rep.RemappedGroups != 0 {
		t.Fatalf("a membership change: remapped %d, %v; want a whole mapping", rep.Remapped, err)
	}
	full, err := newPoller(t, o.fake, o.groups(), nil).Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := mapper.Map(o.policy(), full, time.Now())
	published, err := cache.Published(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(published) != len(want.Decisions) {
		t.Fatalf("%d published, a full read maps %d", len(published), len(want.Decisions))
	}
	for i := range want.Decisions {
		if published[want.Decisions[i].Email] != mapper.PublishedOf(&want.Decisions[i]) {
			t.Errorf("%s differs from a full read's decision", want.Decisions[i].Email)
		}
	}
}

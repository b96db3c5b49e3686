package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/sync/engine"
	"github.com/dirsync/dirsync/internal/testsupport/oktafake"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// cli runs the dirsync binary and returns its exit code and output.
func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

// syncJSON runs `dirsync sync --output json` and returns the reports.
func syncJSON(t *testing.T, cfg string, wantCode int) []engine.Report {
	t.Helper()
	code, out, errOut := cli(t, "sync", "--config", cfg, "--output", "json")
	if code != wantCode {
		t.Fatalf("sync exit %d (want %d)\nstdout: %s\nstderr: %s", code, wantCode, out, errOut)
	}
	var r struct{ Reports []engine.Report }
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("sync output: %v\n%s", err, out)
	}
	return r.Reports
}

// checkJSON runs `dirsync check --output json EMAIL`.
func checkJSON(t *testing.T, cfg, email string) entitlement.Decision {
	t.Helper()
	code, out, errOut := cli(t, "check", "--config", cfg, email, "--output", "json")
	if code != 0 {
		t.Fatalf("check %s: exit %d %s", email, code, errOut)
	}
	var d entitlement.Decision
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("check output: %v\n%s", err, out)
	}
	return d
}

type want struct {
	email  string
	perm   entitlement.Permission
	reason entitlement.Reason
}

func checkAll(t *testing.T, cfg string, wants []want) map[string]entitlement.Decision {
	t.Helper()
	got := map[string]entitlement.Decision{}
	for _, w := range wants {
		d := checkJSON(t, cfg, w.email)
		got[w.email] = d
		if d.Permission != w.perm || d.Reason != w.reason || d.Allowed != (w.perm != entitlement.PermissionNone) {
			t.Errorf("%s: got %s/%s allowed=%t; want %s/%s", w.email, d.Permission, d.Reason, d.Allowed, w.perm, w.reason)
		}
	}
	return got
}

// TestADSyncAndCheck: dirsync sync then dirsync check against the Samba DC
// give the documented decision for every dataset case; a rename keeps the
// user's id and decision; disabling one user then syncing touches only that
// user's cached value.
func TestADSyncAndCheck(t *testing.T) {
	dc := samba.Get(t)
	rs := servertest.StartRedis(t)
	dir := t.TempDir()
	cfg, _ := writeConfig(t, dir, strings.Replace(adConfig(t, dir, rs.Addr, dc.URL), "key_prefix: e2e", "key_prefix: cli", 1))

	reps := syncJSON(t, cfg, 0)
	r := reps[0]
	if r.Result != engine.ResultPublished || r.Stats.Skipped["no_email"] != 1 || r.Stats.Skipped["foreign_principal"] != 1 {
		t.Errorf("first sync: result %s skipped %v problems %v", r.Result, r.Stats.Skipped, r.Problems)
	}
	mail := func(cn string) string { return cn + "@" + servertest.ADEmailDomain }
	got := checkAll(t, cfg, []want{
		{mail("alice"), entitlement.PermissionPro, entitlement.ReasonGranted},
		{mail("bob"), entitlement.PermissionPro, entitlement.ReasonGranted},        // nested
		{mail("carol"), entitlement.PermissionBasic, entitlement.ReasonGranted},    // cycle
		{mail("dave"), entitlement.PermissionNone, entitlement.ReasonSuspended},    // disabled
		{mail("erin"), entitlement.PermissionNone, entitlement.ReasonInactive},     // expired
		{mail("frank"), entitlement.PermissionPro, entitlement.ReasonGranted},      // accountExpires 0
		{mail("fiona"), entitlement.PermissionPro, entitlement.ReasonGranted},      // expires in 30 days
		{mail("grace"), entitlement.PermissionNone, entitlement.ReasonUnknownUser}, // no mail, no UPN: skipped
		{mail("heidi"), entitlement.PermissionBasic, entitlement.ReasonGranted},    // UPN fallback
		{mail("ivan"), entitlement.PermissionBasic, entitlement.ReasonGranted},     // primary group
		{mail("big-1599"), entitlement.PermissionBasic, entitlement.ReasonGranted}, // 1,600-member group
	})
	if p := got[mail("bob")]; len(p.Via) != 1 || !strings.Contains(p.Via[0], "G-Pro") {
		t.Errorf("bob via = %v", p.Via)
	}
	if got[mail("alice")].UserID == "" || strings.Contains(got[mail("alice")].UserID, "=") {
		t.Errorf("alice's user_id %q is not an objectGUID", got[mail("alice")].UserID)
	}

	// Rename frank: same objectGUID, same decision, no change published.
	frankID := got[mail("frank")].UserID
	if err := dc.Modify(fmt.Sprintf("dn: %s\nchangetype: modrdn\nnewrdn: CN=frank-renamed\ndeleteoldrdn: 1\n", servertest.ADUserDN("frank"))); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = dc.Modify(fmt.Sprintf("dn: %s\nchangetype: modrdn\nnewrdn: CN=frank\ndeleteoldrdn: 1\n", servertest.ADUserDN("frank-renamed")))
	})
	syncJSON(t, cfg, 0)
	if d := checkJSON(t, cfg, mail("frank")); d.UserID != frankID || d.Permission != entitlement.PermissionPro {
		t.Errorf("after rename frank = %+v (id was %s)", d, frankID)
	}

	// Disable alice, sync: exactly one cached value changes.
	if err := dc.SetUserAccountControl(servertest.ADUserDN("alice"), 546); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dc.SetUserAccountControl(servertest.ADUserDN("alice"), 544) })
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rc.Close()
	stream := accesscache.NewKeys("cli").Changes("corp")
	before, _ := rc.XLen(context.Background(), stream).Result()
	reps = syncJSON(t, cfg, 0)
	if reps[0].Changes.Published != 1 || reps[0].Changes.LostAccessByStatus != 1 {
		t.Errorf("disable sync changed %+v; want exactly alice", reps[0].Changes)
	}
	after, _ := rc.XLen(context.Background(), stream).Result()
	if after-before != 1 {
		t.Errorf("%d change events for one disabled user", after-before)
	}
	checkAll(t, cfg, []want{
		{mail("alice"), entitlement.PermissionNone, entitlement.ReasonSuspended},
		{mail("bob"), entitlement.PermissionPro, entitlement.ReasonGranted},
	})
}

const slapdData = `dn: uid=ann,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
uid: ann
cn: Ann
sn: A
mail: ann@example.test

dn: uid=ben,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
uid: ben
cn: Ben
sn: B
mail: ben@example.test
employeeType: disabled

dn: uid=cat,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
uid: cat
cn: Cat
sn: C
mail: cat@example.test

dn: uid=dan,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
uid: dan
cn: Dan
sn: D
mail: dan@example.test

dn: cn=pro,ou=groups,dc=example,dc=test
objectClass: groupOfNames
cn: pro
member: uid=ann,ou=people,dc=example,dc=test
member: uid=ben,ou=people,dc=example,dc=test
member: cn=eng,ou=groups,dc=example,dc=test

dn: cn=eng,ou=groups,dc=example,dc=test
objectClass: groupOfNames
cn: eng
member: uid=cat,ou=people,dc=example,dc=test
`

func slapdConfig(t *testing.T, dir, redisAddr string, s *servertest.Slapd, bindDN, password string) string {
	pw := writeSecret(t, dir, "ldap-pw-"+filepath.Base(bindDN), password)
	return fmt.Sprintf(`cache: {backend: redis, redis: {addrs: [%q], key_prefix: slapd}}
accounts:
  - id: lab
    claimed_domains: [example.test]
    directory:
      type: ldap
      ldap:
        urls: [%q]
        allow_insecure: true
        bind_dn: %q
        bind_password_file: %s
        base_dn: %q
        disabled_attribute: employeeType
        disabled_value: disabled
    bindings:
      - {group: "cn=pro,ou=groups,dc=example,dc=test", permission: pro}
`, redisAddr, s.URL, bindDN, pw, s.Suffix)
}

// TestLDAPSyncAndCheck: OpenLDAP with groupOfNames (nested) and a disabled
// marker; and a read truncated by slapd's size limit publishes nothing.
func TestLDAPSyncAndCheck(t *testing.T) {
	var many strings.Builder
	for i := range 600 {
		fmt.Fprintf(&many, "dn: uid=u%03d,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\nuid: u%03d\ncn: U\nsn: U\nmail: u%03d@example.test\n\n", i, i, i)
	}
	s := servertest.StartSlapd(t, servertest.SlapdOptions{LDIF: slapdData + "\n" + many.String()})
	rs := servertest.StartRedis(t)
	dir := t.TempDir()
	cfg, _ := writeConfig(t, dir, slapdConfig(t, dir, rs.Addr, s, s.ServiceDN, s.ServicePassword))

	syncJSON(t, cfg, 0)
	checkAll(t, cfg, []want{
		{"ann@example.test", entitlement.PermissionPro, entitlement.ReasonGranted},
		{"ben@example.test", entitlement.PermissionNone, entitlement.ReasonSuspended}, // disabled marker
		{"cat@example.test", entitlement.PermissionPro, entitlement.ReasonGranted},    // nested
		{"dan@example.test", entitlement.PermissionNone, entitlement.ReasonNoPermission},
		{"u000@example.test", entitlement.PermissionNone, entitlement.ReasonNoPermission},
	})

	// The same directory read through an account under slapd's default
	// 500-entry size limit: the sync fails, says why, publishes nothing.
	s.Modify(t, "dn: uid=ann,ou=people,dc=example,dc=test\nchangetype: modify\nreplace: employeeType\nemployeeType: disabled\n")
	limited, _ := writeConfig(t, t.TempDir(), slapdConfig(t, dir, rs.Addr, s, s.LimitedDN, s.LimitedPassword))
	code, out, errOut := cli(t, "sync", "--config", limited)
	if code != 1 || !strings.Contains(strings.ToLower(out+errOut), "size limit") {
		t.Errorf("size-limited sync: exit %d\n%s\n%s", code, out, errOut)
	}
	if d := checkJSON(t, cfg, "ann@example.test"); !d.Allowed {
		t.Errorf("a truncated read published ann's change: %+v", d)
	}
}

// TestOktaSyncAndCheck: dirsync sync then check against the fake org for
// every status, every group type, users in both groups, in no bound group,
// outside the claimed domains, with groups larger than one page; then a 429
// every third request still syncs, and exhausted retries publish nothing.
func TestOktaSyncAndCheck(t *testing.T) {
	f := oktafake.New(oktafake.Options{Token: "okta-cli-token"})
	defer f.Close()
	pro := f.AddGroup("Chime Pro", oktafake.GroupOkta)
	basic := f.AddGroup("Chime Basic", oktafake.GroupApp)
	everyone := f.AddGroup("Everyone", oktafake.GroupBuiltIn)
	var wants []want
	add := func(login, email, status string, groups ...string) string {
		id := f.AddUser(oktafake.UserSpec{Login: login, Email: email, Status: status})
		for _, g := range groups {
			f.AddMember(g, id)
		}
		f.AddMember(everyone, id)
		return id
	}
	statuses := map[string]want{
		oktafake.StatusActive:        {"", entitlement.PermissionPro, entitlement.ReasonGranted},
		"PASSWORD_EXPIRED":           {"", entitlement.PermissionPro, entitlement.ReasonGranted},
		oktafake.StatusSuspended:     {"", entitlement.PermissionNone, entitlement.ReasonSuspended},
		oktafake.StatusDeprovisioned: {"", entitlement.PermissionNone, entitlement.ReasonInactive},
		oktafake.StatusStaged:        {"", entitlement.PermissionNone, entitlement.ReasonInactive},
		"PROVISIONED":                {"", entitlement.PermissionNone, entitlement.ReasonInactive},
		"LOCKED_OUT":                 {"", entitlement.PermissionNone, entitlement.ReasonLockedOut},
		"RECOVERY":                   {"", entitlement.PermissionNone, entitlement.ReasonLockedOut},
	}
	for status, w := range statuses {
		w.email = strings.ToLower(status) + "@globex.example"
		add(w.email, w.email, status, pro)
		wants = append(wants, w)
	}
	add("both@globex.example", "both@globex.example", "", pro, basic)
	add("basic@globex.example", "basic@globex.example", "", basic)
	add("login-only@globex.example", "", "", basic) // email from profile.login
	add("outsider@elsewhere.example", "outsider@elsewhere.example", "", pro)
	for i := range 250 { // groups larger than one 200-user page
		e := fmt.Sprintf("p%03d@globex.example", i)
		add(e, e, "", pro)
	}
	wants = append(wants,
		want{"both@globex.example", entitlement.PermissionPro, entitlement.ReasonGranted},
		want{"basic@globex.example", entitlement.PermissionBasic, entitlement.ReasonGranted},
		want{"login-only@globex.example", entitlement.PermissionBasic, entitlement.ReasonGranted},
		want{"p249@globex.example", entitlement.PermissionPro, entitlement.ReasonGranted},
		want{"outsider@elsewhere.example", entitlement.PermissionNone, entitlement.ReasonUnknownUser},
	)
	rs := servertest.StartRedis(t)
	dir := t.TempDir()
	tok := writeSecret(t, dir, "okta-token", f.Token())
	body := fmt.Sprintf(`cache: {backend: redis, redis: {addrs: [%q], key_prefix: okta-cli}}
accounts:
  - id: globex
    claimed_domains: [globex.example]
    directory:
      type: okta
      okta: {org_url: %q, token_file: %s, allow_http: true}
    access_group: Everyone
    bindings:
      - {group: %q, permission: pro}
      - {group: "Chime Basic", permission: basic}
`, rs.Addr, f.URL, tok, pro)
	cfg, _ := writeConfig(t, dir, body)
	// A user in no bound group is read as a member of the access group
	// (Everyone) and denied.
	add("nogroup@globex.example", "nogroup@globex.example", "")
	wants = append(wants, want{"nogroup@globex.example", entitlement.PermissionNone, entitlement.ReasonNoPermission})

	syncJSON(t, cfg, 0)
	checkAll(t, cfg, wants)

	f.Inject(oktafake.Fault{Kind: oktafake.TooManyRequests, Every: 3})
	f.ResetCounters()
	f.SetStatus(add("late@globex.example", "late@globex.example", "", basic), oktafake.StatusActive)
	syncJSON(t, cfg, 0)
	checkAll(t, cfg, []want{{"late@globex.example", entitlement.PermissionBasic, entitlement.ReasonGranted}})
	if c := f.Counters(); c.Injected["429"] == 0 {
		t.Errorf("no 429 was served: %+v", c)
	}

	f.ClearFaults()
	f.Inject(oktafake.Fault{Kind: oktafake.TooManyRequests})
	f.SetStatus(add("never@globex.example", "never@globex.example", "", basic), oktafake.StatusActive)
	code, out, errOut := cli(t, "sync", "--config", cfg)
	if code != 1 || !strings.Contains(strings.ToLower(out+errOut), "too many requests") {
		t.Errorf("retries exhausted: exit %d\n%s\n%s", code, out, errOut)
	}
	if d := checkJSON(t, cfg, "never@globex.example"); d.Reason != entitlement.ReasonUnknownUser {
		t.Errorf("a failed sync published: %+v", d)
	}
	if d := checkJSON(t, cfg, "active@globex.example"); !d.Allowed {
		t.Errorf("a failed sync lost a user: %+v", d)
	}
}

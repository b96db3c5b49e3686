package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/directory/ldapentry"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

func adConfig(t testing.TB, dir, redisAddr, ldapURL string) string {
	pw := writeSecret(t, dir, "bind-password", servertest.SambaAdminPassword)
	var b strings.Builder
	fmt.Fprintf(&b, `cache: {backend: redis, redis: {addrs: [%q], key_prefix: e2e}}
schedule: {full: "@every 1h", incremental: "@every 2s"}
accounts:
  - id: corp
    claimed_domains: [%s]
    directory:
      type: active_directory
      ldap:
        urls: [%q]
        allow_insecure: true
        bind_dn: %q
        bind_password_file: %s
        base_dn: %q
        user_base_dn: %q
        group_base_dn: %q
    bindings:
`, redisAddr, servertest.ADEmailDomain, ldapURL, servertest.SambaAdminUPN, pw, servertest.SambaBaseDN, servertest.ADCorpDN, servertest.ADCorpDN)
	for group, perm := range servertest.ADDatasetBindings() {
		fmt.Fprintf(&b, "      - {group: %q, permission: %s}\n", group, perm)
	}
	return b.String()
}

// TestADPropagation: disabling a user in Samba shows as suspended through
// the HTTP API within 5 s, with exactly one change-stream entry; an
// accountExpires set 3 s ahead flips the user to inactive on time with no
// further directory change.
func TestADPropagation(t *testing.T) {
	dc := samba.Get(t)
	rs := servertest.StartRedis(t)
	dir := t.TempDir()
	cfg, addr := writeConfig(t, dir, adConfig(t, dir, rs.Addr, dc.URL))
	d := startDaemon(t, dir, cfg, addr)

	mallory := "mallory@" + servertest.ADEmailDomain
	if _, dec := d.waitFor(mallory, 60*time.Second, isAllowed); dec.Permission != entitlement.PermissionPro {
		t.Fatalf("mallory before the change: %+v", dec)
	}
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rc.Close()
	stream := accesscache.NewKeys("e2e").Changes("corp")
	ctx := context.Background()
	before, err := rc.XLen(ctx, stream).Result()
	if err != nil {
		t.Fatal(err)
	}

	if err := dc.SetUserAccountControl(servertest.ADUserDN("mallory"), 546); err != nil {
		t.Fatal(err)
	}
	took, _ := d.waitFor(mallory, 10*time.Second, isSuspended)
	t.Logf("AD disable → cache: %v", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("suspension took %v to reach the cache; want within 5s", took)
	}
	// Exactly one change entry: mallory's; nobody else's value changed.
	time.Sleep(2500 * time.Millisecond) // one more incremental pass must add nothing
	msgs, err := rc.XRange(ctx, stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	added := msgs[before:]
	if len(added) != 1 || added[0].Values["email"] != mallory || added[0].Values["reason"] != "suspended" || added[0].Values["old_permission"] != "pro" {
		t.Errorf("change stream after the disable: %v", added)
	}

	// accountExpires 3 s ahead: allowed until then, inactive after, with no
	// other directory change.
	judy := "judy@" + servertest.ADEmailDomain
	expiry := time.Now().Add(3 * time.Second)
	if err := dc.Modify(fmt.Sprintf("dn: %s\nchangetype: modify\nreplace: accountExpires\naccountExpires: %d\n",
		servertest.ADUserDN("judy"), ldapentry.FileTime(expiry))); err != nil {
		t.Fatal(err)
	}
	took, dec := d.waitFor(judy, 10*time.Second, func(d entitlement.Decision) bool { return d.Reason == entitlement.ReasonInactive })
	flippedAt := time.Now()
	if flippedAt.Before(expiry) {
		t.Errorf("judy denied %v before her expiry", expiry.Sub(flippedAt))
	}
	if late := flippedAt.Sub(expiry); late > 5*time.Second {
		t.Errorf("judy flipped %v after expiry; want within one incremental interval", late)
	}
	t.Logf("expiry → inactive %v after the expiry time (%v after the change); %+v", flippedAt.Sub(expiry).Round(time.Millisecond), took.Round(time.Millisecond), dec.Reason)

	// The LDAP source's own counters, incremental passes included.
	text := scrapeMetrics(t, addr)
	for _, series := range []string{
		`dirsync_directory_requests_total{account="corp",source="active_directory"}`,
		`dirsync_directory_entries_read_total{account="corp",source="active_directory"}`,
	} {
		if v, ok := metricValue(text, series); !ok || v <= 0 {
			t.Errorf("/metrics: %s = %v (found %v), want > 0", series, v, ok)
		}
	}

	// Put mallory back so other tests sharing the DC see the dataset.
	if err := dc.SetUserAccountControl(servertest.ADUserDN("mallory"), 544); err != nil {
		t.Fatal(err)
	}
	d.waitFor(mallory, 10*time.Second, isAllowed)
	if took, err := d.stop(); err != nil || took > 10*time.Second {
		t.Errorf("SIGTERM: exit %v after %v", err, took)
	}
	assertNoSecrets(t, "daemon log", d.log(), servertest.SambaAdminPassword)
}

// TestADExpiryWhileDCUnreachable: an account expiry read while the DC was
// up takes effect on time while the DC cannot be reached: the user turns
// inactive from the last published state, every failing pass keeps the
// rest. Before, accountExpires was re-evaluated only after a successful
// read, so an expired user kept access for the whole outage.
func TestADExpiryWhileDCUnreachable(t *testing.T) {
	dc := samba.Get(t)
	proxy := newFaultProxy(t, strings.TrimPrefix(dc.URL, "ldap://"))
	rs := servertest.StartRedis(t)
	dir := t.TempDir()
	cfg, addr := writeConfig(t, dir, adConfig(t, dir, rs.Addr, proxy.URL()))
	d := startDaemon(t, dir, cfg, addr)

	judy, mallory := "judy@"+servertest.ADEmailDomain, "mallory@"+servertest.ADEmailDomain
	if err := dc.Modify(fmt.Sprintf("dn: %s\nchangetype: modify\nreplace: accountExpires\naccountExpires: 0\n", servertest.ADUserDN("judy"))); err != nil {
		t.Fatal(err)
	}
	d.waitFor(judy, 60*time.Second, isAllowed)
	expiry := time.Now().Add(8 * time.Second)
	changed := time.Now()
	if err := dc.Modify(fmt.Sprintf("dn: %s\nchangetype: modify\nreplace: accountExpires\naccountExpires: %d\n",
		servertest.ADUserDN("judy"), ldapentry.FileTime(expiry))); err != nil {
		t.Fatal(err)
	}
	// The daemon reads the new expiry in a pass that starts after it.
	d.waitState(t, "corp", "a successful incremental pass after the expiry was set", func(a faultAccount) bool {
		r, ok := a.Runs["incremental"]
		return ok && r.StartedAt.After(changed) && r.Error == ""
	})
	proxy.Down()
	down := time.Now()
	d.waitState(t, "corp", "a pass failing while the DC is unreachable", func(a faultAccount) bool {
		r, ok := a.Runs["incremental"]
		return ok && r.StartedAt.After(down) && r.ReadFailed
	})
	if time.Now().After(expiry) {
		t.Fatalf("the DC went down only after the expiry; the test proves nothing (raise the margin)")
	}
	if dec, err := d.decision(judy); err != nil || !dec.Allowed {
		t.Fatalf("judy before her expiry: %+v %v", dec, err)
	}
	_, dec := d.waitFor(judy, 20*time.Second, func(d entitlement.Decision) bool { return d.Reason == entitlement.ReasonInactive })
	if at := time.Now(); at.Before(expiry) {
		t.Errorf("judy denied %v before her expiry", expiry.Sub(at))
	}
	if dec.Allowed || dec.Permission != entitlement.PermissionNone {
		t.Errorf("judy after her expiry with the DC down: %+v", dec)
	}
	if st := d.accountState(t, "corp"); st.Runs["incremental"].Error == "" {
		t.Errorf("the DC is down but the last pass did not fail: %+v", st.Runs["incremental"])
	}
	if dec, err := d.decision(mallory); err != nil || !dec.Allowed {
		t.Errorf("mallory lost access during the outage: %+v %v", dec, err)
	}
	proxy.Up(t)
}

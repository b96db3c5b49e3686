package ldapdir

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/go-ldap/ldap/v3"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/directory/ldapentry"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// datasetTime is when the Samba dataset's expiries were computed.
var datasetTime = time.Now()

// sharedDC is the one Samba DC this test binary provisions (~12 s).
var sharedDC = servertest.NewSharedSamba(func() servertest.SambaOptions { return servertest.ADDatasetOptions(datasetTime) })

func TestMain(m *testing.M) {
	code := m.Run()
	sharedDC.Close()
	os.Exit(code)
}

func sambaOptions(dc *servertest.Samba) Options {
	return Options{
		Type: TypeActiveDirectory, URLs: []string{dc.URL}, AllowInsecure: true,
		BindDN: servertest.SambaAdminUPN, BindPassword: servertest.SambaAdminPassword,
		UserBaseDN: servertest.ADCorpDN, GroupBaseDN: servertest.ADCorpDN,
		PageSize: 500, Timeout: 20 * time.Second,
	}
}

func TestSambaDecisionsAndChanges(t *testing.T) {
	dc := sharedDC.Get(t)
	ctx := context.Background()
	p := newPoller(t, sambaOptions(dc))
	snap, err := p.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bindings := servertest.ADDatasetBindings()
	now := time.Now()
	got := decisions(t, snap, servertest.ADEmailDomain, bindings, now)
	pro := want{entitlement.PermissionPro, entitlement.ReasonGranted}
	basic := want{entitlement.PermissionBasic, entitlement.ReasonGranted}
	wants := map[string]want{
		"alice@example.test":    pro,   // direct
		"bob@example.test":      pro,   // nested two levels
		"carol@example.test":    basic, // cycle Cyc-A ↔ Cyc-B
		"dave@example.test":     {entitlement.PermissionNone, entitlement.ReasonSuspended},
		"erin@example.test":     {entitlement.PermissionNone, entitlement.ReasonInactive},
		"frank@example.test":    pro, // accountExpires 0 = never
		"fiona@example.test":    pro, // expires in 30 days
		"grace@example.test":    {"", entitlement.ReasonUnknownUser},
		"heidi@example.test":    basic, // UPN fallback
		"ivan@example.test":     basic, // primary group only
		"judy@example.test":     pro,
		"mallory@example.test":  pro,
		"big-0000@example.test": basic,
		"big-1599@example.test": basic, // beyond the first 1,500 values
	}
	checkDecisions(t, got, wants)
	if n := snap.Skipped["no_email"]; n != 1 {
		t.Errorf("no_email skipped %d, want 1 (grace): %v", n, snap.Skipped)
	}
	if n := snap.Skipped["foreign_principal"]; n != 1 {
		t.Errorf("foreign_principal skipped %d, want 1 (S-1-5-11 in G-Pro): %v", n, snap.Skipped)
	}
	if n := len(got); n != 11+servertest.ADBigMembers {
		t.Errorf("%d decisions, want %d", n, 11+servertest.ADBigMembers)
	}
	id := got["alice@example.test"].UserID
	if len(id) != 36 || id[8] != '-' {
		t.Errorf("alice's id %q is not an objectGUID string", id)
	}
	// Expiry passes without any directory change: the mapper's clock decides.
	later := decisions(t, snap, servertest.ADEmailDomain, bindings, now.Add(31*24*time.Hour))
	if d := later["fiona@example.test"]; d.Reason != entitlement.ReasonInactive {
		t.Errorf("fiona 31 days later: %s/%s, want inactive", d.Permission, d.Reason)
	}

	if _, changed, err := p.Incremental(ctx); err != nil || changed {
		t.Fatalf("incremental without changes: changed=%v err=%v", changed, err)
	}

	// Disable mallory: only mallory flips.
	if err := dc.SetUserAccountControl(servertest.ADUserDN("mallory"), 546); err != nil {
		t.Fatal(err)
	}
	snap2, changed, err := p.Incremental(ctx)
	if err != nil || !changed {
		t.Fatalf("incremental after disabling mallory: changed=%v err=%v", changed, err)
	}
	got2 := decisions(t, snap2, servertest.ADEmailDomain, bindings, now)
	if d := got2["mallory@example.test"]; d.Reason != entitlement.ReasonSuspended {
		t.Errorf("mallory after disable: %s/%s, want suspended", d.Permission, d.Reason)
	}
	assertOnlyChanged(t, got, got2, "mallory@example.test")

	// Rename and move judy; delete big-1599.
	if err := dc.Modify(fmt.Sprintf("dn: %s\nchangetype: modrdn\nnewrdn: CN=judith\ndeleteoldrdn: 1\n\ndn: %s\nchangetype: delete\n",
		servertest.ADUserDN("judy"), servertest.ADUserDN("big-1599"))); err != nil {
		t.Fatal(err)
	}
	snap3, changed, err := p.Incremental(ctx)
	if err != nil || !changed {
		t.Fatalf("incremental after rename/delete: changed=%v err=%v", changed, err)
	}
	got3 := decisions(t, snap3, servertest.ADEmailDomain, bindings, now)
	if d := got3["judy@example.test"]; d.Permission != entitlement.PermissionPro || d.UserID != got["judy@example.test"].UserID {
		t.Errorf("renamed judy: %s/%s id %s, want pro with id %s", d.Permission, d.Reason, d.UserID, got["judy@example.test"].UserID)
	}
	if d, ok := got3["big-1599@example.test"]; ok {
		t.Errorf("deleted big-1599 still has a decision %s/%s", d.Permission, d.Reason)
	}
	full, err := p.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gotFull := decisions(t, full, servertest.ADEmailDomain, bindings, now)
	if len(gotFull) != len(got3) {
		t.Errorf("full read has %d decisions, incremental %d", len(gotFull), len(got3))
	}
	for email, d := range got3 {
		if f := gotFull[email]; f.Permission != d.Permission || f.Reason != d.Reason || f.UserID != d.UserID {
			t.Errorf("%s: incremental %s/%s, full %s/%s", email, d.Permission, d.Reason, f.Permission, f.Reason)
		}
	}
}

func assertOnlyChanged(t *testing.T, before, after map[string]entitlement.Decision, changed string) {
	t.Helper()
	for email, d := range before {
		if email == changed {
			continue
		}
		a, ok := after[email]
		if !ok || a.Permission != d.Permission || a.Reason != d.Reason || a.UserID != d.UserID {
			t.Errorf("%s changed from %s/%s to %s/%s", email, d.Permission, d.Reason, a.Permission, a.Reason)
		}
	}
}

func unicodePwd(pw string) string {
	u := utf16.Encode([]rune(`"` + pw + `"`))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func TestSambaTLSAndBindErrors(t *testing.T) {
	dc := sharedDC.Get(t)
	ctx := context.Background()

	ldaps := sambaOptions(dc)
	ldaps.URLs, ldaps.AllowInsecure, ldaps.TLSConfig = []string{dc.LDAPSURL}, false, dc.TLS.ClientConfig()
	if _, err := newPoller(t, ldaps).Snapshot(ctx); err != nil {
		t.Fatalf("ldaps: %v", err)
	}
	startTLS := sambaOptions(dc)
	startTLS.AllowInsecure, startTLS.StartTLS, startTLS.TLSConfig = false, true, dc.TLS.ClientConfig()
	if _, err := newPoller(t, startTLS).Snapshot(ctx); err != nil {
		t.Fatalf("starttls: %v", err)
	}

	const pw = "Passw0rd!Svc9"
	err := dc.Modify(fmt.Sprintf(`dn: CN=svc-off,CN=Users,%[1]s
changetype: add
objectClass: user
sAMAccountName: svc-off
unicodePwd:: %[2]s
userAccountControl: 514

dn: CN=svc-old,CN=Users,%[1]s
changetype: add
objectClass: user
sAMAccountName: svc-old
unicodePwd:: %[2]s
userAccountControl: 512
accountExpires: 130000000000000000
`, servertest.SambaBaseDN, unicodePwd(pw)))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		dn, pw, code string
	}{
		{servertest.SambaAdminUPN, "wrong-password", "52e"},
		{"svc-off@example.test", pw, "533"},
		{"svc-old@example.test", pw, "701"},
	}
	for _, c := range cases {
		o := sambaOptions(dc)
		o.BindDN, o.BindPassword = c.dn, c.pw
		_, err := newPoller(t, o).Snapshot(ctx)
		var be *BindError
		if !errors.As(err, &be) || be.Code != c.code {
			t.Errorf("bind as %s: %v, want AD data %s", c.dn, err, c.code)
			continue
		}
		if want := adBindReasons[c.code]; be.Reason != want {
			t.Errorf("bind as %s: reason %q, want %q", c.dn, be.Reason, want)
		}
	}
}

// TestSambaLeastPrivilegeAccount: a plain domain user as the service account
// (no admin rights) reads all a full pass needs, but may not list
// CN=Deleted Objects. Incremental passes still run — a suspension is seen
// at once — and a deletion waits for the next full read (docs/active-directory.md).
func TestSambaLeastPrivilegeAccount(t *testing.T) {
	dc := sharedDC.Get(t)
	ctx := context.Background()
	const pw = "Passw0rd!Reader7"
	ou := "OU=LeastPriv," + servertest.SambaBaseDN
	err := dc.Modify(fmt.Sprintf(`dn: CN=svc-reader,CN=Users,%[1]s
changetype: add
objectClass: user
sAMAccountName: svc-reader
unicodePwd:: %[2]s
userAccountControl: 512

dn: %[3]s
changetype: add
objectClass: organizationalUnit

dn: CN=lp-a,%[3]s
changetype: add
objectClass: user
sAMAccountName: lp-a
mail: lp-a@example.test
unicodePwd:: %[2]s
userAccountControl: 512

dn: CN=lp-b,%[3]s
changetype: add
objectClass: user
sAMAccountName: lp-b
mail: lp-b@example.test
unicodePwd:: %[2]s
userAccountControl: 512
`, servertest.SambaBaseDN, unicodePwd(pw), ou))
	if err != nil {
		t.Fatal(err)
	}

	// The premise: the administrator sees a fresh tombstone, this account
	// does not (Samba answers success with no entries).
	if err := dc.Modify(fmt.Sprintf("dn: CN=lp-gone,%[1]s\nchangetype: add\nobjectClass: user\nsAMAccountName: lp-gone\n\n"+
		"dn: CN=lp-gone,%[1]s\nchangetype: delete\n", ou)); err != nil {
		t.Fatal(err)
	}
	tombstones := func(bindDN, password string) (int, error) {
		conn, err := ldap.DialURL(dc.URL)
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		if err := conn.Bind(bindDN, password); err != nil {
			return 0, err
		}
		res, err := conn.Search(ldap.NewSearchRequest("CN=Deleted Objects,"+servertest.SambaBaseDN, ldap.ScopeSingleLevel, ldap.NeverDerefAliases,
			0, 0, false, "(&(isDeleted=TRUE)(sAMAccountName=lp-gone))", []string{"objectGUID"}, []ldap.Control{ldap.NewControlMicrosoftShowDeleted()}))
		if err != nil {
			return 0, err
		}
		return len(res.Entries), nil
	}
	if n, err := tombstones(servertest.SambaAdminUPN, servertest.SambaAdminPassword); err != nil || n != 1 {
		t.Fatalf("administrator sees %d lp-gone tombstones (%v), want 1", n, err)
	}
	if n, err := tombstones("svc-reader@example.test", pw); n != 0 {
		t.Fatalf("svc-reader sees %d tombstones (%v); the test needs an account that cannot", n, err)
	}

	o := sambaOptions(dc)
	o.BindDN, o.BindPassword, o.UserBaseDN = "svc-reader@example.test", pw, ou
	p := newPoller(t, o)
	snap, err := p.Snapshot(ctx)
	if err != nil {
		t.Fatalf("full read as a plain user: %v", err)
	}
	bindings := servertest.ADDatasetBindings()
	now := time.Now()
	before := decisions(t, snap, servertest.ADEmailDomain, bindings, now)
	if len(before) != 2 {
		t.Fatalf("decisions %v, want lp-a and lp-b", before)
	}

	if err := dc.SetUserAccountControl("CN=lp-a,"+ou, 514); err != nil {
		t.Fatal(err)
	}
	if err := dc.Modify(fmt.Sprintf("dn: CN=lp-b,%s\nchangetype: delete\n", ou)); err != nil {
		t.Fatal(err)
	}
	snap2, changed, err := p.Incremental(ctx)
	if err != nil || !changed {
		t.Fatalf("incremental as a plain user: changed=%v err=%v", changed, err)
	}
	after := decisions(t, snap2, servertest.ADEmailDomain, bindings, now)
	if d := after["lp-a@example.test"]; d.Reason != entitlement.ReasonSuspended {
		t.Errorf("lp-a after disable: %s/%s, want suspended", d.Permission, d.Reason)
	}
	if _, ok := after["lp-b@example.test"]; !ok {
		t.Errorf("lp-b's deletion was seen without tombstones; the documented behaviour is that it waits for the full read")
	}

	full, err := p.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	final := decisions(t, full, servertest.ADEmailDomain, bindings, now)
	if _, ok := final["lp-b@example.test"]; ok {
		t.Errorf("lp-b still has a decision after a full read")
	}
	if d := final["lp-a@example.test"]; d.Reason != entitlement.ReasonSuspended {
		t.Errorf("lp-a after the full read: %s/%s, want suspended", d.Permission, d.Reason)
	}
}

// TestSambaLockedOutServiceAccount: a service account locked out by bad
// passwords (a fine-grained password policy applied to it alone, so the
// domain's other accounts are untouched) is refused with AD data 775 and
// the reason says so, even with the right password.
func TestSambaLockedOutServiceAccount(t *testing.T) {
	dc := sharedDC.Get(t)
	const pw = "Passw0rd!Locked3"
	user := "CN=svc-locked,CN=Users," + servertest.SambaBaseDN
	err := dc.Modify(fmt.Sprintf(`dn: %[1]s
changetype: add
objectClass: user
sAMAccountName: svc-locked
unicodePwd:: %[2]s
userAccountControl: 512

dn: CN=lock-svc-locked,CN=Password Settings Container,CN=System,%[3]s
changetype: add
objectClass: msDS-PasswordSettings
msDS-PasswordSettingsPrecedence: 1
msDS-PasswordReversibleEncryptionEnabled: FALSE
msDS-PasswordHistoryLength: 0
msDS-PasswordComplexityEnabled: FALSE
msDS-MinimumPasswordLength: 1
msDS-MinimumPasswordAge: 0
msDS-MaximumPasswordAge: -9223372036854775808
msDS-LockoutThreshold: 2
msDS-LockoutObservationWindow: -18000000000
msDS-LockoutDuration: -18000000000
msDS-PSOAppliesTo: %[1]s
`, user, unicodePwd(pw), servertest.SambaBaseDN))
	if err != nil {
		t.Fatal(err)
	}
	o := sambaOptions(dc)
	o.BindDN = "svc-locked@example.test"
	for range 3 {
		o.BindPassword = "wrong-password"
		_, _ = newPoller(t, o).Snapshot(context.Background())
	}
	o.BindPassword = pw
	_, err = newPoller(t, o).Snapshot(context.Background())
	var be *BindError
	if !errors.As(err, &be) || be.Code != "775" || be.Reason != adBindReasons["775"] {
		t.Fatalf("bind as a locked-out account: %v, want AD data 775 (%s)", err, adBindReasons["775"])
	}
}

// TestSambaRangeRetrieval: Samba never ranges values on its own (it returns
// every member of G-Big, 1,600 in the dataset), but answers explicit range
// requests as AD does. Starting from the first range AD would send unasked, the poller's
// follow-up requests fetch the rest on both clients it uses.
func TestSambaRangeRetrieval(t *testing.T) {
	dc := sharedDC.Get(t)
	ctx := context.Background()
	p := newPoller(t, sambaOptions(dc))
	// What Samba returns unranged is the expected result (other tests of
	// this binary may have deleted a member).
	admin, err := dc.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	res, err := admin.Search(ldap.NewSearchRequest(servertest.ADGroupDN("G-Big"), ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"member"}, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("G-Big: %v", err)
	}
	want := len(res.Entries[0].GetAttributeValues("member"))
	if want <= 1500 {
		t.Fatalf("G-Big has %d members; the test needs more than one range of 1,500", want)
	}
	for name, dial := range map[string]dialFunc{"go-ldap": p.dial, "ldapwire": p.dialWire} {
		t.Run(name, func(t *testing.T) {
			conn, err := dial(ctx, dc.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			var first *ldapentry.Entry
			var ranged []rangedAttr
			req := ldap.NewSearchRequest(servertest.ADGroupDN("G-Big"), ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
				"(objectClass=*)", []string{"member;range=0-1499"}, nil)
			if _, err := conn.searchPage(ctx, req, func(e *ldapentry.Entry, r []rangedAttr) error {
				first, ranged = cloneEntry(e), r // the entry is only valid during the call
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if first == nil || len(first.Attrs["member"]) != 1500 || len(ranged) != 1 || ranged[0].r != (valueRange{0, 1499}) {
				t.Fatalf("first range: entry %v, ranges %v; want 1,500 members named member;range=0-1499", first != nil, ranged)
			}
			if err := p.completeRanges(ctx, conn, first, ranged); err != nil {
				t.Fatal(err)
			}
			members := first.Attrs["member"]
			if len(members) != want {
				t.Fatalf("%d members after range retrieval, want %d", len(members), want)
			}
			seen := map[string]bool{}
			for _, m := range members {
				seen[m] = true
			}
			if len(seen) != want {
				t.Errorf("%d distinct members, want %d (a range was read twice)", len(seen), want)
			}
		})
	}
}

// userAccountControlGUID is the schemaIDGUID of the userAccountControl
// attribute (MS-ADA3), the object type of an ACE about reading it.
const userAccountControlGUID = "bf967a68-0de6-11d0-a285-00aa003049e2"

// TestSambaHiddenUserAccountControl: an ACL on one user that hides
// userAccountControl from the service account (a real AD hardening that
// breaks syncs) denies that user, counted as unreadable state, over both
// LDAP clients; it used to read as an enabled account.
func TestSambaHiddenUserAccountControl(t *testing.T) {
	dc := sharedDC.Get(t)
	ctx := context.Background()
	const pw = "Passw0rd!Hidden8"
	ou := "OU=HiddenUAC," + servertest.SambaBaseDN
	if err := dc.Modify(fmt.Sprintf(`dn: CN=svc-hidden,CN=Users,%[1]s
changetype: add
objectClass: user
sAMAccountName: svc-hidden
unicodePwd:: %[2]s
userAccountControl: 512

dn: %[3]s
changetype: add
objectClass: organizationalUnit

dn: CN=hu-seen,%[3]s
changetype: add
objectClass: user
sAMAccountName: hu-seen
mail: hu-seen@example.test
userAccountControl: 512

dn: CN=hu-hidden,%[3]s
changetype: add
objectClass: user
sAMAccountName: hu-hidden
mail: hu-hidden@example.test
userAccountControl: 512
`, servertest.SambaBaseDN, unicodePwd(pw), ou)); err != nil {
		t.Fatal(err)
	}
	conn, err := dc.Dial()
	if err != nil {
		t.Fatal(err)
	}
	res, err := conn.Search(ldap.NewSearchRequest("CN=svc-hidden,CN=Users,"+servertest.SambaBaseDN, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", []string{"objectSid"}, nil))
	conn.Close()
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("svc-hidden's SID: %v", err)
	}
	sid := ldapentry.DecodeSID(res.Entries[0].GetRawAttributeValue("objectSid"))
	if err := dc.AddACE("CN=hu-hidden,"+ou, fmt.Sprintf("(OD;;RP;%s;;%s)", userAccountControlGUID, sid)); err != nil {
		t.Fatal(err)
	}
	// The premise: the service account reads hu-hidden without its UAC.
	seen, err := ldap.DialURL(dc.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer seen.Close()
	if err := seen.Bind("svc-hidden@example.test", pw); err != nil {
		t.Fatal(err)
	}
	r2, err := seen.Search(ldap.NewSearchRequest("CN=hu-hidden,"+ou, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", []string{"userAccountControl", "mail"}, nil))
	if err != nil || len(r2.Entries) != 1 || r2.Entries[0].GetAttributeValue("mail") == "" || r2.Entries[0].GetAttributeValue("userAccountControl") != "" {
		t.Fatalf("the ACE does not hide userAccountControl from the service account: %v %+v", err, r2)
	}

	// Full reads decode with ldapwire, incremental ones with go-ldap.
	o := sambaOptions(dc)
	o.BindDN, o.BindPassword, o.UserBaseDN = "svc-hidden@example.test", pw, ou
	p := newPoller(t, o)
	check := func(what string, snap *directory.Snapshot) {
		t.Helper()
		if snap.Unreadable[ldapentry.UnreadableUserAccountControl] != 1 {
			t.Errorf("%s: unreadable %v; want userAccountControl 1", what, snap.Unreadable)
		}
		for _, u := range snap.Users {
			want := directory.StatusActive
			if strings.HasPrefix(u.Email, "hu-hidden") {
				want = directory.StatusSuspended
			}
			if u.Status != want {
				t.Errorf("%s: %s status %v; want %v", what, u.Email, u.Status, want)
			}
		}
	}
	snap, err := p.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	check("full read", snap)
	if err := dc.Modify(fmt.Sprintf("dn: CN=hu-hidden,%s\nchangetype: modify\nreplace: mail\nmail: hu-hidden-2@example.test\n", ou)); err != nil {
		t.Fatal(err)
	}
	snap, changed, err := p.Incremental(ctx)
	if err != nil || !changed {
		t.Fatalf("incremental: changed=%v err=%v", changed, err)
	}
	check("incremental read", snap)
}

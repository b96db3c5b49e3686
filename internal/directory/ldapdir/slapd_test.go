package ldapdir

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

const fillerUsers = 600 // more than slapd's default 500-entry size limit

// slapdDataset: groupOfNames, groupOfUniqueNames (with an optional uid
// suffix) nested in it, posixGroup/memberUid, a disabled marker
// (employeeType: disabled), a user without mail and 600 filler users.
func slapdDataset() string {
	var b strings.Builder
	user := func(uid string, extra ...string) {
		fmt.Fprintf(&b, "dn: uid=%s,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s\nsn: %s\n", uid, uid, uid, uid)
		for _, x := range extra {
			b.WriteString(x + "\n")
		}
		b.WriteString("\n")
	}
	user("alice", "mail: Alice@Example.Test")
	user("bob", "mail: bob@example.test")
	user("carol", "mail: carol@example.test")
	user("dave", "mail: dave@example.test", "employeeType: disabled")
	user("erin")
	for i := range fillerUsers {
		user(fmt.Sprintf("f%04d", i), fmt.Sprintf("mail: f%04d@example.test", i))
	}
	b.WriteString(`dn: cn=inner,ou=groups,dc=example,dc=test
objectClass: groupOfUniqueNames
cn: inner
uniqueMember: uid=bob,ou=people,dc=example,dc=test#'0101'B

dn: cn=pro,ou=groups,dc=example,dc=test
objectClass: groupOfNames
cn: pro
member: uid=alice,ou=people,dc=example,dc=test
member: cn=inner,ou=groups,dc=example,dc=test
member: uid=dave,ou=people,dc=example,dc=test
member: uid=erin,ou=people,dc=example,dc=test

dn: cn=posix,ou=groups,dc=example,dc=test
objectClass: posixGroup
cn: posix
gidNumber: 5000
memberUid: carol
`)
	return b.String()
}

var slapdBindings = map[string]string{
	"cn=pro,ou=groups,dc=example,dc=test":   "pro",
	"cn=posix,ou=groups,dc=example,dc=test": "basic",
}

func slapdOptions(s *servertest.Slapd) Options {
	return Options{
		Type: TypeLDAP, URLs: []string{s.URL}, StartTLS: true, TLSConfig: s.TLS.ClientConfig(),
		BindDN: s.ServiceDN, BindPassword: s.ServicePassword,
		UserBaseDN: s.PeopleDN, GroupBaseDN: s.GroupsDN,
		DisabledAttribute: "employeeType", DisabledValue: "disabled",
		PageSize: 100, Timeout: 10 * time.Second,
	}
}

func newPoller(t *testing.T, o Options) *Poller {
	t.Helper()
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSlapdDecisionsRenameAndDisable(t *testing.T) {
	s := servertest.StartSlapd(t, servertest.SlapdOptions{LDIF: slapdDataset()})
	ctx := context.Background()
	p := newPoller(t, slapdOptions(s))
	snap, err := p.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(snap.Users); got != 4+fillerUsers {
		t.Fatalf("%d users, want %d", got, 4+fillerUsers)
	}
	// createTimestamp/modifyTimestamp tell an old disabled account from a
	// live one sharing its email (mapper.Map).
	for _, u := range snap.Users {
		if u.Created == 0 || u.Changed < u.Created {
			t.Fatalf("%s: created %d, changed %d: createTimestamp/modifyTimestamp not read", u.DN, u.Created, u.Changed)
		}
	}
	// Two connections (StartTLS and bind each), then pages of 100: at
	// least 7 for the 605 users and 1 for the groups.
	if st := p.Stats(); st.EntriesRead != 5+fillerUsers+3 || st.Requests < 4+7+1 {
		t.Errorf("stats after a full read = %+v, want %d entries and at least 12 requests", st, 5+fillerUsers+3)
	}
	if snap.Skipped["no_email"] != 1 {
		t.Errorf("skipped %v, want no_email 1 (erin)", snap.Skipped)
	}
	now := time.Now()
	got := decisions(t, snap, "example.test", slapdBindings, now)
	checkDecisions(t, got, map[string]want{
		"alice@example.test": {entitlement.PermissionPro, entitlement.ReasonGranted},
		"bob@example.test":   {entitlement.PermissionPro, entitlement.ReasonGranted}, // uniqueMember in nested group
		"carol@example.test": {entitlement.PermissionBasic, entitlement.ReasonGranted},
		"dave@example.test":  {entitlement.PermissionNone, entitlement.ReasonSuspended},
		"f0000@example.test": {entitlement.PermissionNone, entitlement.ReasonNoPermission},
		"erin@example.test":  {"", entitlement.ReasonUnknownUser},
	})
	aliceID := got["alice@example.test"].UserID
	if len(aliceID) != 36 || strings.Contains(aliceID, "=") {
		t.Fatalf("alice's id %q is not an entryUUID", aliceID)
	}

	// Nothing changed: the overlap re-read finds identical entries.
	if same, changed, err := p.Incremental(ctx); err != nil || changed {
		t.Fatalf("incremental without changes: changed=%v err=%v", changed, err)
	} else if same != snap {
		// The engine reads the snapshot even when nothing changed.
		t.Fatalf("incremental without changes returned snapshot %p, want the last one %p", same, snap)
	}

	// Rename alice (no refint overlay: the group keeps her old DN) and
	// disable bob. The entryUUID keeps alice's decision.
	time.Sleep(1100 * time.Millisecond) // modifyTimestamp has one-second granularity
	s.Modify(t, `dn: uid=alice,ou=people,dc=example,dc=test
changetype: modrdn
newrdn: uid=alice2
deleteoldrdn: 1

dn: uid=bob,ou=people,dc=example,dc=test
changetype: modify
add: employeeType
employeeType: disabled
`)
	snap2, changed, err := p.Incremental(ctx)
	if err != nil || !changed {
		t.Fatalf("incremental after changes: changed=%v err=%v", changed, err)
	}
	got2 := decisions(t, snap2, "example.test", slapdBindings, now)
	if d := got2["alice@example.test"]; d.UserID != aliceID || d.Permission != entitlement.PermissionPro {
		t.Errorf("renamed alice: %s/%s id %s, want pro with id %s", d.Permission, d.Reason, d.UserID, aliceID)
	}
	if d := got2["bob@example.test"]; d.Reason != entitlement.ReasonSuspended {
		t.Errorf("disabled bob: %s/%s, want suspended", d.Permission, d.Reason)
	}
	for email, d := range got {
		if email == "bob@example.test" {
			continue
		}
		if d2 := got2[email]; d2.Permission != d.Permission || d2.Reason != d.Reason {
			t.Errorf("%s changed from %s/%s to %s/%s", email, d.Permission, d.Reason, d2.Permission, d2.Reason)
		}
	}
	// The earlier snapshot was not mutated by the incremental pass.
	if d := decisions(t, snap, "example.test", slapdBindings, now)["bob@example.test"]; d.Permission != entitlement.PermissionPro {
		t.Errorf("the first snapshot changed under the caller: bob is %s", d.Permission)
	}
	// A full read agrees with the incremental result.
	full, err := p.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got3 := decisions(t, full, "example.test", slapdBindings, now)
	for email, d := range got2 {
		if d3 := got3[email]; d3.Permission != d.Permission || d3.Reason != d.Reason || d3.UserID != d.UserID {
			t.Errorf("%s: incremental %s/%s, full read %s/%s", email, d.Permission, d.Reason, d3.Permission, d3.Reason)
		}
	}
}

func TestSlapdSizeLimitFailsTheRead(t *testing.T) {
	s := servertest.StartSlapd(t, servertest.SlapdOptions{LDIF: slapdDataset()})
	o := slapdOptions(s)
	o.BindDN, o.BindPassword = s.LimitedDN, s.LimitedPassword
	snap, err := newPoller(t, o).Snapshot(context.Background())
	if err == nil {
		t.Fatalf("read under a 500-entry size limit returned %d users and no error", len(snap.Users))
	}
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) || !strings.Contains(err.Error(), "size limit") {
		t.Fatalf("error %v is not a size-limit error", err)
	}
	if snap != nil {
		t.Fatal("a snapshot came back with the error")
	}
}

func TestSlapdTransportAndFailover(t *testing.T) {
	s := servertest.StartSlapd(t, servertest.SlapdOptions{LDIF: slapdDataset()})
	ctx := context.Background()

	ldaps := slapdOptions(s)
	ldaps.URLs, ldaps.StartTLS = []string{s.LDAPSURL}, false
	if _, err := newPoller(t, ldaps).Snapshot(ctx); err != nil {
		t.Fatalf("ldaps: %v", err)
	}

	untrusted := ldaps
	untrusted.TLSConfig = nil // system roots do not know the test CA
	if _, err := newPoller(t, untrusted).Snapshot(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("ldaps with an unknown CA: %v, want a certificate error", err)
	}

	plain := slapdOptions(s)
	plain.StartTLS = false
	if _, err := New(plain); err == nil {
		t.Fatal("plain ldap:// without allow_insecure was accepted")
	}
	plain.AllowInsecure = true
	if _, err := newPoller(t, plain).Snapshot(ctx); err != nil {
		t.Fatalf("plain ldap with allow_insecure: %v", err)
	}

	dead := fmt.Sprintf("ldap://127.0.0.1:%d", servertest.FreePort(t))
	failover := slapdOptions(s)
	failover.URLs = []string{dead, s.URL}
	if _, err := newPoller(t, failover).Snapshot(ctx); err != nil {
		t.Fatalf("failover to the second URL: %v", err)
	}

	wrong := slapdOptions(s)
	wrong.BindPassword = "wrong"
	_, err := newPoller(t, wrong).Snapshot(ctx)
	var be *BindError
	if !errors.As(err, &be) || !strings.Contains(err.Error(), "invalid credentials") || strings.Contains(err.Error(), "wrong\"") {
		t.Fatalf("wrong password: %v", err)
	}

	s.Kill()
	if _, err := newPoller(t, slapdOptions(s)).Snapshot(ctx); err == nil {
		t.Fatal("read from a dead server succeeded")
	}
}

func TestSlapdDisconnectMidSearchFailsTheRead(t *testing.T) {
	s := servertest.StartSlapd(t, servertest.SlapdOptions{LDIF: slapdDataset()})
	target := strings.TrimPrefix(s.URL, "ldap://")
	proxy := newCutProxy(t, target, 30_000) // a few pages of users, then the connection drops
	o := slapdOptions(s)
	o.URLs, o.StartTLS, o.AllowInsecure = []string{"ldap://" + proxy.Addr()}, false, true
	snap, err := newPoller(t, o).Snapshot(context.Background())
	if err == nil {
		t.Fatalf("a read cut mid-search returned %d users and no error", len(snap.Users))
	}
	t.Logf("cut read: %v", err)
}

func TestSlapdNoUsersIsAnError(t *testing.T) {
	s := servertest.StartSlapd(t, servertest.SlapdOptions{LDIF: slapdDataset()})
	o := slapdOptions(s)
	o.UserBaseDN = s.GroupsDN // a wrong base DN: no users there
	if _, err := newPoller(t, o).Snapshot(context.Background()); !errors.Is(err, ErrNoUsers) {
		t.Fatalf("read with no users: %v, want ErrNoUsers", err)
	}
}

// TestSlapdAmbiguousMemberUID: a posixGroup memberUid that two user
// entries carry (here under different RDNs) resolves to neither and is
// counted; it used to be given to whichever of the two was read last.
func TestSlapdAmbiguousMemberUID(t *testing.T) {
	ldif := `dn: cn=twin one,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
cn: twin one
sn: one
uid: twin
mail: twin.one@example.test

dn: cn=twin two,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
cn: twin two
sn: two
uid: twin
mail: twin.two@example.test

dn: uid=carol,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
uid: carol
cn: carol
sn: carol
mail: carol@example.test

dn: cn=posix,ou=groups,dc=example,dc=test
objectClass: posixGroup
cn: posix
gidNumber: 5000
memberUid: twin
memberUid: carol
`
	s := servertest.StartSlapd(t, servertest.SlapdOptions{LDIF: ldif})
	p := newPoller(t, slapdOptions(s))
	snap, err := p.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if snap.Skipped["ambiguous_member"] != 1 {
		t.Errorf("skipped %v; want ambiguous_member 1", snap.Skipped)
	}
	got := decisions(t, snap, "example.test", map[string]string{"cn=posix,ou=groups,dc=example,dc=test": "basic"}, time.Now())
	checkDecisions(t, got, map[string]want{
		"carol@example.test":    {entitlement.PermissionBasic, entitlement.ReasonGranted},
		"twin.one@example.test": {entitlement.PermissionNone, entitlement.ReasonNoPermission},
		"twin.two@example.test": {entitlement.PermissionNone, entitlement.ReasonNoPermission},
	})
}

// TestSlapdPatchesInPlace (issue 16): a user's state change and a group's
// new member come back as a Patch (users patched in place, the group in a
// copy of the groups), also after a pass that found nothing; a rename is
// no Patch.
func TestSlapdPatchesInPlace(t *testing.T) {
	s := servertest.StartSlapd(t, servertest.SlapdOptions{LDIF: slapdDataset()})
	ctx := context.Background()
	p := newPoller(t, slapdOptions(s))
	full, err := p.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, changed, err := p.Incremental(ctx); err != nil || changed {
		t.Fatalf("nothing changed: changed=%v err=%v", changed, err)
	}
	s.Modify(t, "dn: uid=f0002,ou=people,dc=example,dc=test\nchangetype: modify\nreplace: employeeType\nemployeeType: disabled\n")
	snap, changed, err := p.Incremental(ctx)
	if err != nil || !changed || snap.Patch == nil || len(snap.Patch.Users) != 1 || len(snap.Patch.Groups) != 0 || &snap.Users[0] != &full.Users[0] {
		t.Fatalf("a disabled user: changed=%v err=%v patch %+v (users shared: %v)", changed, err, snap.Patch, &snap.Users[0] == &full.Users[0])
	}
	if u := snap.Users[snap.Patch.Users[0]]; u.Email != "f0002@example.test" || u.Status != directory.StatusSuspended {
		t.Fatalf("patched user = %+v", u)
	}
	if _, changed, err := p.Incremental(ctx); err != nil || changed {
		t.Fatalf("nothing changed: changed=%v err=%v", changed, err)
	}
	s.Modify(t, "dn: cn=pro,ou=groups,dc=example,dc=test\nchangetype: modify\nadd: member\nmember: uid=f0001,ou=people,dc=example,dc=test\n")
	before := snap.Groups
	snap, changed, err = p.Incremental(ctx)
	if err != nil || !changed || snap.Patch == nil || len(snap.Patch.Groups) != 1 || len(snap.Patch.Users) != 0 {
		t.Fatalf("a new member: changed=%v err=%v patch %+v", changed, err, snap.Patch)
	}
	g := snap.Patch.Groups[0]
	if len(snap.Groups[g].Members) != len(before[g].Members)+1 {
		t.Errorf("pro has %d members, had %d", len(snap.Groups[g].Members), len(before[g].Members))
	}
	s.Modify(t, "dn: uid=f0003,ou=people,dc=example,dc=test\nchangetype: modrdn\nnewrdn: uid=f0003b\ndeleteoldrdn: 1\n")
	if snap, _, err := p.Incremental(ctx); err != nil || snap.Patch != nil {
		t.Fatalf("a rename: err=%v patch %+v; want a rebuilt snapshot", err, snap.Patch)
	}
}

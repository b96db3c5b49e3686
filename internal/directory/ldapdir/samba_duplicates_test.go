package ldapdir

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/directory/ldapentry"
	"github.com/dirsync/dirsync/internal/entitlement/mapper"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// TestSambaSharedEmail (issue 12 item 11) on a real DC: an old disabled
// account that kept an address does not lock out the account created after
// it (whenChanged of the old one before whenCreated of the new one), but
// touching the old account afterwards removes that evidence, and two
// enabled accounts with one address are denied duplicate_identity. The
// most usable account used to decide all three.
func TestSambaSharedEmail(t *testing.T) {
	dc := sharedDC.Get(t)
	ctx := context.Background()
	ou := "OU=SharedMail," + servertest.SambaBaseDN
	group := "CN=G-Shared," + ou
	if err := dc.Modify(fmt.Sprintf(`dn: %[1]s
changetype: add
objectClass: organizationalUnit

dn: CN=sm-old,%[1]s
changetype: add
objectClass: user
sAMAccountName: sm-old
mail: kim@example.test
userAccountControl: 514

dn: CN=sm-twin-a,%[1]s
changetype: add
objectClass: user
sAMAccountName: sm-twin-a
mail: twin@example.test
userAccountControl: 512

dn: CN=sm-twin-b,%[1]s
changetype: add
objectClass: user
sAMAccountName: sm-twin-b
mail: twin@example.test
userAccountControl: 512
`, ou)); err != nil {
		t.Fatal(err)
	}
	// whenCreated/whenChanged have one-second resolution: let the DC's
	// clock pass the old account's last change before creating the new one.
	waitPast(t, dc, "CN=sm-old,"+ou, "whenChanged")
	if err := dc.Modify(fmt.Sprintf(`dn: CN=sm-new,%[1]s
changetype: add
objectClass: user
sAMAccountName: sm-new
mail: kim@example.test
userAccountControl: 512

dn: %[2]s
changetype: add
objectClass: group
member: CN=sm-old,%[1]s
member: CN=sm-new,%[1]s
member: CN=sm-twin-a,%[1]s
member: CN=sm-twin-b,%[1]s
`, ou, group)); err != nil {
		t.Fatal(err)
	}

	o := sambaOptions(dc)
	o.UserBaseDN, o.GroupBaseDN = ou, ou
	p := newPoller(t, o)
	policy := mapper.Policy{Account: "acme", ClaimedDomains: []string{servertest.ADEmailDomain},
		Bindings: []mapper.Binding{{Group: group, Permission: entitlement.PermissionPro}}}
	check := func(what string, snap *directory.Snapshot, want map[string]entitlement.Reason) {
		t.Helper()
		res := mapper.Map(policy, snap, time.Now())
		got := map[string]entitlement.Reason{}
		for _, d := range res.Decisions {
			got[d.Email] = d.Reason
		}
		if len(got) != len(want) {
			t.Errorf("%s: decisions %v; want %v", what, got, want)
		}
		for email, r := range want {
			if got[email] != r {
				t.Errorf("%s: %s = %q; want %q", what, email, got[email], r)
			}
		}
		found := false
		for _, pr := range res.Problems {
			found = found || pr.Code == mapper.ProblemDuplicateIdentity
		}
		if !found || res.Stats.DuplicateIdentities == 0 {
			t.Errorf("%s: duplicate_identity not reported: %+v %+v", what, res.Problems, res.Stats)
		}
		if t.Failed() {
			for _, u := range snap.Users {
				t.Logf("%s: read %s %s %s created %d changed %d", what, u.DN, u.Email, u.Status, u.Created, u.Changed)
			}
		}
	}
	snap, err := p.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range snap.Users {
		if u.Created == 0 || u.Changed == 0 {
			t.Fatalf("%s: whenCreated/whenChanged not read: %+v", u.DN, u)
		}
	}
	check("full read", snap, map[string]entitlement.Reason{
		"kim@example.test":  entitlement.ReasonGranted,
		"twin@example.test": entitlement.ReasonDuplicateIdentity,
	})

	// Editing the old account now makes it look as recent as the new one.
	waitPast(t, dc, "CN=sm-new,"+ou, "whenCreated")
	if err := dc.Modify(fmt.Sprintf("dn: CN=sm-old,%s\nchangetype: modify\nreplace: description\ndescription: left in 2019\n", ou)); err != nil {
		t.Fatal(err)
	}
	snap, changed, err := p.Incremental(ctx)
	if err != nil || !changed {
		t.Fatalf("incremental: changed=%t err=%v", changed, err)
	}
	check("incremental read", snap, map[string]entitlement.Reason{
		"kim@example.test":  entitlement.ReasonDuplicateIdentity,
		"twin@example.test": entitlement.ReasonDuplicateIdentity,
	})
}

// waitPast waits until the wall clock (shared with the loopback DC) is a
// whole second past the GeneralizedTime attribute attr of dn.
func waitPast(t *testing.T, dc *servertest.Samba, dn, attr string) {
	t.Helper()
	conn, err := dc.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	res, err := conn.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{attr}, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("read %s of %s: %v", attr, dn, err)
	}
	at, ok := ldapentry.ParseGeneralizedTime(res.Entries[0].GetAttributeValue(attr))
	if !ok {
		t.Fatalf("%s of %s = %q", attr, dn, res.Entries[0].GetAttributeValue(attr))
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Unix() <= at.Unix(); {
		if time.Now().After(deadline) {
			t.Fatalf("the clock does not pass %v", at)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

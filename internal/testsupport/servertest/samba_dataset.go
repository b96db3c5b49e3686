package servertest

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// The AD dataset: every case an entitlement poller must get right, in
// OU=Corp. Expected decisions under ADDatasetBindings, evaluated at the
// time the dataset was generated:
//
//	alice    direct member of G-Pro                         → pro
//	bob      G-Inner ∈ G-Outer ∈ G-Pro (nested)             → pro
//	carol    member of Cyc-A; Cyc-A ∈ Cyc-B ∈ Cyc-A (cycle)  → basic (Cyc-B)
//	dave     disabled (UAC 546), member of G-Pro            → denied suspended
//	erin     accountExpires yesterday, member of G-Pro      → denied inactive
//	frank    accountExpires 0 (never), member of G-Pro      → pro
//	fiona    accountExpires in 30 days, member of G-Pro     → pro (inactive after)
//	grace    neither mail nor UPN, member of G-Pro          → skipped no_email
//	heidi    no mail, UPN heidi@example.test, in G-Basic    → basic (UPN fallback)
//	ivan     primaryGroupID = G-Primary's RID, no member    → basic (primary group)
//	judy     member of G-Pro (tests rename it)              → pro
//	mallory  member of G-Pro (tests disable her)            → pro
//	big-NNNN 1,600 members of G-Big                          → basic
//
// G-Pro also holds the foreign security principal S-1-5-11 (Authenticated
// Users), which must be skipped and counted, never expanded.
const (
	ADCorpDN     = "OU=Corp," + SambaBaseDN
	ADBigMembers = 1600
	// ADEmailDomain is every dataset user's mail domain.
	ADEmailDomain = "example.test"
	// ADForeignPrincipalDN is the well-known SID placed in G-Pro.
	ADForeignPrincipalDN = "CN=S-1-5-11,CN=ForeignSecurityPrincipals," + SambaBaseDN
)

// ADUserDN and ADGroupDN name dataset objects by cn.
func ADUserDN(cn string) string  { return "CN=" + cn + "," + ADCorpDN }
func ADGroupDN(cn string) string { return "CN=" + cn + "," + ADCorpDN }

// ADDatasetBindings maps bound groups to permissions (pro or basic).
func ADDatasetBindings() map[string]string {
	return map[string]string{
		ADGroupDN("G-Pro"):     "pro",
		ADGroupDN("Cyc-B"):     "basic",
		ADGroupDN("G-Basic"):   "basic",
		ADGroupDN("G-Primary"): "basic",
		ADGroupDN("G-Big"):     "basic",
	}
}

func fileTime(t time.Time) int64 { return t.UnixNano()/100 + 116444736000000000 }

// ADDatasetOptions returns the dataset as bulk LDIF batches of at most 500
// entries plus the Setup step that needs the running DC. now is the time
// expiries are relative to.
func ADDatasetOptions(now time.Time) SambaOptions {
	var entries []string
	user := func(cn string, uac int, extra ...string) {
		e := fmt.Sprintf("dn: %s\nobjectClass: user\nsAMAccountName: %s\nuserAccountControl: %d\n", ADUserDN(cn), cn, uac)
		for _, x := range extra {
			e += x + "\n"
		}
		entries = append(entries, e)
	}
	mail := func(cn string) string { return "mail: " + cn + "@" + ADEmailDomain }
	entries = append(entries, fmt.Sprintf("dn: %s\nobjectClass: organizationalUnit\nou: Corp\n", ADCorpDN))
	user("alice", 544, mail("alice"))
	user("bob", 544, mail("bob"))
	user("carol", 544, mail("carol"))
	user("dave", 546, mail("dave"))
	user("erin", 544, mail("erin"), fmt.Sprintf("accountExpires: %d", fileTime(now.Add(-24*time.Hour))))
	user("frank", 544, mail("frank"), "accountExpires: 0")
	user("fiona", 544, mail("fiona"), fmt.Sprintf("accountExpires: %d", fileTime(now.Add(30*24*time.Hour))))
	user("grace", 544)
	user("heidi", 544, "userPrincipalName: heidi@"+ADEmailDomain)
	user("ivan", 544, mail("ivan"))
	user("judy", 544, mail("judy"))
	user("mallory", 544, mail("mallory"))
	for i := range ADBigMembers {
		cn := fmt.Sprintf("big-%04d", i)
		user(cn, 544, mail(cn))
	}
	group := func(cn string, members ...string) {
		e := fmt.Sprintf("dn: %s\nobjectClass: group\nsAMAccountName: %s\n", ADGroupDN(cn), cn)
		for _, m := range members {
			e += "member: " + m + "\n"
		}
		entries = append(entries, e)
	}
	group("G-Inner", ADUserDN("bob"))
	group("G-Outer", ADGroupDN("G-Inner"))
	group("G-Pro", ADUserDN("alice"), ADGroupDN("G-Outer"), ADUserDN("dave"), ADUserDN("erin"),
		ADUserDN("frank"), ADUserDN("fiona"), ADUserDN("grace"), ADUserDN("judy"), ADUserDN("mallory"))
	group("Cyc-A", ADUserDN("carol"))
	group("Cyc-B", ADGroupDN("Cyc-A"))
	group("G-Basic", ADUserDN("heidi"))
	group("G-Primary", ADUserDN("ivan"))
	big := make([]string, ADBigMembers)
	for i := range big {
		big[i] = ADUserDN(fmt.Sprintf("big-%04d", i))
	}
	group("G-Big", big...)
	return SambaOptions{BulkLDIF: LDIFBatches(entries, 500), Setup: finishADDataset}
}

// LDIFBatches joins entries into LDIF documents of at most n entries each.
func LDIFBatches(entries []string, n int) []string {
	var out []string
	for len(entries) > 0 {
		k := min(n, len(entries))
		out = append(out, strings.Join(entries[:k], "\n"))
		entries = entries[k:]
	}
	return out
}

// finishADDataset makes the links that need a running DC: the Cyc-A ↔ Cyc-B
// cycle, the foreign principal in G-Pro, and ivan's primary group (AD
// requires membership first and assigns the group's RID at creation).
func finishADDataset(s *Samba) error {
	if err := s.Modify(fmt.Sprintf("dn: %s\nchangetype: modify\nadd: member\nmember: %s\n\ndn: %s\nchangetype: modify\nadd: member\nmember: %s\n",
		ADGroupDN("Cyc-A"), ADGroupDN("Cyc-B"), ADGroupDN("G-Pro"), ADForeignPrincipalDN)); err != nil {
		return err
	}
	conn, err := s.Dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	res, err := conn.Search(ldap.NewSearchRequest(ADGroupDN("G-Primary"), ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=group)", []string{"objectSid"}, nil))
	if err != nil {
		return fmt.Errorf("read G-Primary: %w", err)
	}
	if len(res.Entries) != 1 {
		return fmt.Errorf("read G-Primary: %d entries", len(res.Entries))
	}
	sid := res.Entries[0].GetRawAttributeValue("objectSid")
	if len(sid) < 12 {
		return fmt.Errorf("G-Primary objectSid %q is malformed", base64.StdEncoding.EncodeToString(sid))
	}
	rid := binary.LittleEndian.Uint32(sid[len(sid)-4:])
	return s.Modify(fmt.Sprintf("dn: %s\nchangetype: modify\nreplace: primaryGroupID\nprimaryGroupID: %d\n", ADUserDN("ivan"), rid))
}

// Dial connects to the DC over plain LDAP and binds as Administrator.
func (s *Samba) Dial() (*ldap.Conn, error) {
	conn, err := ldap.DialURL(s.URL)
	if err != nil {
		return nil, err
	}
	if err := conn.Bind(SambaAdminUPN, SambaAdminPassword); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

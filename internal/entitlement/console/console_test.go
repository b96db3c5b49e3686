package console

import (
	"strings"
	"testing"

	"github.com/dirsync/dirsync/entitlement"
)

func TestNormalizeEmail(t *testing.T) {
	for raw, want := range map[string]string{
		" Alice@Example.COM ":                  "alice@example.com",
		"o'neil+tag@x.example":                 "o'neil+tag@x.example",
		"":                                     "",
		"not-an-email":                         "",
		"a@b":                                  "",
		"a@@b.example":                         "",
		"a b@c.example":                        "",
		".a@c.example":                         "",
		"a..b@c.example":                       "",
		"Name <a@c.example>":                   "",
		"a@-c.example":                         "",
		strings.Repeat("x", 65) + "@c.example": "",
	} {
		got, err := NormalizeEmail(raw)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("NormalizeEmail(%q) = %q, %v; want %q", raw, got, err, want)
		}
		if err != nil && CodeOf(err) != CodeInvalid {
			t.Errorf("NormalizeEmail(%q): code %q", raw, CodeOf(err))
		}
	}
}

func TestSplitEmails(t *testing.T) {
	got := SplitEmails(" a@x.example; ;b@y.example;bad ;")
	if strings.Join(got, "|") != "a@x.example|b@y.example|bad" {
		t.Fatalf("SplitEmails = %q", got)
	}
}

func TestMemberDecision(t *testing.T) {
	for _, c := range []struct {
		m       Member
		allowed bool
		perm    entitlement.Permission
		reason  entitlement.Reason
	}{
		{Member{State: StateInvited, Permission: "pro"}, false, "none", entitlement.ReasonInvitationPending},
		{Member{State: StateRemoved, Permission: "none"}, false, "none", entitlement.ReasonRemovedFromTeam},
		{Member{State: StateMember, Permission: "pro", Suspended: true}, false, "none", entitlement.ReasonSuspended},
		{Member{State: StateMember, Permission: "basic"}, true, "basic", entitlement.ReasonGranted},
		{Member{State: StateMember, Permission: "pro"}, true, "pro", entitlement.ReasonGranted},
		{Member{State: StateMember, Permission: "none"}, false, "none", entitlement.ReasonNoPermission},
	} {
		d := c.m.Decision("acct")
		if d.Allowed != c.allowed || d.Permission != c.perm || d.Reason != c.reason || d.Account != "acct" ||
			d.Capabilities != entitlement.CapabilitiesOf(c.perm) || d.Via == nil {
			t.Errorf("%+v → %+v", c.m, d)
		}
	}
}

package mapper

import (
	"testing"

	"github.com/dirsync/dirsync/entitlement"
)

func decision(email string, perm entitlement.Permission, reason entitlement.Reason) entitlement.Decision {
	return entitlement.Decision{Email: email, Account: "acme", Allowed: perm != entitlement.PermissionNone, Permission: perm, Reason: reason,
		Capabilities: entitlement.CapabilitiesOf(perm), Via: []string{}}
}

func TestDiff(t *testing.T) {
	pro := decision("pro@x", entitlement.PermissionPro, entitlement.ReasonGranted)
	down := decision("down@x", entitlement.PermissionBasic, entitlement.ReasonGranted)
	susp := decision("susp@x", entitlement.PermissionNone, entitlement.ReasonSuspended)
	nogrp := decision("nogrp@x", entitlement.PermissionNone, entitlement.ReasonNoPermission)
	newU := decision("new@x", entitlement.PermissionBasic, entitlement.ReasonGranted)
	prev := map[string]Published{
		"pro@x":   PublishedOf(&pro),
		"down@x":  {Permission: entitlement.PermissionPro, Allowed: true, Fingerprint: 1},
		"susp@x":  {Permission: entitlement.PermissionPro, Allowed: true, Fingerprint: 2},
		"nogrp@x": {Permission: entitlement.PermissionBasic, Allowed: true, Fingerprint: 3},
		"gone@x":  {Permission: entitlement.PermissionBasic, Allowed: true, Fingerprint: 4},
	}
	d := Diff(prev, []entitlement.Decision{pro, down, susp, nogrp, newU})
	if d.Unchanged != 1 || d.Added != 1 || d.Updated != 3 || d.Removed != 1 {
		t.Errorf("counts: unchanged %d added %d updated %d removed %d; want 1 1 3 1", d.Unchanged, d.Added, d.Updated, d.Removed)
	}
	if d.LostAccess != 3 || d.LostAccessByStatus != 1 || d.Downgrades != 1 || d.GainedAccess != 1 || d.PreviouslyAllowed != 5 {
		t.Errorf("access: lost %d (status %d) downgrades %d gained %d prev %d; want 3 (1) 1 1 5",
			d.LostAccess, d.LostAccessByStatus, d.Downgrades, d.GainedAccess, d.PreviouslyAllowed)
	}
	for _, c := range d.Changes {
		if c.Email == "pro@x" {
			t.Error("unchanged decision in changes")
		}
		if c.Email == "gone@x" && c.New != nil {
			t.Error("removal carries a new decision")
		}
		if c.New != nil && c.Next != PublishedOf(c.New) {
			t.Errorf("%s: Next does not summarise New", c.Email)
		}
	}
	if len(Diff(map[string]Published{"pro@x": PublishedOf(&pro)}, []entitlement.Decision{pro}).Changes) != 0 {
		t.Error("steady state produced changes")
	}
}

// Removals are found whether next is sorted (Map's order, where no set of
// next's emails is built) or not, and with an email repeated.
func TestDiffRemovalsSortedOrNot(t *testing.T) {
	a := decision("a@x", entitlement.PermissionPro, entitlement.ReasonGranted)
	b := decision("b@x", entitlement.PermissionPro, entitlement.ReasonGranted)
	prev := map[string]Published{"a@x": PublishedOf(&a), "b@x": PublishedOf(&b), "c@x": PublishedOf(&b)}
	for name, next := range map[string][]entitlement.Decision{
		"sorted":   {a, b},
		"unsorted": {b, a},
	} {
		d := Diff(prev, next)
		if d.Removed != 1 || len(d.Changes) != 1 || d.Changes[0].Email != "c@x" || d.Changes[0].New != nil {
			t.Errorf("%s: removed %d, changes %+v; want c@x removed", name, d.Removed, d.Changes)
		}
	}
	// a@x twice matches as many emails as are published, yet b@x is gone.
	d := Diff(map[string]Published{"a@x": PublishedOf(&a), "b@x": PublishedOf(&b)}, []entitlement.Decision{a, a})
	if d.Removed != 1 {
		t.Errorf("repeated email: removed %d, want 1 (b@x)", d.Removed)
	}
	// Sorted, everything still decided: nothing removed.
	if d := Diff(map[string]Published{"a@x": PublishedOf(&a), "b@x": PublishedOf(&b)}, []entitlement.Decision{a, b}); d.Removed != 0 || len(d.Changes) != 0 {
		t.Errorf("steady state: removed %d, changes %d", d.Removed, len(d.Changes))
	}
}

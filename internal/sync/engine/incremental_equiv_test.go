package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/directory/ldapdir"
	"github.com/dirsync/dirsync/internal/entitlement/mapper"
	"github.com/dirsync/dirsync/internal/entitlement/store"
	"github.com/dirsync/dirsync/internal/sync/engine"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// equivSize is the directory's size and the number of rounds of
// TestIncrementalEqualsFullRead: 300 users and 40 rounds in make test;
// make bench runs it at its own size with DIRSYNC_EQUIV_USERS and
// DIRSYNC_EQUIV_ROUNDS.
func equivSize(t *testing.T) (users, rounds int) {
	users, rounds = 300, 40
	for _, v := range []struct {
		env string
		to  *int
	}{{"DIRSYNC_EQUIV_USERS", &users}, {"DIRSYNC_EQUIV_ROUNDS", &rounds}} {
		if s := os.Getenv(v.env); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				t.Fatalf("%s=%q: want a positive number", v.env, s)
			}
			*v.to = n
		}
	}
	return users, rounds
}

func equivDataset(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "dn: uid=u%04d,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\nuid: u%04d\ncn: u%04d\nsn: u%04d\nmail: u%04d@example.test\n", i, i, i, i, i)
		if i%11 == 0 {
			b.WriteString("employeeType: disabled\n")
		}
		b.WriteString("\n")
	}
	group := func(name string, members []int, subgroups ...string) {
		fmt.Fprintf(&b, "dn: cn=%s,ou=groups,dc=example,dc=test\nobjectClass: groupOfNames\ncn: %s\n", name, name)
		for _, m := range members {
			fmt.Fprintf(&b, "member: uid=u%04d,ou=people,dc=example,dc=test\n", m)
		}
		for _, g := range subgroups {
			fmt.Fprintf(&b, "member: cn=%s,ou=groups,dc=example,dc=test\n", g)
		}
		b.WriteString("\n")
	}
	every := func(k, from int) []int {
		var out []int
		for i := from; i < n; i += k {
			out = append(out, i)
		}
		return out
	}
	group("nested", every(7, 1))
	group("pro", every(5, 0), "nested")
	group("basic", every(3, 0))
	return b.String()
}

// TestIncrementalEqualsFullRead (issue 16): random change sequences on a
// real slapd, each followed by an incremental pass of the engine over the
// real poller (which re-maps only the patched users when it can); after
// every pass the published decisions equal, decision by decision, what a
// fresh full read mapped from scratch gives, and so do the counts.
// OpenLDAP keeps no tombstones, so deletions (seen by full passes only)
// are not among the changes.
func TestIncrementalEqualsFullRead(t *testing.T) {
	equivUsers, rounds := equivSize(t)
	s := servertest.StartSlapd(t, servertest.SlapdOptions{LDIF: equivDataset(equivUsers)})
	ctx := context.Background()
	opts := ldapdir.Options{
		Type: ldapdir.TypeLDAP, URLs: []string{s.URL}, StartTLS: true, TLSConfig: s.TLS.ClientConfig(),
		BindDN: s.ServiceDN, BindPassword: s.ServicePassword, UserBaseDN: s.PeopleDN, GroupBaseDN: s.GroupsDN,
		DisabledAttribute: "employeeType", DisabledValue: "disabled", PageSize: 100, Timeout: 10 * time.Second,
	}
	poller, err := ldapdir.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	policy := mapper.Policy{Account: "acme", ClaimedDomains: []string{"example.test"}, Bindings: []mapper.Binding{
		{Group: "cn=pro,ou=groups,dc=example,dc=test", Permission: entitlement.PermissionPro},
		{Group: "cn=basic,ou=groups,dc=example,dc=test", Permission: entitlement.PermissionBasic},
	}}
	cache := store.NewMemory()
	eng := engine.New(cache, []engine.Account{{Policy: policy, Source: poller,
		Safeguard: engine.Safeguard{MaxLostAccessPercent: 100, MaxLostAccessUsers: 1 << 30}}}, zap.NewNop(), nil)
	eng.SetRemapMinUsers(0)
	if _, err := eng.Run(ctx, "acme", engine.Options{Mode: engine.ModeFull}); err != nil {
		t.Fatal(err)
	}

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 16))
	users := equivUsers
	members := map[string]map[int]bool{"nested": {}, "pro": {}, "basic": {}}
	for i := range equivUsers {
		members["nested"][i] = i%7 == 1
		members["pro"][i] = i%5 == 0
		members["basic"][i] = i%3 == 0
	}
	dn := func(i int) string { return fmt.Sprintf("uid=u%04d,ou=people,dc=example,dc=test", i) }
	membership := func(u int) string { // a membership added or removed
		group := []string{"pro", "basic", "nested"}[rng.IntN(3)]
		op := "add"
		if members[group][u] {
			op = "delete"
		}
		members[group][u] = op == "add"
		return fmt.Sprintf("dn: cn=%s,ou=groups,dc=example,dc=test\nchangetype: modify\n%s: member\nmember: %s\n", group, op, dn(u))
	}
	change := func() string {
		u := rng.IntN(users)
		switch k := rng.IntN(20); {
		case k < 9: // a user's own state: the O(changes) path
			if rng.IntN(2) == 0 {
				return fmt.Sprintf("dn: %s\nchangetype: modify\nreplace: employeeType\nemployeeType: disabled\n", dn(u))
			}
			return fmt.Sprintf("dn: %s\nchangetype: modify\nreplace: employeeType\nemployeeType: staff\n", dn(u))
		case k < 11: // an attribute no decision reads (modifyTimestamp moves)
			return fmt.Sprintf("dn: %s\nchangetype: modify\nreplace: description\ndescription: %d\n", dn(u), rng.Int())
		case k < 12: // a new address
			return fmt.Sprintf("dn: %s\nchangetype: modify\nreplace: mail\nmail: moved%d@example.test\n", dn(u), rng.IntN(1000))
		case k < 13: // another user's address
			return fmt.Sprintf("dn: %s\nchangetype: modify\nreplace: mail\nmail: u%04d@example.test\n", dn(u), rng.IntN(users))
		case k < 14: // an address outside the claimed domain
			return fmt.Sprintf("dn: %s\nchangetype: modify\nreplace: mail\nmail: u%04d@elsewhere.test\n", dn(u), u)
		case k < 16:
			return membership(u)
		case k < 18: // a new user
			users++
			i := users - 1
			return fmt.Sprintf("dn: %s\nchangetype: add\nobjectClass: inetOrgPerson\nuid: u%04d\ncn: u%04d\nsn: u%04d\nmail: u%04d@example.test\n", dn(i), i, i, i, i)
		default: // a rename (the group keeps the old DN: no refint overlay)
			return fmt.Sprintf("dn: %s\nchangetype: modify\nreplace: cn\ncn: renamed%d\n", dn(u), rng.IntN(1000))
		}
	}

	remapped, groupPatches, mapped := 0, 0, 0
	for round := range rounds {
		var ldif []string
		if round%5 == 4 { // memberships alone: the group patch path
			for range 1 + rng.IntN(2) {
				ldif = append(ldif, membership(rng.IntN(users)))
			}
		} else {
			for range 1 + rng.IntN(3) {
				ldif = append(ldif, change())
			}
		}
		s.Modify(t, strings.Join(ldif, "\n"))
		rep, err := eng.Run(ctx, "acme", engine.Options{Mode: engine.ModeIncremental})
		if err != nil {
			t.Fatalf("round %d: %v\n%s", round, err, strings.Join(ldif, "\n"))
		}
		switch {
		case rep.RemappedGroups > 0:
			remapped++
			groupPatches++
		case rep.Remapped > 0:
			remapped++
		default:
			mapped++
		}
		compareWithFullRead(t, round, ctx, opts, policy, cache, strings.Join(ldif, "\n"))
	}
	t.Logf("%d passes re-mapped only the users a patch reached (%d of them with group changes), %d mapped every user", remapped, groupPatches, mapped)
	if rounds >= 40 && (remapped < 5 || mapped < 5 || groupPatches < 5) {
		t.Errorf("%d O(changes) passes (%d with groups) and %d whole ones: the changes did not exercise every path", remapped, groupPatches, mapped)
	}
}

// compareWithFullRead maps a fresh full read and compares it with what
// the engine published and counted.
func compareWithFullRead(t *testing.T, round int, ctx context.Context, opts ldapdir.Options, policy mapper.Policy, cache *store.Memory, ldif string) {
	t.Helper()
	fresh, err := ldapdir.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := fresh.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := mapper.Map(policy, snap, time.Now())
	published, err := cache.Published(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(published) != len(want.Decisions) {
		t.Fatalf("round %d: %d decisions published, a full read maps %d\n%s", round, len(published), len(want.Decisions), ldif)
	}
	for i := range want.Decisions {
		w := &want.Decisions[i]
		if got, ok := published[w.Email]; !ok || got != mapper.PublishedOf(w) {
			d, _ := cache.Check(ctx, w.Email)
			t.Fatalf("round %d: %s published %+v (%+v), a full read gives %+v %+v\nchanges:\n%s", round, w.Email, d, d.Detail, *w, w.Detail, ldif)
		}
	}
	st, _, err := cache.Status(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if st.Users != want.Stats.Decisions || fmt.Sprint(st.ByPermission) != fmt.Sprint(want.Stats.ByPermission) || fmt.Sprint(st.ByReason) != fmt.Sprint(want.Stats.ByReason) {
		t.Fatalf("round %d: status counts %d %v %v, a full read %d %v %v", round, st.Users, st.ByPermission, st.ByReason, want.Stats.Decisions, want.Stats.ByPermission, want.Stats.ByReason)
	}
}

package scim

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/pgstore"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

var sharedPG servertest.SharedPostgres

func TestMain(m *testing.M) {
	code := m.Run()
	sharedPG.Close()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// openStore opens a Store on a fresh database of the shared server.
func openStore(t *testing.T) *Store {
	t.Helper()
	pg := sharedPG.Get(t)
	ctx := context.Background()
	pool, err := pgstore.Connect(ctx, pg.CreateDatabase(t), 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s, err := Open(ctx, pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, pool, nil); err != nil { // migrations apply once
		t.Fatal(err)
	}
	return s
}

func userBody(userName string, extra string) []byte {
	return []byte(fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":%q%s}`, userName, extra))
}

func groupBody(name string, members ...string) []byte {
	var ms []string
	for _, m := range members {
		ms = append(ms, fmt.Sprintf(`{"value":%q}`, m))
	}
	return []byte(fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":%q,"members":[%s]}`, name, strings.Join(ms, ",")))
}

func mustCreate(t *testing.T, s *Store, account, kind string, body []byte) *Resource {
	t.Helper()
	r, err := s.Create(context.Background(), account, kind, body)
	if err != nil {
		t.Fatalf("create %s: %v", body, err)
	}
	return r
}

func patchOps(ops string) []byte { return patchBody(ops) }

// snapshotSummary is a snapshot in comparable form.
func snapshotSummary(s *directory.Snapshot) string {
	var lines []string
	for _, u := range s.Users {
		lines = append(lines, fmt.Sprintf("user %s %s %v", u.ID, u.Email, u.Status))
	}
	for _, g := range s.Groups {
		var ms []string
		for _, m := range g.Members {
			ms = append(ms, s.Users[m].Email)
		}
		for _, sg := range g.Subgroups {
			ms = append(ms, "group:"+s.Groups[sg].Name)
		}
		sort.Strings(ms)
		lines = append(lines, fmt.Sprintf("group %s %s [%s]", g.Ref, g.Name, strings.Join(ms, " ")))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestStoreLifecycle: create, read, filter, page, replace, patch and
// delete on real PostgreSQL, and the snapshot the engine reads.
func TestStoreLifecycle(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	alice := mustCreate(t, s, "acme", "User", userBody("Alice@acme.example", `,"externalId":"e-1","emails":[{"value":"alice@acme.example","type":"work"}]`))
	bob := mustCreate(t, s, "acme", "User", userBody("bob@acme.example", `,"active":false`))
	mustCreate(t, s, "other", "User", userBody("alice@acme.example", "")) // another account: no conflict
	if _, err := s.Create(ctx, "acme", "User", userBody("ALICE@acme.example", "")); AsError(err) == nil || AsError(err).Status != 409 || AsError(err).ScimType != TypeUniqueness {
		t.Fatalf("duplicate userName: %v", err)
	}
	pro := mustCreate(t, s, "acme", "Group", groupBody("Pro", alice.ID))
	outer := mustCreate(t, s, "acme", "Group", groupBody("Outer", pro.ID, bob.ID))
	if _, err := s.Create(ctx, "acme", "Group", groupBody("Bad", "6b1c1c6e-0000-4000-8000-000000000000")); AsError(err) == nil || AsError(err).ScimType != TypeInvalidValue {
		t.Fatalf("unknown member: %v", err)
	}
	got, err := s.Get(ctx, "acme", "Group", outer.ID)
	if err != nil || len(got.Members) != 2 {
		t.Fatalf("get outer: %+v %v", got, err)
	}
	for filter, want := range map[string]int{
		`userName eq "alice@ACME.example"`:                      1,
		`externalId eq "e-1" or userName eq "bob@acme.example"`: 2,
		`active eq false`:        1,
		`id eq "not-a-uuid"`:     0,
		`emails[type eq "work"]`: 1,
	} {
		res, err := s.List(ctx, "acme", "User", ListOptions{Filter: filter, StartIndex: 1, Count: 10})
		if err != nil || res.Total != want || len(res.Resources) != want {
			t.Errorf("filter %s: %+v %v; want %d", filter, res, err, want)
		}
	}
	res, err := s.List(ctx, "acme", "Group", ListOptions{Filter: fmt.Sprintf(`members[value eq %q]`, alice.ID), Count: 10})
	if err != nil || res.Total != 1 || res.Resources[0].ID != pro.ID {
		t.Errorf("groups with alice: %+v %v", res, err)
	}
	page, err := s.List(ctx, "acme", "User", ListOptions{StartIndex: 2, Count: 1})
	if err != nil || page.Total != 2 || len(page.Resources) != 1 || page.Resources[0].ID != bob.ID {
		t.Errorf("page 2: %+v %v", page, err)
	}

	src := s.Source("acme")
	snap, err := src.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantLines := []string{
		fmt.Sprintf("group %s Outer [bob@acme.example group:Pro]", outer.ID),
		fmt.Sprintf("group %s Pro [alice@acme.example]", pro.ID),
		fmt.Sprintf("user %s alice@acme.example active", alice.ID),
		fmt.Sprintf("user %s bob@acme.example suspended", bob.ID),
	}
	sort.Strings(wantLines)
	want := strings.Join(wantLines, "\n")
	if got := snapshotSummary(snap); got != want {
		t.Fatalf("snapshot:\n%s\nwant:\n%s", got, want)
	}
	if _, changed, err := src.Incremental(ctx); changed || err != nil {
		t.Fatalf("incremental without writes: changed %v, %v", changed, err)
	}

	// If-Match guards writes; a stale version is 412.
	if _, err := s.Patch(ctx, "acme", "User", alice.ID, patchOps(`[{"op":"replace","path":"title","value":"x"}]`), alice.Version+100); AsError(err) == nil || AsError(err).Status != 412 {
		t.Fatalf("stale If-Match: %v", err)
	}
	susp, err := s.Patch(ctx, "acme", "User", alice.ID, patchOps(`[{"op":"Replace","path":"active","value":"False"}]`), alice.Version)
	if err != nil || susp.Version <= alice.Version || susp.Doc["active"] != false {
		t.Fatalf("suspend: %+v %v", susp, err)
	}
	if _, err := s.Patch(ctx, "acme", "Group", pro.ID, patchOps(fmt.Sprintf(`[{"op":"remove","path":"members[value eq \"%s\"]"}]`, alice.ID)), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "acme", "User", bob.ID, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "acme", "User", bob.ID); AsError(err) == nil || AsError(err).Status != 404 {
		t.Fatalf("deleted bob: %v", err)
	}
	snap, changed, err := src.Incremental(ctx)
	if err != nil || !changed {
		t.Fatalf("incremental: %v %v", changed, err)
	}
	full, err := s.Source("acme").Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := snapshotSummary(snap), snapshotSummary(full); a != b {
		t.Fatalf("incremental snapshot:\n%s\nfull:\n%s", a, b)
	}
	if !strings.Contains(snapshotSummary(full), "alice@acme.example suspended") || strings.Contains(snapshotSummary(full), "bob") {
		t.Errorf("after suspend and delete:\n%s", snapshotSummary(full))
	}

	// PUT replaces; leaving active out keeps the suspension.
	put, err := s.Replace(ctx, "acme", "User", alice.ID, userBody("alice@acme.example", `,"displayName":"Alice"`), 0)
	if err != nil || put.Doc["active"] != false || put.Doc["displayName"] != "Alice" || put.Doc["externalId"] != nil {
		t.Fatalf("replace: %+v %v", put, err)
	}
}

// TestIncrementalMissesNoCommit: concurrent writers on one account; an
// incremental reader running meanwhile ends with the same snapshot as a
// full read (versions are taken under the account's row lock, so a
// commit never appears below a version already seen).
func TestIncrementalMissesNoCommit(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	group := mustCreate(t, s, "acme", "Group", groupBody("All"))
	src := s.Source("acme")
	if _, err := src.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, _, err := src.Incremental(ctx); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var writers sync.WaitGroup
	for w := 0; w < 4; w++ {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := 0; i < 25; i++ {
				u, err := s.Create(ctx, "acme", "User", userBody(fmt.Sprintf("u%d-%d@acme.example", w, i), ""))
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := s.Patch(ctx, "acme", "Group", group.ID, patchOps(fmt.Sprintf(`[{"op":"add","path":"members","value":[{"value":%q}]}]`, u.ID)), 0); err != nil {
					t.Error(err)
					return
				}
				if i%5 == 0 {
					if _, err := s.Patch(ctx, "acme", "User", u.ID, patchOps(`[{"op":"replace","value":{"active":false}}]`), 0); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	writers.Wait()
	close(stop)
	readers.Wait()
	inc, _, err := src.Incremental(ctx)
	if err != nil {
		t.Fatal(err)
	}
	full, err := s.Source("acme").Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(full.Users) != 100 || len(full.Groups[0].Members) != 100 {
		t.Fatalf("full read: %d users, %d members", len(full.Users), len(full.Groups[0].Members))
	}
	if a, b := snapshotSummary(inc), snapshotSummary(full); a != b {
		t.Fatalf("incremental and full reads differ")
	}
}

// TestTokens: issued tokens authenticate by hash until revoked; the
// secret is never stored.
func TestTokens(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	secret, info, err := s.IssueToken(ctx, "acme", "api.admin_token_file")
	if err != nil || !strings.HasPrefix(secret, TokenPrefix) || len(secret) < 40 {
		t.Fatalf("issue: %q %v", secret, err)
	}
	if acct, id, err := s.Authenticate(ctx, secret); err != nil || acct != "acme" || id != info.ID {
		t.Fatalf("authenticate: %s %s %v", acct, id, err)
	}
	var stored int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM scim_tokens WHERE position($1::bytea in sha256) > 0`, []byte(secret)).Scan(&stored); err != nil || stored != 0 {
		t.Fatalf("the secret is stored: %d %v", stored, err)
	}
	if err := s.RevokeToken(ctx, "other", info.ID); err != ErrTokenNotFound {
		t.Fatalf("revoke another account's token: %v", err)
	}
	if err := s.RevokeToken(ctx, "acme", info.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Authenticate(ctx, secret); err != ErrUnknownToken {
		t.Fatalf("revoked token: %v", err)
	}
	list, err := s.Tokens(ctx, "acme")
	if err != nil || len(list) != 1 || list[0].RevokedAt == nil {
		t.Fatalf("tokens: %+v %v", list, err)
	}
}

package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/dirsync/dirsync/internal/entitlement/store"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory/ldapdir"
	"github.com/dirsync/dirsync/internal/sync/apimux"
	"github.com/dirsync/dirsync/internal/sync/consoleapi"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// The users CLI against the console API on real PostgreSQL and Redis: every
// command, each checked by reading the published decision as sign-in does.
func TestUsersCommands(t *testing.T) {
	pg := servertest.StartPostgres(t)
	rs := servertest.StartRedis(t)
	client := redis.NewClient(&redis.Options{Addr: rs.Addr})
	t.Cleanup(func() { client.Close() })
	cache := store.NewRedis(client, "dirsync")
	cfg := &config.Config{Accounts: []config.Account{
		{ID: "crew", Type: config.AccountTeam, Directory: config.Directory{Type: config.DirectoryConsole}},
		{ID: "globex", Type: config.AccountEnterprise, ClaimedDomains: []string{"globex.example"},
			Directory: config.Directory{Type: config.DirectoryConsole}, Console: config.AccountConsole{AutoJoinPermission: "basic"}},
		{ID: "acme", Type: config.AccountEnterprise, ClaimedDomains: []string{"acme.example"},
			Directory: config.Directory{Type: ldapdir.TypeActiveDirectory}},
	}}
	cfg.Console.PostgresDSNEnv = "TEST_DSN"
	dsn := pg.CreateDatabase(t)
	getenv := func(k string) string {
		return map[string]string{"TEST_DSN": dsn, "DIRSYNC_ADMIN_TOKEN": "tok", "USER": "operator"}[k]
	}
	ctx := context.Background()
	db, err := openDatabase(ctx, cfg, env{getenv: getenv}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	svc, closeConsole, err := newConsole(ctx, cfg, db, cache, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeConsole)
	admin, err := apimux.NewToken("test", "tok")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(apimux.New(apimux.Options{Credentials: apimux.Credentials{Admin: admin}}, consoleapi.Routes(consoleapi.Options{Console: svc})))
	t.Cleanup(srv.Close)

	users := func(wantCode int, want string, args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		args = append([]string{"users", args[0], "--server", srv.URL}, args[1:]...)
		code := run(ctx, args, getenv, &stdout, &stderr)
		out := stdout.String() + stderr.String()
		if code != wantCode || !strings.Contains(out, want) {
			t.Fatalf("dirsync %s: exit %d (want %d), output lacks %q:\n%s", strings.Join(args, " "), code, wantCode, want, out)
		}
		return out
	}
	expect := func(email, account string, allowed bool, perm entitlement.Permission, reason entitlement.Reason) {
		t.Helper()
		d, err := cache.Check(ctx, email)
		if err != nil {
			t.Fatal(err)
		}
		if d.Account != account || d.Allowed != allowed || d.Permission != perm || d.Reason != reason {
			t.Fatalf("%s: published %s/%t/%s/%s, want %s/%t/%s/%s", email, d.Account, d.Allowed, d.Permission, d.Reason, account, allowed, perm, reason)
		}
	}

	// Three ';'-separated addresses, one malformed: two invited, the third
	// reported, exit 1.
	users(exitRuntime, `"bad-address" is not an email address`, "invite", "--account", "crew", "--permission", "pro", "ann@a.example; bad-address; ben@b.example")
	expect("ann@a.example", "crew", false, entitlement.PermissionNone, entitlement.ReasonInvitationPending)
	expect("ben@b.example", "crew", false, entitlement.PermissionNone, entitlement.ReasonInvitationPending)
	users(exitRuntime, "already has a pending invitation", "invite", "--account", "crew", "--permission", "pro", "ann@a.example")
	users(exitOK, "accepted", "accept", "--account", "crew", "ann@a.example")
	expect("ann@a.example", "crew", true, entitlement.PermissionPro, entitlement.ReasonGranted)
	users(exitOK, "updated", "assign", "--account", "crew", "--permission", "basic", "ann@a.example")
	expect("ann@a.example", "crew", true, entitlement.PermissionBasic, entitlement.ReasonGranted)
	out := users(exitOK, "ann@a.example", "list", "--account", "crew")
	if !strings.Contains(out, "member") || !strings.Contains(out, "invited") {
		t.Fatalf("list:\n%s", out)
	}
	users(exitRuntime, "team administrators cannot suspend", "suspend", "--account", "crew", "ann@a.example")
	users(exitOK, "removed", "remove", "--account", "crew", "ann@a.example")
	expect("ann@a.example", "crew", false, entitlement.PermissionNone, entitlement.ReasonRemovedFromTeam)
	if out := users(exitOK, "ben@b.example", "list", "--account", "crew"); strings.Contains(out, "ann@a.example") {
		t.Fatalf("removed user listed:\n%s", out)
	}

	users(exitOK, "joined", "register", "--account", "globex", "gil@globex.example")
	users(exitOK, "joined", "register", "--account", "globex", "gus@globex.example")
	expect("gil@globex.example", "globex", true, entitlement.PermissionBasic, entitlement.ReasonGranted)
	users(exitOK, "2 applied", "assign", "--account", "globex", "--permission", "pro", "gil@globex.example", "gus@globex.example")
	expect("gus@globex.example", "globex", true, entitlement.PermissionPro, entitlement.ReasonGranted)
	users(exitOK, "suspended", "suspend", "--account", "globex", "gil@globex.example;gus@globex.example")
	expect("gil@globex.example", "globex", false, entitlement.PermissionNone, entitlement.ReasonSuspended)
	users(exitOK, "unsuspended", "unsuspend", "--account", "globex", "gil@globex.example")
	expect("gil@globex.example", "globex", true, entitlement.PermissionPro, entitlement.ReasonGranted)
	expect("gus@globex.example", "globex", false, entitlement.PermissionNone, entitlement.ReasonSuspended)

	users(exitRuntime, "directory group membership", "assign", "--account", "acme", "--permission", "pro", "al@acme.example")
	users(exitRuntime, "unknown account", "list", "--account", "nope")
	users(exitUsage, "--account is required", "list")
	users(exitUsage, "exactly one EMAIL", "accept", "--account", "crew", "a@a.example", "b@b.example")
	out = users(exitOK, "operator", "audit", "--account", "globex")
	if !strings.Contains(out, "suspend") || !strings.Contains(out, "register") {
		t.Fatalf("audit:\n%s", out)
	}
}

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// TestConsoleAccountsThroughTheDaemon: a Team and an Enterprise console
// account served by `dirsync run` from PostgreSQL, driven with the
// `dirsync users` CLI; a restart of dirsync (and of PostgreSQL) loses
// nothing.
func TestConsoleAccountsThroughTheDaemon(t *testing.T) {
	pg := servertest.StartPostgres(t)
	rs := servertest.StartRedis(t)
	dir := t.TempDir()
	dbDSN := pg.CreateDatabase(t)
	dbName := dbDSN[strings.LastIndex(dbDSN, "/")+1 : strings.Index(dbDSN, "?")]
	dsn := writeSecret(t, dir, "pg-dsn", dbDSN)
	admin := writeSecret(t, dir, "admin-token", adminToken)
	body := fmt.Sprintf(`cache: {backend: redis, redis: {addrs: [%q], key_prefix: console}}
console: {postgres_dsn_file: %s}
accounts:
  - id: crew
    type: team
    directory: {type: console}
  - id: globex
    claimed_domains: [globex.example]
    directory: {type: console}
    console: {auto_join_permission: basic}
`, rs.Addr, dsn)
	cfg, addr := writeConfig(t, dir, body)
	fixAdmin := strings.Replace(mustRead(t, cfg), "api: {listen: ", "api: {admin_token_file: "+admin+", listen: ", 1)
	writeFile(t, cfg, fixAdmin)
	d := startDaemon(t, dir, cfg, addr)

	users := func(args ...string) (int, string) {
		t.Helper()
		code, out, errOut := cli(t, append([]string{"users", args[0], "--config", cfg}, args[1:]...)...)
		return code, out + errOut
	}
	// A ';'-separated invite of three addresses, one malformed: two invited,
	// the third reported, exit 1 because something was rejected.
	code, out := users("invite", "--account", "crew", "--permission", "pro", "ann@gmail.example; bad-address; bo@corp.example")
	if code != 1 || !strings.Contains(out, "bad-address") {
		t.Errorf("invite: exit %d\n%s", code, out)
	}
	if dec, _ := d.decision("ann@gmail.example"); dec.Allowed || dec.Reason != "invitation_pending" {
		t.Errorf("pending invitee = %+v", dec)
	}
	if code, out := users("accept", "--account", "crew", "ann@gmail.example"); code != 0 {
		t.Fatalf("accept: %d %s", code, out)
	}
	if dec, _ := d.decision("ann@gmail.example"); !dec.Allowed || dec.Permission != entitlement.PermissionPro {
		t.Errorf("accepted member = %+v", dec)
	}
	if code, out := users("suspend", "--account", "crew", "ann@gmail.example"); code == 0 || !strings.Contains(out, "cannot suspend") {
		t.Errorf("team suspend: exit %d %s", code, out)
	}
	if code, out := users("register", "--account", "globex", "cy@globex.example"); code != 0 {
		t.Fatalf("register: %d %s", code, out)
	}
	if code, out := users("suspend", "--account", "globex", "cy@globex.example"); code != 0 {
		t.Fatalf("enterprise suspend: %d %s", code, out)
	}
	if dec, _ := d.decision("cy@globex.example"); dec.Allowed || dec.Reason != entitlement.ReasonSuspended {
		t.Errorf("suspended enterprise user = %+v", dec)
	}
	if code, out := users("remove", "--account", "crew", "ann@gmail.example"); code != 0 {
		t.Fatalf("remove: %d %s", code, out)
	}
	if dec, _ := d.decision("ann@gmail.example"); dec.Allowed || dec.Reason != "removed_from_team" {
		t.Errorf("removed member = %+v", dec)
	}
	if _, out := users("list", "--account", "crew"); strings.Contains(out, "ann@gmail.example") || !strings.Contains(out, "bo@corp.example") {
		t.Errorf("member list after removal:\n%s", out)
	}

	// Restart dirsync and PostgreSQL, and empty Redis: a full pass rebuilds
	// every console decision from PostgreSQL.
	if _, err := d.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	pg.Restart(t) // on a new port: point the DSN file at it
	writeSecret(t, dir, "pg-dsn", pg.DatabaseDSN(dbName))
	rs.Restart(t)
	d = startDaemon(t, dir, cfg, addr)
	d.waitFor("cy@globex.example", 20*time.Second, isSuspended)
	d.waitFor("bo@corp.example", 20*time.Second, func(dec entitlement.Decision) bool { return dec.Reason == "invitation_pending" })
	d.waitFor("ann@gmail.example", 20*time.Second, func(dec entitlement.Decision) bool { return dec.Reason == "removed_from_team" })
}

package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/sync/engine"
)

func run(account string, skipped map[string]int) engine.Report {
	r := engine.Report{Account: account, Mode: engine.ModeFull, Result: engine.ResultPublished}
	r.Stats.Users = 3
	r.Stats.ByPermission = map[entitlement.Permission]int{entitlement.PermissionPro: 2}
	r.Stats.ByReason = map[entitlement.Reason]int{entitlement.ReasonSuspended: 1}
	r.Stats.Skipped = skipped
	return r
}

// TestSeriesFollowAccounts: a skip reason an account's last pass no longer
// reports leaves the metrics, other accounts' series stay, and a removed
// account's series all go.
func TestSeriesFollowAccounts(t *testing.T) {
	m := New()
	m.ObserveRun(run("a", map[string]int{"no_email": 2, "cycle": 1}))
	m.ObserveRun(run("b", map[string]int{"cycle": 4}))
	m.ObserveRun(run("a", map[string]int{"no_email": 1}))

	want := `
# HELP dirsync_directory_skipped_objects Directory objects left out of the last snapshot, by reason.
# TYPE dirsync_directory_skipped_objects gauge
dirsync_directory_skipped_objects{account="a",reason="no_email"} 1
dirsync_directory_skipped_objects{account="b",reason="cycle"} 4
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "dirsync_directory_skipped_objects"); err != nil {
		t.Error(err)
	}
	users := testutil.CollectAndCount(m.users)
	if users != 2*(len(allReasons)+1) {
		t.Errorf("dirsync_users has %d series; want every (permission, reason) of both accounts, %d", users, 2*(len(allReasons)+1))
	}

	m.RemoveAccount("a")
	for name, c := range map[string]int{
		"dirsync_users":                     testutil.CollectAndCount(m.users),
		"dirsync_directory_skipped_objects": testutil.CollectAndCount(m.skipped),
		"dirsync_sync_runs_total":           testutil.CollectAndCount(m.runs),
		"dirsync_safeguard_hold":            testutil.CollectAndCount(m.hold),
	} {
		per := map[string]int{"dirsync_users": len(allReasons) + 1}[name]
		if per == 0 {
			per = 1
		}
		if c != per {
			t.Errorf("after removing a: %s has %d series, want b's %d", name, c, per)
		}
	}
}

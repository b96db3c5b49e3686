package consoleapi_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/entitlement/console"
	"github.com/dirsync/dirsync/internal/sync/engine"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

var (
	engineFull        = engine.Options{Mode: engine.ModeFull}
	engineIncremental = engine.Options{Mode: engine.ModeIncremental}
)

// noEngine is a pipeline with no directory accounts.
type noEngine struct{}

func (noEngine) Run(_ context.Context, account string, _ engine.Options) (engine.Report, error) {
	return engine.Report{}, fmt.Errorf("%w %q", engine.ErrUnknownAccount, account)
}
func (noEngine) Accounts() []string                               { return nil }
func (noEngine) LastReports(string) map[engine.Mode]engine.Report { return nil }

// Two replicas (two services on one database) receiving the same actions
// at the same time apply each exactly once, and the cache ends up holding
// what PostgreSQL says.
func TestTwoReplicasNeverDoubleApply(t *testing.T) {
	f := newFixture(t)
	replicas := []*console.Service{f.svc, f.open()}
	ctx := context.Background()
	const n = 16

	race := func(fn func(svc *console.Service) (console.Result, error)) (applied, refused int) {
		t.Helper()
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(svc *console.Service) {
				defer wg.Done()
				res, err := fn(svc)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil && console.CodeOf(err) == "":
					t.Errorf("replica failed: %v", err)
				case err == nil && res.Applied == 1:
					applied++
				default:
					refused++
				}
			}(replicas[i%2])
		}
		wg.Wait()
		return applied, refused
	}

	applied, _ := race(func(svc *console.Service) (console.Result, error) {
		return svc.Invite(ctx, "ops", "team1", []string{"race@x.example"}, "pro")
	})
	if applied != 1 {
		t.Fatalf("same invitation applied %d times", applied)
	}
	// The same email invited to two teams at once: one wins.
	applied, _ = race(func(svc *console.Service) (console.Result, error) {
		team := "team1"
		if svc == replicas[1] {
			team = "team2"
		}
		return svc.Invite(ctx, "ops", team, []string{"both@y.example"}, "basic")
	})
	if applied != 1 {
		t.Fatalf("one email invited to %d teams", applied)
	}
	applied, _ = race(func(svc *console.Service) (console.Result, error) {
		return svc.Accept(ctx, "user", "team1", "race@x.example")
	})
	if applied != 1 {
		t.Fatalf("invitation accepted %d times", applied)
	}
	if _, err := f.svc.Register(ctx, "ops", "globex", "sam@globex.example"); err != nil {
		t.Fatal(err)
	}
	applied, _ = race(func(svc *console.Service) (console.Result, error) {
		return svc.Suspend(ctx, "ops", "globex", []string{"sam@globex.example"})
	})
	if applied != 1 {
		t.Fatalf("suspension applied %d times", applied)
	}
	audit, err := f.svc.Audit(ctx, "globex", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	suspends := 0
	for _, e := range audit {
		if e.Action == "suspend" {
			suspends++
		}
	}
	if suspends != 1 {
		t.Fatalf("%d suspend audit entries, want 1", suspends)
	}
	f.expectDecision("race@x.example", "team1", true, entitlement.PermissionPro, entitlement.ReasonGranted)
	f.expectDecision("sam@globex.example", "globex", false, entitlement.PermissionNone, entitlement.ReasonSuspended)

	// Actions on one replica racing full resyncs on the other: every
	// publish happens under the account lock, so the cache never ends on
	// a stale decision.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := replicas[1].Resync(ctx, "globex", console.ResyncOptions{}); err != nil {
				t.Errorf("resync: %v", err)
				return
			}
		}
	}()
	for i := 0; i < 20; i++ {
		var err error
		if i%2 == 0 {
			_, err = replicas[0].Unsuspend(ctx, "ops", "globex", []string{"sam@globex.example"})
		} else {
			_, err = replicas[0].Suspend(ctx, "ops", "globex", []string{"sam@globex.example"})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	// 20 toggles starting from suspended end suspended.
	f.expectDecision("sam@globex.example", "globex", false, entitlement.PermissionNone, entitlement.ReasonSuspended)
	res, err := f.svc.Resync(ctx, "globex", console.ResyncOptions{DryRun: true})
	if err != nil || len(res.Delta.Changes) != 0 {
		t.Fatalf("cache differs from PostgreSQL after the race: %+v %v", res.Delta, err)
	}
}

// Restarting dirsync (a new service) and PostgreSQL loses nothing; the
// migrations run again harmlessly.
func TestRestartLosesNothing(t *testing.T) {
	pg := servertest.StartPostgres(t)
	f := newFixture(t)
	f.dsn = pg.CreateDatabase(t)
	svc := f.open()
	ctx := context.Background()
	if _, err := svc.Invite(ctx, "ops", "team1", []string{"p@x.example", "q@y.example"}, "pro"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Accept(ctx, "p", "team1", "p@x.example"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Register(ctx, "ops", "globex", "r@globex.example"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Suspend(ctx, "ops", "globex", []string{"r@globex.example"}); err != nil {
		t.Fatal(err)
	}
	before, err := svc.Members(ctx, "team1", console.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Close()

	name := f.dsn[len(f.dsn)-len("test_000000000000?sslmode=disable") : len(f.dsn)-len("?sslmode=disable")]
	pg.Crash(t)
	pg.Restart(t)
	f.redis.Restart(t) // and the cache is empty
	f.dsn = pg.DatabaseDSN(name)
	svc = f.open()
	after, err := svc.Members(ctx, "team1", console.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(after.Members) != fmt.Sprint(before.Members) {
		t.Fatalf("members changed across restarts:\n%v\n%v", before.Members, after.Members)
	}
	for _, id := range svc.Accounts() {
		if _, err := svc.Resync(ctx, id, console.ResyncOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	f.expectDecision("p@x.example", "team1", true, entitlement.PermissionPro, entitlement.ReasonGranted)
	f.expectDecision("q@y.example", "team1", false, entitlement.PermissionNone, entitlement.ReasonInvitationPending)
	f.expectDecision("r@globex.example", "globex", false, entitlement.PermissionNone, entitlement.ReasonSuspended)
	if _, err := svc.Accept(ctx, "p", "team1", "p@x.example"); console.CodeOf(err) != "" || err != nil {
		// Accept reports refusals per item, not as an error.
		t.Fatalf("accept again: %v", err)
	}
}

// A database with no users for an account never unpublishes everyone.
func TestResyncRefusesEmptyDatabaseOverPublishedUsers(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.svc.Register(ctx, "ops", "globex", "v@globex.example"); err != nil {
		t.Fatal(err)
	}
	f.dsn = sharedPG.Get(t).CreateDatabase(t) // a wrong, empty database
	empty := f.open()
	if _, err := empty.Resync(ctx, "globex", console.ResyncOptions{}); err == nil {
		t.Fatal("an empty database unpublished the account")
	}
	f.expectDecision("v@globex.example", "globex", true, entitlement.PermissionBasic, entitlement.ReasonGranted)
	if _, err := empty.Resync(ctx, "globex", console.ResyncOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	f.expectDecision("v@globex.example", "", false, entitlement.PermissionNone, entitlement.ReasonUnknownUser)
}

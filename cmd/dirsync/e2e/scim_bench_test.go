package e2e

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// The SCIM benchmarks push through the real daemon (an optimised build,
// without -race) with real PostgreSQL and Redis:
//
//	go test -run '^$' -bench SCIM -benchtime 1x ./cmd/dirsync/e2e/
//
// BenchmarkSCIMPush creates 10,000 users and 100 groups and adds every user
// to one group (members added 50 per PATCH), with 8 concurrent clients, as
// an initial provisioning cycle does; it reports how long until every
// request was acknowledged (push-s) and until the last decision was in the
// cache (cache-s). BenchmarkSCIMSuspend then PATCHes active:false (and back)
// on one user of such an account and reports response → cache latency.

const (
	benchUsers  = 10_000
	benchGroups = 100
)

// benchBinary builds dirsync without -race into dir.
func benchBinary(b *testing.B) string {
	b.Helper()
	bin, err := servertest.BuildDirsync(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	return bin
}

// parallel runs n jobs on workers goroutines and waits for them.
func parallel(workers, n int, job func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				job(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// pushOrg provisions benchUsers users and benchGroups groups (group 0,
// "Chime Pro", is bound to pro; group 1, "Chime Basic", to basic) and
// returns the user ids.
func pushOrg(b *testing.B, l *scimLab) []string {
	ids := make([]string, benchUsers)
	parallel(8, benchUsers, func(i int) {
		ids[i] = l.acme("POST", "/Users", oktaUser(fmt.Sprintf("u%05d@acme.example", i), fmt.Sprint("U", i), true)).want(b, "create user", 201).id()
	})
	groups := make([]string, benchGroups)
	parallel(8, benchGroups, func(g int) {
		name := fmt.Sprintf("g%03d", g)
		switch g {
		case 0:
			name = "Chime Pro"
		case 1:
			name = "Chime Basic"
		}
		groups[g] = l.acme("POST", "/Groups", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":%q}`, name)).want(b, "create group", 201).id()
	})
	// User i joins group i%100: 100 members per group, 50 per PATCH.
	const batch = 50
	parallel(8, benchUsers/batch, func(k int) {
		g := k % benchGroups
		var members []string
		for j := 0; j < batch; j++ {
			members = append(members, fmt.Sprintf(`{"value":%q}`, ids[(k/benchGroups)*batch*benchGroups+j*benchGroups+g]))
		}
		l.acme("PATCH", "/Groups/"+groups[g], `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"members","value":[`+strings.Join(members, ",")+`]}]}`).want(b, "add members", 204)
	})
	return ids
}

const benchBindings = `    safeguard: {max_lost_access_percent: 100}`

func BenchmarkSCIMPush(b *testing.B) {
	bin := benchBinary(b)
	for range b.N {
		l := startSCIMLabWith(b, bin, benchBindings)
		l.d.waitFor("nobody@acme.example", 30*time.Second, func(entitlement.Decision) bool { return true })
		start := time.Now()
		pushOrg(b, l)
		pushed := time.Since(start)
		// u00000 is in Chime Pro, u00001 in Chime Basic, u09999 in g099 (unbound).
		l.d.waitFor("u00000@acme.example", 60*time.Second, hasPermission(entitlement.PermissionPro))
		l.d.waitFor("u00001@acme.example", 60*time.Second, hasPermission(entitlement.PermissionBasic))
		l.d.waitFor("u09999@acme.example", 60*time.Second, hasReason(entitlement.ReasonNoPermission))
		cached := time.Since(start)
		b.ReportMetric(pushed.Seconds(), "push-s")
		b.ReportMetric(cached.Seconds(), "cache-s")
		b.ReportMetric(float64(benchUsers)/pushed.Seconds(), "users/s")
		b.Logf("%d users, %d groups, %d membership PATCHes: acknowledged in %v, in the cache after %v",
			benchUsers, benchGroups, benchUsers/50, pushed.Round(time.Millisecond), cached.Round(time.Millisecond))
	}
	b.ReportMetric(0, "ns/op")
}

func BenchmarkSCIMSuspend(b *testing.B) {
	bin := benchBinary(b)
	l := startSCIMLabWith(b, bin, benchBindings)
	ids := pushOrg(b, l)
	alice := "u00100@acme.example" // in g000: pro
	l.d.waitFor(alice, 60*time.Second, hasPermission(entitlement.PermissionPro))
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		active, want := false, isSuspended
		if i%2 == 1 {
			active, want = true, hasPermission(entitlement.PermissionPro)
		}
		l.acme("PATCH", "/Users/"+ids[100], fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":%v}}]}`, active)).want(b, "PATCH active", 200)
		answered := time.Now() // the clock starts at the answer
		l.d.waitFor(alice, 10*time.Second, want)
		lat = append(lat, time.Since(answered).Round(100*time.Microsecond))
	}
	b.StopTimer()
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return math.Round(float64(d.Microseconds())/100) / 10 }
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
	b.ReportMetric(0, "ns/op")
	b.Logf("PATCH answered → decision in the cache, %d users: %v", benchUsers, lat)
}

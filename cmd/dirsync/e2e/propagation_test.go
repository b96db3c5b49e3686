package e2e

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/testsupport/oktafake"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// The propagation benchmarks measure change → cache latency through the
// real daemon with the default incremental schedule (@every 5s): each
// iteration suspends (then restores) a user in the directory and times
// until GET /v1/access shows it. Run with
//
//	make bench-propagation   (go test -run '^$' -bench Propagation -benchtime 6x ./cmd/dirsync/e2e/)
//
// Each change lands at a random point of the schedule (a random pause first,
// so changes are not phase-locked to the passes). Expect about half the
// interval on average and at most the interval plus
// a pass; an Okta event hook removes the wait (see TestOktaEventHookAndOps).

func reportLatencies(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
	b.ReportMetric(0, "ns/op")
	b.Logf("change → cache latencies: %v", lat)
}

func BenchmarkPropagationAD(b *testing.B) {
	dc := samba.Get(b)
	rs := servertest.StartRedis(b)
	dir := b.TempDir()
	cfgBody := strings.Replace(adConfig(b, dir, rs.Addr, dc.URL), `incremental: "@every 2s"`, `incremental: "@every 5s"`, 1)
	cfg, addr := writeConfig(b, dir, cfgBody)
	d := startDaemon(b, dir, cfg, addr)
	mallory := "mallory@" + servertest.ADEmailDomain
	d.waitFor(mallory, 60*time.Second, isAllowed)
	var lat []time.Duration
	for i := 0; i < b.N; i++ {
		uac, want := 546, isSuspended
		if i%2 == 1 {
			uac, want = 544, isAllowed
		}
		time.Sleep(rand.N(5 * time.Second))
		start := time.Now()
		if err := dc.SetUserAccountControl(servertest.ADUserDN("mallory"), uac); err != nil {
			b.Fatal(err)
		}
		d.waitFor(mallory, 30*time.Second, want)
		lat = append(lat, time.Since(start).Round(time.Millisecond))
	}
	if b.N%2 == 1 {
		_ = dc.SetUserAccountControl(servertest.ADUserDN("mallory"), 544)
	}
	reportLatencies(b, lat)
}

func BenchmarkPropagationOkta(b *testing.B) {
	f := oktafake.New(oktafake.Options{Token: "bench-token"})
	defer f.Close()
	pro := f.AddGroup("Chime Pro", oktafake.GroupOkta)
	f.AddGroup("Chime Basic", oktafake.GroupOkta)
	for i := 0; i < 2000; i++ { // an org of some size: cost must not depend on it
		email := "u" + strconv.Itoa(i) + "@globex.example"
		f.AddMember(pro, f.AddUser(oktafake.UserSpec{Login: email, Email: email}))
	}
	alice := f.AddUser(oktafake.UserSpec{Login: "alice@globex.example", Email: "alice@globex.example"})
	f.AddMember(pro, alice)
	rs := servertest.StartRedis(b)
	dir := b.TempDir()
	cfg, addr := writeConfig(b, dir, oktaConfig(b, dir, rs.Addr, f.URL, f.Token(), "@every 5s"))
	fixConfig(b, cfg)
	d := startDaemon(b, dir, cfg, addr)
	d.waitFor("alice@globex.example", 30*time.Second, isAllowed)
	var lat []time.Duration
	for i := 0; i < b.N; i++ {
		status, want := oktafake.StatusSuspended, isSuspended
		if i%2 == 1 {
			status, want = oktafake.StatusActive, isAllowed
		}
		time.Sleep(rand.N(5 * time.Second))
		start := time.Now()
		f.SetStatus(alice, status)
		d.waitFor("alice@globex.example", 30*time.Second, want)
		lat = append(lat, time.Since(start).Round(time.Millisecond))
	}
	reportLatencies(b, lat)
}

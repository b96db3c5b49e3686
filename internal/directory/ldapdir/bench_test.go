package ldapdir

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// BenchmarkSlapdFullRead reads 100k users and 10k groups (10 members each)
// from slapd and reports entries/s and the peak live heap during the reads
// (the poller drops its previous read before a full read). Run: go test -run '^$' -bench SlapdFullRead -benchtime 3x ./directory/ldapdir/
func BenchmarkSlapdFullRead(b *testing.B) {
	const users, groups, perGroup = 100_000, 10_000, 10
	path := filepath.Join(b.TempDir(), "big.ldif")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for i := range users {
		fmt.Fprintf(w, "dn: uid=u%06d,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\nuid: u%06d\ncn: u%06d\nsn: u\nmail: u%06d@example.test\n\n", i, i, i, i)
	}
	for g := range groups {
		fmt.Fprintf(w, "dn: cn=g%05d,ou=groups,dc=example,dc=test\nobjectClass: groupOfNames\ncn: g%05d\n", g, g)
		for m := range perGroup {
			fmt.Fprintf(w, "member: uid=u%06d,ou=people,dc=example,dc=test\n", (g*perGroup+m)%users)
		}
		w.WriteString("\n")
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	s := servertest.StartSlapd(b, servertest.SlapdOptions{LDIFFile: path, MaxSize: 4 << 30})
	p, err := New(Options{
		Type: TypeLDAP, URLs: []string{s.URL}, AllowInsecure: true,
		BindDN: s.ServiceDN, BindPassword: s.ServicePassword, UserBaseDN: s.PeopleDN, GroupBaseDN: s.GroupsDN,
		PageSize: 1000, Timeout: time.Minute,
	})
	if err != nil {
		b.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var peak uint64
	wg.Add(1)
	go func() { // samples the live heap; owned: stopped and waited below
		defer wg.Done()
		sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(sample)
			peak = max(peak, sample[0].Value.Uint64())
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	runtime.GC()
	start := time.Now()
	n := 0
	for b.Loop() {
		snap, err := p.Snapshot(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if len(snap.Users) != users || len(snap.Groups) != groups {
			b.Fatalf("read %d users, %d groups", len(snap.Users), len(snap.Groups))
		}
		n++
	}
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	b.ReportMetric(float64(n*(users+groups))/elapsed.Seconds(), "entries/s")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
}

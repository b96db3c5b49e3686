package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"
)

// dataset describes the generated directory. Everything is derived from
// the sizes and a fixed seed, so two runs generate the same LDIF.
type dataset struct {
	users, groups int
	suffix        string
}

func (d dataset) peopleDN() string { return "ou=people," + d.suffix }
func (d dataset) groupsDN() string { return "ou=groups," + d.suffix }
func (d dataset) userDN(i int) string {
	return fmt.Sprintf("uid=u%07d,%s", i, d.peopleDN())
}
func (d dataset) groupDN(j int) string { return fmt.Sprintf("cn=g%06d,%s", j, d.groupsDN()) }
func (d dataset) email(i int) string   { return fmt.Sprintf("u%07d@bench.example", i) }

// Shape of the generated directory:
//   - every user is a direct member of 1–5 ordinary groups (uniform);
//   - three huge groups (g000001..g000003) hold 10%, 5% and 2% of the users;
//   - g000000 (bound to pro) roots a 4-ary tree of nested groups
//     g000004.. down to depth 5 (at most 1365 groups, capped at 10% of the
//     groups), and a chain nest-1 → … → nest-5 → nest-1 (a cycle) hangs
//     under it;
//   - g000001 (a huge group) is bound to basic;
//   - 3% of users carry employeeType: disabled (suspended);
//   - modifyTimestamp is spread one second apart in the past, as in a
//     directory that grew over time, so the incremental cursor's
//     one-second overlap re-reads a handful of entries, not a whole load.
const (
	hugeGroups     = 3
	treeFirst      = hugeGroups + 1
	disabledPerMil = 30
)

func (d dataset) chainDN(k int) string { return fmt.Sprintf("cn=nest-%d,%s", k, d.groupsDN()) }

func cmdGen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	users := fs.Int("users", 100_000, "users")
	groups := fs.Int("groups", 10_000, "ordinary groups (plus the 5 nest-k groups)")
	suffix := fs.String("suffix", "dc=bench,dc=test", "directory suffix")
	out := fs.String("out", "-", "LDIF file (- for stdout)")
	fs.Parse(args)
	d := dataset{users: *users, groups: *groups, suffix: *suffix}
	var w io.Writer = os.Stdout
	if *out != "-" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if err := d.write(bw); err != nil {
		return err
	}
	return bw.Flush()
}

func (d dataset) write(w *bufio.Writer) error {
	rng := rand.New(rand.NewPCG(7, 11))
	members := make([][]int32, d.groups)
	// Time starts far enough back that every entry has its own second.
	stamp := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	ts := func() string {
		stamp = stamp.Add(time.Second)
		return stamp.Format("20060102150405Z")
	}
	ordinaryFirst := treeFirst
	for i := range d.users {
		n := 1 + rng.IntN(5)
		for range n {
			g := ordinaryFirst + rng.IntN(d.groups-ordinaryFirst)
			members[g] = append(members[g], int32(i))
		}
		for h, share := range []int{100, 50, 20} { // per mille
			if rng.IntN(1000) < share {
				members[1+h] = append(members[1+h], int32(i))
			}
		}
		fmt.Fprintf(w, "dn: %s\nobjectClass: inetOrgPerson\nuid: u%07d\ncn: User %d\nsn: %d\nmail: %s\n", d.userDN(i), i, i, i, d.email(i))
		if rng.IntN(1000) < disabledPerMil {
			w.WriteString("employeeType: disabled\n")
		} else {
			w.WriteString("employeeType: staff\n")
		}
		fmt.Fprintf(w, "createTimestamp: %[1]s\nmodifyTimestamp: %[1]s\n\n", ts())
	}
	treeEnd := min(d.groups, treeFirst+1364, treeFirst+max(d.groups/10, 8))
	for j := range d.groups {
		fmt.Fprintf(w, "dn: %s\nobjectClass: groupOfNames\ncn: g%06d\n", d.groupDN(j), j)
		for _, u := range members[j] {
			fmt.Fprintf(w, "member: %s\n", d.userDN(int(u)))
		}
		// 4-ary tree under g0: node k (0-based within the tree, g0 = k 0)
		// has children 4k+1..4k+4.
		k := 0
		if j >= treeFirst && j < treeEnd {
			k = j - treeFirst + 1
		}
		if j == 0 || k > 0 {
			for c := 4*k + 1; c <= 4*k+4; c++ {
				if child := treeFirst + c - 1; child < treeEnd {
					fmt.Fprintf(w, "member: %s\n", d.groupDN(child))
				}
			}
		}
		if j == 0 {
			fmt.Fprintf(w, "member: %s\n", d.chainDN(1))
		}
		if len(members[j]) == 0 && j != 0 && k == 0 {
			// groupOfNames needs a member.
			fmt.Fprintf(w, "member: %s\n", d.userDN(j%d.users))
		}
		fmt.Fprintf(w, "createTimestamp: %[1]s\nmodifyTimestamp: %[1]s\n\n", ts())
	}
	for k := 1; k <= 5; k++ {
		fmt.Fprintf(w, "dn: %s\nobjectClass: groupOfNames\ncn: nest-%d\n", d.chainDN(k), k)
		fmt.Fprintf(w, "member: %s\n", d.chainDN(k%5+1)) // nest-5 → nest-1: the cycle
		for u := k; u < d.users; u += max(d.users/20, 1) {
			fmt.Fprintf(w, "member: %s\n", d.userDN(u))
		}
		fmt.Fprintf(w, "createTimestamp: %[1]s\nmodifyTimestamp: %[1]s\n\n", ts())
	}
	return nil
}

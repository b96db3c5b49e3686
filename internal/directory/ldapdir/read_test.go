package ldapdir

import (
	"fmt"
	"testing"

	"github.com/dirsync/dirsync/internal/directory/ldapentry"
)

func TestRecordChunksKeepOrderAcrossChunks(t *testing.T) {
	for _, tc := range []struct{ n, hint int }{{0, 0}, {1, 0}, {1024, 0}, {1025, 0}, {70_000, 0}, {5000, 5000}, {5001, 5000}} {
		c := recordChunks{next: tc.hint}
		for i := range tc.n {
			c.add(ldapentry.Record{ID: fmt.Sprint(i)})
		}
		got := c.slice()
		if len(got) != tc.n {
			t.Fatalf("n=%d hint=%d: %d records", tc.n, tc.hint, len(got))
		}
		for i := range got {
			if got[i].ID != fmt.Sprint(i) {
				t.Fatalf("n=%d hint=%d: record %d is %q", tc.n, tc.hint, i, got[i].ID)
			}
		}
	}
}

package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sync/atomic"
	"time"

	"github.com/dirsync/dirsync/internal/directory"
)

// Phases of a running pass, in order.
const (
	PhaseReading    = "reading"    // reading users and groups from the directory
	PhaseMapping    = "mapping"    // mapping the read to decisions and comparing with the cache
	PhasePublishing = "publishing" // writing the changes to the cache
)

// Progress is a running pass as seen from outside (GET /v1/status, the
// console, `dirsync sync` on a terminal).
type Progress struct {
	Mode           Mode      `json:"mode"`
	Phase          string    `json:"phase"`
	StartedAt      time.Time `json:"started_at"`
	ElapsedSeconds float64   `json:"elapsed_seconds"`
	// EntriesRead are the directory entries received so far by this pass
	// (LDAP, LDIF and SCIM sources); -1 when the source does not count
	// entries (Okta: see Requests).
	EntriesRead int64 `json:"entries_read"`
	// EntriesPerSecond is EntriesRead over the elapsed time.
	EntriesPerSecond float64 `json:"entries_per_second,omitempty"`
	// Requests are the requests this pass sent to the directory so far.
	Requests int64 `json:"requests"`
	// ToPublish is how many changes the publishing phase writes.
	ToPublish int `json:"to_publish,omitempty"`
}

// statsSource is a source that counts what it reads.
type statsSource interface {
	Stats() directory.SourceStats
}

// progress is a running pass's state, written by the pass, read by
// Progress from any goroutine.
type progress struct {
	mode      Mode
	started   time.Time
	stats     statsSource // nil: the source counts nothing
	base      directory.SourceStats
	phase     atomic.Pointer[string]
	toPublish atomic.Int64
}

func newProgress(mode Mode, src Source, now time.Time) *progress {
	p := &progress{mode: mode, started: now}
	if s, ok := src.(statsSource); ok {
		p.stats, p.base = s, s.Stats()
	}
	p.set(PhaseReading)
	return p
}

func (p *progress) set(phase string) {
	if p != nil {
		p.phase.Store(&phase)
	}
}

func (p *progress) publishing(n int) {
	if p != nil {
		p.toPublish.Store(int64(n))
		p.set(PhasePublishing)
	}
}

func (p *progress) snapshot(now time.Time) Progress {
	out := Progress{Mode: p.mode, Phase: *p.phase.Load(), StartedAt: p.started.UTC(), EntriesRead: -1, ToPublish: int(p.toPublish.Load())}
	elapsed := now.Sub(p.started).Seconds()
	out.ElapsedSeconds = elapsed
	if p.stats != nil {
		st := p.stats.Stats()
		out.Requests = st.Requests - p.base.Requests
		if st.EntriesRead >= 0 && p.base.EntriesRead >= 0 {
			out.EntriesRead = st.EntriesRead - p.base.EntriesRead
			if elapsed > 0 {
				out.EntriesPerSecond = float64(out.EntriesRead) / elapsed
			}
		}
	}
	return out
}

// Progress returns the running pass of account, if one is running.
func (e *Engine) Progress(account string) (Progress, bool) {
	a := e.account(account)
	if a == nil {
		return Progress{}, false
	}
	p := a.running.Load()
	if p == nil {
		return Progress{}, false
	}
	return p.snapshot(e.now()), true
}

// DiffHash identifies a diff (DiffEntries, sorted by email). A release
// bound to a reviewed diff's hash (Options.ReviewedDiffHash) publishes only
// when its pass would publish exactly that diff.
func DiffHash(entries []DiffEntry) string {
	b, err := json.Marshal(entries)
	if err != nil { // plain data: cannot happen
		panic(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

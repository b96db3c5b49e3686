package consoleapi

import (
	"maps"
	"sync"

	"github.com/dirsync/dirsync/internal/sync/engine"
)

// lastReports keeps the last report of each mode per console account.
type lastReports struct {
	mu sync.Mutex
	m  map[string]map[engine.Mode]engine.Report
}

func newLastReports() *lastReports {
	return &lastReports{m: map[string]map[engine.Mode]engine.Report{}}
}

func (l *lastReports) put(account string, r engine.Report) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m[account] == nil {
		l.m[account] = map[engine.Mode]engine.Report{}
	}
	l.m[account][r.Mode] = r
}

func (l *lastReports) get(account string) map[engine.Mode]engine.Report {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := maps.Clone(l.m[account])
	if out == nil {
		out = map[engine.Mode]engine.Report{}
	}
	return out
}

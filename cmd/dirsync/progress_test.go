package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/sync/engine"
)

type fixedProgress map[string]engine.Progress

func (f fixedProgress) Progress(account string) (engine.Progress, bool) {
	p, ok := f[account]
	return p, ok
}

// TestProgressLine: the running pass is shown as plain lines when stderr
// is not a terminal, and rewritten in place (then cleared) on one.
func TestProgressLine(t *testing.T) {
	src := fixedProgress{"acme": {Mode: engine.ModeFull, Phase: engine.PhaseReading, EntriesRead: 120000, EntriesPerSecond: 41000.4, ElapsedSeconds: 3}}
	for _, tty := range []bool{false, true} {
		var w lockedBuffer
		p := startProgressEvery(context.Background(), &w, src, tty, 5*time.Millisecond)
		p.Set("acme")
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(w.String(), "acme") && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		p.Stop()
		out := w.String()
		const want = "acme: full pass, reading users and groups: 120,000 entries (41,000/s), 3s"
		if !strings.Contains(out, want) {
			t.Errorf("tty=%t: %q lacks %q", tty, out, want)
		}
		if tty != strings.Contains(out, "\r\033[K") {
			t.Errorf("tty=%t: %q (a terminal line is rewritten in place; plain output has no escapes)", tty, out)
		}
		if tty && !strings.HasSuffix(out, "\r\033[K") {
			t.Errorf("the terminal line is not cleared at the end: %q", out)
		}
	}
}

func TestFormatProgress(t *testing.T) {
	for _, c := range []struct {
		p    engine.Progress
		want string
	}{
		{engine.Progress{Mode: engine.ModeIncremental, Phase: engine.PhaseReading, EntriesRead: -1, Requests: 12, ElapsedSeconds: 1.2}, "o: incremental pass, reading users and groups: 12 requests, 1s"},
		{engine.Progress{Mode: engine.ModeFull, Phase: engine.PhaseMapping, ElapsedSeconds: 61}, "o: full pass, mapping decisions, 1m1s"},
		{engine.Progress{Mode: engine.ModeFull, Phase: engine.PhasePublishing, ToPublish: 1234567}, "o: full pass, publishing 1,234,567 changes, 0s"},
	} {
		if got := formatProgress("o", c.p); got != c.want {
			t.Errorf("formatProgress(%+v) = %q, want %q", c.p, got, c.want)
		}
	}
}

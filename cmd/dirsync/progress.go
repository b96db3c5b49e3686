package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dirsync/dirsync/internal/sync/engine"
)

// progressSource is where a running pass's progress comes from.
type progressSource interface {
	Progress(account string) (engine.Progress, bool)
}

// progressLine shows the running pass of `dirsync sync` on stderr: a line
// rewritten in place every half second on a terminal, a plain line every
// few seconds otherwise (logs, CI). Stdout is never touched (--output json
// stays clean).
type progressLine struct {
	w        io.Writer
	tty      bool
	every    time.Duration
	src      progressSource
	account  atomic.Pointer[string]
	wrote    bool // a terminal line is showing (owned by run)
	stop     context.CancelFunc
	finished sync.WaitGroup
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// startProgress starts the reporter; Stop ends it (and clears a terminal
// line) before the reports are printed.
func startProgress(ctx context.Context, w io.Writer, src progressSource) *progressLine {
	tty := isTerminal(w)
	every := 5 * time.Second
	if tty {
		every = 500 * time.Millisecond
	}
	return startProgressEvery(ctx, w, src, tty, every)
}

func startProgressEvery(ctx context.Context, w io.Writer, src progressSource, tty bool, every time.Duration) *progressLine {
	p := &progressLine{w: w, tty: tty, src: src, every: every}
	ctx, p.stop = context.WithCancel(ctx)
	p.finished.Add(1)
	go func() {
		defer p.finished.Done()
		p.run(ctx)
	}()
	return p
}

// Set names the account whose pass runs now.
func (p *progressLine) Set(account string) { p.account.Store(&account) }

// Stop ends the reporter and waits for it.
func (p *progressLine) Stop() {
	p.stop()
	p.finished.Wait()
}

func (p *progressLine) run(ctx context.Context) {
	tick := time.NewTicker(p.every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if p.wrote {
				fmt.Fprint(p.w, "\r\033[K")
			}
			return
		case <-tick.C:
		}
		id := p.account.Load()
		if id == nil {
			continue
		}
		pr, ok := p.src.Progress(*id)
		if !ok {
			continue
		}
		line := formatProgress(*id, pr)
		if p.tty {
			fmt.Fprint(p.w, "\r\033[K"+line)
			p.wrote = true
		} else {
			fmt.Fprintln(p.w, line)
		}
	}
}

// formatProgress is one progress line, e.g.
// "acme: full pass, reading users and groups: 120,000 entries (41,000/s), 12 s".
func formatProgress(account string, p engine.Progress) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s pass, ", account, p.Mode)
	switch p.Phase {
	case engine.PhaseReading:
		b.WriteString("reading users and groups")
		switch {
		case p.EntriesRead >= 0:
			fmt.Fprintf(&b, ": %s entries", thousands(p.EntriesRead))
			if p.EntriesPerSecond > 0 {
				fmt.Fprintf(&b, " (%s/s)", thousands(int64(p.EntriesPerSecond)))
			}
		case p.Requests > 0:
			fmt.Fprintf(&b, ": %s requests", thousands(p.Requests))
		}
	case engine.PhaseMapping:
		b.WriteString("mapping decisions")
	case engine.PhasePublishing:
		fmt.Fprintf(&b, "publishing %s changes", thousands(int64(p.ToPublish)))
	default:
		b.WriteString(p.Phase)
	}
	fmt.Fprintf(&b, ", %s", time.Duration(p.ElapsedSeconds*float64(time.Second)).Round(time.Second))
	return b.String()
}

// thousands writes n with thousands separators.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return s
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

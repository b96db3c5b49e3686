// Package ldif reads an LDIF export (RFC 2849 content records) into a
// directory snapshot, with the same entry semantics as the LDAP poller
// (see package ldapentry). It serves offline imports and the quick start.
package ldif

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/directory/ldapentry"
)

// Parse reads LDIF from r and calls fn for every entry, in file order. It
// stops at the first malformed line with an error naming its line number;
// change records (changetype) and URL values are rejected.
func Parse(r io.Reader, fn func(*ldapentry.Entry)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	var (
		entry     *ldapentry.Entry
		logical   strings.Builder
		startLine int
		lineNo    int
		inComment bool
	)
	flushLine := func() error {
		if logical.Len() == 0 {
			return nil
		}
		line := logical.String()
		logical.Reset()
		return addLine(&entry, line, startLine, fn)
	}
	for sc.Scan() {
		lineNo++
		raw := strings.TrimSuffix(sc.Text(), "\r")
		switch {
		case strings.HasPrefix(raw, " "):
			if inComment {
				continue
			}
			if logical.Len() == 0 {
				return fmt.Errorf("ldif line %d: continuation line without a line to continue", lineNo)
			}
			logical.WriteString(raw[1:])
			continue
		case strings.HasPrefix(raw, "#"):
			if err := flushLine(); err != nil {
				return err
			}
			// A comment may itself be folded; skip its continuations.
			inComment = true
			continue
		}
		inComment = false
		if err := flushLine(); err != nil {
			return err
		}
		if raw == "" {
			if entry != nil {
				fn(entry)
				entry = nil
			}
			continue
		}
		logical.WriteString(raw)
		startLine = lineNo
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("ldif line %d: %w", lineNo, err)
	}
	if err := flushLine(); err != nil {
		return err
	}
	if entry != nil {
		fn(entry)
	}
	return nil
}

func addLine(entry **ldapentry.Entry, line string, lineNo int, fn func(*ldapentry.Entry)) error {
	name, value, ok := strings.Cut(line, ":")
	if !ok {
		return fmt.Errorf("ldif line %d: %q is not \"attribute: value\"", lineNo, truncate(line))
	}
	switch {
	case strings.HasPrefix(value, ":"):
		dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value[1:]))
		if err != nil {
			return fmt.Errorf("ldif line %d: attribute %s: bad base64: %w", lineNo, name, err)
		}
		value = string(dec)
	case strings.HasPrefix(value, "<"):
		return fmt.Errorf("ldif line %d: attribute %s: URL values are not supported; inline the value", lineNo, name)
	default:
		value = strings.TrimLeft(value, " ")
	}
	name = strings.ToLower(strings.TrimSpace(name))
	if *entry == nil {
		switch name {
		case "version":
			return nil
		case "dn":
			*entry = &ldapentry.Entry{DN: value, Attrs: map[string][]string{}}
			return nil
		}
		return fmt.Errorf("ldif line %d: expected \"dn:\" to start an entry, found %q", lineNo, name)
	}
	if name == "changetype" {
		return fmt.Errorf("ldif line %d: change records are not supported; export content records (ldapsearch -LLL output)", lineNo)
	}
	(*entry).Attrs[name] = append((*entry).Attrs[name], value)
	return nil
}

func truncate(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

// Source reads one LDIF file. Its Incremental pass re-reads the file only
// when its size or modification time changed.
type Source struct {
	path string
	opts ldapentry.Options
	now  func() time.Time

	mu      sync.Mutex
	last    *directory.Snapshot
	lastMod time.Time
	lastLen int64

	// reads counts the times the file was read, entries the entries
	// parsed from it.
	reads, entries atomic.Int64
}

// Stats returns the source's counters (safe during a read): Requests are
// the reads of the file, EntriesRead the entries parsed.
func (s *Source) Stats() directory.SourceStats {
	return directory.SourceStats{Requests: s.reads.Load(), EntriesRead: s.entries.Load(), RateLimitRemaining: -1}
}

// NewSource returns a source for the LDIF file at path.
func NewSource(path string, opts ldapentry.Options, now func() time.Time) *Source {
	if now == nil {
		now = time.Now
	}
	return &Source{path: path, opts: opts, now: now}
}

// ErrNoUsers is returned for a file that holds no user at all: an empty
// export is far more likely a mistake than an empty directory.
var ErrNoUsers = errors.New("ldif holds no users")

// Snapshot reads the whole file.
func (s *Source) Snapshot(ctx context.Context) (*directory.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.read(ctx)
}

// Incremental returns the last snapshot unchanged when the file has not
// changed since it was read, and reads it again otherwise.
func (s *Source) Incremental(ctx context.Context) (*directory.Snapshot, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last != nil {
		fi, err := os.Stat(s.path)
		if err != nil {
			return nil, false, fmt.Errorf("ldif %s: %w", s.path, err)
		}
		if fi.ModTime().Equal(s.lastMod) && fi.Size() == s.lastLen {
			return s.last, false, nil
		}
	}
	snap, err := s.read(ctx)
	return snap, err == nil, err
}

func (s *Source) read(ctx context.Context) (*directory.Snapshot, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, fmt.Errorf("ldif %s: %w", s.path, err)
	}
	defer f.Close()
	s.reads.Add(1)
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("ldif %s: %w", s.path, err)
	}
	opts := s.opts
	opts.EmailAttributes = append([]string(nil), s.opts.EmailAttributes...)
	b := ldapentry.NewBuilder("ldif:"+s.path, opts)
	n := 0
	err = Parse(f, func(e *ldapentry.Entry) {
		if n++; n%4096 == 0 && ctx.Err() != nil {
			return
		}
		b.Add(e)
	})
	s.entries.Add(int64(n))
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("ldif %s: %w", s.path, err)
	}
	snap := b.Snapshot(s.now())
	if len(snap.Users) == 0 && len(snap.Skipped) == 0 {
		return nil, fmt.Errorf("ldif %s: %w", s.path, ErrNoUsers)
	}
	s.last, s.lastMod, s.lastLen = snap, fi.ModTime(), fi.Size()
	return snap, nil
}

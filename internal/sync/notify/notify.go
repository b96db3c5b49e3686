// Package notify tells people when an account needs attention: a webhook
// POST, signed with HMAC-SHA256, for each of four events — a sync held
// (hold), an account whose passes keep failing (sync_failed, after N in a
// row), one that is healthy again (recovered) and a held sync published by
// an operator (release).
//
// Observing a pass never blocks it: events go to a bounded queue per
// receiver, which one goroutine delivers in order, retrying with
// exponential backoff while the receiver is down. Each event has an id
// that is the same for every delivery attempt and every pass that sees the
// same occurrence (the same hold seen by ten passes is one event), so a
// receiver can deduplicate, and the notifier itself never queues an id
// twice.
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/sync/engine"
)

// Events.
const (
	EventHold       = "hold"
	EventSyncFailed = "sync_failed"
	EventRecovered  = "recovered"
	EventRelease    = "release"
)

// Headers of a delivery.
const (
	HeaderSignature = "X-Dirsync-Signature"
	HeaderTimestamp = "X-Dirsync-Timestamp"
	HeaderEvent     = "X-Dirsync-Event"
	HeaderID        = "X-Dirsync-Event-Id"
)

// Webhook is one receiver.
type Webhook struct {
	URL    string
	Secret string
	// Events it receives (empty: all).
	Events []string
	// Slack sends {"text": …} instead of the event document.
	Slack bool
	// SyncFailedAfter consecutive failed passes make one sync_failed.
	SyncFailedAfter int
	// Timeout bounds one attempt.
	Timeout time.Duration
}

// Event is the document a json webhook receives.
type Event struct {
	// ID is the same for every delivery of one occurrence.
	ID      string    `json:"id"`
	Event   string    `json:"event"`
	Account string    `json:"account"`
	At      time.Time `json:"at"`
	// Summary is one human sentence (the text of a Slack message).
	Summary string `json:"summary"`
	// Mode, Result and Error are those of the pass that made the event.
	Mode   string `json:"mode,omitempty"`
	Result string `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
	// Hold is set for hold and release events.
	Hold *accesscache.Hold `json:"hold,omitempty"`
	// ConsecutiveFailures is set for sync_failed and recovered events.
	ConsecutiveFailures int `json:"consecutive_failures,omitempty"`
	// Published is how many decisions the pass published.
	Published int `json:"published,omitempty"`
}

// Options tune delivery (zero values take the defaults).
type Options struct {
	// QueueSize bounds each receiver's queue; an event that does not fit
	// is dropped and logged. Default 256.
	QueueSize int
	// FirstRetry is the first backoff, doubled per attempt up to MaxRetry.
	// Defaults 1s and 1m.
	FirstRetry, MaxRetry time.Duration
	// Attempts bounds the deliveries of one event. Default 10 (about eight
	// minutes of a receiver being down).
	Attempts int
	Client   *http.Client
	Log      *zap.Logger
	Now      func() time.Time
}

// Notifier turns pass reports into events and delivers them.
type Notifier struct {
	o     Options
	hooks []*receiver

	mu       sync.Mutex
	accounts map[string]*track
}

// track is what the notifier remembers of one account.
type track struct {
	failures    int
	streakStart time.Time
	hold        *accesscache.Hold
}

type receiver struct {
	Webhook
	queue chan Event
	// sent remembers recently queued ids (dedupe), in order.
	mu      sync.Mutex
	sent    map[string]bool
	order   []string
	stats   Stats
	statsMu sync.Mutex
}

// Stats counts one receiver's deliveries.
type Stats struct {
	Delivered, Retried, Failed, Dropped int
}

// New returns a notifier for hooks. Call Run to deliver.
func New(hooks []Webhook, o Options) *Notifier {
	if o.QueueSize == 0 {
		o.QueueSize = 256
	}
	if o.FirstRetry == 0 {
		o.FirstRetry = time.Second
	}
	if o.MaxRetry == 0 {
		o.MaxRetry = time.Minute
	}
	if o.Attempts == 0 {
		o.Attempts = 10
	}
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	n := &Notifier{o: o, accounts: map[string]*track{}}
	for _, h := range hooks {
		if h.SyncFailedAfter < 1 {
			h.SyncFailedAfter = 1
		}
		if h.Timeout == 0 {
			h.Timeout = 5 * time.Second
		}
		n.hooks = append(n.hooks, &receiver{Webhook: h, queue: make(chan Event, o.QueueSize), sent: map[string]bool{}})
	}
	return n
}

// Stats returns the delivery counts of each receiver, in configuration
// order.
func (n *Notifier) Stats() []Stats {
	out := make([]Stats, len(n.hooks))
	for i, h := range n.hooks {
		h.statsMu.Lock()
		out[i] = h.stats
		h.statsMu.Unlock()
	}
	return out
}

// Observe takes the report of a finished pass; forced says the pass was
// forced (a release). It never blocks.
func (n *Notifier) Observe(rep engine.Report, forced bool) {
	if rep.DryRun || rep.Result == "" || rep.Result == "skipped" {
		return
	}
	now := n.o.Now().UTC()
	n.mu.Lock()
	t := n.accounts[rep.Account]
	if t == nil {
		t = &track{}
		n.accounts[rep.Account] = t
	}
	var events []Event
	base := Event{Account: rep.Account, At: now, Mode: string(rep.Mode), Result: rep.Result, Error: rep.Error, Published: rep.Changes.Published}
	switch rep.Result {
	case engine.ResultFailed:
		if t.failures == 0 {
			t.streakStart = rep.StartedAt
		}
		t.failures++
		for _, h := range n.hooks {
			if t.failures == h.SyncFailedAfter {
				e := base
				e.Event, e.ConsecutiveFailures = EventSyncFailed, t.failures
				e.ID = fmt.Sprintf("%s:%s:%d", EventSyncFailed, rep.Account, t.streakStart.UnixNano())
				e.Summary = fmt.Sprintf("dirsync: account %s failed %d passes in a row; the last good decisions are kept. Last error: %s", rep.Account, t.failures, rep.Error)
				n.enqueue(h, e)
			}
		}
	default: // published, unchanged, held: the pass itself succeeded
		if t.failures > 0 {
			for _, h := range n.hooks {
				if t.failures >= h.SyncFailedAfter {
					e := base
					e.Event, e.ConsecutiveFailures = EventRecovered, t.failures
					e.ID = fmt.Sprintf("%s:%s:%d", EventRecovered, rep.Account, t.streakStart.UnixNano())
					e.Summary = fmt.Sprintf("dirsync: account %s syncs again after %d failed passes", rep.Account, t.failures)
					n.enqueue(h, e)
				}
			}
			t.failures = 0
		}
		switch {
		case rep.Hold != nil: // held, or still pending (nothing evaluated)
			if t.hold == nil || !t.hold.Since.Equal(rep.Hold.Since) {
				h := *rep.Hold
				t.hold = &h
				e := base
				e.Event, e.Hold = EventHold, t.hold
				e.ID = fmt.Sprintf("%s:%s:%d", EventHold, rep.Account, rep.Hold.Since.UnixNano())
				e.Summary = fmt.Sprintf("dirsync: a sync of account %s is held (%s): %s. Review it with `dirsync sync --dry-run --account %s`; release with `dirsync release --account %s`",
					rep.Account, rep.Hold.Kind, rep.Hold.Reason, rep.Account, rep.Account)
				events = append(events, e)
			}
		case t.hold != nil:
			e := base
			e.Hold = t.hold
			if forced {
				e.Event = EventRelease
				e.Summary = fmt.Sprintf("dirsync: the held sync of account %s was released; %d decisions published", rep.Account, rep.Changes.Published)
			} else {
				e.Event = EventRecovered
				e.Summary = fmt.Sprintf("dirsync: the hold on account %s cleared by itself (the directory no longer trips it)", rep.Account)
			}
			e.ID = fmt.Sprintf("%s:%s:%d", e.Event, rep.Account, t.hold.Since.UnixNano())
			events = append(events, e)
			t.hold = nil
		}
	}
	n.mu.Unlock()
	for _, e := range events {
		for _, h := range n.hooks {
			n.enqueue(h, e)
		}
	}
}

// enqueue queues e for h unless h takes no such event or already had it.
func (n *Notifier) enqueue(h *receiver, e Event) {
	if len(h.Events) > 0 && !slices.Contains(h.Events, e.Event) {
		return
	}
	h.mu.Lock()
	if h.sent[e.ID] {
		h.mu.Unlock()
		return
	}
	h.sent[e.ID] = true
	h.order = append(h.order, e.ID)
	if len(h.order) > 4096 {
		delete(h.sent, h.order[0])
		h.order = h.order[1:]
	}
	h.mu.Unlock()
	select {
	case h.queue <- e:
	default:
		h.count(func(s *Stats) { s.Dropped++ })
		n.o.Log.Error("notification dropped: the receiver's queue is full", zap.String("url", h.URL), zap.String("event", e.Event), zap.String("account", e.Account))
	}
}

func (h *receiver) count(f func(*Stats)) {
	h.statsMu.Lock()
	f(&h.stats)
	h.statsMu.Unlock()
}

// Run delivers queued events until ctx ends, one goroutine per receiver;
// it returns when they have all stopped.
func (n *Notifier) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, h := range n.hooks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case e := <-h.queue:
					n.deliver(ctx, h, e)
				}
			}
		}()
	}
	wg.Wait()
}

// deliver sends e to h, retrying with backoff, until it is accepted (2xx),
// refused for good (4xx other than 408/429), out of attempts, or ctx ends.
func (n *Notifier) deliver(ctx context.Context, h *receiver, e Event) {
	body, err := n.body(h, e)
	if err != nil {
		n.o.Log.Error("notification not encoded", zap.Error(err))
		return
	}
	wait := n.o.FirstRetry
	for attempt := 1; ; attempt++ {
		err := n.post(ctx, h, e, body)
		if err == nil {
			h.count(func(s *Stats) { s.Delivered++ })
			return
		}
		var perm permanent
		if errors.As(err, &perm) || attempt >= n.o.Attempts {
			h.count(func(s *Stats) { s.Failed++ })
			n.o.Log.Error("notification not delivered", zap.String("url", h.URL), zap.String("event", e.Event),
				zap.String("account", e.Account), zap.Int("attempts", attempt), zap.Error(err))
			return
		}
		h.count(func(s *Stats) { s.Retried++ })
		n.o.Log.Warn("notification delivery failed; retrying", zap.String("url", h.URL), zap.String("event", e.Event),
			zap.Duration("in", wait), zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, n.o.MaxRetry)
	}
}

// permanent marks an answer that retrying will not change.
type permanent struct{ error }

func (n *Notifier) body(h *receiver, e Event) ([]byte, error) {
	if h.Slack {
		return json.Marshal(map[string]string{"text": e.Summary})
	}
	return json.Marshal(e)
}

func (n *Notifier) post(ctx context.Context, h *receiver, e Event, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return permanent{err}
	}
	ts := strconv.FormatInt(n.o.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "dirsync-notify")
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderEvent, e.Event)
	req.Header.Set(HeaderID, e.ID)
	req.Header.Set(HeaderSignature, Sign(h.Secret, ts, body))
	resp, err := n.o.Client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != 408 && resp.StatusCode != 429:
		return permanent{fmt.Errorf("HTTP %d", resp.StatusCode)}
	}
	return fmt.Errorf("HTTP %d", resp.StatusCode)
}

// Sign is the X-Dirsync-Signature of body sent at timestamp (Unix seconds,
// as in X-Dirsync-Timestamp): "sha256=" and the hex HMAC-SHA256 of
// "<timestamp>.<body>" under secret. Receivers recompute it, compare in
// constant time and reject old timestamps.
func Sign(secret, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

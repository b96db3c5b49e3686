package notify

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/sync/engine"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// receiver is a real HTTP webhook receiver that verifies signatures.
type testReceiver struct {
	secret string
	mu     sync.Mutex
	events []Event
	bodies []string
	bad    int
	got    chan struct{}
}

func newReceiver(secret string) *testReceiver {
	return &testReceiver{secret: secret, got: make(chan struct{}, 100)}
}

func (r *testReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	want := Sign(r.secret, req.Header.Get(HeaderTimestamp), body)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !hmac.Equal([]byte(want), []byte(req.Header.Get(HeaderSignature))) {
		r.bad++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var e Event
	_ = json.Unmarshal(body, &e)
	r.events = append(r.events, e)
	r.bodies = append(r.bodies, string(body))
	r.got <- struct{}{}
}

func (r *testReceiver) wait(t *testing.T, n int) []Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		if len(r.events) >= n {
			out := append([]Event(nil), r.events...)
			r.mu.Unlock()
			return out
		}
		r.mu.Unlock()
		select {
		case <-r.got:
		case <-deadline:
			t.Fatalf("got %d events; want %d", len(r.events), n)
		}
	}
}

func run(t *testing.T, n *Notifier) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func rep(account, result string, at time.Time) engine.Report {
	return engine.Report{Account: account, Mode: engine.ModeIncremental, Result: result, StartedAt: at}
}

func TestHoldReleaseFailuresRecovery(t *testing.T) {
	rcv := newReceiver("hook-secret")
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	n := New([]Webhook{{URL: srv.URL, Secret: "hook-secret", SyncFailedAfter: 3}}, Options{})
	run(t, n)
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)

	// One hold, seen by three passes: one event.
	hold := &accesscache.Hold{Kind: accesscache.HoldSafeguard, Since: t0, LostAccess: 120, Allowed: 400, Reason: "120 of 400 would lose access"}
	for i := range 3 {
		r := rep("acme", engine.ResultHeld, t0.Add(time.Duration(i)*time.Second))
		r.Hold = hold
		n.Observe(r, false)
	}
	// Released by a forced pass.
	rel := rep("acme", engine.ResultPublished, t0.Add(time.Minute))
	rel.Changes.Published = 120
	n.Observe(rel, true)
	// Two failures: nothing yet; the third: sync_failed; the fourth: nothing.
	for i := range 4 {
		n.Observe(rep("globex", engine.ResultFailed, t0.Add(time.Duration(i)*time.Second)), false)
	}
	n.Observe(rep("globex", engine.ResultUnchanged, t0.Add(time.Hour)), false)

	got := rcv.wait(t, 4)
	time.Sleep(100 * time.Millisecond) // nothing more may come
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if len(rcv.events) != 4 || rcv.bad != 0 {
		t.Fatalf("events %+v (bad signatures %d); want hold, release, sync_failed, recovered", rcv.events, rcv.bad)
	}
	want := []string{EventHold, EventRelease, EventSyncFailed, EventRecovered}
	for i, e := range got {
		if e.Event != want[i] {
			t.Errorf("event %d = %s; want %s", i, e.Event, want[i])
		}
		if e.ID == "" || e.Summary == "" {
			t.Errorf("event %d has no id or summary: %+v", i, e)
		}
	}
	if got[0].Hold == nil || got[0].Hold.LostAccess != 120 || got[2].ConsecutiveFailures != 3 || got[3].ConsecutiveFailures != 4 {
		t.Errorf("event details: %+v", got)
	}
}

// TestReceiverDown: deliveries to a receiver that is down (it drops every
// connection without an answer) are retried with backoff and arrive once
// it is up; meanwhile Observe never blocks.
func TestReceiverDown(t *testing.T) {
	rcv := newReceiver("s")
	var up sync.Mutex
	isUp := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up.Lock()
		ok := isUp
		up.Unlock()
		if !ok {
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.Close()
			}
			return
		}
		rcv.ServeHTTP(w, r)
	}))
	defer srv.Close()
	n := New([]Webhook{{URL: srv.URL + "/hook", Secret: "s", SyncFailedAfter: 1, Slack: true}},
		Options{FirstRetry: 20 * time.Millisecond, MaxRetry: 100 * time.Millisecond, Attempts: 100})
	run(t, n)
	start := time.Now()
	n.Observe(rep("acme", engine.ResultFailed, time.Unix(1, 0)), false)
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("Observe took %v with the receiver down", d)
	}
	deadline := time.Now().Add(5 * time.Second)
	for n.Stats()[0].Retried < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("no retries: %+v", n.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	up.Lock()
	isUp = true
	up.Unlock()
	rcv.wait(t, 1)
	rcv.mu.Lock()
	body := rcv.bodies[0]
	rcv.mu.Unlock()
	var slack map[string]string
	if err := json.Unmarshal([]byte(body), &slack); err != nil || slack["text"] == "" || len(slack) != 1 {
		t.Errorf("slack payload %s", body)
	}
	for n.Stats()[0].Delivered != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // the answer reaches the notifier after the handler
	}
	if st := n.Stats()[0]; st.Delivered != 1 || st.Retried < 3 {
		t.Errorf("stats %+v", st)
	}
}

// TestObserveNeverBlocks: with a receiver that hangs and a full queue,
// passes go on; the surplus is dropped and counted.
func TestObserveNeverBlocks(t *testing.T) {
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hang }))
	defer srv.Close()
	defer close(hang)
	n := New([]Webhook{{URL: srv.URL, Secret: "s", SyncFailedAfter: 1, Timeout: time.Minute}}, Options{QueueSize: 1})
	run(t, n)
	start := time.Now()
	for i := range 50 {
		// Each account's first failure is one event.
		n.Observe(rep("a"+string(rune('a'+i%26))+string(rune('a'+i/26)), engine.ResultFailed, time.Unix(int64(i), 0)), false)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("50 observations took %v", d)
	}
	if st := n.Stats()[0]; st.Dropped < 40 {
		t.Errorf("stats %+v; want most events dropped", st)
	}
}

func TestPermanentRefusalIsNotRetried(t *testing.T) {
	var calls int
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		w.WriteHeader(http.StatusForbidden)
	}))
	defer srv.Close()
	n := New([]Webhook{{URL: srv.URL, Secret: "s", SyncFailedAfter: 1}}, Options{FirstRetry: time.Millisecond})
	run(t, n)
	n.Observe(rep("acme", engine.ResultFailed, time.Unix(1, 0)), false)
	deadline := time.Now().Add(5 * time.Second)
	for n.Stats()[0].Failed == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 || n.Stats()[0].Failed != 1 {
		t.Errorf("calls %d stats %+v; want one attempt, failed", calls, n.Stats()[0])
	}
}

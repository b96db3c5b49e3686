package okta

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// errConnectionDropped reports a connection the server closed without an
// answer more times than allowed for one API call. Like every error made
// below the Poller's methods it has no "okta: " prefix: it reaches callers
// inside one that has.
var errConnectionDropped = errors.New("connection dropped without a response")

// maxPacingWait bounds one pacing pause; Okta's windows are one minute.
const maxPacingWait = 2 * time.Minute

// Counters count what a Poller sent and how it was paced. Counts
// accumulate over the Poller's life.
type Counters struct {
	// Requests is the number of HTTP requests sent, retries included.
	Requests int
	// RateLimited is the number of 429 answers received (the SDK retries
	// them up to Options.MaxRetries times per call).
	RateLimited int
	// Dropped is the number of requests whose connection closed without
	// an answer.
	Dropped int
	// PacingWaits is the number of times the poller paused until the rate
	// limit window reset, to stay within Options.RateLimitShare.
	PacingWaits int
	// PacingWaited is the total time spent in those pauses.
	PacingWaited time.Duration
	// RateLimitRemaining and RateLimitLimit are the last X-Rate-Limit-
	// Remaining and -Limit headers seen (-1 before any).
	RateLimitRemaining int
	RateLimitLimit     int
}

// transport sits under the SDK's http.Client. It counts requests, bounds
// the SDK's unbounded immediate retry of dropped connections (per API call,
// through callState in the request context) and paces requests by the
// X-Rate-Limit headers so the poller never uses more than its share of the
// org's rate limit. The SDK itself never reads X-Rate-Limit-Remaining.
type transport struct {
	base       http.RoundTripper
	share      float64
	maxDropped int

	mu    sync.Mutex
	stats Counters
	// The last rate-limit state seen: limit and remaining in the current
	// window, and the local time at which the window resets.
	limit, remaining int
	resetAt          time.Time
	// serverDate is the Date of the first response since markRead.
	serverDate     time.Time
	wantServerDate bool
}

// callState is the per-API-call state, carried in the call's context.
type callState struct {
	dropped int
}

type callKey struct{}

func withCall(ctx context.Context) context.Context {
	return context.WithValue(ctx, callKey{}, &callState{})
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.pace(req.Context()); err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.stats.Requests++
	t.mu.Unlock()
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		if !isDropped(err) {
			return nil, err
		}
		t.mu.Lock()
		t.stats.Dropped++
		t.mu.Unlock()
		call, _ := req.Context().Value(callKey{}).(*callState)
		if call == nil {
			call = &callState{}
		}
		call.dropped++
		if call.dropped > t.maxDropped {
			// Deliberately not wrapping err: the SDK retries anything that
			// is io.EOF immediately and without limit.
			return nil, fmt.Errorf("%w: %s %s failed %d times (last: %v)", errConnectionDropped, req.Method, req.URL.Path, call.dropped, err)
		}
		return nil, err
	}
	t.observe(resp)
	return resp, nil
}

func isDropped(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// observe records the rate-limit headers of a response. The reset time is
// converted to the local clock through the server's Date header, so clock
// skew between us and Okta does not matter.
func (t *transport) observe(resp *http.Response) {
	now := time.Now()
	date, dateErr := http.ParseTime(resp.Header.Get("Date"))
	limit, errL := strconv.Atoi(resp.Header.Get("X-Rate-Limit-Limit"))
	remaining, errR := strconv.Atoi(resp.Header.Get("X-Rate-Limit-Remaining"))
	reset, errS := strconv.ParseInt(resp.Header.Get("X-Rate-Limit-Reset"), 10, 64)
	t.mu.Lock()
	defer t.mu.Unlock()
	if resp.StatusCode == http.StatusTooManyRequests {
		t.stats.RateLimited++
	}
	if dateErr == nil && t.wantServerDate {
		t.serverDate, t.wantServerDate = date, false
	}
	if errL != nil || errR != nil || errS != nil || dateErr != nil || limit <= 0 {
		return
	}
	t.limit, t.remaining = limit, remaining
	// The Date header has whole seconds, so this may wait up to a second
	// longer than needed, never shorter.
	t.resetAt = now.Add(time.Unix(reset, 0).Sub(date))
}

// pace waits until the rate-limit window resets when this window's use
// has reached the allowed share of the limit.
func (t *transport) pace(ctx context.Context) error {
	t.mu.Lock()
	used := t.limit - t.remaining
	wait := time.Until(t.resetAt)
	over := t.limit > 0 && float64(used) >= t.share*float64(t.limit)
	if !over || wait <= 0 {
		t.mu.Unlock()
		return nil
	}
	wait = min(wait, maxPacingWait)
	t.stats.PacingWaits++
	t.stats.PacingWaited += wait
	// The window is spent; the next response tells the new state.
	t.limit, t.remaining = 0, 0
	t.mu.Unlock()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the rate limit window to reset: %w", ctx.Err())
	}
}

// markRead asks for the Date of the next response, the server-side start
// of a read.
func (t *transport) markRead() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.wantServerDate, t.serverDate = true, time.Time{}
}

// readStart returns the Date of the first response since markRead.
func (t *transport) readStart() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.serverDate
}

func (t *transport) snapshot() Counters {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.stats
	s.RateLimitRemaining, s.RateLimitLimit = -1, -1
	if !t.resetAt.IsZero() || t.limit > 0 {
		s.RateLimitRemaining, s.RateLimitLimit = t.remaining, t.limit
	}
	return s
}

package schedule

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRunRecoversAndStops: a panicking job does not kill the scheduler, a
// start-up job runs at once, Run returns only after running jobs ended,
// and job contexts are cancelled on stop.
func TestRunRecoversAndStops(t *testing.T) {
	var panics, starts, cancelled atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(zap.NewNop(), []Job{
		{Name: "boom", Spec: "@every 1s", Timeout: time.Second, Func: func(context.Context) { panics.Add(1); panic("boom") }},
		{Name: "start", Spec: "@every 1h", Timeout: time.Minute, RunAtStart: true, Func: func(ctx context.Context) {
			starts.Add(1)
			<-ctx.Done() // a long run: stopped by cancellation
			cancelled.Add(1)
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for panics.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if panics.Load() < 2 {
		t.Fatalf("panicking job ran %d times; want the scheduler to survive and run it again", panics.Load())
	}
	if starts.Load() != 1 {
		t.Errorf("start-up job ran %d times", starts.Load())
	}
	if next := s.Next("start"); next.Before(time.Now().Add(50 * time.Minute)) {
		t.Errorf("Next(start) = %v; want about an hour ahead", next)
	}
	if !s.Next("nope").IsZero() {
		t.Error("Next of an unknown job is not zero")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancellation")
	}
	if cancelled.Load() != 1 {
		t.Error("running job's context was not cancelled before Run returned")
	}
}

func TestBadSpec(t *testing.T) {
	if _, err := New(zap.NewNop(), []Job{{Name: "x", Spec: "every day"}}); err == nil {
		t.Error("bad spec accepted")
	}
}

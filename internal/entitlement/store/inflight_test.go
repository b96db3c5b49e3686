package store

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// TestInFlight: every batch runs once, never more than depth at a time;
// after an error no batch starts, and inFlight returns only when the
// batches it started have ended.
func TestInFlight(t *testing.T) {
	for _, depth := range []int{1, 2, 4} {
		var running, peak, ran atomic.Int32
		exec := func(fail bool) func() ([]Conflict, error) {
			return func() ([]Conflict, error) {
				n := running.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				time.Sleep(time.Millisecond)
				ran.Add(1)
				running.Add(-1)
				if fail {
					return nil, errors.New("boom")
				}
				return []Conflict{{Email: "x"}}, nil
			}
		}
		refused, err := inFlight(1000, 100, depth, func(start, end int) (func() ([]Conflict, error), error) { return exec(false), nil })
		if err != nil || ran.Load() != 10 || len(refused) != 10 || peak.Load() > int32(depth) || (depth > 1 && peak.Load() < 2) {
			t.Errorf("depth %d: err %v, ran %d, refused %d, peak %d", depth, err, ran.Load(), len(refused), peak.Load())
		}
		ran.Store(0)
		prepared := 0
		_, err = inFlight(1000, 100, depth, func(start, end int) (func() ([]Conflict, error), error) {
			prepared++
			return exec(start == 200), nil
		})
		if err == nil || running.Load() != 0 || int(ran.Load()) > 3+depth || int(ran.Load()) < 3 {
			t.Errorf("depth %d with batch 3 failing: err %v, ran %d (prepared %d), still running %d", depth, err, ran.Load(), prepared, running.Load())
		}
		ran.Store(0)
		_, err = inFlight(1000, 100, depth, func(start, end int) (func() ([]Conflict, error), error) {
			if start == 300 {
				return nil, errors.New("encode")
			}
			return exec(false), nil
		})
		if err == nil || ran.Load() != 3 {
			t.Errorf("depth %d with batch 4 unencodable: err %v, ran %d, want the 3 before it", depth, err, ran.Load())
		}
	}
}

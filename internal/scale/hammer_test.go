package scale

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestHammer releases many goroutines at once on a small pool that also
// reaps idle instances and keeps a minimum, each acquiring and then at
// random releasing, releasing twice, discarding, or crashing the instance
// first. At the end no slot is busy, nothing waits, every start was matched
// by a stop, and no more than Max instances were ever alive at once.
func TestHammer(t *testing.T) {
	const (
		goroutines = 32
		rounds     = 200
		maxInst    = 4
	)
	fl := &fleet{delay: 50 * time.Microsecond}
	p := newTestPool(t, fl, Config{
		Min: 1, Max: maxInst, Concurrency: 2,
		Idle:       20 * time.Millisecond,
		QueueDepth: goroutines,
		QueueWait:  time.Minute,
	})
	stop := runPool(t, p, fl)

	var failed atomic.Int64
	var wg sync.WaitGroup
	begin := make(chan struct{})
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 42))
			<-begin
			for range rounds {
				l, err := p.Acquire(t.Context())
				if err != nil {
					failed.Add(1)
					t.Error(err)
					return
				}
				switch rng.IntN(10) {
				case 0:
					l.Discard()
				case 1:
					l.Release()
					l.Release()
				case 2:
					l.Instance().(*fake).crash()
					l.Release()
				case 3:
					runtime.Gosched()
					l.Discard()
					l.Release()
				default:
					l.Release()
				}
			}
		})
	}
	close(begin)
	wg.Wait()

	s := p.Stats()
	if s.Busy != 0 || s.Waiting != 0 {
		t.Errorf("after the hammer: busy %d, waiting %d; want 0", s.Busy, s.Waiting)
	}
	if n := fl.maxAlive.Load(); n > maxInst {
		t.Errorf("%d instances alive at once, want at most %d", n, maxInst)
	}
	if s.Started < 2 || s.Crashed == 0 {
		t.Errorf("hammer did not exercise restarts: %+v", s)
	}
	stop()
	// A start in flight when the pool stops is cancelled: the fleet counts
	// it as begun, the pool as a start error.
	if s := p.Stats(); s.Started+s.StartErrors != uint64(fl.starts.Load()) {
		t.Errorf("pool counted %d starts and %d start errors, fleet %d begun", s.Started, s.StartErrors, fl.starts.Load())
	}
	t.Logf("stats %+v, max alive %d", p.Stats(), fl.maxAlive.Load())
}

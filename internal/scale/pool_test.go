package scale

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"aloft/internal/fn"
)

// fleet starts fake instances: the stand-in for the executor a pool's
// consumer provides. It counts what is alive so tests can check the pool's
// bounds from the outside.
type fleet struct {
	delay                   time.Duration       // how long Start takes
	fail                    func(n int64) error // if set, start number n (from 1) fails with its error
	mu                      sync.Mutex
	all                     []*fake
	starts, alive, maxAlive atomic.Int64
}

type fake struct {
	fl        *fleet
	done      chan struct{}
	crashOnce sync.Once
	stopOnce  sync.Once
	stopped   atomic.Bool
}

func (f *fake) Done() <-chan struct{} { return f.done }

func (f *fake) Stop() {
	f.stopOnce.Do(func() {
		f.stopped.Store(true)
		f.fl.alive.Add(-1)
	})
}

// crash makes the instance die on its own.
func (f *fake) crash() { f.crashOnce.Do(func() { close(f.done) }) }

func (fl *fleet) start(ctx context.Context) (Instance, error) {
	n := fl.starts.Add(1)
	if fl.delay > 0 {
		t := time.NewTimer(fl.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if fl.fail != nil {
		if err := fl.fail(n); err != nil {
			return nil, err
		}
	}
	a := fl.alive.Add(1)
	for m := fl.maxAlive.Load(); a > m && !fl.maxAlive.CompareAndSwap(m, a); m = fl.maxAlive.Load() {
	}
	f := &fake{fl: fl, done: make(chan struct{})}
	fl.mu.Lock()
	fl.all = append(fl.all, f)
	fl.mu.Unlock()
	return f, nil
}

func (fl *fleet) instance(i int) *fake {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.all[i]
}

func newTestPool(t *testing.T, fl *fleet, cfg Config) *Pool {
	t.Helper()
	cfg.Name = "f:1"
	cfg.Start = fl.start
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 1
	}
	if cfg.Idle == 0 {
		cfg.Idle = time.Minute
	}
	if cfg.QueueWait == 0 {
		cfg.QueueWait = 10 * time.Second
	}
	p, err := NewPool(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runPool runs p until the returned stop is called; stop checks that Run
// returned nil and that every instance the fleet started was stopped.
func runPool(t *testing.T, p *Pool, fl *fleet) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	return func() {
		t.Helper()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if n := fl.alive.Load(); n != 0 {
			t.Errorf("%d instances alive after Run returned", n)
		}
		if s := p.Stats(); s.Started != s.Stopped || s.Instances+s.Starting+s.Stopping+s.Busy+s.Waiting != 0 {
			t.Errorf("stats after Run returned: %+v", s)
		}
	}
}

func checkStats(t *testing.T, p *Pool, want func(s Stats) bool) {
	t.Helper()
	if s := p.Stats(); !want(s) {
		t.Errorf("unexpected stats %+v", s)
	}
}

func TestNewPoolValidates(t *testing.T) {
	start := func(context.Context) (Instance, error) { return nil, nil }
	good := Config{Name: "f:1", Start: start, Concurrency: 1, Max: 1, Idle: time.Second, QueueWait: time.Second}
	if _, err := NewPool(good); err != nil {
		t.Fatalf("good config: %v", err)
	}
	tests := []struct {
		name string
		edit func(c *Config)
	}{
		{"no name", func(c *Config) { c.Name = "" }},
		{"no start", func(c *Config) { c.Start = nil }},
		{"zero concurrency", func(c *Config) { c.Concurrency = 0 }},
		{"zero max", func(c *Config) { c.Max = 0 }},
		{"min above max", func(c *Config) { c.Min = 2 }},
		{"negative min", func(c *Config) { c.Min = -1 }},
		{"zero idle", func(c *Config) { c.Idle = 0 }},
		{"negative depth", func(c *Config) { c.QueueDepth = -1 }},
		{"zero queue wait", func(c *Config) { c.QueueWait = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.edit(&c)
			if _, err := NewPool(c); err == nil {
				t.Error("NewPool accepted an invalid config")
			}
		})
	}
	// Every problem is reported at once.
	_, err := NewPool(Config{})
	if err == nil || len(err.(interface{ Unwrap() error }).Unwrap().(interface{ Unwrap() []error }).Unwrap()) < 5 {
		t.Errorf("NewPool(Config{}) = %v, want every problem listed", err)
	}
}

func TestKeepAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fleet{}
		p := newTestPool(t, fl, Config{Max: 2, Idle: time.Minute})
		stop := runPool(t, p, fl)
		defer stop()

		l, err := p.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
		time.Sleep(time.Minute - time.Nanosecond)
		synctest.Wait()
		checkStats(t, p, func(s Stats) bool { return s.Instances == 1 && s.Stopped == 0 })

		time.Sleep(p.tick + time.Nanosecond)
		synctest.Wait()
		checkStats(t, p, func(s Stats) bool { return s.Instances == 0 && s.Stopped == 1 })
		if fl.alive.Load() != 0 {
			t.Error("idle instance not stopped")
		}
	})
}

func TestKeepAliveKeepsMin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fleet{delay: time.Millisecond}
		p := newTestPool(t, fl, Config{Min: 1, Max: 3, Idle: time.Minute})
		stop := runPool(t, p, fl)
		defer stop()

		// The warm minimum starts without any request.
		synctest.Wait()
		time.Sleep(fl.delay)
		synctest.Wait()
		checkStats(t, p, func(s Stats) bool { return s.Instances == 1 && s.Started == 1 })

		var leases []*Lease
		for range 3 {
			l, err := p.Acquire(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			leases = append(leases, l)
		}
		for _, l := range leases {
			l.Release()
		}
		checkStats(t, p, func(s Stats) bool { return s.Instances == 3 })
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		checkStats(t, p, func(s Stats) bool { return s.Instances == 1 && s.Stopped == 2 })
	})
}

// With traffic every Idle/2, reusing the most recently used instance lets
// the other one retire.
func TestMostRecentlyUsedLetsOthersRetire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fleet{}
		p := newTestPool(t, fl, Config{Max: 2, Idle: time.Minute})
		stop := runPool(t, p, fl)
		defer stop()

		l1, _ := p.Acquire(t.Context())
		l2, err := p.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		l1.Release()
		l2.Release()
		for range 6 {
			time.Sleep(30 * time.Second)
			l, err := p.Acquire(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if l.Instance() != l2.Instance() {
				t.Error("lease not on the most recently used instance")
			}
			l.Release()
		}
		synctest.Wait()
		checkStats(t, p, func(s Stats) bool { return s.Instances == 1 && s.Stopped == 1 })
	})
}

func TestQueueWaitUnavailable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fleet{}
		p := newTestPool(t, fl, Config{Max: 1, QueueWait: 3 * time.Second})
		stop := runPool(t, p, fl)
		defer stop()

		l, err := p.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer l.Release()
		begin := time.Now()
		_, err = p.Acquire(t.Context())
		var fe *fn.Error
		if !errors.As(err, &fe) || fe.Status != http.StatusServiceUnavailable {
			t.Fatalf("Acquire on a full pool = %v, want 503", err)
		}
		if waited := time.Since(begin); waited != 3*time.Second {
			t.Errorf("waited %s, want the QueueWait 3s", waited)
		}
		checkStats(t, p, func(s Stats) bool { return s.Waiting == 0 && s.TimedOut == 1 && s.Started == 1 })
	})
}

func TestQueueFullThrottled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fleet{}
		p := newTestPool(t, fl, Config{Max: 1, QueueDepth: 2, QueueWait: 1500 * time.Millisecond})
		stop := runPool(t, p, fl)
		defer stop()

		l, err := p.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				l, err := p.Acquire(t.Context())
				if err != nil {
					t.Error(err)
					return
				}
				l.Release()
			})
		}
		synctest.Wait()
		checkStats(t, p, func(s Stats) bool { return s.Waiting == 2 })

		_, err = p.Acquire(t.Context())
		var fe *fn.Error
		if !errors.As(err, &fe) || fe.Status != http.StatusTooManyRequests || fe.RetryAfter != 2 {
			t.Fatalf("Acquire with a full queue = %#v, want 429 with Retry-After 2", err)
		}
		l.Release()
		wg.Wait()
		checkStats(t, p, func(s Stats) bool { return s.Throttled == 1 && s.Started == 1 && s.Busy == 0 })
	})
}

func TestAcquireContextDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fleet{}
		p := newTestPool(t, fl, Config{Max: 1})
		stop := runPool(t, p, fl)
		defer stop()

		l, err := p.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer l.Release()
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if _, err := p.Acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Acquire = %v, want the context's error", err)
		}
		checkStats(t, p, func(s Stats) bool { return s.Waiting == 0 && s.Busy == 1 })
	})
}

// burst has n goroutines acquire at once, hold their lease until all of
// them have one or hold is over, and release.
func burst(t *testing.T, p *Pool, n int, hold time.Duration) {
	var wg sync.WaitGroup
	var served atomic.Int64
	for range n {
		wg.Go(func() {
			l, err := p.Acquire(t.Context())
			if err != nil {
				t.Error(err)
				return
			}
			served.Add(1)
			time.Sleep(hold)
			l.Release()
		})
	}
	wg.Wait()
	if served.Load() != int64(n) {
		t.Errorf("served %d of %d", served.Load(), n)
	}
}

func TestBurstStartsNoMoreThanMax(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fleet{delay: 200 * time.Millisecond}
		p := newTestPool(t, fl, Config{Max: 8, QueueDepth: 50})
		stop := runPool(t, p, fl)
		defer stop()

		burst(t, p, 50, 10*time.Millisecond)
		if n := fl.starts.Load(); n != 8 {
			t.Errorf("started %d instances for 50 concurrent requests, want Max 8", n)
		}
		if n := fl.maxAlive.Load(); n > 8 {
			t.Errorf("%d instances alive at once, want at most 8", n)
		}
	})
}

func TestBurstStartsPerConcurrentDemand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fleet{delay: 200 * time.Millisecond}
		p := newTestPool(t, fl, Config{Max: 8, Concurrency: 4})
		stop := runPool(t, p, fl)
		defer stop()

		burst(t, p, 10, time.Second)
		if n := fl.starts.Load(); n != 3 {
			t.Errorf("started %d instances for 10 concurrent requests at concurrency 4, want 3", n)
		}
	})
}

func TestStartErrorGoesToTrigger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boom := errors.New("boom")
		fl := &fleet{delay: time.Second, fail: func(n int64) error {
			if n == 1 {
				return boom
			}
			return nil
		}}
		p := newTestPool(t, fl, Config{Max: 1})
		stop := runPool(t, p, fl)
		defer stop()

		first := make(chan error, 1)
		go func() {
			_, err := p.Acquire(t.Context())
			first <- err
		}()
		synctest.Wait() // the first request waits on the start it caused
		second := make(chan error, 1)
		go func() {
			l, err := p.Acquire(t.Context())
			if err == nil {
				l.Release()
			}
			second <- err
		}()
		synctest.Wait()
		checkStats(t, p, func(s Stats) bool { return s.Waiting == 2 && s.Starting == 1 })

		if err := <-first; !errors.Is(err, boom) {
			t.Errorf("triggering request got %v, want the start error", err)
		}
		if err := <-second; err != nil {
			t.Errorf("waiting request got %v, want a lease from a second start", err)
		}
		checkStats(t, p, func(s Stats) bool { return s.StartErrors == 1 && s.Started == 1 })
	})
}

// A warm-minimum start that fails is logged and retried with a doubling
// backoff, not on every tick.
func TestWarmStartFailureBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fleet{fail: func(n int64) error {
			if n <= 3 {
				return errors.New("boom")
			}
			return nil
		}}
		p := newTestPool(t, fl, Config{Min: 1, Max: 1, Idle: 100 * time.Millisecond})
		stop := runPool(t, p, fl)
		defer stop()

		// Ticks every 10ms; backoffs of 100ms, 200ms, 400ms: tries at 0, 100ms,
		// 300ms, and the fourth, which succeeds, at 700ms.
		synctest.Wait()
		checkStats(t, p, func(s Stats) bool { return s.StartErrors == 1 && s.Instances == 0 })
		time.Sleep(290 * time.Millisecond)
		synctest.Wait()
		checkStats(t, p, func(s Stats) bool { return s.StartErrors == 2 && s.Instances == 0 })
		time.Sleep(400 * time.Millisecond)
		synctest.Wait()
		checkStats(t, p, func(s Stats) bool { return s.StartErrors == 3 && s.Instances == 0 })
		time.Sleep(20 * time.Millisecond)
		synctest.Wait()
		checkStats(t, p, func(s Stats) bool { return s.StartErrors == 3 && s.Instances == 1 })
	})
}

func TestDoubleReleaseIsNoOp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fleet{}
		p := newTestPool(t, fl, Config{Max: 1, QueueWait: time.Second})
		stop := runPool(t, p, fl)
		defer stop()

		l, err := p.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
		l.Release()
		l.Discard()
		checkStats(t, p, func(s Stats) bool { return s.Busy == 0 && s.Instances == 1 })

		l2, err := p.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer l2.Release()
		// The one slot is taken: a corrupted count would hand out a second.
		if _, err := p.Acquire(t.Context()); err == nil {
			t.Error("a second lease on a one-slot pool")
		}
	})
}

func TestCrashedIdleInstanceReplacedForMin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fleet{}
		p := newTestPool(t, fl, Config{Min: 1, Max: 2})
		stop := runPool(t, p, fl)
		defer stop()

		synctest.Wait()
		checkStats(t, p, func(s Stats) bool { return s.Instances == 1 })
		fl.instance(0).crash()
		synctest.Wait()
		checkStats(t, p, func(s Stats) bool {
			return s.Instances == 1 && s.Crashed == 1 && s.Stopped == 1 && s.Started == 2
		})
		if !fl.instance(0).stopped.Load() {
			t.Error("crashed instance not stopped")
		}
	})
}

func TestCrashedIdleInstanceNotReplacedWithoutMin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fleet{}
		p := newTestPool(t, fl, Config{Max: 2})
		stop := runPool(t, p, fl)
		defer stop()

		l, err := p.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
		fl.instance(0).crash()
		synctest.Wait()
		checkStats(t, p, func(s Stats) bool { return s.Instances == 0 && s.Crashed == 1 && s.Started == 1 })
	})
}

func TestDiscardStartsReplacementForWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fleet{delay: 50 * time.Millisecond}
		p := newTestPool(t, fl, Config{Max: 1})
		stop := runPool(t, p, fl)
		defer stop()

		l, err := p.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan *Lease, 1)
		go func() {
			l, err := p.Acquire(t.Context())
			if err != nil {
				t.Error(err)
			}
			got <- l
		}()
		synctest.Wait()
		checkStats(t, p, func(s Stats) bool { return s.Waiting == 1 && s.Starting == 0 })
		l.Discard()
		l2 := <-got
		if l2 == nil {
			return
		}
		if l2.Instance() == l.Instance() {
			t.Error("waiter got the discarded instance")
		}
		l2.Release()
		checkStats(t, p, func(s Stats) bool { return s.Started == 2 && s.Stopped == 1 && s.Instances == 1 })
	})
}

func TestDrainWaitsForLeases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fleet{}
		p := newTestPool(t, fl, Config{Max: 2})
		ran := make(chan error, 1)
		go func() { ran <- p.Run(context.Background()) }()

		l1, _ := p.Acquire(t.Context())
		l2, err := p.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		l2.Release()
		drained := make(chan error, 1)
		go func() { drained <- p.Drain(t.Context()) }()
		synctest.Wait()
		select {
		case err := <-drained:
			t.Fatalf("Drain returned %v with a lease in flight", err)
		default:
		}
		checkStats(t, p, func(s Stats) bool { return s.Instances == 1 && s.Stopped == 1 && s.Busy == 1 })
		if _, err := p.Acquire(t.Context()); !errors.Is(err, ErrDraining) {
			t.Errorf("Acquire while draining = %v, want ErrDraining", err)
		}
		l1.Release()
		if err := <-drained; err != nil {
			t.Errorf("Drain = %v", err)
		}
		if err := <-ran; err != nil {
			t.Errorf("Run after drain = %v", err)
		}
		if fl.alive.Load() != 0 {
			t.Error("instances alive after drain")
		}
		if _, err := p.Acquire(t.Context()); !errors.Is(err, ErrClosed) {
			t.Errorf("Acquire after Run returned = %v, want ErrClosed", err)
		}
	})
}

func TestDrainTimeoutStopsTheRest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fleet{delay: time.Hour}
		p := newTestPool(t, fl, Config{Max: 2, QueueWait: 2 * time.Hour})
		ran := make(chan error, 1)
		go func() { ran <- p.Run(context.Background()) }()

		fl.delay = 0
		l, err := p.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		fl.delay = time.Hour
		waiter := make(chan error, 1)
		// A second request causes a start that takes an hour.
		go func() {
			_, err := p.Acquire(t.Context())
			waiter <- err
		}()
		synctest.Wait()
		checkStats(t, p, func(s Stats) bool { return s.Starting == 1 && s.Waiting == 1 })

		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if err := p.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Drain = %v, want the deadline", err)
		}
		if err := <-waiter; !errors.Is(err, ErrDraining) {
			t.Errorf("waiting request got %v, want ErrDraining", err)
		}
		if err := <-ran; err != nil {
			t.Errorf("Run = %v", err)
		}
		l.Release()
		if fl.alive.Load() != 0 {
			t.Error("instances alive after forced drain")
		}
		checkStats(t, p, func(s Stats) bool {
			return s.Started == 1 && s.Stopped == 1 && s.StartErrors == 1 && s.Busy == 0
		})
	})
}

func TestRunShutdownFailsWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fleet{}
		p := newTestPool(t, fl, Config{Max: 1})
		ctx, cancel := context.WithCancel(context.Background())
		ran := make(chan error, 1)
		go func() { ran <- p.Run(ctx) }()

		l, err := p.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		waiter := make(chan error, 1)
		go func() {
			_, err := p.Acquire(t.Context())
			waiter <- err
		}()
		synctest.Wait()
		cancel()
		if err := <-waiter; !errors.Is(err, ErrClosed) {
			t.Errorf("waiting request got %v, want ErrClosed", err)
		}
		if err := <-ran; err != nil {
			t.Errorf("Run = %v", err)
		}
		if fl.alive.Load() != 0 {
			t.Error("instance alive after Run returned")
		}
		l.Release()
		checkStats(t, p, func(s Stats) bool { return s.Busy == 0 && s.Instances == 0 })
		if err := p.Run(context.Background()); err == nil {
			t.Error("second Run accepted")
		}
	})
}

func TestArrivalHistogram(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fleet{}
		p := newTestPool(t, fl, Config{Max: 1})
		stop := runPool(t, p, fl)
		defer stop()

		for _, gap := range []time.Duration{0, 2 * time.Millisecond, 2 * time.Millisecond, time.Second} {
			time.Sleep(gap)
			l, err := p.Acquire(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			l.Release()
		}
		var want [ArrivalBuckets]uint64
		want[1], want[5] = 2, 1
		if got := p.Stats().Arrivals; got != want {
			t.Errorf("arrivals = %v, want %v", got, want)
		}
	})
}

func TestDrainWhileStarting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fleet{delay: time.Second}
		p := newTestPool(t, fl, Config{Max: 1})
		ran := make(chan error, 1)
		go func() { ran <- p.Run(context.Background()) }()

		waiter := make(chan error, 1)
		go func() {
			_, err := p.Acquire(t.Context())
			waiter <- err
		}()
		synctest.Wait()
		if err := p.Drain(t.Context()); err != nil {
			t.Errorf("Drain = %v", err)
		}
		if err := <-waiter; !errors.Is(err, ErrDraining) {
			t.Errorf("waiting request got %v, want ErrDraining", err)
		}
		if err := <-ran; err != nil {
			t.Errorf("Run = %v", err)
		}
		// The start finished during the drain and its instance was stopped
		// without ever serving.
		checkStats(t, p, func(s Stats) bool { return s.Started == 1 && s.Stopped == 1 && s.Instances == 0 })
		if fl.alive.Load() != 0 {
			t.Error("instance alive after drain")
		}
	})
}

func TestWaitersServedInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fleet{}
		p := newTestPool(t, fl, Config{Max: 1})
		stop := runPool(t, p, fl)
		defer stop()

		l, err := p.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var order []int
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				l, err := p.Acquire(t.Context())
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				order = append(order, i)
				mu.Unlock()
				time.Sleep(time.Millisecond)
				l.Release()
			})
			synctest.Wait() // queued before the next one arrives
		}
		l.Release()
		wg.Wait()
		if !slices.Equal(order, []int{0, 1, 2, 3}) {
			t.Errorf("served in order %v, want FIFO", order)
		}
	})
}

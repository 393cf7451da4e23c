package scale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"aloft/internal/fn"
)

// Instance is one running copy of a function version, as the pool sees it.
// The executor that starts it provides the implementation.
type Instance interface {
	// Done is closed when the instance died on its own.
	Done() <-chan struct{}
	// Stop stops the instance, gracefully where possible. It may be called
	// more than once, also after Done is closed.
	Stop()
}

// Config configures a Pool. NewPool validates it once.
type Config struct {
	// Name names the pool in logs ("fn:version").
	Name string
	// Start starts one instance and returns when it is ready to serve. Its
	// error is returned (wrapped) to the request that caused the start. The
	// context is cancelled when the pool shuts down, when a Drain runs out of
	// time, and after the instance has been stopped, so it may bound the
	// instance's whole life (exec.CommandContext).
	Start func(ctx context.Context) (Instance, error)
	// Concurrency is the number of slots per instance (>= 1).
	Concurrency int
	// Min instances are kept running; Max is the hard maximum of instances
	// alive at once, counting starting and stopping ones (0 <= Min <= Max, Max >= 1).
	Min, Max int
	// Idle is the keep-alive: an instance with no busy slot for this long
	// stops, unless that would leave fewer than Min running (> 0).
	Idle time.Duration
	// QueueDepth bounds the requests waiting for a slot; when full, Acquire
	// fails fast. 0 means 2*Max*Concurrency, at least 10.
	QueueDepth int
	// QueueWait bounds how long a request waits for a slot (> 0).
	QueueWait time.Duration
	// Logger receives the pool's own log; nil discards it.
	Logger *slog.Logger
	// Now is the clock, for tests; nil means time.Now.
	Now func() time.Time
}

func (c *Config) validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("name is empty"))
	}
	if c.Start == nil {
		errs = append(errs, errors.New("start is nil"))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("concurrency %d is below 1", c.Concurrency))
	}
	if c.Max < 1 {
		errs = append(errs, fmt.Errorf("max %d is below 1", c.Max))
	}
	if c.Min < 0 || c.Min > c.Max {
		errs = append(errs, fmt.Errorf("min %d is outside [0, max %d]", c.Min, c.Max))
	}
	if c.Idle <= 0 {
		errs = append(errs, fmt.Errorf("idle %s is not positive", c.Idle))
	}
	if c.QueueDepth < 0 {
		errs = append(errs, fmt.Errorf("queue depth %d is negative", c.QueueDepth))
	}
	if c.QueueWait <= 0 {
		errs = append(errs, fmt.Errorf("queue wait %s is not positive", c.QueueWait))
	}
	return errors.Join(errs...)
}

var (
	// ErrDraining is returned by Acquire once Drain has been called (also to
	// requests that were waiting): retry on the pool that replaces this one.
	ErrDraining = errors.New("pool is draining: retry on its replacement")
	// ErrClosed is returned by Acquire once Run has returned.
	ErrClosed = errors.New("pool is closed")
)

// Pool manages the instances of one function version. Create it with
// NewPool, run it with Run; Acquire, Drain and Stats are safe for concurrent
// use.
type Pool struct {
	cfg        Config
	log        *slog.Logger
	depth      int
	retryAfter int
	tick       time.Duration
	kick       chan struct{} // wakes the loop; buffered 1
	wg         sync.WaitGroup

	mu          sync.Mutex
	insts       []*inst // running, ready to serve
	q           waitQueue
	pending     []*startReq            // reserved starts the loop has not launched yet
	inflight    map[*startReq]struct{} // launched starts whose Start has not returned
	starting    int                    // pending + inflight
	stopping    int                    // removed instances whose Stop has not returned
	live        int                    // starting + running + stopping
	busy        int
	seq         uint64 // use counter, orders instances most recently used first
	nextID      uint64
	ran         bool
	draining    bool
	forced      bool // a Drain ran out of time, or Run is shutting down: cancel starts
	closed      bool
	drained     chan struct{} // closed once draining and nothing is live
	isDrained   bool
	warmAfter   time.Time
	warmFails   int
	lastArrival time.Time
	acts        []action
	snap        state
	counts      counters
}

type counters struct {
	started, stopped, startErrors, crashed, throttled, timedOut uint64
	arrivals                                                    [ArrivalBuckets]uint64
}

// inst is the pool's record of one running instance.
type inst struct {
	id        uint64
	in        Instance
	busy      int
	used      uint64
	idleSince time.Time
	removed   bool
	gone      chan struct{} // closed when removed: the instance's goroutine stops it
}

// startReq is one reserved start. Trigger is the waiting request that caused
// it, which receives its error; nil for warm-minimum and replacement starts
// when no waiter is uncovered.
type startReq struct {
	trigger *waiter
	cancel  context.CancelFunc
}

// NewPool validates cfg and returns an idle pool; call Run to operate it.
func NewPool(cfg Config) (*Pool, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("new pool %q: %w", cfg.Name, err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	depth := cfg.QueueDepth
	if depth == 0 {
		depth = max(2*cfg.Max*cfg.Concurrency, 10)
	}
	return &Pool{
		cfg:        cfg,
		log:        log.With("function", cfg.Name),
		depth:      depth,
		retryAfter: max(1, int(math.Ceil(cfg.QueueWait.Seconds()))),
		tick:       min(max(cfg.Idle/10, 10*time.Millisecond), time.Second),
		kick:       make(chan struct{}, 1),
		inflight:   make(map[*startReq]struct{}),
		drained:    make(chan struct{}),
	}, nil
}

// Lease is one slot on one instance, held by one request.
type Lease struct {
	p    *Pool
	it   *inst
	done bool // guarded by p.mu
}

// Instance returns the instance the slot is on.
func (l *Lease) Instance() Instance { return l.it.in }

// Release gives the slot back; the next waiting request gets it. Calling it
// again, or after Discard, does nothing.
func (l *Lease) Release() { l.p.release(l, false) }

// Discard reports the instance broken (crashed, timed out): the pool drops and
// stops it, releases the slot, and starts a replacement if requests wait.
// Calling it again, or after Release, does nothing.
func (l *Lease) Discard() { l.p.release(l, true) }

// Acquire returns a slot for one request. It takes a free slot on a running
// instance at once, preferring the busiest and then the most recently used
// instance so idle ones can retire. Otherwise it waits in a bounded FIFO queue
// and, if the slots of instances already starting do not cover the waiting
// requests and fewer than Max instances are alive, causes one to start.
//
// Errors:
//   - the queue is full: an *fn.Error from fn.Throttled (429, RetryAfter > 0);
//   - no slot within QueueWait: an *fn.Error from fn.Unavailable (503);
//   - ctx done while waiting: ctx.Err();
//   - the start this request caused failed: that error, wrapped;
//   - Drain was called: ErrDraining; Run has returned: ErrClosed.
func (p *Pool) Acquire(ctx context.Context) (*Lease, error) {
	now := p.cfg.Now()
	p.mu.Lock()
	if err := p.refuseErr(); err != nil {
		p.mu.Unlock()
		return nil, err
	}
	p.recordArrival(now)
	if it := p.freeSlot(); it != nil {
		it.busy++
		p.busy++
		p.seq++
		it.used = p.seq
		p.mu.Unlock()
		return &Lease{p: p, it: it}, nil
	}
	if p.q.n >= p.depth {
		p.counts.throttled++
		p.mu.Unlock()
		return nil, fn.Throttled(p.retryAfter, "function %s is at capacity: %d requests already waiting", p.cfg.Name, p.depth)
	}
	if err := ctx.Err(); err != nil {
		p.mu.Unlock()
		return nil, err
	}
	w := &waiter{ch: make(chan grant, 1)}
	p.q.push(w)
	n := p.startForDemand(w)
	p.mu.Unlock()
	if n > 0 {
		p.poke()
	}
	return p.wait(ctx, w)
}

func (p *Pool) wait(ctx context.Context, w *waiter) (*Lease, error) {
	t := time.NewTimer(p.cfg.QueueWait)
	defer t.Stop()
	var err error
	timedOut := false
	select {
	case g := <-w.ch:
		return g.l, g.err
	case <-ctx.Done():
		err = ctx.Err()
	case <-t.C:
		timedOut = true
		err = fn.Unavailable("function %s had no free instance within %s", p.cfg.Name, p.cfg.QueueWait)
	}
	p.mu.Lock()
	if w.queued {
		p.q.remove(w)
		unlinkStart(w)
		if timedOut {
			p.counts.timedOut++
		}
		p.mu.Unlock()
		return nil, err
	}
	p.mu.Unlock()
	// Served while giving up: the grant is already in the buffer.
	g := <-w.ch
	if g.err != nil || timedOut {
		return g.l, g.err
	}
	g.l.Release()
	return nil, err
}

// refuseErr says why the pool takes no new requests, if it does not.
func (p *Pool) refuseErr() error {
	switch {
	case p.closed:
		return ErrClosed
	case p.draining:
		return ErrDraining
	}
	return nil
}

// freeSlot returns the running instance a new lease should go to: the
// busiest with a free slot, then the most recently used; nil if none.
func (p *Pool) freeSlot() *inst {
	var best *inst
	for _, it := range p.insts {
		if it.busy >= p.cfg.Concurrency {
			continue
		}
		if best == nil || it.busy > best.busy || (it.busy == best.busy && it.used > best.used) {
			best = it
		}
	}
	return best
}

func (p *Pool) release(l *Lease, discard bool) {
	now := p.cfg.Now() // outside the lock: a clock read costs ~100ns on some VMs
	p.mu.Lock()
	defer p.mu.Unlock()
	if l.done {
		return
	}
	l.done = true
	it := l.it
	if discard && !it.removed {
		p.log.Debug("instance discarded", "instance", it.id)
		p.remove(it)
	}
	p.seq++
	it.used = p.seq
	if !it.removed && p.q.n > 0 {
		// Hand the slot straight to the next waiter: busy counts stay.
		p.q.pop().deliver(grant{l: &Lease{p: p, it: it}})
		return
	}
	it.busy--
	p.busy--
	if it.busy == 0 {
		it.idleSince = now
		if p.draining && !it.removed {
			p.remove(it)
		}
	}
	if discard && p.startForDemand(nil) > 0 {
		p.poke()
	}
}

// startForDemand reserves the starts waiting requests need, preferring w as
// the trigger of the first; it returns how many it reserved. p.mu held.
func (p *Pool) startForDemand(w *waiter) int {
	n := demandStarts(p.q.n, p.starting, p.live, p.cfg.Max, p.cfg.Concurrency)
	p.reserveStarts(n, w)
	return n
}

// reserveStarts reserves n starts for the loop to launch, each attributed to
// an uncovered waiter: preferred first, then the oldest. p.mu held.
func (p *Pool) reserveStarts(n int, preferred *waiter) {
	if p.closed || p.draining {
		return
	}
	next := p.q.head
	for range n {
		sr := &startReq{}
		var w *waiter
		if preferred != nil && preferred.start == nil {
			w = preferred
		} else {
			for next != nil && next.start != nil {
				next = next.next
			}
			w = next
		}
		if w != nil {
			w.start, sr.trigger = sr, w
		}
		p.pending = append(p.pending, sr)
		p.starting++
		p.live++
	}
}

// remove takes a running instance out of the pool; its goroutine stops it.
// p.mu held.
func (p *Pool) remove(it *inst) {
	for i, x := range p.insts {
		if x == it {
			last := len(p.insts) - 1
			p.insts[i] = p.insts[last]
			p.insts[last] = nil
			p.insts = p.insts[:last]
			break
		}
	}
	it.removed = true
	close(it.gone)
	p.stopping++
}

// poke wakes the loop without blocking.
func (p *Pool) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func unlinkStart(w *waiter) {
	if w.start != nil {
		w.start.trigger = nil
		w.start = nil
	}
}

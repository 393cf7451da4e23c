package async

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"aloft/internal/fn"
)

const (
	// discoverEvery is how often Run lists the consumers to start and stop
	// pull loops (tuning.discoverEvery).
	discoverEvery = 2 * time.Second
	// orphanEvery and gcEvery are how many discovery rounds pass between
	// scans for events without a consumer and for consumers of deleted
	// functions.
	orphanEvery = 5
	gcEvery     = 15
	// idleStop is how long a pull loop with nothing pending lives on.
	idleStop = 30 * time.Second
	// probeWait is how long an idle pull loop waits for one event.
	probeWait = 5 * time.Second
	// maxFetch bounds one fetch.
	maxFetch = 256
	// holdMax is how long a fetched event waits for a node-wide slot
	// before it is handed back, deferDelay when it is offered again; a
	// prefetched event waiting that long for its function's next slot is
	// handed back at once, for any node to take.
	holdMax    = time.Second
	deferDelay = time.Second
	// prefetchBelow is the average attempt duration under which a pull
	// loop holds fetched events ahead of its function's free slots, at
	// most maxPrefetch of them.
	prefetchBelow = 100 * time.Millisecond
	maxPrefetch   = 64
	// maxWake bounds the functions Enqueue asks Run to start loops for
	// between two discovery rounds; beyond it the next round finds them.
	maxWake = 1024
)

// tuning holds the loop timings, which tests shorten.
type tuning struct {
	discoverEvery, idleStop, probeWait, holdMax time.Duration
}

var defaultTuning = tuning{discoverEvery: discoverEvery, idleStop: idleStop, probeWait: probeWait, holdMax: holdMax}

// worker is the pull loop of one function on this node.
type worker struct {
	tenant, function string
	wg               *sync.WaitGroup // Run's: the loop and every attempt it starts
	cancel           context.CancelFunc
	done             chan struct{}
	inflight         atomic.Int64
	limit            atomic.Int64  // the function's cap, as the pull loop last read it
	freed            chan struct{} // signalled when an attempt ends or few are held
	lastActive       atomic.Int64  // unix nanoseconds of the last event fetched
	// avgAttempt is a moving average of attempt durations in nanoseconds
	// (-1: none yet), which decides whether to prefetch.
	avgAttempt atomic.Int64

	mu       sync.Mutex
	ready    []heldMsg // fetched events waiting for a slot, oldest first from head
	head     int
	lowWater int // a take leaving fewer held wakes the pull loop
}

// Run pulls and runs events of every function until ctx ends, then cancels
// the attempts in flight (their events stay un-acknowledged, so JetStream
// delivers them again after AckWait), waits for every goroutine it started
// and returns nil. It returns an error if the stream or bucket cannot be
// created or if Run is already running.
func (a *Async) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return errors.New("async: already running")
	}
	defer a.running.Store(false)
	if err := a.setup(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // ended during set-up
		}
		return fmt.Errorf("async: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { a.keep.run(ctx, max(a.cfg.AckWait/3, time.Millisecond)) })
	a.discover(ctx, &wg)
	cancel()
	wg.Wait()
	a.workers.Clear()
	return nil
}

// discover starts and stops pull loops until ctx ends.
func (a *Async) discover(ctx context.Context, wg *sync.WaitGroup) {
	tick := time.NewTicker(a.tune.discoverEvery)
	defer tick.Stop()
	for round := 0; ; round++ {
		a.scan(ctx, wg, round)
	wait:
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				break wait
			case <-a.wake:
				a.wakeUp(ctx, wg)
			}
		}
	}
}

// scan lists the consumers: it starts a loop for each with events pending,
// stops loops idle for idleStop, and now and then recreates missing
// consumers and deletes those of deleted functions.
func (a *Async) scan(ctx context.Context, wg *sync.WaitGroup, round int) {
	a.reap()
	seen := map[string]bool{}
	lister := a.stream.ListConsumers(ctx)
	for info := range lister.Info() {
		tenant, function, ok := parseFilter(info.Config.FilterSubject)
		if !ok || info.Name != consumerName(tenant, function) {
			continue
		}
		key := tenant + "/" + function
		seen[key] = true
		pending := info.NumPending > 0 || info.NumAckPending > 0
		v, running := a.workers.Load(key)
		switch {
		case pending && !running:
			a.startWorker(ctx, wg, tenant, function)
		case running && !pending:
			w := v.(*worker)
			if w.inflight.Load() == 0 && time.Since(time.Unix(0, w.lastActive.Load())) > a.tune.idleStop {
				w.cancel()
			}
		case !running && !pending && round%gcEvery == gcEvery-1:
			a.collect(ctx, tenant, function, info.Name)
		}
	}
	if err := lister.Err(); err != nil && ctx.Err() == nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			a.streamGone() // deleted by hand: create it again
			err = a.setup(ctx)
		}
		if err != nil {
			a.log.Warn("list async consumers", "error", err)
		}
		return
	}
	if round%orphanEvery == 0 && ctx.Err() == nil {
		a.orphans(ctx, wg, seen)
	}
}

// reap forgets loops that ended.
func (a *Async) reap() {
	a.workers.Range(func(k, v any) bool {
		select {
		case <-v.(*worker).done:
			a.workers.Delete(k)
		default:
		}
		return true
	})
}

// orphans ensures a consumer and a loop for every function with stored
// events and no consumer (one deleted under an Enqueue, or by hand).
func (a *Async) orphans(ctx context.Context, wg *sync.WaitGroup, seen map[string]bool) {
	info, err := a.stream.Info(ctx, jetstream.WithSubjectFilter(subjectPrefix+">"))
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("list async subjects", "error", err)
		}
		return
	}
	for subj, n := range info.State.Subjects {
		tenant, function, ok := parseFilter(subj)
		if !ok || n == 0 || seen[tenant+"/"+function] {
			continue
		}
		if err := a.ensureConsumer(ctx, tenant, function, true); err != nil {
			a.log.Warn("recreate async consumer", "tenant", tenant, "function", function, "error", err)
			continue
		}
		a.startWorker(ctx, wg, tenant, function)
	}
}

// collect deletes the idle consumer of a function that no longer exists.
func (a *Async) collect(ctx context.Context, tenant, function, name string) {
	a.Forget(tenant, function)
	if _, err := a.function(ctx, tenant, function); err == nil || !fn.IsNotFound(err) {
		return
	}
	if err := a.stream.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		a.log.Warn("delete async consumer", "tenant", tenant, "function", function, "error", err)
	}
	a.ensured.Delete(tenant + "/" + function)
}

// wakeFor asks Run to start the loop of a function that has none, so a new
// function's first event does not wait for the next discovery round.
func (a *Async) wakeFor(tenant, function string) {
	key := tenant + "/" + function
	if _, ok := a.workers.Load(key); ok {
		return
	}
	a.wakeMu.Lock()
	if len(a.wakeSet) < maxWake {
		a.wakeSet[key] = struct{}{}
	}
	a.wakeMu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *Async) wakeUp(ctx context.Context, wg *sync.WaitGroup) {
	a.wakeMu.Lock()
	keys := make([]string, 0, len(a.wakeSet))
	for k := range a.wakeSet {
		keys = append(keys, k)
	}
	clear(a.wakeSet)
	a.wakeMu.Unlock()
	a.reap()
	for _, k := range keys {
		tenant, function, _ := strings.Cut(k, "/")
		if _, ok := a.workers.Load(k); !ok {
			a.startWorker(ctx, wg, tenant, function)
		}
	}
}

// startWorker starts the pull loop of a function.
func (a *Async) startWorker(ctx context.Context, wg *sync.WaitGroup, tenant, function string) {
	wctx, cancel := context.WithCancel(ctx)
	w := &worker{tenant: tenant, function: function, wg: wg, cancel: cancel,
		done: make(chan struct{}), freed: make(chan struct{}, 1)}
	w.avgAttempt.Store(-1)
	w.lastActive.Store(time.Now().UnixNano())
	a.workers.Store(tenant+"/"+function, w)
	wg.Go(func() {
		defer close(w.done)
		defer cancel()
		a.pull(wctx, w)
	})
}

// pull fetches and starts events of one function until ctx ends or the
// consumer fails. While events flow it fetches, without waiting, as many
// as it may start now (reserving their node-wide slots first) and, while
// the function's attempts are short, up to prefetch more that wait
// (holding their node-wide slots) for the function's next free slot; an
// attempt that ends starts the next of them in its own goroutine. Once
// none come it waits for one event without reserving anything.
func (a *Async) pull(ctx context.Context, w *worker) {
	cons, err := a.stream.Consumer(ctx, consumerName(w.tenant, w.function))
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("open async consumer", "tenant", w.tenant, "function", w.function, "error", err)
		}
		return
	}
	defer a.handBack(w, 0)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	busy := true
	for ctx.Err() == nil {
		limit := a.functionLimit(ctx, w)
		w.limit.Store(int64(limit))
		a.dispatch(ctx, w, limit)
		depth := w.depth(limit)
		if a.stat.inFlight.Load() >= int64(a.cfg.MaxInFlight/2) {
			depth = 0 // prefetch only from spare node-wide capacity
		}
		held, oldest := w.held(max(depth/2, 1))
		running := int(w.inflight.Load())
		want := min(limit+depth-running-held, maxFetch)
		if want > 0 && (running+held < limit || want >= max(depth/2, 1)) {
			if busy || held > 0 {
				busy, err = a.fetchReady(ctx, w, cons, want)
			} else {
				busy, err = a.fetchOne(ctx, w, cons)
			}
			if err != nil {
				if ctx.Err() == nil {
					a.log.Warn("fetch async events", "tenant", w.tenant, "function", w.function, "error", err)
				}
				return // discovery starts it again if the consumer has events
			}
			if busy || held == 0 {
				continue
			}
		}
		var stale <-chan time.Time
		if held > 0 {
			timer.Reset(max(time.Until(oldest.Add(a.tune.holdMax)), 0))
			stale = timer.C
		}
		select {
		case <-ctx.Done():
		case <-w.freed:
		case <-stale:
			a.handBack(w, a.tune.holdMax)
		}
		timer.Stop()
	}
}

// functionLimit is a function's cap of attempts at once on this node: its
// instances times their concurrency.
func (a *Async) functionLimit(ctx context.Context, w *worker) int {
	f, err := a.function(ctx, w.tenant, w.function)
	if err != nil {
		return 1
	}
	return max(f.Scale.Max*f.Concurrency, 1)
}

// fetchReady reserves up to n node-wide slots and fetches as many events
// as are ready, without waiting; it starts those the function has room
// for and keeps the others. It reports whether any came.
func (a *Async) fetchReady(ctx context.Context, w *worker, cons jetstream.Consumer, n int) (bool, error) {
	if err := a.sem.Acquire(ctx, 1); err != nil {
		return false, nil
	}
	slots := 1
	for slots < n && a.sem.TryAcquire(1) {
		slots++
	}
	batch, err := cons.FetchNoWait(slots)
	if err != nil {
		a.sem.Release(int64(slots))
		return false, err
	}
	used := 0
	now := time.Now()
	for msg := range batch.Messages() {
		used++
		a.keep.add(msg)
		w.hold(msg, now)
	}
	if unused := slots - used; unused > 0 {
		a.sem.Release(int64(unused))
	}
	if used > 0 {
		w.lastActive.Store(now.UnixNano())
		a.dispatch(ctx, w, int(w.limit.Load()))
	}
	return used > 0, batch.Error()
}

// fetchOne waits up to probeWait for one event and, once it has a
// node-wide slot, starts it if the function has room or else holds it. It
// reports whether an event came.
func (a *Async) fetchOne(ctx context.Context, w *worker, cons jetstream.Consumer) (bool, error) {
	fctx, cancel := context.WithTimeout(ctx, a.tune.probeWait)
	defer cancel()
	batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
	if err != nil {
		return false, err
	}
	got := false
	for msg := range batch.Messages() {
		got = true
		w.lastActive.Store(time.Now().UnixNano())
		if a.acquireHolding(ctx, msg) {
			a.keep.add(msg)
			w.hold(msg, time.Now())
			a.dispatch(ctx, w, int(w.limit.Load()))
		}
	}
	if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return got, err
	}
	return got, nil
}

// acquireHolding takes a node-wide slot for a fetched event, keeping the
// event alive while it waits; after holdMax it hands the event back
// (delivered again after deferDelay, not counted as an attempt).
func (a *Async) acquireHolding(ctx context.Context, msg jetstream.Msg) bool {
	if a.sem.TryAcquire(1) {
		return true
	}
	a.keep.add(msg)
	hctx, cancel := context.WithTimeout(ctx, a.tune.holdMax)
	err := a.sem.Acquire(hctx, 1)
	cancel()
	a.keep.remove(msg)
	if err == nil {
		return true
	}
	if ctx.Err() == nil {
		a.stat.deferred.Add(1)
		_ = msg.NakWithDelay(deferDelay)
	}
	return false
}

// dispatch starts held events while the function has room for them.
func (a *Async) dispatch(ctx context.Context, w *worker, limit int) {
	for ctx.Err() == nil && int(w.inflight.Load()) < limit {
		msg := w.take()
		if msg == nil {
			return
		}
		a.start(ctx, w, msg)
	}
}

// handBack returns the events held longer than age (all of them for 0)
// to the stream, without counting an attempt, so that any node may take
// them; it then stops prefetching until attempts are short again.
func (a *Async) handBack(w *worker, age time.Duration) {
	msgs := w.takeOlder(time.Now().Add(-age))
	if len(msgs) == 0 {
		return
	}
	if age > 0 {
		w.avgAttempt.Store(int64(max(prefetchBelow, age)))
	}
	for _, msg := range msgs {
		a.keep.remove(msg)
		if age > 0 {
			a.stat.deferred.Add(1)
		}
		_ = msg.Nak()
	}
	a.sem.Release(int64(len(msgs)))
}

// start runs attempts in a new goroutine, msg first; it owns one
// node-wide slot and one of the function's slots. When an attempt ends,
// the goroutine runs the next held event, if any, in the same slots.
func (a *Async) start(ctx context.Context, w *worker, msg jetstream.Msg) {
	w.inflight.Add(1)
	a.stat.inFlight.Add(1)
	w.wg.Go(func() {
		for msg != nil {
			if d, ok := a.handle(ctx, msg); ok {
				w.observe(d)
			}
			msg = a.next(ctx, w)
		}
		a.stat.inFlight.Add(-1)
		w.inflight.Add(-1)
		a.sem.Release(1)
		w.signal()
	})
}

// next takes a held event for an attempt that ended, when the function
// still has room for it (its limit may have dropped); the held event's
// node-wide slot is released, since the ending attempt's is reused.
func (a *Async) next(ctx context.Context, w *worker) jetstream.Msg {
	if ctx.Err() != nil || w.inflight.Load() > w.limit.Load() {
		return nil
	}
	msg := w.take()
	if msg != nil {
		a.sem.Release(1)
	}
	return msg
}

// heldMsg is a fetched event waiting for a slot of its function.
type heldMsg struct {
	msg jetstream.Msg
	at  time.Time
}

// hold queues a fetched event that owns a node-wide slot.
func (w *worker) hold(msg jetstream.Msg, at time.Time) {
	w.mu.Lock()
	if w.head > 0 && len(w.ready) == cap(w.ready) {
		n := copy(w.ready, w.ready[w.head:]) // slide down rather than grow
		clear(w.ready[n:])
		w.ready, w.head = w.ready[:n], 0
	}
	w.ready = append(w.ready, heldMsg{msg: msg, at: at})
	w.mu.Unlock()
}

// take removes the oldest held event, or returns nil. It wakes the pull
// loop when few are left.
func (w *worker) take() jetstream.Msg {
	w.mu.Lock()
	if w.head == len(w.ready) {
		w.mu.Unlock()
		return nil
	}
	msg := w.ready[w.head].msg
	w.ready[w.head] = heldMsg{}
	w.head++
	left := len(w.ready) - w.head
	if left == 0 {
		w.ready, w.head = w.ready[:0], 0 // reuse the array
	}
	low := left < w.lowWater
	w.mu.Unlock()
	if low {
		w.signal()
	}
	return msg
}

// takeOlder removes the held events fetched before t.
func (w *worker) takeOlder(t time.Time) []jetstream.Msg {
	w.mu.Lock()
	defer w.mu.Unlock()
	var msgs []jetstream.Msg
	for w.head < len(w.ready) && !w.ready[w.head].at.After(t) {
		msgs = append(msgs, w.ready[w.head].msg)
		w.ready[w.head] = heldMsg{}
		w.head++
	}
	if w.head == len(w.ready) {
		w.ready, w.head = w.ready[:0], 0
	}
	return msgs
}

// held returns how many events are held and when the oldest was
// fetched, and sets below how many a take wakes the pull loop.
func (w *worker) held(lowWater int) (int, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lowWater = lowWater
	if w.head == len(w.ready) {
		return 0, time.Time{}
	}
	return len(w.ready) - w.head, w.ready[w.head].at
}

// signal wakes the pull loop.
func (w *worker) signal() {
	select {
	case w.freed <- struct{}{}:
	default:
	}
}

// observe folds an attempt's duration into the moving average.
func (w *worker) observe(d time.Duration) {
	for {
		old, avg := w.avgAttempt.Load(), int64(d)
		if old >= 0 {
			avg = old + (avg-old)/8
		}
		if w.avgAttempt.CompareAndSwap(old, avg) {
			return
		}
	}
}

// depth is how many events to hold beyond limit: as many as the function
// runs at once (at most maxPrefetch) while its attempts are short, so that
// the next is at hand when one ends; none while they are long or unknown,
// since held events wait and other nodes might run them sooner. (The pull
// loop also holds none while the node runs half its MaxInFlight: held
// events keep node-wide slots other functions could use.)
func (w *worker) depth(limit int) int {
	if avg := w.avgAttempt.Load(); avg < 0 || time.Duration(avg) >= prefetchBelow {
		return 0
	}
	return min(limit, maxPrefetch)
}

// parseFilter reads tenant and function from async.<tenant>.<function>.
func parseFilter(subj string) (tenant, function string, ok bool) {
	rest, ok := strings.CutPrefix(subj, subjectPrefix)
	if !ok {
		return "", "", false
	}
	tenant, function, ok = strings.Cut(rest, ".")
	if !ok || !validTenant(tenant) || strings.Contains(function, ".") || function == "" {
		return "", "", false
	}
	return tenant, function, true
}

// keeper keeps held and running events alive with InProgress, so another
// node does not take them while AckWait passes. An event is removed before
// it is settled, under the same lock as the InProgress calls, so no
// InProgress follows its Ack or Nak.
type keeper struct {
	mu   sync.Mutex
	msgs map[jetstream.Msg]struct{}
}

func (k *keeper) add(m jetstream.Msg) {
	k.mu.Lock()
	if k.msgs == nil {
		k.msgs = map[jetstream.Msg]struct{}{}
	}
	k.msgs[m] = struct{}{}
	k.mu.Unlock()
}

func (k *keeper) remove(m jetstream.Msg) {
	k.mu.Lock()
	delete(k.msgs, m)
	k.mu.Unlock()
}

func (k *keeper) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		k.mu.Lock()
		for m := range k.msgs {
			_ = m.InProgress()
		}
		k.mu.Unlock()
	}
}

package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"aloft/internal/fn"
)

const (
	// longPoll is how long one pull request of a trigger waits on the
	// server; the pull then asks again. A stopped loop's last request is
	// gone from the consumer within it.
	longPoll = 10 * time.Second
	// maxPrefetch bounds the messages a loop fetches ahead of its batches.
	maxPrefetch = 1000
	// minAckPending is the least number of delivered, unacknowledged
	// messages (running, or waiting out a retry backoff) a trigger's
	// consumer allows across all nodes.
	minAckPending = 10_000
	// setupTimeout bounds one call to the store while a loop sets up.
	setupTimeout = 10 * time.Second
	// firstRetry and lastRetry bound the pause after a failed fetch or
	// setup.
	firstRetry = 100 * time.Millisecond
	lastRetry  = 30 * time.Second
)

// spec is one enabled queue trigger with its defaults filled in; two specs
// are equal when nothing about the trigger changed.
type spec struct {
	tenant, function string
	index            int
	queue, qualifier string
	batchSize        int
	window           time.Duration
	concurrency      int
	retries          int
}

// triggerKey names a trigger: its function and its index in the
// function's events.
type triggerKey struct {
	tenant, function string
	index            int
}

func (s spec) key() triggerKey { return triggerKey{s.tenant, s.function, s.index} }

func specOf(tenant, function string, ie fn.IndexedEvent) spec {
	e := ie.Event
	s := spec{
		tenant: tenant, function: function, index: ie.Index,
		queue: e.Queue, qualifier: e.Qualifier,
		batchSize: e.Batch(), window: e.BatchWindow.D(), concurrency: e.Parallel(),
		retries: max(e.RetryCount(), 0),
	}
	s.window = max(s.window, 0)
	return s
}

// SetTriggers replaces a function's queue triggers with the enabled queue
// events among events; nil or none removes them. Run starts and stops the
// consumer loops; batches in flight on a removed or changed trigger finish.
// Calling it again for an unchanged function makes its loops re-read the
// function, so a changed timeout reaches the consumer's ack wait.
// SetTriggers assumes no two functions consume one queue.
func (q *Queues) SetTriggers(tenant, function string, events []fn.IndexedEvent) {
	var specs []spec
	for _, ie := range events {
		if ie.Event.Kind() != fn.EventQueue || ie.Event.Disabled {
			continue
		}
		specs = append(specs, specOf(tenant, function, ie))
	}
	key := tenant + "/" + function
	q.mu.Lock()
	if len(specs) == 0 {
		delete(q.desired, key)
	} else {
		q.desired[key] = specs
	}
	q.dirty[key] = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Run runs the queue triggers until ctx ends, following SetTriggers; then
// it stops fetching, waits for the batches in flight (whose invocations end
// with ctx, leaving their messages to be redelivered) and returns nil. It
// returns an error only when it is already running.
func (q *Queues) Run(ctx context.Context) error {
	q.mu.Lock()
	if q.running {
		q.mu.Unlock()
		return errors.New("queues: already running")
	}
	q.running = true
	q.mu.Unlock()
	var wg sync.WaitGroup
	loops := map[triggerKey]*loop{}
	defer func() {
		for _, l := range loops {
			l.cancel()
		}
		wg.Wait()
		q.mu.Lock()
		q.running = false
		q.mu.Unlock()
	}()
	for {
		q.reconcile(ctx, loops, &wg)
		select {
		case <-ctx.Done():
			return nil
		case <-q.wake:
		}
	}
}

// reconcile starts, stops and refreshes loops to match the desired
// triggers.
func (q *Queues) reconcile(ctx context.Context, loops map[triggerKey]*loop, wg *sync.WaitGroup) {
	q.mu.Lock()
	want := map[triggerKey]spec{}
	for _, specs := range q.desired {
		for _, s := range specs {
			want[s.key()] = s
		}
	}
	dirty := q.dirty
	q.dirty = map[string]bool{}
	q.mu.Unlock()
	for k, l := range loops {
		if s, ok := want[k]; ok && s == l.spec {
			if dirty[k.tenant+"/"+k.function] {
				l.poke()
			}
			continue
		}
		l.cancel()
		delete(loops, k)
	}
	for k, s := range want {
		if _, ok := loops[k]; ok {
			continue
		}
		lctx, cancel := context.WithCancel(ctx)
		l := &loop{
			q: q, spec: s, cancel: cancel, poked: make(chan struct{}, 1),
			source: "queue:" + s.queue,
			log: q.log.With("tenant", s.tenant, "function", s.function,
				"trigger", "queue:"+s.queue),
		}
		loops[k] = l
		wg.Go(func() { l.run(ctx, lctx, wg) })
	}
}

// loop runs one trigger on this node: it fetches batches and hands each to
// a goroutine, at most spec.concurrency at once.
type loop struct {
	q      *Queues
	spec   spec
	cancel context.CancelFunc
	poked  chan struct{} // cap 1: re-read the function
	source string        // "queue:<name>"
	log    *slog.Logger
}

// settings is what a loop read from the function.
type settings struct {
	runtime fn.Runtime
	ackWait time.Duration
}

func (l *loop) poke() {
	select {
	case l.poked <- struct{}{}:
	default:
	}
}

// run consumes until ctx (the loop's) ends. Batches run under runCtx
// (Run's context), so a stopped loop's batches finish.
func (l *loop) run(runCtx, ctx context.Context, wg *sync.WaitGroup) {
	w := &workers{sem: make(chan struct{}, l.spec.concurrency), jobs: make(chan job)}
	for range l.spec.concurrency {
		wg.Go(func() {
			for j := range w.jobs {
				l.handle(runCtx, j.set, j.msgs)
				<-w.sem
			}
		})
	}
	defer close(w.jobs)
	pause := firstRetry
	for ctx.Err() == nil {
		select {
		case <-l.poked: // setup reads the function anyway
		default:
		}
		cons, set, err := l.setup(ctx)
		if err != nil {
			l.log.Warn("queue trigger setup", "error", err)
			pause = sleep(ctx, pause)
			continue
		}
		pause = firstRetry
		if err := l.consume(runCtx, ctx, cons, set, w); err != nil && ctx.Err() == nil {
			l.log.Warn("queue consume", "error", err)
			pause = sleep(ctx, pause)
		}
	}
}

// sleep waits d or until ctx ends and returns the next, longer pause.
func sleep(ctx context.Context, d time.Duration) time.Duration {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return min(2*d, lastRetry)
}

// setup reads the function and creates or updates the queue's consumer
// with an ack wait of the function's timeout plus the margin.
func (l *loop) setup(ctx context.Context) (jetstream.Consumer, settings, error) {
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	s := l.spec
	// The qualified version's runtime and timeout: they decide the event's
	// shape and how long a message stays invisible.
	f, err := l.q.cfg.Functions.Resolve(ctx, s.tenant, s.function, s.qualifier)
	if err != nil {
		return nil, settings{}, fmt.Errorf("read function %q (qualifier %q): %w", s.function, s.qualifier, err)
	}
	timeout := f.Timeout.D()
	if timeout <= 0 {
		timeout = fn.DefaultTimeout
	}
	set := settings{runtime: f.Runtime, ackWait: timeout + l.q.cfg.VisibilityMargin}
	cons, err := l.q.js.CreateOrUpdateConsumer(ctx, Stream, jetstream.ConsumerConfig{
		Durable:       consumerName(s.tenant, s.queue),
		Description:   fmt.Sprintf("Aloft queue trigger of %s/%s", s.tenant, s.queue),
		FilterSubject: subjectOf(s.tenant, s.queue),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       set.ackWait,
		MaxDeliver:    -1,
		MaxAckPending: max(minAckPending, 4*s.batchSize*s.concurrency),
	})
	if err != nil {
		return nil, settings{}, fmt.Errorf("consumer of queue %q: %w", s.queue, err)
	}
	return cons, set, nil
}

// workers run a loop's batches, at most spec.concurrency at once: a
// batch takes a slot in sem before it is collected and its worker gives
// the slot back once it ran, so a batch handed to jobs finds a worker free
// (or about to be). The workers outlive no loop: run closes jobs.
type workers struct {
	sem  chan struct{}
	jobs chan job
}

// job is one batch for a worker and the function settings it runs with.
type job struct {
	set  settings
	msgs []fetched
}

// fetched is a delivered message, its metadata (nil when it has none)
// and when it reached this node.
type fetched struct {
	msg jetstream.Msg
	md  *jetstream.MsgMetadata
	at  time.Time
}

// prefetch is how many messages a loop asks JetStream for ahead of its
// batches: a batch per slot, so that a slot that frees finds its next
// batch already here, at most maxPrefetch (but always a batch).
func prefetch(s spec) int {
	return max(s.batchSize, min(s.batchSize*s.concurrency, maxPrefetch))
}

// consume pulls cons continuously and hands each batch to a worker until
// ctx (the loop's) ends or the pull fails. A poke re-reads the function
// without stopping the pull.
// When ctx ends it stops pulling and still runs the messages it fetched
// (they were delivered to this node), unless runCtx ended too: then it
// gives them back (Nak) for another node to run now. After a failure it
// gives them back and returns the error.
func (l *loop) consume(runCtx, ctx context.Context, cons jetstream.Consumer, set settings, w *workers) error {
	s := l.spec
	f := &feed{c: make(chan fetched, s.batchSize), quit: make(chan struct{})}
	defer f.close()
	failed := make(chan error, 1)
	cc, err := cons.Consume(func(m jetstream.Msg) { f.put(runCtx, m) },
		jetstream.PullMaxMessages(prefetch(s)), jetstream.PullExpiry(longPoll),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrConsumerNotFound) ||
				errors.Is(err, jetstream.ErrConsumerDeleted) {
				select {
				case failed <- err:
				default:
				}
			}
		}))
	if err != nil {
		return fmt.Errorf("consume queue %q: %w", s.queue, err)
	}
	closed := cc.Closed()
	fail := func(err error) error {
		cc.Stop()
		f.giveBack()
		return err
	}
	for {
		select {
		case w.sem <- struct{}{}:
		case <-ctx.Done():
			return l.drain(runCtx, cc, set, f, w)
		case <-l.poked:
			if _, set, err = l.setup(ctx); err != nil {
				return fail(err)
			}
			continue
		case err := <-failed:
			return fail(err)
		case <-closed:
			return fail(errors.New("the pull stopped"))
		}
		select {
		case first := <-f.c:
			w.jobs <- job{set, l.batch(ctx, first, f.c)}
			continue
		case <-ctx.Done():
			<-w.sem
			return l.drain(runCtx, cc, set, f, w)
		case <-l.poked:
			<-w.sem
			if _, set, err = l.setup(ctx); err != nil {
				return fail(err)
			}
		case err := <-failed:
			<-w.sem
			return fail(err)
		case <-closed:
			<-w.sem
			return fail(errors.New("the pull stopped"))
		}
	}
}

// drain stops pulling and runs the messages already fetched, or gives
// them back once runCtx ends.
func (l *loop) drain(runCtx context.Context, cc jetstream.ConsumeContext, set settings, f *feed, w *workers) error {
	closed := cc.Closed()
	cc.Drain()
	for {
		var first fetched
		select {
		case first = <-f.c:
		case <-closed:
			select {
			case first = <-f.c:
			default:
				return nil // the pull is drained: nothing more comes
			}
		case <-runCtx.Done():
			f.giveBack()
			return nil
		}
		select {
		case w.sem <- struct{}{}:
			w.jobs <- job{set, l.batch(runCtx, first, f.c)} // handle gives it back if runCtx ended
		case <-runCtx.Done():
			_ = first.msg.Nak()
			f.giveBack()
			return nil
		}
	}
}

// feed carries the messages a pull delivers to the loop that batches
// them.
type feed struct {
	c    chan fetched
	quit chan struct{} // closed once the loop no longer takes from c
	mu   sync.RWMutex  // read-held while a delivery is being put on c
	once sync.Once
}

// put hands a delivered message to the loop, or gives it back when the
// loop quit or runCtx ended.
func (f *feed) put(runCtx context.Context, m jetstream.Msg) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	md, _ := m.Metadata() // nil: handle gives it back
	select {
	case <-f.quit:
		_ = m.Nak()
		return
	default:
	}
	select {
	case f.c <- fetched{msg: m, md: md, at: time.Now()}:
	case <-f.quit:
		_ = m.Nak()
	case <-runCtx.Done():
		_ = m.Nak()
	}
}

func (f *feed) close() { f.once.Do(func() { close(f.quit) }) }

// giveBack quits and naks the messages left on the feed, those a put in
// progress still leaves there included: not started, another consumer may
// have them now.
func (f *feed) giveBack() {
	f.close()
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		select {
		case m := <-f.c:
			_ = m.msg.Nak()
		default:
			return
		}
	}
}

// fillWait bounds how long a batch without a window waits for messages
// JetStream reported waiting (the pull brings them, unless another node's
// pull gets them first). A variable so that a test on a loaded machine can
// lengthen it.
var fillWait = 5 * time.Millisecond

// batch returns first and up to batchSize-1 more messages: those already
// fetched and, with a batch window, those arriving until the window
// (counted from first's arrival) ends or ctx ends. Without a window it
// still waits up to fillWait for the messages JetStream reported waiting
// behind the last one (they are on their way), so a backlog runs in full
// batches.
func (l *loop) batch(ctx context.Context, first fetched, feed chan fetched) []fetched {
	n := l.spec.batchSize
	msgs := make([]fetched, 1, n)
	msgs[0] = first
	var window <-chan time.Time
	if d := l.spec.window - time.Since(first.at); d >= time.Millisecond {
		t := time.NewTimer(d)
		defer t.Stop()
		window = t.C
	}
	for len(msgs) < n {
		select {
		case f := <-feed:
			msgs = append(msgs, f)
			continue
		default:
		}
		if window == nil {
			if last := msgs[len(msgs)-1]; last.md == nil || last.md.NumPending == 0 {
				break
			}
			t := time.NewTimer(fillWait)
			defer t.Stop()
			window = t.C
		}
		select {
		case f := <-feed:
			msgs = append(msgs, f)
			continue
		case <-window:
		case <-ctx.Done():
		}
		break
	}
	return msgs
}

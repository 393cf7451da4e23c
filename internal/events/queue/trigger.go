package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"aloft/internal/fn"
)

const (
	// longPoll bounds one wait for a trigger's first message; the loop then
	// asks again. Short enough that a changed function timeout reaches the
	// consumer soon, long enough that an idle trigger costs nothing.
	longPoll = 10 * time.Second
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
		batchSize: e.BatchSize, window: e.BatchWindow.D(), concurrency: e.Concurrency,
		retries: max(e.RetryCount(), 0),
	}
	if s.batchSize <= 0 {
		s.batchSize = fn.DefaultBatchSize
	}
	if s.concurrency <= 0 {
		s.concurrency = fn.DefaultTriggerConc
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
			maxDeliveries: s.retries + 1,
			source:        "queue:" + s.queue,
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
	q             *Queues
	spec          spec
	cancel        context.CancelFunc
	poked         chan struct{} // cap 1: re-read the function
	maxDeliveries int
	source        string // "queue:<name>"
	log           *slog.Logger
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

// run fetches until ctx (the loop's) ends. Batches run under runCtx (Run's
// context), so a stopped loop's batches finish.
func (l *loop) run(runCtx, ctx context.Context, wg *sync.WaitGroup) {
	sem := make(chan struct{}, l.spec.concurrency)
	var cons jetstream.Consumer
	var set settings
	pause := firstRetry
	for ctx.Err() == nil {
		select {
		case <-l.poked:
			cons = nil
		default:
		}
		if cons == nil {
			var err error
			if cons, set, err = l.setup(ctx); err != nil {
				l.log.Warn("queue trigger setup", "error", err)
				pause = sleep(ctx, pause)
				continue
			}
			pause = firstRetry
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		msgs, err := l.fetch(ctx, cons)
		switch {
		case ctx.Err() != nil:
			<-sem
			for _, m := range msgs {
				_ = m.Nak() // not started: let another consumer have it now
			}
			return
		case err != nil:
			<-sem
			l.log.Warn("queue fetch", "error", err)
			cons = nil // the consumer may be gone: set it up again
			pause = sleep(ctx, pause)
			continue
		case len(msgs) == 0:
			<-sem
			continue
		}
		pause = firstRetry
		wg.Go(func() {
			defer func() { <-sem }()
			l.handle(runCtx, set, msgs)
		})
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
	f, _, err := l.q.cfg.Functions.GetFunction(ctx, s.tenant, s.function)
	if err != nil {
		return nil, settings{}, fmt.Errorf("read function %q: %w", s.function, err)
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

// fetch returns the next batch: up to batchSize messages, waiting at most
// the batch window for more once one is there. With no window it returns
// what is available, but waits (in long polls) for at least one message.
// It returns no messages and no error when a long poll ends empty.
func (l *loop) fetch(ctx context.Context, cons jetstream.Consumer) ([]jetstream.Msg, error) {
	n, window := l.spec.batchSize, l.spec.window
	b, err := cons.FetchNoWait(n)
	if err != nil {
		return nil, err
	}
	msgs, err := collect(b, nil)
	if err != nil || len(msgs) == n || (len(msgs) > 0 && window == 0) {
		return msgs, err
	}
	if len(msgs) == 0 {
		if msgs, err = fetchWait(ctx, cons, 1, longPoll, nil); err != nil || len(msgs) == 0 {
			return msgs, err
		}
		if n == 1 {
			return msgs, nil
		}
		if window == 0 {
			if b, err = cons.FetchNoWait(n - 1); err != nil {
				return msgs, err
			}
			return collect(b, msgs)
		}
	}
	return fetchWait(ctx, cons, n-len(msgs), window, msgs)
}

// fetchWait fetches up to n messages onto dst, waiting at most d.
func fetchWait(ctx context.Context, cons jetstream.Consumer, n int, d time.Duration, dst []jetstream.Msg) ([]jetstream.Msg, error) {
	if d < time.Millisecond {
		return dst, nil
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	b, err := cons.Fetch(n, jetstream.FetchContext(wctx))
	if err != nil {
		return dst, err
	}
	msgs, err := collect(b, dst)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		err = nil // our own wait ended
	}
	return msgs, err
}

// collect appends b's messages to dst.
func collect(b jetstream.MessageBatch, dst []jetstream.Msg) ([]jetstream.Msg, error) {
	for m := range b.Messages() {
		dst = append(dst, m)
	}
	return dst, b.Error()
}

// Package events runs everything that invokes functions other than an HTTP
// request: asynchronous invocations (subpackage async), schedules
// (schedule), queues (queue) and raw NATS subjects (subject). It owns their
// streams and loops, keeps every trigger in step with the functions'
// configurations as they change in the store (on every node), and gives
// the API one place to validate events, enqueue, list invocations, read and
// redrive dead letters, and list triggers.
//
// Everything durable lives in JetStream: the ASYNC work queue, the QUEUES
// stream, the DLQ and INVOCATIONS streams, and the schedules' claims in KV.
// Any node pulls work it has capacity for; a schedule fires once per tick
// across nodes.
package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"aloft/internal/events/async"
	"aloft/internal/events/deadletter"
	"aloft/internal/events/queue"
	"aloft/internal/events/records"
	"aloft/internal/events/schedule"
	"aloft/internal/events/subject"
	"aloft/internal/fn"
	"aloft/internal/invoke"
	"aloft/internal/store"
)

// Invoker runs one invocation; *invoke.Invoker is one.
type Invoker interface {
	Invoke(ctx context.Context, req invoke.Request) (*invoke.Response, error)
	Runtime(ctx context.Context, tenant, name, qualifier string) (fn.Runtime, error)
}

// Config configures Events. Store and Invoker are required.
type Config struct {
	Store   *store.Store
	Invoker Invoker
	Logger  *slog.Logger
	NodeID  string
	// Replicas of the event streams (default 1).
	Replicas int
	// Region and Account appear in event shapes (default "local" and
	// "000000000000").
	Region, Account string
	// RetryBase is the first backoff of a failed async event or queue
	// message (default 10s; doubles each attempt up to 5 minutes).
	RetryBase time.Duration
	// CatchUp is how old a tick missed while no node ran may be and still
	// fire once at start (default 1h).
	CatchUp time.Duration
	// MaxInFlight bounds the async invocations running at once on this
	// node (default 256).
	MaxInFlight int
	// MaxAsyncPayload bounds an async payload (default 1 MiB).
	MaxAsyncPayload int64
}

// Events is the event subsystem of one node.
type Events struct {
	cfg   Config
	log   *slog.Logger
	store *store.Store

	dead      *deadletter.Store
	records   *records.Store
	async     *async.Async
	queues    *queue.Queues
	scheduler *schedule.Scheduler
	subjects  *subject.Subjects

	mu      sync.Mutex
	applied map[string]string // tenant/function → the revision whose events are applied
}

// New opens the event streams and buckets and builds the components; Run
// starts them. It fails when JetStream refuses a stream or bucket.
func New(ctx context.Context, cfg Config) (*Events, error) {
	if cfg.Store == nil || cfg.Invoker == nil {
		return nil, errors.New("events: a store and an invoker are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Region == "" {
		cfg.Region = "local"
	}
	if cfg.Account == "" {
		cfg.Account = "000000000000"
	}
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	e := &Events{cfg: cfg, log: cfg.Logger, store: cfg.Store, applied: map[string]string{}}
	js := cfg.Store.JetStream()
	var err error
	if e.dead, err = deadletter.Open(ctx, js, cfg.Replicas); err != nil {
		return nil, err
	}
	if e.records, err = records.Open(ctx, js, cfg.Replicas, cfg.Logger.With("component", "records")); err != nil {
		return nil, err
	}
	e.queues, err = queue.New(ctx, queue.Config{
		JS: js, Invoker: cfg.Invoker, DeadLetters: e.dead, Records: e.records, Functions: cfg.Store,
		Logger: cfg.Logger.With("component", "queue"), NodeID: cfg.NodeID, Replicas: cfg.Replicas,
		RetryBase: cfg.RetryBase, Region: cfg.Region, Account: cfg.Account,
	})
	if err != nil {
		_ = e.records.Close()
		return nil, err
	}
	e.async, err = async.New(async.Config{
		JS: js, Functions: cfg.Store, Invoker: cfg.Invoker, Sender: e.queues, DeadLetters: e.dead,
		Records: e.records, Logger: cfg.Logger.With("component", "async"), NodeID: cfg.NodeID,
		Replicas: cfg.Replicas, MaxPayload: cfg.MaxAsyncPayload, MaxInFlight: cfg.MaxInFlight,
		RetryBase: cfg.RetryBase,
	})
	if err != nil {
		_ = e.records.Close()
		return nil, err
	}
	kv, err := schedule.OpenBucket(ctx, js, cfg.Replicas)
	if err != nil {
		_ = e.records.Close()
		return nil, err
	}
	e.scheduler, err = schedule.New(schedule.Config{
		KV: kv, Fire: e.fire, CatchUp: cfg.CatchUp, NodeID: cfg.NodeID,
		Logger: cfg.Logger.With("component", "schedule"),
	})
	if err != nil {
		_ = e.records.Close()
		return nil, err
	}
	e.subjects = subject.New(subject.Config{
		Conn: cfg.Store.Conn(), Invoker: cfg.Invoker, Enqueuer: enqueuer{e},
		Logger: cfg.Logger.With("component", "subject"),
	})
	return e, nil
}

// Run applies every function's events, starts the components and follows
// the store until ctx ends; then it stops them and waits for them. It
// returns nil once ctx ends, even when that cut a component's set-up short.
func (e *Events) Run(ctx context.Context) error {
	err := e.run(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (e *Events) run(ctx context.Context) error {
	defer e.records.Close()
	changes, err := e.store.Watch(ctx)
	if err != nil {
		return fmt.Errorf("events: watch functions: %w", err)
	}
	if err := e.applyAll(ctx); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return e.async.Run(gctx) })
	g.Go(func() error { return e.queues.Run(gctx) })
	g.Go(func() error { return e.scheduler.Run(gctx) })
	g.Go(func() error { return e.subjects.Run(gctx) })
	g.Go(func() error {
		for {
			select {
			case <-gctx.Done():
				return nil
			case c, ok := <-changes:
				if !ok {
					return nil
				}
				if c.Kind == "function" {
					e.Changed(gctx, c.Tenant, c.Function)
				}
			}
		}
	})
	return g.Wait()
}

// applyAll applies the events of every stored function.
func (e *Events) applyAll(ctx context.Context) error {
	fs, err := e.store.AllFunctions(ctx)
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	for _, f := range fs {
		e.apply(f.Tenant, f.Name, f)
	}
	return nil
}

// Changed re-reads a function and applies its events on this node at once
// (the API calls it after a change; the store's watch reaches every other
// node). A function that is gone has its triggers removed.
func (e *Events) Changed(ctx context.Context, tenant, name string) {
	e.async.Forget(tenant, name)
	f, _, err := e.store.GetFunction(ctx, tenant, name)
	switch {
	case fn.IsNotFound(err):
		e.apply(tenant, name, nil)
	case err != nil:
		e.log.Warn("read changed function", "tenant", tenant, "function", name, "error", err)
	default:
		e.apply(tenant, name, f)
	}
}

// apply hands f's events (none when f is nil) to each component, once per
// revision.
func (e *Events) apply(tenant, name string, f *fn.Function) {
	key := tenant + "/" + name
	rev := ""
	var cfg fn.Config
	if f != nil {
		rev, cfg = f.Revision, f.Config
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if old, ok := e.applied[key]; ok && old == rev {
		return
	}
	if err := e.scheduler.Set(tenant, name, cfg.EventsOf(fn.EventSchedule)); err != nil {
		// Validated at deploy; a stored config that no longer parses is
		// logged, and its other triggers still run.
		e.log.Error("apply schedules", "tenant", tenant, "function", name, "error", err)
	}
	e.queues.SetTriggers(tenant, name, cfg.EventsOf(fn.EventQueue))
	e.subjects.Set(tenant, name, cfg.EventsOf(fn.EventSubject))
	if f == nil {
		delete(e.applied, key)
		return
	}
	e.applied[key] = rev
}

// fire hands a schedule tick to the async queue: durable, retried and
// dead-lettered like any async event, and idempotent on the tick's id so a
// tick fired twice (a node taking over a claim) runs once.
func (e *Events) fire(ctx context.Context, t schedule.Tick) error {
	qualifier := t.Event.Qualifier
	rt, err := e.cfg.Invoker.Runtime(ctx, t.Tenant, t.Function, qualifier)
	if err != nil {
		if fn.IsNotFound(err) {
			e.log.Warn("schedule of a missing function", "tenant", t.Tenant, "function", t.Function, "error", err)
			return nil
		}
		return err
	}
	ev := async.Event{Tenant: t.Tenant, Function: t.Function, Qualifier: qualifier,
		IdempotencyKey: "schedule/" + t.ID, Trigger: "schedule"}
	if rt.EventStyle() {
		ev.Payload = schedule.EventBridgeEvent(t, e.cfg.Region, e.cfg.Account)
	} else {
		ev.Headers = schedule.CloudEventHeaders(t)
		ev.Payload = []byte("{}")
		if len(t.Event.Input) > 0 {
			ev.Payload = t.Event.Input
		}
	}
	_, _, err = e.async.Enqueue(ctx, ev)
	return err
}

// enqueuer adapts the async queue to what subject triggers need.
type enqueuer struct{ e *Events }

func (q enqueuer) Enqueue(ctx context.Context, tenant, function, qualifier string, payload []byte, headers map[string]string, trigger string) (string, error) {
	id, _, err := q.e.async.Enqueue(ctx, async.Event{Tenant: tenant, Function: function, Qualifier: qualifier,
		Payload: payload, Headers: headers, Trigger: trigger})
	return id, err
}

// Enqueue accepts an async invocation durably; see async.Async.Enqueue.
func (e *Events) Enqueue(ctx context.Context, ev async.Event) (id string, duplicate bool, err error) {
	return e.async.Enqueue(ctx, ev)
}

// Queues returns the named queues.
func (e *Events) Queues() *queue.Queues { return e.queues }

// Invocations returns the latest status of a function's recent event
// invocations, newest first.
func (e *Events) Invocations(ctx context.Context, tenant, function string, limit int) ([]records.Summary, error) {
	return e.records.List(ctx, tenant, function, limit)
}

// DeadLetters returns a function's dead-lettered events, oldest first.
func (e *Events) DeadLetters(ctx context.Context, tenant, function string, limit int) ([]*deadletter.Entry, error) {
	return e.dead.List(ctx, tenant, function, limit)
}

// Redrive sends a function's dead-lettered events again — all of them, or
// the one whose id is id — and removes each from the dead letters once it
// is accepted again: async events are enqueued afresh (new age, new
// retries), queue messages go back to their queue. It returns how many were
// redriven, and fn.NotFound when id names no entry.
func (e *Events) Redrive(ctx context.Context, tenant, function, id string) (int, error) {
	entries, err := e.dead.List(ctx, tenant, function, 0)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range entries {
		if id != "" && d.ID != id {
			continue
		}
		if err := e.resend(ctx, d); err != nil {
			return n, err
		}
		if err := e.dead.Remove(ctx, tenant, function, d.Seq); err != nil && !fn.IsNotFound(err) {
			return n, err
		}
		n++
	}
	if id != "" && n == 0 {
		return 0, fn.NotFound("no dead letter with id %q for function %q: list them with `aloft dlq ls %s`", id, function, function)
	}
	return n, nil
}

func (e *Events) resend(ctx context.Context, d *deadletter.Entry) error {
	if q, ok := strings.CutPrefix(d.Source, "queue:"); ok {
		attrs := d.Headers
		_, err := e.queues.Send(ctx, d.Tenant, q, []queue.Message{{Body: string(d.Payload), Attributes: attrs}})
		return err
	}
	_, _, err := e.async.Enqueue(ctx, async.Event{Tenant: d.Tenant, Function: d.Function, Qualifier: d.Qualifier,
		Payload: d.Payload, Headers: d.Headers, Trigger: "redrive"})
	return err
}

// Trigger is one declared event of a function, as `aloft triggers ls`
// shows it.
type Trigger struct {
	Function  string       `json:"function"`
	Index     int          `json:"index"`
	Kind      fn.EventKind `json:"kind"`
	Source    string       `json:"source"`
	Qualifier string       `json:"qualifier,omitempty"`
	Disabled  bool         `json:"disabled,omitempty"`
	// Next is a schedule's next fire time.
	Next *time.Time `json:"next,omitempty"`
	// Options summarizes batch size, window, concurrency, retries, timezone.
	Options string `json:"options,omitempty"`
}

// Triggers lists every declared event of the tenant's functions.
func (e *Events) Triggers(ctx context.Context, tenant string) ([]Trigger, error) {
	fs, err := e.store.ListFunctions(ctx, tenant)
	if err != nil {
		return nil, err
	}
	next := map[string]time.Time{}
	for _, s := range e.scheduler.List(tenant, "") {
		next[fmt.Sprintf("%s/%d", s.Function, s.Index)] = s.Next
	}
	out := []Trigger{}
	for _, f := range fs {
		for i, ev := range f.Events {
			t := Trigger{Function: f.Name, Index: i, Kind: ev.Kind(), Qualifier: ev.Qualifier, Disabled: ev.Disabled}
			switch t.Kind {
			case fn.EventSchedule:
				t.Source = ev.Schedule
				if ev.Timezone != "" {
					t.Options = "timezone " + ev.Timezone
				}
				if n, ok := next[fmt.Sprintf("%s/%d", f.Name, i)]; ok && !n.IsZero() && !ev.Disabled {
					t.Next = &n
				}
			case fn.EventQueue:
				t.Source = ev.Queue
				t.Options = fmt.Sprintf("batch %d, window %s, concurrency %d, retries %d", ev.Batch(), ev.BatchWindow.D(), ev.Parallel(), ev.RetryCount())
			case fn.EventSubject:
				t.Source = ev.Subject
			}
			out = append(out, t)
		}
	}
	return out, nil
}

// Schedules lists the tenant's schedules (function "" for all) with their
// next fire times, soonest first.
func (e *Events) Schedules(tenant, function string) []schedule.Entry {
	list := e.scheduler.List(tenant, function)
	sort.SliceStable(list, func(i, j int) bool {
		a, b := list[i].Next, list[j].Next
		if a.IsZero() != b.IsZero() {
			return !a.IsZero()
		}
		return a.Before(b)
	})
	return list
}

// Validate checks what the store cannot: that schedule expressions parse,
// that queue triggers name existing queues no other function consumes, and
// that queue destinations exist. It reports every problem, joined, as
// fn.Invalid (fn.Conflict when another function already consumes a queue).
func (e *Events) Validate(ctx context.Context, tenant string, c *fn.Config) error {
	var problems []string
	conflict := false
	// The tenant's functions, read once when a queue event needs them.
	var others []*fn.Function
	listed := false
	for i, ev := range c.Events {
		switch ev.Kind() {
		case fn.EventSchedule:
			if _, err := schedule.Parse(ev.Schedule, ev.Timezone); err != nil {
				problems = append(problems, fmt.Sprintf("events[%d]: %s", i, message(err)))
			}
		case fn.EventQueue:
			if _, err := e.queues.Get(ctx, tenant, ev.Queue); err != nil {
				problems = append(problems, fmt.Sprintf("events[%d]: %s", i, message(err)))
				continue
			}
			if !listed {
				fs, err := e.store.ListFunctions(ctx, tenant)
				if err != nil {
					return err
				}
				others, listed = fs, true
			}
			if other := consumerOf(others, ev.Queue, c.Name); other != "" {
				conflict = true
				problems = append(problems, fmt.Sprintf("events[%d]: queue %q already triggers function %q: a queue feeds one function (send to a second queue, or use a destination)", i, ev.Queue, other))
			}
		}
	}
	for _, d := range []struct{ field, v string }{{"onSuccess", c.Async.OnSuccess}, {"onFailure", c.Async.OnFailure}} {
		dest, err := fn.ParseDestination(d.v)
		if d.v == "" || err != nil || dest.Kind != "queue" {
			continue
		}
		if _, err := e.queues.Get(ctx, tenant, dest.Name); err != nil {
			problems = append(problems, fmt.Sprintf("async %s: %s", d.field, message(err)))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	if conflict {
		return fn.Conflict("%s", strings.Join(problems, "; "))
	}
	return fn.Invalid("%s", strings.Join(problems, "; "))
}

// consumerOf returns the function among fs, other than self, whose events
// consume queue, or "".
func consumerOf(fs []*fn.Function, queue, self string) string {
	for _, f := range fs {
		if f.Name == self {
			continue
		}
		for _, ev := range f.Events {
			if ev.Queue == queue {
				return f.Name
			}
		}
	}
	return ""
}

// QueueInUse returns the function whose events consume queue, or "".
func (e *Events) QueueInUse(ctx context.Context, tenant, queue string) (string, error) {
	fs, err := e.store.ListFunctions(ctx, tenant)
	if err != nil {
		return "", err
	}
	return consumerOf(fs, queue, ""), nil
}

func message(err error) string {
	var fe *fn.Error
	if errors.As(err, &fe) {
		return fe.Message
	}
	return err.Error()
}

// Stats are this node's event counters since start.
type Stats struct {
	Async async.Stats `json:"async"`
	Queue queue.Stats `json:"queue"`
}

// Stats returns this node's event counters.
func (e *Events) Stats() Stats {
	return Stats{Async: e.async.Stats(), Queue: e.queues.Stats()}
}

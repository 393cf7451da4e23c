// Package subject lets external producers invoke functions over raw NATS
// subjects. A function's subject event subscribes it, through a queue group
// aloft_<tenant>_<function>_<index>, so each message reaches one node.
//
// A message with a reply subject is a synchronous call: the function runs
// at once and the reply carries its result payload, with the header
// Aloft-Function-Error: Unhandled when the function failed (the payload is
// then its error JSON), or the header Aloft-Error: <message> and no data
// when the call never ran (unknown function, throttled, shutting down).
// At most Config.MaxInFlight synchronous calls run per subscription; one
// more is answered Aloft-Error: throttled at once.
//
// A message without a reply subject is handed to the asynchronous
// invocation queue (trigger "subject") and is durable, retried and
// dead-lettered from then on. Before that it is core NATS: at most once. A
// message that arrives while no node subscribes, that overflows a slow
// subscription, or whose enqueue fails is lost (the enqueue failure is
// logged). Producers that need more send to a queue instead.
//
// http and wasm functions get the message data as the body of a
// binary-mode CloudEvent (ce-source /aloft/subjects/<subscribed subject>,
// ce-type dev.aloft.nats.message, ce-subject the message's subject, a fresh
// ce-id); Lambda-style runtimes get the data itself as the event.
package subject

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"aloft/internal/fn"
	"aloft/internal/invoke"
)

// Headers of a reply.
const (
	HeaderError         = "Aloft-Error"
	HeaderFunctionError = "Aloft-Function-Error"
)

const (
	// DefaultMaxInFlight bounds the synchronous calls, and separately the
	// enqueues, in flight per subscription.
	DefaultMaxInFlight = 64
	// enqueueTimeout bounds one enqueue.
	enqueueTimeout = 10 * time.Second
	firstRetry     = 500 * time.Millisecond
	lastRetry      = 30 * time.Second
)

// Invoker runs one invocation; *invoke.Invoker is one.
type Invoker interface {
	Invoke(ctx context.Context, req invoke.Request) (*invoke.Response, error)
}

// Enqueuer accepts an asynchronous invocation durably and returns its id.
type Enqueuer interface {
	Enqueue(ctx context.Context, tenant, function, qualifier string, payload []byte, headers map[string]string, trigger string) (id string, err error)
}

// Config configures Subjects. Conn, Invoker and Enqueuer are required.
type Config struct {
	Conn     *nats.Conn
	Invoker  Invoker
	Enqueuer Enqueuer
	// Logger receives the package's own log; nil discards.
	Logger *slog.Logger
	// MaxInFlight bounds the synchronous calls, and separately the
	// enqueues, in flight per subscription (default 64).
	MaxInFlight int
}

// Stats counts what Subjects did since New.
type Stats struct {
	// Calls counts synchronous calls that ran; Throttled those refused
	// because the subscription's bound was full.
	Calls, Throttled uint64
	// Enqueued counts messages handed to the async queue; Dropped those
	// whose enqueue failed.
	Enqueued, Dropped uint64
}

// Subjects keeps functions' subject subscriptions. Create it with New, run
// it with Run. Its methods are safe for concurrent use.
type Subjects struct {
	cfg Config
	log *slog.Logger

	calls, throttled, enqueued, dropped atomic.Uint64

	mu       sync.Mutex
	desired  map[string][]spec // tenant/function → its enabled subject events
	running  bool
	stopping bool
	inFlight sync.WaitGroup // calls and enqueues
	wake     chan struct{}  // cap 1: the subscriptions changed
}

// spec is one enabled subject event.
type spec struct {
	tenant, function string
	index            int
	subject          string
	qualifier        string
}

func (s spec) group() string { return fmt.Sprintf("aloft_%s_%s_%d", s.tenant, s.function, s.index) }

// New returns Subjects for cfg; Run subscribes.
func New(cfg Config) *Subjects {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	return &Subjects{cfg: cfg, log: cfg.Logger, desired: map[string][]spec{}, wake: make(chan struct{}, 1)}
}

// Set replaces a function's subject subscriptions with its enabled subject
// events among events; nil or none removes them. Run applies the change:
// calls in flight on a removed subscription finish and answer.
func (s *Subjects) Set(tenant, function string, events []fn.IndexedEvent) {
	var specs []spec
	for _, ie := range events {
		e := ie.Event
		if e.Kind() != fn.EventSubject || e.Disabled {
			continue
		}
		specs = append(specs, spec{tenant: tenant, function: function, index: ie.Index, subject: e.Subject, qualifier: e.Qualifier})
	}
	key := tenant + "/" + function
	s.mu.Lock()
	if len(specs) == 0 {
		delete(s.desired, key)
	} else {
		s.desired[key] = specs
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Stats returns the counters.
func (s *Subjects) Stats() Stats {
	return Stats{Calls: s.calls.Load(), Throttled: s.throttled.Load(), Enqueued: s.enqueued.Load(), Dropped: s.dropped.Load()}
}

// Run subscribes as Set says until ctx ends; then it unsubscribes, waits
// for the calls and enqueues in flight (which end with ctx) and returns
// nil. It returns an error when a connection or invoker is missing or it
// is already running.
func (s *Subjects) Run(ctx context.Context) error {
	if s.cfg.Conn == nil || s.cfg.Invoker == nil || s.cfg.Enqueuer == nil {
		return errors.New("subjects: a NATS connection, an invoker and an enqueuer are required")
	}
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("subjects: already running")
	}
	s.running, s.stopping = true, false
	s.mu.Unlock()
	subs := map[spec]*subscription{}
	defer func() {
		for _, sub := range subs {
			_ = sub.sub.Unsubscribe()
		}
		s.mu.Lock()
		s.stopping = true
		s.mu.Unlock()
		s.inFlight.Wait()
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
	}()
	retry := time.NewTimer(lastRetry)
	retry.Stop()
	defer retry.Stop()
	pause := firstRetry
	for {
		if s.reconcile(ctx, subs) {
			pause = firstRetry
		} else {
			retry.Reset(pause)
			pause = min(2*pause, lastRetry)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-retry.C:
		}
	}
}

// reconcile subscribes and unsubscribes to match the desired events. It
// reports whether every subscription is in place.
func (s *Subjects) reconcile(ctx context.Context, subs map[spec]*subscription) bool {
	want := map[spec]bool{}
	s.mu.Lock()
	for _, specs := range s.desired {
		for _, sp := range specs {
			want[sp] = true
		}
	}
	s.mu.Unlock()
	for sp, sub := range subs {
		if !want[sp] {
			if err := sub.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				s.log.Warn("subject unsubscribe", "tenant", sp.tenant, "function", sp.function, "error", err)
			}
			delete(subs, sp)
		}
	}
	complete := true
	for sp := range want {
		if _, ok := subs[sp]; ok {
			continue
		}
		sub := &subscription{
			spec: sp, calls: make(chan struct{}, s.cfg.MaxInFlight), enqueues: make(chan struct{}, s.cfg.MaxInFlight),
			log: s.log.With("tenant", sp.tenant, "function", sp.function, "trigger", "subject:"+sp.subject),
		}
		var err error
		sub.sub, err = s.cfg.Conn.QueueSubscribe(sp.subject, sp.group(), func(m *nats.Msg) { s.handle(ctx, sub, m) })
		if err != nil {
			sub.log.Warn("subject subscribe", "error", err)
			complete = false
			continue
		}
		subs[sp] = sub
	}
	return complete
}

// subscription is one subscribed event with its bounds.
type subscription struct {
	spec     spec
	sub      *nats.Subscription
	calls    chan struct{} // one token per synchronous call in flight
	enqueues chan struct{} // one token per enqueue in flight
	log      *slog.Logger
}

// track counts a goroutine in inFlight, unless Run is stopping.
func (s *Subjects) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.inFlight.Add(1)
	return true
}

// handle takes one message on the subscription's delivery goroutine.
func (s *Subjects) handle(ctx context.Context, sub *subscription, m *nats.Msg) {
	headers := cloudEvent(sub.spec.subject, m)
	if m.Reply != "" {
		select {
		case sub.calls <- struct{}{}:
		default:
			s.throttled.Add(1)
			s.replyError(sub, m, "throttled")
			return
		}
		if !s.track() {
			<-sub.calls
			s.replyError(sub, m, "unavailable: the node is shutting down")
			return
		}
		go func() {
			defer s.inFlight.Done()
			defer func() { <-sub.calls }()
			s.call(ctx, sub, m, headers)
		}()
		return
	}
	// Waiting for a slot holds up this subscription's deliveries, which
	// NATS buffers up to its pending limits.
	select {
	case sub.enqueues <- struct{}{}:
	case <-ctx.Done():
		return
	}
	if !s.track() {
		<-sub.enqueues
		return
	}
	go func() {
		defer s.inFlight.Done()
		defer func() { <-sub.enqueues }()
		s.enqueue(ctx, sub, m, headers)
	}()
}

// call invokes the function and answers m.
func (s *Subjects) call(ctx context.Context, sub *subscription, m *nats.Msg, headers map[string]string) {
	sp := sub.spec
	s.calls.Add(1)
	start := time.Now()
	resp, err := s.cfg.Invoker.Invoke(ctx, invoke.Request{
		Tenant: sp.tenant, Function: sp.function, Qualifier: sp.qualifier, Payload: m.Data, Headers: headers,
	})
	if err != nil {
		var fe *fn.Error
		if ctx.Err() != nil && !errors.As(err, &fe) {
			s.replyError(sub, m, "unavailable: the node is shutting down")
			return
		}
		if !errors.As(err, &fe) {
			sub.log.Warn("subject call", "error", err)
			s.replyError(sub, m, "internal error")
			return
		}
		s.replyError(sub, m, fe.Message)
		return
	}
	out := nats.NewMsg(m.Reply)
	out.Data = resp.Payload
	if resp.FunctionError {
		out.Header.Set(HeaderFunctionError, "Unhandled")
	}
	if limit := s.cfg.Conn.MaxPayload(); int64(len(out.Data)) > limit-4096 {
		s.replyError(sub, m, fmt.Sprintf("the function's response of %d bytes is over the NATS message limit of %d bytes", len(out.Data), limit))
		return
	}
	if err := m.RespondMsg(out); err != nil {
		sub.log.Warn("subject reply", "invocation_id", resp.InvocationID, "error", err)
	}
	sub.log.Debug("subject call done", "invocation_id", resp.InvocationID, "duration", time.Since(start))
}

// replyError answers m with an Aloft-Error header and no data.
func (s *Subjects) replyError(sub *subscription, m *nats.Msg, msg string) {
	out := nats.NewMsg(m.Reply)
	out.Header.Set(HeaderError, headerSafe(msg))
	if err := m.RespondMsg(out); err != nil {
		sub.log.Warn("subject reply", "error", err)
	}
}

// enqueue hands m to the async queue; a failure loses it (and is logged).
func (s *Subjects) enqueue(ctx context.Context, sub *subscription, m *nats.Msg, headers map[string]string) {
	sp := sub.spec
	ctx, cancel := context.WithTimeout(ctx, enqueueTimeout)
	defer cancel()
	id, err := s.cfg.Enqueuer.Enqueue(ctx, sp.tenant, sp.function, sp.qualifier, m.Data, headers, "subject")
	if err != nil {
		s.dropped.Add(1)
		sub.log.Warn("subject message dropped", "subject", m.Subject, "error", err)
		return
	}
	s.enqueued.Add(1)
	sub.log.Debug("subject message enqueued", "invocation_id", id)
}

// cloudEvent returns the binary-mode CloudEvent headers of m, received on
// a subscription to subscribed.
func cloudEvent(subscribed string, m *nats.Msg) map[string]string {
	h := map[string]string{
		"ce-specversion": "1.0",
		"ce-id":          invoke.NewInvocationID(),
		"ce-source":      headerSafe("/aloft/subjects/" + subscribed),
		"ce-type":        "dev.aloft.nats.message",
		"ce-subject":     headerSafe(m.Subject),
		"ce-time":        time.Now().UTC().Format(time.RFC3339Nano),
	}
	ct := ""
	if m.Header != nil {
		ct = m.Header.Get("Content-Type")
		if tp := m.Header.Get("traceparent"); tp != "" {
			h["traceparent"] = headerSafe(tp)
		}
	}
	switch {
	case ct != "":
		h["Content-Type"] = headerSafe(ct)
	case json.Valid(m.Data):
		h["Content-Type"] = "application/json"
	default:
		h["Content-Type"] = "application/octet-stream"
	}
	return h
}

// headerSafe keeps a header value on one line.
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
}

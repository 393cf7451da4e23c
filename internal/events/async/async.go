// Package async runs asynchronous invocations, like Lambda's
// InvocationType Event: Enqueue stores an event durably in the JetStream
// work-queue stream ASYNC and returns its id; Run, on every node, pulls
// events of each function from a durable consumer shared by all nodes (so
// the nodes compete), runs them through the invoker within node-wide and
// per-function limits, retries failed attempts with exponential backoff
// within the function's maximum event age, and dead-letters what still
// fails. Destinations (OnSuccess, OnFailure) receive Lambda's destination
// record.
//
// Delivery is at least once: an event whose node stops before it is
// settled stays un-acknowledged and is delivered again after AckWait.
package async

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"

	"aloft/internal/events/deadletter"
	"aloft/internal/events/records"
	"aloft/internal/fn"
	"aloft/internal/invoke"
)

// Names of the stream and bucket the package owns.
const (
	// StreamName is the work-queue stream of accepted events, subjects
	// async.<tenant>.<function>.
	StreamName = "ASYNC"
	// AttemptsBucket holds the failure count of events that failed at
	// least once, keyed <tenant>.<function>.<id>.
	AttemptsBucket = "async_attempts"
)

// Defaults of Config.
const (
	DefaultMaxPayload  = 1 << 20
	DefaultDedupWindow = 10 * time.Minute
	DefaultMaxInFlight = 256
	DefaultRetryBase   = 10 * time.Second
	DefaultAckWait     = 30 * time.Second
	DefaultMaxBytes    = 1 << 30
	DefaultRegion      = "local"
)

const (
	subjectPrefix  = "async."
	consumerPrefix = "async_"
	// maxRetryDelay caps the backoff between attempts.
	maxRetryDelay = 5 * time.Minute
	// retryJitter is the spread of a backoff delay (±20 %).
	retryJitter = 0.2
	// functionTTL is how long a function's configuration is cached.
	functionTTL = 3 * time.Second
	// functionReadTimeout bounds one read of a function's configuration.
	functionReadTimeout = 5 * time.Second
	// maxCachedFunctions bounds the configuration cache.
	maxCachedFunctions = 10000
	// maxAckPending bounds the events of one function delivered and not
	// yet settled (running, held or waiting out a retry delay).
	maxAckPending = 100_000
	// headerRoom is what a message's headers may take besides its payload.
	headerRoom = 16 << 10
	// maxKeyLen bounds idempotency keys, maxIDLen event ids.
	maxKeyLen = 256
	maxIDLen  = 128
	// maxTraceLen bounds a trace header; maxHeadersLen the extra headers.
	maxTraceLen   = 1024
	maxHeadersLen = 8 << 10
	// publishTimeout bounds a store of an event (jetstream's default).
	publishTimeout = 5 * time.Second
	// errCodeStoreFailed is JetStream's "storing the message failed" code:
	// for a work queue with DiscardNew, the stream is full.
	errCodeStoreFailed = 10077
)

// Invoker runs one invocation. *invoke.Invoker satisfies it. Invoke
// returns an error only when the call never ran: fn.NotFound for an
// unknown function or qualifier, a *fn.Error with Status 429 or 503 when
// throttled, or an internal error. A function failure is a Response with
// FunctionError set.
type Invoker interface {
	Invoke(ctx context.Context, req invoke.Request) (*invoke.Response, error)
}

// FunctionSource reads a function's $LATEST state. *store.Store satisfies
// it; it returns fn.NotFound for a function that does not exist.
type FunctionSource interface {
	GetFunction(ctx context.Context, tenant, name string) (*fn.Function, uint64, error)
}

// QueueSender delivers a raw message to an Aloft queue, for "queue:NAME"
// destinations.
type QueueSender interface {
	SendRaw(ctx context.Context, tenant, queue string, body []byte) error
}

// Event is one asynchronous invocation to store.
type Event struct {
	// ID is the invocation id: 1-128 letters, digits, '-' or '_'. Empty
	// means generated (derived from the idempotency key when there is one).
	ID                          string
	Tenant, Function, Qualifier string
	Payload                     []byte
	// Headers are extra HTTP headers for http and wasm functions
	// (CloudEvents attributes); they reach invoke.Request.Headers.
	Headers map[string]string
	// IdempotencyKey (X-Aloft-Idempotency-Key): a second Enqueue with the
	// same tenant, function and key within the dedup window is not stored
	// again and returns the first event's id with duplicate set.
	IdempotencyKey string
	TraceID        string
	// Trigger is "api" (default), "schedule", "subject", "destination" or
	// "redrive".
	Trigger string
}

// Config configures an Async. JS, Functions, Invoker and DeadLetters are
// required; the zero value of every other field means its default.
type Config struct {
	JS        jetstream.JetStream
	Functions FunctionSource
	Invoker   Invoker
	// Sender delivers "queue:NAME" destinations; nil makes them
	// undeliverable (logged).
	Sender      QueueSender
	DeadLetters *deadletter.Store
	// Records receives invocation records; nil records nothing.
	Records *records.Store
	// Logger receives the package's log; nil discards it.
	Logger *slog.Logger
	// NodeID is this node's id. Async needs none today (every node pulls
	// from the same consumers); it is kept for diagnostics.
	NodeID string
	// Region goes into destination records' function ARNs (default
	// "local", as the invoker's).
	Region string
	// Replicas of the ASYNC stream and the attempts bucket (default 1).
	Replicas int
	// MaxPayload bounds an event's payload (default 1 MiB). It is lowered
	// to what the NATS server accepts in one message, less room for the
	// headers.
	MaxPayload int64
	// MaxBytes bounds the ASYNC stream (default 1 GiB); when it is full,
	// Enqueue answers 429.
	MaxBytes int64
	// DedupWindow is how long an idempotency key is remembered (default
	// 10 minutes).
	DedupWindow time.Duration
	// MaxInFlight bounds the invocations this node runs at once, all
	// functions together (default 256).
	MaxInFlight int
	// RetryBase is the backoff after the first failed attempt (default
	// 10s); it doubles with each attempt, capped at 5 minutes, ±20 %.
	RetryBase time.Duration
	// AckWait is how long a delivered event stays invisible to other nodes
	// (default 30s); events held or running are kept alive meanwhile.
	AckWait time.Duration
}

// withDefaults returns c with defaults filled in and every problem joined.
func (c Config) withDefaults() (Config, error) {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Region == "" {
		c.Region = DefaultRegion
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = DefaultMaxPayload
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.DedupWindow == 0 {
		c.DedupWindow = DefaultDedupWindow
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.RetryBase == 0 {
		c.RetryBase = DefaultRetryBase
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.JS == nil {
		add("jetstream is missing")
	}
	if c.Functions == nil {
		add("function source is missing")
	}
	if c.Invoker == nil {
		add("invoker is missing")
	}
	if c.DeadLetters == nil {
		add("dead-letter store is missing")
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		add("replicas %d is out of range: use 1-5", c.Replicas)
	}
	if c.MaxPayload < 0 {
		add("max payload %d is negative", c.MaxPayload)
	}
	if c.MaxBytes < 0 {
		add("max bytes %d is negative", c.MaxBytes)
	}
	if c.DedupWindow < 0 {
		add("dedup window %s is negative", c.DedupWindow)
	}
	if c.MaxInFlight < 0 {
		add("max in flight %d is negative", c.MaxInFlight)
	}
	if c.RetryBase < 0 {
		add("retry base %s is negative", c.RetryBase)
	}
	if c.AckWait < 0 {
		add("ack wait %s is negative", c.AckWait)
	}
	return c, errors.Join(errs...)
}

// Stats are counters since New.
type Stats struct {
	Enqueued   uint64 // events stored
	Duplicates uint64 // enqueues answered with an earlier event's id
	Started    uint64 // attempts started
	Succeeded  uint64
	// Retried counts failed attempts that will be retried.
	Retried      uint64
	DeadLettered uint64
	// Deferred counts deliveries handed back without running because this
	// node was at a limit.
	Deferred          uint64
	DestinationErrors uint64
	InFlight          int64 // attempts running now
}

type counters struct {
	enqueued, duplicates, started, succeeded, retried, deadLettered atomic.Uint64
	deferred, destinationErrors                                     atomic.Uint64
	inFlight                                                        atomic.Int64
}

// Async stores and runs asynchronous invocations. Create it with New;
// Enqueue may be used from any goroutine, with or without Run.
type Async struct {
	cfg  Config
	log  *slog.Logger
	now  func() time.Time
	rand func() float64 // in [0, 1), for jitter
	tune tuning
	sem  *semaphore.Weighted
	stat counters

	setupMu    sync.Mutex
	ready      atomic.Bool
	stream     jetstream.Stream
	attempts   jetstream.KeyValue
	maxPayload int64

	fnMu    sync.RWMutex
	fns     map[fnKey]cachedFunction
	fnGen   atomic.Uint64 // bumped by Forget so a read in flight is not cached
	fnGroup singleflight.Group

	ensured sync.Map // tenant/function -> struct{}: consumers this node ensured

	running atomic.Bool
	keep    keeper
	workers sync.Map // tenant/function -> *worker, written by Run's discovery only
	wakeMu  sync.Mutex
	wakeSet map[string]struct{} // functions Enqueue saw without a worker
	wake    chan struct{}
}

// fnKey names a function in maps read on every event, where a
// concatenated string would cost an allocation.
type fnKey struct{ tenant, function string }

type cachedFunction struct {
	f  *fn.Function
	at time.Time
}

// New validates cfg. It does not touch JetStream: the stream, bucket and
// consumers are created by the first Enqueue or Run. It returns every
// problem of cfg joined.
func New(cfg Config) (*Async, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("async: %w", err)
	}
	return &Async{
		cfg:     cfg,
		log:     cfg.Logger,
		now:     time.Now,
		rand:    rand.Float64,
		tune:    defaultTuning,
		sem:     semaphore.NewWeighted(int64(cfg.MaxInFlight)),
		fns:     map[fnKey]cachedFunction{},
		wakeSet: map[string]struct{}{},
		wake:    make(chan struct{}, 1),
	}, nil
}

// setup creates or updates the stream and the attempts bucket, once.
func (a *Async) setup(ctx context.Context) error {
	if a.ready.Load() {
		return nil
	}
	a.setupMu.Lock()
	defer a.setupMu.Unlock()
	if a.ready.Load() {
		return nil
	}
	stream, err := a.cfg.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamName,
		Description: "Aloft asynchronous invocations",
		Subjects:    []string{subjectPrefix + ">"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardNew,
		MaxBytes:    a.cfg.MaxBytes,
		Duplicates:  a.cfg.DedupWindow,
		Replicas:    a.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("create stream %s: %w", StreamName, err)
	}
	kv, err := a.cfg.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      AttemptsBucket,
		Description: "Aloft failure counts of asynchronous invocations",
		History:     1,
		TTL:         fn.MaxAsyncMaxAge + time.Hour,
		Storage:     jetstream.FileStorage,
		Replicas:    a.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", AttemptsBucket, err)
	}
	if a.stream == nil {
		// Set once: later setups (after the stream was deleted) recreate
		// the same names, and readers hold on to these handles.
		a.maxPayload = a.cfg.MaxPayload
		if serverMax := a.cfg.JS.Conn().MaxPayload() - headerRoom; serverMax < a.maxPayload {
			a.maxPayload = max(serverMax, 0)
		}
		a.stream, a.attempts = stream, kv
	}
	a.ready.Store(true)
	return nil
}

// streamGone makes the next Enqueue create the stream and consumers again
// (someone deleted them).
func (a *Async) streamGone() {
	a.setupMu.Lock()
	a.ready.Store(false)
	a.setupMu.Unlock()
	a.ensured.Clear()
}

// Enqueue stores e durably and returns its id; it returns only once
// JetStream has acknowledged the event. With an idempotency key already
// seen within the dedup window it stores nothing and returns the first
// event's id with duplicate set (when e.ID was given and the first event
// has already run, e.ID is returned).
//
// Errors: fn.Invalid for a malformed tenant, function, id, qualifier,
// trigger, key, trace or headers; fn.NotFound when the function does not
// exist; fn.TooLarge for a payload over the limit; fn.Throttled when the
// stream is full; fn.Unavailable (wrapping the cause) when JetStream does
// not store the event or the function cannot be read.
func (a *Async) Enqueue(ctx context.Context, e Event) (id string, duplicate bool, err error) {
	if err := normalize(&e); err != nil {
		return "", false, err
	}
	if err := a.setup(ctx); err != nil {
		return "", false, unavailable(err)
	}
	if n := int64(len(e.Payload)); n > a.maxPayload {
		return "", false, fn.TooLarge("async payload is %d bytes: the limit is %s; invoke synchronously for up to 6 MB", n, byteSize(a.maxPayload))
	}
	if _, err := a.function(ctx, e.Tenant, e.Function); err != nil {
		if fn.IsNotFound(err) {
			return "", false, fn.NotFound("function %q not found", e.Function)
		}
		return "", false, unavailable(fmt.Errorf("read function %q: %w", e.Function, err))
	}
	if err := a.ensureConsumer(ctx, e.Tenant, e.Function, false); err != nil {
		return "", false, unavailable(err)
	}
	if e.ID == "" && e.IdempotencyKey == "" {
		e.ID = invoke.NewInvocationID()
	}
	// The queued record carries the time of acceptance, taken before the
	// publish: the event may run, on any node, before Enqueue goes on.
	accepted := a.now()
	msg, err := encode(&e, accepted)
	if err != nil {
		return "", false, err
	}
	ack, err := a.publish(ctx, msg)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeStoreFailed {
			return "", false, fn.Throttled(5, "the async queue is full: retry later")
		}
		if errors.Is(err, jetstream.ErrNoStreamResponse) {
			a.streamGone()
		}
		return "", false, unavailable(fmt.Errorf("publish to %q: %w", e.Function, err))
	}
	if ack.Duplicate && ack.Sequence == 0 {
		// A clustered stream saw the key on a publish not yet stored.
		return "", false, fn.Unavailable("an event with idempotency key %q is being stored: retry", e.IdempotencyKey)
	}
	id = e.ID
	if id == "" {
		id = derivedID(msg.Header.Get(hdrMsgID), ack.Sequence)
	} else if ack.Duplicate {
		id = a.storedID(ctx, ack.Sequence, e.ID)
	}
	if ack.Duplicate {
		a.stat.duplicates.Add(1)
		return id, true, nil
	}
	a.stat.enqueued.Add(1)
	a.record(records.Record{ID: id, Tenant: e.Tenant, Function: e.Function, Version: e.Qualifier,
		Trigger: e.Trigger, Status: records.Queued, Time: accepted})
	a.wakeFor(e.Tenant, e.Function)
	return id, false, nil
}

// Checks of what an event holds, by hand: regular expressions cost more
// than the rest of an Enqueue. Each is pinned to the expression in its
// comment by TestValidators.

// validTenant: ^[A-Za-z0-9_-]{1,64}$
func validTenant(s string) bool { return len(s) <= 64 && isToken(s) }

// validID: ^[A-Za-z0-9_-]{1,128}$
func validID(s string) bool { return len(s) <= maxIDLen && isToken(s) }

// isToken: ^[A-Za-z0-9_-]+$
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// validVersion: ^[1-9][0-9]{0,9}$
func validVersion(s string) bool {
	if s == "" || len(s) > 10 || s[0] == '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// validTrigger: ^[a-z][a-z0-9-]{0,31}$
func validTrigger(s string) bool {
	if s == "" || len(s) > 32 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// validFunction is a quick fn.ValidateName for the common case: lower-case
// letters, digits and inner '-', at most fn.MaxNameLen. What it accepts
// fn.ValidateName accepts; what it refuses is checked there.
func validFunction(s string) bool {
	if s == "" || len(s) > fn.MaxNameLen || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// normalize fills e's defaults and checks what will be stored.
func normalize(e *Event) error {
	if e.Trigger == "" {
		e.Trigger = "api"
	}
	if e.Qualifier == "" {
		e.Qualifier = fn.LatestVersion
	}
	switch {
	case !validTenant(e.Tenant):
		return fn.Invalid("tenant %q is invalid: use 1-64 letters, digits, '-' or '_'", e.Tenant)
	case e.ID != "" && !validID(e.ID):
		return fn.Invalid("invocation id %q is invalid: use 1-%d letters, digits, '-' or '_'", e.ID, maxIDLen)
	case !validTrigger(e.Trigger):
		return fn.Invalid("trigger %q is invalid: use api, schedule, subject, destination or redrive", e.Trigger)
	case len(e.IdempotencyKey) > maxKeyLen || !printable(e.IdempotencyKey):
		return fn.Invalid("idempotency key is invalid: use at most %d printable ASCII characters", maxKeyLen)
	case len(e.TraceID) > maxTraceLen || !printable(e.TraceID):
		return fn.Invalid("trace id is invalid: use at most %d printable ASCII characters", maxTraceLen)
	}
	if !validFunction(e.Function) {
		if err := fn.ValidateName(e.Function); err != nil {
			return err
		}
	}
	if e.Qualifier != fn.LatestVersion && !validVersion(e.Qualifier) {
		if fn.ValidateAliasName(e.Qualifier) != nil {
			return fn.Invalid("qualifier %q is invalid: use $LATEST, a version number or an alias", e.Qualifier)
		}
	}
	size := 0
	for k, v := range e.Headers {
		size += len(k) + len(v)
		if k == "" {
			return fn.Invalid("an event header has an empty name: name every header")
		}
	}
	if size > maxHeadersLen {
		return fn.Invalid("event headers are %d bytes: keep them under %d", size, maxHeadersLen)
	}
	return nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// unavailable is the 503 answered when JetStream does not store an event;
// it wraps cause for the log.
func unavailable(cause error) error {
	return fmt.Errorf("%w: %w", fn.Unavailable("the event could not be stored: retry later"), cause)
}

// byteSize formats a limit for a message: "1 MiB", "512 KiB" or "N bytes".
func byteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

// publish stores msg in the stream and returns JetStream's answer. It is
// jetstream's PublishMsg (retrying while no server answers, the same
// errors) without what costs most on this path: a context with a deadline
// per call, and reflection to read the answer. Once sent, msg's answer is
// awaited even if ctx ends (at most publishTimeout, or ctx's deadline).
func (a *Async) publish(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	timeout := publishTimeout
	if deadline, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(deadline))
	}
	if err := ctx.Err(); err != nil || timeout <= 0 {
		return nil, cmp.Or(err, context.DeadlineExceeded)
	}
	nc := a.cfg.JS.Conn()
	resp, err := nc.RequestMsg(msg, timeout)
	for r := 0; errors.Is(err, nats.ErrNoResponders) && r < jetstream.DefaultPubRetryAttempts; r++ {
		t := time.NewTimer(jetstream.DefaultPubRetryWait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		resp, err = nc.RequestMsg(msg, timeout)
	}
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return nil, jetstream.ErrNoStreamResponse
	case err != nil:
		return nil, err
	}
	return parsePubAck(resp.Data)
}

// storedID returns the id of the stored event at seq, or fallback when it
// is gone (already run) or unreadable.
func (a *Async) storedID(ctx context.Context, seq uint64, fallback string) string {
	m, err := a.stream.GetMsg(ctx, seq)
	if err != nil {
		return fallback
	}
	if id := m.Header.Get(hdrID); id != "" {
		return id
	}
	return fallback
}

// ensureConsumer creates or updates the durable consumer of a function
// unless this node already did (force skips that check).
func (a *Async) ensureConsumer(ctx context.Context, tenant, function string, force bool) error {
	key := tenant + "/" + function
	if _, ok := a.ensured.Load(key); ok && !force {
		return nil
	}
	_, err := a.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       consumerName(tenant, function),
		Description:   "async invocations of " + key,
		FilterSubject: subject(tenant, function),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       a.cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: maxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("create consumer of %q: %w", key, err)
	}
	a.ensured.Store(key, struct{}{})
	return nil
}

func subject(tenant, function string) string { return subjectPrefix + tenant + "." + function }

// consumerName is unambiguous: function names have no '_'.
func consumerName(tenant, function string) string { return consumerPrefix + tenant + "_" + function }

// function returns a function's $LATEST state, cached for functionTTL
// (Forget drops it sooner). Not-found answers are not cached.
func (a *Async) function(ctx context.Context, tenant, name string) (*fn.Function, error) {
	a.fnMu.RLock()
	c, ok := a.fns[fnKey{tenant, name}]
	a.fnMu.RUnlock()
	if ok && a.now().Sub(c.at) < functionTTL {
		return c.f, nil
	}
	key := tenant + "/" + name
	v, err, _ := a.fnGroup.Do(key, func() (any, error) {
		// Shared by every caller waiting here: one caller going away must
		// not fail the others.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), functionReadTimeout)
		defer cancel()
		gen := a.fnGen.Load()
		f, _, err := a.cfg.Functions.GetFunction(rctx, tenant, name)
		if err != nil {
			return nil, err
		}
		a.fnMu.Lock()
		if a.fnGen.Load() == gen {
			if len(a.fns) >= maxCachedFunctions {
				clear(a.fns)
			}
			a.fns[fnKey{tenant, name}] = cachedFunction{f: f, at: a.now()}
		}
		a.fnMu.Unlock()
		return f, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*fn.Function), nil
}

// Forget drops what this node cached about a function (its configuration
// and whether its consumer exists). Call it when the function changes.
func (a *Async) Forget(tenant, function string) {
	key := tenant + "/" + function
	a.fnMu.Lock()
	a.fnGen.Add(1)
	delete(a.fns, fnKey{tenant, function})
	a.fnMu.Unlock()
	a.ensured.Delete(key)
}

// Stats returns the counters.
func (a *Async) Stats() Stats {
	s := &a.stat
	return Stats{
		Enqueued: s.enqueued.Load(), Duplicates: s.duplicates.Load(), Started: s.started.Load(),
		Succeeded: s.succeeded.Load(), Retried: s.retried.Load(), DeadLettered: s.deadLettered.Load(),
		Deferred: s.deferred.Load(), DestinationErrors: s.destinationErrors.Load(),
		InFlight: s.inFlight.Load(),
	}
}

func (a *Async) record(r records.Record) {
	if a.cfg.Records != nil {
		a.cfg.Records.Put(r)
	}
}

// Package queue runs Aloft's named queues: durable message queues a client
// sends to (`aloft queue send`, the API, async destinations) and functions
// consume in batches through queue triggers, the way AWS Lambda consumes an
// SQS queue.
//
// # Storage
//
// Messages live in one JetStream stream, "QUEUES" (work-queue retention,
// file storage, kept Config.MaxAge), on subject queue.<tenant>.<name>. Each
// message's headers carry its id (Aloft-Message-Id), its send time in Unix
// milliseconds (Aloft-Sent) and its attributes as a JSON object
// (Aloft-Attributes). A message sent with a dedup id carries
// Nats-Msg-Id <tenant>/<name>/<dedup id>: a resend within five minutes is
// stored once and gets the same message id back. The queues themselves are
// records in the KV bucket "queues", key <tenant>.<name>.
//
// # Triggers
//
// A queue trigger is one durable pull consumer per queue, shared by every
// node (competing consumers): named q_<tenant>_<queue>, explicit acks,
// unlimited deliveries, and an ack wait of the function's timeout plus
// Config.VisibilityMargin, so a message whose node died becomes visible
// again. Each node runs at most the trigger's concurrency batches at once
// and pulls continuously (jetstream Consume), keeping up to a batch per
// slot (at most 1,000 messages) fetched ahead, so a slot that frees starts
// its next batch at once. Without a batch window a batch holds what was
// fetched, and waits a few milliseconds for the messages JetStream reported
// waiting behind it, so a backlog runs in full batches. A stopped trigger
// runs what it fetched; a stopping node gives it back (Nak), which, like
// any delivery, counts towards the message's retries.
// Lambda-style runtimes get the SQS batch event and may answer with
// {"batchItemFailures":[...]}; http and wasm functions get one message per
// invocation as a binary-mode CloudEvent. A failed message is redelivered
// after an exponential backoff until it was delivered retries+1 times, then
// it goes to the dead letters and is removed from the queue. Delivery is at
// least once: a message whose invocation was cut short (a node stopping, an
// invocation outliving its ack wait) runs again.
//
// # Errors
//
// Errors meant for clients are *fn.Error: fn.Invalid for a bad tenant, queue
// name, attribute, dedup id or batch size; fn.NotFound for a queue that does
// not exist; fn.TooLarge for a message over Config.MaxMessage. Every other
// error is internal (JetStream unreachable, a corrupt record) and wraps the
// operation.
package queue

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"aloft/internal/events/deadletter"
	"aloft/internal/events/records"
	"aloft/internal/fn"
	"aloft/internal/invoke"
)

// Names of the stream and bucket the package owns.
const (
	Stream = "QUEUES"
	Bucket = "queues"
	// AttemptsBucket holds the failure count of messages that failed, by
	// queue and stream sequence: redeliveries after a node stopped, which
	// ran nothing, do not use up retries.
	AttemptsBucket = "queue_attempts"
)

// Defaults of Config.
const (
	DefaultMaxAge           = 4 * 24 * time.Hour
	DefaultMaxMessage       = 256 << 10
	DefaultMaxBatch         = 1000
	DefaultRetryBase        = 10 * time.Second
	DefaultVisibilityMargin = 30 * time.Second
	DefaultRegion           = "local"
	DefaultAccount          = "000000000000"
)

const (
	subjectPrefix = "queue."
	// dedupWindow is how long a dedup id is remembered.
	dedupWindow = 5 * time.Minute
	// maxAttributes, maxAttrName and maxDedupID follow SQS's limits.
	maxAttributes = 10
	maxAttrName   = 256
	maxDedupID    = 128
	// headerRoom is what a stored message may carry on top of
	// Config.MaxMessage: its headers.
	headerRoom = 64 << 10

	hdrID    = "Aloft-Message-Id"
	hdrSent  = "Aloft-Sent"
	hdrAttrs = "Aloft-Attributes"
)

// Invoker runs one invocation; *invoke.Invoker is one.
type Invoker interface {
	Invoke(ctx context.Context, req invoke.Request) (*invoke.Response, error)
}

// FunctionSource reads the configuration of the version a trigger invokes:
// its runtime decides the event shape and its timeout the trigger's ack
// wait. *store.Store is one.
type FunctionSource interface {
	// Resolve returns the configuration a qualifier ("", $LATEST, a
	// version or an alias) names.
	Resolve(ctx context.Context, tenant, name, qualifier string) (*fn.Version, error)
}

// Config configures Queues. JS, Invoker, DeadLetters and Functions are
// required; the zero value of every other field means its default.
type Config struct {
	JS          jetstream.JetStream
	Invoker     Invoker
	DeadLetters *deadletter.Store
	// Records, when set, gets one record per trigger invocation.
	Records   *records.Store
	Functions FunctionSource
	// Logger receives the package's own log; nil discards.
	Logger *slog.Logger
	// NodeID is this node's id, reported in the log.
	NodeID string
	// Replicas of the stream and the bucket (default 1).
	Replicas int
	// MaxAge is how long an unconsumed message is kept (default 4 days).
	MaxAge time.Duration
	// MaxMessage bounds a message's body plus its attributes' names and
	// values, in bytes (default 256 KiB).
	MaxMessage int
	// MaxBatch bounds the messages of one Send (default 1000).
	MaxBatch int
	// RetryBase is the first backoff of a failed message; it doubles with
	// each delivery, up to 5 minutes, with jitter (default 10s).
	RetryBase time.Duration
	// VisibilityMargin is added to the function's timeout to make a
	// trigger's ack wait: how long a delivered message stays invisible to
	// other consumers (default 30s).
	VisibilityMargin time.Duration
	// Region and Account appear in the SQS event's ARNs (default "local"
	// and "000000000000").
	Region, Account string
}

func (c Config) withDefaults() (Config, error) {
	var errs []error
	if c.JS == nil {
		errs = append(errs, errors.New("a JetStream context is required"))
	}
	if c.Invoker == nil {
		errs = append(errs, errors.New("an invoker is required"))
	}
	if c.DeadLetters == nil {
		errs = append(errs, errors.New("a dead-letter store is required"))
	}
	if c.Functions == nil {
		errs = append(errs, errors.New("a function source is required"))
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Replicas = max(c.Replicas, 1)
	c.MaxAge = orDefault(c.MaxAge, DefaultMaxAge)
	c.RetryBase = orDefault(c.RetryBase, DefaultRetryBase)
	c.VisibilityMargin = orDefault(c.VisibilityMargin, DefaultVisibilityMargin)
	if c.MaxMessage <= 0 {
		c.MaxMessage = DefaultMaxMessage
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.Region == "" {
		c.Region = DefaultRegion
	}
	if c.Account == "" {
		c.Account = DefaultAccount
	}
	return c, errors.Join(errs...)
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Queue is a named queue as the API shows it.
type Queue struct {
	Tenant  string    `json:"tenant"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	// Messages counts the messages stored: waiting, or delivered and not
	// yet acknowledged. Get and List fill it in.
	Messages uint64 `json:"messages"`
}

// Message is what a sender sends.
type Message struct {
	Body       string            `json:"body"`
	Attributes map[string]string `json:"attributes,omitempty"`
	// DedupID, like SQS's MessageDeduplicationId, makes a resend with the
	// same id within five minutes be stored once.
	DedupID string `json:"id,omitempty"`
}

// Stats counts what Queues did since New.
type Stats struct {
	// Sent counts messages stored (duplicates not included).
	Sent uint64 `json:"sent"`
	// Delivered counts messages handed to a function, each delivery once.
	Delivered    uint64 `json:"delivered"`
	Succeeded    uint64 `json:"succeeded"`
	Retried      uint64 `json:"retried"`
	DeadLettered uint64 `json:"deadLettered"`
	// Batches counts trigger invocations.
	Batches uint64 `json:"batches"`
}

type counters struct {
	sent, delivered, succeeded, retried, deadLettered, batches atomic.Uint64
}

// Queues manages the named queues and runs their triggers. Create it with
// New and run the triggers with Run. Its methods are safe for concurrent
// use.
type Queues struct {
	cfg      Config
	log      *slog.Logger
	js       jetstream.JetStream
	stream   jetstream.Stream
	kv       jetstream.KeyValue
	attempts jetstream.KeyValue
	stats    counters

	mu      sync.Mutex
	desired map[string][]spec // tenant/function → its enabled queue triggers
	dirty   map[string]bool   // functions set since the last reconcile
	running bool
	wake    chan struct{} // cap 1: the triggers changed
}

// New creates or updates the QUEUES stream and the queues bucket. It fails
// on a config without its required parts and when JetStream refuses the
// stream or the bucket.
func New(ctx context.Context, cfg Config) (*Queues, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("queues: %w", err)
	}
	q := &Queues{
		cfg: cfg, log: cfg.Logger, js: cfg.JS,
		desired: map[string][]spec{}, dirty: map[string]bool{}, wake: make(chan struct{}, 1),
	}
	if cfg.NodeID != "" {
		q.log = q.log.With("node", cfg.NodeID)
	}
	q.stream, err = cfg.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        Stream,
		Description: "Aloft named queues",
		Subjects:    []string{subjectPrefix + ">"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardNew,
		MaxAge:      cfg.MaxAge,
		MaxMsgSize:  int32(min(cfg.MaxMessage+headerRoom, 1<<30)),
		Duplicates:  min(dedupWindow, cfg.MaxAge),
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", Stream, err)
	}
	q.kv, err = cfg.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Aloft named queues",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", Bucket, err)
	}
	q.attempts, err = cfg.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      AttemptsBucket,
		Description: "Aloft failure counts of queue messages",
		History:     1,
		TTL:         cfg.MaxAge + time.Hour,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", AttemptsBucket, err)
	}
	return q, nil
}

var tenantRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func validName(tenant, name string) error {
	if !tenantRE.MatchString(tenant) {
		return fn.Invalid("tenant %q is invalid: use 1-64 letters, digits, '-' or '_'", tenant)
	}
	return fn.ValidateQueueName(name)
}

func subjectOf(tenant, name string) string { return subjectPrefix + tenant + "." + name }

func keyOf(tenant, name string) string { return tenant + "." + name }

// consumerName names a queue's trigger consumer. Queue names have no '_',
// so the last '_' separates the tenant from the queue and no two queues
// share a name.
func consumerName(tenant, name string) string { return "q_" + tenant + "_" + name }

func notFound(name string) error {
	return fn.NotFound("queue %q not found: create it with `aloft queue create %s` or under queues: in aloft.yaml", name, name)
}

// Create creates a queue. It is idempotent: an existing queue is returned
// with created false. It returns fn.Invalid for a bad tenant or name.
func (q *Queues) Create(ctx context.Context, tenant, name string) (*Queue, bool, error) {
	if err := validName(tenant, name); err != nil {
		return nil, false, err
	}
	rec := &Queue{Tenant: tenant, Name: name, Created: time.Now().UTC()}
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, false, fmt.Errorf("create queue %q: %w", name, err)
	}
	for attempt := 0; ; attempt++ {
		_, err = q.kv.Create(ctx, keyOf(tenant, name), b)
		if err == nil {
			return rec, true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, false, fmt.Errorf("create queue %q: %w", name, err)
		}
		existing, err := q.Get(ctx, tenant, name)
		if fn.IsNotFound(err) && attempt == 0 {
			continue // deleted meanwhile: create it once more
		}
		return existing, false, err
	}
}

// Get returns a queue with its message count. It returns fn.NotFound when
// the queue does not exist and fn.Invalid for a bad tenant or name.
func (q *Queues) Get(ctx context.Context, tenant, name string) (*Queue, error) {
	rec, err := q.record(ctx, tenant, name)
	if err != nil {
		return nil, err
	}
	subj := subjectOf(tenant, name)
	info, err := q.stream.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return nil, fmt.Errorf("get queue %q: %w", name, err)
	}
	rec.Messages = info.State.Subjects[subj]
	return rec, nil
}

// record reads a queue's stored record.
func (q *Queues) record(ctx context.Context, tenant, name string) (*Queue, error) {
	if err := validName(tenant, name); err != nil {
		return nil, err
	}
	e, err := q.kv.Get(ctx, keyOf(tenant, name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, notFound(name)
	}
	if err != nil {
		return nil, fmt.Errorf("get queue %q: %w", name, err)
	}
	var rec Queue
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, fmt.Errorf("get queue %q: decode: %w", name, err)
	}
	return &rec, nil
}

// List returns a tenant's queues sorted by name, with their message
// counts. It returns fn.Invalid for a bad tenant.
func (q *Queues) List(ctx context.Context, tenant string) ([]*Queue, error) {
	if !tenantRE.MatchString(tenant) {
		return nil, fn.Invalid("tenant %q is invalid: use 1-64 letters, digits, '-' or '_'", tenant)
	}
	w, err := q.kv.Watch(ctx, tenant+".*", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	defer func() { _ = w.Stop() }()
	out := []*Queue{}
	for done := false; !done; {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("list queues: %w", ctx.Err())
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return nil, errors.New("list queues: watcher closed before the last value")
			case e == nil:
				done = true
			default:
				var rec Queue
				if err := json.Unmarshal(e.Value(), &rec); err != nil {
					return nil, fmt.Errorf("list queues: decode %s: %w", e.Key(), err)
				}
				out = append(out, &rec)
			}
		}
	}
	if len(out) == 0 {
		return out, nil
	}
	info, err := q.stream.Info(ctx, jetstream.WithSubjectFilter(subjectPrefix+tenant+".*"))
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	for _, rec := range out {
		rec.Messages = info.State.Subjects[subjectOf(tenant, rec.Name)]
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Delete removes a queue, its messages and its trigger consumer. A Send
// racing with Delete may leave its messages behind until they age out or
// the queue is created again. It returns fn.NotFound when the queue does
// not exist and fn.Invalid for a bad tenant or name.
func (q *Queues) Delete(ctx context.Context, tenant, name string) error {
	if _, err := q.record(ctx, tenant, name); err != nil {
		return err
	}
	if err := q.kv.Purge(ctx, keyOf(tenant, name)); err != nil {
		return fmt.Errorf("delete queue %q: %w", name, err)
	}
	if err := q.stream.Purge(ctx, jetstream.WithPurgeSubject(subjectOf(tenant, name))); err != nil {
		return fmt.Errorf("delete queue %q: purge: %w", name, err)
	}
	err := q.js.DeleteConsumer(ctx, Stream, consumerName(tenant, name))
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("delete queue %q: consumer: %w", name, err)
	}
	return nil
}

// Send stores msgs on a queue, in order, and returns their ids once
// JetStream has acknowledged every one. Every message is checked before
// any is stored: fn.Invalid for an empty batch, more than Config.MaxBatch
// messages, a bad attribute or dedup id; fn.TooLarge for a message over
// Config.MaxMessage; fn.NotFound when the queue does not exist. A message
// with a dedup id gets an id derived from it, so a resend returns the same
// id. An internal error after validation may leave some of the batch
// stored: send it again with dedup ids to be safe.
func (q *Queues) Send(ctx context.Context, tenant, name string, msgs []Message) ([]string, error) {
	if err := validName(tenant, name); err != nil {
		return nil, err
	}
	switch {
	case len(msgs) == 0:
		return nil, fn.Invalid("no messages to send: send 1-%d", q.cfg.MaxBatch)
	case len(msgs) > q.cfg.MaxBatch:
		return nil, fn.Invalid("%d messages in one send: send at most %d at a time", len(msgs), q.cfg.MaxBatch)
	}
	for i := range msgs {
		if err := q.validate(i, &msgs[i]); err != nil {
			return nil, err
		}
	}
	if _, err := q.record(ctx, tenant, name); err != nil {
		return nil, err
	}
	subj := subjectOf(tenant, name)
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	ids := make([]string, len(msgs))
	out := make([]*nats.Msg, len(msgs))
	for i := range msgs {
		ids[i], out[i] = buildMsg(tenant, name, subj, now, &msgs[i])
	}
	stored, err := q.publish(ctx, out)
	q.stats.sent.Add(uint64(stored))
	if err != nil {
		return nil, fmt.Errorf("send to queue %q: %w", name, err)
	}
	return ids, nil
}

// SendRaw stores one message whose body is body; async destinations use
// it. Its errors are Send's.
func (q *Queues) SendRaw(ctx context.Context, tenant, name string, body []byte) error {
	_, err := q.Send(ctx, tenant, name, []Message{{Body: string(body)}})
	return err
}

var attrNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// validate checks message i against the limits.
func (q *Queues) validate(i int, m *Message) error {
	size := len(m.Body)
	if len(m.Attributes) > maxAttributes {
		return fn.Invalid("message %d has %d attributes: use at most %d", i, len(m.Attributes), maxAttributes)
	}
	for k, v := range m.Attributes {
		if len(k) > maxAttrName || !attrNameRE.MatchString(k) {
			return fn.Invalid("message %d: attribute name %q is invalid: use 1-%d letters, digits, '_', '-' or '.'", i, k, maxAttrName)
		}
		size += len(k) + len(v)
	}
	if size > q.cfg.MaxMessage {
		return fn.TooLarge("message %d is %d bytes (body and attributes): the limit is %d", i, size, q.cfg.MaxMessage)
	}
	if m.DedupID != "" && !validDedupID(m.DedupID) {
		return fn.Invalid("message %d: id %q is invalid: use 1-%d printable ASCII characters without spaces", i, m.DedupID, maxDedupID)
	}
	return nil
}

func validDedupID(s string) bool {
	if len(s) > maxDedupID {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// buildMsg returns a message's id and its stored form.
func buildMsg(tenant, name, subj, sentMillis string, m *Message) (string, *nats.Msg) {
	h := nats.Header{}
	var id string
	if m.DedupID != "" {
		dedup := tenant + "/" + name + "/" + m.DedupID
		id = nameUUID(dedup)
		h[jetstream.MsgIDHeader] = []string{dedup}
	} else {
		id = newUUID()
	}
	h[hdrID] = []string{id}
	h[hdrSent] = []string{sentMillis}
	if len(m.Attributes) > 0 {
		b, _ := json.Marshal(m.Attributes) // map[string]string always encodes
		h[hdrAttrs] = []string{string(b)}
	}
	return id, &nats.Msg{Subject: subj, Header: h, Data: []byte(m.Body)}
}

// publish stores msgs and waits for every acknowledgement; it returns how
// many were stored anew (not duplicates).
func (q *Queues) publish(ctx context.Context, msgs []*nats.Msg) (int, error) {
	if len(msgs) == 1 {
		ack, err := q.js.PublishMsg(ctx, msgs[0])
		if err != nil {
			return 0, err
		}
		if ack.Duplicate {
			return 0, nil
		}
		return 1, nil
	}
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	var perr error
	for _, m := range msgs {
		f, err := q.js.PublishMsgAsync(m)
		if err != nil {
			perr = err
			break
		}
		futures = append(futures, f)
	}
	stored := 0
	for _, f := range futures {
		select {
		case ack := <-f.Ok():
			if !ack.Duplicate {
				stored++
			}
		case err := <-f.Err():
			perr = firstErr(perr, err)
		case <-ctx.Done():
			return stored, ctx.Err()
		}
	}
	return stored, perr
}

// firstErr returns the first non-nil error.
func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// Stats returns the counters.
func (q *Queues) Stats() Stats {
	c := &q.stats
	return Stats{
		Sent: c.sent.Load(), Delivered: c.delivered.Load(), Succeeded: c.succeeded.Load(),
		Retried: c.retried.Load(), DeadLettered: c.deadLettered.Load(), Batches: c.batches.Load(),
	}
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(b)
}

// uuidNamespace is the name-based UUIDs' namespace (a random constant).
var uuidNamespace = [16]byte{0x6b, 0x1d, 0x3e, 0x52, 0x9a, 0x41, 0x4f, 0x0c, 0x8e, 0x27, 0x55, 0xd3, 0x0a, 0x9f, 0x61, 0xc4}

// nameUUID returns the version-5 UUID of name: the same name, the same id.
func nameUUID(name string) string {
	h := sha1.New()
	h.Write(uuidNamespace[:])
	h.Write([]byte(name))
	var b [16]byte
	copy(b[:], h.Sum(nil))
	b[6] = b[6]&0x0f | 0x50
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(b)
}

func formatUUID(b [16]byte) string {
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

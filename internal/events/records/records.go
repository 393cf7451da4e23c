// Package records keeps the recent history of event invocations — queued,
// running, succeeded, retrying, dead-lettered — which `aloft invocations
// NAME` shows.
//
// Records go to one JetStream stream, "INVOCATIONS", on subject
// inv.<tenant>.<function>. Put never waits: records gather for a couple of
// milliseconds and each function's share of a batch becomes one message of
// newline-separated JSON, published without waiting for the acknowledgement.
// The stream keeps the last 2,000 messages of each function for at most a
// day, so reading a function's history is bounded. Records are an
// observation, not the source of truth: the events themselves are durable in
// their own streams, and a record dropped under overload loses nothing but
// a line of history.
package records

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"aloft/internal/fn"
)

// Stream is the name of the records stream.
const Stream = "INVOCATIONS"

const (
	subjectPrefix = "inv."
	maxPerSubject = 2000
	maxAge        = 24 * time.Hour
	queueLen      = 1 << 16
	gather        = 2 * time.Millisecond
	maxBatchBytes = 256 << 10
	maxErrorText  = 512
)

// Status is where an invocation stands.
type Status string

// Statuses of an invocation, in the order they usually happen.
const (
	Queued       Status = "queued"
	Running      Status = "running"
	Succeeded    Status = "succeeded"
	Retrying     Status = "retrying"
	DeadLettered Status = "dead-lettered"
	Failed       Status = "failed"
)

// Record is one change of an invocation's status.
type Record struct {
	ID       string `json:"id"`
	Tenant   string `json:"tenant"`
	Function string `json:"function"`
	Version  string `json:"version,omitempty"`
	Trigger  string `json:"trigger,omitempty"`
	Status   Status `json:"status"`
	Attempt  int    `json:"attempt,omitempty"`
	// Time is when the status changed; zero means now.
	Time time.Time `json:"time"`
	// Duration of the attempt, for succeeded, retrying and failed.
	Duration time.Duration `json:"duration,omitempty"`
	// Error is "errorType: errorMessage", for retrying, failed and
	// dead-lettered.
	Error string `json:"error,omitempty"`
}

// appendJSON appends r as encoding/json encodes it, without reflection:
// every event invocation writes two or three records.
func (r *Record) appendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = fn.AppendJSONString(b, r.ID)
	b = append(b, `,"tenant":`...)
	b = fn.AppendJSONString(b, r.Tenant)
	b = append(b, `,"function":`...)
	b = fn.AppendJSONString(b, r.Function)
	if r.Version != "" {
		b = append(b, `,"version":`...)
		b = fn.AppendJSONString(b, r.Version)
	}
	if r.Trigger != "" {
		b = append(b, `,"trigger":`...)
		b = fn.AppendJSONString(b, r.Trigger)
	}
	b = append(b, `,"status":`...)
	b = fn.AppendJSONString(b, string(r.Status))
	if r.Attempt != 0 {
		b = strconv.AppendInt(append(b, `,"attempt":`...), int64(r.Attempt), 10)
	}
	b = append(b, `,"time":"`...)
	b = r.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if r.Duration != 0 {
		b = strconv.AppendInt(append(b, `,"duration":`...), int64(r.Duration), 10)
	}
	if r.Error != "" {
		b = append(b, `,"error":`...)
		b = fn.AppendJSONString(b, r.Error)
	}
	return append(b, '}')
}

// Summary is an invocation's latest status, folded from its records.
type Summary struct {
	ID       string `json:"id"`
	Function string `json:"function"`
	Version  string `json:"version,omitempty"`
	Trigger  string `json:"trigger,omitempty"`
	Status   Status `json:"status"`
	Attempts int    `json:"attempts"`
	// Started is the time of the invocation's first record.
	Started time.Time `json:"started"`
	// Updated is the time of its latest record.
	Updated  time.Time   `json:"updated"`
	Duration fn.Duration `json:"duration,omitempty"`
	Error    string      `json:"error,omitempty"`
}

// Store writes and reads records. Its methods are safe for concurrent use.
type Store struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	log     *slog.Logger
	queue   chan Record
	flush   chan chan struct{}
	done    chan struct{}
	stopped chan struct{}
	closed  atomic.Bool
	dropped atomic.Uint64
	once    sync.Once
}

// Open creates or updates the records stream and starts the publisher,
// which Close stops. It fails when JetStream refuses the stream.
func Open(ctx context.Context, js jetstream.JetStream, replicas int, log *slog.Logger) (*Store, error) {
	if replicas < 1 {
		replicas = 1
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              Stream,
		Description:       "Aloft invocation records: the recent history of event invocations",
		Subjects:          []string{subjectPrefix + ">"},
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxAge:            maxAge,
		MaxMsgsPerSubject: maxPerSubject,
		MaxMsgSize:        maxBatchBytes + 64<<10,
		Replicas:          replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("open invocation records: %w", err)
	}
	s := &Store{js: js, stream: st, log: log, queue: make(chan Record, queueLen),
		flush: make(chan chan struct{}), done: make(chan struct{}), stopped: make(chan struct{})}
	go s.publish()
	return s, nil
}

// Put queues r and returns at once. It is dropped, and counted in Dropped,
// when the queue is full, after Close, or when the tenant or function cannot
// be a subject token.
func (s *Store) Put(r Record) {
	if s.closed.Load() || !fn.IsNameToken(r.Tenant) || !fn.IsNameToken(r.Function) {
		s.dropped.Add(1)
		return
	}
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	if len(r.Error) > maxErrorText {
		r.Error = r.Error[:maxErrorText]
	}
	select {
	case s.queue <- r:
	default:
		s.dropped.Add(1)
	}
}

// Dropped counts records that were not stored.
func (s *Store) Dropped() uint64 { return s.dropped.Load() }

// Flush waits until every record queued before it was handed to JetStream
// and acknowledged, or ctx ends.
func (s *Store) Flush(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case s.flush <- ack:
	case <-s.stopped:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close publishes what is queued (waiting at most a few seconds) and stops
// the publisher. Records put after Close are dropped.
func (s *Store) Close() error {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_ = s.Flush(ctx)
		s.closed.Store(true)
		close(s.done)
		<-s.stopped
	})
	return nil
}

// publish gathers queued records into one message per function every few
// milliseconds until Close.
func (s *Store) publish() {
	defer close(s.stopped)
	batches := map[string]*bytes.Buffer{}
	var line []byte
	enc := func(r Record) {
		subj := subjectPrefix + r.Tenant + "." + r.Function
		b := batches[subj]
		if b == nil {
			b = &bytes.Buffer{}
			batches[subj] = b
		}
		line = r.appendJSON(line[:0])
		b.Write(line)
		b.WriteByte('\n')
		if b.Len() >= maxBatchBytes {
			s.send(subj, b)
		}
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var ack chan struct{}
		select {
		case r := <-s.queue:
			enc(r)
			timer.Reset(gather)
			select {
			case <-timer.C:
			case ack = <-s.flush:
				timer.Stop()
			case <-s.done:
				timer.Stop()
			}
		case ack = <-s.flush:
		case <-s.done:
			return
		}
		for more := true; more; {
			select {
			case r := <-s.queue:
				enc(r)
			default:
				more = false
			}
		}
		for subj, b := range batches {
			if b.Len() > 0 {
				s.send(subj, b)
			}
		}
		if ack != nil {
			select {
			case <-s.js.PublishAsyncComplete():
			case <-time.After(3 * time.Second):
			}
			close(ack)
		}
	}
}

func (s *Store) send(subj string, b *bytes.Buffer) {
	data := bytes.Clone(b.Bytes())
	b.Reset()
	if _, err := s.js.PublishMsgAsync(&nats.Msg{Subject: subj, Data: data}); err != nil {
		s.dropped.Add(uint64(bytes.Count(data, []byte{'\n'})))
		s.log.Warn("publish invocation records", "error", err)
	}
}

// List returns the latest status of the function's most recent invocations
// (at most limit, newest first; limit ≤ 0 means 100). It returns fn.Invalid
// for a tenant or function that cannot name one and an internal error when
// the stream cannot be read.
func (s *Store) List(ctx context.Context, tenant, function string, limit int) ([]Summary, error) {
	if !fn.IsNameToken(tenant) || !fn.IsNameToken(function) {
		return nil, fn.Invalid("invocations of %q/%q: tenant and function must be names", tenant, function)
	}
	if limit <= 0 {
		limit = 100
	}
	subj := subjectPrefix + tenant + "." + function
	info, err := s.stream.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return nil, fmt.Errorf("list invocations: %w", err)
	}
	total := info.State.Subjects[subj]
	if total == 0 {
		return []Summary{}, nil
	}
	cons, err := s.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
	if err != nil {
		return nil, fmt.Errorf("list invocations: %w", err)
	}
	byID := map[string]*Summary{}
	for read := uint64(0); read < total; {
		batch, err := cons.Fetch(int(min(total-read, 256)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("list invocations: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			fold(byID, m.Data())
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("list invocations: %w", err)
		}
		if n == 0 {
			break
		}
		read += uint64(n)
	}
	out := make([]Summary, 0, len(byID))
	for _, sm := range byID {
		out = append(out, *sm)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Started.Equal(out[j].Started) {
			return out[i].Started.After(out[j].Started)
		}
		return out[i].ID > out[j].ID
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// fold applies the records of one message to byID.
func fold(byID map[string]*Summary, data []byte) {
	for line := range bytes.SplitSeq(data, []byte{'\n'}) {
		if len(line) == 0 {
			continue
		}
		var r Record
		if json.Unmarshal(line, &r) != nil {
			continue
		}
		sm := byID[r.ID]
		if sm == nil {
			sm = &Summary{ID: r.ID, Function: r.Function, Started: r.Time}
			byID[r.ID] = sm
		}
		if r.Time.Before(sm.Started) {
			sm.Started = r.Time
		}
		if r.Attempt > sm.Attempts {
			sm.Attempts = r.Attempt
		}
		if r.Version != "" {
			sm.Version = r.Version
		}
		if r.Trigger != "" {
			sm.Trigger = r.Trigger
		}
		// Records of one invocation can come from different nodes; the
		// latest by time wins, and a final status beats a running one
		// stamped at the same instant. Queued is only ever an invocation's
		// first status: stamped after a later one (the accepting node was
		// slower than the executing one), it must not hide it.
		if r.Status == Queued && sm.Status != "" && sm.Status != Queued {
			continue
		}
		if r.Time.After(sm.Updated) || (r.Time.Equal(sm.Updated) && rank(r.Status) >= rank(sm.Status)) {
			sm.Updated = r.Time
			sm.Status = r.Status
			if r.Duration > 0 {
				sm.Duration = fn.Duration(r.Duration)
			}
			if r.Error != "" || r.Status == Succeeded {
				sm.Error = r.Error
			}
		}
	}
}

func rank(s Status) int {
	switch s {
	case Queued:
		return 0
	case Running:
		return 1
	case Retrying:
		return 2
	default:
		return 3
	}
}

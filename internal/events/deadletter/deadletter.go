// Package deadletter keeps the events Aloft gave up on: asynchronous
// invocations and queue messages whose retries or maximum age ran out. Each
// entry holds the payload, the last error and the attempt count, so a user
// can see what failed (`aloft dlq ls NAME`) and send it again
// (`aloft dlq redrive NAME`).
//
// Entries live in one JetStream stream, "DLQ" (file storage, kept 14 days),
// one message per entry on subject dlq.<tenant>.<function>: the body is the
// failed event's payload, and a header holds the rest of the entry as JSON.
// Put waits for the
// stream's acknowledgement and is deduplicated on (tenant, function, source,
// id): a dead-lettering retried after a crash stores the entry once.
package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"aloft/internal/fn"
)

// Stream is the name of the dead-letter stream.
const Stream = "DLQ"

const (
	subjectPrefix = "dlq."
	maxAge        = 14 * 24 * time.Hour
	dedupWindow   = 10 * time.Minute
	// maxEntry bounds one stored entry: a 1 MiB async payload (the
	// largest any trigger accepts) plus its description.
	maxEntry = 2 << 20
	// entryHeader carries the entry without its payload, as JSON; the
	// message body is the payload itself, so an entry is as large as the
	// event that failed, not a third larger as base64 would make it.
	entryHeader = "Aloft-Dead-Letter"
)

// Entry is one dead-lettered event.
type Entry struct {
	// ID is the async invocation id, or the queue message id.
	ID       string `json:"id"`
	Tenant   string `json:"tenant"`
	Function string `json:"function"`
	// Source is "async", "queue:<name>" or "subject:<subject>".
	Source    string `json:"source"`
	Qualifier string `json:"qualifier,omitempty"`
	// Payload is the event payload, or the queue message body.
	Payload []byte `json:"payload"`
	// Headers are the event's extra headers (CloudEvents for http
	// functions) or the queue message's attributes.
	Headers map[string]string `json:"headers,omitempty"`
	// Trigger is what produced the event: "api", "schedule", "subject",
	// "destination", "queue".
	Trigger      string `json:"trigger,omitempty"`
	ErrorType    string `json:"errorType,omitempty"`
	ErrorMessage string `json:"errorMessage,omitempty"`
	Attempts     int    `json:"attempts"`
	// Enqueued is when the event was first accepted.
	Enqueued time.Time `json:"enqueued"`
	// DeadLettered is set by Put when zero.
	DeadLettered time.Time `json:"deadLettered"`
	// Reason says why Aloft gave up: "retries exhausted", "maximum event
	// age exceeded", "function not found", ...
	Reason string `json:"reason"`
	// Seq is the entry's stream sequence; set by List, ignored by Put.
	Seq uint64 `json:"seq"`
}

// Store reads and writes dead-letter entries. Its methods are safe for
// concurrent use.
type Store struct {
	js     jetstream.JetStream
	stream jetstream.Stream
}

// Open creates or updates the DLQ stream with replicas copies. It fails when
// JetStream refuses the stream.
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (*Store, error) {
	if replicas < 1 {
		replicas = 1
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        Stream,
		Description: "Aloft dead letters: events whose retries or age ran out",
		Subjects:    []string{subjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      maxAge,
		MaxMsgSize:  maxEntry,
		Duplicates:  dedupWindow,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("open dead letters: %w", err)
	}
	return &Store{js: js, stream: st}, nil
}

func subject(tenant, function string) string {
	return subjectPrefix + tenant + "." + function
}

// Put stores e durably: it returns once JetStream has acknowledged it. A
// second Put of the same (tenant, function, source, id) within ten minutes is
// stored once. It returns fn.Invalid when the tenant or function cannot name
// a subject, and an internal error when JetStream does not acknowledge.
func (s *Store) Put(ctx context.Context, e *Entry) error {
	if !fn.IsNameToken(e.Tenant) || !fn.IsNameToken(e.Function) {
		return fn.Invalid("dead letter for %q/%q: tenant and function must be names", e.Tenant, e.Function)
	}
	if e.DeadLettered.IsZero() {
		e.DeadLettered = time.Now().UTC()
	}
	meta := *e
	meta.Payload = nil
	desc, err := json.Marshal(&meta)
	if err != nil {
		return fmt.Errorf("dead-letter %s: %w", e.ID, err)
	}
	msg := &nats.Msg{Subject: subject(e.Tenant, e.Function), Data: e.Payload, Header: nats.Header{}}
	msg.Header.Set(entryHeader, string(desc))
	msg.Header.Set(jetstream.MsgIDHeader, e.Tenant+"/"+e.Function+"/"+e.Source+"/"+e.ID)
	if _, err := s.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("dead-letter %s: %w", e.ID, err)
	}
	return nil
}

// List returns the function's entries, oldest first; with limit > 0 only
// the newest limit of them. It returns fn.Invalid for a tenant or function
// that cannot name one, and an internal error when the stream cannot be
// read.
func (s *Store) List(ctx context.Context, tenant, function string, limit int) ([]*Entry, error) {
	if !fn.IsNameToken(tenant) || !fn.IsNameToken(function) {
		return nil, fn.Invalid("dead letters of %q/%q: tenant and function must be names", tenant, function)
	}
	subj := subject(tenant, function)
	info, err := s.stream.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	total := info.State.Subjects[subj]
	if total == 0 {
		return nil, nil
	}
	cons, err := s.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subj},
	})
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	var out []*Entry
	for uint64(len(out)) < total {
		batch, err := cons.Fetch(int(min(total-uint64(len(out)), 256)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("list dead letters: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var e Entry
			if err := json.Unmarshal([]byte(m.Headers().Get(entryHeader)), &e); err != nil {
				continue
			}
			e.Payload = m.Data()
			if md, err := m.Metadata(); err == nil {
				e.Seq = md.Sequence.Stream
			}
			out = append(out, &e)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("list dead letters: %w", err)
		}
		if n == 0 {
			break // entries removed while reading
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}

// Remove deletes the entry at seq, which must belong to the function. It
// returns fn.NotFound when there is no such entry of that function.
func (s *Store) Remove(ctx context.Context, tenant, function string, seq uint64) error {
	m, err := s.stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) || (err == nil && m.Subject != subject(tenant, function)) {
		return fn.NotFound("dead letter %d of function %q not found", seq, function)
	}
	if err != nil {
		return fmt.Errorf("remove dead letter %d: %w", seq, err)
	}
	if err := s.stream.DeleteMsg(ctx, seq); err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return fn.NotFound("dead letter %d of function %q not found", seq, function)
		}
		return fmt.Errorf("remove dead letter %d: %w", seq, err)
	}
	return nil
}

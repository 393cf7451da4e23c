package queue

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"aloft/internal/events/deadletter"
	"aloft/internal/events/records"
	"aloft/internal/fn"
	"aloft/internal/invoke"
)

const (
	// maxEventBytes bounds one SQS batch event (Lambda's 6 MB invocation
	// payload); a larger fetched batch runs as several invocations.
	maxEventBytes = 6 << 20
	// recordOverhead estimates a record's JSON beyond its body and
	// attributes.
	recordOverhead = 700
	// touchAfter is how long a fetched message may wait before its ack
	// wait is reset (InProgress) as its invocation starts.
	touchAfter = time.Second
	// maxRetryDelay caps the backoff of a failed message.
	maxRetryDelay = 5 * time.Minute
	// deadLetterTimeout bounds storing one dead letter.
	deadLetterTimeout = 10 * time.Second

	// lostDeliveries is how many more deliveries than its retries allow a
	// message may have without a recorded failure (each a node that
	// stopped while holding it) before it is dead-lettered unrun: a
	// message that takes every node holding it down must not loop forever.
	lostDeliveries = 10

	reasonExhausted = "retries exhausted"
	reasonNotFound  = "function not found"
)

// item is one delivered message.
type item struct {
	msg       jetstream.Msg
	id        string
	body      string
	attrs     map[string]string
	sent      time.Time
	delivered int
	failures  int // failed attempts before this delivery (read only for a redelivery)
	last      failure
	seq       uint64
	received  time.Time
}

// parseItem reads a delivered message's metadata and headers.
func parseItem(f fetched) (*item, error) {
	if f.md == nil {
		_, err := f.msg.Metadata()
		return nil, cmp.Or(err, errors.New("no metadata"))
	}
	m, md := f.msg, f.md
	it := &item{
		msg: m, body: string(m.Data()), delivered: int(md.NumDelivered),
		seq: md.Sequence.Stream, received: f.at,
	}
	it.id, it.sent, it.attrs = parseHeaders(m.Headers(), md.Sequence.Stream, md.Timestamp)
	return it, nil
}

// parseHeaders reads a stored message's id, send time and attributes,
// falling back to the stream's sequence and timestamp for what is missing
// or malformed.
func parseHeaders(h nats.Header, seq uint64, stored time.Time) (id string, sent time.Time, attrs map[string]string) {
	id = h.Get(hdrID)
	if id == "" {
		id = "seq-" + strconv.FormatUint(seq, 10)
	}
	sent = stored
	if ms, err := strconv.ParseInt(h.Get(hdrSent), 10, 64); err == nil && ms > 0 {
		sent = time.UnixMilli(ms)
	}
	if a := h.Get(hdrAttrs); a != "" {
		if err := json.Unmarshal([]byte(a), &attrs); err != nil {
			attrs = nil
		}
	}
	return id, sent, attrs
}

// handle runs one fetched batch under ctx (Run's context).
func (l *loop) handle(ctx context.Context, set settings, msgs []fetched) {
	s := l.spec
	run := make([]*item, 0, len(msgs))
	for _, f := range msgs {
		it, err := parseItem(f)
		if err != nil {
			l.log.Warn("queue message without metadata", "error", err)
			_ = f.msg.Nak()
			continue
		}
		if it.delivered > 1 {
			// A redelivery: after failures, or after a node stopped
			// holding it (which ran nothing, or did not report back).
			if it.last, err = l.loadFailures(ctx, it); err != nil {
				l.log.Warn("read queue message attempts", "error", err)
				_ = it.msg.NakWithDelay(backoff(l.q.cfg.RetryBase, 1, rand.Float64()))
				continue
			}
			it.failures = it.last.Failures
		}
		switch {
		case it.failures > s.retries:
			// Dead-lettered before, and the ack was lost: never run again.
			l.deadLetter(ctx, it, it.failures, reasonExhausted, it.last.Type, it.last.Message)
			continue
		case it.delivered > s.retries+1+lostDeliveries:
			l.deadLetter(ctx, it, it.failures, reasonExhausted, "Aloft.AttemptLost",
				fmt.Sprintf("delivered %d times without an attempt reporting back: its nodes stopped or it outlived its visibility timeout", it.delivered))
			continue
		}
		run = append(run, it)
	}
	started := 0
	if set.runtime.EventStyle() {
		for _, chunk := range chunks(run) {
			if ctx.Err() != nil {
				break
			}
			touch(chunk)
			l.invoke(ctx, chunk, l.q.sqsEvent(l.spec, chunk), nil, true)
			started += len(chunk)
		}
	} else {
		for _, it := range run {
			if ctx.Err() != nil {
				break
			}
			touch([]*item{it})
			l.invoke(ctx, []*item{it}, []byte(it.body), l.cloudEvent(it), false)
			started++
		}
	}
	for _, it := range run[started:] {
		_ = it.msg.Nak() // not started: let another consumer have it now
	}
}

// chunks splits items into runs whose SQS event stays under
// maxEventBytes.
func chunks(items []*item) [][]*item {
	var out [][]*item
	start, size := 0, 0
	for i, it := range items {
		n := len(it.body) + recordOverhead
		for k, v := range it.attrs {
			n += len(k) + len(v) + 100
		}
		if i > start && size+n > maxEventBytes {
			out = append(out, items[start:i])
			start, size = i, 0
		}
		size += n
	}
	if start < len(items) {
		out = append(out, items[start:])
	}
	return out
}

// touch resets the ack wait of messages that waited since they arrived.
func touch(items []*item) {
	for _, it := range items {
		if time.Since(it.received) > touchAfter {
			_ = it.msg.InProgress()
		}
	}
}

// invoke runs one invocation for items and settles them: acks the ones
// that succeeded, retries or dead-letters the others. When ctx ends while
// the invocation had not answered, the messages are left unacknowledged,
// to be delivered again.
func (l *loop) invoke(ctx context.Context, items []*item, payload []byte, headers map[string]string, partial bool) {
	s := l.spec
	id := newUUID()
	attempt := 0
	for _, it := range items {
		attempt = max(attempt, it.failures+1)
	}
	rec := records.Record{ID: id, Tenant: s.tenant, Function: s.function, Trigger: "queue", Attempt: attempt}
	l.record(rec, records.Running)
	l.q.stats.batches.Add(1)
	l.q.stats.delivered.Add(uint64(len(items)))
	start := time.Now()
	resp, err := l.q.cfg.Invoker.Invoke(ctx, invoke.Request{
		Tenant: s.tenant, Function: s.function, Qualifier: s.qualifier, ID: id,
		Payload: payload, Headers: headers,
	})
	rec.Duration = time.Since(start)
	if err != nil && ctx.Err() != nil {
		return
	}
	if resp != nil {
		rec.Version = resp.Version
	}
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.id
	}
	v := judge(ids, resp, err, partial)
	if v.internal != nil {
		l.log.Warn("queue invocation", "invocation_id", id, "error", v.internal)
	}
	// The record first: once the messages are settled, readers may look.
	if v.any {
		rec.Error = v.errorType + ": " + v.errorMessage
		if n := count(v.failed); n < len(items) {
			rec.Error = fmt.Sprintf("%s: %d of %d messages reported failed", v.errorType, n, len(items))
		}
		l.record(rec, records.Failed)
	} else {
		l.record(rec, records.Succeeded)
	}
	var cleared []*item
	for i, it := range items {
		if !v.failed[i] {
			l.q.stats.succeeded.Add(1)
			_ = it.msg.Ack()
			if it.failures > 0 {
				cleared = append(cleared, it)
			}
			continue
		}
		l.retry(ctx, it, v.errorType, v.errorMessage)
	}
	for _, it := range cleared { // after the acks: bookkeeping only
		if err := l.q.attempts.Delete(ctx, l.attemptsKey(it)); err != nil {
			l.log.Debug("delete queue message attempts", "error", err)
		}
	}
	if l.log.Enabled(ctx, slog.LevelDebug) { // spares the attributes' allocations
		l.log.Debug("queue invocation done", "invocation_id", id, "duration", rec.Duration, "error", rec.Error)
	}
}

func count(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

func (l *loop) record(r records.Record, st records.Status) {
	if l.q.cfg.Records == nil {
		return
	}
	r.Status = st
	l.q.cfg.Records.Put(r)
}

// retry records a failed attempt and redelivers the message after a
// backoff, or dead-letters it when it failed as often as the trigger
// allows. The failure is recorded first, so that once it is dead-lettered
// no later delivery runs it.
func (l *loop) retry(ctx context.Context, it *item, errorType, errorMessage string) {
	failures := it.failures + 1
	l.saveFailures(ctx, it, failure{Failures: failures, Type: errorType, Message: errorMessage})
	if failures > l.spec.retries {
		reason := reasonExhausted
		if errorType == "not_found" {
			reason = reasonNotFound
		}
		l.deadLetter(ctx, it, failures, reason, errorType, errorMessage)
		return
	}
	_ = it.msg.NakWithDelay(backoff(l.q.cfg.RetryBase, failures, rand.Float64()))
	l.q.stats.retried.Add(1)
}

// failure is a message's failed attempts, as kept in the attempts bucket.
type failure struct {
	Failures int    `json:"failures"`
	Type     string `json:"errorType,omitempty"`
	Message  string `json:"errorMessage,omitempty"`
}

func (l *loop) attemptsKey(it *item) string {
	return l.spec.tenant + "." + l.spec.queue + "." + strconv.FormatUint(it.seq, 10)
}

// loadFailures reads a redelivered message's failures (none when the
// bucket has no entry, or an unreadable one).
func (l *loop) loadFailures(ctx context.Context, it *item) (failure, error) {
	e, err := l.q.attempts.Get(ctx, l.attemptsKey(it))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return failure{}, nil
	}
	if err != nil {
		return failure{}, err
	}
	var fl failure
	if err := json.Unmarshal(e.Value(), &fl); err != nil || fl.Failures < 0 {
		l.log.Warn("decode queue message attempts", "error", err)
		return failure{}, nil
	}
	return fl, nil
}

// saveFailures records a failed attempt for later deliveries, on any node.
// A failed write is logged: the message may then run once more than its
// retries allow.
func (l *loop) saveFailures(ctx context.Context, it *item, fl failure) {
	b, err := json.Marshal(fl)
	if err == nil {
		_, err = l.q.attempts.Put(ctx, l.attemptsKey(it), b)
	}
	if err != nil {
		l.log.Warn("record queue message attempt", "error", err)
	}
}

// deadLetter stores it in the dead letters and then removes it from the
// queue. When the dead letter cannot be stored, the message stays and
// comes back after a backoff.
func (l *loop) deadLetter(ctx context.Context, it *item, attempts int, reason, errorType, errorMessage string) {
	s := l.spec
	ctx, cancel := context.WithTimeout(ctx, deadLetterTimeout)
	defer cancel()
	err := l.q.cfg.DeadLetters.Put(ctx, &deadletter.Entry{
		ID: it.id, Tenant: s.tenant, Function: s.function, Source: l.source, Qualifier: s.qualifier,
		Payload: []byte(it.body), Headers: it.attrs, Trigger: "queue",
		ErrorType: errorType, ErrorMessage: errorMessage, Attempts: attempts,
		Enqueued: it.sent, Reason: reason,
	})
	if err != nil {
		l.log.Error("queue dead-letter", "error", err)
		if ctx.Err() == nil {
			_ = it.msg.NakWithDelay(backoff(l.q.cfg.RetryBase, max(it.failures, 1), rand.Float64()))
		}
		return
	}
	if err := it.msg.DoubleAck(ctx); err != nil {
		l.log.Warn("queue ack of a dead-lettered message", "error", err)
	}
	l.q.stats.deadLettered.Add(1)
	l.log.Info("queue message dead-lettered", "reason", reason, "attempts", attempts)
}

// backoff returns the pause before the next delivery of a message that
// failed failures times: base doubled per failure after the first, capped
// at maxRetryDelay, then jittered into [d/2, d) by jitter in [0, 1).
func backoff(base time.Duration, failures int, jitter float64) time.Duration {
	d := base
	for i := 1; i < failures && d < maxRetryDelay; i++ {
		d *= 2
	}
	d = min(d, maxRetryDelay)
	return d/2 + time.Duration(jitter*float64(d/2))
}

// verdict is how an invocation went for each of its messages.
type verdict struct {
	failed       []bool
	any          bool
	errorType    string
	errorMessage string
	// internal is an error not meant for users, to log.
	internal error
}

// judge decides which of the messages ids failed, given the invocation's
// response or error. partial honours a batchItemFailures answer.
func judge(ids []string, resp *invoke.Response, err error, partial bool) verdict {
	v := verdict{failed: make([]bool, len(ids))}
	all := func(errorType, msg string) verdict {
		for i := range v.failed {
			v.failed[i] = true
		}
		v.any, v.errorType, v.errorMessage = len(ids) > 0, errorType, msg
		return v
	}
	var fe *fn.Error
	switch {
	case errors.As(err, &fe):
		return all(fe.Code, fe.Message)
	case err != nil:
		v.internal = err
		return all("internal", "the invocation failed inside Aloft: see the server log")
	case resp == nil:
		return all("internal", "the invoker returned no response")
	case resp.FunctionError:
		t, m := functionError(resp.Payload)
		return all(t, m)
	case !partial:
		return v
	}
	failures, ok := parseBatchResponse(resp.Payload)
	if !ok {
		return all("Aloft.InvalidBatchItemFailures", "the function's batchItemFailures is malformed: the whole batch is retried")
	}
	if len(failures) == 0 {
		return v
	}
	index := make(map[string][]int, len(ids))
	for i, id := range ids {
		index[id] = append(index[id], i)
	}
	for _, f := range failures {
		at, known := index[f]
		if !known {
			return all("Aloft.InvalidBatchItemFailures",
				fmt.Sprintf("the function reported item %q, which is not in the batch: the whole batch is retried", truncate(f, 100)))
		}
		for _, i := range at {
			v.failed[i] = true
		}
	}
	v.any, v.errorType = true, "Aloft.BatchItemFailure"
	v.errorMessage = "the function reported this message as failed"
	return v
}

// functionError reads a Lambda error payload {"errorType","errorMessage"}.
func functionError(payload []byte) (errorType, message string) {
	var e struct {
		Type    string `json:"errorType"`
		Message string `json:"errorMessage"`
	}
	if json.Unmarshal(payload, &e) != nil || (e.Type == "" && e.Message == "") {
		return "Unhandled", truncate(string(payload), 512)
	}
	if e.Type == "" {
		e.Type = "Unhandled"
	}
	return e.Type, e.Message
}

// parseBatchResponse reads a partial batch response. Anything but a JSON
// object with a batchItemFailures list (an empty or null list, another
// answer altogether) reports no failures. ok is false when the list is
// malformed: not a list, or an entry without a non-empty string
// itemIdentifier; Lambda then fails the whole batch.
func parseBatchResponse(payload []byte) (failures []string, ok bool) {
	if !mayListFailures(payload) {
		return nil, true // what decoding it would say, without decoding it
	}
	return decodeBatchResponse(payload)
}

// decodeBatchResponse is parseBatchResponse by decoding payload.
func decodeBatchResponse(payload []byte) (failures []string, ok bool) {
	var top struct {
		BatchItemFailures json.RawMessage `json:"batchItemFailures"`
	}
	if json.Unmarshal(payload, &top) != nil || len(top.BatchItemFailures) == 0 || string(top.BatchItemFailures) == "null" {
		return nil, true
	}
	var list []json.RawMessage
	if json.Unmarshal(top.BatchItemFailures, &list) != nil {
		return nil, false
	}
	for _, raw := range list {
		var e struct {
			ID *string `json:"itemIdentifier"`
		}
		if json.Unmarshal(raw, &e) != nil || e.ID == nil || *e.ID == "" {
			return nil, false
		}
		failures = append(failures, *e.ID)
	}
	return failures, true
}

// failuresKey is the partial batch response's key.
const failuresKey = "batchItemFailures"

// mayListFailures reports whether payload may be a JSON object with a
// top-level key encoding/json would take for failuresKey. It walks the
// top-level keys without decoding anything and is false only when payload
// is not a JSON object, or is one whose keys it walked to the end, each
// plain ASCII (no escape) and none equal to failuresKey but for case;
// parseBatchResponse reports no failures for those payloads (invalid JSON
// included), so it need not decode them. Anything it does not expect
// answers true.
func mayListFailures(p []byte) bool {
	i := skipSpace(p, 0)
	if i == len(p) || p[i] != '{' {
		return false
	}
	i = skipSpace(p, i+1)
	if i < len(p) && p[i] == '}' {
		return false
	}
	for i < len(p) && p[i] == '"' {
		end, plain := scanString(p, i)
		if end < 0 || !plain || bytes.EqualFold(p[i+1:end-1], []byte(failuresKey)) {
			return true
		}
		i = skipSpace(p, end)
		if i == len(p) || p[i] != ':' {
			return true
		}
		if i = skipValue(p, skipSpace(p, i+1)); i < 0 {
			return true
		}
		i = skipSpace(p, i)
		switch {
		case i == len(p):
			return true
		case p[i] == '}':
			return false
		case p[i] == ',':
			i = skipSpace(p, i+1)
		default:
			return true
		}
	}
	return true
}

func skipSpace(p []byte, i int) int {
	for i < len(p) && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r') {
		i++
	}
	return i
}

// scanString returns the index after the JSON string starting at p[i]
// (a quote), or -1 when it does not end, and whether it is plain: ASCII
// without escapes.
func scanString(p []byte, i int) (end int, plain bool) {
	plain = true
	for j := i + 1; j < len(p); j++ {
		switch c := p[j]; {
		case c == '"':
			return j + 1, plain
		case c == '\\':
			plain = false
			j++
		case c >= utf8.RuneSelf:
			plain = false
		}
	}
	return -1, false
}

// skipString returns the index after the JSON string starting at p[i] (a
// quote), or -1 when it does not end: its closing quote is the first one
// after an even number of backslashes.
func skipString(p []byte, i int) int {
	for j := i + 1; ; j++ {
		k := bytes.IndexByte(p[j:], '"')
		if k < 0 {
			return -1
		}
		j += k
		escaped := false
		for b := j - 1; b > i && p[b] == '\\'; b-- {
			escaped = !escaped
		}
		if !escaped {
			return j + 1
		}
	}
}

// skipValue returns the index after the JSON value starting at p[i], or
// -1 when it does not find its end. It checks no more than it needs to
// find the end of a valid value.
func skipValue(p []byte, i int) int {
	if i == len(p) {
		return -1
	}
	switch p[i] {
	case '"':
		return skipString(p, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(p); j++ {
			switch p[j] {
			case '"':
				end := skipString(p, j)
				if end < 0 {
					return -1
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	j := i
	for j < len(p) && p[j] != ',' && p[j] != '}' && p[j] != ']' && p[j] != ' ' &&
		p[j] != '\t' && p[j] != '\n' && p[j] != '\r' {
		j++
	}
	if j == i {
		return -1
	}
	return j
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// cloudEvent returns the binary-mode CloudEvent headers of one message
// for an http or wasm function.
func (l *loop) cloudEvent(it *item) map[string]string {
	h := map[string]string{
		"ce-specversion":  "1.0",
		"ce-id":           it.id,
		"ce-source":       "/aloft/queues/" + l.spec.tenant + "/" + l.spec.queue,
		"ce-type":         "dev.aloft.queue.message",
		"ce-time":         it.sent.UTC().Format(time.RFC3339Nano),
		"ce-aloftattempt": strconv.Itoa(it.delivered),
		"Content-Type":    contentType(it.body),
	}
	if len(it.attrs) > 0 {
		b, _ := json.Marshal(it.attrs) // map[string]string always encodes
		h[hdrAttrs] = string(b)
	}
	return h
}

func contentType(body string) string {
	if json.Valid([]byte(body)) {
		return "application/json"
	}
	return "text/plain; charset=utf-8"
}

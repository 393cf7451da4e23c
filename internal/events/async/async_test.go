package async

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"aloft/internal/events/records"
	"aloft/internal/fn"
)

func TestNewConfigErrors(t *testing.T) {
	_, err := New(Config{Replicas: 9, AckWait: -time.Second})
	if err == nil {
		t.Fatal("New accepted an empty config")
	}
	for _, want := range []string{"jetstream is missing", "function source is missing", "invoker is missing",
		"dead-letter store is missing", "replicas 9", "ack wait -1s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestEnqueueRunsOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createFunction(t, "hello")
	a := e.newAsync(t)
	run(t, a)
	headers := map[string]string{"ce-id": "42", "ce-type": "com.example.created", "Content-Type": "application/json"}
	id := enqueue(t, a, Event{Function: "hello", Qualifier: "prod", Payload: []byte(`{"k":1}`),
		Headers: headers, TraceID: "Root=1-abc", Trigger: "schedule"})
	eventually(t, "the event to succeed", func() bool { return a.Stats().Succeeded == 1 })
	eventually(t, "the stream to be empty", func() bool { return streamMsgs(t, a) == 0 })
	calls := e.inv.callsOf("hello")
	if len(calls) != 1 {
		t.Fatalf("function ran %d times, want once", len(calls))
	}
	req := calls[0].req
	if req.ID != id || req.Tenant != tenant || req.Qualifier != "prod" || string(req.Payload) != `{"k":1}` ||
		req.TraceID != "Root=1-abc" || !maps.Equal(req.Headers, headers) {
		t.Errorf("request = %+v, want id %s, qualifier prod, the payload, trace and headers", req, id)
	}
	s := a.Stats()
	if s.Enqueued != 1 || s.Started != 1 || s.Succeeded != 1 || s.Retried != 0 || s.DeadLettered != 0 || s.InFlight != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createFunction(t, "hello")
	a := e.newAsync(t)
	ctx := context.Background()
	ev := Event{Tenant: tenant, Function: "hello", Payload: []byte(`1`), IdempotencyKey: "order-17"}
	first, dup, err := a.Enqueue(ctx, ev)
	if err != nil || dup {
		t.Fatalf("first enqueue = %q, %v, %v", first, dup, err)
	}
	second, dup, err := a.Enqueue(ctx, ev)
	if err != nil || !dup || second != first {
		t.Fatalf("second enqueue = %q, %v, %v; want %q, duplicate", second, dup, err, first)
	}
	// With a given id, a duplicate answers the id stored first.
	given := Event{Tenant: tenant, Function: "hello", ID: "given-1", IdempotencyKey: "order-19"}
	if id, _, err := a.Enqueue(ctx, given); err != nil || id != "given-1" {
		t.Fatalf("enqueue with id = %q, %v", id, err)
	}
	given.ID = "given-2"
	if id, dup, err := a.Enqueue(ctx, given); err != nil || !dup || id != "given-1" {
		t.Fatalf("duplicate with another id = %q, %v, %v; want given-1", id, dup, err)
	}
	run(t, a)
	eventually(t, "the events to succeed", func() bool { return a.Stats().Succeeded == 2 })
	eventually(t, "the stream to be empty", func() bool { return streamMsgs(t, a) == 0 })
	// The first event has run and left the stream: still the same id.
	third, dup, err := a.Enqueue(ctx, ev)
	if err != nil || !dup || third != first {
		t.Fatalf("enqueue after the run = %q, %v, %v; want %q, duplicate", third, dup, err, first)
	}
	ev.IdempotencyKey = "order-18"
	other, dup, err := a.Enqueue(ctx, ev)
	if err != nil || dup || other == first {
		t.Fatalf("enqueue with another key = %q, %v, %v; want a new id", other, dup, err)
	}
	eventually(t, "the third event to succeed", func() bool { return a.Stats().Succeeded == 3 })
	if n := e.inv.count("hello"); n != 3 {
		t.Errorf("function ran %d times, want 3", n)
	}
	ran := map[string]bool{}
	for _, c := range e.inv.callsOf("hello") {
		ran[c.req.ID] = true
	}
	if !ran[first] || !ran["given-1"] || !ran[other] {
		t.Errorf("ran %v, want %s, given-1 and %s", ran, first, other)
	}
	if s := a.Stats(); s.Enqueued != 3 || s.Duplicates != 3 {
		t.Errorf("stats = %+v, want 3 enqueued and 3 duplicates", s)
	}
}

func TestEnqueueErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createFunction(t, "hello")
	a := e.newAsync(t)
	tests := []struct {
		name   string
		ev     Event
		status int
		msg    string
	}{
		{"payload too large", Event{Function: "hello", Payload: make([]byte, 1<<20+1)}, http.StatusRequestEntityTooLarge,
			"async payload is 1048577 bytes: the limit is"},
		{"unknown function", Event{Function: "nope"}, http.StatusNotFound, `function "nope" not found`},
		{"bad function name", Event{Function: "No_Such"}, http.StatusBadRequest, "function name"},
		{"bad tenant", Event{Tenant: "a.b", Function: "hello"}, http.StatusBadRequest, "tenant"},
		{"bad id", Event{Function: "hello", ID: "a.b"}, http.StatusBadRequest, "invocation id"},
		{"bad qualifier", Event{Function: "hello", Qualifier: "0"}, http.StatusBadRequest, "qualifier"},
		{"bad key", Event{Function: "hello", IdempotencyKey: "a\nb"}, http.StatusBadRequest, "idempotency key"},
		{"bad trigger", Event{Function: "hello", Trigger: "Cron!"}, http.StatusBadRequest, "trigger"},
		{"bad trace", Event{Function: "hello", TraceID: "x\r\ny"}, http.StatusBadRequest, "trace id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.ev.Tenant == "" {
				tt.ev.Tenant = tenant
			}
			_, _, err := a.Enqueue(context.Background(), tt.ev)
			wantStatus(t, err, tt.status)
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not say %q", err, tt.msg)
			}
		})
	}
	if a.ready.Load() {
		if n := streamMsgs(t, a); n != 0 {
			t.Errorf("stream holds %d events after refused enqueues, want 0", n)
		}
	}
	if s := a.Stats(); s.Enqueued != 0 {
		t.Errorf("stats = %+v, want nothing enqueued", s)
	}
}

func TestEnqueueUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createFunction(t, "hello")
	a := e.newAsync(t)
	enqueue(t, a, Event{Function: "hello"})
	if err := e.st.JetStream().DeleteStream(context.Background(), StreamName); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _, err := a.Enqueue(ctx, Event{Tenant: tenant, Function: "hello"})
	wantStatus(t, err, http.StatusServiceUnavailable)
	// The next enqueue creates the stream and consumer again.
	a.tune.discoverEvery = 50 * time.Millisecond
	run(t, a)
	enqueue(t, a, Event{Function: "hello"})
	eventually(t, "the event to succeed", func() bool { return a.Stats().Succeeded >= 1 })
	// So does Run, when it finds the stream gone.
	if err := e.st.JetStream().DeleteStream(context.Background(), StreamName); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stream to be back", func() bool {
		_, err := e.st.JetStream().Stream(context.Background(), StreamName)
		return err == nil
	})
}

// TestAttempts covers retries, backoff, dead letters and what counts as an
// attempt.
func TestAttempts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		behavior  behavior
		retries   int
		wantCalls int
		dead      bool
		errType   string
		errMsg    string
	}{
		{"fails twice then succeeds", behavior{failFirst: 2}, 2, 3, false, "", ""},
		{"always fails", behavior{fail: true}, 2, 3, true, "Boom", "attempt failed"},
		{"no retries", behavior{fail: true}, 0, 1, true, "Boom", "attempt failed"},
		{"throttled counts as an attempt", behavior{throttle: true}, 1, 2, true, "Aloft.Throttled", "is at its concurrency limit"},
	}
	e := newEnv(t)
	a := e.newAsync(t)
	run(t, a)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := "fn-" + string(rune('a'+i))
			e.createFunction(t, name, retries(tt.retries))
			e.inv.set(name, tt.behavior)
			id := enqueue(t, a, Event{Function: name, Payload: []byte(`{"n":1}`)})
			if tt.dead {
				eventually(t, "a dead letter", func() bool { return len(deadLetters(t, e, name)) == 1 })
			} else {
				eventually(t, "the calls", func() bool { return e.inv.count(name) == tt.wantCalls })
			}
			eventually(t, "the stream to be empty", func() bool { return streamMsgs(t, a) == 0 })
			calls := e.inv.callsOf(name)
			if len(calls) != tt.wantCalls {
				t.Fatalf("function ran %d times, want %d", len(calls), tt.wantCalls)
			}
			for i := 1; i < len(calls); i++ {
				gap, want := calls[i].at.Sub(calls[i-1].at), 20*time.Millisecond<<(i-1)
				if gap < want-2*time.Millisecond {
					t.Errorf("attempt %d came %s after the one before, want at least %s", i+1, gap, want)
				}
			}
			wantStatus := records.Succeeded
			if tt.dead {
				wantStatus = records.DeadLettered
			}
			eventually(t, "the invocation record", func() bool {
				sums, err := e.rec.List(context.Background(), tenant, name, 10)
				return err == nil && len(sums) == 1 && sums[0].ID == id && sums[0].Status == wantStatus &&
					sums[0].Attempts == tt.wantCalls && sums[0].Trigger == "api"
			})
			dl := deadLetters(t, e, name)
			if !tt.dead {
				if len(dl) != 0 {
					t.Fatalf("dead letters = %+v, want none", dl)
				}
				return
			}
			d := dl[0]
			if d.ID != id || d.Attempts != tt.wantCalls || d.ErrorType != tt.errType || !strings.Contains(d.ErrorMessage, tt.errMsg) || d.Reason != ReasonRetries ||
				string(d.Payload) != `{"n":1}` || d.Source != "async" || d.Trigger != "api" || d.Enqueued.IsZero() {
				t.Errorf("dead letter = %+v, want id %s, %d attempts, error %s, retries exhausted", d, id, tt.wantCalls, tt.errType)
			}
		})
	}
	s := a.Stats()
	if s.Enqueued != 4 || s.Started != 9 || s.Succeeded != 1 || s.Retried != 5 || s.DeadLettered != 3 {
		t.Errorf("stats = %+v, want 4 enqueued, 9 started, 1 succeeded, 5 retried, 3 dead-lettered", s)
	}
}

func TestMaxEventAge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createFunction(t, "old", retries(5), func(f *fn.Function) { f.Async.MaxAge = fn.Duration(300 * time.Millisecond) })
	e.inv.set("old", behavior{fail: true})
	a := e.newAsync(t, func(c *Config) { c.RetryBase = time.Minute })
	run(t, a)

	t.Run("retry delay capped by the age", func(t *testing.T) {
		enqueue(t, a, Event{Function: "old"})
		eventually(t, "a dead letter", func() bool { return len(deadLetters(t, e, "old")) == 1 })
		d := deadLetters(t, e, "old")[0]
		if d.Reason != ReasonAge || d.Attempts != 1 || d.ErrorType != "Boom" {
			t.Errorf("dead letter = %+v, want one attempt, maximum event age exceeded", d)
		}
		if n := e.inv.count("old"); n != 1 {
			t.Errorf("function ran %d times, want once", n)
		}
	})
	t.Run("over its age at delivery", func(t *testing.T) {
		e.createFunction(t, "late")
		msg, err := encode(&Event{ID: "late-1", Tenant: tenant, Function: "late", Qualifier: fn.LatestVersion,
			Trigger: "api"}, time.Now().Add(-7*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if err := a.ensureConsumer(context.Background(), tenant, "late", false); err != nil {
			t.Fatal(err)
		}
		if _, err := e.st.JetStream().PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
		a.wakeFor(tenant, "late")
		eventually(t, "a dead letter", func() bool { return len(deadLetters(t, e, "late")) == 1 })
		if d := deadLetters(t, e, "late")[0]; d.Reason != ReasonAge || d.Attempts != 0 || d.ID != "late-1" {
			t.Errorf("dead letter = %+v, want no attempt, maximum event age exceeded", d)
		}
		if n := e.inv.count("late"); n != 0 {
			t.Errorf("function ran %d times, want never", n)
		}
	})
}

// TestRedeliveredOverRetries: an event delivered again after it was
// dead-lettered (a crash between the dead letter and the ack) is
// dead-lettered again without running.
func TestRedeliveredOverRetries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createFunction(t, "crashy", retries(2))
	a := e.newAsync(t)
	ctx := context.Background()
	if err := a.setup(ctx); err != nil {
		t.Fatal(err)
	}
	id := enqueue(t, a, Event{Function: "crashy", Payload: []byte(`"p"`)})
	b, _ := json.Marshal(failure{Failures: 3, Version: "$LATEST", Status: 200, Type: "Boom", Message: "third"})
	if _, err := a.attempts.Put(ctx, tenant+".crashy."+id, b); err != nil {
		t.Fatal(err)
	}
	// Deliver it once and hand it back, as a node that crashed would.
	cons, err := a.stream.Consumer(ctx, consumerName(tenant, "crashy"))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.Nak(); err != nil {
			t.Fatal(err)
		}
	}
	run(t, a)
	eventually(t, "a dead letter", func() bool { return len(deadLetters(t, e, "crashy")) == 1 })
	d := deadLetters(t, e, "crashy")[0]
	if d.ID != id || d.Attempts != 3 || d.ErrorType != "Boom" || d.ErrorMessage != "third" || d.Reason != ReasonRetries {
		t.Errorf("dead letter = %+v, want 3 attempts, the stored error, retries exhausted", d)
	}
	eventually(t, "the stream to be empty", func() bool { return streamMsgs(t, a) == 0 })
	if n := e.inv.count("crashy"); n != 0 {
		t.Errorf("function ran %d times, want never", n)
	}
}

func TestFunctionGone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createFunction(t, "gone")
	e.createFunction(t, "aliased")
	e.inv.set("aliased", behavior{notFound: true})
	a := e.newAsync(t)
	enqueue(t, a, Event{Function: "gone"})
	enqueue(t, a, Event{Function: "aliased", Qualifier: "missing"})
	if err := e.st.DeleteFunction(context.Background(), tenant, "gone"); err != nil {
		t.Fatal(err)
	}
	a.Forget(tenant, "gone")
	run(t, a)
	for _, name := range []string{"gone", "aliased"} {
		eventually(t, "a dead letter of "+name, func() bool { return len(deadLetters(t, e, name)) == 1 })
		if d := deadLetters(t, e, name)[0]; d.Reason != ReasonNotFound || d.Attempts != 0 {
			t.Errorf("dead letter of %s = %+v, want function not found, no attempt counted", name, d)
		}
	}
	if n := e.inv.count("gone"); n != 0 {
		t.Errorf("deleted function ran %d times", n)
	}
	if n := e.inv.count("aliased"); n != 1 {
		t.Errorf("function with a missing alias was called %d times, want once", n)
	}
}

func TestDestinations(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createFunction(t, "sink")
	e.createFunction(t, "good", func(f *fn.Function) { f.Async.OnSuccess = "function:sink" })
	e.createFunction(t, "bad", retries(1), func(f *fn.Function) { f.Async.OnFailure = "queue:failures" })
	e.inv.set("bad", behavior{fail: true})
	a := e.newAsync(t)
	run(t, a)
	goodID := enqueue(t, a, Event{Function: "good", Payload: []byte(`{"order":1}`)})
	badID := enqueue(t, a, Event{Function: "bad", Payload: []byte(`not json`)})

	eventually(t, "the success destination", func() bool { return e.inv.count("sink") == 1 })
	var rec destinationRecord
	sinkReq := e.inv.callsOf("sink")[0].req
	if err := json.Unmarshal(sinkReq.Payload, &rec); err != nil {
		t.Fatalf("success record %s: %v", sinkReq.Payload, err)
	}
	if rec.Version != "1.0" || rec.RequestContext.RequestID != goodID || rec.RequestContext.Condition != "Success" ||
		rec.RequestContext.ApproximateInvokeCount != 1 || !jsonEqual(rec.RequestPayload, `{"order":1}`) ||
		!jsonEqual(rec.ResponsePayload, `{"order":1}`) || rec.ResponseContext == nil ||
		rec.ResponseContext.StatusCode != 200 || rec.ResponseContext.FunctionError != "" ||
		rec.RequestContext.FunctionArn != "arn:aws:lambda:local:000000000000:function:good:$LATEST" {
		t.Errorf("success record = %s", sinkReq.Payload)
	}
	if _, err := time.Parse(time.RFC3339, rec.Timestamp); err != nil {
		t.Errorf("timestamp %q: %v", rec.Timestamp, err)
	}

	eventually(t, "the failure destination", func() bool { return len(e.sender.messages()) == 1 })
	m := e.sender.messages()[0]
	if m.tenant != tenant || m.queue != "failures" {
		t.Errorf("sent to %s/%s, want %s/failures", m.tenant, m.queue, tenant)
	}
	rec = destinationRecord{}
	if err := json.Unmarshal(m.body, &rec); err != nil {
		t.Fatalf("failure record %s: %v", m.body, err)
	}
	if rec.RequestContext.RequestID != badID || rec.RequestContext.Condition != "RetriesExhausted" ||
		rec.RequestContext.ApproximateInvokeCount != 2 || !jsonEqual(rec.RequestPayload, `"not json"`) ||
		rec.ResponseContext == nil || rec.ResponseContext.FunctionError != "Unhandled" ||
		!jsonEqual(rec.ResponsePayload, `{"errorMessage":"attempt failed","errorType":"Boom"}`) {
		t.Errorf("failure record = %s", m.body)
	}
	if s := a.Stats(); s.DestinationErrors != 0 {
		t.Errorf("stats = %+v, want no destination errors", s)
	}
}

func jsonEqual(got json.RawMessage, want string) bool {
	var a, b any
	if json.Unmarshal(got, &a) != nil || json.Unmarshal([]byte(want), &b) != nil {
		return false
	}
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func TestStreamFull(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createFunction(t, "hello")
	a := e.newAsync(t, func(c *Config) { c.MaxBytes = 8 << 10 })
	payload := bytes.Repeat([]byte("x"), 1024)
	var err error
	for i := 0; i < 20 && err == nil; i++ {
		_, _, err = a.Enqueue(context.Background(), Event{Tenant: tenant, Function: "hello", Payload: payload})
	}
	wantStatus(t, err, http.StatusTooManyRequests)
	if !strings.Contains(err.Error(), "async queue is full") {
		t.Errorf("error %q does not say the queue is full", err)
	}
}

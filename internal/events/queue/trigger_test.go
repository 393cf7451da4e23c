package queue

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/nats-io/nats.go/jetstream"

	"aloft/internal/events/records"
	"aloft/internal/fn"
	"aloft/internal/invoke"
)

func retries(n int) *int { return &n }

// trigger sets one queue trigger on function f.
func (e *env) trigger(f string, ev fn.Event) {
	e.q.SetTriggers(tenant, f, []fn.IndexedEvent{{Index: 0, Event: ev}})
}

func TestTriggerBatchSize(t *testing.T) {
	e := newEnv(t, nil)
	e.function("f", fn.RuntimeLambda, time.Second)
	e.queue("q")
	bodies := make([]string, 23)
	for i := range bodies {
		bodies[i] = fmt.Sprintf("m%d", i)
	}
	ids := e.send("q", bodies...)
	e.trigger("f", fn.Event{Queue: "q", BatchSize: 5})
	e.run()
	eventually(t, 10*time.Second, "every message handled", func() bool { return len(e.user.seen()) == len(ids) })
	eventually(t, 5*time.Second, "the queue to empty", func() bool { return e.waiting("q") == 0 })
	calls := e.user.snapshot()
	for _, c := range calls {
		if n := len(c.msgs); n < 1 || n > 5 {
			t.Errorf("a batch of %d messages, want 1-5", n)
		}
		if c.req.Tenant != tenant || c.req.Function != "f" || c.req.ID == "" {
			t.Errorf("request %+v: want tenant, function and an invocation id", c.req)
		}
	}
	if len(calls) < 5 {
		t.Errorf("%d invocations for 23 messages in batches of at most 5", len(calls))
	}
	for id, n := range e.user.seen() {
		if n != 1 {
			t.Errorf("message %s delivered %d times, want once", id, n)
		}
	}
	s := e.q.Stats()
	if s.Delivered != 23 || s.Succeeded != 23 || s.Batches != uint64(len(calls)) || s.Retried != 0 {
		t.Errorf("Stats = %+v", s)
	}
}

func TestTriggerBatchWindow(t *testing.T) {
	const window = 400 * time.Millisecond
	for _, tc := range []struct {
		name      string
		batchSize int
		send      int
		minWait   time.Duration // from the send to the invocation
		maxWait   time.Duration
	}{
		{"waits for the window to fill the batch", 10, 3, window / 2, window + 2*time.Second},
		{"a full batch goes at once", 3, 3, 0, window - 50*time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.function("f", fn.RuntimeLambda, time.Second)
			e.queue("q")
			e.trigger("f", fn.Event{Queue: "q", BatchSize: tc.batchSize, BatchWindow: fn.Duration(window)})
			e.run()
			// Let the trigger's consumer exist and its loop wait.
			eventually(t, 5*time.Second, "the consumer", func() bool {
				_, err := e.st.JetStream().Consumer(context.Background(), Stream, consumerName(tenant, "q"))
				return err == nil
			})
			bodies := make([]string, tc.send)
			for i := range bodies {
				bodies[i] = strconv.Itoa(i)
			}
			sent := time.Now()
			e.send("q", bodies...)
			eventually(t, 5*time.Second, "the messages", func() bool { return len(e.user.seen()) == tc.send })
			calls := e.user.snapshot()
			if len(calls) != 1 {
				t.Fatalf("%d invocations, want the %d messages in one batch", len(calls), tc.send)
			}
			if wait := calls[0].at.Sub(sent); wait < tc.minWait || wait > tc.maxWait {
				t.Errorf("invoked %s after the send, want %s-%s", wait, tc.minWait, tc.maxWait)
			}
		})
	}
}

var (
	uuidInJSON = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	millis     = regexp.MustCompile(`"1[0-9]{12}"`)
	handle     = regexp.MustCompile(`"receiptHandle": "[^"]+"`)
)

func TestSQSEvent(t *testing.T) {
	e := newEnv(t, nil)
	e.function("f", fn.RuntimeLambda, time.Second)
	e.queue("orders")
	ids, err := e.q.Send(context.Background(), tenant, "orders", []Message{
		{Body: `{"order":1}`, Attributes: map[string]string{"kind": "new", "priority": "high"}},
		{Body: "plain <text> & more"},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.trigger("f", fn.Event{Queue: "orders", BatchSize: 10, BatchWindow: fn.Duration(200 * time.Millisecond)})
	e.run()
	eventually(t, 5*time.Second, "the batch", func() bool { return len(e.user.seen()) == 2 })
	calls := e.user.snapshot()
	if len(calls) != 1 {
		t.Fatalf("%d invocations, want one batch", len(calls))
	}
	payload := calls[0].req.Payload

	var ev events.SQSEvent
	if err := json.Unmarshal(payload, &ev); err != nil {
		t.Fatalf("the event does not decode as events.SQSEvent: %v\n%s", err, payload)
	}
	if len(ev.Records) != 2 {
		t.Fatalf("%d records, want 2", len(ev.Records))
	}
	for i, r := range ev.Records {
		sum := md5.Sum([]byte(r.Body))
		if r.MessageId != ids[i] || r.Md5OfBody != hex.EncodeToString(sum[:]) || r.EventSource != "aws:sqs" ||
			r.EventSourceARN != "arn:aws:sqs:local:000000000000:orders" || r.AWSRegion != "local" ||
			r.Attributes["ApproximateReceiveCount"] != "1" || r.Attributes["SenderId"] != "aloft" || r.ReceiptHandle == "" {
			t.Errorf("record %d = %+v", i, r)
		}
	}
	if a := ev.Records[0].MessageAttributes["kind"]; a.StringValue == nil || *a.StringValue != "new" || a.DataType != "String" {
		t.Errorf("message attribute kind = %+v", a)
	}
	sent, _ := strconv.ParseInt(ev.Records[0].Attributes["SentTimestamp"], 10, 64)
	if d := time.Since(time.UnixMilli(sent)); d < 0 || d > time.Minute {
		t.Errorf("SentTimestamp is %s ago", d)
	}

	var pretty bytes.Buffer
	if err := json.Indent(&pretty, payload, "", "  "); err != nil {
		t.Fatal(err)
	}
	got := uuidInJSON.ReplaceAllString(pretty.String(), "<uuid>")
	got = millis.ReplaceAllString(got, `"<millis>"`)
	got = handle.ReplaceAllString(got, `"receiptHandle": "<handle>"`) + "\n"
	golden := filepath.Join("testdata", "sqs-event.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("event differs from %s (run with -update to accept):\n%s", golden, got)
	}
}

func TestBatchItemFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		// answer for the first invocation; later ones succeed
		answer      func(ids map[string]string) string // body → id
		wantRetried []string                           // bodies delivered twice
	}{
		{"listed messages retried", func(ids map[string]string) string {
			return fmt.Sprintf(`{"batchItemFailures":[{"itemIdentifier":%q},{"itemIdentifier":%q}]}`, ids["b"], ids["d"])
		}, []string{"b", "d"}},
		{"empty list", func(map[string]string) string { return `{"batchItemFailures":[]}` }, nil},
		{"another answer", func(map[string]string) string { return `"done"` }, nil},
		{"unknown identifier fails the batch", func(map[string]string) string {
			return `{"batchItemFailures":[{"itemIdentifier":"not-in-batch"}]}`
		}, []string{"a", "b", "c", "d"}},
		{"empty identifier fails the batch", func(map[string]string) string {
			return `{"batchItemFailures":[{"itemIdentifier":""}]}`
		}, []string{"a", "b", "c", "d"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.function("f", fn.RuntimeLambda, time.Second)
			e.queue("q")
			ids := e.send("q", "a", "b", "c", "d")
			byBody := map[string]string{"a": ids[0], "b": ids[1], "c": ids[2], "d": ids[3]}
			e.user.setAnswer(func(_ context.Context, req invoke.Request, n int) (*invoke.Response, error) {
				if n == 1 {
					return ok(tc.answer(byBody)), nil
				}
				return ok(""), nil
			})
			e.trigger("f", fn.Event{Queue: "q", BatchSize: 10, BatchWindow: fn.Duration(100 * time.Millisecond)})
			e.run()
			eventually(t, 10*time.Second, "the queue to empty", func() bool { return e.waiting("q") == 0 })
			seen := e.user.seen()
			for body, id := range byBody {
				want := 1
				for _, r := range tc.wantRetried {
					if r == body {
						want = 2
					}
				}
				if seen[id] != want {
					t.Errorf("message %s delivered %d times, want %d", body, seen[id], want)
				}
			}
			if len(e.deadLetters("f")) != 0 {
				t.Error("dead letters after a retry that succeeded")
			}
		})
	}
}

func TestFunctionErrorRetriesTheBatch(t *testing.T) {
	e := newEnv(t, nil)
	e.function("f", fn.RuntimeLambda, time.Second)
	e.queue("q")
	ids := e.send("q", "a", "b", "c")
	e.user.setAnswer(func(_ context.Context, req invoke.Request, n int) (*invoke.Response, error) {
		switch n {
		case 1:
			return failed("Error", "boom"), nil
		case 2:
			return nil, fn.Throttled(1, "function %q is busy", req.Function)
		}
		return ok("null"), nil
	})
	e.trigger("f", fn.Event{Queue: "q", BatchSize: 10, BatchWindow: fn.Duration(100 * time.Millisecond), Retries: retries(3)})
	e.run()
	eventually(t, 10*time.Second, "the queue to empty", func() bool { return e.waiting("q") == 0 })
	seen := e.user.seen()
	for _, id := range ids {
		if seen[id] != 3 {
			t.Errorf("message %s delivered %d times, want 3 (an error, a throttle, a success)", id, seen[id])
		}
	}
	last := e.user.snapshot()
	for _, d := range last[len(last)-1].msgs {
		if d.count != "3" {
			t.Errorf("ApproximateReceiveCount of the third delivery = %q, want 3", d.count)
		}
	}
	if s := e.q.Stats(); s.Retried != 6 || s.Succeeded != 3 {
		t.Errorf("Stats = %+v, want 6 retries and 3 successes", s)
	}

	// One record per invocation: running, then succeeded or failed.
	ctx := context.Background()
	if err := e.rec.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sums, err := e.rec.List(ctx, tenant, "f", 10)
	if err != nil {
		t.Fatal(err)
	}
	statuses := map[records.Status]int{}
	for _, s := range sums {
		statuses[s.Status]++
		if s.Trigger != "queue" {
			t.Errorf("record trigger %q, want queue", s.Trigger)
		}
	}
	if len(sums) != 3 || statuses[records.Failed] != 2 || statuses[records.Succeeded] != 1 {
		t.Errorf("records = %+v, want 2 failed and 1 succeeded", sums)
	}
}

func TestDeadLetterAfterRetries(t *testing.T) {
	e := newEnv(t, nil)
	e.function("f", fn.RuntimeLambda, time.Second)
	e.queue("q")
	ids, err := e.q.Send(context.Background(), tenant, "q", []Message{
		{Body: "a", Attributes: map[string]string{"k": "v"}}, {Body: "b"},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.user.setAnswer(func(context.Context, invoke.Request, int) (*invoke.Response, error) {
		return failed("ValueError", "bad order"), nil
	})
	e.trigger("f", fn.Event{Queue: "q", BatchSize: 1, Retries: retries(2)})
	e.run()
	eventually(t, 10*time.Second, "two dead letters", func() bool { return len(e.deadLetters("f")) == 2 })
	eventually(t, 5*time.Second, "the queue to empty", func() bool { return e.waiting("q") == 0 })
	seen := e.user.seen()
	for _, id := range ids {
		if seen[id] != 3 {
			t.Errorf("message %s ran %d times, want 3 (retries 2)", id, seen[id])
		}
	}
	byID := map[string]bool{}
	for _, d := range e.deadLetters("f") {
		byID[d.ID] = true
		if d.Source != "queue:q" || d.Trigger != "queue" || d.Attempts != 3 || d.ErrorType != "ValueError" ||
			d.ErrorMessage != "bad order" || d.Reason != "retries exhausted" || d.Enqueued.IsZero() || d.Tenant != tenant {
			t.Errorf("dead letter %+v", d)
		}
		if d.ID == ids[0] && (string(d.Payload) != "a" || d.Headers["k"] != "v") {
			t.Errorf("dead letter of a: payload %q headers %v, want the body and the attributes", d.Payload, d.Headers)
		}
	}
	if !byID[ids[0]] || !byID[ids[1]] {
		t.Errorf("dead letters %v, want one per message %v", byID, ids)
	}
	if s := e.q.Stats(); s.DeadLettered != 2 {
		t.Errorf("Stats.DeadLettered = %d", s.DeadLettered)
	}
}

// A message delivered more often than allowed (its dead-lettering was cut
// short, or its last attempt never answered) is dead-lettered without
// running.
// deliverUnrun has the trigger's own consumer receive q's first message n
// times and hand it back without running it, as nodes that stopped while
// holding it would have; it returns the message's stream sequence.
func (e *env) deliverUnrun(q string, n int) uint64 {
	e.t.Helper()
	cons, err := e.st.JetStream().CreateOrUpdateConsumer(context.Background(), Stream, jetstream.ConsumerConfig{
		Durable: consumerName(tenant, q), FilterSubject: subjectOf(tenant, q),
		AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: -1, AckWait: time.Minute,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	var seq uint64
	for range n {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			e.t.Fatal(err)
		}
		md, err := m.Metadata()
		if err != nil {
			e.t.Fatal(err)
		}
		seq = md.Sequence.Stream
		if err := m.Nak(); err != nil {
			e.t.Fatal(err)
		}
	}
	return seq
}

// TestRedeliveryWithoutFailureRuns: deliveries that ran nothing (nodes
// stopping while holding the message) do not use up its retries, even
// with none allowed.
func TestRedeliveryWithoutFailureRuns(t *testing.T) {
	e := newEnv(t, nil)
	e.function("f", fn.RuntimeLambda, time.Second)
	e.queue("q")
	e.send("q", "held")
	e.deliverUnrun("q", 3)
	e.trigger("f", fn.Event{Queue: "q", Retries: retries(0)})
	e.run()
	eventually(t, 10*time.Second, "the queue to empty", func() bool { return e.waiting("q") == 0 })
	if calls := e.user.snapshot(); len(calls) != 1 {
		t.Errorf("%d invocations, want 1", len(calls))
	}
	if d := e.deadLetters("f"); len(d) != 0 {
		t.Errorf("dead letters %+v, want none", d)
	}
}

// TestOverLimitIsDeadLetteredWithoutRunning: a message whose recorded
// failures are over its retries (dead-lettered by a node whose ack was
// lost) never runs again, and is dead-lettered with its last error.
func TestOverLimitIsDeadLetteredWithoutRunning(t *testing.T) {
	e := newEnv(t, nil)
	e.function("f", fn.RuntimeLambda, time.Second)
	e.queue("q")
	ids := e.send("q", "lost")
	seq := e.deliverUnrun("q", 2)
	b, _ := json.Marshal(failure{Failures: 2, Type: "Function.Boom", Message: "it broke"})
	if _, err := e.q.attempts.Put(context.Background(), tenant+".q."+strconv.FormatUint(seq, 10), b); err != nil {
		t.Fatal(err)
	}
	e.trigger("f", fn.Event{Queue: "q", Retries: retries(1)})
	e.run()
	eventually(t, 10*time.Second, "the dead letter", func() bool { return len(e.deadLetters("f")) == 1 })
	eventually(t, 5*time.Second, "the queue to empty", func() bool { return e.waiting("q") == 0 })
	if calls := e.user.snapshot(); len(calls) != 0 {
		t.Errorf("%d invocations of a message over its limit, want none", len(calls))
	}
	d := e.deadLetters("f")[0]
	if d.ID != ids[0] || d.Attempts != 2 || d.Reason != "retries exhausted" || d.ErrorType != "Function.Boom" {
		t.Errorf("dead letter %+v", d)
	}
}

func TestHTTPGetsCloudEvents(t *testing.T) {
	e := newEnv(t, nil)
	e.function("web", fn.RuntimeHTTP, time.Second)
	e.queue("q")
	ids, err := e.q.Send(context.Background(), tenant, "q", []Message{
		{Body: `{"a":1}`}, {Body: "hello", Attributes: map[string]string{"k": "v"}}, {Body: "fail once"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	failedOnce := false
	e.user.setAnswer(func(_ context.Context, req invoke.Request, _ int) (*invoke.Response, error) {
		mu.Lock()
		defer mu.Unlock()
		if string(req.Payload) == "fail once" && !failedOnce {
			failedOnce = true
			return failed("Function.HTTPError", "status 500"), nil
		}
		return ok("ok"), nil
	})
	e.trigger("web", fn.Event{Queue: "q", BatchSize: 10, BatchWindow: fn.Duration(100 * time.Millisecond)})
	e.run()
	eventually(t, 10*time.Second, "the queue to empty", func() bool { return e.waiting("q") == 0 })
	calls := e.user.snapshot()
	if len(calls) != 4 {
		t.Fatalf("%d invocations, want 4 (one per message, one retry)", len(calls))
	}
	want := map[string]struct{ body, ctype, attempt string }{
		ids[0]: {`{"a":1}`, "application/json", "1"},
		ids[1]: {"hello", "text/plain; charset=utf-8", "1"},
		ids[2]: {"fail once", "text/plain; charset=utf-8", "2"}, // the last delivery
	}
	for _, c := range calls {
		h := c.req.Headers
		w, known := want[h["ce-id"]]
		if !known {
			t.Fatalf("ce-id %q is no message id", h["ce-id"])
		}
		if string(c.req.Payload) != w.body || h["Content-Type"] != w.ctype || h["ce-specversion"] != "1.0" ||
			h["ce-source"] != "/aloft/queues/default/q" || h["ce-type"] != "dev.aloft.queue.message" {
			t.Errorf("invocation %q %v", c.req.Payload, h)
		}
		if _, err := time.Parse(time.RFC3339Nano, h["ce-time"]); err != nil {
			t.Errorf("ce-time %q: %v", h["ce-time"], err)
		}
		if h["ce-id"] == ids[2] && c.msgs[0].count == "2" {
			delete(want, ids[2])
		}
		if h["ce-id"] == ids[1] && h["Aloft-Attributes"] != `{"k":"v"}` {
			t.Errorf("attributes header %q", h["Aloft-Attributes"])
		}
	}
	if _, stillWanted := want[ids[2]]; stillWanted {
		t.Error("the failed message was not delivered again with ce-aloftattempt 2")
	}
}

func TestConcurrencyBound(t *testing.T) {
	e := newEnv(t, nil)
	e.function("f", fn.RuntimeLambda, 5*time.Second)
	e.queue("q")
	bodies := make([]string, 30)
	for i := range bodies {
		bodies[i] = strconv.Itoa(i)
	}
	e.send("q", bodies...)
	e.user.setAnswer(func(ctx context.Context, _ invoke.Request, _ int) (*invoke.Response, error) {
		time.Sleep(20 * time.Millisecond) // the function's work
		return ok("null"), nil
	})
	e.trigger("f", fn.Event{Queue: "q", BatchSize: 1, Concurrency: 3})
	e.run()
	eventually(t, 10*time.Second, "every message", func() bool { return len(e.user.seen()) == 30 })
	if p := e.user.peak.Load(); p != 3 {
		t.Errorf("at most %d invocations ran at once, want exactly 3 (the bound, reached)", p)
	}
}

// A stop with invocations in flight leaves their messages unacknowledged;
// a restart on the same data delivers every message at least once.
func TestStopMidFlightAndRestart(t *testing.T) {
	e := newEnv(t, nil)
	e.function("f", fn.RuntimeLambda, time.Second)
	e.queue("q")
	const total = 60
	bodies := make([]string, total)
	for i := range bodies {
		bodies[i] = strconv.Itoa(i)
	}
	ids := e.send("q", bodies...)
	var handled sync.Map // message id → times it succeeded
	blocking := make(chan struct{})
	e.user.setAnswer(func(ctx context.Context, req invoke.Request, n int) (*invoke.Response, error) {
		if n > 4 {
			<-blocking // the stop finds these in flight
			<-ctx.Done()
			return nil, ctx.Err()
		}
		for _, d := range deliveries(req) {
			v, _ := handled.LoadOrStore(d.id, new(int))
			*v.(*int)++
		}
		return ok("null"), nil
	})
	e.trigger("f", fn.Event{Queue: "q", BatchSize: 5, Concurrency: 2})
	stop := e.run()
	eventually(t, 10*time.Second, "invocations in flight", func() bool { return e.user.running.Load() == 2 })
	close(blocking)
	stop()

	e.close()
	before := len(e.user.seen())
	e.user = &userFn{}
	e.open(func(c *Config) { c.Invoker = e.user })
	e.trigger("f", fn.Event{Queue: "q", BatchSize: 5, Concurrency: 2})
	e.run()
	eventually(t, 15*time.Second, "every message handled after the restart", func() bool {
		return e.waiting("q") == 0
	})
	for id := range e.user.seen() {
		v, _ := handled.LoadOrStore(id, new(int))
		*v.(*int)++
	}
	dups := 0
	for _, id := range ids {
		v, found := handled.Load(id)
		if !found {
			t.Errorf("message %s never handled", id)
			continue
		}
		dups += *v.(*int) - 1
	}
	t.Logf("%d messages seen before the stop, %d after the restart, %d handled more than once", before, len(e.user.seen()), dups)
}

// Many senders and trigger changes at once: every message is handled at
// least once and nothing races.
func TestHammer(t *testing.T) {
	e := newEnv(t, nil)
	e.function("f", fn.RuntimeLambda, time.Second)
	e.queue("q")
	e.trigger("f", fn.Event{Queue: "q", BatchSize: 7, Concurrency: 4})
	e.run()
	const senders, sends, per = 8, 10, 10
	var wg sync.WaitGroup
	var mu sync.Mutex
	var all []string
	start := make(chan struct{})
	for s := range senders {
		wg.Go(func() {
			<-start
			for i := range sends {
				msgs := make([]Message, per)
				for j := range msgs {
					msgs[j] = Message{Body: fmt.Sprintf("%d/%d/%d", s, i, j)}
				}
				ids, err := e.q.Send(context.Background(), tenant, "q", msgs)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				all = append(all, ids...)
				mu.Unlock()
			}
		})
	}
	wg.Go(func() {
		<-start
		for i := range 20 {
			e.trigger("f", fn.Event{Queue: "q", BatchSize: 1 + i%5, Concurrency: 1 + i%3})
			_ = e.q.Stats()
		}
	})
	close(start)
	wg.Wait()
	missing := func() int {
		seen, n := e.user.seen(), 0
		for _, id := range all {
			if seen[id] == 0 {
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(30 * time.Second); missing() > 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			// What the consumer holds tells a lost message from a slow one.
			var info any = "no consumer"
			if c, err := e.st.JetStream().Consumer(context.Background(), Stream, consumerName(tenant, "q")); err == nil {
				if ci, err := c.Info(context.Background()); err == nil {
					info = fmt.Sprintf("pending %d, ack pending %d, redelivered %d, waiting pulls %d, ack wait %s",
						ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting, ci.Config.AckWait)
				}
			}
			t.Fatalf("%d of %d messages never handled after 30s; stats %+v; consumer: %v", missing(), len(all), e.q.Stats(), info)
		}
	}
	if len(all) != senders*sends*per {
		t.Errorf("%d ids, want %d", len(all), senders*sends*per)
	}
}

func TestSetTriggersStopsRemovedTriggers(t *testing.T) {
	e := newEnv(t, nil)
	e.function("f", fn.RuntimeLambda, time.Second)
	e.queue("q")
	e.trigger("f", fn.Event{Queue: "q"})
	e.run()
	e.send("q", "one")
	eventually(t, 5*time.Second, "the first message", func() bool { return len(e.user.seen()) == 1 })
	e.trigger("f", fn.Event{Queue: "q", Disabled: true})
	// The disabled trigger's loop ends; wait until no pull request of it
	// is left waiting on the consumer.
	eventually(t, 15*time.Second, "the loop to stop pulling", func() bool {
		c, err := e.st.JetStream().Consumer(context.Background(), Stream, consumerName(tenant, "q"))
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumWaiting == 0
	})
	e.send("q", "two")
	if n := e.waiting("q"); n != 1 {
		t.Errorf("waiting = %d after disabling the trigger, want 1", n)
	}
	e.q.SetTriggers(tenant, "f", []fn.IndexedEvent{{Index: 2, Event: fn.Event{Queue: "q"}}})
	eventually(t, 5*time.Second, "the re-enabled trigger", func() bool { return e.waiting("q") == 0 })
	if got := strings.Join(bodies(e.user.snapshot()), ","); got != "one,two" {
		t.Errorf("bodies %s, want one,two", got)
	}
}

// A backlog runs in full batches: the messages fetched ahead fill each
// batch.
func TestBacklogRunsInFullBatches(t *testing.T) {
	// Under the race detector on a loaded machine a fetch can lag the
	// 5 ms fill wait; the behaviour tested is the wait, not its length.
	// (Registered before newEnv's, this cleanup runs after the loops end.)
	old := fillWait
	t.Cleanup(func() { fillWait = old })
	fillWait = time.Second
	e := newEnv(t, nil)
	e.function("f", fn.RuntimeLambda, time.Second)
	e.queue("q")
	bodies := make([]string, 200)
	for i := range bodies {
		bodies[i] = strconv.Itoa(i)
	}
	e.send("q", bodies...)
	e.trigger("f", fn.Event{Queue: "q", BatchSize: 10, Concurrency: 4})
	e.run()
	eventually(t, 10*time.Second, "every message", func() bool { return len(e.user.seen()) == len(bodies) })
	full := 0
	for _, c := range e.user.snapshot() {
		if len(c.msgs) == 10 {
			full++
		}
	}
	if full < 18 {
		t.Errorf("%d full batches of 10 for a backlog of 200, want at least 18", full)
	}
}

// A stopping node gives the messages it fetched ahead back at once, for
// another node to run, rather than holding them until their ack wait ends.
func TestStopGivesBackFetchedMessages(t *testing.T) {
	e := newEnv(t, nil)
	e.function("f", fn.RuntimeLambda, 10*time.Second) // an ack wait of 10.2s
	e.queue("q")
	bodies := make([]string, 40)
	for i := range bodies {
		bodies[i] = strconv.Itoa(i)
	}
	e.send("q", bodies...)
	e.user.setAnswer(func(ctx context.Context, _ invoke.Request, _ int) (*invoke.Response, error) {
		<-ctx.Done() // in flight until the stop
		return nil, ctx.Err()
	})
	e.trigger("f", fn.Event{Queue: "q", BatchSize: 2, Concurrency: 2})
	stop := e.run()
	ctx := context.Background()
	var cons jetstream.Consumer
	eventually(t, 5*time.Second, "messages fetched ahead of the two batches in flight", func() bool {
		c, err := e.st.JetStream().Consumer(ctx, Stream, consumerName(tenant, "q"))
		if err != nil || e.user.running.Load() != 2 {
			return false
		}
		info, err := c.Info(ctx)
		cons = c
		return err == nil && info.NumAckPending > 4
	})
	stop()
	// Another node gets every message but the 4 of the batches cut short,
	// which wait out their ack wait.
	b, err := cons.Fetch(40, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range b.Messages() {
		n++
	}
	if n != 36 {
		t.Errorf("another consumer fetched %d messages within 2s of the stop, want 36", n)
	}
}

func bodies(calls []call) []string {
	var out []string
	for _, c := range calls {
		for _, d := range c.msgs {
			out = append(out, d.body)
		}
	}
	return out
}

// BenchmarkTrigger measures messages per second through a trigger with
// batches of 10 and a function that answers at once.
func BenchmarkTrigger(b *testing.B) {
	e := newEnv(b, nil)
	e.function("f", fn.RuntimeLambda, time.Second)
	e.queue("q")
	const per = 1000
	msgs := make([]Message, per)
	for i := range msgs {
		msgs[i] = Message{Body: fmt.Sprintf(`{"n":%d}`, i)}
	}
	e.trigger("f", fn.Event{Queue: "q", BatchSize: 10})
	stop := e.run()
	defer stop()
	ctx := context.Background()
	b.ReportAllocs()
	start := time.Now()
	total := uint64(0)
	for b.Loop() {
		if _, err := e.q.Send(ctx, tenant, "q", msgs); err != nil {
			b.Fatal(err)
		}
		total += per
		for e.q.Stats().Succeeded < total {
			time.Sleep(100 * time.Microsecond)
		}
	}
	b.ReportMetric(float64(total)/time.Since(start).Seconds(), "msgs/s")
}

// TestQualifiedTriggerUsesItsVersion: a trigger on an alias shapes its
// events by the runtime of the version the alias names, not $LATEST's.
func TestQualifiedTriggerUsesItsVersion(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	e.function("f", fn.RuntimeLambda, time.Second)
	v := &fn.Version{Tenant: tenant, Number: 1, Config: fn.Config{Name: "f", Runtime: fn.RuntimeLambda, Timeout: fn.Duration(time.Second)}}
	if err := e.st.CreateVersion(ctx, v); err != nil {
		t.Fatal(err)
	}
	if err := e.st.PutAlias(ctx, &fn.Alias{Tenant: tenant, Function: "f", Name: "prod", Version: 1}); err != nil {
		t.Fatal(err)
	}
	f, rev, err := e.st.GetFunction(ctx, tenant, "f")
	if err != nil {
		t.Fatal(err)
	}
	f.Runtime = fn.RuntimeHTTP // $LATEST moves on; version 1 stays a Lambda function
	if _, err := e.st.UpdateFunction(ctx, f, rev); err != nil {
		t.Fatal(err)
	}
	e.queue("q")
	e.send("q", "one")
	e.trigger("f", fn.Event{Queue: "q", Qualifier: "prod", BatchWindow: fn.Duration(50 * time.Millisecond)})
	e.run()
	eventually(t, 5*time.Second, "the message", func() bool { return len(e.user.seen()) == 1 })
	c := e.user.snapshot()[0]
	var ev events.SQSEvent
	if err := json.Unmarshal(c.req.Payload, &ev); err != nil || len(ev.Records) != 1 || ev.Records[0].Body != "one" {
		t.Fatalf("payload %s is not the SQS event of version 1 (%v)", c.req.Payload, err)
	}
	if c.req.Qualifier != "prod" {
		t.Errorf("invoked qualifier %q, want prod", c.req.Qualifier)
	}
}

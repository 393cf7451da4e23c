package queue

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"aloft/internal/events/deadletter"
	"aloft/internal/events/records"
	"aloft/internal/fn"
	"aloft/internal/invoke"
	"aloft/internal/store"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const tenant = "default"

// env is one test's store, dead letters, records and queues, opened on a
// temporary data directory.
type env struct {
	t    testing.TB
	dir  string
	st   *store.Store
	dl   *deadletter.Store
	rec  *records.Store
	q    *Queues
	user *userFn
}

// newEnv opens a real embedded store and Queues over it; tweak adjusts
// the config before New.
func newEnv(t testing.TB, tweak func(*Config)) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), user: &userFn{}}
	e.open(tweak)
	return e
}

// open opens the store on e.dir (again, after close) and builds Queues.
func (e *env) open(tweak func(*Config)) {
	t := e.t
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{DataDir: e.dir, NodeID: "test"})
	if err != nil {
		t.Fatal(err)
	}
	e.st = st
	t.Cleanup(func() { _ = st.Close() })
	if e.dl, err = deadletter.Open(ctx, st.JetStream(), 1); err != nil {
		t.Fatal(err)
	}
	if e.rec, err = records.Open(ctx, st.JetStream(), 1, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.rec.Close() })
	cfg := Config{
		JS: st.JetStream(), Invoker: e.user, DeadLetters: e.dl, Records: e.rec, Functions: st,
		NodeID: "test", RetryBase: 20 * time.Millisecond, VisibilityMargin: 200 * time.Millisecond,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	if e.q, err = New(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

// close stops e's store (a restart keeps e.dir).
func (e *env) close() {
	_ = e.rec.Close()
	if err := e.st.Close(); err != nil {
		e.t.Fatal(err)
	}
}

// function stores a function the triggers read their runtime and timeout
// from.
func (e *env) function(name string, rt fn.Runtime, timeout time.Duration) {
	e.t.Helper()
	f := &fn.Function{Tenant: tenant, Config: fn.Config{Name: name, Runtime: rt, Timeout: fn.Duration(timeout)}}
	if _, err := e.st.CreateFunction(context.Background(), f); err != nil {
		e.t.Fatal(err)
	}
}

// queue creates a queue.
func (e *env) queue(name string) {
	e.t.Helper()
	if _, _, err := e.q.Create(context.Background(), tenant, name); err != nil {
		e.t.Fatal(err)
	}
}

// send sends bodies to a queue and returns their ids.
func (e *env) send(queue string, bodies ...string) []string {
	e.t.Helper()
	msgs := make([]Message, len(bodies))
	for i, b := range bodies {
		msgs[i] = Message{Body: b}
	}
	ids, err := e.q.Send(context.Background(), tenant, queue, msgs)
	if err != nil {
		e.t.Fatal(err)
	}
	return ids
}

// run runs e.q until the test ends (or the returned stop is called).
func (e *env) run() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.q.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("Run: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

// waiting returns the messages stored on a queue.
func (e *env) waiting(queue string) uint64 {
	e.t.Helper()
	q, err := e.q.Get(context.Background(), tenant, queue)
	if err != nil {
		e.t.Fatal(err)
	}
	return q.Messages
}

// deadLetters lists a function's dead letters.
func (e *env) deadLetters(function string) []*deadletter.Entry {
	e.t.Helper()
	list, err := e.dl.List(context.Background(), tenant, function, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return list
}

// eventually polls cond until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// userFn stands in for a user's function: it records every invocation
// and answers as answer says (echo when nil). It tracks how many
// invocations run at once.
type userFn struct {
	mu     sync.Mutex
	calls  []call
	answer func(ctx context.Context, req invoke.Request, n int) (*invoke.Response, error)

	running, peak atomic.Int64
}

type call struct {
	req  invoke.Request
	at   time.Time
	msgs []delivery // the messages it carried
}

// delivery is one message as a function saw it.
type delivery struct {
	id, body string
	count    string // ApproximateReceiveCount or ce-aloftattempt
}

func (u *userFn) setAnswer(a func(ctx context.Context, req invoke.Request, n int) (*invoke.Response, error)) {
	u.mu.Lock()
	u.answer = a
	u.mu.Unlock()
}

func (u *userFn) Invoke(ctx context.Context, req invoke.Request) (*invoke.Response, error) {
	now := u.running.Add(1)
	defer u.running.Add(-1)
	for p := u.peak.Load(); now > p && !u.peak.CompareAndSwap(p, now); p = u.peak.Load() {
	}
	c := call{req: req, at: time.Now(), msgs: deliveries(req)}
	u.mu.Lock()
	u.calls = append(u.calls, c)
	n, answer := len(u.calls), u.answer
	u.mu.Unlock()
	if answer == nil {
		return ok(string(req.Payload)), nil
	}
	return answer(ctx, req, n)
}

// deliveries decodes the messages of one invocation: an SQS event, or one
// CloudEvent.
func deliveries(req invoke.Request) []delivery {
	if id, isCE := req.Headers["ce-id"]; isCE {
		return []delivery{{id: id, body: string(req.Payload), count: req.Headers["ce-aloftattempt"]}}
	}
	var ev events.SQSEvent
	if err := json.Unmarshal(req.Payload, &ev); err != nil {
		return nil
	}
	out := make([]delivery, len(ev.Records))
	for i, r := range ev.Records {
		out[i] = delivery{id: r.MessageId, body: r.Body, count: r.Attributes["ApproximateReceiveCount"]}
	}
	return out
}

// snapshot returns the calls so far.
func (u *userFn) snapshot() []call {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]call(nil), u.calls...)
}

// seen counts the deliveries of each message id.
func (u *userFn) seen() map[string]int {
	n := map[string]int{}
	for _, c := range u.snapshot() {
		for _, d := range c.msgs {
			n[d.id]++
		}
	}
	return n
}

func ok(payload string) *invoke.Response {
	return &invoke.Response{Result: fn.Result{Payload: []byte(payload)}, Version: "$LATEST"}
}

func failed(errorType, msg string) *invoke.Response {
	return &invoke.Response{Result: fn.Result{Payload: fn.ErrorPayload(errorType, msg), FunctionError: true}, Version: "$LATEST"}
}

func code(err error) string {
	var fe *fn.Error
	if errors.As(err, &fe) {
		return fe.Code
	}
	if err != nil {
		return "internal: " + err.Error()
	}
	return ""
}

func TestQueueLifecycle(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()

	q, created, err := e.q.Create(ctx, tenant, "orders")
	if err != nil || !created || q.Name != "orders" || q.Tenant != tenant || q.Created.IsZero() {
		t.Fatalf("Create = %+v, %v, %v", q, created, err)
	}
	again, created, err := e.q.Create(ctx, tenant, "orders")
	if err != nil || created || !again.Created.Equal(q.Created) {
		t.Fatalf("second Create = %+v, %v, %v; want the first queue, created false", again, created, err)
	}
	e.queue("billing")
	if _, _, err := e.q.Create(ctx, "other", "orders"); err != nil {
		t.Fatal(err)
	}
	e.send("orders", "a", "b")

	list, err := e.q.List(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, q := range list {
		got = append(got, fmt.Sprintf("%s:%d", q.Name, q.Messages))
	}
	if strings.Join(got, ",") != "billing:0,orders:2" {
		t.Errorf("List = %v, want billing:0,orders:2 (the other tenant's queue not included)", got)
	}
	if empty, err := e.q.List(ctx, "nobody"); err != nil || len(empty) != 0 {
		t.Errorf("List of a tenant without queues = %v, %v", empty, err)
	}

	if err := e.q.Delete(ctx, tenant, "orders"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.Get(ctx, tenant, "orders"); !fn.IsNotFound(err) {
		t.Errorf("Get after Delete = %v, want not found", err)
	}
	if err := e.q.Delete(ctx, tenant, "orders"); !fn.IsNotFound(err) {
		t.Errorf("second Delete = %v, want not found", err)
	}
	if _, err := e.q.Send(ctx, tenant, "orders", []Message{{Body: "x"}}); !fn.IsNotFound(err) ||
		!strings.Contains(err.Error(), "aloft queue create") {
		t.Errorf("Send after Delete = %v, want not found saying how to create it", err)
	}
	if _, _, err := e.q.Create(ctx, tenant, "orders"); err != nil {
		t.Fatal(err)
	}
	if n := e.waiting("orders"); n != 0 {
		t.Errorf("a recreated queue has %d messages: Delete must remove them", n)
	}
	if _, err := e.q.Get(ctx, "other", "orders"); err != nil {
		t.Errorf("the other tenant's queue: %v", err)
	}
}

func TestInvalidNames(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	for _, tc := range []struct{ tenant, name string }{
		{tenant, ""}, {tenant, "Orders"}, {tenant, "a.b"}, {tenant, "-a"}, {tenant, "a_b"},
		{tenant, strings.Repeat("a", 65)}, {"", "a"}, {"a.b", "a"}, {"a*", "a"},
	} {
		t.Run(tc.tenant+"/"+tc.name, func(t *testing.T) {
			if _, _, err := e.q.Create(ctx, tc.tenant, tc.name); code(err) != "invalid_request" {
				t.Errorf("Create = %v, want invalid", err)
			}
			if _, err := e.q.Get(ctx, tc.tenant, tc.name); code(err) != "invalid_request" {
				t.Errorf("Get = %v, want invalid", err)
			}
			if _, err := e.q.Send(ctx, tc.tenant, tc.name, []Message{{Body: "x"}}); code(err) != "invalid_request" {
				t.Errorf("Send = %v, want invalid", err)
			}
		})
	}
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[45][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestSendIsDurable(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	e.queue("orders")
	one := e.send("orders", "first")
	batch, err := e.q.Send(ctx, tenant, "orders", []Message{
		{Body: "second", Attributes: map[string]string{"kind": "x"}}, {Body: "third"}, {Body: ""},
	})
	if err != nil {
		t.Fatal(err)
	}
	ids := append(one, batch...)
	seen := map[string]bool{}
	for _, id := range ids {
		if !uuidRE.MatchString(id) || seen[id] {
			t.Errorf("id %q: want a fresh uuid", id)
		}
		seen[id] = true
	}
	if n := e.waiting("orders"); n != 4 {
		t.Fatalf("waiting = %d, want 4", n)
	}
	if s := e.q.Stats(); s.Sent != 4 {
		t.Errorf("Stats.Sent = %d, want 4", s.Sent)
	}

	e.close()
	e.open(nil)
	if n := e.waiting("orders"); n != 4 {
		t.Fatalf("after a restart waiting = %d, want 4", n)
	}
	if err := e.q.SendRaw(ctx, tenant, "orders", []byte(`{"ok":true}`)); err != nil {
		t.Fatal(err)
	}
	if n := e.waiting("orders"); n != 5 {
		t.Errorf("after SendRaw waiting = %d, want 5", n)
	}
}

func TestSendDedup(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	e.queue("orders")
	e.queue("billing")
	first, err := e.q.Send(ctx, tenant, "orders", []Message{{Body: "a", DedupID: "order-1"}, {Body: "a again", DedupID: "order-1"}})
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.q.Send(ctx, tenant, "orders", []Message{{Body: "a", DedupID: "order-1"}, {Body: "b", DedupID: "order-2"}})
	if err != nil {
		t.Fatal(err)
	}
	if first[0] != first[1] || first[0] != second[0] || second[1] == first[0] {
		t.Errorf("ids %v then %v: a dedup id must give the same message id, another id another one", first, second)
	}
	if n := e.waiting("orders"); n != 2 {
		t.Errorf("waiting = %d, want 2 (order-1 once, order-2 once)", n)
	}
	other, err := e.q.Send(ctx, tenant, "billing", []Message{{Body: "a", DedupID: "order-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if other[0] == first[0] || e.waiting("billing") != 1 {
		t.Errorf("the same dedup id on another queue must be another message")
	}
	if s := e.q.Stats(); s.Sent != 3 {
		t.Errorf("Stats.Sent = %d, want 3", s.Sent)
	}
}

func TestSendLimits(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxMessage = 100; c.MaxBatch = 5 })
	ctx := context.Background()
	e.queue("orders")
	good := Message{Body: "fine"}
	many := map[string]string{}
	for i := range 11 {
		many[fmt.Sprintf("a%d", i)] = "v"
	}
	for _, tc := range []struct {
		name   string
		msgs   []Message
		status int
		says   string
	}{
		{"empty batch", nil, http.StatusBadRequest, "send 1-5"},
		{"too many", []Message{good, good, good, good, good, good}, http.StatusBadRequest, "at most 5"},
		{"body too large", []Message{good, {Body: strings.Repeat("x", 101)}}, http.StatusRequestEntityTooLarge, "message 1 is 101 bytes"},
		{"attributes count", []Message{good, {Body: "x", Attributes: map[string]string{"k": strings.Repeat("v", 99)}}}, http.StatusRequestEntityTooLarge, "body and attributes"},
		{"too many attributes", []Message{good, {Body: "x", Attributes: many}}, http.StatusBadRequest, "at most 10"},
		{"attribute name", []Message{good, {Body: "x", Attributes: map[string]string{"a b": "v"}}}, http.StatusBadRequest, "attribute name"},
		{"dedup id space", []Message{good, {Body: "x", DedupID: "a b"}}, http.StatusBadRequest, "id \"a b\" is invalid"},
		{"dedup id long", []Message{good, {Body: "x", DedupID: strings.Repeat("i", 129)}}, http.StatusBadRequest, "1-128"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.q.Send(ctx, tenant, "orders", tc.msgs)
			var fe *fn.Error
			if !errors.As(err, &fe) || fe.Status != tc.status || !strings.Contains(fe.Message, tc.says) {
				t.Fatalf("Send = %v, want status %d saying %q", err, tc.status, tc.says)
			}
			if n := e.waiting("orders"); n != 0 {
				t.Errorf("%d messages stored: a refused batch must store nothing", n)
			}
		})
	}
	if _, err := e.q.Send(ctx, tenant, "orders", []Message{{Body: strings.Repeat("x", 100)}}); err != nil {
		t.Errorf("a message of exactly MaxMessage bytes: %v", err)
	}
	if _, err := e.q.Send(ctx, tenant, "nope", []Message{good}); !fn.IsNotFound(err) {
		t.Errorf("Send to a missing queue = %v, want not found", err)
	}
}

func TestNewNeedsItsParts(t *testing.T) {
	_, err := New(context.Background(), Config{})
	if err == nil {
		t.Fatal("New without a config succeeded")
	}
	for _, want := range []string{"JetStream", "invoker", "dead-letter", "function source"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

package subject

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"aloft/internal/fn"
	"aloft/internal/invoke"
	"aloft/internal/store"
)

const tenant = "default"

var update = flag.Bool("update", false, "rewrite the fuzz seeds in testdata")

// userFn stands in for a user's function: it records what it was invoked
// with and answers as answer says (echo when nil).
type userFn struct {
	mu     sync.Mutex
	reqs   []invoke.Request
	answer func(ctx context.Context, req invoke.Request) (*invoke.Response, error)

	running, peak atomic.Int64
}

func (u *userFn) Invoke(ctx context.Context, req invoke.Request) (*invoke.Response, error) {
	now := u.running.Add(1)
	defer u.running.Add(-1)
	for p := u.peak.Load(); now > p && !u.peak.CompareAndSwap(p, now); p = u.peak.Load() {
	}
	u.mu.Lock()
	u.reqs = append(u.reqs, req)
	answer := u.answer
	u.mu.Unlock()
	if answer == nil {
		return &invoke.Response{Result: fn.Result{Payload: req.Payload}, InvocationID: "inv-1", Version: "$LATEST"}, nil
	}
	return answer(ctx, req)
}

func (u *userFn) setAnswer(a func(ctx context.Context, req invoke.Request) (*invoke.Response, error)) {
	u.mu.Lock()
	u.answer = a
	u.mu.Unlock()
}

func (u *userFn) requests() []invoke.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]invoke.Request(nil), u.reqs...)
}

// queued is one Enqueue call.
type queued struct {
	tenant, function, qualifier, trigger string
	payload                              []byte
	headers                              map[string]string
}

// asyncQueue stands in for the async invocation queue: it records what is
// enqueued, or fails when fail is set.
type asyncQueue struct {
	mu   sync.Mutex
	got  []queued
	fail error
}

func (a *asyncQueue) Enqueue(_ context.Context, tenant, function, qualifier string, payload []byte, headers map[string]string, trigger string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return "", a.fail
	}
	a.got = append(a.got, queued{tenant, function, qualifier, trigger, payload, headers})
	return fmt.Sprintf("id-%d", len(a.got)), nil
}

func (a *asyncQueue) list() []queued {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]queued(nil), a.got...)
}

type env struct {
	t    *testing.T
	nc   *nats.Conn
	user *userFn
	q    *asyncQueue
	s    *Subjects
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{DataDir: t.TempDir(), NodeID: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e := &env{t: t, nc: st.Conn(), user: &userFn{}, q: &asyncQueue{}}
	e.s = e.node()
	e.run(e.s)
	return e
}

// node builds another Subjects on the same connection: a second node.
func (e *env) node() *Subjects {
	return New(Config{Conn: e.nc, Invoker: e.user, Enqueuer: e.q, MaxInFlight: 2})
}

func (e *env) run(s *Subjects) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("Run: %v", err)
		}
	})
}

func event(index int, subject, qualifier string) fn.IndexedEvent {
	return fn.IndexedEvent{Index: index, Event: fn.Event{Subject: subject, Qualifier: qualifier}}
}

// request sends a request, retrying while nobody subscribes yet.
func (e *env) request(subject string, data []byte) *nats.Msg {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, err := e.nc.Request(subject, data, 2*time.Second)
		if err == nil {
			return m
		}
		if !errors.Is(err, nats.ErrNoResponders) || time.Now().After(deadline) {
			e.t.Fatalf("request %s: %v", subject, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRequestReply(t *testing.T) {
	e := newEnv(t)
	e.s.Set(tenant, "f", []fn.IndexedEvent{event(1, "orders.*", "prod")})
	e.user.setAnswer(func(_ context.Context, req invoke.Request) (*invoke.Response, error) {
		switch string(req.Payload) {
		case "fail":
			return &invoke.Response{Result: fn.Result{Payload: fn.ErrorPayload("Error", "boom"), FunctionError: true}}, nil
		case "missing":
			return nil, fn.NotFound("alias %q of function %q not found", "prod", "f")
		case "internal":
			return nil, errors.New("sandbox: clone: operation not permitted")
		}
		return &invoke.Response{Result: fn.Result{Payload: append([]byte("echo:"), req.Payload...)}}, nil
	})
	for _, tc := range []struct {
		data, want, funcErr, aloftErr string
	}{
		{`{"id":1}`, `echo:{"id":1}`, "", ""},
		{"fail", `{"errorMessage":"boom","errorType":"Error"}`, "Unhandled", ""},
		{"missing", "", "", `alias "prod" of function "f" not found`},
		{"internal", "", "", "internal error"},
	} {
		t.Run(tc.data, func(t *testing.T) {
			m := e.request("orders.new", []byte(tc.data))
			if string(m.Data) != tc.want || m.Header.Get(HeaderFunctionError) != tc.funcErr || m.Header.Get(HeaderError) != tc.aloftErr {
				t.Errorf("reply %q headers %v; want %q, function error %q, aloft error %q", m.Data, m.Header, tc.want, tc.funcErr, tc.aloftErr)
			}
		})
	}
	req := e.user.requests()[0]
	h := req.Headers
	if req.Tenant != tenant || req.Function != "f" || req.Qualifier != "prod" || string(req.Payload) != `{"id":1}` {
		t.Errorf("request %+v", req)
	}
	if h["ce-specversion"] != "1.0" || h["ce-source"] != "/aloft/subjects/orders.*" || h["ce-type"] != "dev.aloft.nats.message" ||
		h["ce-subject"] != "orders.new" || len(h["ce-id"]) != 36 || h["Content-Type"] != "application/json" {
		t.Errorf("CloudEvent headers %v", h)
	}
	if _, err := time.Parse(time.RFC3339Nano, h["ce-time"]); err != nil {
		t.Errorf("ce-time: %v", err)
	}
	if got := e.user.requests()[1].Headers["Content-Type"]; got != "application/octet-stream" {
		t.Errorf("Content-Type of non-JSON data = %q", got)
	}
}

func TestFireAndForgetEnqueues(t *testing.T) {
	e := newEnv(t)
	e.s.Set(tenant, "f", []fn.IndexedEvent{event(0, "events.>", "")})
	e.request("events.ping", nil) // the subscription is in place
	msg := nats.NewMsg("events.a.b")
	msg.Data = []byte("hello")
	msg.Header.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	if err := e.nc.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the enqueue", func() bool { return len(e.q.list()) == 1 })
	got := e.q.list()[0]
	if got.tenant != tenant || got.function != "f" || got.trigger != "subject" || string(got.payload) != "hello" ||
		got.headers["ce-subject"] != "events.a.b" || got.headers["traceparent"] == "" {
		t.Errorf("enqueued %+v", got)
	}
	if n := len(e.user.requests()); n != 1 {
		t.Errorf("%d direct invocations, want only the request", n)
	}

	e.q.mu.Lock()
	e.q.fail = fn.Unavailable("the async queue is full")
	e.q.mu.Unlock()
	if err := e.nc.Publish("events.c", []byte("lost")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the drop to be counted", func() bool { return e.s.Stats().Dropped == 1 })
	if s := e.s.Stats(); s.Enqueued != 1 {
		t.Errorf("Stats = %+v", s)
	}
}

func TestSetReplacesSubscriptions(t *testing.T) {
	e := newEnv(t)
	e.s.Set(tenant, "f", []fn.IndexedEvent{event(0, "old.subject", ""), event(1, "kept.subject", "")})
	e.request("old.subject", []byte("1"))
	e.request("kept.subject", []byte("2"))

	e.s.Set(tenant, "f", []fn.IndexedEvent{event(1, "kept.subject", ""), event(2, "new.subject", "")})
	e.request("new.subject", []byte("3"))
	e.gone("old.subject")
	e.request("kept.subject", []byte("5"))

	disabled := event(1, "kept.subject", "")
	disabled.Event.Disabled = true
	e.s.Set(tenant, "f", []fn.IndexedEvent{disabled})
	e.gone("kept.subject")
	e.s.Set(tenant, "f", nil)
	e.gone("new.subject")
	var got []string
	for _, r := range e.user.requests() {
		if len(r.Payload) > 0 { // not a probe of gone
			got = append(got, string(r.Payload))
		}
	}
	if strings.Join(got, ",") != "1,2,3,5" {
		t.Errorf("invoked with %v, want 1,2,3,5", got)
	}
}

// gone waits until nobody answers on subject (the server learns of an
// unsubscribe a moment after the client).
func (e *env) gone(subject string) {
	e.t.Helper()
	eventually(e.t, subject+" to have no subscriber", func() bool {
		_, err := e.nc.Request(subject, nil, 100*time.Millisecond)
		return errors.Is(err, nats.ErrNoResponders)
	})
}

func TestBoundAnswersThrottled(t *testing.T) {
	e := newEnv(t) // MaxInFlight 2
	release := make(chan struct{})
	e.user.setAnswer(func(ctx context.Context, req invoke.Request) (*invoke.Response, error) {
		<-release
		return &invoke.Response{Result: fn.Result{Payload: []byte("done")}}, nil
	})
	e.s.Set(tenant, "f", []fn.IndexedEvent{event(0, "slow", "")})
	eventually(t, "the subscription", func() bool {
		_, err := e.nc.Request("slow", nil, 50*time.Millisecond)
		return !errors.Is(err, nats.ErrNoResponders)
	})
	// That probe holds one slot until released; fill the second.
	var wg sync.WaitGroup
	wg.Go(func() {
		m, err := e.nc.Request("slow", nil, 5*time.Second)
		if err != nil || string(m.Data) != "done" {
			t.Errorf("the call within the bound: %v %v", m, err)
		}
	})
	eventually(t, "two calls in flight", func() bool { return e.user.running.Load() == 2 })
	start := time.Now()
	m, err := e.nc.Request("slow", nil, 5*time.Second)
	if err != nil || m.Header.Get(HeaderError) != "throttled" || len(m.Data) != 0 {
		t.Fatalf("the call over the bound: %v %v, want Aloft-Error: throttled", m, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("throttled after %s, want at once", d)
	}
	close(release)
	wg.Wait()
	if s := e.s.Stats(); s.Throttled != 1 {
		t.Errorf("Stats = %+v", s)
	}
}

// Two nodes share each subscription's queue group: a message reaches one.
func TestQueueGroupAcrossNodes(t *testing.T) {
	e := newEnv(t)
	other := e.node()
	e.run(other)
	events := []fn.IndexedEvent{event(0, "jobs", "")}
	e.s.Set(tenant, "f", events)
	other.Set(tenant, "f", events)
	e.request("jobs", nil)
	eventually(t, "both nodes subscribed", func() bool {
		// Requests spread over both members once both are there.
		e.request("jobs", nil)
		return e.s.Stats().Calls > 0 && other.Stats().Calls > 0
	})
	before := e.s.Stats().Enqueued + other.Stats().Enqueued
	for i := range 50 {
		if err := e.nc.Publish("jobs", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	// The counter moves just after the enqueuer returns: wait for both.
	eventually(t, "50 enqueues", func() bool {
		return len(e.q.list()) >= 50 && e.s.Stats().Enqueued+other.Stats().Enqueued-before >= 50
	})
	if got := e.s.Stats().Enqueued + other.Stats().Enqueued - before; got != 50 || len(e.q.list()) != 50 {
		t.Errorf("%d enqueues (%d recorded) for 50 messages, want each once", got, len(e.q.list()))
	}
}

// Many concurrent callers: each gets an answer or throttled, and no more
// than the bound run at once.
func TestHammer(t *testing.T) {
	e := newEnv(t)
	e.user.setAnswer(func(ctx context.Context, req invoke.Request) (*invoke.Response, error) {
		time.Sleep(time.Millisecond) // the function's work
		return &invoke.Response{Result: fn.Result{Payload: req.Payload}}, nil
	})
	e.s.Set(tenant, "f", []fn.IndexedEvent{event(0, "hammer", "")})
	e.request("hammer", nil)
	var answered, throttled atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 32 {
		wg.Go(func() {
			<-start
			for j := range 10 {
				data := fmt.Sprintf("%d-%d", i, j)
				m, err := e.nc.Request("hammer", []byte(data), 5*time.Second)
				switch {
				case err != nil:
					t.Error(err)
				case m.Header.Get(HeaderError) == "throttled":
					throttled.Add(1)
				case string(m.Data) == data:
					answered.Add(1)
				default:
					t.Errorf("reply %q to %q", m.Data, data)
				}
			}
		})
	}
	wg.Go(func() {
		<-start
		for i := range 10 {
			e.s.Set(tenant, "g", []fn.IndexedEvent{event(i, fmt.Sprintf("other.%d", i), "")})
		}
	})
	close(start)
	wg.Wait()
	if answered.Load()+throttled.Load() != 320 || answered.Load() == 0 {
		t.Errorf("%d answered, %d throttled of 320", answered.Load(), throttled.Load())
	}
	if p := e.user.peak.Load(); p > 2 {
		t.Errorf("%d calls ran at once, over the bound of 2", p)
	}
}

func TestRunNeedsItsParts(t *testing.T) {
	if err := New(Config{}).Run(context.Background()); err == nil || !strings.Contains(err.Error(), "required") {
		t.Errorf("Run without a connection = %v", err)
	}
}

// cloudEventCases seed FuzzCloudEvent: a subscribed subject, the message's
// subject, its Content-Type and traceparent headers, and its data.
var cloudEventCases = []struct{ name, subscribed, subject, ctype, traceparent, data string }{
	{"json", "orders.*", "orders.new", "", "", `{"a":1}`},
	{"binary", "raw", "raw", "", "", "\x00\xff"},
	{"typed", "t.>", "t.a.b", "text/csv", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "a,b"},
	{"newlines", "x", "x", "text/plain\r\nX-Evil: 1", "a\nb", ""},
}

func TestCloudEvent(t *testing.T) {
	for _, tc := range cloudEventCases {
		t.Run(tc.name, func(t *testing.T) {
			h := cloudEventOf(tc.subscribed, tc.subject, tc.ctype, tc.traceparent, []byte(tc.data))
			want := tc.ctype
			switch {
			case want != "":
				want = headerSafe(want)
			case tc.name == "json":
				want = "application/json"
			default:
				want = "application/octet-stream"
			}
			if h["Content-Type"] != want || h["ce-subject"] != tc.subject || h["ce-source"] != "/aloft/subjects/"+tc.subscribed {
				t.Errorf("headers %v", h)
			}
			if *update {
				writeSeed(t, tc.name, fmt.Sprintf("string(%q)\nstring(%q)\nstring(%q)\nstring(%q)\n[]byte(%q)",
					tc.subscribed, tc.subject, tc.ctype, tc.traceparent, tc.data))
			}
		})
	}
}

// FuzzCloudEvent: whatever a producer sends, the headers handed to a
// function stay one line each and carry the required attributes.
func FuzzCloudEvent(f *testing.F) {
	f.Fuzz(func(t *testing.T, subscribed, subject, ctype, traceparent string, data []byte) {
		h := cloudEventOf(subscribed, subject, ctype, traceparent, data)
		for k, v := range h {
			if strings.ContainsAny(v, "\r\n") {
				t.Fatalf("header %s = %q spans lines", k, v)
			}
		}
		for _, k := range []string{"ce-id", "ce-specversion", "ce-source", "ce-type", "ce-time", "Content-Type"} {
			if h[k] == "" && k != "ce-source" {
				t.Fatalf("no %s in %v", k, h)
			}
		}
	})
}

// cloudEventOf builds the headers of a message with the given parts.
func cloudEventOf(subscribed, subject, ctype, traceparent string, data []byte) map[string]string {
	m := nats.NewMsg(subject)
	m.Data = data
	if ctype != "" {
		m.Header["Content-Type"] = []string{ctype}
	}
	if traceparent != "" {
		m.Header["traceparent"] = []string{traceparent}
	}
	return cloudEvent(subscribed, m)
}

func writeSeed(t *testing.T, name, values string) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", "FuzzCloudEvent")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte("go test fuzz v1\n"+values+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

package async

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"aloft/internal/events/deadletter"
	"aloft/internal/events/records"
	"aloft/internal/fn"
	"aloft/internal/invoke"
	"aloft/internal/store"
)

const tenant = "default"

// env is a real embedded JetStream with the stores Async needs.
type env struct {
	st     *store.Store
	dl     *deadletter.Store
	rec    *records.Store
	inv    *testInvoker
	sender *testSender
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir(), NodeID: "test"})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	dl, err := deadletter.Open(ctx, st.JetStream(), 1)
	if err != nil {
		t.Fatalf("open dead letters: %v", err)
	}
	rec, err := records.Open(ctx, st.JetStream(), 1, testLogger(t))
	if err != nil {
		t.Fatalf("open records: %v", err)
	}
	t.Cleanup(func() { _ = rec.Close() })
	return &env{st: st, dl: dl, rec: rec, inv: newTestInvoker(), sender: &testSender{}}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
}

// newAsync returns an Async on the env's store with test timings.
func (e *env) newAsync(t testing.TB, mod ...func(*Config)) *Async {
	t.Helper()
	cfg := Config{
		JS: e.st.JetStream(), Functions: e.st, Invoker: e.inv, Sender: e.sender,
		DeadLetters: e.dl, Records: e.rec, Logger: testLogger(t), NodeID: "test",
		RetryBase: 20 * time.Millisecond, AckWait: 2 * time.Second,
	}
	for _, m := range mod {
		m(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	a.rand = func() float64 { return 0.5 } // no jitter: exact delays
	return a
}

// createFunction stores a lambda function with the given async settings.
func (e *env) createFunction(t testing.TB, name string, mod ...func(*fn.Function)) {
	t.Helper()
	f := &fn.Function{Tenant: tenant, Config: fn.Config{Name: name, Runtime: fn.RuntimeLambda}}
	f.Normalize()
	for _, m := range mod {
		m(f)
	}
	if _, err := e.st.CreateFunction(context.Background(), f); err != nil {
		t.Fatalf("create function %s: %v", name, err)
	}
}

func retries(n int) func(*fn.Function) {
	return func(f *fn.Function) { f.Async.Retries = &n }
}

// run runs a.Run until the returned stop is called (or the test ends);
// stop waits for Run and checks its result.
func run(t testing.TB, a *Async) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("run: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("run did not return 20s after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func enqueue(t testing.TB, a *Async, e Event) string {
	t.Helper()
	if e.Tenant == "" {
		e.Tenant = tenant
	}
	id, dup, err := a.Enqueue(context.Background(), e)
	if err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	if dup {
		t.Fatalf("enqueue: unexpected duplicate")
	}
	return id
}

// streamMsgs is how many events the ASYNC stream holds.
func streamMsgs(t testing.TB, a *Async) uint64 {
	t.Helper()
	info, err := a.stream.Info(context.Background())
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	return info.State.Msgs
}

func deadLetters(t testing.TB, e *env, function string) []*deadletter.Entry {
	t.Helper()
	list, err := e.dl.List(context.Background(), tenant, function, 1000)
	if err != nil {
		t.Fatalf("list dead letters: %v", err)
	}
	return list
}

func wantStatus(t testing.TB, err error, status int) {
	t.Helper()
	var fe *fn.Error
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not an *fn.Error with status %d", err, err, status)
	}
	if fe.Status != status {
		t.Fatalf("error %q has status %d, want %d", fe.Message, fe.Status, status)
	}
}

// behavior is how a test function answers.
type behavior struct {
	failFirst int           // fail (FunctionError) the first N calls
	fail      bool          // fail every call
	throttle  bool          // answer every call with a 429 fn.Error
	notFound  bool          // answer fn.NotFound (an alias that does not exist)
	gate      chan struct{} // when set, each call waits until it is closed (or ctx ends)
}

// call is what the test function received, and when.
type call struct {
	req invoke.Request
	at  time.Time
}

// testInvoker stands in for users' functions: it echoes the payload, or
// fails, throttles or blocks as its function's behavior says, and records
// every call and how many ran at once.
type testInvoker struct {
	mu         sync.Mutex
	behaviors  map[string]behavior
	calls      map[string][]call
	running    map[string]int
	maxRunning map[string]int
	total      int
	maxTotal   int
}

func newTestInvoker() *testInvoker {
	return &testInvoker{behaviors: map[string]behavior{}, calls: map[string][]call{},
		running: map[string]int{}, maxRunning: map[string]int{}}
}

func (ti *testInvoker) set(function string, b behavior) {
	ti.mu.Lock()
	ti.behaviors[function] = b
	ti.mu.Unlock()
}

func (ti *testInvoker) Invoke(ctx context.Context, req invoke.Request) (*invoke.Response, error) {
	ti.mu.Lock()
	b := ti.behaviors[req.Function]
	n := len(ti.calls[req.Function])
	ti.calls[req.Function] = append(ti.calls[req.Function], call{req: req, at: time.Now()})
	ti.running[req.Function]++
	ti.maxRunning[req.Function] = max(ti.maxRunning[req.Function], ti.running[req.Function])
	ti.total++
	ti.maxTotal = max(ti.maxTotal, ti.total)
	ti.mu.Unlock()
	defer func() {
		ti.mu.Lock()
		ti.running[req.Function]--
		ti.total--
		ti.mu.Unlock()
	}()
	if b.gate != nil {
		select {
		case <-b.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	resp := &invoke.Response{InvocationID: req.ID, Version: "$LATEST"}
	switch {
	case b.notFound:
		return nil, fn.NotFound("alias %q not found", req.Qualifier)
	case b.throttle:
		return nil, fn.Throttled(1, "function %q is at its concurrency limit", req.Function)
	case b.fail || n < b.failFirst:
		resp.FunctionError = true
		resp.Payload = fn.ErrorPayload("Boom", "attempt failed")
	default:
		resp.Payload = req.Payload
	}
	return resp, nil
}

func (ti *testInvoker) callsOf(function string) []call {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	return append([]call(nil), ti.calls[function]...)
}

func (ti *testInvoker) count(function string) int {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	return len(ti.calls[function])
}

// testSender is a queue that records what destinations send it.
type testSender struct {
	mu   sync.Mutex
	sent []sentMsg
}

type sentMsg struct {
	tenant, queue string
	body          []byte
}

func (s *testSender) SendRaw(_ context.Context, tenant, queue string, body []byte) error {
	s.mu.Lock()
	s.sent = append(s.sent, sentMsg{tenant, queue, append([]byte(nil), body...)})
	s.mu.Unlock()
	return nil
}

func (s *testSender) messages() []sentMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sentMsg(nil), s.sent...)
}

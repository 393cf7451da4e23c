package async

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"aloft/internal/events/deadletter"
	"aloft/internal/fn"
)

func (ti *testInvoker) concurrency(function string) (fnRunning, total, fnMax, totalMax int) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	return ti.running[function], ti.total, ti.maxRunning[function], ti.maxTotal
}

func TestLimits(t *testing.T) {
	t.Parallel()
	t.Run("per function", func(t *testing.T) {
		e := newEnv(t)
		gate := make(chan struct{})
		e.createFunction(t, "capped", func(f *fn.Function) { f.Scale.Max = 2 }) // 2 instances × concurrency 1
		e.inv.set("capped", behavior{gate: gate})
		a := e.newAsync(t)
		run(t, a)
		for range 6 {
			enqueue(t, a, Event{Function: "capped"})
		}
		eventually(t, "2 attempts running", func() bool { n, _, _, _ := e.inv.concurrency("capped"); return n == 2 })
		if s := a.Stats(); s.InFlight != 2 {
			t.Errorf("stats = %+v, want 2 in flight", s)
		}
		close(gate)
		eventually(t, "every event to succeed", func() bool { return a.Stats().Succeeded == 6 })
		if _, _, fnMax, _ := e.inv.concurrency("capped"); fnMax != 2 {
			t.Errorf("at most %d attempts ran at once, want 2", fnMax)
		}
	})
	t.Run("node-wide", func(t *testing.T) {
		e := newEnv(t)
		gate := make(chan struct{})
		names := []string{"n1", "n2", "n3"}
		for _, name := range names {
			e.createFunction(t, name, func(f *fn.Function) { f.Scale.Max = 2 })
			e.inv.set(name, behavior{gate: gate})
		}
		a := e.newAsync(t, func(c *Config) { c.MaxInFlight = 3 })
		run(t, a)
		for range 4 {
			for _, name := range names {
				enqueue(t, a, Event{Function: name})
			}
		}
		eventually(t, "3 attempts running", func() bool { _, total, _, _ := e.inv.concurrency("n1"); return total == 3 })
		close(gate)
		eventually(t, "every event to succeed", func() bool { return a.Stats().Succeeded == 12 })
		for _, name := range names {
			_, _, fnMax, totalMax := e.inv.concurrency(name)
			if fnMax > 2 || totalMax != 3 {
				t.Errorf("%s: at most %d ran at once (want <= 2), %d in all (want 3)", name, fnMax, totalMax)
			}
		}
	})
}

// TestRestartDeliversEverything stops a node while attempts run and starts
// another on the same store: every accepted event runs at least once.
func TestRestartDeliversEverything(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createFunction(t, "work", func(f *fn.Function) { f.Scale.Max = 5 })
	e.inv.set("work", behavior{gate: make(chan struct{})}) // never opens: node 1 never finishes
	short := func(c *Config) { c.AckWait = 300 * time.Millisecond }
	a1 := e.newAsync(t, short)
	stop1 := run(t, a1)
	ids := map[string]bool{}
	for i := range 20 {
		ids[enqueue(t, a1, Event{Function: "work", Payload: fmt.Appendf(nil, "%d", i)})] = true
	}
	eventually(t, "5 attempts in flight", func() bool { return a1.Stats().InFlight == 5 })
	stop1()
	if s := a1.Stats(); s.InFlight != 0 || s.Succeeded != 0 {
		t.Fatalf("stopped node: stats = %+v, want nothing in flight or succeeded", s)
	}

	e.inv.set("work", behavior{})
	a2 := e.newAsync(t, short)
	run(t, a2)
	eventually(t, "every event to succeed", func() bool { return a2.Stats().Succeeded >= 20 })
	eventually(t, "the stream to be empty", func() bool { return streamMsgs(t, a2) == 0 })
	seen := map[string]int{}
	for _, c := range e.inv.callsOf("work") {
		seen[c.req.ID]++
	}
	dups := 0
	for id := range ids {
		if seen[id] == 0 {
			t.Errorf("event %s never ran", id)
		}
		dups += seen[id] - 1
	}
	t.Logf("20 events, %d calls: %d ran again after the restart", len(e.inv.callsOf("work")), dups)
	if dups < 5 {
		t.Errorf("%d events ran twice, want the 5 cut short by the stop", dups)
	}
}

// TestHammer releases 64 goroutines at once to enqueue 2,000 events while
// Run executes them.
func TestHammer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createFunction(t, "hammer", func(f *fn.Function) { f.Scale.Max = 64 })
	a := e.newAsync(t)
	run(t, a)
	const workers, total = 64, 2000
	ids := make([][]string, workers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			<-start
			for i := w; i < total; i += workers {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a loaded machine is slow
				id, dup, err := a.Enqueue(ctx, Event{Tenant: tenant, Function: "hammer",
					Payload: fmt.Appendf(nil, `{"i":%d}`, i)})
				cancel()
				if err != nil || dup {
					t.Errorf("enqueue %d: %v (duplicate %v)", i, err, dup)
					return
				}
				ids[w] = append(ids[w], id)
			}
		})
	}
	close(start)
	wg.Wait()
	eventually(t, "every event to run", func() bool { return a.Stats().Succeeded >= total })
	ran := map[string]bool{}
	for _, c := range e.inv.callsOf("hammer") {
		ran[c.req.ID] = true
	}
	n := 0
	for _, list := range ids {
		for _, id := range list {
			n++
			if !ran[id] {
				t.Errorf("event %s never ran", id)
			}
		}
	}
	if n != total || len(ran) != total {
		t.Errorf("%d ids returned, %d distinct ran; want %d", n, len(ran), total)
	}
	if s := a.Stats(); s.Enqueued != total || s.InFlight != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestRetryDelay(t *testing.T) {
	tests := []struct {
		n    int
		r    float64
		want time.Duration
	}{
		{1, 0.5, 10 * time.Second},
		{2, 0.5, 20 * time.Second},
		{3, 0.5, 40 * time.Second},
		{1, 0, 8 * time.Second},
		{1, 0.999999, 12 * time.Second},
		{6, 0.5, 5 * time.Minute},
		{50, 0, 4 * time.Minute},
		{50, 0.99, 5 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("attempt %d r %.2f", tt.n, tt.r), func(t *testing.T) {
			got := retryDelay(10*time.Second, tt.n, tt.r)
			if d := got - tt.want; d < -time.Millisecond || d > time.Millisecond {
				t.Errorf("retryDelay = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestEncodeDecode(t *testing.T) {
	now := time.UnixMilli(1700000000123)
	streamTime := now.Add(time.Second)
	tests := []struct {
		name string
		ev   Event
		seq  uint64
	}{
		{"all fields", Event{ID: "id-1", Tenant: "t_1", Function: "fn", Qualifier: "prod", Payload: []byte("x"),
			Headers: map[string]string{"ce-id": "1", "Weird-Case": "a\r\nb"}, TraceID: "Root=1", Trigger: "schedule"}, 7},
		{"defaults", Event{ID: "id-2", Tenant: "t", Function: "fn", Qualifier: fn.LatestVersion, Trigger: "api"}, 8},
		{"derived id", Event{Tenant: "t", Function: "fn", Qualifier: fn.LatestVersion, Trigger: "api", IdempotencyKey: "k"}, 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := encode(&tt.ev, now)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := decode(msg.Subject, msg.Header, msg.Data, tt.seq, streamTime)
			if !ok {
				t.Fatal("decode failed")
			}
			want := tt.ev
			if want.ID == "" {
				want.ID = derivedID(tt.ev.Tenant+"/"+tt.ev.Function+"/"+tt.ev.IdempotencyKey, tt.seq)
			}
			want.IdempotencyKey = ""
			if fmt.Sprint(got.Event) != fmt.Sprint(want) || !got.accepted.Equal(now) {
				t.Errorf("decoded %+v at %s, want %+v at %s", got.Event, got.accepted, want, now)
			}
		})
	}
	t.Run("fallbacks", func(t *testing.T) {
		got, ok := decode("async.t.fn", nil, nil, 5, streamTime)
		if !ok || !validID(got.ID) || !got.accepted.Equal(streamTime) || got.Qualifier != fn.LatestVersion || got.Trigger != "api" {
			t.Errorf("decoded %+v, want a derived id, the stream time and defaults", got)
		}
	})
	for _, subj := range []string{"async.t", "other.t.fn", "async.t.Fn", "async.t.fn.x", "async..fn"} {
		if _, ok := decode(subj, nil, nil, 1, streamTime); ok {
			t.Errorf("decode accepted subject %q", subj)
		}
	}
	if derivedID("a", 1) == derivedID("a", 2) || derivedID("a", 1) != derivedID("a", 1) {
		t.Error("derived ids are not a function of key and sequence")
	}
}

// countingSource is a function store that counts its reads.
type countingSource struct {
	mu      sync.Mutex
	reads   int
	missing bool
}

func (s *countingSource) GetFunction(_ context.Context, tenant, name string) (*fn.Function, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	if s.missing {
		return nil, 0, fn.NotFound("function %q not found", name)
	}
	return &fn.Function{Tenant: tenant, Config: fn.Config{Name: name}}, 1, nil
}

func (s *countingSource) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads
}

// noJS satisfies jetstream.JetStream for tests that never reach it.
type noJS struct{ jetstream.JetStream }

func TestFunctionCache(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &countingSource{}
		a, err := New(Config{JS: noJS{}, Functions: src, Invoker: newTestInvoker(), DeadLetters: &deadletter.Store{}})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		read := func(want int) {
			t.Helper()
			if _, err := a.function(ctx, tenant, "f"); err != nil {
				t.Fatal(err)
			}
			if got := src.count(); got != want {
				t.Errorf("%d reads of the store, want %d", got, want)
			}
		}
		read(1)
		read(1)
		time.Sleep(functionTTL)
		read(2)
		a.Forget(tenant, "f")
		read(3)
		src.mu.Lock()
		src.missing = true
		src.mu.Unlock()
		a.Forget(tenant, "f")
		for want := 4; want <= 5; want++ {
			if _, err := a.function(ctx, tenant, "f"); !fn.IsNotFound(err) {
				t.Fatalf("function = %v, want not found", err)
			}
			if got := src.count(); got != want {
				t.Errorf("%d reads, want %d: not-found answers are not cached", got, want)
			}
		}
	})
}

func TestParseFilter(t *testing.T) {
	tests := []struct {
		in               string
		tenant, function string
		ok               bool
	}{
		{"async.default.hello", "default", "hello", true},
		{"async.a_b.c", "a_b", "c", true},
		{"async.default", "", "", false},
		{"async.default.a.b", "", "", false},
		{"dlq.default.hello", "", "", false},
		{"async.*.hello", "", "", false},
	}
	for _, tt := range tests {
		tenant, function, ok := parseFilter(tt.in)
		if tenant != tt.tenant || function != tt.function || ok != tt.ok {
			t.Errorf("parseFilter(%q) = %q, %q, %v", tt.in, tenant, function, ok)
		}
	}
	if consumerName("a_b", "c") == consumerName("a", "b-c") {
		t.Error("consumer names collide")
	}
}

// TestDiscovery covers what Run's discovery does besides starting loops:
// idle loops stop and start again, events without a consumer get one, and
// consumers of deleted functions go.
func TestDiscovery(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, name := range []string{"idle", "orphan", "temp"} {
		e.createFunction(t, name)
	}
	a := e.newAsync(t)
	a.tune = tuning{discoverEvery: 20 * time.Millisecond, idleStop: 100 * time.Millisecond, probeWait: 50 * time.Millisecond,
		holdMax: holdMax}
	run(t, a)
	ctx := context.Background()
	hasWorker := func(name string) bool { _, ok := a.workers.Load(tenant + "/" + name); return ok }
	hasConsumer := func(name string) bool {
		_, err := a.stream.Consumer(ctx, consumerName(tenant, name))
		return err == nil
	}

	t.Run("idle loop stops and starts again", func(t *testing.T) {
		enqueue(t, a, Event{Function: "idle"})
		eventually(t, "the first event", func() bool { return e.inv.count("idle") == 1 })
		eventually(t, "the idle loop to stop", func() bool { return !hasWorker("idle") })
		enqueue(t, a, Event{Function: "idle"})
		eventually(t, "the second event", func() bool { return e.inv.count("idle") == 2 })
	})
	t.Run("event without a consumer", func(t *testing.T) {
		msg, err := encode(&Event{ID: "orphan-1", Tenant: tenant, Function: "orphan", Qualifier: fn.LatestVersion,
			Trigger: "api"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.st.JetStream().PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the orphan to run", func() bool { return e.inv.count("orphan") == 1 })
		if !hasConsumer("orphan") {
			t.Error("no consumer was created for the orphan")
		}
	})
	t.Run("consumer of a deleted function", func(t *testing.T) {
		enqueue(t, a, Event{Function: "temp"})
		eventually(t, "the event", func() bool { return e.inv.count("temp") == 1 })
		if err := e.st.DeleteFunction(ctx, tenant, "temp"); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the consumer to go", func() bool { return !hasConsumer("temp") })
		if !hasConsumer("idle") {
			t.Error("the consumer of an existing idle function went too")
		}
	})
}

// TestFunctionCacheHammer releases 64 goroutines at once on the
// configuration cache, half reading, half forgetting.
func TestFunctionCacheHammer(t *testing.T) {
	src := &countingSource{}
	a, err := New(Config{JS: noJS{}, Functions: src, Invoker: newTestInvoker(), DeadLetters: &deadletter.Store{}})
	if err != nil {
		t.Fatal(err)
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Go(func() {
			<-start
			name := fmt.Sprintf("f%d", (g/2)%4)
			for range 200 {
				if g%2 == 0 {
					a.Forget(tenant, name)
					continue
				}
				f, err := a.function(context.Background(), tenant, name)
				if err != nil || f.Name != name {
					t.Errorf("function %s = %v, %v", name, f, err)
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	if n := src.count(); n < 4 || n > 32*200 {
		t.Errorf("%d reads of the store, want between 4 and one per lookup", n)
	}
}

// TestPrefetch checks the events held ahead of a function's free slots:
// never more attempts at once than the function's cap, and events held
// while attempts turn slow are handed back for any node to take.
func TestPrefetch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createFunction(t, "pre", func(f *fn.Function) { f.Scale.Max = 2 })
	a := e.newAsync(t)
	a.tune.holdMax = 200 * time.Millisecond
	run(t, a)
	for range 4 { // quick attempts: the loop learns they are short
		enqueue(t, a, Event{Function: "pre"})
	}
	eventually(t, "the quick events to succeed", func() bool { return a.Stats().Succeeded == 4 })
	v, ok := a.workers.Load(tenant + "/pre")
	if !ok {
		t.Fatal("no pull loop for the function")
	}
	w := v.(*worker)
	if d := w.depth(2); d != 2 {
		t.Fatalf("depth after quick attempts = %d, want 2", d)
	}

	gate := make(chan struct{})
	e.inv.set("pre", behavior{gate: gate})
	for range 8 {
		enqueue(t, a, Event{Function: "pre"})
	}
	eventually(t, "2 attempts running and some held", func() bool {
		n, _, _, _ := e.inv.concurrency("pre")
		held, _ := w.held(1)
		if held > 2 {
			t.Fatalf("%d events held, want at most 2", held)
		}
		return n == 2 && held > 0
	})
	eventually(t, "the held events to be handed back", func() bool {
		held, _ := w.held(1)
		return held == 0 && a.Stats().Deferred > 0
	})
	if d := w.depth(2); d != 0 {
		t.Errorf("depth while attempts are slow = %d, want 0 (average %s, stats %+v)", d, time.Duration(w.avgAttempt.Load()), a.Stats())
	}
	close(gate)
	eventually(t, "every event to succeed", func() bool { return a.Stats().Succeeded == 12 })
	if _, _, fnMax, _ := e.inv.concurrency("pre"); fnMax != 2 {
		t.Errorf("at most %d attempts ran at once, want 2", fnMax)
	}
	eventually(t, "no attempt in flight", func() bool { return a.Stats().InFlight == 0 })
	if s := a.Stats(); s.Started != 12 {
		t.Errorf("stats = %+v, want 12 started", s)
	}
	eventually(t, "the stream to be empty", func() bool { return streamMsgs(t, a) == 0 })
}

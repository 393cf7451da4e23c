package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"aloft/internal/fn"
	"aloft/internal/store"
)

// recorder stands in for what a node passes as Fire — the async queue's
// durable, idempotent enqueue, which in turn runs the user's function. It
// records every call with the node that made it and when, and can fail the
// first failFirst calls like a queue that is briefly unavailable.
type recorder struct {
	mu        sync.Mutex
	calls     []call
	failFirst int
}

type call struct {
	node string
	tick Tick
	at   time.Time
	err  error
}

func (r *recorder) fire(node string) func(context.Context, Tick) error {
	return func(_ context.Context, t Tick) error {
		at := time.Now()
		r.mu.Lock()
		defer r.mu.Unlock()
		var err error
		if r.failFirst > 0 {
			r.failFirst--
			err = errors.New("queue unavailable")
		}
		r.calls = append(r.calls, call{node: node, tick: t, at: at, err: err})
		return err
	}
}

// fired returns the successful calls, optionally only those of one index.
func (r *recorder) fired(index int) []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []call
	for _, c := range r.calls {
		if c.err == nil && (index < 0 || c.tick.Index == index) {
			out = append(out, c)
		}
	}
	return out
}

func (r *recorder) all() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func openKV(t *testing.T) jetstream.KeyValue {
	t.Helper()
	st, err := store.Open(t.Context(), store.Config{DataDir: t.TempDir(), NodeID: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	kv, err := OpenBucket(t.Context(), st.JetStream(), 1)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func newScheduler(t *testing.T, kv jetstream.KeyValue, node string, fire func(context.Context, Tick) error, catchUp time.Duration) *Scheduler {
	t.Helper()
	s, err := New(Config{KV: kv, Fire: fire, CatchUp: catchUp, NodeID: node,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testWriter sends the scheduler's log to the test's.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// start runs s until the returned stop is called (or the test ends), and
// checks Run returned nil.
func start(t *testing.T, s *Scheduler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func schedEvents(exprs ...string) []fn.IndexedEvent {
	var out []fn.IndexedEvent
	for i, e := range exprs {
		out = append(out, fn.IndexedEvent{Index: i, Event: fn.Event{Schedule: e}})
	}
	return out
}

// ready reports whether the schedule has started (baseline or catch-up
// done) in the current Run.
func ready(s *Scheduler, tenant, function string, index int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.fns[tenant+"/"+function][index]
	return e != nil && e.ready && !e.busy
}

func keyOf(t *testing.T, tenant, function string, index int, expr string) string {
	t.Helper()
	sched, err := Parse(expr, "")
	if err != nil {
		t.Fatal(err)
	}
	return stateKey(tenant, function, index, sched)
}

func putState(t *testing.T, kv jetstream.KeyValue, key string, st state) {
	t.Helper()
	b, _ := json.Marshal(st)
	if _, err := kv.Put(t.Context(), key, b); err != nil {
		t.Fatal(err)
	}
}

func getState(t *testing.T, kv jetstream.KeyValue, key string) *state {
	t.Helper()
	e, err := kv.Get(t.Context(), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var st state
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

// rate(1 second) fires every second, each tick once, within milliseconds
// of the tick, and the bucket and List follow.
func TestFiresOnTime(t *testing.T) {
	t.Parallel()
	kv := openKV(t)
	rec := &recorder{}
	s := newScheduler(t, kv, "n1", rec.fire("n1"), 0)
	if err := s.Set("default", "tick", schedEvents("rate(1 second)")); err != nil {
		t.Fatal(err)
	}
	stop := start(t, s)
	eventually(t, 5*time.Second, "3 ticks", func() bool { return len(rec.fired(0)) >= 3 })
	stop()

	got := rec.fired(0)
	var worst time.Duration
	for i, c := range got {
		late := c.at.Sub(c.tick.Time)
		worst = max(worst, late)
		switch {
		case late < 0 || late > 250*time.Millisecond:
			t.Errorf("tick %s ran %s after its time", c.tick.Time, late)
		case c.tick.CatchUp:
			t.Errorf("tick %s marked catch-up", c.tick.Time)
		case c.tick.Time.Nanosecond() != 0:
			t.Errorf("tick %s is not on a second", c.tick.Time)
		case i > 0 && c.tick.Time.Sub(got[i-1].tick.Time) != time.Second:
			t.Errorf("ticks %s then %s: not one second apart", got[i-1].tick.Time, c.tick.Time)
		case c.tick.ID != fmt.Sprintf("default/tick/0/%d", c.tick.Time.Unix()):
			t.Errorf("tick id %q", c.tick.ID)
		}
	}
	t.Logf("%d ticks, latest %s after its time", len(got), worst)

	lastTick := got[len(got)-1].tick.Time
	st := getState(t, kv, keyOf(t, "default", "tick", 0, "rate(1 second)"))
	if st == nil || st.Last.Before(lastTick) || st.Node != "n1" {
		t.Errorf("state = %+v, want the last tick %s fired by n1", st, lastTick)
	}
	list := s.List("default", "tick")
	if len(list) != 1 || list[0].Last.Before(lastTick) || !list[0].Next.After(lastTick) || list[0].Schedule != "rate(1 second)" {
		t.Errorf("List = %+v", list)
	}
}

// Three schedulers on one bucket fire each tick exactly once between them,
// and miss none.
func TestRacingSchedulersFireOnce(t *testing.T) {
	t.Parallel()
	kv := openKV(t)
	rec := &recorder{}
	var all []*Scheduler
	var stops []func()
	for i := range 3 {
		node := fmt.Sprintf("n%d", i)
		s := newScheduler(t, kv, node, rec.fire(node), 0)
		if err := s.Set("default", "race", schedEvents("rate(1 second)", "rate(2 seconds)")); err != nil {
			t.Fatal(err)
		}
		all = append(all, s)
	}
	for _, s := range all {
		stops = append(stops, start(t, s))
	}
	eventually(t, 6*time.Second, "4 ticks of index 0", func() bool { return len(rec.fired(0)) >= 4 })
	eventually(t, 5*time.Second, "every node to see the last fire", func() bool {
		for _, s := range all {
			if l := s.List("default", "race"); len(l) != 2 || l[0].Last.IsZero() {
				return false
			}
		}
		return true
	})
	for _, stop := range stops {
		stop()
	}

	byID := map[string]int{}
	nodes := map[string]bool{}
	for _, c := range rec.all() {
		if c.err == nil {
			byID[c.tick.ID]++
			nodes[c.node] = true
		}
	}
	for id, n := range byID {
		if n != 1 {
			t.Errorf("tick %s fired %d times", id, n)
		}
	}
	for _, idx := range []int{0, 1} {
		period := time.Duration(idx+1) * time.Second
		var ticks []time.Time
		for _, c := range rec.fired(idx) {
			ticks = append(ticks, c.tick.Time)
		}
		slices.SortFunc(ticks, time.Time.Compare)
		for i := 1; i < len(ticks); i++ {
			if d := ticks[i].Sub(ticks[i-1]); d != period {
				t.Errorf("index %d: ticks %s then %s, %s apart, want %s", idx, ticks[i-1], ticks[i], d, period)
			}
		}
	}
	t.Logf("%d ticks fired by nodes %v", len(byID), nodes)
}

// A new Scheduler on the same bucket (a restart) fires the one most recent
// missed tick within the catch-up window, not every missed tick, and none
// older than the window.
func TestRestartCatchUp(t *testing.T) {
	t.Parallel()
	kv := openKV(t)
	now := time.Now().UTC()
	hour := nextRate(now, time.Hour).Add(-time.Hour) // rate(1 hour)'s latest tick
	tests := []struct {
		name    string
		expr    string
		catchUp time.Duration
		st      *state // stored before the restart; nil: none
		want    time.Time
	}{
		// The latest minute may move on while the test runs: any tick
		// from want to the start of the schedule is right, if only one.
		{"ten missed minutes fire one", "rate(1 minute)", 0,
			&state{Tick: now.Add(-10 * time.Minute).Truncate(time.Minute), Fired: true, Node: "old"}, now.Truncate(time.Minute)},
		{"a claim never fired is taken over", "rate(1 hour)", 0,
			&state{Tick: hour, Node: "dead", Run: "gone", Claimed: now.Add(-time.Minute)}, hour},
		{"outside the window", "cron(0 0 1 1 ? 2020)", 0,
			&state{Tick: time.Date(2019, 12, 31, 0, 0, 0, 0, time.UTC), Fired: true, Node: "old"}, time.Time{}},
		{"catch-up disabled", "rate(1 minute)", -1,
			&state{Tick: now.Add(-10 * time.Minute).Truncate(time.Minute), Fired: true, Node: "old"}, time.Time{}},
		{"nothing missed", "rate(1 hour)", 0,
			&state{Tick: hour, Fired: true, Node: "old", Last: hour}, time.Time{}},
		{"new schedule: baseline, nothing fires", "rate(1 minute)", 0, nil, time.Time{}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			function := fmt.Sprintf("fn-%d", i)
			key := keyOf(t, "default", function, 0, tt.expr)
			if tt.st != nil {
				putState(t, kv, key, *tt.st)
			}
			rec := &recorder{}
			s := newScheduler(t, kv, "n2", rec.fire("n2"), tt.catchUp)
			begin := time.Now()
			// Set before Run starts, or (every other case) after.
			lateSet := i%2 == 1
			if !lateSet {
				if err := s.Set("default", function, schedEvents(tt.expr)); err != nil {
					t.Fatal(err)
				}
			}
			stop := start(t, s)
			if lateSet {
				if err := s.Set("default", function, schedEvents(tt.expr)); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, 5*time.Second, "the schedule to start", func() bool { return ready(s, "default", function, 0) })
			end := time.Now()
			stop()

			var caught []call
			for _, c := range rec.fired(0) {
				if c.tick.CatchUp {
					caught = append(caught, c)
				}
			}
			switch {
			case tt.want.IsZero() && len(caught) != 0:
				t.Fatalf("caught up %d ticks (first %s), want none", len(caught), caught[0].tick.Time)
			case tt.want.IsZero():
			case len(caught) != 1:
				t.Fatalf("caught up %d ticks, want exactly 1", len(caught))
			case tt.expr == "rate(1 minute)" && (caught[0].tick.Time.Before(tt.want) || caught[0].tick.Time.After(end)):
				t.Fatalf("caught up tick %s, want the latest minute, from %s", caught[0].tick.Time, tt.want)
			case tt.expr != "rate(1 minute)" && !caught[0].tick.Time.Equal(tt.want):
				t.Fatalf("caught up tick %s, want %s", caught[0].tick.Time, tt.want)
			}
			st := getState(t, kv, key)
			switch {
			case st == nil:
				t.Fatal("no state stored")
			case tt.st == nil && (!st.Fired || !st.Last.IsZero() || st.Tick.Before(begin.Add(-time.Second)) || st.Tick.After(time.Now())):
				t.Fatalf("baseline = %+v, want fired, no last, tick about now", st)
			case !tt.want.IsZero() && (!st.Fired || st.Node != "n2" || !st.Last.Equal(caught[0].tick.Time)):
				t.Fatalf("state after catch-up = %+v", st)
			}
		})
	}
}

// A real restart: a node fires, stops, misses two ticks; a new Scheduler
// on the bucket fires the latest of them once, then carries on, and no tick
// fires twice.
func TestRestartMissesTicks(t *testing.T) {
	t.Parallel()
	kv := openKV(t)
	rec := &recorder{}
	a := newScheduler(t, kv, "a", rec.fire("a"), 0)
	if err := a.Set("default", "restart", schedEvents("rate(1 second)")); err != nil {
		t.Fatal(err)
	}
	stopA := start(t, a)
	eventually(t, 5*time.Second, "a tick on the first node", func() bool { return len(rec.fired(0)) >= 1 })
	stopA()
	lastA := rec.fired(0)[len(rec.fired(0))-1].tick.Time
	// Down for two ticks.
	eventually(t, 5*time.Second, "two ticks to pass", func() bool { return time.Now().After(lastA.Add(2200 * time.Millisecond)) })

	b := newScheduler(t, kv, "b", rec.fire("b"), 0)
	if err := b.Set("default", "restart", schedEvents("rate(1 second)")); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	start(t, b)
	eventually(t, 5*time.Second, "a regular tick on the second node", func() bool {
		for _, c := range rec.fired(0) {
			if c.node == "b" && !c.tick.CatchUp {
				return true
			}
		}
		return false
	})
	var caught []time.Time
	ids := map[string]bool{}
	for _, c := range rec.fired(0) {
		if ids[c.tick.ID] {
			t.Errorf("tick %s fired twice", c.tick.ID)
		}
		ids[c.tick.ID] = true
		if c.tick.CatchUp {
			caught = append(caught, c.tick.Time)
		}
	}
	if len(caught) != 1 || !caught[0].After(lastA.Add(time.Second)) || caught[0].After(begin) {
		t.Fatalf("caught up %v, want one tick after %s and by %s", caught, lastA.Add(time.Second), begin)
	}
}

// An edited expression starts fresh: whatever state its key holds, an
// edit made while running fires nothing from the past, and a schedule new
// to the bucket records a baseline.
func TestEditStartsFresh(t *testing.T) {
	t.Parallel()
	kv := openKV(t)
	stale := state{Tick: time.Now().UTC().Add(-10 * time.Minute).Truncate(time.Minute), Fired: true, Node: "old"}
	putState(t, kv, keyOf(t, "default", "edit", 0, "rate(1 minute)"), stale)

	rec := &recorder{}
	s := newScheduler(t, kv, "n1", rec.fire("n1"), 0)
	begin := time.Now()
	if err := s.Set("default", "edit", schedEvents("rate(2 minutes)")); err != nil {
		t.Fatal(err)
	}
	start(t, s)
	eventually(t, 5*time.Second, "the schedule to start", func() bool { return ready(s, "default", "edit", 0) })
	if st := getState(t, kv, keyOf(t, "default", "edit", 0, "rate(2 minutes)")); st == nil || !st.Fired || !st.Last.IsZero() {
		t.Fatalf("state of the new expression = %+v, want a baseline", st)
	}

	// Back to rate(1 minute), whose key has a missed tick within the
	// window: an edit does not catch up.
	if err := s.Set("default", "edit", schedEvents("rate(1 minute)")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the edited schedule to start", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		e := s.fns["default/edit"][0]
		return e.sched.String() == "rate(1 minute)" && e.ready && !e.busy
	})
	for _, c := range rec.all() {
		if c.tick.CatchUp || c.tick.Time.Before(begin) {
			t.Errorf("fired %s (catch-up %v) after an edit", c.tick.Time, c.tick.CatchUp)
		}
	}
}

// Disabled schedules are listed but never fire, nor touch the bucket;
// re-enabled, they fire from then on without catching up.
func TestDisabledNeverFires(t *testing.T) {
	t.Parallel()
	kv := openKV(t)
	rec := &recorder{}
	s := newScheduler(t, kv, "n1", rec.fire("n1"), 0)
	evs := schedEvents("rate(1 second)", "rate(1 second)")
	evs[0].Event.Disabled = true
	if err := s.Set("default", "dis", evs); err != nil {
		t.Fatal(err)
	}
	start(t, s)
	eventually(t, 5*time.Second, "3 ticks of the enabled schedule", func() bool { return len(rec.fired(1)) >= 3 })
	if n := len(rec.fired(0)); n != 0 {
		t.Fatalf("the disabled schedule fired %d times", n)
	}
	if st := getState(t, kv, keyOf(t, "default", "dis", 0, "rate(1 second)")); st != nil {
		t.Fatalf("the disabled schedule stored %+v", st)
	}
	list := s.List("default", "dis")
	if len(list) != 2 || !list[0].Disabled || !list[0].Next.IsZero() || list[1].Disabled || list[1].Next.IsZero() {
		t.Fatalf("List = %+v", list)
	}

	evs[0].Event.Disabled = false
	if err := s.Set("default", "dis", evs); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the re-enabled schedule to fire", func() bool { return len(rec.fired(0)) >= 1 })
	if c := rec.fired(0)[0]; c.tick.CatchUp {
		t.Fatalf("re-enabled schedule caught up %s", c.tick.Time)
	}
}

// A Fire that fails is retried with backoff until it succeeds, under the
// same tick id, and the tick is marked fired once.
func TestFireRetried(t *testing.T) {
	t.Parallel()
	kv := openKV(t)
	rec := &recorder{failFirst: 2}
	s := newScheduler(t, kv, "n1", rec.fire("n1"), 0)
	if err := s.Set("default", "flaky", schedEvents("rate(1 second)")); err != nil {
		t.Fatal(err)
	}
	start(t, s)
	eventually(t, 5*time.Second, "a tick to fire", func() bool { return len(rec.fired(0)) >= 1 })
	first := rec.all()[0].tick
	var failed, ok int
	for _, c := range rec.all() {
		if c.tick.ID != first.ID {
			continue
		}
		if c.err != nil {
			failed++
		} else {
			ok++
		}
	}
	if failed != 2 || ok != 1 {
		t.Fatalf("tick %s: %d failed and %d successful calls, want 2 and 1", first.ID, failed, ok)
	}
	eventually(t, 2*time.Second, "the tick marked fired", func() bool {
		st := getState(t, kv, keyOf(t, "default", "flaky", 0, "rate(1 second)"))
		return st != nil && !st.Last.Before(first.Time)
	})
}

// Set refuses what cannot be scheduled and then changes nothing; an
// empty Set removes; List filters by tenant and function and sorts.
func TestSetAndList(t *testing.T) {
	t.Parallel()
	kv := openKV(t)
	s := newScheduler(t, kv, "n1", (&recorder{}).fire("n1"), 0)
	good := schedEvents("rate(5 minutes)", "cron(0 12 * * ? *)")
	good[1].Event.Timezone = "Europe/Paris"
	for _, f := range []string{"beta", "alpha"} {
		if err := s.Set("default", f, good); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Set("other", "alpha", good[:1]); err != nil {
		t.Fatal(err)
	}

	queue := fn.IndexedEvent{Index: 3, Event: fn.Event{Queue: "orders"}}
	tests := []struct {
		name, tenant, function string
		events                 []fn.IndexedEvent
		want                   string
	}{
		{"bad expression", "default", "alpha", schedEvents("rate(0 minutes)"), `events[0]: schedule "rate(0 minutes)"`},
		{"bad zone", "default", "alpha", []fn.IndexedEvent{{Event: fn.Event{Schedule: "@daily", Timezone: "Nowhere/Land"}}}, "timezone"},
		{"not a schedule", "default", "alpha", []fn.IndexedEvent{queue}, "events[3]: not a schedule"},
		{"index twice", "default", "alpha", append(schedEvents("@daily"), schedEvents("@hourly")...), "events[0]: given twice"},
		{"bad tenant", "de.fault", "alpha", schedEvents("@daily"), "tenant"},
		{"bad function", "default", "Alpha", schedEvents("@daily"), "function name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Set(tt.tenant, tt.function, tt.events)
			var fe *fn.Error
			if !errors.As(err, &fe) || fe.Status != http.StatusBadRequest || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Set error = %v, want fn.Invalid containing %q", err, tt.want)
			}
			if l := s.List("default", "alpha"); len(l) != 2 || l[0].Schedule != "rate(5 minutes)" {
				t.Fatalf("a refused Set changed the schedules: %+v", l)
			}
		})
	}

	list := s.List("default", "")
	var got []string
	for _, e := range list {
		got = append(got, fmt.Sprintf("%s/%d %s %s", e.Function, e.Index, e.Schedule, e.Timezone))
		if e.Next.IsZero() || !e.Last.IsZero() {
			t.Errorf("%s/%d: Next %s, Last %s; want a next tick and no last", e.Function, e.Index, e.Next, e.Last)
		}
	}
	want := []string{"alpha/0 rate(5 minutes) ", "alpha/1 cron(0 12 * * ? *) Europe/Paris",
		"beta/0 rate(5 minutes) ", "beta/1 cron(0 12 * * ? *) Europe/Paris"}
	if !slices.Equal(got, want) {
		t.Fatalf("List = %q, want %q", got, want)
	}
	if l := s.List("default", "beta"); len(l) != 2 || l[0].Function != "beta" {
		t.Fatalf("List of beta = %+v", l)
	}
	if err := s.Set("default", "beta", nil); err != nil {
		t.Fatal(err)
	}
	if l := s.List("default", "beta"); len(l) != 0 {
		t.Fatalf("after removal List = %+v", l)
	}
	if l := s.List("other", ""); len(l) != 1 {
		t.Fatalf("List of the other tenant = %+v", l)
	}
}

func TestNewAndRunErrors(t *testing.T) {
	t.Parallel()
	_, err := New(Config{})
	for _, want := range []string{"KV is nil", "Fire is nil", "NodeID is empty"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New(Config{}) = %v, want it to say %q", err, want)
		}
	}
	kv := openKV(t)
	s := newScheduler(t, kv, "n1", (&recorder{}).fire("n1"), 0)
	start(t, s)
	eventually(t, 5*time.Second, "Run to start", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.running
	})
	if err := s.Run(t.Context()); err == nil {
		t.Fatal("a second Run at once returned nil")
	}
}

// Hammer: many goroutines released at once Set and List schedules while
// Run starts them; afterwards each function has what its last Set gave.
func TestHammerSetList(t *testing.T) {
	t.Parallel()
	kv := openKV(t)
	rec := &recorder{}
	s := newScheduler(t, kv, "n1", rec.fire("n1"), 0)
	begin := time.Now()
	start(t, s)
	exprs := []string{"rate(1 hour)", "cron(0 12 * * ? *)", "0 9 * * 1-5", "@daily"}
	const workers, rounds = 32, 40
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for w := range workers {
		wg.Go(func() {
			<-gate
			function := fmt.Sprintf("f%d", w%8)
			for r := range rounds {
				evs := schedEvents(exprs[(w+r)%len(exprs)], exprs[(w+r+1)%len(exprs)])
				evs[1].Event.Disabled = r%3 == 0
				if r%7 == 6 {
					evs = nil
				}
				if err := s.Set("default", function, evs); err != nil {
					t.Error(err)
					return
				}
				_ = s.List("default", "")
			}
		})
	}
	close(gate)
	wg.Wait()
	// Settle with one known Set per function.
	for f := range 8 {
		if err := s.Set("default", fmt.Sprintf("f%d", f), schedEvents("@hourly")); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "every schedule to start", func() bool {
		for f := range 8 {
			if !ready(s, "default", fmt.Sprintf("f%d", f), 0) {
				return false
			}
		}
		return true
	})
	list := s.List("default", "")
	if len(list) != 8 {
		t.Fatalf("List has %d schedules, want 8: %+v", len(list), list)
	}
	for _, e := range list {
		if e.Schedule != "@hourly" || e.Index != 0 {
			t.Errorf("%s: %+v, want @hourly at index 0", e.Function, e)
		}
	}
	// Only a real tick may have fired (all these fall on the hour), none
	// from before the test.
	for _, c := range rec.fired(-1) {
		if c.tick.Time.Before(begin) || c.tick.Time.Minute() != 0 || c.tick.Time.Second() != 0 {
			t.Errorf("fired %s during the hammer", c.tick.Time)
		}
	}
}

// A tick whose Fire returns while the scheduler is being stopped is still
// recorded as fired, so that a restart does not fire it again.
func TestStopRecordsFiredTick(t *testing.T) {
	t.Parallel()
	kv := openKV(t)
	entered := make(chan Tick, 1)
	fire := func(ctx context.Context, tick Tick) error {
		select {
		case entered <- tick:
			<-ctx.Done() // the stop; the event was stored just before it
		default:
		}
		return nil
	}
	s := newScheduler(t, kv, "n1", fire, 0)
	if err := s.Set("default", "tick", schedEvents("rate(1 second)")); err != nil {
		t.Fatal(err)
	}
	stop := start(t, s)
	var tick Tick
	select {
	case tick = <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no tick fired")
	}
	stop()
	st := getState(t, kv, keyOf(t, "default", "tick", 0, "rate(1 second)"))
	if st == nil || !st.Fired || !st.Last.Equal(tick.Time) {
		t.Errorf("state after the stop = %+v, want tick %s recorded as fired", st, tick.Time)
	}
}

package events_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"aloft/internal/events"
	"aloft/internal/fn"
	"aloft/internal/invoke"
	"aloft/internal/sandbox"
	"aloft/internal/store"
)

// open starts a real store and invoker (no instance is ever started here)
// and the event subsystem on them.
func open(t *testing.T) (*store.Store, *events.Events) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(t.Context(), store.Config{DataDir: dir, NodeID: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ex, err := sandbox.New(sandbox.Config{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	iv, err := invoke.New(invoke.Config{Store: st, Executor: ex, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.New(t.Context(), events.Config{Store: st, Invoker: iv, NodeID: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return st, ev
}

func status(err error) int {
	var fe *fn.Error
	if errors.As(err, &fe) {
		return fe.Status
	}
	return 0
}

func create(t *testing.T, st *store.Store, cfg fn.Config) {
	t.Helper()
	cfg.Normalize()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	f := &fn.Function{Tenant: fn.DefaultTenant, Config: cfg, Revision: cfg.Name + "-1"}
	if _, err := st.CreateFunction(context.Background(), f); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	st, ev := open(t)
	ctx := context.Background()
	if _, _, err := ev.Queues().Create(ctx, fn.DefaultTenant, "jobs"); err != nil {
		t.Fatal(err)
	}
	create(t, st, fn.Config{Name: "consumer", Runtime: fn.RuntimeLambda, Events: []fn.Event{{Queue: "jobs"}}})

	for _, tc := range []struct {
		what   string
		cfg    fn.Config
		status int
		want   []string
	}{
		{"valid schedules and queue", fn.Config{Name: "consumer", Events: []fn.Event{
			{Schedule: "rate(5 minutes)"}, {Schedule: "cron(0 12 * * ? *)"}, {Schedule: "*/5 * * * *", Timezone: "Europe/Paris"}, {Queue: "jobs"},
		}}, 0, nil},
		{"bad schedules, each reported", fn.Config{Name: "x", Events: []fn.Event{
			{Schedule: "rate(0 minutes)"}, {Schedule: "cron(0 12 * * * *)"},
		}}, http.StatusBadRequest, []string{"events[0]", "events[1]", "'?'"}},
		{"missing queue", fn.Config{Name: "x", Events: []fn.Event{{Queue: "nowhere"}}}, http.StatusBadRequest, []string{`"nowhere"`}},
		{"second consumer of a queue", fn.Config{Name: "other", Events: []fn.Event{{Queue: "jobs"}}}, http.StatusConflict, []string{`already triggers function "consumer"`}},
		{"missing destination queue", fn.Config{Name: "x", Async: fn.Async{OnFailure: "queue:gone"}}, http.StatusBadRequest, []string{"onFailure", `"gone"`}},
		{"function destinations are not checked", fn.Config{Name: "x", Async: fn.Async{OnSuccess: "function:later"}}, 0, nil},
	} {
		t.Run(tc.what, func(t *testing.T) {
			err := ev.Validate(ctx, fn.DefaultTenant, &tc.cfg)
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if status(err) != tc.status {
				t.Fatalf("Validate = %v, want status %d", err, tc.status)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestTriggersFollowTheStore checks that Run applies stored functions'
// events and follows changes: schedules appear in the listings with a next
// fire time, and go when the function goes.
func TestTriggersFollowTheStore(t *testing.T) {
	st, ev := open(t)
	ctx, cancel := context.WithCancel(context.Background())
	create(t, st, fn.Config{Name: "early", Runtime: fn.RuntimeLambda, Events: []fn.Event{{Schedule: "rate(1 hour)"}}})
	done := make(chan error, 1)
	go func() { done <- ev.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("the stored schedule", func() bool { return len(ev.Schedules(fn.DefaultTenant, "early")) == 1 })

	create(t, st, fn.Config{Name: "late", Runtime: fn.RuntimeLambda, Events: []fn.Event{
		{Schedule: "cron(0 12 * * ? *)"}, {Subject: "sensors.>", Disabled: true},
	}})
	waitFor("the new function's schedule", func() bool { return len(ev.Schedules(fn.DefaultTenant, "")) == 2 })
	list := ev.Schedules(fn.DefaultTenant, "")
	if list[0].Function != "early" || list[0].Next.IsZero() || !list[0].Next.Before(list[1].Next) {
		t.Errorf("schedules, soonest first = %+v", list)
	}
	trig, err := ev.Triggers(ctx, fn.DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	if len(trig) != 3 || trig[0].Function != "early" || trig[0].Next == nil || trig[2].Kind != fn.EventSubject || !trig[2].Disabled || trig[2].Next != nil {
		t.Errorf("triggers = %+v", trig)
	}

	if err := st.DeleteFunction(ctx, fn.DefaultTenant, "early"); err != nil {
		t.Fatal(err)
	}
	waitFor("the deleted function's schedule to go", func() bool { return len(ev.Schedules(fn.DefaultTenant, "")) == 1 })
}

// Run returns nil when its context ends, however early: here before it
// could set anything up.
func TestRunEndedDuringSetUp(t *testing.T) {
	_, ev := open(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ev.Run(ctx); err != nil {
		t.Errorf("Run with an ended context = %v, want nil", err)
	}
}

package records_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"aloft/internal/events/records"
	"aloft/internal/store"
)

// open starts an embedded store (closed at the test's end) and the records
// on it.
func open(tb testing.TB) (*store.Store, *records.Store) {
	tb.Helper()
	s, err := store.Open(tb.Context(), store.Config{DataDir: tb.TempDir(), NodeID: "test"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	r, err := records.Open(tb.Context(), s.JetStream(), 1, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return s, r
}

func TestPutList(t *testing.T) {
	_, r := open(t)
	defer r.Close()
	ctx := context.Background()
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// inv-a: queued, ran twice, dead-lettered. inv-b: queued, running,
	// succeeded. inv-c: only queued. The running and succeeded records of
	// inv-b come in the wrong order (two nodes).
	for _, rec := range []records.Record{
		{ID: "inv-a", Status: records.Queued, Trigger: "api", Time: at(0)},
		{ID: "inv-a", Status: records.Running, Attempt: 1, Version: "$LATEST", Time: at(1)},
		{ID: "inv-a", Status: records.Retrying, Attempt: 1, Error: "Boom: no", Duration: 5 * time.Millisecond, Time: at(6)},
		{ID: "inv-a", Status: records.Running, Attempt: 2, Time: at(20)},
		{ID: "inv-a", Status: records.DeadLettered, Attempt: 2, Error: "Boom: still no", Time: at(25)},
		{ID: "inv-b", Status: records.Queued, Time: at(30)},
		{ID: "inv-b", Status: records.Succeeded, Attempt: 1, Duration: 3 * time.Millisecond, Time: at(35)},
		{ID: "inv-b", Status: records.Running, Attempt: 1, Time: at(31)},
		{ID: "inv-c", Status: records.Queued, Time: at(40)},
		// inv-d ran and succeeded before its queued record, stamped later,
		// was put: it stays succeeded.
		{ID: "inv-d", Status: records.Running, Attempt: 1, Time: at(50)},
		{ID: "inv-d", Status: records.Succeeded, Attempt: 1, Time: at(52)},
		{ID: "inv-d", Status: records.Queued, Trigger: "api", Time: at(53)},
	} {
		rec.Tenant, rec.Function = "default", "alpha"
		r.Put(rec)
	}
	r.Put(records.Record{ID: "other", Tenant: "default", Function: "bravo", Status: records.Queued})
	r.Put(records.Record{ID: "bad", Tenant: "default", Function: "a.b", Status: records.Queued})
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if r.Dropped() != 1 {
		t.Fatalf("dropped %d records, want 1 (the bad function name)", r.Dropped())
	}
	got, err := r.List(ctx, "default", "alpha", 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		id       string
		status   records.Status
		attempts int
		err      string
	}{
		{"inv-d", records.Succeeded, 1, ""},
		{"inv-c", records.Queued, 0, ""},
		{"inv-b", records.Succeeded, 1, ""},
		{"inv-a", records.DeadLettered, 2, "Boom: still no"},
	}
	if len(got) != len(want) {
		t.Fatalf("list = %+v", got)
	}
	for i, w := range want {
		g := got[i]
		if g.ID != w.id || g.Status != w.status || g.Attempts != w.attempts || g.Error != w.err {
			t.Errorf("[%d] = %+v, want %+v", i, g, w)
		}
	}
	if got[3].Trigger != "api" || got[3].Version != "$LATEST" || !got[3].Started.Equal(at(0)) || !got[3].Updated.Equal(at(25)) {
		t.Errorf("inv-a summary = %+v", got[3])
	}
	if got[2].Duration.D() != 3*time.Millisecond {
		t.Errorf("inv-b duration = %s", got[2].Duration.D())
	}
	if got[0].Trigger != "api" || !got[0].Updated.Equal(at(52)) {
		t.Errorf("inv-d summary = %+v", got[0])
	}
	if top, _ := r.List(ctx, "default", "alpha", 1); len(top) != 1 || top[0].ID != "inv-d" {
		t.Errorf("limit 1 = %+v", top)
	}
	if none, err := r.List(ctx, "default", "nobody", 10); err != nil || len(none) != 0 {
		t.Errorf("list of an unknown function = %v, %v", none, err)
	}
	if _, err := r.List(ctx, "default", "a.b", 10); err == nil {
		t.Error("list of an invalid function name succeeded")
	}
}

// TestHammer puts records from many goroutines at once and finds every
// invocation afterwards.
func TestHammer(t *testing.T) {
	s, r := open(t)
	const goroutines, each = 32, 50
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := range goroutines {
		wg.Go(func() {
			<-start
			for i := range each {
				id := fmt.Sprintf("g%d-%d", g, i)
				r.Put(records.Record{ID: id, Tenant: "default", Function: "hammer", Status: records.Queued})
				r.Put(records.Record{ID: id, Tenant: "default", Function: "hammer", Status: records.Succeeded, Attempt: 1})
			}
		})
	}
	close(start)
	wg.Wait()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r.Put(records.Record{ID: "late", Tenant: "default", Function: "hammer", Status: records.Queued})
	r2, err := records.Open(t.Context(), s.JetStream(), 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	got, err := r2.List(context.Background(), "default", "hammer", goroutines*each+10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != goroutines*each {
		t.Fatalf("found %d invocations, want %d", len(got), goroutines*each)
	}
	for _, g := range got {
		if g.Status != records.Succeeded {
			t.Fatalf("%s is %s, want succeeded", g.ID, g.Status)
		}
	}
	if r.Dropped() != 1 {
		t.Fatalf("dropped %d, want 1 (the record put after Close)", r.Dropped())
	}
}

func BenchmarkPut(b *testing.B) {
	_, r := open(b)
	defer r.Close()
	b.ReportAllocs()
	for b.Loop() {
		r.Put(records.Record{ID: "x", Tenant: "default", Function: "bench", Status: records.Running, Attempt: 1})
	}
	_ = r.Flush(context.Background())
}

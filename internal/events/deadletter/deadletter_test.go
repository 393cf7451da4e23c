package deadletter_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"aloft/internal/events/deadletter"
	"aloft/internal/fn"
	"aloft/internal/store"
)

func open(t *testing.T, dir string) (*store.Store, *deadletter.Store) {
	t.Helper()
	s, err := store.Open(t.Context(), store.Config{DataDir: dir, NodeID: "test"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := deadletter.Open(t.Context(), s.JetStream(), 1)
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	return s, d
}

func status(err error) int {
	var fe *fn.Error
	if errors.As(err, &fe) {
		return fe.Status
	}
	return 0
}

func TestPutListRemove(t *testing.T) {
	dir := t.TempDir()
	s, d := open(t, dir)
	ctx := context.Background()
	enq := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range 3 {
		e := &deadletter.Entry{
			ID: fmt.Sprintf("id-%d", i), Tenant: "default", Function: "alpha", Source: "async",
			Payload: []byte(fmt.Sprintf(`{"n":%d}`, i)), Headers: map[string]string{"ce-id": "x"},
			ErrorType: "Boom", ErrorMessage: "failed", Attempts: 3, Enqueued: enq, Reason: "retries exhausted",
		}
		if err := d.Put(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	// The same (tenant, function, source, id) again is stored once; the
	// same id from another source is another entry.
	if err := d.Put(ctx, &deadletter.Entry{ID: "id-0", Tenant: "default", Function: "alpha", Source: "async"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Put(ctx, &deadletter.Entry{ID: "id-0", Tenant: "default", Function: "alpha", Source: "queue:orders"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Put(ctx, &deadletter.Entry{ID: "other", Tenant: "default", Function: "bravo", Source: "async"}); err != nil {
		t.Fatal(err)
	}
	if status(d.Put(ctx, &deadletter.Entry{ID: "x", Tenant: "default", Function: "a.b"})) != http.StatusBadRequest {
		t.Fatal("a function name with a dot was accepted")
	}

	// Entries survive a restart.
	s.Close()
	s, d = open(t, dir)
	defer s.Close()

	list, err := d.List(ctx, "default", "alpha", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 4 {
		t.Fatalf("list has %d entries, want 4: %+v", len(list), list)
	}
	first := list[0]
	if first.ID != "id-0" || first.Source != "async" || string(first.Payload) != `{"n":0}` || first.Attempts != 3 ||
		first.ErrorType != "Boom" || first.Reason != "retries exhausted" || !first.Enqueued.Equal(enq) ||
		first.DeadLettered.IsZero() || first.Seq == 0 || first.Headers["ce-id"] != "x" {
		t.Fatalf("first entry = %+v", first)
	}
	if list[3].Source != "queue:orders" {
		t.Fatalf("last entry = %+v, want the queue one", list[3])
	}
	last2, err := d.List(ctx, "default", "alpha", 2)
	if err != nil || len(last2) != 2 || last2[0].ID != "id-2" {
		t.Fatalf("list limit 2 = %+v, %v", last2, err)
	}
	if none, err := d.List(ctx, "default", "nobody", 0); err != nil || len(none) != 0 {
		t.Fatalf("list of a function without entries = %v, %v", none, err)
	}

	// Remove checks the entry belongs to the function.
	bravo, _ := d.List(ctx, "default", "bravo", 0)
	if status(d.Remove(ctx, "default", "alpha", bravo[0].Seq)) != http.StatusNotFound {
		t.Fatal("removed another function's entry")
	}
	if err := d.Remove(ctx, "default", "alpha", first.Seq); err != nil {
		t.Fatal(err)
	}
	if status(d.Remove(ctx, "default", "alpha", first.Seq)) != http.StatusNotFound {
		t.Fatal("a second remove did not answer not found")
	}
	if status(d.Remove(ctx, "default", "alpha", 1<<40)) != http.StatusNotFound {
		t.Fatal("removing a missing sequence did not answer not found")
	}
	list, _ = d.List(ctx, "default", "alpha", 0)
	if len(list) != 3 || list[0].ID != "id-1" {
		t.Fatalf("after remove: %+v", list)
	}
}

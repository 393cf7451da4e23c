package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"aloft/internal/fn"
)

// maxAsyncPayload is the stand-in's async payload limit, the server's
// default.
const maxAsyncPayload = 1 << 20

// asyncCall is one Event invocation the stand-in accepted.
type asyncCall struct {
	function, qualifier, key string
	payload                  []byte
}

// eventState is what the stand-in's event endpoints hold. Its answers are
// written from maps keyed by the wire names the API documents, not from
// the client's own types, so a mistyped JSON tag in the client shows.
type eventState struct {
	calls []asyncCall
	keys  map[string]string
	// records are invocation summaries per function, newest first.
	records map[string][]map[string]any
	// dead are dead letters per function, oldest first.
	dead      map[string][]map[string]any
	schedules []map[string]any
	queues    map[string]map[string]any
	messages  map[string][]map[string]any
}

func (s *standIn) eventRoutes(v1 *http.ServeMux) {
	s.ev = eventState{
		keys: map[string]string{}, records: map[string][]map[string]any{}, dead: map[string][]map[string]any{},
		queues: map[string]map[string]any{}, messages: map[string][]map[string]any{},
	}
	v1.HandleFunc("GET /v1/functions/{name}/invocations", s.invocations)
	v1.HandleFunc("GET /v1/functions/{name}/dlq", s.deadLetters)
	v1.HandleFunc("POST /v1/functions/{name}/dlq/redrive", s.redrive)
	v1.HandleFunc("GET /v1/triggers", s.triggers)
	v1.HandleFunc("GET /v1/schedules", s.schedulesHandler)
	v1.HandleFunc("GET /v1/queues", s.listQueues)
	v1.HandleFunc("PUT /v1/queues/{queue}", s.putQueue)
	v1.HandleFunc("GET /v1/queues/{queue}", s.getQueue)
	v1.HandleFunc("DELETE /v1/queues/{queue}", s.deleteQueue)
	v1.HandleFunc("POST /v1/queues/{queue}/messages", s.send)
}

// invokeAsync accepts an Event invocation as the server does: 202 with the
// id, the first id again for a repeated idempotency key.
func (s *standIn) invokeAsync(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if r.URL.Query().Get("log") == "tail" {
		writeErr(w, fn.Invalid("log=tail applies to synchronous invocations only"))
		return
	}
	key := r.Header.Get("X-Aloft-Idempotency-Key")
	if len(key) > 256 {
		writeErr(w, fn.Invalid("X-Aloft-Idempotency-Key is too long or has line breaks: use at most 256 characters"))
		return
	}
	payload, _ := io.ReadAll(io.LimitReader(r.Body, maxAsyncPayload+1))
	if len(payload) > maxAsyncPayload {
		writeErr(w, fn.TooLarge("async payload is over %d bytes: send less, or invoke synchronously", maxAsyncPayload))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.functions[name]; !ok {
		writeErr(w, fn.NotFound("function %q not found", name))
		return
	}
	id, dup := s.ev.keys[key]
	if key == "" || !dup {
		id = fmt.Sprintf("ev-%d", len(s.ev.calls)+1)
		s.ev.calls = append(s.ev.calls, asyncCall{function: name, qualifier: r.URL.Query().Get("qualifier"), key: key, payload: payload})
		if key != "" {
			s.ev.keys[key] = id
		}
	}
	w.Header().Set("X-Aloft-Invocation-Id", id)
	if dup {
		w.Header().Set("X-Aloft-Duplicate", "true")
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"invocationId": id, "duplicate": dup})
}

// limitParam reads ?limit= as the server does.
func limitParam(r *http.Request, def int) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 10000 {
		return 0, fn.Invalid("limit=%q: use a number from 1 to 10000", v)
	}
	return n, nil
}

func (s *standIn) invocations(w http.ResponseWriter, r *http.Request) {
	limit, err := limitParam(r, 50)
	if err != nil {
		writeErr(w, err.(*fn.Error))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := r.PathValue("name")
	if _, ok := s.functions[name]; !ok {
		writeErr(w, fn.NotFound("function %q not found", name))
		return
	}
	list := s.ev.records[name]
	writeJSON(w, 200, map[string]any{"invocations": list[:min(limit, len(list))]})
}

func (s *standIn) deadLetters(w http.ResponseWriter, r *http.Request) {
	limit, err := limitParam(r, 100)
	if err != nil {
		writeErr(w, err.(*fn.Error))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := r.PathValue("name")
	list := s.ev.dead[name]
	if _, ok := s.functions[name]; !ok && len(list) == 0 {
		writeErr(w, fn.NotFound("function %q not found and it has no dead letters", name))
		return
	}
	out := []map[string]any{}
	writeJSON(w, 200, map[string]any{"deadLetters": append(out, list[:min(limit, len(list))]...)})
}

func (s *standIn) redrive(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ID string `json:"id"`
	}
	if r.ContentLength != 0 {
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			writeErr(w, fn.Invalid("body: %v", err))
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := r.PathValue("name")
	if _, ok := s.functions[name]; !ok {
		writeErr(w, fn.NotFound("function %q not found", name))
		return
	}
	var keep []map[string]any
	n := 0
	for _, d := range s.ev.dead[name] {
		if body.ID != "" && d["id"] != body.ID {
			keep = append(keep, d)
			continue
		}
		n++
	}
	if body.ID != "" && n == 0 {
		writeErr(w, fn.NotFound("no dead letter with id %q for function %q", body.ID, name))
		return
	}
	s.ev.dead[name] = keep
	writeJSON(w, 200, map[string]any{"redriven": n})
}

func (s *standIn) triggers(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	for _, name := range slices.Sorted(maps.Keys(s.functions)) {
		for i, e := range s.functions[name].Events {
			t := map[string]any{"function": name, "index": i, "kind": e.Kind()}
			switch e.Kind() {
			case fn.EventSchedule:
				t["source"] = e.Schedule
				if !e.Disabled {
					t["next"] = "2026-03-04T05:06:00Z"
				}
			case fn.EventQueue:
				t["source"] = e.Queue
				t["options"] = fmt.Sprintf("batch %d", e.BatchSize)
			case fn.EventSubject:
				t["source"] = e.Subject
			}
			if e.Qualifier != "" {
				t["qualifier"] = e.Qualifier
			}
			if e.Disabled {
				t["disabled"] = true
			}
			out = append(out, t)
		}
	}
	writeJSON(w, 200, map[string]any{"triggers": out})
}

func (s *standIn) schedulesHandler(w http.ResponseWriter, r *http.Request) {
	function := r.URL.Query().Get("function")
	if function != "" {
		if err := fn.ValidateName(function); err != nil {
			writeErr(w, err.(*fn.Error))
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	for _, e := range s.ev.schedules {
		if function == "" || e["function"] == function {
			out = append(out, e)
		}
	}
	writeJSON(w, 200, map[string]any{"schedules": out})
}

func (s *standIn) queueName(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("queue")
	if err := fn.ValidateQueueName(name); err != nil {
		writeErr(w, err.(*fn.Error))
		return "", false
	}
	return name, true
}

func (s *standIn) listQueues(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	for _, name := range slices.Sorted(maps.Keys(s.ev.queues)) {
		out = append(out, s.queueJSON(name))
	}
	writeJSON(w, 200, map[string]any{"queues": out})
}

// queueJSON is a queue as the API writes it; s.mu is held.
func (s *standIn) queueJSON(name string) map[string]any {
	q := s.ev.queues[name]
	return map[string]any{"tenant": "default", "name": name, "created": q["created"], "messages": len(s.ev.messages[name])}
}

func (s *standIn) putQueue(w http.ResponseWriter, r *http.Request) {
	name, ok := s.queueName(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	status := 200
	if _, ok := s.ev.queues[name]; !ok {
		status = 201
		s.ev.queues[name] = map[string]any{"created": "2026-01-02T03:04:05Z"}
	}
	writeJSON(w, status, s.queueJSON(name))
}

func (s *standIn) getQueue(w http.ResponseWriter, r *http.Request) {
	name, ok := s.queueName(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ev.queues[name]; !ok {
		writeErr(w, fn.NotFound("queue %q not found: create it with `aloft queue create %s`", name, name))
		return
	}
	writeJSON(w, 200, s.queueJSON(name))
}

func (s *standIn) deleteQueue(w http.ResponseWriter, r *http.Request) {
	name, ok := s.queueName(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ev.queues[name]; !ok {
		writeErr(w, fn.NotFound("queue %q not found", name))
		return
	}
	for fname, f := range s.functions {
		for _, e := range f.Events {
			if e.Queue == name {
				writeErr(w, fn.Conflict("queue %q triggers function %q: remove that event first", name, fname))
				return
			}
		}
	}
	delete(s.ev.queues, name)
	delete(s.ev.messages, name)
	w.WriteHeader(204)
}

func (s *standIn) send(w http.ResponseWriter, r *http.Request) {
	name, ok := s.queueName(w, r)
	if !ok {
		return
	}
	raw, _ := io.ReadAll(r.Body)
	var batch struct {
		Messages []map[string]any `json:"messages"`
	}
	var msgs []map[string]any
	if json.Unmarshal(raw, &batch) == nil && batch.Messages != nil {
		msgs = batch.Messages
	} else {
		var one map[string]any
		if json.Unmarshal(raw, &one) != nil {
			writeErr(w, fn.Invalid(`send body must be {"body": "..."} or {"messages": [...]}`))
			return
		}
		msgs = []map[string]any{one}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ev.queues[name]; !ok {
		writeErr(w, fn.NotFound("queue %q not found", name))
		return
	}
	ids := []string{}
	for _, m := range msgs {
		id, _ := m["id"].(string)
		if id == "" {
			id = fmt.Sprintf("m-%d", len(s.ev.messages[name])+1)
		}
		s.ev.messages[name] = append(s.ev.messages[name], m)
		ids = append(ids, id)
	}
	writeJSON(w, 200, map[string]any{"ids": ids})
}

func TestInvokeAsync(t *testing.T) {
	s, c := newStandIn(t)
	ctx := t.Context()
	if _, _, err := c.Deploy(ctx, fn.Config{Name: "echo"}, strings.NewReader("PK\x03\x04")); err != nil {
		t.Fatal(err)
	}
	id, dup, err := c.InvokeAsync(ctx, "echo", []byte(`{"a":1}`), AsyncOptions{Qualifier: "prod"})
	if err != nil || id != "ev-1" || dup {
		t.Fatalf("InvokeAsync = %q, %v, %v; want ev-1, not a duplicate", id, dup, err)
	}
	if got := s.ev.calls[0]; got.function != "echo" || got.qualifier != "prod" || string(got.payload) != `{"a":1}` || got.key != "" {
		t.Errorf("server got %+v", got)
	}

	// The same idempotency key twice: one event, the first id.
	first, dup, err := c.InvokeAsync(ctx, "echo", nil, AsyncOptions{IdempotencyKey: "order-7"})
	if err != nil || dup {
		t.Fatalf("InvokeAsync with a new key = %q, %v, %v", first, dup, err)
	}
	again, dup, err := c.InvokeAsync(ctx, "echo", []byte("other"), AsyncOptions{IdempotencyKey: "order-7"})
	if err != nil || !dup || again != first {
		t.Errorf("repeat of key order-7 = %q, duplicate %v, %v; want %q, duplicate", again, dup, err, first)
	}
	if len(s.ev.calls) != 2 {
		t.Errorf("server accepted %d events, want 2 (the repeat is not stored)", len(s.ev.calls))
	}

	tests := []struct {
		name    string
		fn      string
		payload []byte
		opt     AsyncOptions
		status  int
		code    string
	}{
		{"unknown function", "missing", nil, AsyncOptions{}, 404, "not_found"},
		{"payload over 1 MiB", "echo", bytes.Repeat([]byte("x"), 2<<20), AsyncOptions{}, 413, "too_large"},
		{"payload just over 1 MiB", "echo", bytes.Repeat([]byte("x"), maxAsyncPayload+1), AsyncOptions{}, 413, "too_large"},
		{"key too long", "echo", nil, AsyncOptions{IdempotencyKey: strings.Repeat("k", 300)}, 400, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := c.InvokeAsync(ctx, tt.fn, tt.payload, tt.opt)
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != tt.status || ae.Code != tt.code {
				t.Fatalf("InvokeAsync: got %v, want an APIError %d %s", err, tt.status, tt.code)
			}
			if !strings.HasPrefix(err.Error(), "invoke "+tt.fn+" asynchronously: ") {
				t.Errorf("error %q does not name the operation", err)
			}
		})
	}
}

func TestInvokeAsyncWithoutID(t *testing.T) {
	c := rawServer(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(202) })
	_, _, err := c.InvokeAsync(t.Context(), "f", nil, AsyncOptions{})
	if err == nil || !strings.Contains(err.Error(), "without an invocation id") {
		t.Errorf("InvokeAsync against a server that sends no id: got %v", err)
	}
}

// rawServer returns a client of a server that answers everything with h.
func rawServer(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return New(srv.URL, token)
}

func TestInvocationsAndDeadLetters(t *testing.T) {
	s, c := newStandIn(t)
	ctx := t.Context()
	if _, _, err := c.Deploy(ctx, fn.Config{Name: "worker"}, strings.NewReader("PK\x03\x04")); err != nil {
		t.Fatal(err)
	}
	s.ev.records["worker"] = []map[string]any{
		{"id": "ev-2", "function": "worker", "version": "$LATEST", "trigger": "api", "status": "retrying", "attempts": 2,
			"started": "2026-01-02T03:04:05Z", "updated": "2026-01-02T03:05:05Z", "duration": "1.5s", "error": "Boom: it broke"},
		{"id": "ev-1", "function": "worker", "trigger": "schedule", "status": "succeeded", "attempts": 1,
			"started": "2026-01-02T03:00:00Z", "updated": "2026-01-02T03:00:01Z", "duration": "20ms"},
	}
	s.ev.dead["worker"] = []map[string]any{
		{"id": "ev-0", "tenant": "default", "function": "worker", "source": "async", "payload": "eyJuIjoxfQ==",
			"headers": map[string]string{"ce-type": "x"}, "trigger": "api", "errorType": "Boom", "errorMessage": "it broke",
			"attempts": 3, "enqueued": "2026-01-01T00:00:00Z", "deadLettered": "2026-01-01T00:10:00Z", "reason": "retries exhausted", "seq": 7},
		{"id": "m-4", "tenant": "default", "function": "worker", "source": "queue:orders", "payload": "aGk=",
			"attempts": 3, "enqueued": "2026-01-01T00:00:00Z", "deadLettered": "2026-01-01T00:20:00Z", "reason": "retries exhausted", "seq": 9},
		{"id": "m-5", "tenant": "default", "function": "worker", "source": "queue:orders", "payload": "aGk=", "seq": 10},
	}

	invs, err := c.Invocations(ctx, "worker", 0)
	if err != nil || len(invs) != 2 {
		t.Fatalf("Invocations = %v, %v; want 2", invs, err)
	}
	want := Invocation{ID: "ev-2", Function: "worker", Version: "$LATEST", Trigger: "api", Status: "retrying", Attempts: 2,
		Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Updated: time.Date(2026, 1, 2, 3, 5, 5, 0, time.UTC),
		Duration: fn.Duration(1500 * time.Millisecond), Error: "Boom: it broke"}
	if *invs[0] != want {
		t.Errorf("Invocations[0] = %+v\nwant %+v", *invs[0], want)
	}
	if s.lastQuery != "" {
		t.Errorf("query without a limit = %q, want none", s.lastQuery)
	}
	if invs, err = c.Invocations(ctx, "worker", 1); err != nil || len(invs) != 1 || s.lastQuery != "limit=1" {
		t.Errorf("Invocations(limit 1) = %v, %v with query %q", invs, err, s.lastQuery)
	}

	dls, err := c.DeadLetters(ctx, "worker", 2)
	if err != nil || len(dls) != 2 {
		t.Fatalf("DeadLetters = %v, %v; want 2", dls, err)
	}
	d := dls[0]
	if d.ID != "ev-0" || string(d.Payload) != `{"n":1}` || d.Headers["ce-type"] != "x" || d.ErrorType != "Boom" ||
		d.ErrorMessage != "it broke" || d.Attempts != 3 || d.Reason != "retries exhausted" || d.Seq != 7 || d.Source != "async" ||
		!d.DeadLettered.Equal(time.Date(2026, 1, 1, 0, 10, 0, 0, time.UTC)) || d.Trigger != "api" || d.Tenant != "default" {
		t.Errorf("DeadLetters[0] = %+v", *d)
	}

	n, err := c.Redrive(ctx, "worker", "m-4")
	if err != nil || n != 1 {
		t.Errorf("Redrive(m-4) = %d, %v; want 1", n, err)
	}
	if _, err := c.Redrive(ctx, "worker", "m-4"); !IsNotFound(err) {
		t.Errorf("Redrive(m-4) again: got %v, want 404", err)
	}
	if n, err = c.Redrive(ctx, "worker", ""); err != nil || n != 2 {
		t.Errorf("Redrive(all) = %d, %v; want 2", n, err)
	}
	if dls, err = c.DeadLetters(ctx, "worker", 0); err != nil || len(dls) != 0 {
		t.Errorf("DeadLetters after redriving all = %v, %v; want none", dls, err)
	}
}

// TestInvocationsAndDeadLettersErrors checks the server's refusals reach
// the caller as *APIError.
func TestInvocationsAndDeadLettersErrors(t *testing.T) {
	_, c := newStandIn(t)
	ctx := t.Context()
	if _, _, err := c.Deploy(ctx, fn.Config{Name: "worker"}, strings.NewReader("PK\x03\x04")); err != nil {
		t.Fatal(err)
	}
	errs := []struct {
		name   string
		call   func() error
		status int
	}{
		{"invocations of an unknown function", func() error { _, err := c.Invocations(ctx, "nope", 0); return err }, 404},
		{"invocations limit out of range", func() error { _, err := c.Invocations(ctx, "worker", 20000); return err }, 400},
		{"dead letters of an unknown function", func() error { _, err := c.DeadLetters(ctx, "nope", 0); return err }, 404},
		{"dead letters limit out of range", func() error { _, err := c.DeadLetters(ctx, "worker", 10001); return err }, 400},
		{"redrive of an unknown function", func() error { _, err := c.Redrive(ctx, "nope", ""); return err }, 404},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			var ae *APIError
			if err := tt.call(); !errors.As(err, &ae) || ae.Status != tt.status {
				t.Errorf("got %v, want an APIError %d", err, tt.status)
			}
		})
	}
}

func TestTriggersAndSchedules(t *testing.T) {
	s, c := newStandIn(t)
	ctx := t.Context()
	cfg := fn.Config{Name: "cron", Events: []fn.Event{
		{Schedule: "rate(5 minutes)"},
		{Queue: "orders", BatchSize: 20, Qualifier: "prod"},
		{Subject: "orders.*", Disabled: true},
	}}
	if _, _, err := c.Deploy(ctx, cfg, strings.NewReader("PK\x03\x04")); err != nil {
		t.Fatal(err)
	}
	ts, err := c.Triggers(ctx)
	if err != nil || len(ts) != 3 {
		t.Fatalf("Triggers = %v, %v; want 3", ts, err)
	}
	next := time.Date(2026, 3, 4, 5, 6, 0, 0, time.UTC)
	if ts[0].Kind != fn.EventSchedule || ts[0].Source != "rate(5 minutes)" || ts[0].Next == nil || !ts[0].Next.Equal(next) {
		t.Errorf("Triggers[0] = %+v", *ts[0])
	}
	if ts[1].Kind != fn.EventQueue || ts[1].Index != 1 || ts[1].Source != "orders" || ts[1].Options != "batch 20" || ts[1].Qualifier != "prod" || ts[1].Next != nil {
		t.Errorf("Triggers[1] = %+v", *ts[1])
	}
	if ts[2].Kind != fn.EventSubject || !ts[2].Disabled || ts[2].Function != "cron" {
		t.Errorf("Triggers[2] = %+v", *ts[2])
	}

	s.ev.schedules = []map[string]any{
		{"function": "cron", "index": 0, "schedule": "cron(0 12 * * ? *)", "timezone": "Europe/Paris",
			"next": "2026-03-04T11:00:00Z", "last": "2026-03-03T11:00:00Z"},
		{"function": "other", "index": 2, "schedule": "rate(1 hour)", "disabled": true},
	}
	all, err := c.Schedules(ctx, "")
	if err != nil || len(all) != 2 || s.lastQuery != "" {
		t.Fatalf("Schedules() = %v, %v, query %q", all, err, s.lastQuery)
	}
	want := Schedule{Function: "cron", Schedule: "cron(0 12 * * ? *)", Timezone: "Europe/Paris",
		Next: time.Date(2026, 3, 4, 11, 0, 0, 0, time.UTC), Last: time.Date(2026, 3, 3, 11, 0, 0, 0, time.UTC)}
	if *all[0] != want {
		t.Errorf("Schedules()[0] = %+v\nwant %+v", *all[0], want)
	}
	if all[1].Index != 2 || !all[1].Disabled || !all[1].Next.IsZero() {
		t.Errorf("Schedules()[1] = %+v", *all[1])
	}
	one, err := c.Schedules(ctx, "other")
	if err != nil || len(one) != 1 || one[0].Function != "other" || s.lastQuery != "function=other" {
		t.Errorf("Schedules(other) = %v, %v, query %q", one, err, s.lastQuery)
	}
	var ae *APIError
	if _, err := c.Schedules(ctx, "Bad Name"); !errors.As(err, &ae) || ae.Status != 400 {
		t.Errorf("Schedules(Bad Name): got %v, want 400", err)
	}
}

func TestQueues(t *testing.T) {
	s, c := newStandIn(t)
	ctx := t.Context()
	q, created, err := c.CreateQueue(ctx, "orders")
	if err != nil || !created || q.Name != "orders" || q.Tenant != "default" || !q.Created.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Fatalf("CreateQueue = %+v, %v, %v", q, created, err)
	}
	if _, created, err = c.CreateQueue(ctx, "orders"); err != nil || created {
		t.Errorf("CreateQueue again: created %v, %v; want it to exist", created, err)
	}
	if _, _, err := c.CreateQueue(ctx, "zz"); err != nil {
		t.Fatal(err)
	}
	ids, err := c.Send(ctx, "orders", []Message{
		{Body: "one", Attributes: map[string]string{"k": "v"}},
		{Body: "two", ID: "dedup-2"},
	})
	if err != nil || !slices.Equal(ids, []string{"m-1", "dedup-2"}) {
		t.Fatalf("Send = %q, %v", ids, err)
	}
	s.mu.Lock()
	got := s.ev.messages["orders"]
	s.mu.Unlock()
	if got[0]["body"] != "one" || got[0]["attributes"].(map[string]any)["k"] != "v" || got[1]["id"] != "dedup-2" {
		t.Errorf("server got messages %v", got)
	}
	if _, present := got[0]["id"]; present {
		t.Errorf("a message without an id was sent with one: %v", got[0])
	}
	q, err = c.GetQueue(ctx, "orders")
	if err != nil || q.Messages != 2 {
		t.Errorf("GetQueue = %+v, %v; want 2 messages", q, err)
	}
	qs, err := c.Queues(ctx)
	if err != nil || len(qs) != 2 || qs[0].Name != "orders" || qs[0].Messages != 2 || qs[1].Name != "zz" {
		t.Errorf("Queues = %v, %v", qs, err)
	}

	if _, _, err := c.Deploy(ctx, fn.Config{Name: "consumer", Events: []fn.Event{{Queue: "orders"}}}, strings.NewReader("PK\x03\x04")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(ctx, "orders", nil); err == nil || !strings.Contains(err.Error(), "no messages") {
		t.Errorf("Send of nothing: got %v", err)
	}
	errs := []struct {
		name   string
		call   func() error
		status int
	}{
		{"create with a bad name", func() error { _, _, err := c.CreateQueue(ctx, "Bad_Queue"); return err }, 400},
		{"get an unknown queue", func() error { _, err := c.GetQueue(ctx, "nope"); return err }, 404},
		{"get with a bad name", func() error { _, err := c.GetQueue(ctx, "-x-"); return err }, 400},
		{"send to an unknown queue", func() error { _, err := c.Send(ctx, "nope", []Message{{Body: "x"}}); return err }, 404},
		{"delete a queue in use", func() error { return c.DeleteQueue(ctx, "orders") }, 409},
		{"delete an unknown queue", func() error { return c.DeleteQueue(ctx, "nope") }, 404},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			var ae *APIError
			if err := tt.call(); !errors.As(err, &ae) || ae.Status != tt.status {
				t.Errorf("got %v, want an APIError %d", err, tt.status)
			}
		})
	}
	if err := c.DeleteQueue(ctx, "zz"); err != nil {
		t.Fatalf("DeleteQueue: %v", err)
	}
	if _, err := c.GetQueue(ctx, "zz"); !IsNotFound(err) {
		t.Errorf("GetQueue after DeleteQueue: got %v, want 404", err)
	}
}

// TestSendCountsIDs checks Send refuses an answer whose ids do not match
// the messages sent.
func TestSendCountsIDs(t *testing.T) {
	c := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"ids": []string{"only-one"}})
	})
	ids, err := c.Send(t.Context(), "q", []Message{{Body: "a"}, {Body: "b"}})
	if err == nil || !strings.Contains(err.Error(), "sent 2 messages, the server returned 1 ids") || len(ids) != 1 {
		t.Errorf("Send = %q, %v", ids, err)
	}
}

package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"aloft/internal/client"
	"aloft/internal/fn"
)

// asyncCall is one Event invocation the stand-in accepted.
type asyncCall struct{ function, qualifier, key, payload string }

// eventState is what the stand-in's event endpoints hold and saw.
type eventState struct {
	calls []asyncCall
	keys  map[string]string
	// invocations, dead letters, triggers and schedules are served as
	// they are, in the API's wire names.
	invocations []map[string]any
	dead        []map[string]any
	triggers    []map[string]any
	schedules   []map[string]any
	redriveIDs  []string
	queues      map[string]int // name → messages
	// fnsAtCreate is how many functions existed when each queue was
	// created, in order.
	fnsAtCreate []int
	// sends are the message batches received, per request.
	sends [][]client.Message
}

func (s *standIn) eventRoutes(mux *http.ServeMux) {
	s.ev = eventState{keys: map[string]string{}, queues: map[string]int{}}
	notFound := func(w http.ResponseWriter, name string) bool {
		if name == "nope" {
			writeErr(w, fn.NotFound("function %q not found", name))
			return true
		}
		return false
	}
	mux.HandleFunc("GET /v1/functions/{name}/invocations", func(w http.ResponseWriter, r *http.Request) {
		if !notFound(w, r.PathValue("name")) {
			writeJSONResp(w, 200, map[string]any{"invocations": s.ev.invocations})
		}
	})
	mux.HandleFunc("GET /v1/functions/{name}/dlq", func(w http.ResponseWriter, r *http.Request) {
		if !notFound(w, r.PathValue("name")) {
			writeJSONResp(w, 200, map[string]any{"deadLetters": s.ev.dead})
		}
	})
	mux.HandleFunc("POST /v1/functions/{name}/dlq/redrive", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			ID string `json:"id"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		s.mu.Lock()
		s.ev.redriveIDs = append(s.ev.redriveIDs, body.ID)
		s.mu.Unlock()
		if body.ID == "gone" {
			writeErr(w, fn.NotFound("no dead letter with id %q", body.ID))
			return
		}
		n := len(s.ev.dead)
		if body.ID != "" {
			n = 1
		}
		writeJSONResp(w, 200, map[string]any{"redriven": n})
	})
	mux.HandleFunc("GET /v1/triggers", func(w http.ResponseWriter, r *http.Request) {
		writeJSONResp(w, 200, map[string]any{"triggers": s.ev.triggers})
	})
	mux.HandleFunc("GET /v1/schedules", func(w http.ResponseWriter, r *http.Request) {
		out := []map[string]any{}
		for _, e := range s.ev.schedules {
			if f := r.URL.Query().Get("function"); f == "" || e["function"] == f {
				out = append(out, e)
			}
		}
		writeJSONResp(w, 200, map[string]any{"schedules": out})
	})
	mux.HandleFunc("GET /v1/queues", s.listQueues)
	mux.HandleFunc("PUT /v1/queues/{queue}", s.putQueue)
	mux.HandleFunc("DELETE /v1/queues/{queue}", s.deleteQueue)
	mux.HandleFunc("POST /v1/queues/{queue}/messages", s.sendMessages)
}

func (s *standIn) invokeAsync(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if name == "nope" {
		writeErr(w, fn.NotFound("function %q not found", name))
		return
	}
	body, _ := io.ReadAll(r.Body)
	key := r.Header.Get("X-Aloft-Idempotency-Key")
	s.mu.Lock()
	defer s.mu.Unlock()
	id, dup := s.ev.keys[key]
	if key == "" || !dup {
		id = fmt.Sprintf("ev-%d", len(s.ev.calls)+1)
		s.ev.calls = append(s.ev.calls, asyncCall{name, r.URL.Query().Get("qualifier"), key, string(body)})
		s.ev.keys[key] = id
	}
	w.Header().Set("X-Aloft-Invocation-Id", id)
	writeJSONResp(w, 202, map[string]any{"invocationId": id, "duplicate": dup})
}

func queueJSON(name string, messages int) map[string]any {
	return map[string]any{"tenant": "default", "name": name, "created": "2026-01-02T03:04:05Z", "messages": messages}
}

func (s *standIn) listQueues(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	for _, name := range slicesSortedKeys(s.ev.queues) {
		out = append(out, queueJSON(name, s.ev.queues[name]))
	}
	writeJSONResp(w, 200, map[string]any{"queues": out})
}

func slicesSortedKeys(m map[string]int) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (s *standIn) putQueue(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("queue")
	if err := fn.ValidateQueueName(name); err != nil {
		writeErr(w, err.(*fn.Error))
		return
	}
	if name == "refused" {
		writeErr(w, fn.Unavailable("the queue store is down: try again"))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.ev.queues[name]
	status := 200
	if !ok {
		status = 201
		s.ev.queues[name] = 0
		s.ev.fnsAtCreate = append(s.ev.fnsAtCreate, len(s.fns))
	}
	writeJSONResp(w, status, queueJSON(name, n))
}

func (s *standIn) deleteQueue(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("queue")
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ev.queues[name]; !ok {
		writeErr(w, fn.NotFound("queue %q not found", name))
		return
	}
	if name == "busy" {
		writeErr(w, fn.Conflict("queue %q triggers function %q: remove that event first", name, "worker"))
		return
	}
	delete(s.ev.queues, name)
	w.WriteHeader(204)
}

func (s *standIn) sendMessages(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("queue")
	var body struct {
		Messages []client.Message `json:"messages"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeErr(w, fn.Invalid("body: %v", err))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ev.queues[name]; !ok {
		writeErr(w, fn.NotFound("queue %q not found: create it with `aloft queue create %s`", name, name))
		return
	}
	s.ev.sends = append(s.ev.sends, body.Messages)
	ids := []string{}
	for range body.Messages {
		s.ev.queues[name]++
		ids = append(ids, fmt.Sprintf("%s-%d", name, s.ev.queues[name]))
	}
	writeJSONResp(w, 200, map[string]any{"ids": ids})
}

// table splits tabwriter output into rows of cells keyed by the header's
// column names, cutting each line at the header's column offsets (in runes,
// as tabwriter pads).
func table(t *testing.T, out string) []map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	header := []rune(lines[0])
	var names []string
	var offs []int
	for i := 0; i < len(header); {
		if header[i] == ' ' {
			i++
			continue
		}
		j := i
		for j < len(header) && header[j] != ' ' {
			j++
		}
		names, offs = append(names, string(header[i:j])), append(offs, i)
		i = j
	}
	var rows []map[string]string
	for _, l := range lines[1:] {
		r := []rune(l)
		row := map[string]string{}
		for k, off := range offs {
			end := len(r)
			if k+1 < len(offs) {
				end = min(offs[k+1], len(r))
			}
			if off < end {
				row[names[k]] = strings.TrimSpace(string(r[off:end]))
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// wantRow checks the cells of row named in want.
func wantRow(t *testing.T, what string, row, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if row[k] != v {
			t.Errorf("%s: %s = %q, want %q (row %v)", what, k, row[k], v, row)
		}
	}
}

func local(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05") }

func TestInvokeAsync(t *testing.T) {
	s := newStandIn(t)
	out, errOut, err := run(t, s, nil, "invoke", "--async", "f", `{"a":1}`, "--qualifier", "prod")
	if err != nil || out != "ev-1\n" || errOut != "" {
		t.Fatalf("invoke --async = %q, %q, %v; want the id alone", out, errOut, err)
	}
	if got := s.ev.calls[0]; got != (asyncCall{"f", "prod", "", `{"a":1}`}) {
		t.Errorf("server got %+v", got)
	}

	out, errOut, err = run(t, s, strings.NewReader(`"piped"`), "invoke", "f", "--async", "--idempotency-key", "k1")
	if err != nil || out != "ev-2\n" || errOut != "" {
		t.Fatalf("invoke --async with a key = %q, %q, %v", out, errOut, err)
	}
	out, errOut, err = run(t, s, nil, "invoke", "f", "{}", "--async", "--idempotency-key", "k1")
	if err != nil || out != "ev-2\n" || !strings.HasPrefix(errOut, "(duplicate) ") || !strings.Contains(errOut, `"k1"`) {
		t.Errorf("repeat of key k1 = %q, %q, %v; want ev-2 and (duplicate) on stderr", out, errOut, err)
	}
	if len(s.ev.calls) != 2 || s.ev.calls[1].payload != `"piped"` || s.ev.calls[1].key != "k1" {
		t.Errorf("server got %+v", s.ev.calls)
	}

	_, _, err = run(t, s, nil, "invoke", "--async", "nope")
	if err == nil || !strings.Contains(err.Error(), `function "nope" not found (not_found, HTTP 404)`) {
		t.Errorf("invoke --async nope: got %v", err)
	}
}

func TestInvocations(t *testing.T) {
	s := newStandIn(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	long := "Boom: " + strings.Repeat("x", 100) + "\nsecond line"
	s.ev.invocations = []map[string]any{
		{"id": "ev-2", "function": "f", "version": "3", "trigger": "api", "status": "retrying", "attempts": 2,
			"started": t0, "updated": t0, "duration": "1.234567s", "error": long},
		{"id": "ev-1", "function": "f", "trigger": "schedule", "status": "succeeded", "attempts": 1,
			"started": t0.Add(-time.Hour), "updated": t0, "duration": "12.3456ms"},
		{"id": "ev-0", "function": "f", "status": "queued", "started": t0.Add(-2 * time.Hour), "updated": t0},
	}
	out, _, err := run(t, s, nil, "invocations", "f", "--limit", "3")
	if err != nil {
		t.Fatalf("invocations: %v", err)
	}
	if q := s.lastQuery(); q != "limit=3" {
		t.Errorf("query = %q, want limit=3", q)
	}
	if !strings.HasPrefix(out, "ID    STATUS     ATTEMPTS  TRIGGER   VERSION  STARTED") {
		t.Errorf("header:\n%s", out)
	}
	rows := table(t, out)
	if len(rows) != 3 {
		t.Fatalf("invocations printed %d rows:\n%s", len(rows), out)
	}
	wantRow(t, "retrying", rows[0], map[string]string{"ID": "ev-2", "STATUS": "retrying", "ATTEMPTS": "2", "TRIGGER": "api",
		"VERSION": "3", "STARTED": local(t0), "DURATION": "1.235s", "ERROR": "Boom: " + strings.Repeat("x", 53) + "…"})
	wantRow(t, "succeeded", rows[1], map[string]string{"ID": "ev-1", "DURATION": "12.35ms", "ERROR": "-", "VERSION": "-"})
	wantRow(t, "queued", rows[2], map[string]string{"ID": "ev-0", "ATTEMPTS": "0", "TRIGGER": "-", "DURATION": "-"})

	s.ev.invocations = nil
	out, errOut, err := run(t, s, nil, "invocations", "f")
	if err != nil || out != "" || !strings.Contains(errOut, "f has no event invocations yet") {
		t.Errorf("invocations with none = %q, %q, %v", out, errOut, err)
	}
	if _, _, err := run(t, s, nil, "invocations", "nope"); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Errorf("invocations nope: got %v", err)
	}
}

func TestDLQ(t *testing.T) {
	s := newStandIn(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s.ev.dead = []map[string]any{
		{"id": "ev-9", "tenant": "default", "function": "f", "source": "async", "payload": []byte(`{"order":"` + strings.Repeat("9", 50) + `"}`),
			"errorType": "Boom", "errorMessage": "it broke", "attempts": 3, "deadLettered": t0, "reason": "retries exhausted", "seq": 4},
		{"id": "m-1", "tenant": "default", "function": "f", "source": "queue:orders", "payload": []byte("bin\x00\xff\tary"),
			"errorMessage": "timed out", "attempts": 1, "deadLettered": t0.Add(time.Minute), "reason": "maximum event age exceeded", "seq": 5},
		{"id": "m-2", "tenant": "default", "function": "f", "source": "queue:orders", "payload": []byte{}, "seq": 6},
	}
	out, _, err := run(t, s, nil, "dlq", "ls", "f")
	if err != nil {
		t.Fatalf("dlq ls: %v", err)
	}
	rows := table(t, out)
	if len(rows) != 3 || !strings.HasPrefix(out, "ID    SOURCE        ATTEMPTS  REASON") {
		t.Fatalf("dlq ls printed:\n%s", out)
	}
	wantRow(t, "async", rows[0], map[string]string{"ID": "ev-9", "SOURCE": "async", "ATTEMPTS": "3", "REASON": "retries exhausted",
		"ERROR": "Boom: it broke", "DEAD-LETTERED": local(t0), "PAYLOAD": `{"order":"` + strings.Repeat("9", 29) + "…"})
	wantRow(t, "binary", rows[1], map[string]string{"ID": "m-1", "SOURCE": "queue:orders", "ERROR": "timed out", "PAYLOAD": "bin...ary"})
	wantRow(t, "empty", rows[2], map[string]string{"ID": "m-2", "PAYLOAD": "-", "ERROR": "-", "DEAD-LETTERED": "-"})

	out, _, err = run(t, s, nil, "dlq", "ls", "f", "--json", "--limit", "9")
	var got []client.DeadLetter
	if err != nil || json.Unmarshal([]byte(out), &got) != nil || len(got) != 3 || string(got[1].Payload) != "bin\x00\xff\tary" || got[0].Seq != 4 {
		t.Errorf("dlq ls --json = %q, %v", out, err)
	}
	if q := s.lastQuery(); q != "limit=9" {
		t.Errorf("query = %q, want limit=9", q)
	}

	out, _, err = run(t, s, nil, "dlq", "redrive", "f")
	if err != nil || out != "redriven 3\n" {
		t.Errorf("dlq redrive = %q, %v", out, err)
	}
	out, _, err = run(t, s, nil, "dlq", "redrive", "f", "--id", "m-1")
	if err != nil || out != "redriven 1\n" || !slices.Equal(s.ev.redriveIDs, []string{"", "m-1"}) {
		t.Errorf("dlq redrive --id m-1 = %q, %v; server got ids %q", out, err, s.ev.redriveIDs)
	}
	if _, _, err := run(t, s, nil, "dlq", "redrive", "f", "--id", "gone"); err == nil || !strings.Contains(err.Error(), `no dead letter with id "gone"`) {
		t.Errorf("dlq redrive --id gone: got %v", err)
	}

	s.ev.dead = nil
	out, errOut, err := run(t, s, nil, "dlq", "ls", "f")
	if err != nil || out != "" || errOut != "f has no dead letters\n" {
		t.Errorf("dlq ls with none = %q, %q, %v", out, errOut, err)
	}
	if out, _, err = run(t, s, nil, "dlq", "ls", "f", "--json"); err != nil || out != "[]\n" {
		t.Errorf("dlq ls --json with none = %q, %v; want []", out, err)
	}
}

func TestSchedulesAndTriggers(t *testing.T) {
	s := newStandIn(t)
	next := time.Date(2026, 3, 4, 11, 0, 0, 0, time.UTC)
	s.ev.schedules = []map[string]any{
		{"function": "report", "index": 0, "schedule": "cron(0 12 * * ? *)", "timezone": "Europe/Paris", "next": next, "last": next.Add(-24 * time.Hour)},
		{"function": "tick", "index": 1, "schedule": "rate(5 minutes)", "next": next.Add(time.Hour)},
		{"function": "tick", "index": 2, "schedule": "rate(1 hour)", "disabled": true},
	}
	out, _, err := run(t, s, nil, "schedules")
	if err != nil {
		t.Fatalf("schedules: %v", err)
	}
	rows := table(t, out)
	if len(rows) != 3 || !strings.HasPrefix(out, "FUNCTION  SCHEDULE") {
		t.Fatalf("schedules printed:\n%s", out)
	}
	wantRow(t, "cron", rows[0], map[string]string{"FUNCTION": "report", "SCHEDULE": "cron(0 12 * * ? *)", "TIMEZONE": "Europe/Paris",
		"NEXT": local(next), "LAST": local(next.Add(-24 * time.Hour))})
	wantRow(t, "rate", rows[1], map[string]string{"FUNCTION": "tick", "TIMEZONE": "-", "LAST": "-"})
	wantRow(t, "disabled", rows[2], map[string]string{"SCHEDULE": "rate(1 hour) (disabled)", "NEXT": "-"})

	out, _, err = run(t, s, nil, "schedules", "report")
	if err != nil || len(table(t, out)) != 1 || s.lastQuery() != "function=report" {
		t.Errorf("schedules report = %q, %v (query %q)", out, err, s.lastQuery())
	}
	out, errOut, err := run(t, s, nil, "schedules", "none")
	if err != nil || out != "" || !strings.Contains(errOut, "none has no schedules") {
		t.Errorf("schedules of a function without any = %q, %q, %v", out, errOut, err)
	}

	s.ev.triggers = []map[string]any{
		{"function": "report", "index": 0, "kind": "schedule", "source": "cron(0 12 * * ? *)", "options": "timezone Europe/Paris", "next": next},
		{"function": "worker", "index": 0, "kind": "queue", "source": "orders", "qualifier": "prod", "options": "batch 10, window 0s, concurrency 2, retries 2"},
		{"function": "worker", "index": 1, "kind": "subject", "source": "sensors.>", "disabled": true},
	}
	out, _, err = run(t, s, nil, "triggers", "ls")
	if err != nil {
		t.Fatalf("triggers ls: %v", err)
	}
	rows = table(t, out)
	if len(rows) != 3 || !strings.HasPrefix(out, "FUNCTION  KIND      SOURCE") {
		t.Fatalf("triggers ls printed:\n%s", out)
	}
	wantRow(t, "schedule", rows[0], map[string]string{"FUNCTION": "report", "KIND": "schedule", "SOURCE": "cron(0 12 * * ? *)",
		"OPTIONS": "timezone Europe/Paris", "NEXT": local(next), "QUALIFIER": "$LATEST"})
	wantRow(t, "queue", rows[1], map[string]string{"KIND": "queue", "SOURCE": "orders", "OPTIONS": "batch 10, window 0s, concurrency 2, retries 2",
		"NEXT": "-", "QUALIFIER": "prod"})
	wantRow(t, "subject", rows[2], map[string]string{"KIND": "subject", "SOURCE": "sensors.> (disabled)", "OPTIONS": "-"})

	s.ev.triggers, s.ev.schedules = nil, nil
	if out, errOut, err = run(t, s, nil, "triggers", "ls"); err != nil || out != "" || !strings.HasPrefix(errOut, "no triggers") {
		t.Errorf("triggers ls with none = %q, %q, %v", out, errOut, err)
	}
	if out, errOut, err = run(t, s, nil, "schedules"); err != nil || out != "" || !strings.HasPrefix(errOut, "no schedules") {
		t.Errorf("schedules with none = %q, %q, %v", out, errOut, err)
	}
}

func TestQueueVerbs(t *testing.T) {
	s := newStandIn(t)
	out, _, err := run(t, s, nil, "queue", "create", "orders")
	if err != nil || out != "created queue orders\n" {
		t.Fatalf("queue create = %q, %v", out, err)
	}
	if out, _, err = run(t, s, nil, "queue", "create", "orders"); err != nil || out != "queue orders exists (0 messages)\n" {
		t.Errorf("queue create again = %q, %v", out, err)
	}
	if _, _, err = run(t, s, nil, "queue", "create", "Bad_Name"); err == nil || !strings.Contains(err.Error(), `queue name "Bad_Name" is invalid`) {
		t.Errorf("queue create Bad_Name: got %v", err)
	}

	out, _, err = run(t, s, nil, "queue", "send", "orders", "one", "two words", "--attr", "source=cli", "--attr", "k=a=b")
	if err != nil || out != "orders-1\norders-2\n" {
		t.Fatalf("queue send = %q, %v", out, err)
	}
	wantAttrs := map[string]string{"source": "cli", "k": "a=b"}
	if got := s.ev.sends[0]; len(got) != 2 || got[0].Body != "one" || got[1].Body != "two words" || !mapsEqual(got[1].Attributes, wantAttrs) {
		t.Errorf("server got %+v", got)
	}

	if _, _, err = run(t, s, nil, "queue", "create", "busy"); err != nil {
		t.Fatal(err)
	}
	out, _, err = run(t, s, nil, "queue", "ls")
	rows := table(t, out)
	if err != nil || len(rows) != 2 {
		t.Fatalf("queue ls = %q, %v", out, err)
	}
	wantRow(t, "busy", rows[0], map[string]string{"NAME": "busy", "MESSAGES": "0", "CREATED": local(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))})
	wantRow(t, "orders", rows[1], map[string]string{"NAME": "orders", "MESSAGES": "2"})

	if _, _, err = run(t, s, nil, "queue", "rm", "busy"); err == nil || !strings.Contains(err.Error(), `queue "busy" triggers function "worker"`) {
		t.Errorf("queue rm busy: got %v, want the conflict", err)
	}
	if out, _, err = run(t, s, nil, "queue", "rm", "orders"); err != nil || out != "deleted queue orders\n" {
		t.Errorf("queue rm = %q, %v", out, err)
	}
	if _, _, err = run(t, s, nil, "queue", "send", "orders", "x"); err == nil || !strings.Contains(err.Error(), `queue "orders" not found`) {
		t.Errorf("queue send to a deleted queue: got %v", err)
	}
	delete(s.ev.queues, "busy")
	if out, errOut, err := run(t, s, nil, "queue", "ls"); err != nil || out != "" || !strings.HasPrefix(errOut, "no queues") {
		t.Errorf("queue ls with none = %q, %q, %v", out, errOut, err)
	}
}

// TestQueueSendBatches checks '-' reads stdin, one message per line, blank
// lines skipped, in bounded batches, with literal bodies in their place.
func TestQueueSendBatches(t *testing.T) {
	s := newStandIn(t)
	if _, _, err := run(t, s, nil, "queue", "create", "orders"); err != nil {
		t.Fatal(err)
	}
	var in strings.Builder
	for i := range 250 {
		fmt.Fprintf(&in, "line %d\r\n", i)
		if i == 10 {
			in.WriteString("\n   \n")
		}
	}
	out, _, err := run(t, s, strings.NewReader(in.String()), "queue", "send", "orders", "first", "-", "last")
	if err != nil {
		t.Fatalf("queue send -: %v", err)
	}
	ids := strings.Split(strings.TrimSpace(out), "\n")
	if len(ids) != 252 || ids[0] != "orders-1" || ids[251] != "orders-252" {
		t.Errorf("queue send - printed %d ids (%q … %q), want 252 from orders-1 to orders-252", len(ids), ids[0], ids[len(ids)-1])
	}
	var bodies []string
	for _, batch := range s.ev.sends {
		if len(batch) > sendBatchMessages {
			t.Errorf("a batch of %d messages, want at most %d", len(batch), sendBatchMessages)
		}
		for _, m := range batch {
			bodies = append(bodies, m.Body)
			if m.Attributes != nil {
				t.Errorf("message %q has attributes %v, none were given", m.Body, m.Attributes)
			}
		}
	}
	if len(s.ev.sends) != 3 || len(bodies) != 252 || bodies[0] != "first" || bodies[1] != "line 0" || bodies[12] != "line 11" || bodies[251] != "last" {
		t.Errorf("server got %d requests with %d bodies: %q …", len(s.ev.sends), len(bodies), bodies[:min(13, len(bodies))])
	}

	// Large bodies: a batch stays under sendBatchBytes.
	big := strings.Repeat("b", sendBatchBytes*2/5)
	before := len(s.ev.sends)
	if out, _, err = run(t, s, nil, "queue", "send", "orders", big, big, big); err != nil || strings.Count(out, "\n") != 3 {
		t.Fatalf("queue send of large bodies = %q, %v", out, err)
	}
	if got := s.ev.sends[before:]; len(got) != 2 || len(got[0]) != 2 || len(got[1]) != 1 {
		t.Errorf("large bodies went in %d requests, want 2 (two bodies, then one)", len(got))
	}

}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestQueueSendStdinErrors(t *testing.T) {
	s := newStandIn(t)
	if _, _, err := run(t, s, nil, "queue", "create", "q"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		stdin io.Reader
		args  []string
		want  string
	}{
		{"no stdin", nil, []string{"-"}, "'-' reads stdin, but there is none"},
		{"two dashes", strings.NewReader("a\n"), []string{"-", "-"}, "give '-' (read stdin) once"},
		{"line too long", strings.NewReader("ok\n" + strings.Repeat("x", maxLine+1) + "\n"), []string{"-"}, "stdin line 2 is over"},
		{"read error", io.MultiReader(strings.NewReader("ok\n"), errReader{}), []string{"-"}, "read stdin: disk on fire"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := run(t, s, tt.stdin, append([]string{"queue", "send", "q"}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestDeployQueuesAndEvents(t *testing.T) {
	s := newStandIn(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "w"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "w", "index.js"), []byte("exports.handler = async e => e;\n"), 0o644)
	y := "queues:\n  - name: orders\n  - name: failed\n" +
		"functions:\n" +
		"  - name: worker\n    runtime: node\n    source: ./w\n" +
		"    events:\n" +
		"      - {schedule: 'cron(0 12 * * ? *)', timezone: Europe/Paris}\n" +
		"      - {queue: orders, batchSize: 5, qualifier: prod}\n" +
		"      - {subject: 'sensors.>', disabled: true}\n" +
		"    async: {retries: 1, onFailure: 'queue:failed'}\n" +
		"  - name: plain\n    runtime: node\n    source: ./w\n    routes: ['/plain']\n"
	if err := os.WriteFile(filepath.Join(dir, "aloft.yaml"), []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err := run(t, s, nil, "deploy", dir)
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	want := "queue orders  created\n" +
		"queue failed  created\n" +
		"worker  node  created  " + s.srv.URL + "/fn/worker/\n" +
		"  schedule cron(0 12 * * ? *) timezone Europe/Paris\n" +
		"  queue orders qualifier prod\n" +
		"  subject sensors.> (disabled)\n" +
		"plain  node  created  " + s.srv.URL + "/fn/plain/  /plain\n"
	if out != want {
		t.Errorf("deploy printed:\n%s\nwant:\n%s", out, want)
	}
	if !slices.Equal(s.ev.fnsAtCreate, []int{0, 0}) {
		t.Errorf("functions existing as each queue was created: %v, want queues first", s.ev.fnsAtCreate)
	}
	w := s.get("worker")
	if len(w.Events) != 3 || w.Events[1].BatchSize != 5 || w.Async.RetryCount() != 1 || w.Async.OnFailure != "queue:failed" {
		t.Errorf("server got worker's config %+v", w.Config)
	}

	out, _, err = run(t, s, nil, "deploy", dir, "--only", "plain")
	if err != nil || !strings.HasPrefix(out, "queue orders  exists\nqueue failed  exists\nplain  node  updated") {
		t.Errorf("deploy again = %q, %v", out, err)
	}
}

func TestDeployCarriesOnPastQueueFailures(t *testing.T) {
	s := newStandIn(t)
	dir, _ := writeProject(t, false)
	y, _ := os.ReadFile(filepath.Join(dir, "aloft.yaml"))
	y = append([]byte("queues: [{name: refused}, {name: ok}]\n"), y...)
	os.WriteFile(filepath.Join(dir, "aloft.yaml"), y, 0o644)
	out, _, err := run(t, s, nil, "deploy", dir)
	if err == nil || !strings.Contains(err.Error(), "deploy: create queue refused: the queue store is down") {
		t.Fatalf("deploy: got %v, want the queue's failure", err)
	}
	if !strings.HasPrefix(out, "queue ok  created\na  node  created") || !strings.Contains(out, "b  http  created") {
		t.Errorf("deploy printed %q, want the other queue and both functions", out)
	}
}

func TestEventVerbHelp(t *testing.T) {
	for _, args := range [][]string{{"dlq", "-h"}, {"queue", "--help"}, {"triggers", "-h"}, {"queue", "send", "-h"}, {"invocations", "-h"}} {
		var errOut bytes.Buffer
		err := Run(t.Context(), args, nil, io.Discard, &errOut)
		if !errors.Is(err, flag.ErrHelp) || !strings.Contains(errOut.String(), "usage") {
			t.Errorf("Run(%q) = %v, printed %q; want usage and flag.ErrHelp", args, err, errOut.String())
		}
	}
	var errOut bytes.Buffer
	Run(t.Context(), []string{"queue", "-h"}, nil, io.Discard, &errOut)
	for _, sub := range []string{"queue create NAME", "queue ls", "queue rm NAME", "queue send NAME BODY..."} {
		if !strings.Contains(errOut.String(), "aloft "+sub+" ") {
			t.Errorf("queue -h does not list %q:\n%s", sub, errOut.String())
		}
	}
	for verb, want := range map[string]bool{"dlq": true, "queue": true, "triggers": true, "invocations": true, "schedules": true,
		"dlq ls": false, "queue send": false, "triggers ls": false} {
		if IsClientVerb(verb) != want {
			t.Errorf("IsClientVerb(%q) = %v, want %v", verb, !want, want)
		}
	}
	var usage bytes.Buffer
	Usage(&usage)
	for _, v := range []string{"invocations NAME", "dlq ls NAME", "dlq redrive NAME", "schedules [NAME]", "triggers ls",
		"queue create NAME", "queue ls", "queue rm NAME", "queue send NAME BODY..."} {
		if !strings.Contains(usage.String(), "  "+v+" ") {
			t.Errorf("Usage does not list %q", v)
		}
	}
	errOut.Reset()
	Run(t.Context(), []string{"invoke", "-h"}, nil, io.Discard, &errOut)
	for _, f := range []string{"-async", "-idempotency-key KEY"} {
		if !strings.Contains(errOut.String(), f) {
			t.Errorf("invoke -h does not document %s:\n%s", f, errOut.String())
		}
	}
}

func TestPreviewAndCut(t *testing.T) {
	tests := []struct {
		in   []byte
		n    int
		want string
	}{
		{[]byte("hello"), 5, "hello"},
		{[]byte("hello!"), 5, "hell…"},
		{[]byte("héllo"), 5, "héllo"},
		{[]byte("a\nb\tc\x00"), 10, "a.b.c."},
		{[]byte{0xff, 0xfe, 'x'}, 10, "..x"},
		{[]byte("日本語のテキスト"), 4, "日本語…"},
		{nil, 5, ""},
	}
	for _, tt := range tests {
		if got := preview(tt.in, tt.n); got != tt.want {
			t.Errorf("preview(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
	if got := cut("a\n\tb   c", 10); got != "a b c" {
		t.Errorf("cut joins lines: got %q", got)
	}
	if got := cut("abcdef", 4); got != "abc…" {
		t.Errorf("cut(abcdef, 4) = %q", got)
	}
	for d, want := range map[time.Duration]string{0: "-", 1234 * time.Nanosecond: "1µs", 12345 * time.Microsecond: "12.35ms",
		1500 * time.Millisecond: "1.5s", 90*time.Second + 7*time.Microsecond: "1m30s"} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

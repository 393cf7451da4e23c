package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"aloft/internal/testnet"
)

// collector is the HTTP endpoint the collector function reports each
// execution to, before it answers: what it saw is exactly what ran.
type collector struct {
	mu    sync.Mutex
	seen  map[string][]time.Time
	lines []string
	url   string
}

func newCollector(t *testing.T) *collector {
	c := &collector{seen: map[string][]time.Time{}}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.seen[string(b)] = append(c.seen[string(b)], time.Now())
		c.lines = append(c.lines, string(b))
		c.mu.Unlock()
	}))
	if sandboxed {
		// Sandboxed functions cannot reach the host: listen where a
		// function's egress link leads.
		outside, err := testnet.New()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { outside.Close() })
		srv.Listener.Close()
		if srv.Listener, err = outside.Listen(0); err != nil {
			t.Fatal(err)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c.url = srv.URL
	return c
}

// count returns how many times line was reported.
func (c *collector) count(line string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen[line])
}

// times returns when line was reported.
func (c *collector) times(line string) []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.seen[line]...)
}

// matching returns the reported lines with prefix, in order.
func (c *collector) matching(prefix string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, l := range c.lines {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// asyncInvoke sends an Event invocation and returns the status and body.
func (s *server) asyncInvoke(name string, payload any, hdr ...string) (int, map[string]any) {
	s.t.Helper()
	b, _ := json.Marshal(payload)
	resp, body := s.do("POST", "/v1/functions/"+name+"/invoke", bytes.NewReader(b), true,
		append([]string{"X-Aloft-Invocation-Type", "Event"}, hdr...)...)
	var out map[string]any
	_ = json.Unmarshal(body, &out)
	return resp.StatusCode, out
}

// getJSON GETs an API path that must answer 200 and decodes it into v.
func (s *server) getJSON(path string, v any) {
	s.t.Helper()
	resp, body := s.do("GET", path, nil, true)
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		s.t.Fatalf("GET %s: %v: %s", path, err, body)
	}
}

type deadLetter struct {
	ID           string    `json:"id"`
	Source       string    `json:"source"`
	Attempts     int       `json:"attempts"`
	Reason       string    `json:"reason"`
	ErrorMessage string    `json:"errorMessage"`
	Payload      []byte    `json:"payload"`
	DeadLettered time.Time `json:"deadLettered"`
}

func (s *server) deadLetters(name string) []deadLetter {
	var out struct {
		DeadLetters []deadLetter `json:"deadLetters"`
	}
	s.getJSON("/v1/functions/"+name+"/dlq", &out)
	return out.DeadLetters
}

// wantError checks an API answer is the given status with a JSON error
// whose message contains want.
func wantError(t *testing.T, what string, resp *http.Response, body []byte, status int, want string) {
	t.Helper()
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if resp.StatusCode != status || json.Unmarshal(body, &e) != nil || !strings.Contains(e.Error.Message, want) {
		t.Errorf("%s: got %d %s, want %d with a message containing %q", what, resp.StatusCode, body, status, want)
	}
}

// TestEvents drives async invocations, queues and schedules through the
// binary with a real function that reports every execution.
func TestEvents(t *testing.T) {
	col := newCollector(t)
	s := startServer(t, dataDir(t), "--retry-base", "200ms")
	dir := t.TempDir()
	src := abs(t, "testdata/collector")
	writeManifest(t, dir, fmt.Sprintf(`queues:
  - name: jobs
  - name: failures
functions:
  - name: worker
    runtime: lambda
    source: %[1]s
    network: true
    env: {COLLECT_URL: %[2]s}
    timeout: 5s
    scale: {max: 4}
    async: {retries: 1, onFailure: "queue:failures"}
    events:
      - queue: jobs
        batchSize: 5
        batchWindow: 100ms
        retries: 1
  - name: ticker
    runtime: lambda
    source: %[1]s
    network: true
    env: {COLLECT_URL: %[2]s}
    events:
      - schedule: rate(1 second)
      - schedule: "0 0 1 1 *"
        timezone: Europe/Paris
  - name: ticker-http
    runtime: http
    source: %[1]s
    network: true
    env: {COLLECT_URL: %[2]s}
    events:
      - schedule: rate(1 second)
        input: {"from": "schedule"}
`, src, col.url))
	s.mustCLI("deploy", dir)

	t.Run("async invocations run once each", func(t *testing.T) {
		ids := map[string]bool{}
		for i := range 20 {
			status, out := s.asyncInvoke("worker", map[string]any{"id": fmt.Sprintf("a%d", i)})
			id, _ := out["invocationId"].(string)
			if status != http.StatusAccepted || id == "" {
				t.Fatalf("async invoke: %d %v", status, out)
			}
			ids[id] = true
		}
		if len(ids) != 20 {
			t.Fatalf("%d distinct invocation ids for 20 events", len(ids))
		}
		eventually(t, 60*time.Second, "20 async executions", func() bool {
			for i := range 20 {
				if col.count(fmt.Sprintf("event a%d", i)) == 0 {
					return false
				}
			}
			return true
		})
		var inv struct {
			Invocations []struct {
				ID, Status, Trigger string
				Attempts            int
			} `json:"invocations"`
		}
		eventually(t, 10*time.Second, "invocation records to show success", func() bool {
			s.getJSON("/v1/functions/worker/invocations?limit=100", &inv)
			n := 0
			for _, r := range inv.Invocations {
				if ids[r.ID] && r.Status == "succeeded" && r.Attempts == 1 && r.Trigger == "api" {
					n++
				}
			}
			return n == 20
		})
	})

	t.Run("idempotency key", func(t *testing.T) {
		st1, out1 := s.asyncInvoke("worker", map[string]any{"id": "idem"}, "X-Aloft-Idempotency-Key", "k-1")
		st2, out2 := s.asyncInvoke("worker", map[string]any{"id": "idem"}, "X-Aloft-Idempotency-Key", "k-1")
		if st1 != 202 || st2 != 202 || out1["invocationId"] != out2["invocationId"] || out1["duplicate"] != false || out2["duplicate"] != true {
			t.Fatalf("two enqueues with one key: %d %v / %d %v", st1, out1, st2, out2)
		}
		eventually(t, 30*time.Second, "the keyed event to run", func() bool { return col.count("event idem") > 0 })
	})

	t.Run("failures retry then dead-letter", func(t *testing.T) {
		status, out := s.asyncInvoke("worker", map[string]any{"id": "doomed", "fail": true})
		if status != 202 {
			t.Fatalf("async invoke: %d %v", status, out)
		}
		var dl []deadLetter
		eventually(t, 60*time.Second, "the failing event in the dead letters", func() bool {
			dl = s.deadLetters("worker")
			return len(dl) > 0
		})
		if col.count("event doomed") != 2 {
			t.Fatalf("the failing event ran %d times, want 2 (retries: 1)", col.count("event doomed"))
		}
		d := dl[0]
		if d.ID != out["invocationId"] || d.Source != "async" || d.Attempts != 2 || !strings.Contains(d.ErrorMessage, "failed on purpose: doomed") ||
			!strings.Contains(string(d.Payload), `"doomed"`) || d.Reason == "" {
			t.Fatalf("dead letter = %+v", d)
		}
		// The failure destination got Lambda's destination record.
		var q struct{ Messages int }
		eventually(t, 10*time.Second, "the failure destination's message", func() bool {
			s.getJSON("/v1/queues/failures", &q)
			return q.Messages >= 1
		})
		// Redrive runs it again (and it fails again, twice).
		resp, body := s.do("POST", "/v1/functions/worker/dlq/redrive", strings.NewReader(`{"id":"`+d.ID+`"}`), true)
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"redriven":1`) {
			t.Fatalf("redrive: %d %s", resp.StatusCode, body)
		}
		eventually(t, 60*time.Second, "the redriven event to run twice more", func() bool { return col.count("event doomed") == 4 })
		resp, body = s.do("POST", "/v1/functions/worker/dlq/redrive", strings.NewReader(`{"id":"nope"}`), true)
		wantError(t, "redrive of an unknown id", resp, body, 404, "no dead letter")
	})

	t.Run("queue trigger with partial batch failures", func(t *testing.T) {
		var msgs []map[string]any
		for i := range 30 {
			msgs = append(msgs, map[string]any{"body": fmt.Sprintf("m-%d", i), "attributes": map[string]string{"n": fmt.Sprint(i)}})
		}
		msgs = append(msgs, map[string]any{"body": "fail-1"}, map[string]any{"body": "fail-2"})
		b, _ := json.Marshal(map[string]any{"messages": msgs})
		resp, body := s.do("POST", "/v1/queues/jobs/messages", bytes.NewReader(b), true)
		if resp.StatusCode != 200 || strings.Count(string(body), `"`) < 64 {
			t.Fatalf("send: %d %s", resp.StatusCode, body)
		}
		eventually(t, 60*time.Second, "every message to be handled", func() bool {
			for i := range 30 {
				if col.count(fmt.Sprintf("sqs m-%d", i)) == 0 {
					return false
				}
			}
			return true
		})
		eventually(t, 60*time.Second, "the failing messages in the dead letters", func() bool {
			n := 0
			for _, d := range s.deadLetters("worker") {
				if d.Source == "queue:jobs" {
					n++
				}
			}
			return n == 2
		})
		for _, m := range []string{"sqs fail-1", "sqs fail-2"} {
			if c := col.count(m); c != 2 {
				t.Errorf("%q ran %d times, want 2 (retries: 1)", m, c)
			}
		}
		for i := range 30 {
			if c := col.count(fmt.Sprintf("sqs m-%d", i)); c != 1 {
				t.Errorf("message m-%d ran %d times: only failed items are retried", i, c)
			}
		}
	})

	t.Run("schedules fire with the event shapes", func(t *testing.T) {
		eventually(t, 30*time.Second, "three ticks of each schedule", func() bool {
			return len(col.matching("tick ")) >= 3 && len(col.matching("http dev.aloft.schedule.tick ")) >= 3
		})
		ticks := col.matching("tick ")
		var times []time.Time
		for _, l := range ticks {
			tm, err := time.Parse(time.RFC3339, strings.TrimPrefix(l, "tick "))
			if err != nil {
				t.Fatalf("tick line %q: %v", l, err)
			}
			times = append(times, tm)
		}
		sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
		for i := 1; i < len(times); i++ {
			if times[i].Sub(times[i-1]) < time.Second {
				t.Fatalf("ticks %v are less than a second apart: each tick fires once", times)
			}
		}
		h := col.matching("http dev.aloft.schedule.tick ")[0]
		if !strings.HasSuffix(h, `{"from":"schedule"}`) {
			t.Errorf("http schedule line %q: want the input as the body", h)
		}
		var sched struct {
			Schedules []map[string]any `json:"schedules"`
		}
		s.getJSON("/v1/schedules?function=ticker", &sched)
		if len(sched.Schedules) != 2 {
			t.Fatalf("schedules of ticker = %v", sched.Schedules)
		}
		var trig struct {
			Triggers []map[string]any `json:"triggers"`
		}
		s.getJSON("/v1/triggers", &trig)
		kinds := map[string]int{}
		for _, tr := range trig.Triggers {
			kinds[fmt.Sprint(tr["kind"])]++
		}
		if kinds["schedule"] != 3 || kinds["queue"] != 1 {
			t.Errorf("triggers = %v", trig.Triggers)
		}
	})

	t.Run("bad input answers 4xx and changes nothing", func(t *testing.T) {
		big := bytes.Repeat([]byte("x"), 1<<20+10)
		resp, body := s.do("POST", "/v1/functions/worker/invoke", bytes.NewReader(big), true, "X-Aloft-Invocation-Type", "Event")
		wantError(t, "async payload over 1 MiB", resp, body, 413, "async payload")
		resp, body = s.do("POST", "/v1/functions/nobody/invoke", strings.NewReader("{}"), true, "X-Aloft-Invocation-Type", "Event")
		wantError(t, "async invoke of an unknown function", resp, body, 404, "nobody")
		resp, body = s.do("POST", "/v1/functions/worker/invoke?qualifier=nowhere", strings.NewReader("{}"), true, "X-Aloft-Invocation-Type", "Event")
		wantError(t, "async invoke of an unknown alias", resp, body, 404, "nowhere")
		resp, body = s.do("POST", "/v1/functions/worker/invoke", strings.NewReader(`{"id":"not-json"`), true, "X-Aloft-Invocation-Type", "Event")
		wantError(t, "async payload that is not JSON", resp, body, 400, "not valid JSON")
		resp, body = s.do("POST", "/v1/functions/worker/invoke", strings.NewReader("{}"), true, "X-Aloft-Invocation-Type", "Later")
		wantError(t, "unknown invocation type", resp, body, 400, "RequestResponse, Event or DryRun")
		resp, _ = s.do("POST", "/v1/functions/worker/invoke", strings.NewReader("{}"), true, "X-Aloft-Invocation-Type", "DryRun")
		if resp.StatusCode != 204 {
			t.Errorf("DryRun: %d, want 204", resp.StatusCode)
		}
		resp, body = s.do("POST", "/v1/queues/missing/messages", strings.NewReader(`{"body":"x"}`), true)
		wantError(t, "send to a missing queue", resp, body, 404, "missing")
		resp, body = s.do("DELETE", "/v1/queues/jobs", nil, true)
		wantError(t, "delete a queue in use", resp, body, 409, "worker")
		resp, body = s.do("PUT", "/v1/queues/settled", strings.NewReader(`{"retention":"1h"}`), true, "Content-Type", "application/json")
		wantError(t, "a queue with settings", resp, body, 400, "no settings")
		resp, body = s.do("GET", "/v1/queues/settled", nil, true)
		wantError(t, "the queue refused", resp, body, 404, "settled")
		resp, body = s.do("PUT", "/v1/queues/plain", strings.NewReader(`{}`), true, "Content-Type", "application/json")
		if resp.StatusCode != 201 {
			t.Errorf("create a queue with the body {}: %d %s", resp.StatusCode, body)
		}
		resp, body = s.do("PUT", "/v1/functions/worker", strings.NewReader(`{"name":"worker","runtime":"lambda","env":{"A":"x\u0000y"}}`), true, "Content-Type", "application/json")
		wantError(t, "a NUL byte in an env value", resp, body, 400, "NUL")
		for _, tc := range []struct{ what, cfg, want string }{
			{"a bad schedule", `"events":[{"schedule":"rate(0 minutes)"}]`, "rate"},
			{"a missing queue", `"events":[{"queue":"nowhere"}]`, "nowhere"},
			{"two sources in one event", `"events":[{"queue":"jobs","schedule":"rate(1 minute)"}]`, "exactly one"},
			{"too many retries", `"async":{"retries":11}`, "retries"},
		} {
			resp, body := s.do("PUT", "/v1/functions/ticker", strings.NewReader(`{"name":"ticker","runtime":"lambda","network":true,`+tc.cfg+`}`), true, "Content-Type", "application/json")
			wantError(t, tc.what, resp, body, 400, tc.want)
		}
		resp, body = s.do("PUT", "/v1/functions/ticker", strings.NewReader(`{"name":"ticker","runtime":"lambda","events":[{"queue":"jobs"}]}`), true, "Content-Type", "application/json")
		wantError(t, "a second consumer of a queue", resp, body, 409, "already triggers")
		// Nothing changed: ticker still has its two schedules.
		var f struct{ Events []map[string]any }
		s.getJSON("/v1/functions/ticker", &f)
		if len(f.Events) != 2 {
			t.Errorf("ticker's events after rejected changes = %v", f.Events)
		}
	})

	t.Run("the keyed event ran once", func(t *testing.T) {
		if c := col.count("event idem"); c != 1 {
			t.Fatalf("the event enqueued twice with one key ran %d times", c)
		}
	})
}

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestCrashLosesNothing kills the server with kill -9 while hundreds of
// async events and queue messages are accepted but not yet run, restarts it
// on the same data, and checks that every accepted one runs at least once,
// that nothing dead-lettered runs afterwards, and reports the duplicates.
func TestCrashLosesNothing(t *testing.T) {
	const events, messages, failing = 300, 300, 20
	col := newCollector(t)
	data := dataDir(t)
	s := startServer(t, data, "--retry-base", "100ms")
	dir := t.TempDir()
	writeManifest(t, dir, fmt.Sprintf(`queues:
  - name: crashq
functions:
  - name: crash
    runtime: lambda
    source: %[1]s
    network: true
    env: {COLLECT_URL: %[2]s}
    scale: {max: 3}
    events:
      - queue: crashq
        batchSize: 10
  - name: crash-fail
    runtime: lambda
    source: %[1]s
    network: true
    env: {COLLECT_URL: %[2]s}
    scale: {max: 2}
    async: {retries: 0}
`, abs(t, "testdata/collector"), col.url))
	s.mustCLI("deploy", dir)

	// Accept everything concurrently; a few events take a while so work
	// is in flight when the server dies.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 8 {
		wg.Go(func() {
			for i := g; i < events; i += 8 {
				status, out := s.asyncInvoke("crash", map[string]any{"id": fmt.Sprintf("e%d", i), "sleepMs": 5})
				if status != http.StatusAccepted {
					errs <- fmt.Errorf("event %d: %d %v", i, status, out)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := 0; i < messages; i += 50 {
			var batch []map[string]string
			for j := i; j < i+50; j++ {
				batch = append(batch, map[string]string{"body": fmt.Sprintf("q%d", j)})
			}
			b, _ := json.Marshal(map[string]any{"messages": batch})
			resp, body := s.do("POST", "/v1/queues/crashq/messages", bytes.NewReader(b), true)
			if resp.StatusCode != http.StatusOK {
				errs <- fmt.Errorf("send: %d %s", resp.StatusCode, body)
				return
			}
		}
	})
	wg.Go(func() {
		for i := range failing {
			if status, out := s.asyncInvoke("crash-fail", map[string]any{"id": fmt.Sprintf("f%d", i), "fail": true}); status != http.StatusAccepted {
				errs <- fmt.Errorf("failing event %d: %d %v", i, status, out)
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	executed := func() int {
		col.mu.Lock()
		defer col.mu.Unlock()
		return len(col.lines)
	}
	eventually(t, 60*time.Second, "some executions before the crash", func() bool { return executed() >= 30 })
	before := executed()
	s.kill()
	t.Logf("killed the server with kill -9 after %d executions of %d accepted", before, events+messages+failing)

	s = startServer(t, data, "--retry-base", "100ms")
	want := map[string]bool{}
	for i := range events {
		want[fmt.Sprintf("event e%d", i)] = true
	}
	for i := range messages {
		want[fmt.Sprintf("sqs q%d", i)] = true
	}
	for i := range failing {
		want[fmt.Sprintf("event f%d", i)] = true
	}
	missing := func() int {
		n := 0
		for l := range want {
			if col.count(l) == 0 {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(120 * time.Second)
	for missing() > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if m := missing(); m > 0 {
		t.Fatalf("%d accepted events or messages never ran after the restart", m)
	}
	var dl []deadLetter
	eventually(t, 60*time.Second, "every failing event dead-lettered", func() bool {
		dl = s.deadLetters("crash-fail")
		return len(dl) == failing
	})
	for _, d := range dl {
		var p struct{ ID string }
		_ = json.Unmarshal(d.Payload, &p)
		for _, at := range col.times("event " + p.ID) {
			if at.After(d.DeadLettered) {
				t.Errorf("%s ran at %s, after it was dead-lettered at %s", p.ID, at.Format(time.RFC3339Nano), d.DeadLettered.Format(time.RFC3339Nano))
			}
		}
	}
	dups := 0
	for l := range want {
		if c := col.count(l); c > 1 {
			dups += c - 1
		}
	}
	t.Logf("after kill -9 and restart: 0 lost of %d accepted, %d duplicate executions", len(want), dups)
}

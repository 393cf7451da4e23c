package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHTTPClientGoneReleasesSlot: a client that goes away in the middle
// of a streamed answer gives the instance's slot back (the proxy aborts the
// answer), so the next request is served, not queued behind a leaked slot.
func TestHTTPClientGoneReleasesSlot(t *testing.T) {
	s := startServer(t, dataDir(t))
	dir := t.TempDir()
	writeManifest(t, dir, fmt.Sprintf(`functions:
  - name: streamer
    runtime: http
    source: %s
    concurrency: 1
    timeout: 30s
    scale: {max: 1}
`, abs(t, "testdata/streamer")))
	s.mustCLI("deploy", dir)

	req, _ := http.NewRequest("GET", s.url+"/fn/streamer/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || line != "line 0\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	resp.Body.Close() // goes away with 99 lines to come
	http.DefaultClient.CloseIdleConnections()

	eventually(t, 10*time.Second, "the slot to be free", func() bool {
		st := s.stats("streamer")
		return num(st, "instances") == 1 && num(st, "busy") == 0
	})
	start := time.Now()
	resp, err = http.Get(s.url + "/fn/streamer/?n=2")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.Count(string(b), "\n") != 2 {
		t.Errorf("next request: %d %q after %s", resp.StatusCode, b, time.Since(start))
	}
}

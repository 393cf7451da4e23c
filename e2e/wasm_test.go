package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestWasm deploys WebAssembly functions from Go source (a CGI command
// module and a reactor) and a tiny non-Go module, and drives them through
// HTTP and the invoke API.
func TestWasm(t *testing.T) {
	data := dataDir(t)
	s := startServer(t, data)
	dir := t.TempDir()
	writeManifest(t, dir, fmt.Sprintf(`functions:
  - name: hello-wasm
    runtime: wasm
    source: %s
  - name: hello-reactor
    runtime: wasm
    source: %s
  - name: hello-reactor-b
    runtime: wasm
    source: %s
  - name: hello-tiny
    runtime: wasm
    handler: hello.wasm
    source: %s
    scale: {max: 50}
  - name: wasmprobe
    runtime: wasm
    source: %s
    memory: 128
    timeout: 1s
`, abs(t, "../examples/hello-wasm"), abs(t, "../examples/hello-reactor"), abs(t, "../examples/hello-reactor"), abs(t, "../examples/hello-tiny"), abs(t, "testdata/wasmprobe")))
	s.mustCLI("deploy", dir)

	t.Run("over HTTP", func(t *testing.T) {
		cases := []struct{ path, want string }{
			{"/fn/hello-wasm/x?name=ada", "Hello, ada! (from WebAssembly, GET /x)"},
			{"/fn/hello-reactor/y?name=ada", "Hello, ada! (from a WebAssembly reactor"},
			{"/fn/hello-tiny/", "Hello from a tiny WebAssembly module"},
		}
		for _, c := range cases {
			resp, body := s.do("GET", c.path, nil, false)
			if resp.StatusCode != 200 || !strings.Contains(string(body), c.want) {
				t.Errorf("GET %s = %d %q, want 200 containing %q", c.path, resp.StatusCode, body, c.want)
			}
		}
	})

	t.Run("over the invoke API", func(t *testing.T) {
		resp, body := s.invoke("hello-wasm", map[string]string{"k": "v"}, "?log=tail")
		if resp.StatusCode != 200 || !strings.Contains(string(body), `body={"k":"v"}`) {
			t.Fatalf("invoke hello-wasm: %d %q", resp.StatusCode, body)
		}
		resp, body = s.invoke("hello-reactor", map[string]string{"k": "v"}, "")
		if resp.StatusCode != 200 || !strings.Contains(string(body), "POST /") {
			t.Fatalf("invoke hello-reactor: %d %q", resp.StatusCode, body)
		}
		// A wasm function takes any bytes, not only JSON.
		resp, body = s.do("POST", "/v1/functions/hello-wasm/invoke", strings.NewReader("plain text, not JSON"), true)
		if resp.StatusCode != 200 || !strings.Contains(string(body), "body=plain text, not JSON") {
			t.Fatalf("invoke hello-wasm with plain text: %d %q", resp.StatusCode, body)
		}
	})

	t.Run("a command module starts fresh on every request", func(t *testing.T) {
		for i := 0; i < 3; i++ {
			_, body := s.do("GET", "/fn/wasmprobe/?op=count", nil, false)
			if string(body) != "requests=1" {
				t.Fatalf("request %d saw %q, want requests=1 (no state from earlier requests)", i, body)
			}
		}
	})

	t.Run("a reactor instance is reused, and only by its function", func(t *testing.T) {
		count := func(name string) int {
			_, body := s.do("GET", "/fn/"+name+"/", nil, false)
			var n int
			if i := strings.Index(string(body), "request "); i >= 0 {
				fmt.Sscanf(string(body[i:]), "request %d", &n)
			}
			return n
		}
		first := count("hello-reactor")
		if second := count("hello-reactor"); first < 1 || second != first+1 {
			t.Fatalf("reactor did not keep its state between requests: request %d then %d", first, second)
		}
		// The same code deployed as another function gets its own instances.
		if b := count("hello-reactor-b"); b != 1 {
			t.Fatalf("function hello-reactor-b's first request saw request %d: it shared an instance", b)
		}
	})

	t.Run("failures answer Lambda-style errors", func(t *testing.T) {
		for op, want := range map[string]string{"loop": "Sandbox.Timedout", "hog": "", "exit": "Runtime.ExitError"} {
			resp, body := s.do("GET", "/fn/wasmprobe/?op="+op, nil, false)
			if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), want) {
				t.Errorf("op %s: %d %s, want 502 naming %q", op, resp.StatusCode, body, want)
			}
		}
		_, body := s.do("GET", "/fn/wasmprobe/?op=count", nil, false)
		if string(body) != "requests=1" {
			t.Fatalf("after the failures: %q", body)
		}
	})

	t.Run("a thousand concurrent requests succeed or get a clean 429", func(t *testing.T) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		counts := map[int]int{}
		sem := make(chan struct{}, 200)
		for i := 0; i < 1000; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				req, _ := http.NewRequest("GET", s.url+"/fn/hello-tiny/", nil)
				resp, err := http.DefaultClient.Do(req)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					counts[-1]++
					return
				}
				resp.Body.Close()
				if resp.StatusCode == 429 && resp.Header.Get("Retry-After") == "" {
					counts[-2]++
					return
				}
				counts[resp.StatusCode]++
			}()
		}
		wg.Wait()
		if counts[200]+counts[429] != 1000 || counts[200] == 0 {
			t.Fatalf("outcomes %v: want only 200s and 429s with Retry-After", counts)
		}
	})

	t.Run("restart reloads modules from the compilation cache", func(t *testing.T) {
		s.stop()
		s2 := startServer(t, data)
		resp, body := s2.do("GET", "/fn/hello-wasm/?name=again", nil, false)
		if resp.StatusCode != 200 || !strings.Contains(string(body), "Hello, again!") {
			t.Fatalf("after restart: %d %q", resp.StatusCode, body)
		}
		eventually(t, 10*time.Second, "the module to be reported as loaded from the cache", func() bool {
			return strings.Contains(s2.logs.String(), `"msg":"wasm module ready","component":"invoke","function":"hello-wasm","kind":"command","from_cache":true`)
		})
	})
}

package e2e

import (
	"archive/zip"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"mime/multipart"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"aloft/internal/testnet"
)

// TestPlatform deploys the examples and the probe function once and drives
// them through every entry point. Subtests share the server because each
// Go function build takes seconds.
func TestPlatform(t *testing.T) {
	data := dataDir(t)
	s := startServer(t, data)

	out := s.mustCLI("deploy", abs(t, "../examples"))
	for _, name := range []string{"hello-go", "hello-node", "hello-python", "hello-http"} {
		if !strings.Contains(out, s.url+"/fn/"+name+"/") {
			t.Fatalf("deploy output lacks the URL of %s:\n%s", name, out)
		}
	}
	probeDir := t.TempDir()
	writeManifest(t, probeDir, fmt.Sprintf(`functions:
  - name: probe
    runtime: lambda
    source: %[1]s
    memory: 128
    timeout: 2s
    scale: {max: 6, idle: 1s}
  - name: probe-net
    runtime: lambda
    source: %[1]s
    network: true
    timeout: 10s
`, abs(t, "testdata/probe")))
	s.mustCLI("deploy", probeDir)

	t.Run("examples over the invoke API", func(t *testing.T) {
		for _, name := range []string{"hello-go", "hello-node", "hello-python"} {
			out := s.mustCLI("invoke", name, `{"k":"v"}`)
			if !strings.Contains(out, `"echo"`) || !strings.Contains(out, `"k"`) {
				t.Errorf("%s: invoke printed %q, want an echo of the payload", name, out)
			}
		}
		resp, body := s.invoke("hello-http", map[string]string{"k": "v"}, "")
		if resp.StatusCode != 200 || !strings.Contains(string(body), `POST / body={"k":"v"}`) {
			t.Errorf("hello-http invoke: %d %q", resp.StatusCode, body)
		}
		if resp.Header.Get("X-Aloft-Invocation-Id") == "" {
			t.Error("invoke response has no X-Aloft-Invocation-Id")
		}
	})

	t.Run("a stopping http instance gets SIGTERM and its grace", func(t *testing.T) {
		if resp, body := s.do("GET", "/fn/hello-http/", nil, false); resp.StatusCode != 200 {
			t.Fatalf("GET /fn/hello-http/: %d %s", resp.StatusCode, body)
		}
		// A config change drains the instance: it logs its SIGTERM, then
		// the end of its graceful shutdown.
		resp, body := s.do("PUT", "/v1/functions/hello-http", strings.NewReader(
			`{"runtime":"http","concurrency":8,"scale":{"max":4,"idle":"2m"},"env":{"DRAINED":"1"}}`),
			true, "Content-Type", "application/json")
		if resp.StatusCode != 200 {
			t.Fatalf("config update: %d %s", resp.StatusCode, body)
		}
		eventually(t, 20*time.Second, "hello-http to log its graceful stop", func() bool {
			out, _, _ := s.cli("logs", "hello-http")
			return strings.Contains(out, "SIGTERM: finishing the requests") && strings.Contains(out, "stopped")
		})
	})

	t.Run("a stopping lambda instance with an extension gets SIGTERM", func(t *testing.T) {
		// hello-go registers aws-lambda-go's SIGTERM extension
		// (lambda.WithEnableSIGTERM), so its instance is told, as on Lambda.
		if resp, body := s.do("GET", "/hello/term", nil, false); resp.StatusCode != 200 {
			t.Fatalf("GET /hello/term: %d %s", resp.StatusCode, body)
		}
		resp, body := s.do("PUT", "/v1/functions/hello-go", strings.NewReader(
			`{"runtime":"lambda","timeout":"10s","routes":["GET /hello/{name}"],"env":{"DRAINED":"1"}}`),
			true, "Content-Type", "application/json")
		if resp.StatusCode != 200 {
			t.Fatalf("config update: %d %s", resp.StatusCode, body)
		}
		eventually(t, 20*time.Second, "hello-go to log its SIGTERM", func() bool {
			out, _, _ := s.cli("logs", "hello-go")
			return strings.Contains(out, "SIGTERM: the instance is stopping")
		})
	})

	t.Run("examples over HTTP", func(t *testing.T) {
		cases := []struct{ path, want string }{
			{"/fn/hello-go/?name=ada", "Hello, ada! (from Go"},
			{"/hello/grace", "Hello, grace! (from Go"},
			{"/fn/hello-node/?name=ada", "Hello, ada! (from Node"},
			{"/fn/hello-python/?name=ada", "Hello, ada! (from Python"},
			{"/fn/hello-http/some/path", "Hello from an http function: GET /some/path"},
		}
		for _, c := range cases {
			resp, body := s.do("GET", c.path, nil, false)
			if resp.StatusCode != 200 || !strings.Contains(string(body), c.want) {
				t.Errorf("GET %s = %d %q, want 200 containing %q", c.path, resp.StatusCode, body, c.want)
			}
			if resp.Header.Get("X-Aloft-Invocation-Id") == "" {
				t.Errorf("GET %s: no X-Aloft-Invocation-Id", c.path)
			}
		}
		resp, body := s.do("GET", "/no/such/route", nil, false)
		if resp.StatusCode != 404 || !strings.Contains(string(body), `"error"`) {
			t.Errorf("unknown route = %d %q, want a 404 JSON error", resp.StatusCode, body)
		}
	})

	t.Run("function error is 200 with the error header", func(t *testing.T) {
		resp, body := s.invoke("probe", map[string]string{"op": "fail", "arg": "x"}, "")
		if resp.StatusCode != 200 || resp.Header.Get("X-Aloft-Function-Error") != "Unhandled" {
			t.Fatalf("status %d, header %q", resp.StatusCode, resp.Header.Get("X-Aloft-Function-Error"))
		}
		var e struct{ ErrorMessage, ErrorType string }
		if err := json.Unmarshal(body, &e); err != nil || e.ErrorMessage != "failed on purpose: x" {
			t.Fatalf("error body = %s", body)
		}
	})

	t.Run("log tail and logs", func(t *testing.T) {
		resp, _ := s.invoke("probe", map[string]any{"op": "print", "n": 3}, "?log=tail")
		id := resp.Header.Get("X-Aloft-Invocation-Id")
		tailB, err := base64.StdEncoding.DecodeString(resp.Header.Get("X-Aloft-Log-Result"))
		if err != nil {
			t.Fatal(err)
		}
		tail := string(tailB)
		for _, want := range []string{"line 0 of " + id, "line 2 of " + id, "START RequestId: " + id, "REPORT RequestId: " + id} {
			if !strings.Contains(tail, want) {
				t.Errorf("log tail lacks %q:\n%s", want, tail)
			}
		}
		// The CLI shows the same lines from the log stream.
		eventually(t, 10*time.Second, "lines in aloft logs", func() bool {
			out, _, err := s.cli("logs", "probe", "--since", "5m")
			return err == nil && strings.Contains(out, "line 2 of "+id)
		})
		out, errOut, err := s.cli("invoke", "probe", `{"op":"print","n":1}`, "--log")
		if err != nil || !strings.Contains(errOut, "line 0 of") || !strings.Contains(out, "printed") {
			t.Errorf("invoke --log: err %v, stdout %q, stderr %q", err, out, errOut)
		}
	})

	t.Run("burst starts no more instances than requests", func(t *testing.T) {
		eventually(t, 20*time.Second, "probe to scale to zero", func() bool {
			return num(s.stats("probe"), "instances") == 0
		})
		before := num(s.stats("probe"), "started")
		const n = 4
		var wg sync.WaitGroup
		errs := make(chan string, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, body := s.invoke("probe", map[string]any{"op": "sleep", "n": 300}, "")
				if resp.StatusCode != 200 || resp.Header.Get("X-Aloft-Function-Error") != "" {
					errs <- fmt.Sprintf("%d %s", resp.StatusCode, body)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error("burst request failed:", e)
		}
		started := num(s.stats("probe"), "started") - before
		if started < 1 || started > n {
			t.Fatalf("a burst of %d started %d instances, want 1..%d", n, started, n)
		}
	})

	t.Run("scale to zero after the keep-alive", func(t *testing.T) {
		s.invoke("probe", map[string]string{"op": "echo"}, "")
		if got := num(s.stats("probe"), "instances"); got < 1 {
			t.Fatalf("after an invoke: %d instances, want >= 1", got)
		}
		eventually(t, 20*time.Second, "idle instances to stop", func() bool {
			return num(s.stats("probe"), "instances") == 0
		})
	})

	t.Run("timeout kills the instance and answers an error", func(t *testing.T) {
		resp, body := s.invoke("probe", map[string]any{"op": "sleep", "n": 10000}, "")
		if resp.Header.Get("X-Aloft-Function-Error") == "" || !strings.Contains(string(body), "Sandbox.Timedout") ||
			!strings.Contains(string(body), "Task timed out after 2.00 seconds") {
			t.Fatalf("timeout answer: %d %s", resp.StatusCode, body)
		}
		resp, body = s.invoke("probe", map[string]string{"op": "echo"}, "")
		if resp.StatusCode != 200 || resp.Header.Get("X-Aloft-Function-Error") != "" {
			t.Fatalf("invoke after timeout: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("crash is reported and the instance replaced", func(t *testing.T) {
		resp, body := s.invoke("probe", map[string]string{"op": "crash"}, "?log=tail")
		if resp.Header.Get("X-Aloft-Function-Error") == "" || !strings.Contains(string(body), "Runtime.ExitError") ||
			!strings.Contains(string(body), "exit status 3") {
			t.Fatalf("crash answer: %d %s", resp.StatusCode, body)
		}
		tail, _ := base64.StdEncoding.DecodeString(resp.Header.Get("X-Aloft-Log-Result"))
		if !strings.Contains(string(tail), "about to crash") {
			t.Errorf("crash log tail lacks the function's last words:\n%s", tail)
		}
		resp, body = s.invoke("probe", map[string]string{"op": "echo"}, "")
		if resp.StatusCode != 200 || resp.Header.Get("X-Aloft-Function-Error") != "" {
			t.Fatalf("invoke after crash: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("out of memory is reported", func(t *testing.T) {
		if !sandboxed {
			t.Skip("memory limits need the sandbox: " + sandboxWhy)
		}
		resp, body := s.invoke("probe", map[string]string{"op": "oom"}, "")
		if resp.Header.Get("X-Aloft-Function-Error") == "" || !strings.Contains(string(body), "Runtime.OutOfMemory") {
			t.Fatalf("oom answer: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("sandbox isolation", func(t *testing.T) {
		if !sandboxed {
			t.Skip("isolation needs the sandbox: " + sandboxWhy)
		}
		check := func(payload map[string]string, want func(map[string]any) bool, what string) {
			t.Helper()
			resp, body := s.invoke("probe", payload, "")
			var got map[string]any
			_ = json.Unmarshal(body, &got)
			if resp.StatusCode != 200 || !want(got) {
				t.Errorf("%s: %d %s", what, resp.StatusCode, body)
			}
		}
		hasErr := func(m map[string]any) bool { e, _ := m["error"].(string); return e != "" }
		check(map[string]string{"op": "read", "arg": "/etc/shadow"}, hasErr, "reading /etc/shadow must fail")
		check(map[string]string{"op": "read", "arg": filepath.Join(data, "token")}, hasErr, "reading the data dir must fail")
		check(map[string]string{"op": "write", "arg": "/var/task/x"}, hasErr, "writing the code dir must fail")
		check(map[string]string{"op": "write", "arg": "/tmp/x"}, func(m map[string]any) bool { return !hasErr(m) }, "writing /tmp must work")
		check(map[string]string{"op": "procs"}, func(m map[string]any) bool {
			pids, _ := m["pids"].([]any)
			return len(pids) > 0 && len(pids) < 5
		}, "only the instance's own processes are visible")
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		check(map[string]string{"op": "dial", "arg": ln.Addr().String()}, hasErr, "dialing a host loopback port must fail with network off")

		// With network: the outside world, but neither the host's loopback
		// (the API, other instances' Runtime APIs) nor the host.
		outside, err := testnet.New()
		if err != nil {
			t.Fatal(err)
		}
		defer outside.Close()
		oln, err := outside.Listen(0)
		if err != nil {
			t.Fatal(err)
		}
		defer oln.Close()
		go func() {
			for {
				c, err := oln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		checkNet := func(addr string, want func(map[string]any) bool, what string) {
			t.Helper()
			resp, body := s.invoke("probe-net", map[string]string{"op": "dial", "arg": addr}, "")
			var got map[string]any
			_ = json.Unmarshal(body, &got)
			if resp.StatusCode != 200 || !want(got) {
				t.Errorf("%s: %d %s", what, resp.StatusCode, body)
			}
		}
		checkNet(oln.Addr().String(), func(m map[string]any) bool { return !hasErr(m) }, "dialing the outside must work with network on")
		checkNet(ln.Addr().String(), hasErr, "dialing a host loopback port must fail with network on")
		checkNet(strings.TrimPrefix(s.url, "http://"), hasErr, "dialing the Aloft API must fail with network on")
		all, err := net.Listen("tcp", ":0") // every address of the host
		if err != nil {
			t.Fatal(err)
		}
		defer all.Close()
		_, port, _ := net.SplitHostPort(all.Addr().String())
		checkNet(net.JoinHostPort(outside.HostAddr.String(), port), hasErr, "dialing the host's own address must fail with network on")
		check(map[string]string{"op": "env"}, func(m map[string]any) bool {
			uid, _ := m["uid"].(float64)
			env, _ := m["env"].([]any)
			for _, e := range env {
				if s, _ := e.(string); strings.HasPrefix(s, "ALOFT_TOKEN=") || strings.HasPrefix(s, "_LAMBDA_SERVER_PORT=") {
					return false
				}
			}
			return uid != 0 && len(env) > 0
		}, "an unprivileged uid and a scrubbed environment")
	})

	t.Run("user mistakes are 4xx JSON and change nothing", func(t *testing.T) {
		before := s.mustCLI("ls")
		check := func(what string, resp *http.Response, body []byte, status int) {
			t.Helper()
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if resp.StatusCode != status || json.Unmarshal(body, &e) != nil || e.Error.Message == "" {
				t.Errorf("%s: got %d %s, want %d with a JSON error", what, resp.StatusCode, body, status)
			}
		}
		resp, body := s.invoke("no-such-fn", map[string]string{}, "")
		check("unknown function", resp, body, 404)
		resp, body = s.invoke("Bad_Name", map[string]string{}, "")
		check("bad name", resp, body, 400)
		resp, body = s.do("POST", "/v1/functions/probe/invoke", bytes.NewReader(make([]byte, 7<<20)), true)
		check("oversized payload", resp, body, 413)
		resp, body = s.do("POST", "/v1/functions/probe/invoke", strings.NewReader(`{"cmd":`), true)
		check("a payload that is not JSON for a lambda function", resp, body, 400)
		resp, body = s.do("POST", "/v1/functions/probe/invoke?qualifier=no-such-alias", strings.NewReader(`{}`), true)
		check("unknown alias", resp, body, 404)
		resp, body = s.do("GET", "/v1/functions", nil, false)
		check("missing token", resp, body, 401)
		resp, body = s.do("PUT", "/v1/functions/newfn", strings.NewReader(`{"runtime":`), true, "Content-Type", "application/json")
		check("malformed JSON", resp, body, 400)
		resp, body = deployRaw(t, s, "newfn", `{"runtime":"lambda"}`, []byte("this is not an archive"))
		check("bad archive", resp, body, 400)
		resp, body = deployRaw(t, s, "newfn", `{"runtime":"lambda"}`, zipOf(t, map[string]string{"README": "no bootstrap here"}))
		check("missing bootstrap", resp, body, 400)
		resp, body = deployRaw(t, s, "newfn", `{"runtime":"node","handler":"index.handler"}`, zipOf(t, map[string]string{"other.js": ""}))
		check("missing node handler", resp, body, 400)
		resp, body = deployRaw(t, s, "newfn", `{"runtime":"wasm","handler":"main.wasm"}`, zipOf(t, map[string]string{"other.wasm": "\x00asm\x01\x00\x00\x00"}))
		check("missing wasm module", resp, body, 400)
		resp, body = deployRaw(t, s, "newfn", `{"runtime":"wasm","handler":"main.wasm"}`, zipOf(t, map[string]string{"main.wasm": "(module)"}))
		check("a wasm module in text form", resp, body, 400)
		if !strings.Contains(string(body), "not a WebAssembly binary") {
			t.Errorf("a wasm module in text form: %s, want it called not a WebAssembly binary", body)
		}
		resp, body = deployRaw(t, s, "newfn", `{"runtime":"lambda","memory":64}`, zipOf(t, map[string]string{"bootstrap": "#!/bin/sh"}))
		check("memory out of range", resp, body, 400)
		resp, body = deployRaw(t, s, "newfn", `{"runtime":"lambda","routes":["GET /hello/{name}"]}`, zipOf(t, map[string]string{"bootstrap": "#!/bin/sh"}))
		check("route taken by another function", resp, body, 409)
		resp, body = deployRaw(t, s, "newfn", `{"runtime":"lambda","routes":["GET /hello/{who}"]}`, zipOf(t, map[string]string{"bootstrap": "#!/bin/sh"}))
		check("route taken by another function, its wildcard named otherwise", resp, body, 409)
		resp, body = deployRaw(t, s, "newfn", `{"runtime":"lambda"}`, zipSlip(t))
		check("archive escaping its directory", resp, body, 400)
		if after := s.mustCLI("ls"); after != before {
			t.Errorf("rejected requests changed the function list:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})

	t.Run("a bootstrap that cannot run is a function error", func(t *testing.T) {
		for _, tc := range []struct{ name, body, want string }{
			{"not-a-program", "just text\n", "neither a Linux executable"},
			{"no-interpreter", "#!/no/such/shell\necho hi\n", "interpreter"},
		} {
			resp, body := deployRaw(t, s, tc.name, `{"runtime":"lambda"}`, zipExecutable(t, "bootstrap", tc.body))
			if resp.StatusCode != 201 {
				t.Fatalf("deploy %s: %d %s", tc.name, resp.StatusCode, body)
			}
			resp, body = s.invoke(tc.name, map[string]string{}, "")
			var e struct {
				Type    string `json:"errorType"`
				Message string `json:"errorMessage"`
			}
			if resp.StatusCode != 200 || resp.Header.Get("X-Aloft-Function-Error") == "" || json.Unmarshal(body, &e) != nil ||
				e.Type != "Runtime.InvalidEntrypoint" || !strings.Contains(e.Message, tc.want) {
				t.Errorf("invoke %s: %d %s, want a Runtime.InvalidEntrypoint function error saying %q", tc.name, resp.StatusCode, body, tc.want)
			}
			// Over HTTP, as API Gateway answers for a function error.
			resp, body = s.do("GET", "/fn/"+tc.name+"/", nil, false)
			if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("GET /fn/%s/: %d %s, want 502", tc.name, resp.StatusCode, body)
			}
		}
		// An http function's caller gets the error's type and text.
		resp, body := deployRaw(t, s, "http-not-a-program", `{"runtime":"http"}`, zipExecutable(t, "bootstrap", "just text\n"))
		if resp.StatusCode != 201 {
			t.Fatalf("deploy http-not-a-program: %d %s", resp.StatusCode, body)
		}
		resp, body = s.do("GET", "/fn/http-not-a-program/", nil, false)
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if resp.StatusCode != http.StatusBadGateway || json.Unmarshal(body, &e) != nil ||
			!strings.HasPrefix(e.Error.Message, "the function could not start: Runtime.InvalidEntrypoint: exec ") {
			t.Errorf("GET /fn/http-not-a-program/: %d %s, want 502 naming Runtime.InvalidEntrypoint", resp.StatusCode, body)
		}
	})

	t.Run("a config change reaches new instances", func(t *testing.T) {
		envOf := func() string {
			_, body := s.invoke("probe", map[string]string{"op": "env"}, "")
			return string(body)
		}
		if strings.Contains(envOf(), "STAGE=") {
			t.Fatal("STAGE is set before the change")
		}
		resp, body := s.do("PUT", "/v1/functions/probe", strings.NewReader(
			`{"runtime":"lambda","timeout":"2s","scale":{"max":6,"idle":"1s"},"env":{"STAGE":"two","TZ":"Europe/Paris","AWS_REGION":"eu-west-3"}}`),
			true, "Content-Type", "application/json")
		if resp.StatusCode != 200 {
			t.Fatalf("config update: %d %s", resp.StatusCode, body)
		}
		got := envOf()
		if !strings.Contains(got, "STAGE=two") {
			t.Fatalf("after the change the function still sees %s", got)
		}
		// The function's values replace Aloft's defaults: a process sees
		// only the first of two entries of one key.
		for _, kv := range []string{"TZ=Europe/Paris", "AWS_REGION=eu-west-3"} {
			key, _, _ := strings.Cut(kv, "=")
			if !strings.Contains(got, `"`+kv+`"`) || strings.Count(got, `"`+key+"=") != 1 {
				t.Errorf("want exactly one %s in the environment, got %s", kv, got)
			}
		}
	})

	t.Run("versions and aliases", func(t *testing.T) {
		s.mustCLI("publish", "hello-node")
		s.mustCLI("alias", "set", "hello-node", "prod", "1")
		resp, body := s.invoke("hello-node", map[string]string{"v": "1"}, "?qualifier=prod")
		if resp.StatusCode != 200 || resp.Header.Get("X-Aloft-Executed-Version") != "1" {
			t.Fatalf("invoke prod: %d %s version %q", resp.StatusCode, body, resp.Header.Get("X-Aloft-Executed-Version"))
		}
		if !strings.Contains(string(body), `"function":"hello-node"`) {
			t.Fatalf("invoke prod body: %s", body)
		}
		// NAME:QUALIFIER, as Lambda's Invoke takes it, from the API and the CLI.
		resp, body = s.invoke("hello-node:prod", map[string]string{"v": "1"}, "")
		if resp.StatusCode != 200 || resp.Header.Get("X-Aloft-Executed-Version") != "1" {
			t.Errorf("invoke hello-node:prod: %d %s version %q", resp.StatusCode, body, resp.Header.Get("X-Aloft-Executed-Version"))
		}
		if resp, body := s.invoke("hello-node:prod", map[string]string{}, "?qualifier=1"); resp.StatusCode != 400 {
			t.Errorf("invoke hello-node:prod?qualifier=1: %d %s, want 400", resp.StatusCode, body)
		}
		if out := s.mustCLI("invoke", "hello-node:prod", `{"via":"cli"}`); !strings.Contains(out, `"via":"cli"`) {
			t.Errorf("aloft invoke hello-node:prod: %s", out)
		}
		// Over HTTP: /fn/NAME:QUALIFIER/ runs that version.
		for path, version := range map[string]string{"/fn/hello-node/": "$LATEST", "/fn/hello-node:prod/": "1", "/fn/hello-node:1/x": "1"} {
			resp, body := s.do("GET", path, nil, false)
			if resp.StatusCode != 200 || resp.Header.Get("X-Aloft-Executed-Version") != version {
				t.Errorf("GET %s: %d %s, version %q; want 200 from version %s", path, resp.StatusCode, body, resp.Header.Get("X-Aloft-Executed-Version"), version)
			}
		}
		// Routes can run an alias, as an API Gateway integration can.
		resp, body = s.do("PUT", "/v1/functions/hello-node", strings.NewReader(
			`{"runtime":"node","handler":"index.handler","routes":["GET /stable/{x}"],"routeQualifier":"prod","env":{"V":"2"}}`),
			true, "Content-Type", "application/json")
		if resp.StatusCode != 200 {
			t.Fatalf("config with routeQualifier: %d %s", resp.StatusCode, body)
		}
		if resp, body := s.do("GET", "/stable/a", nil, false); resp.StatusCode != 200 || resp.Header.Get("X-Aloft-Executed-Version") != "1" {
			t.Errorf("GET /stable/a: %d %s, version %q; want 200 from version 1 (prod)", resp.StatusCode, body, resp.Header.Get("X-Aloft-Executed-Version"))
		}
		resp, body = s.do("PUT", "/v1/functions/hello-node", strings.NewReader(
			`{"runtime":"node","handler":"index.handler","routes":["GET /stable/{x}"],"routeQualifier":"canary"}`),
			true, "Content-Type", "application/json")
		if resp.StatusCode != 200 {
			t.Fatalf("config with routeQualifier canary: %d %s", resp.StatusCode, body)
		}
		if resp, body := s.do("GET", "/stable/a", nil, false); resp.StatusCode != 404 || !strings.Contains(string(body), "canary") {
			t.Errorf("GET /stable/a with no alias canary: %d %s; want a 404 naming the alias", resp.StatusCode, body)
		}
		for path, status := range map[string]int{"/fn/hello-node:9/": 404, "/fn/hello-node:nope/": 404, "/fn/hello-node:/": 400, "/fn/hello-node:a%20b/": 400} {
			resp, body := s.do("GET", path, nil, false)
			var e struct {
				Error struct{ Message string } `json:"error"`
			}
			if resp.StatusCode != status || json.Unmarshal(body, &e) != nil || e.Error.Message == "" {
				t.Errorf("GET %s: %d %s, want %d with a JSON error", path, resp.StatusCode, body, status)
			}
		}
	})

	t.Run("scale.min keeps instances warm before any request", func(t *testing.T) {
		dir := t.TempDir()
		writeManifest(t, dir, fmt.Sprintf(`functions:
  - name: warm
    runtime: lambda
    source: %s
    scale: {min: 2, max: 3, idle: 1s}
`, abs(t, "testdata/probe")))
		s.mustCLI("deploy", dir)
		warm := func(s *server, version string, want int) {
			t.Helper()
			eventually(t, 30*time.Second, fmt.Sprintf("%d warm instances of warm:%s", want, version), func() bool {
				return num(s.versionStats("warm", version), "instances") == want
			})
		}
		warm(s, "$LATEST", 2)
		// An aliased version keeps its minimum too; without its alias it
		// scales to zero.
		s.mustCLI("publish", "warm")
		s.mustCLI("alias", "set", "warm", "live", "1")
		warm(s, "1", 2)
		s.mustCLI("alias", "rm", "warm", "live")
		warm(s, "1", 0)
		s.mustCLI("alias", "set", "warm", "live", "1") // for the restart below
	})

	t.Run("restart keeps functions", func(t *testing.T) {
		s.stop()
		s2 := startServer(t, data)
		// The warm minimum is back without a request.
		for _, version := range []string{"$LATEST", "1"} {
			eventually(t, 30*time.Second, "warm instances of warm:"+version+" after the restart", func() bool {
				return num(s2.versionStats("warm", version), "instances") == 2
			})
		}
		s2.mustCLI("rm", "warm")
		resp, body := s2.invoke("probe", map[string]string{"op": "echo"}, "")
		if resp.StatusCode != 200 || resp.Header.Get("X-Aloft-Function-Error") != "" {
			t.Fatalf("invoke after restart: %d %s", resp.StatusCode, body)
		}
		resp, body = s2.do("GET", "/hello/again", nil, false)
		if resp.StatusCode != 200 || !strings.Contains(string(body), "Hello, again!") {
			t.Fatalf("route after restart: %d %s", resp.StatusCode, body)
		}
		out := s2.mustCLI("invoke", "hello-node", "{}", "--qualifier", "prod")
		if !strings.Contains(out, "hello-node") {
			t.Fatalf("alias after restart: %s", out)
		}
	})
}

// deployRaw sends a multipart deploy with the given config and code bytes.
func deployRaw(t *testing.T, s *server, name, config string, code []byte) (*http.Response, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	cw, _ := mw.CreateFormField("config")
	io.WriteString(cw, config)
	fw, _ := mw.CreateFormFile("code", "code.zip")
	fw.Write(code)
	mw.Close()
	return s.do("PUT", "/v1/functions/"+name, &buf, true, "Content-Type", mw.FormDataContentType())
}

func zipOf(t *testing.T, files map[string]string) []byte { return zipFiles(t, files, 0) }

// zipExecutable is a zip of one executable file.
func zipExecutable(t *testing.T, name, content string) []byte {
	return zipFiles(t, map[string]string{name: content}, 0o755)
}

// zipFiles zips files, with mode when it is not 0 (else with none).
func zipFiles(t *testing.T, files map[string]string, mode fs.FileMode) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, content := range files {
		h := &zip.FileHeader{Name: name, Method: zip.Deflate}
		if mode != 0 {
			h.SetMode(mode)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, content)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zipSlip(t *testing.T) []byte {
	return zipOf(t, map[string]string{"../../escaped": "x", "bootstrap": "#!/bin/sh"})
}

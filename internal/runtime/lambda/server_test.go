package lambda_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"aloft/internal/fn"
	"aloft/internal/runtime/lambda"
)

var goFunction string // path of the built testdata/gofn

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "lambda-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	goFunction = filepath.Join(dir, "bootstrap")
	cmd := exec.Command("go", "build", "-o", goFunction, "./testdata/gofn")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build testdata/gofn: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// startServer serves a Server on 127.0.0.1:0 until the test ends.
func startServer(t testing.TB, cfg lambda.Config) (*lambda.Server, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := lambda.NewServer(cfg)
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s, l.Addr().String()
}

// startProcess runs the runtime process against addr until the test ends.
// It returns a channel closed when the process exits.
func startProcess(t testing.TB, addr string, name string, args ...string) <-chan struct{} {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = []string{
		"PATH=/usr/bin:/bin",
		"AWS_LAMBDA_RUNTIME_API=" + addr,
		"AWS_LAMBDA_FUNCTION_NAME=testfn",
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128",
	}
	out := &testWriter{t: t}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		out.stop()
	})
	return exited
}

type testWriter struct {
	mu      sync.Mutex
	t       testing.TB
	stopped bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.t.Logf("function: %s", bytes.TrimRight(p, "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}

func startGo(t testing.TB, cfg lambda.Config) *lambda.Server {
	t.Helper()
	s, addr := startServer(t, cfg)
	startProcess(t, addr, goFunction)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.WaitReady(ctx); err != nil {
		t.Fatalf("wait ready: %v", err)
	}
	return s
}

var invocations atomic.Int64

func newInvocation(payload string) *fn.Invocation {
	n := invocations.Add(1)
	return &fn.Invocation{
		ID:       fmt.Sprintf("req-%d", n),
		Function: "testfn",
		Version:  "$LATEST",
		ARN:      "arn:aws:lambda:local:000000000000:function:testfn",
		Payload:  []byte(payload),
		Deadline: time.Now().Add(time.Minute),
		TraceID:  fmt.Sprintf("Root=1-00000000-%024d;Sampled=0", n),
	}
}

func invoke(t *testing.T, s *lambda.Server, inv *fn.Invocation) *fn.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := s.Invoke(ctx, inv)
	if err != nil {
		t.Fatalf("invoke %s: %v", inv.Payload, err)
	}
	return res
}

type errorBody struct {
	Message    string `json:"errorMessage"`
	Type       string `json:"errorType"`
	StackTrace []any  `json:"stackTrace"`
}

func decodeError(t *testing.T, res *fn.Result) errorBody {
	t.Helper()
	if !res.FunctionError {
		t.Fatalf("result is not a function error: %s", res.Payload)
	}
	var e errorBody
	if err := json.Unmarshal(res.Payload, &e); err != nil {
		t.Fatalf("error payload %q: %v", res.Payload, err)
	}
	return e
}

func TestGoFunction(t *testing.T) {
	s := startGo(t, lambda.Config{})

	t.Run("echo", func(t *testing.T) {
		for _, data := range []string{`{"a":[1,2,3],"b":"é"}`, `"x"`, `null`} {
			res := invoke(t, s, newInvocation(`{"op":"echo","data":`+data+`}`))
			if res.FunctionError || string(res.Payload) != data {
				t.Errorf("echo %s = %s (function error %v)", data, res.Payload, res.FunctionError)
			}
		}
	})
	t.Run("function error", func(t *testing.T) {
		res := invoke(t, s, newInvocation(`{"op":"error"}`))
		e := decodeError(t, res)
		if e.Type != "errorString" || e.Message != "boom" {
			t.Errorf("error = %+v, want errorString boom", e)
		}
	})
	t.Run("context", func(t *testing.T) {
		inv := newInvocation(`{"op":"info"}`)
		inv.Deadline = time.UnixMilli(time.Now().Add(42 * time.Second).UnixMilli())
		inv.ClientContext = `{"Client":{"app_title":"myapp"},"env":{},"custom":{}}`
		res := invoke(t, s, inv)
		var got struct {
			RequestID    string `json:"request_id"`
			ARN          string `json:"arn"`
			FunctionName string `json:"function_name"`
			TraceEnv     string `json:"trace_env"`
			DeadlineMs   int64  `json:"deadline_ms"`
			HasDeadline  bool   `json:"has_deadline"`
			ClientApp    string `json:"client_app"`
		}
		if err := json.Unmarshal(res.Payload, &got); err != nil {
			t.Fatalf("%s: %v", res.Payload, err)
		}
		if got.RequestID != inv.ID || got.ARN != inv.ARN || got.FunctionName != "testfn" ||
			got.TraceEnv != inv.TraceID || got.DeadlineMs != inv.Deadline.UnixMilli() ||
			!got.HasDeadline || got.ClientApp != "myapp" {
			t.Errorf("context = %+v, invocation = %+v", got, inv)
		}
	})
	t.Run("deadline passes in the function", func(t *testing.T) {
		inv := newInvocation(`{"op":"wait"}`)
		inv.Deadline = time.Now().Add(50 * time.Millisecond)
		e := decodeError(t, invoke(t, s, inv))
		if e.Message != context.DeadlineExceeded.Error() {
			t.Errorf("error = %+v, want %q", e, context.DeadlineExceeded)
		}
	})
	t.Run("still serves after errors", func(t *testing.T) {
		res := invoke(t, s, newInvocation(`{"op":"echo","data":1}`))
		if string(res.Payload) != "1" {
			t.Errorf("echo = %s", res.Payload)
		}
	})
}

func TestGoFunctionPanic(t *testing.T) {
	s, addr := startServer(t, lambda.Config{})
	exited := startProcess(t, addr, goFunction)
	res := invoke(t, s, newInvocation(`{"op":"panic"}`))
	e := decodeError(t, res)
	if e.Type != "string" || e.Message != "oops" || len(e.StackTrace) == 0 {
		t.Errorf("panic error = %+v, want type string, message oops, a stack trace", e)
	}
	<-exited // aws-lambda-go exits after reporting a panic
}

func TestResponseTooLarge(t *testing.T) {
	s, addr := startServer(t, lambda.Config{MaxResponse: 1000})
	exited := startProcess(t, addr, goFunction)
	res := invoke(t, s, newInvocation(`{"op":"big","size":998}`)) // 1000 with quotes
	if res.FunctionError || len(res.Payload) != 1000 {
		t.Fatalf("response of exactly the limit: function error %v, %d bytes", res.FunctionError, len(res.Payload))
	}
	res = invoke(t, s, newInvocation(`{"op":"big","size":999}`))
	if e := decodeError(t, res); e.Type != "Function.ResponseSizeTooLarge" {
		t.Errorf("error = %+v, want Function.ResponseSizeTooLarge", e)
	}
	<-exited // aws-lambda-go exits when its response is refused
}

func TestResponseTooLargeDefault(t *testing.T) {
	s := startGo(t, lambda.Config{})
	res := invoke(t, s, newInvocation(fmt.Sprintf(`{"op":"big","size":%d}`, lambda.DefaultMaxResponse-2)))
	if res.FunctionError || len(res.Payload) != lambda.DefaultMaxResponse {
		t.Fatalf("response of exactly 6 MiB + 100: function error %v, %d bytes", res.FunctionError, len(res.Payload))
	}
}

func TestConcurrentInvokeIsRefused(t *testing.T) {
	s := startGo(t, lambda.Config{})
	const n = 8
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			_, err := s.Invoke(ctx, newInvocation(`{"op":"wait"}`))
			errs <- err
		})
	}
	close(start)
	for range n - 1 {
		if err := <-errs; !errors.Is(err, lambda.ErrBusy) {
			t.Errorf("concurrent invoke: %v, want ErrBusy", err)
		}
	}
	cancel() // the one that got in waits for the function until ctx ends
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Errorf("invoke in progress: %v, want context.Canceled", err)
	}
	wg.Wait()
}

func TestInvokeCanceledBeforeRuntimeAsks(t *testing.T) {
	s, _ := startServer(t, lambda.Config{}) // no runtime process
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := s.Invoke(ctx, newInvocation(`{}`)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("invoke with no runtime: %v, want deadline exceeded", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := s.WaitReady(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait ready with no runtime: %v, want deadline exceeded", err)
	}
}

func TestClose(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := lambda.NewServer(lambda.Config{})
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	ready := make(chan error, 1)
	invoked := make(chan error, 1)
	go func() { ready <- s.WaitReady(context.Background()) }()
	go func() {
		_, err := s.Invoke(context.Background(), newInvocation(`{}`))
		invoked <- err
	}()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("serve after close = %v, want nil", err)
	}
	if err := <-ready; !errors.Is(err, lambda.ErrClosed) {
		t.Errorf("wait ready after close = %v, want ErrClosed", err)
	}
	if err := <-invoked; !errors.Is(err, lambda.ErrClosed) {
		t.Errorf("invoke after close = %v, want ErrClosed", err)
	}
}

// rawRuntime is a hand-written runtime client, for protocol cases the
// real runtimes do not produce.
type rawRuntime struct {
	t    *testing.T
	base string
	c    *http.Client
}

func (r rawRuntime) do(method, path string, hdr map[string]string, body io.Reader) (*http.Response, []byte) {
	r.t.Helper()
	req, err := http.NewRequest(method, r.base+path, body)
	if err != nil {
		r.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := r.c.Do(req)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	return resp, b
}

// startInvoke runs Invoke in the background; the returned func waits for it.
func startInvoke(t *testing.T, s *lambda.Server, inv *fn.Invocation) func() (*fn.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	type ret struct {
		res *fn.Result
		err error
	}
	ch := make(chan ret, 1)
	go func() {
		res, err := s.Invoke(ctx, inv)
		ch <- ret{res, err}
	}()
	t.Cleanup(cancel)
	return func() (*fn.Result, error) { r := <-ch; return r.res, r.err }
}

func TestProtocol(t *testing.T) {
	s, addr := startServer(t, lambda.Config{})
	rt := rawRuntime{t: t, base: "http://" + addr, c: &http.Client{}}

	// Extensions, Logs and Telemetry answer before init is done.
	resp, _ := rt.do("POST", "/2020-01-01/extension/register", map[string]string{"Lambda-Extension-Name": "x"}, strings.NewReader(`{"events":[]}`))
	if resp.StatusCode != 200 || resp.Header.Get("Lambda-Extension-Identifier") == "" {
		t.Errorf("register: %d, id %q", resp.StatusCode, resp.Header.Get("Lambda-Extension-Identifier"))
	}
	for _, p := range []string{"/2020-08-15/logs", "/2022-07-01/telemetry"} {
		if resp, _ := rt.do("PUT", p, nil, strings.NewReader(`{}`)); resp.StatusCode != 200 {
			t.Errorf("PUT %s: %d", p, resp.StatusCode)
		}
	}
	if resp, _ := rt.do("GET", "/2018-06-01/ping", nil, nil); resp.StatusCode != 200 {
		t.Errorf("ping: %d", resp.StatusCode)
	}

	inv := newInvocation(`{"k":1}`)
	inv.Deadline = time.UnixMilli(1700000000123)
	wait := startInvoke(t, s, inv)
	resp, body := rt.do("GET", "/2018-06-01/runtime/invocation/next", nil, nil)
	want := map[string]string{
		"Lambda-Runtime-Aws-Request-Id":       inv.ID,
		"Lambda-Runtime-Deadline-Ms":          "1700000000123",
		"Lambda-Runtime-Invoked-Function-Arn": inv.ARN,
		"Lambda-Runtime-Trace-Id":             inv.TraceID,
	}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("next: %s = %q, want %q", k, got, v)
		}
	}
	if _, ok := resp.Header["Lambda-Runtime-Client-Context"]; ok {
		t.Errorf("next: empty client context sent")
	}
	if string(body) != `{"k":1}` {
		t.Errorf("next body = %s", body)
	}
	if err := s.WaitReady(context.Background()); err != nil {
		t.Errorf("wait ready after next: %v", err)
	}

	// Wrong id while an invocation runs: 400; then the right one; then twice: 403.
	resp, body = rt.do("POST", "/2018-06-01/runtime/invocation/nope/response", nil, strings.NewReader(`1`))
	if resp.StatusCode != 400 || !bytes.Contains(body, []byte(`"errorType":"InvalidRequestID"`)) {
		t.Errorf("post unknown id: %d %s", resp.StatusCode, body)
	}
	resp, _ = rt.do("POST", "/2018-06-01/runtime/invocation/"+inv.ID+"/error",
		map[string]string{"Lambda-Runtime-Function-Error-Type": "Function.Custom"}, strings.NewReader(`not json`))
	if resp.StatusCode != 202 {
		t.Errorf("post error: %d", resp.StatusCode)
	}
	res, err := wait()
	if err != nil {
		t.Fatal(err)
	}
	if e := decodeError(t, res); e.Type != "Function.Custom" || e.Message != "not json" {
		t.Errorf("non-JSON error body = %s, want it wrapped with the header's type", res.Payload)
	}
	resp, body = rt.do("POST", "/2018-06-01/runtime/invocation/"+inv.ID+"/response", nil, strings.NewReader(`1`))
	if resp.StatusCode != 403 || !bytes.Contains(body, []byte(`"errorType":"InvalidStateTransition"`)) {
		t.Errorf("post twice: %d %s", resp.StatusCode, body)
	}

	// An init error after init is done is refused.
	if resp, _ := rt.do("POST", "/2018-06-01/runtime/init/error", nil, strings.NewReader(`{}`)); resp.StatusCode != 403 {
		t.Errorf("init error after next: %d", resp.StatusCode)
	}
	if resp, _ := rt.do("GET", "/2018-06-01/runtime/invocation/next/x", nil, nil); resp.StatusCode != 404 {
		t.Errorf("bad path: %d", resp.StatusCode)
	}
	if resp, _ := rt.do("POST", "/2018-06-01/runtime/invocation/next", nil, nil); resp.StatusCode != 405 {
		t.Errorf("POST next: %d", resp.StatusCode)
	}
}

// chunkedBody makes net/http send a chunked body with the given trailers.
type chunkedBody struct {
	r       io.Reader
	trailer http.Header
	set     map[string]string
}

func (c *chunkedBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err == io.EOF {
		for k, v := range c.set {
			c.trailer.Set(k, v)
		}
	}
	return n, err
}

func TestTrailers(t *testing.T) {
	tests := []struct {
		name    string
		path    string
		header  map[string]string
		trailer map[string]string
		body    string
		fnErr   bool
		want    string
	}{
		{name: "clean response, empty trailers", path: "response", body: `{"ok":true}`, want: `{"ok":true}`,
			trailer: map[string]string{}},
		{name: "error trailer on response", path: "response", body: `partial`,
			trailer: map[string]string{"Lambda-Runtime-Function-Error-Type": "Function.StreamError",
				"Lambda-Runtime-Function-Error-Body": "eyJlcnJvck1lc3NhZ2UiOiJtaWQiLCJlcnJvclR5cGUiOiJGdW5jdGlvbi5TdHJlYW1FcnJvciJ9"},
			fnErr: true, want: `{"errorMessage":"mid","errorType":"Function.StreamError"}`},
		{name: "streaming mode", path: "response", header: map[string]string{"Lambda-Runtime-Function-Response-Mode": "streaming"},
			body: "a\nb\n", trailer: map[string]string{}, want: "a\nb\n"},
		{name: "error type in trailer on /error", path: "error", body: `{"errorMessage":"m","errorType":"T"}`,
			trailer: map[string]string{"Lambda-Runtime-Function-Error-Type": "Function.X"},
			fnErr:   true, want: `{"errorMessage":"m","errorType":"T"}`},
	}
	s, addr := startServer(t, lambda.Config{})
	rt := rawRuntime{t: t, base: "http://" + addr, c: &http.Client{}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inv := newInvocation(`{}`)
			wait := startInvoke(t, s, inv)
			rt.do("GET", "/2018-06-01/runtime/invocation/next", nil, nil)
			body := &chunkedBody{r: strings.NewReader(tc.body), trailer: http.Header{}, set: tc.trailer}
			req, err := http.NewRequest("POST", rt.base+"/2018-06-01/runtime/invocation/"+inv.ID+"/"+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = -1
			for k := range tc.trailer {
				body.trailer[k] = nil
			}
			req.Trailer = body.trailer
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := rt.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 202 {
				t.Errorf("post: %d", resp.StatusCode)
			}
			res, err := wait()
			if err != nil {
				t.Fatal(err)
			}
			if res.FunctionError != tc.fnErr || string(res.Payload) != tc.want {
				t.Errorf("result = %s (function error %v), want %s (%v)", res.Payload, res.FunctionError, tc.want, tc.fnErr)
			}
		})
	}
}

func TestInitError(t *testing.T) {
	s, addr := startServer(t, lambda.Config{})
	rt := rawRuntime{t: t, base: "http://" + addr, c: &http.Client{}}
	wait := startInvoke(t, s, newInvocation(`{}`))
	body := `{"errorMessage":"no module","errorType":"Runtime.ImportModuleError"}`
	resp, _ := rt.do("POST", "/2018-06-01/runtime/init/error",
		map[string]string{"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"}, strings.NewReader(body))
	if resp.StatusCode != 202 {
		t.Fatalf("init error: %d", resp.StatusCode)
	}
	var ie *lambda.InitError
	if err := s.WaitReady(context.Background()); !errors.As(err, &ie) || ie.Type != "Runtime.ImportModuleError" || string(ie.Payload) != body {
		t.Errorf("wait ready = %v, want the init error", err)
	}
	if _, err := wait(); !errors.As(err, &ie) {
		t.Errorf("pending invoke = %v, want the init error", err)
	}
	if resp, _ := rt.do("POST", "/2018-06-01/runtime/init/error", nil, strings.NewReader(body)); resp.StatusCode != 403 {
		t.Errorf("second init error: %d", resp.StatusCode)
	}
}

func BenchmarkInvoke(b *testing.B) {
	s := startGo(b, lambda.Config{})
	inv := newInvocation(`{"op":"echo","data":{"hello":"world"}}`)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		res, err := s.Invoke(ctx, inv)
		if err != nil || res.FunctionError {
			b.Fatalf("invoke: %v %+v", err, res)
		}
	}
}

func TestExtensionShutdown(t *testing.T) {
	s, addr := startServer(t, lambda.Config{})
	rt := rawRuntime{t: t, base: "http://" + addr, c: &http.Client{}}
	if n := s.Extensions(); n != 0 {
		t.Fatalf("Extensions before any registered = %d", n)
	}
	register := func(events string) string {
		resp, body := rt.do("POST", "/2020-01-01/extension/register", map[string]string{"Lambda-Extension-Name": "x"}, strings.NewReader(`{"events":`+events+`}`))
		id := resp.Header.Get("Lambda-Extension-Identifier")
		if resp.StatusCode != 200 || id == "" {
			t.Fatalf("register %s: %d %s, id %q", events, resp.StatusCode, body, id)
		}
		return id
	}
	wants, ignores := register(`["SHUTDOWN"]`), register(`[]`)
	if n := s.Extensions(); n != 2 {
		t.Fatalf("Extensions = %d, want 2", n)
	}
	type answer struct {
		status int
		body   string
	}
	next := func(id string) <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			// Not rt.do: it fails the test on a broken connection, which
			// is how a next ends at Close.
			req, _ := http.NewRequest("GET", rt.base+"/2020-01-01/extension/event/next", nil)
			req.Header.Set("Lambda-Extension-Identifier", id)
			resp, err := rt.c.Do(req)
			if err != nil {
				ch <- answer{-1, err.Error()}
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			ch <- answer{resp.StatusCode, string(body)}
		}()
		return ch
	}
	got, blocked := next(wants), next(ignores)
	deadline := time.UnixMilli(1800000000000)
	s.Shutdown(deadline)
	a := <-got
	var ev struct {
		EventType, ShutdownReason string
		DeadlineMs                int64
	}
	if a.status != 200 || json.Unmarshal([]byte(a.body), &ev) != nil || ev.EventType != "SHUTDOWN" ||
		ev.ShutdownReason != "spindown" || ev.DeadlineMs != deadline.UnixMilli() {
		t.Errorf("next after Shutdown: %d %s, want a SHUTDOWN event with the deadline", a.status, a.body)
	}
	select {
	case a := <-blocked:
		t.Errorf("an extension not registered for SHUTDOWN got %d %s", a.status, a.body)
	case <-time.After(50 * time.Millisecond):
	}
	// Its next ends when the server closes (the instance is gone), without
	// an event.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if a := <-blocked; a.status == 200 && strings.Contains(a.body, "SHUTDOWN") {
		t.Errorf("after Close: %d %s", a.status, a.body)
	}
}

package wasm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Test modules, built from testdata/ in TestMain.
var (
	cgiWasm     []byte // testdata/cgi: a Go net/http/cgi handler
	reactorWasm []byte // testdata/reactor: a Go reactor
	buildErr    string // why the Go modules could not be built
	cacheDir    string // a compilation cache shared by the tests
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "aloft-wasm-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cacheDir = filepath.Join(dir, "cache")
	cgiWasm, reactorWasm, buildErr = buildModules(dir)
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func buildModules(dir string) (cgi, reactor []byte, failure string) {
	build := func(out string, args ...string) ([]byte, error) {
		cmd := exec.Command("go", append([]string{"build", "-o", out}, args...)...)
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %v for GOOS=wasip1 GOARCH=wasm: %v: %s", args, err, b)
		}
		return os.ReadFile(out)
	}
	cgi, err := build(filepath.Join(dir, "cgi.wasm"), "./testdata/cgi")
	if err != nil {
		return nil, nil, err.Error()
	}
	// The reactor is testdata/reactor/main.go plus the Go glue users copy,
	// examples/hello-reactor/aloft.go, so the tests run the shipped glue.
	src := filepath.Join(dir, "reactor")
	if err := os.Mkdir(src, 0o755); err != nil {
		return nil, nil, err.Error()
	}
	for from, to := range map[string]string{
		"testdata/reactor/main.go":              "main.go",
		"../../examples/hello-reactor/aloft.go": "aloft.go",
	} {
		b, err := os.ReadFile(from)
		if err == nil {
			err = os.WriteFile(filepath.Join(src, to), b, 0o644)
		}
		if err != nil {
			return nil, nil, err.Error()
		}
	}
	reactor, err = build(filepath.Join(dir, "reactor.wasm"), "-buildmode=c-shared",
		filepath.Join(src, "main.go"), filepath.Join(src, "aloft.go"))
	if err != nil {
		return nil, nil, err.Error()
	}
	return cgi, reactor, ""
}

func needGo(t testing.TB) {
	t.Helper()
	if buildErr != "" {
		t.Skip("the Go toolchain cannot build the wasip1 test modules: " + buildErr)
	}
}

func keyOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func newEngine(t testing.TB, dir string) *Engine {
	t.Helper()
	e, err := New(context.Background(), Config{CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return e
}

func compile(t testing.TB, e *Engine, wasm []byte) *Module {
	t.Helper()
	m, err := e.Compile(context.Background(), keyOf(wasm), wasm)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// goCGI compiles the Go CGI module on an Engine sharing the test cache.
func goCGI(t testing.TB) *Module {
	t.Helper()
	needGo(t)
	return compile(t, newEngine(t, cacheDir), cgiWasm)
}

func goReactor(t testing.TB) *Module {
	t.Helper()
	needGo(t)
	return compile(t, newEngine(t, cacheDir), reactorWasm)
}

// cgiRequest serves one request through m and returns the recorder and error.
func cgiRequest(t testing.TB, ctx context.Context, m *Module, r *http.Request, lim Limits) (*httptest.ResponseRecorder, error) {
	t.Helper()
	w := httptest.NewRecorder()
	err := m.ServeCGI(ctx, w, r, "/fn", lim)
	return w, err
}

func cgiGet(t testing.TB, m *Module, target string, lim Limits) string {
	t.Helper()
	w, err := cgiRequest(t, context.Background(), m, httptest.NewRequest("GET", target, nil), lim)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	if w.Code != http.StatusOK {
		t.Fatalf("GET %s: status %d, body %q", target, w.Code, w.Body)
	}
	return w.Body.String()
}

func TestCGIRoundTrip(t *testing.T) {
	m := goCGI(t)
	if m.Kind() != KindCommand {
		t.Fatalf("kind = %v, want command", m.Kind())
	}
	r := httptest.NewRequest("POST", "http://example.com:8080/fn/echo?q=a%20b&x=1", strings.NewReader("hello body"))
	r.Header.Set("User-Agent", "tester/1")
	w, err := cgiRequest(t, context.Background(), m, r, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if w.Code != http.StatusCreated {
		t.Errorf("status = %d, want 201", w.Code)
	}
	if got := w.Header().Get("X-Echo"); got != "yes" {
		t.Errorf("X-Echo = %q", got)
	}
	if got := w.Header().Get("Content-Type"); got != "text/plain; charset=utf-8" {
		t.Errorf("Content-Type = %q", got)
	}
	if w.Header().Get("Status") != "" {
		t.Error("the Status CGI header reached the client")
	}
	want := "method=POST path=/fn/echo info=/echo query=q=a%20b&x=1 q=a b ua=tester/1 args=/fn,q=a b,x=1 body=hello body"
	if got := w.Body.String(); got != want {
		t.Errorf("body =\n%q, want\n%q", got, want)
	}
}

func TestCGIEnvironment(t *testing.T) {
	m := goCGI(t)
	lim := Limits{Env: map[string]string{"FUNCTION_VAR": "fv", "SERVER_PROTOCOL": "overridden?"}}
	for _, tc := range []struct{ name, want string }{
		{"FUNCTION_VAR", "fv"},
		{"SERVER_PROTOCOL", "HTTP/1.1"},
		{"GATEWAY_INTERFACE", "CGI/1.1"},
		{"REQUEST_METHOD", "GET"},
		{"SCRIPT_NAME", "/fn"},
		{"PATH_INFO", "/env"},
		{"X_RAW_PATH_INFO", "/env"},
		{"X_MATCHED_ROUTE", "/fn/..."},
		{"SERVER_NAME", "example.com"},
		{"SERVER_PORT", "80"},
		{"HTTP_HOST", "example.com"},
		{"HTTP_X_CUSTOM", "c1"},
		{"REMOTE_ADDR", "192.0.2.1"},
		{"X_FULL_URL", "http://example.com/fn/env?k=X_FULL_URL"},
		{"CONTENT_LENGTH", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/fn/env?k="+tc.name, nil)
			r.Header.Set("X-Custom", "c1")
			w, err := cgiRequest(t, context.Background(), m, r, lim)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := w.Body.String(), tc.name+"="+tc.want; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}

func TestCGIRedirect(t *testing.T) {
	m := goCGI(t)
	w, err := cgiRequest(t, context.Background(), m, httptest.NewRequest("GET", "/fn/redirect", nil), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/elsewhere" {
		t.Errorf("status %d Location %q, want 303 /elsewhere", w.Code, w.Header().Get("Location"))
	}
}

func TestCommandFreshInstancePerRequest(t *testing.T) {
	m := goCGI(t)
	for i := range 3 {
		if got := cgiGet(t, m, "/fn/counter", Limits{}); got != "1" {
			t.Fatalf("request %d: counter = %s, want 1 (state survived an instance)", i, got)
		}
	}
}

// TestPreparedAheadOfRequests prepares instances before their requests
// exist: each then runs with its own request's CGI variables and the
// function's environment, in a fresh state, once.
func TestPreparedAheadOfRequests(t *testing.T) {
	m := goCGI(t)
	lim := Limits{Env: map[string]string{"FUNCTION_VAR": "fv"}}
	var ps []*Prepared
	for range 3 {
		p, err := m.Prepare(context.Background(), lim)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	for i, target := range map[int]string{1: "/fn/env?k=FUNCTION_VAR", 0: "/fn/env?k=QUERY_STRING", 2: "/fn/counter"} {
		w := httptest.NewRecorder()
		if err := ps[i].ServeCGI(context.Background(), w, httptest.NewRequest("GET", target, nil), "/fn"); err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		want := map[int]string{1: "FUNCTION_VAR=fv", 0: "QUERY_STRING=k=QUERY_STRING", 2: "1"}[i]
		if got := w.Body.String(); got != want {
			t.Errorf("%s: got %q, want %q", target, got, want)
		}
		if err := ps[i].ServeCGI(context.Background(), httptest.NewRecorder(), httptest.NewRequest("GET", target, nil), "/fn"); err == nil {
			t.Errorf("%s: a prepared instance served twice", target)
		}
	}
	// One prepared and never used is released.
	p, err := m.Prepare(context.Background(), lim)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	p.Close()
}

func TestCommandTmpIsPrivateAndCodeDirReadOnly(t *testing.T) {
	m := goCGI(t)
	for range 2 {
		if got := cgiGet(t, m, "/fn/tmp", Limits{}); got != "written err=<nil> entries=1" {
			t.Fatalf("tmp: %q", got)
		}
	}
	code := t.TempDir()
	if err := os.WriteFile(filepath.Join(code, "hello.txt"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := cgiGet(t, m, "/fn/code", Limits{CodeDir: code}); got != "read=hi err=<nil> write_failed=true" {
		t.Errorf("code dir: %q", got)
	}
	if _, err := os.Stat(filepath.Join(code, "new.txt")); err == nil {
		t.Error("the module wrote into the read-only code dir")
	}
	if got := cgiGet(t, m, "/fn/code", Limits{}); !strings.Contains(got, "write_failed=true") || strings.Contains(got, "read=hi") {
		t.Errorf("without a code dir: %q", got)
	}
}

func wantFunctionError(t *testing.T, err error, typ string, w *httptest.ResponseRecorder) {
	t.Helper()
	var fe *FunctionError
	if !errors.As(err, &fe) {
		t.Fatalf("error = %v, want a *FunctionError %s", err, typ)
	}
	if fe.Type != typ {
		t.Fatalf("error type = %s (%s), want %s", fe.Type, fe.Message, typ)
	}
	if w != nil && (w.Body.Len() > 0 || len(w.Header()) > 0 || w.Code != http.StatusOK) {
		t.Errorf("something was written on error: %d %v %q", w.Code, w.Header(), w.Body)
	}
}

func TestCGIFailures(t *testing.T) {
	m := goCGI(t)
	t.Run("timeout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		w, err := cgiRequest(t, ctx, m, httptest.NewRequest("GET", "/fn/loop", nil), Limits{})
		wantFunctionError(t, err, ErrTimeout, w)
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := cgiRequest(t, ctx, m, httptest.NewRequest("GET", "/fn/loop", nil), Limits{})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error = %v, want context.Canceled", err)
		}
	})
	t.Run("exit", func(t *testing.T) {
		var stderr bytes.Buffer
		w, err := cgiRequest(t, context.Background(), m, httptest.NewRequest("GET", "/fn/exit", nil), Limits{Stderr: &stderr})
		wantFunctionError(t, err, ErrExit, w)
		if !strings.Contains(err.Error(), "code 3") || !strings.Contains(stderr.String(), "exiting with 3") {
			t.Errorf("error %q, stderr %q", err, stderr.String())
		}
	})
	t.Run("no content type", func(t *testing.T) {
		w, err := cgiRequest(t, context.Background(), m, httptest.NewRequest("GET", "/fn/notype", nil), Limits{})
		wantFunctionError(t, err, ErrInvalidResponse, w)
	})
	t.Run("memory hog", func(t *testing.T) {
		var stderr bytes.Buffer
		w, err := cgiRequest(t, context.Background(), m, httptest.NewRequest("GET", "/fn/hog?mb=100", nil), Limits{MemoryMB: 48, Stderr: &stderr})
		wantFunctionError(t, err, ErrOutOfMemory, w)
		t.Logf("wazero and Go report: %v; stderr: %.200s", err, stderr.String())
	})
	t.Run("memory within cap", func(t *testing.T) {
		if got := cgiGet(t, m, "/fn/hog?mb=8", Limits{MemoryMB: 48}); got != "8" {
			t.Errorf("got %q", got)
		}
	})
	t.Run("initial memory over cap", func(t *testing.T) {
		w, err := cgiRequest(t, context.Background(), m, httptest.NewRequest("GET", "/fn/counter", nil), Limits{MemoryMB: 1})
		wantFunctionError(t, err, ErrOutOfMemory, w)
	})
}

func TestRealClocksAndRandom(t *testing.T) {
	m := goCGI(t)
	ns, err := strconv.ParseInt(cgiGet(t, m, "/fn/time", Limits{}), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(time.Unix(0, ns)); d < -time.Second || d > time.Second {
		t.Errorf("the module's clock is %v off the host's", d)
	}
	a, b := cgiGet(t, m, "/fn/rand", Limits{}), cgiGet(t, m, "/fn/rand", Limits{})
	if a == b || len(a) != 32 {
		t.Errorf("random bytes %q and %q", a, b)
	}
}

func reactorDo(t testing.TB, i *Instance, method, target, body string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	if err := i.Serve(context.Background(), w, httptest.NewRequest(method, target, strings.NewReader(body))); err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	return w
}

func newInstance(t testing.TB, m *Module, lim Limits) *Instance {
	t.Helper()
	i, err := m.NewInstance(context.Background(), lim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = i.Close(context.Background()) })
	return i
}

func TestReactorReusesInstanceAndIsolatesInstances(t *testing.T) {
	m := goReactor(t)
	if m.Kind() != KindReactor {
		t.Fatalf("kind = %v, want reactor", m.Kind())
	}
	a, b := newInstance(t, m, Limits{}), newInstance(t, m, Limits{})
	for want := 1; want <= 3; want++ {
		if got := reactorDo(t, a, "GET", "/counter", "").Body.String(); got != strconv.Itoa(want) {
			t.Fatalf("instance a: counter = %s, want %d", got, want)
		}
	}
	if got := reactorDo(t, b, "GET", "/counter", "").Body.String(); got != "1" {
		t.Errorf("instance b: counter = %s, want 1 (instances share memory)", got)
	}
}

func TestReactorRoundTrip(t *testing.T) {
	m := goReactor(t)
	var stdout, stderr bytes.Buffer
	i := newInstance(t, m, Limits{Env: map[string]string{"GREETING": "hej"}, Stdout: &stdout, Stderr: &stderr})
	r := httptest.NewRequest("PUT", "http://fn.example/echo?a=1", strings.NewReader("payload"))
	r.Header.Set("User-Agent", "tester/2")
	w := httptest.NewRecorder()
	if err := i.Serve(context.Background(), w, r); err != nil {
		t.Fatal(err)
	}
	if w.Code != http.StatusAccepted || w.Header().Get("X-Echo") != "yes" {
		t.Errorf("status %d, headers %v", w.Code, w.Header())
	}
	if got, want := w.Body.String(), "PUT /echo?a=1 host=fn.example ua=tester/2 body=payload"; got != want {
		t.Errorf("body %q, want %q", got, want)
	}
	if got := reactorDo(t, i, "GET", "/env?k=GREETING", "").Body.String(); got != "hej" {
		t.Errorf("env: %q", got)
	}
	reactorDo(t, i, "GET", "/log", "")
	if stdout.String() != "to stdout\n" || stderr.String() != "to stderr\n" {
		t.Errorf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	if got := reactorDo(t, i, "GET", "/missing", "").Code; got != http.StatusNotFound {
		t.Errorf("status %d, want 404", got)
	}
	// Header names as sent (the glue canonicalizes), repeated headers,
	// Host promoted out of the map; response values kept on their line.
	r = httptest.NewRequest("POST", "http://fn.example/headers", strings.NewReader("{}"))
	r.Header["x-many"] = []string{"1", "2"}
	r.Header.Set("Content-Type", "application/json")
	w = httptest.NewRecorder()
	if err := i.Serve(context.Background(), w, r); err != nil {
		t.Fatal(err)
	}
	if got, want := w.Body.String(), `2 ["1" "2"] "application/json" false`; got != want {
		t.Errorf("headers: body %q, want %q", got, want)
	}
	if got := w.Header().Values("X-Multi"); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Errorf("X-Multi %q, want [a b]", got)
	}
	if got := w.Header().Get("X-Newline"); got != "x y" {
		t.Errorf("X-Newline %q, want %q", got, "x y")
	}
}

func TestReactorTimeoutClosesInstance(t *testing.T) {
	m := goReactor(t)
	i := newInstance(t, m, Limits{})
	reactorDo(t, i, "GET", "/counter", "")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	w := httptest.NewRecorder()
	err := i.Serve(ctx, w, httptest.NewRequest("GET", "/loop", nil))
	wantFunctionError(t, err, ErrTimeout, w)
	select {
	case <-i.Done():
	default:
		t.Fatal("Done is not closed after a timeout")
	}
	if err := i.Serve(context.Background(), httptest.NewRecorder(), httptest.NewRequest("GET", "/counter", nil)); !errors.Is(err, errInstanceClosed) {
		t.Errorf("serve after timeout: %v", err)
	}
}

func TestKindOnlyForItsServe(t *testing.T) {
	needGo(t)
	e := newEngine(t, cacheDir)
	c, r := compile(t, e, cgiWasm), compile(t, e, reactorWasm)
	if _, err := c.NewInstance(context.Background(), Limits{}); err == nil {
		t.Error("NewInstance of a command module succeeded")
	}
	if err := r.ServeCGI(context.Background(), httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), "/", Limits{}); err == nil {
		t.Error("ServeCGI of a reactor module succeeded")
	}
}

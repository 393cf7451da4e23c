package httpport_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"aloft/internal/runtime/httpport"
)

var serverBin string // the built testdata/server

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "httpport-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	serverBin = filepath.Join(dir, "server")
	cmd := exec.Command("go", "build", "-o", serverBin, "./testdata/server")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build testdata/server: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// freeAddr returns a 127.0.0.1 address nothing listens on right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// backend is the testdata server running as a process.
type backend struct {
	addr   string
	cmd    *exec.Cmd
	exited chan struct{}
}

func startBackend(t testing.TB, addr string) *backend {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(serverBin)
	cmd.Env = []string{"PORT=" + port}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &backend{addr: addr, cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(b.exited)
	}()
	t.Cleanup(b.kill)
	return b
}

func (b *backend) kill() {
	_ = b.cmd.Process.Kill()
	<-b.exited
}

// setup starts a backend, a Proxy to it (counting dials) and a front
// server serving the Proxy on 127.0.0.1.
func setup(t testing.TB) (*backend, *httpport.Proxy, *httptest.Server, *atomic.Int64) {
	t.Helper()
	b := startBackend(t, freeAddr(t))
	var dials atomic.Int64
	var d net.Dialer
	p := httpport.New(httpport.Config{Dial: func(ctx context.Context) (net.Conn, error) {
		dials.Add(1)
		return d.DialContext(ctx, "tcp", b.addr)
	}})
	t.Cleanup(p.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		t.Fatalf("wait ready: %v", err)
	}
	dials.Store(0)
	front := httptest.NewServer(p)
	t.Cleanup(front.Close)
	return b, p, front, &dials
}

type echoed struct {
	Method string              `json:"method"`
	Path   string              `json:"path"`
	Query  string              `json:"query"`
	Host   string              `json:"host"`
	Header map[string][]string `json:"header"`
	Body   string              `json:"body"`
}

func TestProxy(t *testing.T) {
	_, _, front, _ := setup(t)
	c := front.Client()

	t.Run("request and response as they are", func(t *testing.T) {
		req, _ := http.NewRequest("PUT", front.URL+"/echo/a%2Fb/c?x=1&y=%20z&x=2", strings.NewReader("payload"))
		req.Header.Set("X-Custom", "v1")
		req.Header.Add("X-Custom", "v2")
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		req.Host = "fn.example.com"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e echoed
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("X-Echo") != "1" {
			t.Errorf("status %d, X-Echo %q", resp.StatusCode, resp.Header.Get("X-Echo"))
		}
		if e.Method != "PUT" || e.Path != "/echo/a/b/c" || e.Query != "x=1&y=%20z&x=2" || e.Body != "payload" || e.Host != "fn.example.com" {
			t.Errorf("backend saw %+v", e)
		}
		if got := e.Header["X-Custom"]; len(got) != 2 || got[0] != "v1" || got[1] != "v2" {
			t.Errorf("X-Custom = %q", got)
		}
		if got := strings.Join(e.Header["X-Forwarded-For"], ","); got != "203.0.113.9, 127.0.0.1" {
			t.Errorf("X-Forwarded-For = %q, want the prior chain plus the client", got)
		}
		if got := e.Header["X-Forwarded-Proto"]; len(got) != 1 || got[0] != "http" {
			t.Errorf("X-Forwarded-Proto = %q", got)
		}
	})
	t.Run("status passes through", func(t *testing.T) {
		resp, err := c.Get(front.URL + "/echo/?status=418")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 418 {
			t.Errorf("status = %d, want 418", resp.StatusCode)
		}
	})
	t.Run("large bodies both ways", func(t *testing.T) {
		big := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
		resp, err := c.Post(front.URL+"/copy", "application/octet-stream", bytes.NewReader(big))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if err != nil || !bytes.Equal(got, big) {
			t.Errorf("copy of 8 MiB: %v, %d bytes back, equal %v", err, len(got), bytes.Equal(got, big))
		}
	})
}

// TestStreaming sends one line at a time and reads each answer before
// sending the next: it deadlocks (and fails at the test deadline) if the
// proxy buffers either direction.
func TestStreaming(t *testing.T) {
	_, _, front, _ := setup(t)
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", front.URL+"/duplex", pr)
	resp, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewReader(resp.Body)
	for i := range 5 {
		if _, err := fmt.Fprintf(pw, "line %d\n", i); err != nil {
			t.Fatal(err)
		}
		got, err := lines.ReadString('\n')
		if want := fmt.Sprintf("got line %d\n", i); err != nil || got != want {
			t.Fatalf("read %q, %v; want %q", got, err, want)
		}
	}
	pw.Close()
	if rest, err := io.ReadAll(lines); err != nil || len(rest) != 0 {
		t.Errorf("after close: %q, %v", rest, err)
	}
}

func TestKeepAlive(t *testing.T) {
	_, p, front, dials := setup(t)
	for range 20 {
		resp, err := front.Client().Get(front.URL + "/echo/")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if _, err := p.Invoke(context.Background(), []byte(`{}`), nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("40 sequential requests dialed %d connections, want 1", n)
	}
}

func TestInvoke(t *testing.T) {
	_, p, _, _ := setup(t)
	long := strings.Repeat("e", 300)
	tests := []struct {
		name, payload, want, contentType string
		fnErr                            bool
	}{
		{name: "echo", payload: `{"k":"v"}`, want: `{"k":"v"}`, contentType: "application/x-echo"},
		{name: "4xx is a result", payload: `{"status":404,"body":"nope"}`, want: "nope", contentType: "text/plain; charset=utf-8"},
		{name: "5xx is a function error", payload: `{"status":500,"body":"` + long + `"}`, fnErr: true,
			want: `{"errorMessage":"status 500: ` + long[:256] + `","errorType":"Function.HTTPError"}`, contentType: "application/json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := p.Invoke(context.Background(), []byte(tc.payload), nil)
			if err != nil {
				t.Fatal(err)
			}
			if string(res.Payload) != tc.want || res.FunctionError != tc.fnErr || res.ContentType != tc.contentType {
				t.Errorf("result = %s (function error %v, %q), want %s (%v, %q)",
					res.Payload, res.FunctionError, res.ContentType, tc.want, tc.fnErr, tc.contentType)
			}
		})
	}
}

func TestInvokeTooLarge(t *testing.T) {
	b := startBackend(t, freeAddr(t))
	p := httpport.New(httpport.Config{MaxResponse: 10, Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", b.addr)
	}})
	defer p.Close()
	if err := p.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	for payload, tooLarge := range map[string]bool{`0123456789`: false, `0123456789a`: true} {
		res, err := p.Invoke(context.Background(), []byte(payload), nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.FunctionError != tooLarge || tooLarge && !bytes.Contains(res.Payload, []byte("Function.ResponseSizeTooLarge")) {
			t.Errorf("%d bytes: %s (function error %v)", len(payload), res.Payload, res.FunctionError)
		}
	}
}

func TestWaitReady(t *testing.T) {
	addr := freeAddr(t)
	var dials atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := httpport.New(httpport.Config{Dial: func(dctx context.Context) (net.Conn, error) {
		if dials.Add(1) == 3 {
			cancel() // give up after the third attempt
		}
		var d net.Dialer
		return d.DialContext(context.Background(), "tcp", addr)
	}})
	defer p.Close()

	err := p.WaitReady(ctx)
	var opErr *net.OpError
	if !errors.Is(err, context.Canceled) || !errors.As(err, &opErr) {
		t.Fatalf("wait ready with nothing listening = %v, want canceled and the dial error", err)
	}
	if n := dials.Load(); n != 3 {
		t.Errorf("dialed %d times, want 3 (retries until ctx ends)", n)
	}

	ready := make(chan error, 1)
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() { ready <- p.WaitReady(ctx) }()
	startBackend(t, addr)
	if err := <-ready; err != nil {
		t.Fatalf("wait ready once the backend listens: %v", err)
	}
	if res, err := p.Invoke(ctx, []byte(`"hi"`), nil); err != nil || string(res.Payload) != `"hi"` {
		t.Errorf("invoke after ready: %v %v", res, err)
	}
}

func TestDeadBackend(t *testing.T) {
	b, p, front, _ := setup(t)
	resp, err := front.Client().Get(front.URL + "/echo/") // leaves an idle connection
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	b.kill()

	resp, err = front.Client().Get(front.URL + "/echo/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("Content-Type") != "application/json" ||
		body.Error.Code != "bad_gateway" || body.Error.Message == "" {
		t.Errorf("dead backend: %d %q %+v", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if _, err := p.Invoke(context.Background(), []byte(`{}`), nil); err == nil {
		t.Error("invoke of a dead backend succeeded")
	}
}

// A request whose deadline (the function's timeout) passes before the
// instance answers gets 504 with the deadline's cause, on both paths (a
// body of known length, and a streamed one).
func TestTimeout(t *testing.T) {
	_, p, _, _ := setup(t)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeoutCause(r.Context(), 100*time.Millisecond, errors.New("Task timed out after 0.10 seconds"))
		defer cancel()
		p.ServeHTTP(w, r.WithContext(ctx))
	}))
	defer front.Close()
	for _, body := range []io.Reader{nil, io.MultiReader(strings.NewReader("streamed"))} {
		req, _ := http.NewRequest("POST", front.URL+"/sleep", body)
		resp, err := front.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusGatewayTimeout || got.Error.Code != "timeout" || got.Error.Message != "Task timed out after 0.10 seconds" {
			t.Errorf("chunked=%v: %d %+v (%v), want 504 with the deadline's cause", req.ContentLength < 0, resp.StatusCode, got, err)
		}
	}
}

func BenchmarkProxy(b *testing.B) {
	_, _, front, _ := setup(b)
	c := front.Client()
	url := front.URL + "/copy"
	body := []byte(`{"hello":"world"}`)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != int64(len(body)) {
			b.Fatalf("status %d, %d bytes", resp.StatusCode, n)
		}
	}
}

func BenchmarkInvoke(b *testing.B) {
	_, p, _, _ := setup(b)
	payload := []byte(`{"hello":"world"}`)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Invoke(ctx, payload, nil); err != nil {
			b.Fatal(err)
		}
	}
}

package lambda_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"aloft/internal/runtime/lambda"
)

// wire is a runtime speaking HTTP/1.1 by hand on one connection, so a test
// controls which connection carries which request.
type wire struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialWire(t *testing.T, addr string) *wire {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &wire{t: t, c: c, br: bufio.NewReader(c)}
}

func (w *wire) send(raw string) {
	w.t.Helper()
	if _, err := io.WriteString(w.c, raw); err != nil {
		w.t.Fatal(err)
	}
}

func (w *wire) read() (*http.Response, string) {
	w.t.Helper()
	_ = w.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(w.br, nil)
	if err != nil {
		w.t.Fatalf("read response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		w.t.Fatal(err)
	}
	return resp, string(b)
}

const getNext = "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: rt\r\n\r\n"

func post(id, kind, body string, extra ...string) string {
	return "POST /2018-06-01/runtime/invocation/" + id + "/" + kind + " HTTP/1.1\r\nHost: rt\r\n" +
		strings.Join(extra, "") + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

// TestAnswerOnAnotherConnection: a runtime that drops the connection it
// got the invocation on and posts on a new one (as a client retrying on a
// fresh connection does) is still heard.
func TestAnswerOnAnotherConnection(t *testing.T) {
	s, addr := startServer(t, lambda.Config{})
	w1 := dialWire(t, addr)
	w1.send(getNext)
	if err := s.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	inv := newInvocation(`{"n":1}`)
	wait := startInvoke(t, s, inv)
	resp, body := w1.read()
	if resp.Header.Get("Lambda-Runtime-Aws-Request-Id") != inv.ID || body != `{"n":1}` {
		t.Fatalf("next: %v %q", resp.Header, body)
	}
	w1.c.Close()
	w2 := dialWire(t, addr)
	w2.send(post(inv.ID, "response", `"answer"`))
	if resp, _ := w2.read(); resp.StatusCode != 202 {
		t.Errorf("post on a new connection: %d", resp.StatusCode)
	}
	res, err := wait()
	if err != nil || string(res.Payload) != `"answer"` {
		t.Fatalf("invoke = %v, %v", res, err)
	}
	// The new connection now serves the next invocation.
	w2.send(getNext)
	inv2 := newInvocation(`2`)
	wait = startInvoke(t, s, inv2)
	if _, body := w2.read(); body != `2` {
		t.Fatalf("second next body %q", body)
	}
	w2.send(post(inv2.ID, "error", `{"errorType":"E","errorMessage":"m"}`))
	if resp, _ := w2.read(); resp.StatusCode != 202 {
		t.Errorf("post error: %d", resp.StatusCode)
	}
	if res, err := wait(); err != nil || !res.FunctionError {
		t.Fatalf("invoke 2 = %v, %v", res, err)
	}
}

// TestDirectConversation covers what a runtime may send on its connection
// while an invocation runs: other API calls, a wrong id, Expect:
// 100-continue, a chunked answer with an error trailer, and asking for the
// next invocation before answering.
func TestDirectConversation(t *testing.T) {
	s, addr := startServer(t, lambda.Config{})
	w := dialWire(t, addr)
	w.send(getNext)
	inv := newInvocation(`{}`)
	wait := startInvoke(t, s, inv)
	w.read()

	w.send("GET /2018-06-01/ping HTTP/1.1\r\nHost: rt\r\n\r\n")
	if resp, body := w.read(); resp.StatusCode != 200 || body != "pong" {
		t.Errorf("ping during an invocation: %d %q", resp.StatusCode, body)
	}
	w.send(post("other", "response", `1`))
	if resp, body := w.read(); resp.StatusCode != 400 || !strings.Contains(body, "InvalidRequestID") {
		t.Errorf("wrong id: %d %s", resp.StatusCode, body)
	}
	w.send(post(inv.ID, "response", `1`, "Lambda-Runtime-Function-Response-Mode: bogus\r\n"))
	if resp, body := w.read(); resp.StatusCode != 400 || !strings.Contains(body, "InvalidResponseModeHeader") {
		t.Errorf("bad mode: %d %s", resp.StatusCode, body)
	}
	// The body follows only once 100 Continue came, as a client that
	// waits for it sends it.
	w.send("POST /2018-06-01/runtime/invocation/" + inv.ID + "/response HTTP/1.1\r\nHost: rt\r\n" +
		"Expect: 100-continue\r\nTransfer-Encoding: chunked\r\nTrailer: Lambda-Runtime-Function-Error-Type\r\n\r\n")
	if resp, _ := w.read(); resp.StatusCode != 100 {
		t.Errorf("expect continue: %d", resp.StatusCode)
	}
	w.send("3\r\nabc\r\n0\r\nLambda-Runtime-Function-Error-Type: Runtime.Stream\r\n\r\n")
	if resp, _ := w.read(); resp.StatusCode != 202 {
		t.Errorf("chunked post: %d", resp.StatusCode)
	}
	res, err := wait()
	if err != nil {
		t.Fatal(err)
	}
	if e := decodeError(t, res); e.Type != "Runtime.Stream" {
		t.Errorf("trailer error = %s", res.Payload)
	}
	// Posting twice between invocations: refused at once.
	w.send(post(inv.ID, "response", `1`))
	if resp, _ := w.read(); resp.StatusCode != 403 {
		t.Errorf("post twice: %d", resp.StatusCode)
	}

	// Asking for the next invocation before answering: the answer comes on
	// another connection and the first one gets the invocation after.
	w.send(getNext)
	inv2 := newInvocation(`"two"`)
	wait = startInvoke(t, s, inv2)
	w.read()
	w.send(getNext)
	w2 := dialWire(t, addr)
	w2.send(post(inv2.ID, "response", `"late"`))
	if resp, _ := w2.read(); resp.StatusCode != 202 {
		t.Errorf("answer on the second connection: %d", resp.StatusCode)
	}
	if res, err := wait(); err != nil || string(res.Payload) != `"late"` {
		t.Fatalf("invoke 2 = %v, %v", res, err)
	}
	inv3 := newInvocation(`3`)
	wait = startInvoke(t, s, inv3)
	if _, body := w.read(); body != `3` {
		t.Fatalf("third next body %q", body)
	}
	w.send(post(inv3.ID, "response", `3`))
	w.read()
	if res, err := wait(); err != nil || string(res.Payload) != `3` {
		t.Fatalf("invoke 3 = %v, %v", res, err)
	}
}

// TestDirectTimeout: a runtime that never answers leaves Invoke with its
// ctx's error, and its connection is closed.
func TestDirectTimeout(t *testing.T) {
	s, addr := startServer(t, lambda.Config{})
	w := dialWire(t, addr)
	w.send(getNext)
	if err := s.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := s.Invoke(ctx, newInvocation(`{}`))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("invoke = %v, want the deadline", err)
	}
	w.read() // the invocation
	_ = w.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := w.br.ReadByte(); err != io.EOF {
		t.Errorf("connection after the timeout: read %v, want EOF", err)
	}
}

// TestDirectBoundsRequestHead: a runtime sending a header without end is
// cut off (the server does not buffer it), and Invoke ends with its ctx.
func TestDirectBoundsRequestHead(t *testing.T) {
	s, addr := startServer(t, lambda.Config{})
	w := dialWire(t, addr)
	w.send(getNext)
	if err := s.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	inv := newInvocation(`{}`)
	done := make(chan error, 1)
	go func() {
		_, err := s.Invoke(ctx, inv)
		done <- err
	}()
	w.read()
	_ = w.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := io.WriteString(w.c, "POST /2018-06-01/runtime/invocation/"+inv.ID+"/response HTTP/1.1\r\nX-Endless: ")
	chunk := strings.Repeat("a", 64<<10)
	sent := 0
	for err == nil && sent < 64<<20 {
		var n int
		n, err = io.WriteString(w.c, chunk)
		sent += n
	}
	if err == nil {
		t.Fatalf("the server took %d bytes of one header line", sent)
	}
	if sent > 8<<20 {
		t.Errorf("the server read %d bytes of one header line before closing", sent)
	}
	if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("invoke = %v, want its deadline", err)
	}
}

// TestDirectRuntimeLeftItsConnection: a runtime that closes the connection
// it waited on and asks again on a new one gets the invocation there.
func TestDirectRuntimeLeftItsConnection(t *testing.T) {
	s, addr := startServer(t, lambda.Config{})
	w1 := dialWire(t, addr)
	w1.send(getNext)
	if err := s.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	w1.c.Close()
	time.Sleep(50 * time.Millisecond) // the close reaches the server
	inv := newInvocation(`"again"`)
	wait := startInvoke(t, s, inv)
	time.Sleep(50 * time.Millisecond) // Invoke finds the closed connection first
	w2 := dialWire(t, addr)
	w2.send(getNext)
	if resp, body := w2.read(); resp.Header.Get("Lambda-Runtime-Aws-Request-Id") != inv.ID || body != `"again"` {
		t.Fatalf("next on the new connection: %v %q", resp.Header, body)
	}
	w2.send(post(inv.ID, "response", `"done"`))
	w2.read()
	if res, err := wait(); err != nil || string(res.Payload) != `"done"` {
		t.Fatalf("invoke = %v, %v", res, err)
	}
}

// TestDirectAnswerOnAnotherOpenConnection: a runtime with a pool of
// connections may post the answer on another one while the connection it
// got the invocation on stays open and idle; Invoke returns at once, and
// the idle connection still serves the next invocation.
func TestDirectAnswerOnAnotherOpenConnection(t *testing.T) {
	s, addr := startServer(t, lambda.Config{})
	w1 := dialWire(t, addr)
	w1.send(getNext)
	if err := s.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	inv := newInvocation(`1`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type ret struct {
		payload string
		err     error
		took    time.Duration
	}
	done := make(chan ret, 1)
	start := time.Now()
	go func() {
		res, err := s.Invoke(ctx, inv)
		r := ret{err: err, took: time.Since(start)}
		if res != nil {
			r.payload = string(res.Payload)
		}
		done <- r
	}()
	w1.read()
	w2 := dialWire(t, addr)
	w2.send(post(inv.ID, "response", `"via two"`))
	if resp, _ := w2.read(); resp.StatusCode != 202 {
		t.Fatalf("post on the second connection: %d", resp.StatusCode)
	}
	r := <-done
	if r.err != nil || r.payload != `"via two"` || r.took > 10*time.Second {
		t.Fatalf("invoke = %q, %v after %s", r.payload, r.err, r.took)
	}
	// The first connection, idle all along, asks for and gets the next one.
	w1.send(getNext)
	inv2 := newInvocation(`2`)
	wait := startInvoke(t, s, inv2)
	if _, body := w1.read(); body != `2` {
		t.Fatalf("next on the first connection: %q", body)
	}
	w1.send(post(inv2.ID, "response", `"two"`))
	w1.read()
	if res, err := wait(); err != nil || string(res.Payload) != `"two"` {
		t.Fatalf("invoke 2 = %v, %v", res, err)
	}
}

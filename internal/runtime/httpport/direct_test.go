package httpport_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"aloft/internal/runtime/httpport"
)

// proxyTo serves a Proxy to the instance at addr and returns the front
// server and the count of dials.
func proxyTo(t *testing.T, addr string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var dials atomic.Int64
	var d net.Dialer
	p := httpport.New(httpport.Config{Dial: func(ctx context.Context) (net.Conn, error) {
		dials.Add(1)
		return d.DialContext(ctx, "tcp", addr)
	}})
	t.Cleanup(p.Close)
	front := httptest.NewServer(p)
	t.Cleanup(front.Close)
	return front, &dials
}

// instance serves h as an http-runtime instance would.
func instance(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

func get(t *testing.T, c *http.Client, method, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestDirectHeadersAndTrailers(t *testing.T) {
	addr := instance(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Hop") != "" || r.Header.Get("Connection") != "" || r.Header.Get("Keep-Alive") != "" {
			t.Errorf("hop-by-hop fields reached the instance: %v", r.Header)
		}
		if got := r.Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
			t.Errorf("X-Forwarded-For = %q", got)
		}
		if got := r.Header.Get("X-Forwarded-Host"); r.Method == http.MethodGet && got != "fn.example" {
			t.Errorf("X-Forwarded-Host = %q", got)
		}
		w.Header().Set("Trailer", "X-Sum")
		w.Header().Set("X-Kept", "1")
		w.Header().Set("Connection", "X-Private")
		w.Header().Set("X-Private", "hop")
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", "5")
			return
		}
		w.(http.Flusher).Flush() // a stream: chunked, with the trailer
		io.WriteString(w, "hello")
		w.Header().Set("X-Sum", "42")
	})
	front, _ := proxyTo(t, addr)
	req, _ := http.NewRequest("GET", front.URL+"/x", nil)
	req.Host = "fn.example"
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "1")
	resp, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hello" || resp.Header.Get("X-Kept") != "1" || resp.Header.Get("X-Private") != "" {
		t.Errorf("response %q, header %v", b, resp.Header)
	}
	if got := resp.Trailer.Get("X-Sum"); got != "42" {
		t.Errorf("trailer X-Sum = %q, want 42", got)
	}
	resp, body := get(t, front.Client(), "HEAD", front.URL+"/x", nil)
	if resp.StatusCode != 200 || body != "" || resp.ContentLength != 5 {
		t.Errorf("HEAD: %d, %q, length %d", resp.StatusCode, body, resp.ContentLength)
	}
}

// TestDirectStreamsResponse: a response without a length reaches the
// client piece by piece; the instance writes the next line only once the
// client has read the previous one.
func TestDirectStreamsResponse(t *testing.T) {
	read := make(chan struct{})
	addr := instance(t, func(w http.ResponseWriter, r *http.Request) {
		for i := range 3 {
			io.WriteString(w, "line\n")
			w.(http.Flusher).Flush()
			if i < 2 {
				select {
				case <-read:
				case <-time.After(10 * time.Second):
					t.Error("the client never got a line: the proxy buffers")
					return
				}
			}
		}
	})
	front, _ := proxyTo(t, addr)
	resp, err := front.Client().Get(front.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		if l, err := br.ReadString('\n'); err != nil || l != "line\n" {
			t.Fatalf("line %d: %q, %v", i, l, err)
		}
		if i < 2 {
			read <- struct{}{}
		}
	}
}

// TestDirectResendsOnStaleConnection: an instance that closes kept-alive
// connections while idle (without saying so) costs a re-dial, not an error.
func TestDirectResendsOnStaleConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(req.URL.Path))+"\r\n\r\n"+req.URL.Path)
				time.Sleep(20 * time.Millisecond) // then close: the proxy keeps a dead connection
			}()
		}
	}()
	front, dials := proxyTo(t, ln.Addr().String())
	for i, path := range []string{"/one", "/two", "/three"} {
		if resp, body := get(t, front.Client(), "GET", front.URL+path, nil); resp.StatusCode != 200 || body != path {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
		time.Sleep(100 * time.Millisecond) // longer than freshIdle: the proxy looks
	}
	if n := dials.Load(); n != 3 {
		t.Errorf("%d dials, want 3 (one per request: each kept connection was dead)", n)
	}
}

// TestDirectSkipsInformational: 1xx answers before the final one are not
// the answer.
func TestDirectSkipsInformational(t *testing.T) {
	addr := instance(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "made")
	})
	front, _ := proxyTo(t, addr)
	if resp, body := get(t, front.Client(), "POST", front.URL+"/", nil); resp.StatusCode != 201 || body != "made" {
		t.Errorf("got %d %q", resp.StatusCode, body)
	}
}

// TestDirectBoundsResponseHead: an instance answering with a header
// without end gets its client a 502, not a server buffering it.
func TestDirectBoundsResponseHead(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	sent := make(chan int, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		n, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Endless: ")
		chunk := strings.Repeat("a", 64<<10)
		for err == nil && n < 64<<20 {
			var m int
			m, err = io.WriteString(c, chunk)
			n += m
		}
		sent <- n
	}()
	front, _ := proxyTo(t, ln.Addr().String())
	resp, _ := get(t, front.Client(), "GET", front.URL+"/", nil)
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d, want 502", resp.StatusCode)
	}
	if n := <-sent; n >= 64<<20 {
		t.Errorf("the proxy took %d bytes of one header line", n)
	}
}

// TestDirectNoticesClosedIdleConnection: a POST (not safe to send twice)
// after the instance closed the idle connection still goes out once, on a
// fresh connection.
func TestDirectNoticesClosedIdleConnection(t *testing.T) {
	var posts atomic.Int64
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			posts.Add(1)
		}
		io.WriteString(w, "ok")
	}))
	s.Config.IdleTimeout = 60 * time.Millisecond // as Node closes idle connections after 5 s; over freshIdle
	s.Start()
	t.Cleanup(s.Close)
	front, dials := proxyTo(t, strings.TrimPrefix(s.URL, "http://"))
	for i := range 3 {
		req, _ := http.NewRequest("POST", front.URL+"/", strings.NewReader("x"))
		resp, err := front.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("post %d: %d %q", i, resp.StatusCode, b)
		}
		time.Sleep(150 * time.Millisecond)
	}
	if n := posts.Load(); n != 3 {
		t.Errorf("the instance got %d posts, want 3", n)
	}
	if n := dials.Load(); n != 3 {
		t.Errorf("%d dials, want 3", n)
	}
}

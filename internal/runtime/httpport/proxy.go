// Package httpport talks to instances of the `http` runtime: any program
// that serves HTTP on $PORT. Proxy forwards client requests to one instance
// as they are, streaming both ways over kept-alive connections, and turns
// event-style invocations into POST / requests.
package httpport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"aloft/internal/fn"
	"aloft/internal/httperror"
)

// DefaultMaxResponse caps an Invoke response body: 6 MiB + 100 bytes, the
// same limit as a Lambda runtime's response.
const DefaultMaxResponse = 6*1024*1024 + 100

// DefaultMaxIdleConns is the number of idle kept-alive connections to the
// instance a Proxy keeps when Config.MaxIdleConns is zero.
const DefaultMaxIdleConns = 64

// Config configures a Proxy.
type Config struct {
	// Logger receives the proxy's own diagnostics; nil discards them.
	Logger *slog.Logger
	// Dial opens a connection to the instance's port (required): the
	// instance lives in its own network namespace, so only the caller
	// knows how to reach it.
	Dial func(ctx context.Context) (net.Conn, error)
	// MaxIdleConns bounds the idle connections kept for reuse; zero means
	// DefaultMaxIdleConns.
	MaxIdleConns int
	// MaxResponse caps the body Invoke reads; zero means DefaultMaxResponse.
	// ServeHTTP streams and has no cap.
	MaxResponse int64
}

// Proxy forwards requests to one instance. It is safe for concurrent use.
type Proxy struct {
	log         *slog.Logger
	dial        func(ctx context.Context) (net.Conn, error)
	maxResponse int64
	transport   *http.Transport // streams and upgrades, through rp
	rp          httputil.ReverseProxy
	conns       conns // the direct path's (direct.go)
	buffers     *bufferPool
}

// New returns a Proxy for the instance cfg.Dial reaches. A nil cfg.Dial
// yields a Proxy whose every call fails.
func New(cfg Config) *Proxy {
	p := &Proxy{log: cfg.Logger, dial: cfg.Dial, maxResponse: cfg.MaxResponse, buffers: &bufferPool{}}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.dial == nil {
		p.dial = func(context.Context) (net.Conn, error) {
			return nil, errors.New("httpport: no Dial configured")
		}
	}
	if p.maxResponse <= 0 {
		p.maxResponse = DefaultMaxResponse
	}
	idle := cfg.MaxIdleConns
	if idle <= 0 {
		idle = DefaultMaxIdleConns
	}
	p.conns.max = idle
	p.transport = &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return p.dial(ctx)
		},
		MaxIdleConns:           idle,
		MaxIdleConnsPerHost:    idle,
		IdleConnTimeout:        90 * time.Second,
		DisableCompression:     true,
		MaxResponseHeaderBytes: maxResponseHead,
	}
	p.rp = httputil.ReverseProxy{
		Rewrite:       rewrite,
		Transport:     p.transport,
		FlushInterval: 0, // responses without a length (streams) are still flushed on every write
		ErrorLog:      slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		ErrorHandler:  p.badGateway,
		BufferPool:    p.buffers,
	}
	return p
}

// bufferPool lends ReverseProxy its copy buffers, which it would otherwise
// allocate (32 KiB) per request.
type bufferPool struct{ pool sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.pool.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.pool.Put(&buf) }

// instanceHost names the instance in request URLs; Dial ignores it.
const instanceHost = "instance"

func rewrite(r *httputil.ProxyRequest) {
	r.Out.URL.Scheme = "http"
	r.Out.URL.Host = instanceHost
	r.Out.Host = r.In.Host
	// Keep the chain of proxies in front of us, then add the client.
	if prior, ok := r.In.Header["X-Forwarded-For"]; ok {
		r.Out.Header["X-Forwarded-For"] = prior
	}
	r.SetXForwarded()
}

// ServeHTTP forwards r to the instance as it is (the caller has already
// rewritten its path and query) and streams the answer back. Request and
// response bodies stream in both directions at once. When the instance
// cannot be reached or breaks the connection, the client gets 502 with
// {"error":{"code":"bad_gateway","message":...}}; when r's deadline passes
// first, 504 with the code "timeout".
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if direct(r) {
		p.serveDirect(w, r)
		return
	}
	// Let handlers that answer while still reading (streams) do so over
	// HTTP/1; HTTP/2 is full duplex already and reports ErrNotSupported.
	_ = http.NewResponseController(w).EnableFullDuplex()
	p.rp.ServeHTTP(w, r)
}

// badGateway answers a request the instance did not answer: 504 when the
// request's deadline passed (the function's timeout; the deadline's cause,
// if any, is the message), else 502.
func (p *Proxy) badGateway(w http.ResponseWriter, r *http.Request, err error) {
	ctx := r.Context()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		msg := "the function did not answer within its timeout"
		if cause := context.Cause(ctx); cause != nil && cause != context.DeadlineExceeded {
			msg = cause.Error()
		}
		p.log.Debug("proxy request timed out", "method", r.Method, "path", r.URL.Path, "error", err)
		httperror.Write(w, p.log, "", fn.Errorf(http.StatusGatewayTimeout, "timeout", "%s", msg))
		return
	}
	if ctx.Err() != nil {
		// The client went away; nobody reads the reply.
		p.log.Debug("proxy request canceled", "error", err)
	} else {
		p.log.Warn("proxy to instance", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	httperror.Write(w, p.log, "", fn.Errorf(http.StatusBadGateway, "bad_gateway", "the function instance did not answer"))
}

// Invoke POSTs payload to / on the instance, with the extra request
// headers in header, and returns the response body as the result. A
// status of 500 or more makes a FunctionError result with the body
// {"errorType":"Function.HTTPError","errorMessage":"status N: <first 256
// bytes of the body>"}; a body over MaxResponse makes a
// Function.ResponseSizeTooLarge FunctionError result. It returns an error
// when the instance cannot be reached or breaks the connection, and ctx's
// error (wrapped) when ctx ends first.
func (p *Proxy) Invoke(ctx context.Context, payload []byte, header map[string]string) (*fn.Result, error) {
	h := http.Header{"Content-Type": {"application/json"}}
	for k, v := range header {
		h.Set(k, v)
	}
	o := &outgoing{method: http.MethodPost, uri: "/", host: instanceHost, header: h, body: payload}
	req := &http.Request{Method: http.MethodPost} // what reading the response needs to know
	resp, pc, err := p.roundTrip(ctx, o, req)
	if err != nil {
		return nil, fmt.Errorf("invoke http instance: %w", err)
	}
	complete := false
	defer func() { p.release(pc, resp, complete) }()
	body, tooLarge, err := readLimited(resp.Body, resp.ContentLength, p.maxResponse)
	if err != nil {
		return nil, fmt.Errorf("invoke http instance: read response: %w", err)
	}
	complete = !tooLarge
	if tooLarge {
		return &fn.Result{
			Payload: fn.ErrorPayload("Function.ResponseSizeTooLarge",
				fmt.Sprintf("Response payload size exceeded maximum allowed payload size (%d bytes).", p.maxResponse)),
			FunctionError: true,
			ContentType:   "application/json",
		}, nil
	}
	if resp.StatusCode >= 500 {
		head := body[:min(len(body), 256)]
		return &fn.Result{
			Payload:       fn.ErrorPayload("Function.HTTPError", fmt.Sprintf("status %d: %s", resp.StatusCode, head)),
			FunctionError: true,
			ContentType:   "application/json",
		}, nil
	}
	return &fn.Result{Payload: body, ContentType: resp.Header.Get("Content-Type")}, nil
}

// readLimited reads r to its end, up to limit bytes; n is the declared
// length or -1.
func readLimited(r io.Reader, n, limit int64) (body []byte, tooLarge bool, err error) {
	if n > limit {
		return nil, true, nil
	}
	var buf bytes.Buffer
	if n > 0 {
		buf.Grow(int(n))
	}
	got, err := buf.ReadFrom(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, false, err
	}
	if got > limit {
		return nil, true, nil
	}
	return buf.Bytes(), false, nil
}

// WaitReady returns nil once Dial succeeds, that is once the instance
// listens on its port. It retries with a back-off from 200µs doubling to
// 20ms, and returns ctx's error, joined with the last dial error, when ctx
// ends first.
func (p *Proxy) WaitReady(ctx context.Context) error {
	const first, most = 200 * time.Microsecond, 20 * time.Millisecond
	wait := first
	var timer *time.Timer
	for {
		conn, err := p.dial(ctx)
		if err == nil {
			// Keeping the connection for the first request would save a
			// dial, but the transport owns its pool; close it.
			_ = conn.Close()
			return nil
		}
		if timer == nil {
			timer = time.NewTimer(wait)
			defer timer.Stop()
		} else {
			timer.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for http instance to listen: %w", errors.Join(ctx.Err(), err))
		case <-timer.C:
		}
		wait = min(wait*2, most)
	}
}

// Close drops the idle connections to the instance. Requests in flight
// finish or fail when the instance goes away.
func (p *Proxy) Close() {
	p.transport.CloseIdleConnections()
	p.conns.close()
}

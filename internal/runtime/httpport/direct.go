package httpport

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The direct path. http.Transport runs every request through two
// goroutines of its own (one writes, one reads), and each hand-off between
// them and the caller is a thread wake-up, which on the machines Aloft was
// measured on cost as much as the request. Requests whose body is small
// and known (most are: GETs, JSON posts, invocations) go instead over
// connections this file keeps: the caller's goroutine writes the request
// and reads the answer itself. Streaming requests (a body of unknown
// length or over directBodyMax) and upgrades go through
// httputil.ReverseProxy, which streams both ways at once.

// directBodyMax is the largest request body the direct path reads before
// forwarding.
const directBodyMax = 64 << 10

// hopHeaders are dropped between client and instance, both ways (RFC 9110
// §7.6.1), as httputil.ReverseProxy drops them.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// maxResponseHead bounds the status line and header fields of an
// instance's answer (the function's code must not make the server buffer
// without end); the reverse proxy's transport has the same bound.
const maxResponseHead = 1 << 20

// pconn is a kept-alive connection to the instance.
type pconn struct {
	c    net.Conn
	lr   *io.LimitedReader // under br: bounds a response head
	br   *bufio.Reader
	bw   *bufio.Writer
	idle time.Time // when it was put back in the pool
}

// freshIdle is how long a connection can have been idle and still be used
// without looking whether the instance closed it. Servers close idle
// connections after seconds (Node after 5, gunicorn after 2); under load a
// connection comes back within milliseconds, and the look is a system call.
const freshIdle = 50 * time.Millisecond

func newPconn(c net.Conn) *pconn {
	lr := &io.LimitedReader{R: c, N: math.MaxInt64}
	return &pconn{c: c, lr: lr, br: bufio.NewReaderSize(lr, 16<<10), bw: bufio.NewWriterSize(c, 16<<10)}
}

// conns is the direct path's pool of idle connections.
type conns struct {
	mu     sync.Mutex
	idle   []*pconn
	max    int
	closed bool
}

// get returns an idle connection the instance has not closed, or nil.
func (cs *conns) get() *pconn {
	for {
		cs.mu.Lock()
		n := len(cs.idle)
		if n == 0 {
			cs.mu.Unlock()
			return nil
		}
		pc := cs.idle[n-1]
		cs.idle = cs.idle[:n-1]
		cs.mu.Unlock()
		// Servers close idle connections (Node's after 5 s): look before
		// sending, as http.Transport's reader would have noticed.
		if time.Since(pc.idle) < freshIdle || idleOpen(pc.c) {
			return pc
		}
		_ = pc.c.Close()
	}
}

func (cs *conns) put(pc *pconn) {
	pc.idle = time.Now()
	cs.mu.Lock()
	if !cs.closed && len(cs.idle) < cs.max {
		cs.idle = append(cs.idle, pc)
		pc = nil
	}
	cs.mu.Unlock()
	if pc != nil {
		_ = pc.c.Close()
	}
}

func (cs *conns) close() {
	cs.mu.Lock()
	idle := cs.idle
	cs.idle, cs.closed = nil, true
	cs.mu.Unlock()
	for _, pc := range idle {
		_ = pc.c.Close()
	}
}

// direct reports whether r can take the direct path.
func direct(r *http.Request) bool {
	if r.ProtoMajor != 1 || r.ContentLength < 0 || r.ContentLength > directBodyMax {
		return false
	}
	for _, v := range r.Header["Connection"] {
		if strings.Contains(strings.ToLower(v), "upgrade") {
			return false
		}
	}
	return r.Header.Get("Upgrade") == ""
}

// outgoing is a request as the direct path writes it.
type outgoing struct {
	method, uri, host string
	header            http.Header
	body              []byte
}

// roundTrip sends o on a kept-alive connection (a fresh one when none is
// idle) and reads the response head. When a kept connection turns out
// closed, o is sent again on a fresh one if that is safe: it never left,
// or its method is idempotent (as http.Transport decides). The caller
// reads the body and then calls release.
func (p *Proxy) roundTrip(ctx context.Context, o *outgoing, req *http.Request) (*http.Response, *pconn, error) {
	for attempt := 0; ; attempt++ {
		pc := p.conns.get()
		reused := pc != nil
		if !reused {
			c, err := p.dial(ctx)
			if err != nil {
				return nil, nil, fmt.Errorf("dial instance: %w", err)
			}
			pc = newPconn(c)
		}
		stop := context.AfterFunc(ctx, func() { _ = pc.c.SetDeadline(time.Unix(1, 0)) })
		resp, err := p.exchange(pc, o, req)
		if !stop() {
			// ctx ended: the deadline is poisoned, and the caller gives up.
			_ = pc.c.Close()
			return nil, nil, cmp.Or(ctx.Err(), err)
		}
		if err == nil {
			return resp, pc, nil
		}
		_ = pc.c.Close()
		var we *writeError
		if !reused || attempt > 0 || !staleConn(err) || !(errors.As(err, &we) || replayable(o)) {
			return nil, nil, err
		}
	}
}

// writeError is a failure to send a request: the instance did not get it
// whole, so it did not run it.
type writeError struct{ err error }

func (e *writeError) Error() string { return "send request to instance: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// replayable reports whether o may be sent twice.
func replayable(o *outgoing) bool {
	switch o.method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return o.header.Get("Idempotency-Key") != "" || o.header.Get("X-Idempotency-Key") != ""
}

// staleConn reports whether err is what a connection closed by the peer
// while idle gives on its first use.
func staleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// exchange writes o on pc and reads the response head, skipping
// informational (1xx) responses: the final one follows them.
func (p *Proxy) exchange(pc *pconn, o *outgoing, req *http.Request) (*http.Response, error) {
	w := pc.bw
	w.WriteString(o.method)
	w.WriteByte(' ')
	w.WriteString(o.uri)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(o.host)
	w.WriteString("\r\n")
	for k, vs := range o.header {
		for _, v := range vs {
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(v)
			w.WriteString("\r\n")
		}
	}
	if len(o.body) > 0 || o.method == http.MethodPost || o.method == http.MethodPut || o.method == http.MethodPatch {
		w.WriteString("Content-Length: ")
		w.WriteString(strconv.Itoa(len(o.body)))
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
	w.Write(o.body)
	if err := w.Flush(); err != nil {
		return nil, &writeError{err}
	}
	for {
		pc.lr.N = maxResponseHead
		resp, err := http.ReadResponse(pc.br, req)
		pc.lr.N = math.MaxInt64 // the body streams, as long as it is
		if err != nil {
			return nil, fmt.Errorf("read instance response: %w", err)
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue // 100 Continue, 103 Early Hints: the final answer follows
		}
		return resp, nil
	}
}

// release returns pc to the pool when resp's body was read to its end and
// the connection may carry another request, and closes it otherwise.
func (p *Proxy) release(pc *pconn, resp *http.Response, complete bool) {
	_ = resp.Body.Close()
	if !complete || resp.Close || pc.br.Buffered() > 0 {
		_ = pc.c.Close()
		return
	}
	p.conns.put(pc)
}

// serveDirect forwards r on the direct path; r's body has at most
// directBodyMax bytes.
func (p *Proxy) serveDirect(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, directBodyMax+1))
	if err != nil || len(body) > directBodyMax {
		// The client broke off (or lied about the length): nobody reads a
		// reply, but the connection must not be reused.
		p.log.Debug("read client request", "error", err)
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	o := &outgoing{method: r.Method, uri: r.URL.RequestURI(), host: r.Host, header: outHeader(r), body: body}
	resp, pc, err := p.roundTrip(r.Context(), o, r)
	if err != nil {
		p.badGateway(w, r, err)
		return
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// Nothing asked for an upgrade on this path.
		p.release(pc, resp, false)
		p.badGateway(w, r, errors.New("the instance switched protocols unasked"))
		return
	}
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = vs
	}
	removeHop(h)
	if len(resp.Trailer) > 0 {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	w.WriteHeader(resp.StatusCode)
	complete, err := copyBody(w, resp, p.buffers)
	if err == nil {
		for k, vs := range resp.Trailer {
			h[http.TrailerPrefix+k] = vs
		}
	}
	p.release(pc, resp, complete)
	if err != nil && !complete {
		// The answer broke off midway; the client must see it did.
		p.log.Debug("copy instance response", "error", err)
		panic(http.ErrAbortHandler)
	}
}

// copyBody streams resp's body to w, flushing after every read when the
// length is unknown (a stream), and reports whether the body was read to
// its end.
func copyBody(w http.ResponseWriter, resp *http.Response, buffers *bufferPool) (complete bool, err error) {
	stream := resp.ContentLength < 0
	flush := func() {}
	if f, ok := w.(http.Flusher); ok && stream {
		flush = f.Flush
	}
	buf := buffers.Get()
	defer buffers.Put(buf)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return false, werr
			}
			flush()
		}
		if rerr == io.EOF {
			return true, nil
		}
		if rerr != nil {
			return false, rerr
		}
	}
}

// outHeader is the header sent to the instance: the client's without
// hop-by-hop fields, with X-Forwarded-For extended by the client's address
// and X-Forwarded-Host and -Proto set, as the reverse proxy's rewrite does.
func outHeader(r *http.Request) http.Header {
	h := make(http.Header, len(r.Header)+3)
	for k, vs := range r.Header {
		h[k] = vs
	}
	te := h["Te"]
	removeHop(h)
	for _, v := range te {
		if strings.Contains(strings.ToLower(v), "trailers") {
			h["Te"] = []string{"trailers"}
		}
	}
	delete(h, "Host")
	delete(h, "Content-Length")
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := h["X-Forwarded-For"]; len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		h["X-Forwarded-For"] = []string{ip}
	} else {
		delete(h, "X-Forwarded-For")
	}
	h["X-Forwarded-Host"] = []string{r.Host}
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	h["X-Forwarded-Proto"] = []string{proto}
	return h
}

// removeHop deletes the hop-by-hop fields of h, and those its Connection
// field names.
func removeHop(h http.Header) {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

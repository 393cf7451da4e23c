package lambda

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"aloft/internal/fn"
	"aloft/internal/respbuf"
)

// The direct path. A runtime long-polls GET /next and then posts its answer
// on the same kept-alive connection (aws-lambda-go and the Python bootstrap
// keep one; Node's agent keeps a few and mostly reuses the last). Handing
// each invocation from Invoke to
// an http.Server handler goroutine, and the answer back, costs two
// goroutine wake-ups per invocation, which on these machines show in both
// latency and CPU. So the handler of GET /next takes the connection over
// (Hijack) and parks it; Invoke then writes the invocation on it and reads
// the runtime's answer itself, on the caller's goroutine. Between
// invocations a goroutine per connection reads the runtime's next request
// (GET /next parks the connection again; anything else is served as the
// http.Server would). Posts on other connections still go through the
// http.Server and deliver their outcome as before; a delivery wakes the
// Invoke that reads the connection it sent the invocation on.

// rconn is a runtime connection taken over from the http.Server.
type rconn struct {
	c  net.Conn
	lr *io.LimitedReader // under br: bounds what one request may send
	br *bufio.Reader
	bw *bufio.Writer
}

// maxRequestHead bounds a request line and header fields on a taken-over
// connection, as http.Server's default MaxHeaderBytes does: the runtime
// is the function's code, and must not make the server buffer without end.
const maxRequestHead = 1 << 20

// newRconn takes over c, with what the http.Server had read ahead of it.
func newRconn(c net.Conn, brw *bufio.ReadWriter) *rconn {
	ahead, _ := brw.Reader.Peek(brw.Reader.Buffered())
	lr := &io.LimitedReader{R: io.MultiReader(bytes.NewReader(bytes.Clone(ahead)), c)}
	return &rconn{c: c, lr: lr, br: bufio.NewReader(lr), bw: brw.Writer}
}

// readRequest reads the next request on rc: its head at most
// maxRequestHead bytes, and with its body at most maxBody more.
func (rc *rconn) readRequest(maxBody int64) (*http.Request, error) {
	rc.lr.N = maxRequestHead
	req, err := http.ReadRequest(rc.br)
	if err == nil {
		rc.lr.N += maxBody + 64<<10 // and what the reader buffers past the body
	}
	return req, err
}

// maxParked bounds the connections waiting with a GET /next; a runtime has
// one, a misbehaving one gets its surplus connections closed.
const maxParked = 16

// errConnLost means the runtime's connection broke or sent something the
// direct path leaves to others; the answer may still come on another
// connection.
var errConnLost = errors.New("runtime connection lost")

// errNotRead means the runtime had closed the connection before the
// invocation was sent on it (it left its GET /next): the invocation goes
// to the connection it asks on next.
var errNotRead = errors.New("runtime connection closed before the invocation")

// park offers rc, whose runtime waits for the response to a GET /next, to
// the next Invoke.
func (s *Server) park(rc *rconn) {
	s.readyOnce.Do(func() { close(s.ready) })
	select {
	case s.conns <- rc:
	default:
		s.log.Warn("runtime holds too many connections in GET /next; closing one")
		s.drop(rc)
	}
}

// track records rc so Close can close it; it reports false after Close.
func (s *Server) track(rc *rconn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.closed:
		return false
	default:
	}
	s.hijacked[rc] = struct{}{}
	return true
}

func (s *Server) drop(rc *rconn) {
	s.mu.Lock()
	delete(s.hijacked, rc)
	s.mu.Unlock()
	_ = rc.c.Close()
}

// exchange sends inv on rc, whose runtime waits in GET /next, and reads
// requests until the runtime posts inv's outcome. It returns the outcome;
// errNotRead when the runtime had left rc (inv goes to the next
// connection that asks); errConnLost (rc then dropped or parked again)
// when the answer must be awaited elsewhere; or ctx's error.
func (s *Server) exchange(ctx context.Context, rc *rconn, inv *fn.Invocation) (*fn.Result, error) {
	stop := context.AfterFunc(ctx, func() { _ = rc.c.SetDeadline(time.Unix(1, 0)) })
	s.mu.Lock()
	s.active = rc
	s.mu.Unlock()
	res, next, err := s.converse(ctx, rc, inv)
	s.mu.Lock()
	s.active = nil
	s.mu.Unlock()
	if !stop() && next != parked {
		next = dropped // the deadline is poisoned
	}
	if ctx.Err() != nil && (err == nil || errors.Is(err, errConnLost)) {
		res, err = nil, ctx.Err()
	}
	switch next {
	case dropped:
		s.drop(rc)
	case reused:
		go s.readNext(rc)
	}
	return res, err
}

// What becomes of a connection after converse.
const (
	dropped = iota // closed
	reused         // read by readNext
	parked         // already parked with a GET /next
)

// converse is exchange's conversation.
func (s *Server) converse(ctx context.Context, rc *rconn, inv *fn.Invocation) (res *fn.Result, next int, err error) {
	writeNext(rc.bw, inv)
	if err := rc.bw.Flush(); err != nil {
		// The runtime never got inv: it goes to the next connection that
		// asks (if the runtime is gone, ctx ends the wait).
		s.log.Debug("send invocation to runtime", "invocation_id", inv.ID, "error", err)
		return nil, dropped, errNotRead
	}
	for first := true; ; first = false {
		req, err := rc.readRequest(s.maxResponse)
		if err != nil {
			if first && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) && rc.br.Buffered() == 0 {
				return nil, dropped, errNotRead
			}
			if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil {
				// deliver woke us: the answer came on another connection.
				// This one stays usable if nothing of a request was read.
				next := dropped
				if rc.lr.N == maxRequestHead && rc.br.Buffered() == 0 && rc.c.SetReadDeadline(time.Time{}) == nil {
					next = reused
				}
				select {
				case o := <-s.results:
					if res, ok, err := s.resultOf(inv, o); ok {
						return res, next, err
					}
				default:
				}
				return nil, next, errConnLost
			}
			return nil, dropped, errConnLost
		}
		if req.Header.Get("Expect") == "100-continue" {
			// Now: a client that waits for it sends its body only then.
			_, _ = rc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			if rc.bw.Flush() != nil {
				return nil, dropped, errConnLost
			}
		}
		path := req.URL.Path
		if rest, ok := strings.CutPrefix(path, "/2018-06-01/runtime/invocation/"); ok && req.Method == http.MethodPost {
			if id, kind, ok := strings.Cut(rest, "/"); ok && id == inv.ID && (kind == "response" || kind == "error") {
				o, status, reply := s.answer(req, id, kind == "error")
				closing := req.Close || status == http.StatusRequestEntityTooLarge || (o != nil && o.err != nil) || !drained(req)
				writeReply(rc.bw, status, reply, closing)
				next := reused
				if rc.bw.Flush() != nil || closing {
					next = dropped
				}
				switch {
				case o == nil && next == dropped:
					return nil, dropped, errConnLost
				case o == nil:
					continue // refused (a bad header): the runtime may post again
				case o.err != nil:
					return nil, next, o.err
				}
				return o.res, next, nil
			}
		}
		if path == "/2018-06-01/runtime/invocation/next" && req.Method == http.MethodGet {
			// Asking again before answering: the connection waits for the
			// next invocation, and this one's answer must come elsewhere.
			s.park(rc)
			return nil, parked, errConnLost
		}
		if !s.serveInline(ctx, rc, req) {
			return nil, dropped, errConnLost
		}
	}
}

// readNext reads the runtime's requests on rc between invocations until it
// asks for the next invocation, then parks rc.
func (s *Server) readNext(rc *rconn) {
	for {
		req, err := rc.readRequest(s.maxResponse)
		if err != nil {
			s.drop(rc)
			return
		}
		if req.URL.Path == "/2018-06-01/runtime/invocation/next" && req.Method == http.MethodGet {
			s.park(rc)
			return
		}
		if !s.serveInline(s.base, rc, req) {
			s.drop(rc)
			return
		}
	}
}

// serveInline answers req, read from rc, with the http.Server's handler
// and reports whether rc may carry more requests.
func (s *Server) serveInline(ctx context.Context, rc *rconn, req *http.Request) bool {
	if req.Header.Get("Expect") == "100-continue" {
		_, _ = rc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	}
	w := respbuf.New()
	s.ServeHTTP(w, req.WithContext(ctx))
	closing := req.Close || !drained(req)
	writeResponse(rc.bw, w, closing)
	return rc.bw.Flush() == nil && !closing
}

// drained reads what the handler left of req's body, as the http.Server
// does, up to 256 KiB, and reports whether the connection is positioned at
// the next request.
func drained(req *http.Request) bool {
	n, err := io.CopyN(io.Discard, req.Body, 256<<10+1)
	return n <= 256<<10 && errors.Is(err, io.EOF)
}

// answer handles a post of id's outcome read on the direct path: the
// outcome (nil when refused) and the reply's status and body.
func (s *Server) answer(req *http.Request, id string, isError bool) (*outcome, int, []byte) {
	mode := req.Header.Get(hdrResponseMode)
	if !isError && mode != "" && mode != "streaming" {
		return nil, http.StatusBadRequest, fn.ErrorPayload("InvalidResponseModeHeader", "response mode must be streaming or absent")
	}
	inv, status, errType := s.claim(id)
	if inv == nil {
		return nil, status, fn.ErrorPayload(errType, "invocation "+id+" is not in progress")
	}
	o, status, reply := s.outcomeOf(req, inv, isError)
	return &o, status, reply
}

// writeNext writes the response to GET /next that carries inv.
func writeNext(w *bufio.Writer, inv *fn.Invocation) {
	w.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
	writeHeader(w, hdrRequestID, inv.ID)
	w.WriteString(hdrDeadline + ": ")
	w.Write(strconv.AppendInt(w.AvailableBuffer(), inv.Deadline.UnixMilli(), 10))
	w.WriteString("\r\n")
	writeHeader(w, hdrARN, inv.ARN)
	if inv.TraceID != "" {
		writeHeader(w, hdrTraceID, inv.TraceID)
	}
	if inv.ClientContext != "" {
		writeHeader(w, hdrClientContext, inv.ClientContext)
	}
	w.WriteString("Content-Length: ")
	w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(len(inv.Payload)), 10))
	w.WriteString("\r\n\r\n")
	w.Write(inv.Payload)
}

// headerValue keeps a value on its line, as net/http does.
var headerValue = strings.NewReplacer("\r", " ", "\n", " ")

func writeHeader(w *bufio.Writer, name, value string) {
	w.WriteString(name)
	w.WriteString(": ")
	w.WriteString(headerValue.Replace(value))
	w.WriteString("\r\n")
}

// writeReply writes a JSON reply with its status.
func writeReply(w *bufio.Writer, status int, body []byte, closing bool) {
	w.WriteString("HTTP/1.1 ")
	w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(status), 10))
	w.WriteString(" ")
	w.WriteString(http.StatusText(status))
	w.WriteString("\r\nContent-Type: application/json\r\nContent-Length: ")
	w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(len(body)), 10))
	if closing {
		w.WriteString("\r\nConnection: close")
	}
	w.WriteString("\r\n\r\n")
	w.Write(body)
}

// writeResponse writes b, a request's answer served inline, on w.
func writeResponse(w *bufio.Writer, b *respbuf.Response, closing bool) {
	if b.Status == 0 {
		b.Status = http.StatusOK
	}
	h := b.Header()
	h.Del("Content-Length")
	h.Del("Transfer-Encoding")
	h.Del("Connection")
	fmt.Fprintf(w, "HTTP/1.1 %d %s\r\n", b.Status, http.StatusText(b.Status))
	_ = h.Write(w)
	fmt.Fprintf(w, "Content-Length: %d\r\n", b.Body.Len())
	if closing {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
	w.Write(b.Body.Bytes())
}

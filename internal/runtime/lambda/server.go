// Package lambda serves the AWS Lambda Runtime API (version 2018-06-01) to
// one instance: the runtime inside the sandbox long-polls GET /next, Aloft
// hands it one invocation at a time and waits for the matching POST
// /response or /error. It also answers the Extensions, Logs and Telemetry
// API paths minimally, as the Runtime Interface Emulator does when telemetry
// is off, so functions that ship extensions keep running.
package lambda

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"aloft/internal/fn"

	"github.com/google/uuid"
)

// DefaultMaxResponse is the largest response body a runtime may post:
// 6 MiB + 100 bytes, the Runtime Interface Emulator's constant.
const DefaultMaxResponse = 6*1024*1024 + 100

// Header names of the Runtime API (contracts.md §1.2, §1.3).
const (
	hdrRequestID     = "Lambda-Runtime-Aws-Request-Id"
	hdrDeadline      = "Lambda-Runtime-Deadline-Ms"
	hdrARN           = "Lambda-Runtime-Invoked-Function-Arn"
	hdrTraceID       = "Lambda-Runtime-Trace-Id"
	hdrClientContext = "Lambda-Runtime-Client-Context"
	hdrErrorType     = "Lambda-Runtime-Function-Error-Type"
	hdrErrorBody     = "Lambda-Runtime-Function-Error-Body"
	hdrResponseMode  = "Lambda-Runtime-Function-Response-Mode"
	hdrExtensionID   = "Lambda-Extension-Identifier"
)

// ErrBusy is returned by Invoke when another Invoke on the same Server has
// not returned yet: a Lambda instance serves one invocation at a time.
var ErrBusy = errors.New("lambda instance is busy with another invocation")

// ErrClosed is returned by Invoke and WaitReady after Close.
var ErrClosed = errors.New("lambda runtime api server closed")

// InitError is what the runtime posted to /runtime/init/error: its error
// type (from the Lambda-Runtime-Function-Error-Type header, "Runtime.Unknown"
// when absent) and the body as posted.
type InitError struct {
	Type    string
	Payload []byte
}

func (e *InitError) Error() string {
	return fmt.Sprintf("runtime init error %s: %s", e.Type, e.Payload)
}

// Config configures a Server. The zero value is usable.
type Config struct {
	// Logger receives the server's own diagnostics; nil discards them.
	Logger *slog.Logger
	// MaxResponse caps a posted response or error body in bytes; zero
	// means DefaultMaxResponse. A larger response becomes a
	// Function.ResponseSizeTooLarge error result and 413 to the runtime.
	MaxResponse int64
}

// Server is the Runtime API of one instance. Create it with NewServer,
// start it with Serve, stop it with Close.
type Server struct {
	log         *slog.Logger
	maxResponse int64
	srv         http.Server

	conns   chan *rconn  // connections whose runtime waits in GET /next (direct.go)
	results chan outcome // POST /response|/error on another connection -> Invoke; cap 1
	base    context.Context
	cancel  context.CancelFunc // ends base at Close

	ready      chan struct{} // closed at the first GET /next
	readyOnce  sync.Once
	failed     chan struct{} // closed when the runtime posted /init/error
	closed     chan struct{}
	closeOnce  sync.Once
	bufferPool sync.Pool // *bytes.Buffer for chunked bodies

	shutdown     chan struct{} // closed by Shutdown
	shutdownOnce sync.Once
	shutdownAt   time.Time // the shutdown's deadline, set before shutdown closes

	mu         sync.Mutex
	extensions map[string]bool // registered extensions by id: true if they asked for SHUTDOWN
	busy       bool            // an Invoke is in progress
	cur        *fn.Invocation  // the invocation of that Invoke
	answered   bool            // cur has been answered by the runtime
	lastID     string          // id of the last answered invocation
	initErr    *InitError
	hijacked   map[*rconn]struct{}
	active     *rconn // the connection Invoke reads, if any
}

type outcome struct {
	inv *fn.Invocation
	res *fn.Result
	err error
}

// NewServer returns a Server with cfg's defaults applied.
func NewServer(cfg Config) *Server {
	s := &Server{
		log:         cfg.Logger,
		maxResponse: cfg.MaxResponse,
		conns:       make(chan *rconn, maxParked),
		results:     make(chan outcome, 1),
		hijacked:    map[*rconn]struct{}{},
		ready:       make(chan struct{}),
		failed:      make(chan struct{}),
		closed:      make(chan struct{}),
		shutdown:    make(chan struct{}),
		extensions:  map[string]bool{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.maxResponse <= 0 {
		s.maxResponse = DefaultMaxResponse
	}
	s.base, s.cancel = context.WithCancel(context.Background())
	s.bufferPool.New = func() any { return new(bytes.Buffer) }
	s.srv.Handler = s
	s.srv.ErrorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	s.srv.ReadHeaderTimeout = 10 * time.Second
	return s
}

// Serve answers the Runtime API on l until Close; it returns nil after
// Close and the listener's error otherwise.
func (s *Server) Serve(l net.Listener) error {
	err := s.srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serve runtime api: %w", err)
}

// Close stops the server: it closes the listener and every connection, and
// makes pending and later Invoke and WaitReady calls return ErrClosed.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		close(s.closed)
		conns := s.hijacked
		s.hijacked = map[*rconn]struct{}{}
		s.mu.Unlock()
		s.cancel()
		for rc := range conns {
			_ = rc.c.Close()
		}
	})
	if err := s.srv.Close(); err != nil {
		return fmt.Errorf("close runtime api: %w", err)
	}
	return nil
}

// WaitReady returns nil once the runtime has called GET /next for the first
// time (its init is done), an *InitError if it posted /runtime/init/error,
// ErrClosed after Close, and ctx's error (wrapped) when ctx ends first.
func (s *Server) WaitReady(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	case <-s.failed:
		return s.initError()
	case <-s.closed:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("wait for runtime init: %w", ctx.Err())
	}
}

func (s *Server) initError() *InitError {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.initErr
}

// Invoke hands inv to the runtime's pending (or next) GET /next and waits
// for its response or error. It returns:
//   - the result: Payload as the runtime posted it; FunctionError set for a
//     POST /error, an error trailer, or a response over MaxResponse (then
//     the payload is a Function.ResponseSizeTooLarge error body);
//   - ErrBusy when another Invoke is in progress;
//   - an *InitError (wrapped) when the runtime failed its init;
//   - ErrClosed (wrapped) after Close;
//   - ctx's error (wrapped) when ctx ends first (timeout, instance died):
//     the caller must then kill the instance, whose runtime may still be
//     working on inv;
//   - an error when the runtime's connection broke while posting.
//
// inv.Deadline goes to the runtime as Lambda-Runtime-Deadline-Ms; when it is
// zero, ctx's deadline is used, and without one, 15 minutes from now.
func (s *Server) Invoke(ctx context.Context, inv *fn.Invocation) (*fn.Result, error) {
	if inv.Deadline.IsZero() {
		d, ok := ctx.Deadline()
		if !ok {
			d = time.Now().Add(15 * time.Minute)
		}
		cp := *inv
		cp.Deadline = d
		inv = &cp
	}
	s.mu.Lock()
	if s.busy {
		s.mu.Unlock()
		return nil, fmt.Errorf("invoke %s: %w", inv.ID, ErrBusy)
	}
	s.busy, s.cur, s.answered = true, inv, false
	s.mu.Unlock()
	defer s.finish()

	// Offer inv on a parked connection; a runtime that left it before
	// reading anything gets inv on the connection it asks again on.
	for {
		var rc *rconn
		select {
		case rc = <-s.conns:
		case o := <-s.results:
			// Posted on another connection (a runtime that left the
			// one inv was sent on, and answered on a new one).
			if res, ok, err := s.resultOf(inv, o); ok {
				return res, err
			}
			continue
		case <-s.failed:
			return nil, fmt.Errorf("invoke %s: %w", inv.ID, s.initError())
		case <-s.closed:
			return nil, fmt.Errorf("invoke %s: %w", inv.ID, ErrClosed)
		case <-ctx.Done():
			return nil, fmt.Errorf("invoke %s: wait for runtime: %w", inv.ID, ctx.Err())
		}
		res, err := s.exchange(ctx, rc, inv)
		switch {
		case res != nil:
			return res, nil
		case isClosed(s.closed):
			return nil, fmt.Errorf("invoke %s: %w", inv.ID, ErrClosed)
		case ctx.Err() != nil:
			return nil, fmt.Errorf("invoke %s: wait for response: %w", inv.ID, ctx.Err())
		case errors.Is(err, errNotRead):
			continue
		case !errors.Is(err, errConnLost):
			return nil, fmt.Errorf("invoke %s: %w", inv.ID, err)
		}
		break
	}
	// The answer may come on another connection.
	for {
		select {
		case o := <-s.results:
			if res, ok, err := s.resultOf(inv, o); ok {
				return res, err
			}
		case <-s.closed:
			return nil, fmt.Errorf("invoke %s: %w", inv.ID, ErrClosed)
		case <-ctx.Done():
			return nil, fmt.Errorf("invoke %s: wait for response: %w", inv.ID, ctx.Err())
		}
	}
}

// resultOf turns o into Invoke's return when it is inv's outcome.
func (s *Server) resultOf(inv *fn.Invocation, o outcome) (*fn.Result, bool, error) {
	switch {
	case o.inv != inv:
		return nil, false, nil // cannot happen: finish drains; kept as a guard
	case o.err != nil:
		return nil, true, fmt.Errorf("invoke %s: %w", inv.ID, o.err)
	}
	return o.res, true, nil
}

// finish ends the current Invoke: later posts for it are refused and a
// result delivered after Invoke stopped waiting is dropped.
func (s *Server) finish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && s.answered {
		s.lastID = s.cur.ID
	}
	s.busy, s.cur, s.answered = false, nil, false
	select {
	case <-s.results:
	default:
	}
}

// deliver hands o to the Invoke waiting for o.inv, if it still waits.
func (s *Server) deliver(o outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != o.inv {
		return
	}
	select {
	case s.results <- o:
	default: // cannot happen: one outcome per invocation
	}
	if s.active != nil {
		// Invoke is reading the connection it sent the invocation on,
		// which the runtime left idle: wake it (direct.go).
		_ = s.active.c.SetReadDeadline(time.Unix(1, 0))
	}
}

// ServeHTTP routes the Runtime, Extensions, Logs and Telemetry APIs.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if rest, ok := strings.CutPrefix(p, "/2018-06-01/"); ok {
		s.serveRuntime(w, r, rest)
		return
	}
	switch {
	case p == "/2020-01-01/extension/register" && r.Method == http.MethodPost:
		s.extensionRegister(w, r)
	case p == "/2020-01-01/extension/event/next" && r.Method == http.MethodGet:
		s.extensionNext(w, r)
	case (p == "/2020-01-01/extension/init/error" || p == "/2020-01-01/extension/exit/error") && r.Method == http.MethodPost:
		writeJSON(w, http.StatusAccepted, statusOK)
	case p == "/2020-08-15/logs" && r.Method == http.MethodPut,
		p == "/2022-07-01/telemetry" && r.Method == http.MethodPut:
		// Telemetry is off: accept the subscription, send nothing.
		writeJSON(w, http.StatusOK, statusOK)
	default:
		writeError(w, http.StatusNotFound, "NotFound", "no such api path")
	}
}

var statusOK = []byte(`{"status":"OK"}`)

func (s *Server) serveRuntime(w http.ResponseWriter, r *http.Request, rest string) {
	if rest, ok := strings.CutPrefix(rest, "runtime/invocation/"); ok {
		if rest == "next" {
			if r.Method != http.MethodGet {
				writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "use GET")
				return
			}
			s.invocationNext(w, r)
			return
		}
		id, kind, ok := strings.Cut(rest, "/")
		if !ok || id == "" || (kind != "response" && kind != "error") {
			writeError(w, http.StatusNotFound, "NotFound", "no such api path")
			return
		}
		if r.Method != http.MethodPost {
			writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "use POST")
			return
		}
		s.invocationPost(w, r, id, kind == "error")
		return
	}
	switch {
	case rest == "runtime/init/error" && r.Method == http.MethodPost:
		s.initErrorPost(w, r)
	case rest == "ping" && r.Method == http.MethodGet:
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("pong"))
	default:
		writeError(w, http.StatusNotFound, "NotFound", "no such api path")
	}
}

// invocationNext long-polls for the next invocation: it takes the
// connection over and parks it for Invoke (direct.go).
func (s *Server) invocationNext(w http.ResponseWriter, r *http.Request) {
	s.readyOnce.Do(func() { close(s.ready) })
	if isClosed(s.closed) {
		writeError(w, http.StatusInternalServerError, "Runtime.Shutdown", "instance is shutting down")
		return
	}
	if r.Context().Err() != nil {
		return // the runtime went away
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.log.Warn("take over runtime connection", "error", err)
		writeError(w, http.StatusInternalServerError, "Runtime.Unknown", "cannot hold the connection")
		return
	}
	_ = c.SetDeadline(time.Time{})
	rc := newRconn(c, brw)
	if !s.track(rc) {
		_ = c.Close()
		return
	}
	s.park(rc)
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// invocationPost handles POST /runtime/invocation/{id}/response|error.
func (s *Server) invocationPost(w http.ResponseWriter, r *http.Request, id string, isError bool) {
	mode := r.Header.Get(hdrResponseMode)
	if !isError && mode != "" && mode != "streaming" {
		writeError(w, http.StatusBadRequest, "InvalidResponseModeHeader", "response mode must be streaming or absent")
		return
	}
	inv, status, errType := s.claim(id)
	if inv == nil {
		msg := "invalid request id"
		if status == http.StatusForbidden {
			msg = "invocation " + id + " is not in progress"
		}
		writeError(w, status, errType, msg)
		return
	}
	o, status, reply := s.outcomeOf(r, inv, isError)
	s.deliver(o)
	writeJSON(w, status, reply)
}

// outcomeOf reads the body of r, a post of inv's response or error, and
// returns inv's outcome and the status and body to reply with.
func (s *Server) outcomeOf(r *http.Request, inv *fn.Invocation, isError bool) (outcome, int, []byte) {
	body, tooLarge, err := s.readBody(r)
	switch {
	case err != nil:
		return outcome{inv: inv, err: fmt.Errorf("read runtime %s: %w", postKind(isError), err)},
			http.StatusBadRequest, fn.ErrorPayload("InvalidRequest", "body could not be read")
	case tooLarge:
		msg := fmt.Sprintf("Response payload size exceeded maximum allowed payload size (%d bytes).", s.maxResponse)
		return outcome{inv: inv, res: &fn.Result{
			Payload:       fn.ErrorPayload("Function.ResponseSizeTooLarge", msg),
			FunctionError: true,
			ContentType:   "application/json",
		}}, http.StatusRequestEntityTooLarge, fn.ErrorPayload("RequestEntityTooLarge", msg)
	}
	res := &fn.Result{Payload: body, ContentType: r.Header.Get("Content-Type")}
	errType := headerOrTrailer(r, hdrErrorType)
	switch {
	case isError:
		res.FunctionError = true
		res.Payload = errorBody(errType, body)
		res.ContentType = "application/json"
	case errType != "":
		// An error trailer: the handler's result reader (or a response
		// stream) failed part way; the trailer body replaces the output.
		res.FunctionError = true
		res.Payload = trailerErrorBody(errType, r.Trailer.Get(hdrErrorBody))
		res.ContentType = "application/json"
	}
	return outcome{inv: inv, res: res}, http.StatusAccepted, statusOK
}

func postKind(isError bool) string {
	if isError {
		return "error"
	}
	return "response"
}

// claim marks the invocation id as answered and returns it; when the post is
// invalid it returns nil with the status and RIE error type to reply.
func (s *Server) claim(id string) (*fn.Invocation, int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.cur != nil && s.cur.ID == id && !s.answered:
		s.answered = true
		return s.cur, 0, ""
	case s.cur != nil && s.cur.ID == id, id == s.lastID:
		return nil, http.StatusForbidden, "InvalidStateTransition"
	case s.cur == nil:
		return nil, http.StatusForbidden, "InvalidStateTransition"
	default:
		return nil, http.StatusBadRequest, "InvalidRequestID"
	}
}

// readBody reads r's body up to s.maxResponse bytes. It reports tooLarge
// instead of reading past the limit.
func (s *Server) readBody(r *http.Request) (body []byte, tooLarge bool, err error) {
	if n := r.ContentLength; n >= 0 {
		if n > s.maxResponse {
			return nil, true, nil
		}
		body = make([]byte, n)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			return nil, false, err
		}
		return body, false, nil // no trailers without chunked encoding
	}
	buf := s.bufferPool.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 1<<20 { // do not keep huge buffers alive
			buf.Reset()
			s.bufferPool.Put(buf)
		}
	}()
	buf.Reset()
	n, err := buf.ReadFrom(io.LimitReader(r.Body, s.maxResponse+1))
	if err != nil {
		return nil, false, err
	}
	if n > s.maxResponse {
		return nil, true, nil
	}
	return bytes.Clone(buf.Bytes()), false, nil
}

// initErrorPost handles POST /runtime/init/error.
func (s *Server) initErrorPost(w http.ResponseWriter, r *http.Request) {
	body, tooLarge, err := s.readBody(r)
	if err != nil || tooLarge {
		body = nil
	}
	errType := headerOrTrailer(r, hdrErrorType)
	if errType == "" {
		errType = "Runtime.Unknown"
	}
	select {
	case <-s.ready:
		writeError(w, http.StatusForbidden, "InvalidStateTransition", "init is already done")
		return
	default:
	}
	s.mu.Lock()
	if s.initErr != nil {
		s.mu.Unlock()
		writeError(w, http.StatusForbidden, "InvalidStateTransition", "init error already posted")
		return
	}
	s.initErr = &InitError{Type: errType, Payload: errorBody(errType, body)}
	close(s.failed)
	s.mu.Unlock()
	writeJSON(w, http.StatusAccepted, statusOK)
}

func (s *Server) extensionRegister(w http.ResponseWriter, r *http.Request) {
	var reg struct {
		Events []string `json:"events"`
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	_ = json.Unmarshal(body, &reg)
	id := uuid.NewString()
	s.mu.Lock()
	s.extensions[id] = slices.Contains(reg.Events, "SHUTDOWN")
	s.mu.Unlock()
	s.log.Debug("extension registered", "extension", r.Header.Get("Lambda-Extension-Name"), "events", reg.Events)
	w.Header()[hdrExtensionID] = []string{id}
	writeJSON(w, http.StatusOK, []byte(`{"functionName":"","functionVersion":"","handler":""}`))
}

// Extensions is the number of extensions that registered: with any, the
// instance is shut down as Lambda does then (Shutdown, SIGTERM, a grace).
func (s *Server) Extensions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.extensions)
}

// Shutdown answers the extensions waiting in GET /event/next that
// registered for it with a SHUTDOWN event whose deadline is deadline; the
// others keep waiting until Close. Aloft sends no INVOKE events.
func (s *Server) Shutdown(deadline time.Time) {
	s.shutdownOnce.Do(func() {
		s.shutdownAt = deadline
		close(s.shutdown)
	})
}

// extensionNext blocks until Shutdown (for an extension registered for
// SHUTDOWN) or Close.
func (s *Server) extensionNext(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	onShutdown := s.extensions[r.Header.Get(hdrExtensionID)]
	s.mu.Unlock()
	shutdown := s.shutdown
	if !onShutdown {
		shutdown = nil
	}
	select {
	case <-s.closed:
	case <-r.Context().Done():
	case <-shutdown:
		w.Header()["Lambda-Extension-Event-Identifier"] = []string{uuid.NewString()}
		writeJSON(w, http.StatusOK, fmt.Appendf(nil, `{"eventType":"SHUTDOWN","shutdownReason":"spindown","deadlineMs":%d}`, s.shutdownAt.UnixMilli()))
	}
}

func headerOrTrailer(r *http.Request, key string) string {
	if v := r.Header.Get(key); v != "" {
		return v
	}
	return r.Trailer.Get(key)
}

// errorBody returns the error body to pass on: the posted body when it is a
// JSON object, otherwise one built from errType and the body as message.
func errorBody(errType string, body []byte) []byte {
	b := bytes.TrimSpace(body)
	if len(b) > 0 && b[0] == '{' && json.Valid(b) {
		return body
	}
	if errType == "" {
		errType = "Runtime.Unknown"
	}
	return fn.ErrorPayload(errType, string(body))
}

// trailerErrorBody decodes the base64 Lambda-Runtime-Function-Error-Body
// trailer; when it is absent or garbled, it builds a body from errType.
func trailerErrorBody(errType, b64 string) []byte {
	if b64 != "" {
		if b, err := base64.StdEncoding.DecodeString(b64); err == nil {
			return errorBody(errType, b)
		}
	}
	return fn.ErrorPayload(errType, "the function's response failed while it was being sent")
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header()["Content-Type"] = []string{"application/json"}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeError writes an RIE-style error reply {"errorMessage","errorType"}.
func writeError(w http.ResponseWriter, status int, errType, msg string) {
	writeJSON(w, status, fn.ErrorPayload(errType, msg))
}

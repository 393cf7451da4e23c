package wasm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/tetratelabs/wazero/api"
)

// Instance is one instance of a reactor module, reused across requests by
// its owner (a pool): one request at a time, never shared between
// functions or tenants.
type Instance struct {
	m      *Module
	mod    api.Module
	mem    *cappedMemory
	intr   *interrupt
	alloc  api.Function
	handle api.Function

	mu        sync.Mutex // one request at a time
	done      chan struct{}
	closeOnce sync.Once
}

// NewInstance instantiates the reactor module and calls its _initialize,
// if exported, under ctx.
//
// Errors: *FunctionError when the module's initial memory is over the cap,
// or _initialize traps, exits, or outlives ctx's deadline; calling it on a
// command module is an error.
func (m *Module) NewInstance(ctx context.Context, lim Limits) (*Instance, error) {
	if m.kind != KindReactor {
		return nil, fmt.Errorf("new wasm instance: module %s is a %s", m.key, m.kind)
	}
	mem := newCappedMemory(lim.MemoryMB)
	if err := m.checkMemory(mem); err != nil {
		return nil, err
	}
	stdout := lim.Stdout
	if stdout == nil {
		stdout = io.Discard
	}
	intr, err := m.e.runs.newInterrupt()
	if err != nil {
		return nil, fmt.Errorf("new wasm instance: %w", err)
	}
	cfg := m.config(lim, intr).WithStdout(stdout).WithStartFunctions() // _initialize is called below
	mod, err := m.instantiate(ctx, cfg, mem, intr, lim.Env)
	if err != nil {
		return nil, fmt.Errorf("new wasm instance: %w", err)
	}
	i := &Instance{
		m: m, mod: mod, mem: mem, intr: intr,
		alloc:  mod.ExportedFunction("aloft_alloc"),
		handle: mod.ExportedFunction("aloft_handle"),
		done:   make(chan struct{}),
	}
	if init := mod.ExportedFunction("_initialize"); init != nil {
		stop, err := intr.during(ctx)
		if err == nil {
			if _, err = init.Call(ctx); err != nil {
				err = runError(ctx, err, mem)
			}
			stop()
		}
		if err != nil {
			_ = i.Close(ctx)
			return nil, fmt.Errorf("new wasm instance: _initialize: %w", err)
		}
	}
	return i, nil
}

// Done is closed when the instance can serve no more requests: after Close,
// a trap, an exit, or a timeout.
func (i *Instance) Done() <-chan struct{} { return i.done }

// Close closes the instance and frees its memory. A request running on it
// is interrupted first, and its memory is freed only after it returned.
// It is safe to call more than once and after Done.
func (i *Instance) Close(ctx context.Context) error {
	i.intr.fire()
	i.mu.Lock() // Serve holds it for the request
	defer i.mu.Unlock()
	return i.closeLocked(ctx)
}

// closeLocked is Close for the holder of i.mu.
func (i *Instance) closeLocked(ctx context.Context) error {
	var err error
	i.closeOnce.Do(func() {
		i.m.e.procs.drop(i.mod)
		err = i.mod.Close(ctx)
		i.mem.Free()
		i.intr.release()
		close(i.done)
	})
	if err != nil {
		return fmt.Errorf("close wasm instance: %w", err)
	}
	return nil
}

// errInstanceClosed is returned by Serve on a closed instance.
var errInstanceClosed = errors.New("wasm instance closed")

// Serve hands r to the instance through the reactor ABI and writes the
// response to w. ctx bounds the call: its deadline closes the instance.
//
// Errors, with nothing written to w: *FunctionError as for ServeCGI
// (Runtime.ExitError for a trap or exit, Sandbox.Timedout,
// Runtime.OutOfMemory, Function.InvalidResponse for a response that
// net/http cannot parse, Function.ResponseSizeTooLarge); after any of them
// but Function.InvalidResponse the instance is closed. An error wrapping
// errInstanceClosed when Done is already closed; context.Canceled (wrapped)
// when ctx is canceled, which closes the instance too.
func (i *Instance) Serve(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	select {
	case <-i.done:
		return fmt.Errorf("serve wasm: %w", errInstanceClosed)
	default:
	}
	req, err := rawRequest(r)
	if err != nil {
		return fmt.Errorf("serve wasm: read request body: %w", err)
	}
	resp, err := i.call(ctx, req)
	if err != nil {
		_ = i.closeLocked(ctx)
		return err
	}
	hr, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(resp)), r)
	if err != nil {
		return &FunctionError{Type: ErrInvalidResponse, Message: fmt.Sprintf("the function's HTTP response is unparsable: %v", err)}
	}
	body, err := io.ReadAll(hr.Body)
	if err != nil {
		return &FunctionError{Type: ErrInvalidResponse, Message: fmt.Sprintf("the function's HTTP response body is unparsable: %v", err)}
	}
	h := w.Header()
	maps.Copy(h, hr.Header)
	h.Del("Content-Length") // the server sets it for body
	h.Del("Transfer-Encoding")
	w.WriteHeader(hr.StatusCode)
	_, _ = w.Write(body) // a client gone is not the function's failure
	return nil
}

// call copies req into the module and returns a copy of its response;
// i.mu held.
// ctx ending interrupts the code (interrupt.go), through
// context.AfterFunc: no goroutine per call.
func (i *Instance) call(ctx context.Context, req []byte) ([]byte, error) {
	stop, err := i.intr.during(ctx)
	if err != nil {
		return nil, fmt.Errorf("serve wasm: %w", err)
	}
	defer func() {
		if !stop() {
			// ctx ended as the call returned: the instance was
			// interrupted and serves no more.
			_ = i.closeLocked(context.Background())
		}
	}()
	res, err := i.alloc.Call(ctx, uint64(len(req)))
	if err != nil {
		return nil, runError(ctx, err, i.mem)
	}
	ptr := uint32(res[0])
	if !i.mod.Memory().Write(ptr, req) {
		return nil, &FunctionError{Type: ErrInvalidResponse, Message: fmt.Sprintf("aloft_alloc(%d) returned %#x, outside the module's memory", len(req), ptr)}
	}
	res, err = i.handle.Call(ctx, uint64(ptr), uint64(len(req)))
	if err != nil {
		return nil, runError(ctx, err, i.mem)
	}
	rptr, rlen := uint32(res[0]>>32), uint32(res[0])
	if rlen > MaxResponseBytes {
		return nil, &FunctionError{Type: ErrResponseTooBig, Message: fmt.Sprintf("the response is over %d bytes", MaxResponseBytes)}
	}
	b, ok := i.mod.Memory().Read(rptr, rlen)
	if !ok {
		return nil, &FunctionError{Type: ErrInvalidResponse, Message: fmt.Sprintf("aloft_handle returned [%#x, +%d), outside the module's memory", rptr, rlen)}
	}
	return bytes.Clone(b), nil
}

// rawRequest serializes r as an HTTP/1.1 request with an exact
// Content-Length.
func rawRequest(r *http.Request) ([]byte, error) {
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Grow(256 + len(body))
	b.WriteString(r.Method)
	b.WriteByte(' ')
	b.WriteString(r.URL.RequestURI())
	b.WriteString(" HTTP/1.1\r\nHost: ")
	b.WriteString(r.Host)
	b.WriteString("\r\n")
	for k, vs := range r.Header {
		if k == "Host" || k == "Content-Length" || k == "Transfer-Encoding" || k == "Connection" {
			continue
		}
		for _, v := range vs {
			if strings.ContainsAny(k+v, "\r\n") {
				continue // a server-parsed request never has these; a built one must not smuggle
			}
			b.WriteString(k)
			b.WriteString(": ")
			b.WriteString(v)
			b.WriteString("\r\n")
		}
	}
	b.WriteString("Content-Length: ")
	b.WriteString(strconv.Itoa(len(body)))
	b.WriteString("\r\n\r\n")
	b.Write(body)
	return b.Bytes(), nil
}

package invoke

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"aloft/internal/fn"
	"aloft/internal/respbuf"
	"aloft/internal/scale"
	"aloft/internal/wasm"
)

// wasmInstance is one pool slot of a wasm function. For a command module it
// runs every request in an instance of its own, so nothing survives
// between requests; after each it prepares the next one's instance in the
// background (wasm.Prepared), so a request finds it instantiated. For a
// reactor module it holds one module instance, reused one request at a
// time.
type wasmInstance struct {
	mod  *wasm.Module
	inst *wasm.Instance // reactors only

	spareMu  sync.Mutex
	spare    *wasm.Prepared // commands only: the next request's instance
	prepared chan struct{}  // closed when the preparation in flight ends; nil if none
	stopped  bool

	sink   *lineSink
	stdout *capture
	stderr *capture
	lim    wasm.Limits
	// initTimeout bounds what instantiation runs: a start function, a
	// reactor's _initialize.
	initTimeout time.Duration
	started     time.Time
	initDur     time.Duration
	used        atomic.Bool
	done        chan struct{}
	once        sync.Once
}

func (w *wasmInstance) Done() <-chan struct{} {
	if w.inst != nil {
		return w.inst.Done()
	}
	return w.done
}

func (w *wasmInstance) Stop() {
	w.once.Do(func() {
		if w.inst != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = w.inst.Close(ctx)
			cancel()
		}
		w.spareMu.Lock()
		w.stopped = true
		if w.spare != nil {
			w.spare.Close()
			w.spare = nil
		}
		w.spareMu.Unlock()
		close(w.done)
	})
}

// serve runs one request on the slot.
func (w *wasmInstance) serve(ctx context.Context, rw http.ResponseWriter, r *http.Request, scriptName string) error {
	if w.inst != nil {
		return w.inst.Serve(ctx, rw, r)
	}
	p := w.takeSpare(ctx)
	if p == nil {
		var err error
		if p, err = w.mod.Prepare(ctx, w.lim); err != nil {
			return err
		}
	}
	err := p.ServeCGI(ctx, rw, r, scriptName)
	w.spareMu.Lock()
	if !w.stopped && w.spare == nil && w.prepared == nil {
		w.prepared = make(chan struct{})
		go w.prepareSpare(w.prepared)
	}
	w.spareMu.Unlock()
	return err
}

// takeSpare returns the prepared instance, waiting for the preparation in
// flight if there is one (it started before this request, so it is done
// sooner than a new one): one instance is prepared per request, even back
// to back. nil means there is none (or ctx ended: the caller's own Prepare
// reports that as the run would).
func (w *wasmInstance) takeSpare(ctx context.Context) *wasm.Prepared {
	w.spareMu.Lock()
	p, wait := w.spare, w.prepared
	w.spare = nil
	w.spareMu.Unlock()
	if p != nil || wait == nil {
		return p
	}
	select {
	case <-wait:
	case <-ctx.Done():
		return nil
	}
	w.spareMu.Lock()
	p, w.spare = w.spare, nil
	w.spareMu.Unlock()
	return p
}

// prepareSpare instantiates the next request's instance, within the
// module's budget of spares, and closes done. Without one, the request
// prepares its own.
func (w *wasmInstance) prepareSpare(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), w.initTimeout)
	p := w.mod.PrepareSpare(ctx, w.lim)
	cancel()
	w.spareMu.Lock()
	defer w.spareMu.Unlock()
	switch {
	case p == nil:
	case w.stopped:
		p.Close()
	default:
		w.spare = p
	}
	w.prepared = nil
	close(done)
}

// wasmModule returns t's compiled module, compiling it (from the on-disk
// cache after a restart) on first use.
func (iv *Invoker) wasmModule(ctx context.Context, t *target) (*wasm.Module, error) {
	key := t.sha + "/" + t.cfg.Handler
	if m := iv.wasm.Module(key); m != nil {
		return m, nil
	}
	dir, err := iv.code(ctx, t.sha)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, t.cfg.Handler))
	if err != nil {
		return nil, fmt.Errorf("load wasm module of %s: %w", t.name, err)
	}
	return iv.compileWasm(ctx, t.name, key, b)
}

// CompileWasm compiles a function's module at deploy time so no request
// ever waits for a compile; it also checks the module is one Aloft can run
// (a client-facing error if not).
func (iv *Invoker) CompileWasm(ctx context.Context, name, sha, handler string, module []byte) error {
	_, err := iv.compileWasm(ctx, name, sha+"/"+handler, module)
	return err
}

func (iv *Invoker) compileWasm(ctx context.Context, name, key string, module []byte) (*wasm.Module, error) {
	before := iv.wasm.CacheStats()
	start := time.Now()
	m, err := iv.wasm.Compile(ctx, key, module)
	if err != nil {
		return nil, err
	}
	after := iv.wasm.CacheStats()
	iv.log.Info("wasm module ready", "function", name, "kind", m.Kind().String(),
		"from_cache", after.FromCache > before.FromCache, "duration", time.Since(start))
	return m, nil
}

// startWasm makes a pool slot for t.
func (iv *Invoker) startWasm(ctx context.Context, t *target) (*wasmInstance, error) {
	mod, err := iv.wasmModule(ctx, t)
	if err != nil {
		return nil, err
	}
	codeDir, err := iv.code(ctx, t.sha)
	if err != nil {
		return nil, err
	}
	id := newID()[:12]
	w := &wasmInstance{mod: mod, initTimeout: iv.cfg.InitTimeout, started: time.Now(), done: make(chan struct{})}
	w.sink = &lineSink{
		base:   fn.LogLine{Tenant: t.tenant, Function: t.name, Version: t.version, Instance: id},
		append: iv.cfg.Store.AppendLog,
	}
	w.stdout = newCapture("stdout", w.sink)
	w.stderr = newCapture("stderr", w.sink)
	env := map[string]string{
		"ALOFT_FUNCTION": t.name, "ALOFT_VERSION": t.version, "ALOFT_INSTANCE": id,
		"AWS_LAMBDA_FUNCTION_NAME": t.name, "AWS_LAMBDA_FUNCTION_VERSION": t.version,
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": strconv.Itoa(t.cfg.MemoryMB), "TZ": "UTC",
	}
	for k, v := range t.cfg.Env {
		env[k] = v
	}
	w.lim = wasm.Limits{MemoryMB: t.cfg.MemoryMB, Env: env, CodeDir: codeDir, Stderr: w.stderr, Stdout: w.stdout}
	if mod.Kind() == wasm.KindReactor {
		ictx, cancel := context.WithTimeout(ctx, iv.cfg.InitTimeout)
		w.inst, err = mod.NewInstance(ictx, w.lim)
		cancel()
		if err != nil {
			var fe *wasm.FunctionError
			if errors.As(err, &fe) {
				return nil, &startError{errType: fe.Type, payload: fn.ErrorPayload(fe.Type, fe.Message)}
			}
			return nil, fmt.Errorf("start wasm instance of %s: %w", t.name, err)
		}
	}
	w.initDur = time.Since(w.started)
	return w, nil
}

// runWasm runs one request on a leased slot and writes START/END/REPORT.
// A function failure (trap, exit, timeout, invalid response) comes back as
// its Lambda-style error, with nothing written to rw.
func (iv *Invoker) runWasm(ctx context.Context, t *target, lease *scale.Lease, rw http.ResponseWriter, r *http.Request, id string, tail bool) (fe *wasm.FunctionError, logTail []byte, err error) {
	w := lease.Instance().(*wasmInstance)
	cold := !w.used.Swap(true)
	w.sink.begin(id, tail)
	w.sink.platform(id, "START RequestId: "+id+" Version: "+t.version)
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout.D())
	err = w.serve(ctx, rw, r, "/")
	cancel()
	w.stdout.flush()
	w.stderr.flush()
	dur := time.Since(start)
	if errors.As(err, &fe) {
		err = nil
		w.sink.platform(id, "RequestId: "+id+" Error: "+fe.Type+": "+fe.Message)
	}
	w.sink.platform(id, "END RequestId: "+id)
	report := fmt.Sprintf("REPORT RequestId: %s\tDuration: %.2f ms\tBilled Duration: %d ms\tMemory Size: %d MB",
		id, float64(dur.Microseconds())/1000, billed(dur), t.cfg.MemoryMB)
	if cold {
		report += fmt.Sprintf("\tInit Duration: %.2f ms", float64(w.initDur.Microseconds())/1000)
	}
	w.sink.platform(id, report)
	logTail = w.sink.end()
	if fe != nil || err != nil {
		lease.Discard() // a trapped or timed-out instance is not reused
	} else {
		lease.Release()
	}
	return fe, logTail, err
}

// invokeWasm runs an event invocation on a wasm function: the payload is
// the body of a POST /, the result the response body.
func (iv *Invoker) invokeWasm(ctx context.Context, t *target, req Request, resp *Response) error {
	lease, err := iv.acquireLease(ctx, t)
	if err != nil {
		return err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "/", bytes.NewReader(req.Payload))
	if err != nil {
		lease.Release()
		return err
	}
	hr.Header.Set("Content-Type", "application/json")
	for k, v := range req.Headers {
		hr.Header.Set(k, v)
	}
	hr.RemoteAddr = "127.0.0.1:0"
	rec := respbuf.New()
	fe, tail, err := iv.runWasm(ctx, t, lease, rec, hr, req.ID, req.LogTail)
	if err != nil {
		return err
	}
	resp.LogTail = tail
	switch {
	case fe != nil:
		resp.Result = fn.Result{Payload: fn.ErrorPayload(fe.Type, fe.Message), FunctionError: true}
	case rec.Status >= 500:
		msg := rec.Body.String()
		if len(msg) > 256 {
			msg = msg[:256]
		}
		resp.Result = fn.Result{Payload: fn.ErrorPayload("Function.HTTPError", fmt.Sprintf("status %d: %s", rec.Status, msg)), FunctionError: true}
	default:
		resp.Result = fn.Result{Payload: rec.Body.Bytes(), ContentType: rec.Header().Get("Content-Type")}
	}
	return nil
}

// serveWasmHTTP serves an HTTP request with a wasm function. Errors before
// anything was written are returned; a function failure answers 502.
func (iv *Invoker) serveWasmHTTP(w http.ResponseWriter, r *http.Request, t *target, req Request) error {
	lease, err := iv.acquireLease(r.Context(), t)
	if err != nil {
		return err
	}
	w.Header().Set("X-Aloft-Invocation-Id", req.ID)
	w.Header().Set("X-Aloft-Executed-Version", t.version)
	fe, _, err := iv.runWasm(r.Context(), t, lease, w, r, req.ID, false)
	if err != nil {
		return err
	}
	if fe != nil {
		return fn.Errorf(http.StatusBadGateway, "function_error", "the function failed (%s); its log has the details under invocation %s", fe.Type, req.ID)
	}
	return nil
}

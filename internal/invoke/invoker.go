package invoke

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"aloft/internal/archive"
	"aloft/internal/fn"
	"aloft/internal/sandbox"
	"aloft/internal/scale"
	"aloft/internal/store"
	"aloft/internal/wasm"
	"aloft/runtimes"
)

// Config configures an Invoker. Store and Executor are required.
type Config struct {
	Store    *store.Store
	Executor *sandbox.Executor
	// DataDir holds the extracted code cache (DataDir/code) and the
	// runtime bootstraps (DataDir/runtimes).
	DataDir string
	Logger  *slog.Logger
	// Region is reported to functions as AWS_REGION (default "local").
	Region string
	// QueueWait bounds how long a request waits for a free instance
	// (default 30s).
	QueueWait time.Duration
	// InitTimeout bounds an instance's start (default 10s).
	InitTimeout time.Duration
	// MaxResponse bounds a function's response (default 6 MiB).
	MaxResponse int64
}

// Request is one invocation to run.
type Request struct {
	Tenant    string
	Function  string
	Qualifier string // "", "$LATEST", a version number or an alias
	// ID is the invocation id; generated when empty.
	ID      string
	Payload []byte
	// LogTail asks for the last 4 KB of the invocation's log.
	LogTail       bool
	TraceID       string
	ClientContext string
	// Headers are extra HTTP request headers for http and wasm functions
	// (a trigger's CloudEvents attributes); Lambda-style runtimes ignore
	// them.
	Headers map[string]string
}

// Response is the outcome of an invocation.
type Response struct {
	fn.Result
	InvocationID string
	// Version is the version that ran ("$LATEST" or a number).
	Version string
	LogTail []byte
}

// Invoker runs invocations. Create it with New and run it with Run.
type Invoker struct {
	cfg         Config
	log         *slog.Logger
	codeRoot    string
	runtimesDir string

	mu      sync.RWMutex
	targets map[string]*target // resolution cache: tenant/name/qualifier
	pools   map[string]*poolEntry
	// aliased holds "tenant/name/version" of each version an alias points
	// to: their pools, like $LATEST's, keep scale.min instances warm.
	aliased map[string]bool
	baseCtx context.Context // set by Run; pools run under it
	running bool
	ready   chan struct{} // closed once Run follows the store

	wasm *wasm.Engine

	codeMu   sync.Mutex
	codeWait map[string]chan struct{} // extraction in progress per sha

	wg sync.WaitGroup // pool loops
}

// target is a resolved (function, version) with its configuration.
type target struct {
	tenant, name string
	version      string // "$LATEST" or a number
	cfg          fn.Config
	sha          string
	revision     string
	arn          string
}

func (t *target) poolKey() string {
	return t.tenant + "/" + t.name + "/" + t.version + "#" + t.revision
}

type poolEntry struct {
	pool   *scale.Pool
	target *target
	min    int // the warm minimum the pool was made with
	cancel context.CancelFunc
}

// New validates cfg and prepares the data directories.
func New(cfg Config) (*Invoker, error) {
	if cfg.Store == nil || cfg.Executor == nil {
		return nil, errors.New("invoke: Store and Executor are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Region == "" {
		cfg.Region = "local"
	}
	if cfg.QueueWait <= 0 {
		cfg.QueueWait = 30 * time.Second
	}
	if cfg.InitTimeout <= 0 {
		cfg.InitTimeout = 10 * time.Second
	}
	if cfg.MaxResponse <= 0 {
		cfg.MaxResponse = 6<<20 + 100
	}
	iv := &Invoker{
		cfg:         cfg,
		log:         cfg.Logger,
		codeRoot:    filepath.Join(cfg.DataDir, "code"),
		runtimesDir: filepath.Join(cfg.DataDir, "runtimes"),
		targets:     map[string]*target{},
		pools:       map[string]*poolEntry{},
		aliased:     map[string]bool{},
		codeWait:    map[string]chan struct{}{},
		ready:       make(chan struct{}),
	}
	for _, d := range []string{iv.codeRoot, iv.runtimesDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("invoke: %w", err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return nil, fmt.Errorf("invoke: %w", err)
		}
	}
	if err := runtimes.WriteTo(iv.runtimesDir); err != nil {
		return nil, fmt.Errorf("invoke: write runtime bootstraps: %w", err)
	}
	var err error
	iv.wasm, err = wasm.New(context.Background(), wasm.Config{
		CacheDir: filepath.Join(cfg.DataDir, "wasm-cache"), Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("invoke: %w", err)
	}
	return iv, nil
}

// Run follows store changes (so every node drains pools of changed
// functions) until ctx ends, then stops every pool and waits for them.
func (iv *Invoker) Run(ctx context.Context) error {
	changes, err := iv.cfg.Store.Watch(ctx)
	if err != nil {
		return fmt.Errorf("invoke: watch store: %w", err)
	}
	iv.mu.Lock()
	iv.baseCtx = ctx
	iv.running = true
	iv.mu.Unlock()
	close(iv.ready)
	iv.wg.Go(func() { iv.keepAllWarm(ctx) })
	iv.wg.Add(1)
	go func() {
		defer iv.wg.Done()
		if _, err := os.Stat(runtimes.Python); err != nil {
			return // no Python here: python functions fail at their start with a clear error
		}
		// Until this is done, a Python instance compiles its bootstrap itself.
		if err := runtimes.CompilePython(ctx, runtimes.Python, iv.runtimesDir); err != nil {
			iv.log.Warn("precompile the python bootstrap", "error", err)
		}
	}()
	for ch := range changes {
		iv.Refresh(ctx, ch.Tenant, ch.Function)
	}
	iv.mu.Lock()
	iv.running = false
	for _, pe := range iv.pools {
		pe.cancel()
	}
	iv.mu.Unlock()
	iv.wg.Wait()
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := iv.wasm.Close(cctx); err != nil {
		return fmt.Errorf("invoke: close wasm engine: %w", err)
	}
	return nil
}

// Ready is closed once Run follows the store and can start instances.
func (iv *Invoker) Ready() <-chan struct{} { return iv.ready }

// Refresh drops cached resolutions of a function and drains its pools that
// no longer match the stored function (all of them if it was deleted).
func (iv *Invoker) Refresh(ctx context.Context, tenant, name string) {
	var current string
	deleted := false
	f, _, err := iv.cfg.Store.GetFunction(ctx, tenant, name)
	switch {
	case fn.IsNotFound(err):
		deleted = true
	case err != nil:
		iv.log.Warn("refresh function", "tenant", tenant, "function", name, "error", err)
		deleted = true // be safe: new requests re-resolve and start fresh pools
	default:
		current = f.Revision
	}
	prefix := tenant + "/" + name + "/"
	var drain []*poolEntry
	iv.mu.Lock()
	for k := range iv.targets {
		if strings.HasPrefix(k, prefix) {
			delete(iv.targets, k)
		}
	}
	for k, pe := range iv.pools {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		if deleted || (pe.target.version == fn.LatestVersion && pe.target.revision != current) {
			delete(iv.pools, k)
			drain = append(drain, pe)
		}
	}
	iv.mu.Unlock()
	iv.drain(tenant, name, drain)
	if !deleted {
		iv.keepWarm(ctx, tenant, name)
	}
}

// drain stops the pools pe, which are no longer in iv.pools: gracefully
// (their requests in flight finish) while the invoker runs, at once when it
// is shutting down.
func (iv *Invoker) drain(tenant, name string, pools []*poolEntry) {
	for _, pe := range pools {
		iv.mu.Lock()
		running, base := iv.running, iv.baseCtx
		if running {
			// Owned by the invoker: Run waits for it; shutdown cuts it short.
			iv.wg.Add(1)
		}
		iv.mu.Unlock()
		if !running {
			pe.cancel() // shutting down: the pool stops its instances now
			continue
		}
		iv.log.Info("draining pool", "tenant", tenant, "function", name, "version", pe.target.version)
		go func() {
			defer iv.wg.Done()
			dctx, cancel := context.WithTimeout(base, pe.target.cfg.Timeout.D()+5*time.Second)
			defer cancel()
			_ = pe.pool.Drain(dctx)
			pe.cancel()
		}()
	}
}

// keepWarm starts, ahead of any request, the pools that keep instances
// warm: those of $LATEST and of each version an alias points to, when
// their scale.min is above zero. Another version's pool keeps no minimum
// (it scales to zero), so a version invoked once by number does not hold
// instances forever; a pool made before its version's alias changed is
// drained, and the next request makes it again with the right minimum.
// Errors are logged: the next request starts instances anyway.
func (iv *Invoker) keepWarm(ctx context.Context, tenant, name string) {
	qualifiers := []string{fn.LatestVersion}
	aliases, err := iv.cfg.Store.ListAliases(ctx, tenant, name)
	if err != nil && !fn.IsNotFound(err) {
		iv.log.Warn("keep warm: list aliases", "tenant", tenant, "function", name, "error", err)
	}
	for _, a := range aliases {
		qualifiers = append(qualifiers, a.Name)
	}
	var warm []*target
	prefix := tenant + "/" + name + "/"
	aliased := make(map[string]bool, len(aliases))
	for _, q := range qualifiers {
		t, err := iv.resolve(ctx, tenant, name, q)
		if err != nil {
			if !fn.IsNotFound(err) {
				iv.log.Warn("keep warm: resolve", "tenant", tenant, "function", name, "qualifier", q, "error", err)
			}
			continue
		}
		if q != fn.LatestVersion {
			aliased[prefix+t.version] = true
		}
		if t.cfg.Scale.Min > 0 {
			warm = append(warm, t)
		}
	}
	var drain []*poolEntry
	iv.mu.Lock()
	for k := range iv.aliased {
		if strings.HasPrefix(k, prefix) && !aliased[k] {
			delete(iv.aliased, k)
		}
	}
	for k := range aliased {
		iv.aliased[k] = true
	}
	for k, pe := range iv.pools {
		if strings.HasPrefix(k, prefix) && pe.min != iv.minLocked(pe.target) {
			delete(iv.pools, k)
			drain = append(drain, pe)
		}
	}
	iv.mu.Unlock()
	iv.drain(tenant, name, drain)
	for _, t := range warm {
		if _, err := iv.pool(t); err != nil && ctx.Err() == nil {
			iv.log.Warn("keep warm", "tenant", tenant, "function", name, "version", t.version, "error", err)
		}
	}
}

// minLocked is the warm minimum of t's pool (iv.mu held): scale.min for
// $LATEST and aliased versions, else zero.
func (iv *Invoker) minLocked(t *target) int {
	if t.version == fn.LatestVersion || iv.aliased[t.tenant+"/"+t.name+"/"+t.version] {
		return t.cfg.Scale.Min
	}
	return 0
}

// keepAllWarm runs keepWarm for every stored function, when the invoker
// starts.
func (iv *Invoker) keepAllWarm(ctx context.Context) {
	fs, err := iv.cfg.Store.AllFunctions(ctx)
	if err != nil {
		if ctx.Err() == nil {
			iv.log.Warn("keep warm: list functions", "error", err)
		}
		return
	}
	for _, f := range fs {
		iv.keepWarm(ctx, f.Tenant, f.Name)
	}
}

// resolve maps (tenant, name, qualifier) to a target, from cache.
func (iv *Invoker) resolve(ctx context.Context, tenant, name, qualifier string) (*target, error) {
	if qualifier == "" {
		qualifier = fn.LatestVersion
	}
	key := tenant + "/" + name + "/" + qualifier
	iv.mu.RLock()
	t := iv.targets[key]
	iv.mu.RUnlock()
	if t != nil {
		return t, nil
	}
	t, err := iv.load(ctx, tenant, name, qualifier)
	if err != nil {
		return nil, err
	}
	iv.mu.Lock()
	iv.targets[key] = t
	iv.mu.Unlock()
	return t, nil
}

func (iv *Invoker) load(ctx context.Context, tenant, name, qualifier string) (*target, error) {
	if err := fn.ValidateName(name); err != nil {
		return nil, err
	}
	arn := fmt.Sprintf("arn:aws:lambda:%s:000000000000:function:%s", iv.cfg.Region, name)
	v, err := iv.cfg.Store.Resolve(ctx, tenant, name, qualifier)
	if err != nil {
		return nil, err
	}
	t := &target{tenant: tenant, name: name, version: fn.LatestVersion, cfg: v.Config,
		sha: v.CodeSHA256, revision: v.Revision, arn: arn}
	if qualifier != fn.LatestVersion {
		t.version, t.arn = strconv.Itoa(v.Number), arn+":"+qualifier
	}
	return t, nil
}

// Prepare readies a function's $LATEST on this node ahead of its first
// request: the resolution is cached and the code package extracted, so a
// cold start pays only for starting the instance. A function that is gone
// is not an error.
func (iv *Invoker) Prepare(ctx context.Context, tenant, name string) error {
	t, err := iv.resolve(ctx, tenant, name, fn.LatestVersion)
	if fn.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	_, err = iv.code(ctx, t.sha)
	return err
}

// Runtime returns the runtime of a function version, from the resolution
// cache (the gateway asks it on every request).
func (iv *Invoker) Runtime(ctx context.Context, tenant, name, qualifier string) (fn.Runtime, error) {
	t, err := iv.resolve(ctx, tenant, name, qualifier)
	if err != nil {
		return "", err
	}
	return t.cfg.Runtime, nil
}

// pool returns the pool of t, creating it.
func (iv *Invoker) pool(t *target) (*scale.Pool, error) {
	key := t.poolKey()
	iv.mu.RLock()
	pe := iv.pools[key]
	iv.mu.RUnlock()
	if pe != nil {
		return pe.pool, nil
	}
	iv.mu.Lock()
	defer iv.mu.Unlock()
	if pe := iv.pools[key]; pe != nil {
		return pe.pool, nil
	}
	if !iv.running {
		return nil, fn.Unavailable("the server is not running instances (starting or shutting down); retry")
	}
	warmMin := iv.minLocked(t)
	p, err := scale.NewPool(scale.Config{
		Name: t.name + ":" + t.version,
		Start: func(ctx context.Context) (scale.Instance, error) {
			if t.cfg.Runtime == fn.RuntimeWasm {
				w, err := iv.startWasm(ctx, t)
				if err != nil {
					return nil, err
				}
				return w, nil
			}
			in, err := iv.startInstance(ctx, t)
			if err != nil {
				return nil, err // not a typed nil inside the interface
			}
			return in, nil
		},
		Concurrency: t.cfg.Concurrency,
		Min:         warmMin,
		Max:         t.cfg.Scale.Max,
		Idle:        t.cfg.Scale.Idle.D(),
		QueueDepth:  queueDepth(t.cfg),
		QueueWait:   iv.cfg.QueueWait,
		Logger:      iv.log,
	})
	if err != nil {
		return nil, fmt.Errorf("pool for %s: %w", t.name, err)
	}
	ctx, cancel := context.WithCancel(iv.baseCtx)
	iv.pools[key] = &poolEntry{pool: p, target: t, min: warmMin, cancel: cancel}
	iv.wg.Add(1)
	go func() {
		defer iv.wg.Done()
		if err := p.Run(ctx); err != nil {
			iv.log.Error("pool stopped", "function", t.name, "version", t.version, "error", err)
		}
	}()
	return p, nil
}

// Stats returns the stats of every live pool, keyed "tenant/name/version".
func (iv *Invoker) Stats() map[string]scale.Stats {
	iv.mu.RLock()
	defer iv.mu.RUnlock()
	out := make(map[string]scale.Stats, len(iv.pools))
	for _, pe := range iv.pools {
		out[pe.target.tenant+"/"+pe.target.name+"/"+pe.target.version] = pe.pool.Stats()
	}
	return out
}

// Invoke runs one event invocation and waits for its result. A function
// failure (error, crash, timeout, out of memory) is a Response with
// FunctionError set, not an error; errors are for requests that never ran
// (unknown function, throttled) or internal failures.
func (iv *Invoker) Invoke(ctx context.Context, req Request) (*Response, error) {
	t, err := iv.resolve(ctx, req.Tenant, req.Function, req.Qualifier)
	if err != nil {
		return nil, err
	}
	if req.ID == "" {
		req.ID = newUUID()
	}
	resp := &Response{InvocationID: req.ID, Version: t.version}
	if t.cfg.Runtime == fn.RuntimeWasm {
		if err := iv.invokeWasm(ctx, t, req, resp); err != nil {
			var se *startError
			if errors.As(err, &se) {
				resp.Result = fn.Result{Payload: se.payload, FunctionError: true}
				return resp, nil
			}
			return nil, err
		}
		return resp, nil
	}
	lease, in, err := iv.acquire(ctx, t, req.ID)
	if err != nil {
		var se *startError
		if errors.As(err, &se) {
			resp.Result = fn.Result{Payload: se.payload, FunctionError: true}
			return resp, nil
		}
		return nil, err
	}
	inv := &fn.Invocation{
		ID: req.ID, Tenant: t.tenant, Function: t.name, Version: t.version, ARN: t.arn,
		Payload: req.Payload, TraceID: req.TraceID, ClientContext: req.ClientContext,
		Headers: req.Headers,
	}
	run := iv.begin(t, in, req.ID, req.LogTail)
	inv.Deadline = run.deadline
	ctx, cancel := context.WithDeadline(in.ctx, run.deadline)
	res, err := in.invokeEvent(ctx, inv)
	cancel()
	result, ferr := iv.finish(t, lease, in, run, err)
	if ferr != nil {
		return nil, ferr
	}
	if result != nil {
		res = result
	}
	resp.Result = *res
	resp.LogTail = run.tail
	return resp, nil
}

// ServeHTTP proxies r to an instance of an http-runtime function. It
// returns an error only before anything was written (the caller writes it);
// once the proxy runs, failures are written as 502/504 responses.
func (iv *Invoker) ServeHTTP(w http.ResponseWriter, r *http.Request, req Request) error {
	t, err := iv.resolve(r.Context(), req.Tenant, req.Function, req.Qualifier)
	if err != nil {
		return err
	}
	if req.ID == "" {
		req.ID = newUUID()
	}
	if t.cfg.Runtime == fn.RuntimeWasm {
		return httpStartError(iv.serveWasmHTTP(w, r, t, req))
	}
	lease, in, err := iv.acquire(r.Context(), t, req.ID)
	if err != nil {
		return httpStartError(err)
	}
	run := iv.begin(t, in, req.ID, false)
	ctx, cancel := context.WithDeadlineCause(r.Context(), run.deadline,
		fmt.Errorf("Task timed out after %.2f seconds: the function did not answer within its timeout", t.cfg.Timeout.D().Seconds()))
	stop := context.AfterFunc(in.ctx, cancel)
	w.Header().Set("X-Aloft-Invocation-Id", req.ID)
	w.Header().Set("X-Aloft-Executed-Version", t.version)
	served := false
	defer func() {
		if !served {
			// The proxy aborted an answer that broke off midway
			// (panic(http.ErrAbortHandler), which the server recovers):
			// the instance still gets its slot back.
			stop()
			cancel()
			_, _ = iv.finish(t, lease, in, run, nil)
		}
	}()
	in.serveHTTP(w, r.WithContext(ctx))
	served = true
	stop()
	var err2 error
	if ctx.Err() != nil && r.Context().Err() == nil {
		err2 = ctx.Err()
	}
	cancel()
	_, ferr := iv.finish(t, lease, in, run, err2)
	if ferr != nil {
		iv.log.Error("http invocation", "function", t.name, "invocation_id", req.ID, "error", ferr)
	}
	return nil
}

func (iv *Invoker) acquire(ctx context.Context, t *target, id string) (*scale.Lease, *instance, error) {
	lease, err := iv.acquireLease(ctx, t)
	if err != nil {
		return nil, nil, err
	}
	return lease, lease.Instance().(*instance), nil
}

// acquireLease takes a slot in t's pool; when the pool is draining because
// the function changed, it resolves the function again.
func (iv *Invoker) acquireLease(ctx context.Context, t *target) (*scale.Lease, error) {
	for attempt := 0; ; attempt++ {
		p, err := iv.pool(t)
		if err != nil {
			return nil, err
		}
		lease, err := p.Acquire(ctx)
		if errors.Is(err, scale.ErrDraining) && attempt < 3 {
			nt, rerr := iv.resolve(ctx, t.tenant, t.name, t.version)
			if rerr != nil {
				return nil, rerr
			}
			t = nt
			continue
		}
		return lease, err
	}
}

// run is one invocation in progress on an instance.
type run struct {
	id       string
	start    time.Time
	deadline time.Time
	cold     bool
	tailOn   bool
	tail     []byte
	// alone is true when no other request shared the instance at the
	// start, so its output lines are attributed to this invocation.
	alone bool
}

func (iv *Invoker) begin(t *target, in *instance, id string, tail bool) *run {
	r := &run{id: id, start: time.Now(), tailOn: tail}
	r.deadline = r.start.Add(t.cfg.Timeout.D())
	r.cold = !in.used.Swap(true)
	if in.inflight.Add(1) == 1 {
		r.alone = true
		in.sink.begin(id, tail)
	} else {
		in.sink.begin("", false) // several in flight: lines are not attributable
	}
	in.sink.platform(id, "START RequestId: "+id+" Version: "+t.version)
	return r
}

// finish classifies the outcome, releases or discards the lease, and
// writes the END/REPORT lines. It returns a replacement result for
// platform-made errors (timeout, crash), or an internal error.
func (iv *Invoker) finish(t *target, lease *scale.Lease, in *instance, r *run, err error) (*fn.Result, error) {
	if r.alone {
		// Lines written before the answer belong to this invocation.
		in.captures[0].sync()
		in.captures[1].sync()
	}
	var result *fn.Result
	var internal error
	if err != nil {
		var errType, msg string
		select {
		case <-in.sb.Done():
			st := in.sb.Exit()
			errType, msg = "Runtime.ExitError", "RequestId: "+r.id+" Error: Runtime exited with error: "+st.String()
			if st.OOMKilled {
				errType = "Runtime.OutOfMemory"
				msg = "RequestId: " + r.id + " Error: Runtime exited with error: " + st.String() + " (memory limit " + strconv.Itoa(t.cfg.MemoryMB) + " MB exceeded)"
			}
		default:
			if !time.Now().Before(r.deadline) {
				errType = "Sandbox.Timedout"
				msg = fmt.Sprintf("RequestId: %s Error: Task timed out after %.2f seconds", r.id, t.cfg.Timeout.D().Seconds())
			} else {
				internal = fmt.Errorf("invoke %s: %w", t.name, err)
			}
		}
		if errType != "" {
			in.sink.platform(r.id, msg)
			result = &fn.Result{Payload: fn.ErrorPayload(errType, msg), FunctionError: true}
		}
		in.failed.Store(true)
		lease.Discard()
	}
	dur := time.Since(r.start)
	in.sink.platform(r.id, "END RequestId: "+r.id)
	// Lambda's REPORT line, appended by hand: it is written for every
	// invocation.
	report := make([]byte, 0, 192)
	report = append(append(report, "REPORT RequestId: "...), r.id...)
	report = strconv.AppendFloat(append(report, "\tDuration: "...), float64(dur.Microseconds())/1000, 'f', 2, 64)
	report = strconv.AppendInt(append(report, " ms\tBilled Duration: "...), billed(dur), 10)
	report = strconv.AppendInt(append(report, " ms\tMemory Size: "...), int64(t.cfg.MemoryMB), 10)
	report = strconv.AppendInt(append(report, " MB\tMax Memory Used: "...), in.sb.MemoryPeak()>>20, 10)
	report = append(report, " MB"...)
	if r.cold {
		report = strconv.AppendFloat(append(report, "\tInit Duration: "...), float64(in.initDur.Microseconds())/1000, 'f', 2, 64)
		report = append(report, " ms"...)
	}
	in.sink.platform(r.id, string(report))
	if in.inflight.Add(-1) == 0 || r.tailOn {
		r.tail = in.sink.end()
	}
	if err == nil {
		lease.Release()
	}
	return result, internal
}

// queueDepth bounds the requests waiting for a function's instances:
// four times what its instances can serve at once, at least 100 and at
// most 10,000.
func queueDepth(c fn.Config) int {
	return min(max(100, 4*c.Scale.Max*c.Concurrency), 10000)
}

// billed rounds up to the millisecond, at least 1 ms.
func billed(d time.Duration) int64 {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	if ms < 1 {
		ms = 1
	}
	return int64(ms)
}

// code returns the directory holding the extracted code package sha,
// extracting it from the store once.
func (iv *Invoker) code(ctx context.Context, sha string) (string, error) {
	dir := filepath.Join(iv.codeRoot, sha)
	for {
		if _, err := os.Stat(dir); err == nil {
			return dir, nil
		}
		iv.codeMu.Lock()
		wait, busy := iv.codeWait[sha]
		if !busy {
			wait = make(chan struct{})
			iv.codeWait[sha] = wait
		}
		iv.codeMu.Unlock()
		if busy {
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		err := iv.extract(ctx, sha, dir)
		iv.codeMu.Lock()
		delete(iv.codeWait, sha)
		close(wait)
		iv.codeMu.Unlock()
		if err != nil {
			return "", err
		}
		return dir, nil
	}
}

// CollectCode deletes this node's extracted copies of code packages that
// used does not name (see store.CodeInUse), that no cached resolution or
// pool of this node uses, and that were extracted more than grace ago,
// and leftovers of extractions that stopped midway. It returns how many
// copies it deleted. The WebAssembly modules of such packages are dropped
// the same way, from memory and from the compilation cache.
func (iv *Invoker) CollectCode(used map[string]bool, grace time.Duration) int {
	live := iv.liveCode()
	defer iv.collectWasm(used, live, grace)
	ents, err := os.ReadDir(iv.codeRoot)
	if err != nil {
		iv.log.Warn("collect extracted code", "error", err)
		return 0
	}
	cutoff := time.Now().Add(-grace)
	deleted := 0
	for _, e := range ents {
		name := e.Name()
		info, err := e.Info()
		if err != nil || !info.ModTime().Before(cutoff) {
			continue
		}
		if strings.HasPrefix(name, ".tmp-") {
			_ = os.RemoveAll(filepath.Join(iv.codeRoot, name))
			continue
		}
		if used[name] || live[name] {
			continue
		}
		iv.codeMu.Lock()
		_, extracting := iv.codeWait[name]
		if !extracting {
			err = os.RemoveAll(filepath.Join(iv.codeRoot, name))
		}
		iv.codeMu.Unlock()
		switch {
		case extracting:
		case err != nil:
			iv.log.Warn("collect extracted code", "sha256", name, "error", err)
		default:
			deleted++
		}
	}
	return deleted
}

// collectWasm drops compiled modules of code packages neither used nor
// live on this node (a module's key is its package's sha256, a slash, and
// its file).
func (iv *Invoker) collectWasm(used, live map[string]bool, grace time.Duration) {
	forgotten, deleted := iv.wasm.Collect(func(key string) bool {
		sha, _, _ := strings.Cut(key, "/")
		return used[sha] || live[sha]
	}, grace)
	if forgotten > 0 || deleted > 0 {
		iv.log.Info("unused wasm modules collected", "dropped_from_memory", forgotten, "deleted_from_cache", deleted)
	}
}

// liveCode is the code packages a cached resolution or a pool of this node
// uses.
func (iv *Invoker) liveCode() map[string]bool {
	live := map[string]bool{}
	iv.mu.RLock()
	defer iv.mu.RUnlock()
	for _, t := range iv.targets {
		live[t.sha] = true
	}
	for _, pe := range iv.pools {
		live[pe.target.sha] = true
	}
	return live
}

func (iv *Invoker) extract(ctx context.Context, sha, dir string) error {
	tmp, err := os.MkdirTemp(iv.codeRoot, ".tmp-")
	if err != nil {
		return fmt.Errorf("extract code %s: %w", sha, err)
	}
	defer os.RemoveAll(tmp)
	pkg := filepath.Join(tmp, "pkg.tar.gz")
	f, err := os.Create(pkg)
	if err != nil {
		return fmt.Errorf("extract code %s: %w", sha, err)
	}
	err = iv.cfg.Store.GetCode(ctx, sha, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("extract code %s: %w", sha, err)
	}
	tree := filepath.Join(tmp, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		return fmt.Errorf("extract code %s: %w", sha, err)
	}
	f, err = os.Open(pkg)
	if err != nil {
		return fmt.Errorf("extract code %s: %w", sha, err)
	}
	lim := archive.DefaultLimits()
	lim.MaxArchive = 1 << 40 // already validated at deploy
	err = archive.Extract(f, tree, lim)
	f.Close()
	if err != nil {
		return fmt.Errorf("extract code %s: %w", sha, err)
	}
	if err := os.Rename(tree, dir); err != nil && !os.IsExist(err) {
		return fmt.Errorf("extract code %s: %w", sha, err)
	}
	return nil
}

func sortedEnvKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// newID returns 32 random hex characters.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// NewInvocationID returns a random (version 4) UUID, the shape of Lambda
// request ids.
func NewInvocationID() string { return newUUID() }

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

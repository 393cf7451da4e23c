package wasm

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/sys"
)

// MaxResponseBytes caps what a module may write as its response (Lambda's
// synchronous payload limit).
const MaxResponseBytes = 6 << 20

// Module is a compiled module, kept in memory by its Engine.
type Module struct {
	e        *Engine
	key      string
	compiled wazero.CompiledModule
	kind     Kind
	minPages uint32       // the initial size of its memory
	spares   atomic.Int32 // instances prepared by PrepareSpare, not yet closed
}

func newModule(e *Engine, key string, cm wazero.CompiledModule, kind Kind) *Module {
	m := &Module{e: e, key: key, compiled: cm, kind: kind}
	for _, d := range cm.ExportedMemories() {
		m.minPages = d.Min()
	}
	return m
}

// Kind reports whether the module is a command or a reactor.
func (m *Module) Kind() Kind { return m.kind }

// Limits are the resources and I/O of one instance.
type Limits struct {
	MemoryMB int               // memory cap (0 = DefaultMemoryMB)
	Env      map[string]string // the function's environment
	CodeDir  string            // mounted read-only at /var/task ("" = none)
	Stderr   io.Writer         // the module's stderr (function logs); nil = discard
	Stdout   io.Writer         // reactor modules only: stdout (logs); nil = discard
}

// config is the module configuration common to both kinds.
func (m *Module) config(lim Limits, x *interrupt) wazero.ModuleConfig {
	fsc := wazero.NewFSConfig().(sysfs.FSConfig).WithSysFSMount(newMemFS(tmpLimit(lim.MemoryMB)), "/tmp")
	if lim.CodeDir != "" {
		fsc = fsc.WithReadOnlyDirMount(lim.CodeDir, "/var/task")
	}
	stderr := lim.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	return wazero.NewModuleConfig().
		WithName("").
		WithSysWalltime().
		WithSysNanotime().
		WithNanosleep(x.sleep).
		WithRandSource(rand.Reader).
		WithFSConfig(fsc).
		WithStderr(stderr)
}

// checkMemory fails before instantiation when the module's initial memory
// is already over the cap.
func (m *Module) checkMemory(mem *cappedMemory) error {
	if uint64(m.minPages)*pageSize > mem.limit {
		return &FunctionError{Type: ErrOutOfMemory, Message: fmt.Sprintf(
			"the module's initial memory (%d MB) is over its %d MB cap", uint64(m.minPages)*pageSize>>20, mem.limit>>20)}
	}
	return nil
}

// ServeCGI runs the command module once for r, in a fresh instance, and
// writes its CGI response to w. scriptName is the path prefix the function
// is mounted at (SCRIPT_NAME); r.URL.Path must start with it. ctx bounds
// the run: its deadline closes the instance.
//
// Errors, with nothing written to w: *FunctionError for a trap or an exit
// code other than 0 (Runtime.ExitError), the deadline (Sandbox.Timedout),
// memory over the cap (Runtime.OutOfMemory), output that is not a CGI
// response with Content-Type or Location (Function.InvalidResponse) or is
// over MaxResponseBytes (Function.ResponseSizeTooLarge). ctx canceled
// returns an error wrapping context.Canceled; reading the body fails with
// the body's error; calling it on a reactor module is an error.
func (m *Module) ServeCGI(ctx context.Context, w http.ResponseWriter, r *http.Request, scriptName string, lim Limits) error {
	p, err := m.Prepare(ctx, lim)
	if err != nil {
		return err
	}
	return p.ServeCGI(ctx, w, r, scriptName)
}

// Prepared is a command module instantiated ahead of the one request it
// serves: its memory, tables and data are in place, and its _start has
// not run. Preparing a Go module takes about 1.3 ms of CPU here,
// which an owner can spend between requests instead of in one.
type Prepared struct {
	m     *Module
	mod   api.Module
	mem   *cappedMemory
	env   map[string]string
	stdin *bytes.Reader
	out   *limitedBuffer
	intr  *interrupt
	once  sync.Once
	used  atomic.Bool
	spare bool // counted in m.spares until closed
}

// Prepare instantiates the command module for one later ServeCGI with
// lim's memory cap, files, stderr and environment (the request's CGI
// variables are added when it runs). Close releases it unused.
//
// ctx bounds the module's start function, if it has one.
//
// Errors: *FunctionError when the module's initial memory is over the
// cap, or its start function traps or outlives ctx; calling it on a
// reactor module is an error.
func (m *Module) Prepare(ctx context.Context, lim Limits) (*Prepared, error) {
	if m.kind != KindCommand {
		return nil, fmt.Errorf("serve cgi: module %s is a %s", m.key, m.kind)
	}
	mem := newCappedMemory(lim.MemoryMB)
	if err := m.checkMemory(mem); err != nil {
		return nil, err
	}
	intr, err := m.e.runs.newInterrupt()
	if err != nil {
		return nil, fmt.Errorf("serve cgi: %w", err)
	}
	p := &Prepared{m: m, mem: mem, env: lim.Env, stdin: bytes.NewReader(nil), out: &limitedBuffer{max: MaxResponseBytes}, intr: intr}
	cfg := m.config(lim, p.intr).WithStdin(p.stdin).WithStdout(p.out).WithStartFunctions() // _start runs in ServeCGI
	mod, err := m.instantiate(ctx, cfg, mem, intr, lim.Env)
	if err != nil {
		return nil, err
	}
	p.mod = mod
	return p, nil
}

// instantiate creates an instance with cfg (from m.config for intr) and
// memory mem, gives it env, and runs its start function, if the module
// had one, under intr. On failure it releases mem and intr.
func (m *Module) instantiate(ctx context.Context, cfg wazero.ModuleConfig, mem *cappedMemory, intr *interrupt, env map[string]string) (api.Module, error) {
	mod, err := m.e.rt.InstantiateModule(experimental.WithMemoryAllocator(ctx, mem), m.compiled, cfg)
	if err != nil {
		err = runError(ctx, err, mem)
	} else {
		m.e.procs.set(mod, nil, envList(env))
		if err = intr.attach(mod); err == nil {
			err = runStart(ctx, mod, intr, mem)
		}
		if err != nil {
			m.e.procs.drop(mod)
			_ = mod.Close(ctx)
		}
	}
	if err != nil {
		intr.release()
		mem.Free()
		return nil, err
	}
	return mod, nil
}

// maxSpares bounds the instances of one module prepared ahead by
// PrepareSpare. A prepared Go instance keeps about 180 KB (3,300 objects) of
// wazero's structures on the Go heap, which every garbage collection
// scans, and spares speed up requests that come one after another, not a
// burst, which is CPU-bound either way.
const maxSpares = 2

// PrepareSpare is Prepare for a request that is not there yet, within the
// module's budget of maxSpares: nil when the budget is spent or preparing
// fails (the request then prepares its own and reports the failure).
func (m *Module) PrepareSpare(ctx context.Context, lim Limits) *Prepared {
	if m.spares.Add(1) > maxSpares {
		m.spares.Add(-1)
		return nil
	}
	p, err := m.Prepare(ctx, lim)
	if err != nil {
		m.spares.Add(-1)
		return nil
	}
	p.spare = true
	return p
}

// Close releases a prepared instance that will not serve. It is safe to
// call more than once and after ServeCGI.
func (p *Prepared) Close() {
	p.once.Do(func() {
		if p.spare {
			p.m.spares.Add(-1)
		}
		p.m.e.procs.drop(p.mod)
		_ = p.mod.Close(context.Background())
		p.mem.Free()
		p.intr.release()
	})
}

// ServeCGI runs the prepared instance's _start for r, as Module.ServeCGI
// does, and closes it: an instance serves one request.
func (p *Prepared) ServeCGI(ctx context.Context, w http.ResponseWriter, r *http.Request, scriptName string) error {
	if p.used.Swap(true) {
		return errors.New("serve cgi: a prepared instance serves one request")
	}
	defer p.Close()
	body, err := readBody(r)
	if err != nil {
		return fmt.Errorf("serve cgi: read request body: %w", err)
	}
	start := p.mod.ExportedFunction("_start")
	if start == nil {
		return fmt.Errorf("serve cgi: module %s has no _start", p.m.key)
	}
	p.stdin.Reset(body)
	p.m.e.procs.set(p.mod, cgiArgs(r, scriptName), envList(cgiEnv(r, scriptName, len(body), p.env)))
	stop, err := p.intr.during(ctx)
	if err != nil {
		return fmt.Errorf("serve cgi: %w", err)
	}
	_, err = start.Call(ctx)
	stop()
	var exit *sys.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 0) {
		return runError(ctx, err, p.mem)
	}
	if p.out.over {
		return &FunctionError{Type: ErrResponseTooBig, Message: fmt.Sprintf("the response is over %d bytes", MaxResponseBytes)}
	}
	status, h, respBody, err := parseCGI(p.out.Bytes())
	if err != nil {
		return &FunctionError{Type: ErrInvalidResponse, Message: err.Error()}
	}
	maps.Copy(w.Header(), h)
	w.WriteHeader(status)
	_, _ = w.Write(respBody) // a client gone is not the function's failure
	return nil
}

// envList is env as "KEY=value" entries, sorted.
func envList(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	return io.ReadAll(r.Body)
}

// cgiArgs is argv: SCRIPT_NAME, then the query parameters as WAGI passes
// them (each "key=value" or "key", split on &).
func cgiArgs(r *http.Request, scriptName string) []string {
	args := []string{scriptName}
	if q := r.URL.RawQuery; q != "" {
		for p := range strings.SplitSeq(q, "&") {
			if p == "" {
				continue
			}
			if u, err := url.QueryUnescape(p); err == nil {
				p = u
			}
			args = append(args, p)
		}
	}
	return args
}

// cgiEnv is the function's environment plus the request's CGI 1.1 and WAGI
// meta-variables (which win over the function's on a clash).
func cgiEnv(r *http.Request, scriptName string, bodyLen int, fnEnv map[string]string) map[string]string {
	env := make(map[string]string, len(fnEnv)+len(r.Header)+24)
	maps.Copy(env, fnEnv)
	for k, vs := range r.Header {
		k = strings.ToUpper(strings.ReplaceAll(k, "-", "_"))
		if k == "PROXY" { // httpoxy: never let a client set HTTP_PROXY
			continue
		}
		env["HTTP_"+k] = strings.Join(vs, ", ")
	}
	env["HTTP_HOST"] = r.Host
	host, port := r.Host, ""
	if h, p, err := net.SplitHostPort(r.Host); err == nil {
		host, port = h, p
	}
	if port == "" {
		port = "80"
		if r.TLS != nil {
			port = "443"
		}
	}
	remoteAddr, remotePort := r.RemoteAddr, ""
	if h, p, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		remoteAddr, remotePort = h, p
	}
	rawPath := r.URL.EscapedPath()
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
		env["HTTPS"] = "on"
	}
	pathInfo := strings.TrimPrefix(r.URL.Path, strings.TrimSuffix(scriptName, "/"))
	rawPathInfo := strings.TrimPrefix(rawPath, strings.TrimSuffix(scriptName, "/"))
	matched := strings.TrimSuffix(scriptName, "/") + "/..."
	for k, v := range map[string]string{
		"GATEWAY_INTERFACE": "CGI/1.1",
		"SERVER_PROTOCOL":   "HTTP/1.1",
		"SERVER_SOFTWARE":   "Aloft",
		"REQUEST_METHOD":    r.Method,
		"SCRIPT_NAME":       scriptName,
		"PATH_INFO":         pathInfo,
		"PATH_TRANSLATED":   pathInfo,
		"X_RAW_PATH_INFO":   rawPathInfo,
		"QUERY_STRING":      r.URL.RawQuery,
		"REQUEST_URI":       r.URL.RequestURI(),
		"X_MATCHED_ROUTE":   matched,
		"X_FULL_URL":        scheme + "://" + r.Host + r.URL.RequestURI(),
		"SERVER_NAME":       host,
		"SERVER_PORT":       port,
		"REMOTE_ADDR":       remoteAddr,
		"REMOTE_HOST":       remoteAddr,
		"REMOTE_PORT":       remotePort,
		"CONTENT_LENGTH":    fmt.Sprint(bodyLen),
		"CONTENT_TYPE":      r.Header.Get("Content-Type"),
	} {
		env[k] = v
	}
	if bodyLen == 0 {
		env["CONTENT_LENGTH"] = ""
	}
	// Content-Type and Content-Length are their own variables.
	delete(env, "HTTP_CONTENT_TYPE")
	delete(env, "HTTP_CONTENT_LENGTH")
	return env
}

// limitedBuffer keeps at most max bytes; writes past it fail.
type limitedBuffer struct {
	bytes.Buffer
	max  int
	over bool
}

var errTooBig = errors.New("response too large")

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		b.over = true
		return 0, errTooBig
	}
	return b.Buffer.Write(p)
}

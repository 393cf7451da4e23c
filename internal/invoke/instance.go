package invoke

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"aloft/internal/fn"
	"aloft/internal/runtime/httpport"
	"aloft/internal/runtime/lambda"
	"aloft/internal/sandbox"
	"aloft/runtimes"
)

// instance is one running sandbox plus the runtime protocol Aloft speaks
// with it. It implements scale.Instance.
type instance struct {
	id       string
	sb       *sandbox.Instance
	lambda   *lambda.Server  // event-style runtimes
	proxy    *httpport.Proxy // http runtime
	sink     *lineSink
	captures [2]*capture
	started  time.Time
	initDur  time.Duration
	used     atomic.Bool  // served at least one invocation (cold start reporting)
	inflight atomic.Int32 // requests in flight (http runtime may serve several)
	// failed is set when an invocation timed out or broke on the
	// instance: Stop then kills it without a grace period.
	failed atomic.Bool

	ctx    context.Context // cancelled when the instance dies or stops
	cancel context.CancelFunc
	wg     sync.WaitGroup // captures and the runtime server
	once   sync.Once
}

func (in *instance) Done() <-chan struct{} { return in.sb.Done() }

// Shutdown grace periods: how long a stopping instance (scaled down,
// drained by a redeploy, or at server exit) has between SIGTERM and
// SIGKILL. An http function gets Cloud Run's 10 s; a Lambda-style one only
// when an extension registered (aws-lambda-go's lambda.WithEnableSIGTERM
// registers one), 500 ms as Lambda gives internal extensions; without
// one, Lambda sends no SIGTERM and neither does Aloft.
const (
	httpStopGrace      = 10 * time.Second
	extensionStopGrace = 500 * time.Millisecond
)

// Stop ends the sandbox, gracefully when the runtime has a grace period
// (SIGTERM, and SHUTDOWN to extensions that asked for it; then SIGKILL
// when the grace runs out), and waits for the goroutines this instance
// owns.
func (in *instance) Stop() {
	in.once.Do(func() {
		if grace := in.stopGrace(); grace > 0 {
			if in.lambda != nil {
				in.lambda.Shutdown(time.Now().Add(grace))
			}
			in.sb.Terminate()
			t := time.NewTimer(grace)
			select {
			case <-in.sb.Done():
			case <-t.C:
			}
			t.Stop()
		}
		in.sb.Kill()
		<-in.sb.Done()
		if in.lambda != nil {
			_ = in.lambda.Close()
		}
		if in.proxy != nil {
			in.proxy.Close()
		}
		in.cancel()
		in.wg.Wait()
	})
}

// stopGrace is how long Stop waits between SIGTERM and SIGKILL.
func (in *instance) stopGrace() time.Duration {
	switch {
	case in.failed.Load():
		return 0
	case in.proxy != nil:
		return httpStopGrace
	case in.lambda != nil && in.lambda.Extensions() > 0:
		return extensionStopGrace
	}
	return 0
}

// startError is a failure of an instance to start that the invocation
// which caused it reports as a function error (like Lambda's init errors).
type startError struct {
	errType string
	payload []byte
}

func (e *startError) Error() string { return "instance start failed: " + string(e.payload) }

// httpStartError is err as an HTTP caller of an http or wasm function
// gets it: a start error becomes a 502 whose message is the error's type
// and text, not its JSON; anything else is returned as it is.
func httpStartError(err error) error {
	var se *startError
	if errors.As(err, &se) {
		return se.httpError()
	}
	return err
}

func (e *startError) httpError() error {
	var p struct {
		Type    string `json:"errorType"`
		Message string `json:"errorMessage"`
	}
	if json.Unmarshal(e.payload, &p) != nil || p.Message == "" {
		return fn.Errorf(http.StatusBadGateway, "function_error", "the function could not start: %s", e.payload)
	}
	return fn.Errorf(http.StatusBadGateway, "function_error", "the function could not start: %s: %s", p.Type, p.Message)
}

// execHint says what to fix when the function's program could not be
// executed.
func execHint(errno syscall.Errno) string {
	switch errno {
	case syscall.ENOEXEC:
		return "it is neither a Linux executable for " + runtime.GOARCH + " nor a script starting with #!"
	case syscall.ENOENT:
		return "the interpreter its #! line names, or the dynamic loader it needs, is not in the sandbox (build a static binary, or name an interpreter under /usr)"
	case syscall.EACCES:
		return "it, or the interpreter its #! line names, is not executable"
	}
	return "the program cannot be run"
}

// startInstance starts one instance of t and returns when it is ready.
func (iv *Invoker) startInstance(ctx context.Context, t *target) (*instance, error) {
	codeDir, err := iv.code(ctx, t.sha)
	if err != nil {
		return nil, err
	}
	id := newID()[:12]
	in := &instance{id: id, started: time.Now()}
	in.ctx, in.cancel = context.WithCancel(context.Background())
	in.sink = &lineSink{
		base:   fn.LogLine{Tenant: t.tenant, Function: t.name, Version: t.version, Instance: id},
		append: iv.cfg.Store.AppendLog,
	}
	spec, err := iv.spec(t, id, codeDir)
	if err != nil {
		in.cancel()
		return nil, err
	}
	in.captures[0] = newCapture("stdout", in.sink)
	in.captures[1] = newCapture("stderr", in.sink)
	spec.Stdout, spec.Stderr = in.captures[0], in.captures[1]
	sb, err := iv.cfg.Executor.Start(ctx, spec)
	if err != nil {
		in.cancel()
		var xe *sandbox.ExecError
		if errors.As(err, &xe) && (t.cfg.Runtime == fn.RuntimeLambda || t.cfg.Runtime == fn.RuntimeHTTP) {
			// The function's own program cannot run: its fault, reported
			// as Lambda reports it, not a server error.
			msg := xe.Error() + ": " + execHint(xe.Err)
			in.sink.platform("", "INIT_REPORT Status: error Error Type: Runtime.InvalidEntrypoint "+msg)
			return nil, &startError{errType: "Runtime.InvalidEntrypoint", payload: fn.ErrorPayload("Runtime.InvalidEntrypoint", msg)}
		}
		return nil, fmt.Errorf("start instance of %s: %w", t.name, err)
	}
	in.sb = sb
	in.wg.Add(1)
	go func() {
		defer in.wg.Done()
		select {
		case <-sb.Done():
		case <-in.ctx.Done():
		}
		in.cancel()
	}()
	sandboxed := time.Since(in.started)
	if err := iv.connect(ctx, t, in); err != nil {
		in.Stop()
		return nil, err
	}
	in.initDur = time.Since(in.started)
	iv.log.Debug("instance started", "function", t.name, "version", t.version, "instance", id,
		"sandbox", sandboxed, "duration", in.initDur)
	return in, nil
}

// connect starts the runtime protocol and waits for the instance to be
// ready, or for it to fail its init.
func (iv *Invoker) connect(ctx context.Context, t *target, in *instance) error {
	initCtx, cancel := context.WithTimeout(ctx, iv.cfg.InitTimeout)
	defer cancel()
	// Readiness also ends when the instance dies.
	stop := context.AfterFunc(in.ctx, cancel)
	defer stop()
	var err error
	if t.cfg.Runtime.EventStyle() {
		in.lambda = lambda.NewServer(lambda.Config{Logger: iv.log, MaxResponse: iv.cfg.MaxResponse})
		in.wg.Add(1)
		go func() {
			defer in.wg.Done()
			_ = in.lambda.Serve(in.sb.Listener())
		}()
		err = in.lambda.WaitReady(initCtx)
	} else {
		in.proxy = httpport.New(httpport.Config{Logger: iv.log, Dial: in.sb.Dial, MaxIdleConns: t.cfg.Concurrency})
		err = in.proxy.WaitReady(initCtx)
	}
	if err == nil {
		return nil
	}
	var ie *lambda.InitError
	if errors.As(err, &ie) {
		in.sink.platform("", "INIT_REPORT Status: error Error Type: "+ie.Type)
		return &startError{errType: ie.Type, payload: ie.Payload}
	}
	select {
	case <-in.sb.Done():
		st := in.sb.Exit()
		et := "Runtime.ExitError"
		if st.OOMKilled {
			et = "Runtime.OutOfMemory"
		}
		msg := "Runtime exited during init: " + st.String()
		in.sink.platform("", "INIT_REPORT Status: error Error Type: "+et+" "+msg)
		return &startError{errType: et, payload: fn.ErrorPayload(et, msg)}
	default:
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	msg := fmt.Sprintf("Runtime did not become ready within %s", iv.cfg.InitTimeout)
	if t.cfg.Runtime == fn.RuntimeHTTP {
		msg = fmt.Sprintf("the server did not listen on $PORT within %s", iv.cfg.InitTimeout)
	}
	in.sink.platform("", "INIT_REPORT Status: timeout "+msg)
	return &startError{errType: "Sandbox.Timedout", payload: fn.ErrorPayload("Sandbox.Timedout", msg)}
}

// spec builds the sandbox spec: argv, a scrubbed environment and limits.
func (iv *Invoker) spec(t *target, id, codeDir string) (sandbox.Spec, error) {
	c := t.cfg
	spec := sandbox.Spec{
		ID:       id,
		CodeDir:  codeDir,
		Dir:      "/var/task",
		MemoryMB: c.MemoryMB,
		PidsMax:  512,
		CPUs:     cpusFor(c.MemoryMB),
		TmpMB:    512,
		Network:  c.Network,
	}
	env := []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"LANG=en_US.UTF-8",
		"TZ=:UTC",
		"HOME=/tmp",
		"LAMBDA_TASK_ROOT=/var/task",
		"LAMBDA_RUNTIME_DIR=/var/runtime",
		"AWS_LAMBDA_FUNCTION_NAME=" + t.name,
		"AWS_LAMBDA_FUNCTION_VERSION=" + t.version,
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=" + strconv.Itoa(c.MemoryMB),
		"AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/" + t.name,
		"AWS_LAMBDA_LOG_STREAM_NAME=" + time.Now().UTC().Format("2006/01/02") + "/[" + t.version + "]" + id,
		"AWS_LAMBDA_INITIALIZATION_TYPE=on-demand",
		"AWS_REGION=" + iv.cfg.Region,
		"AWS_DEFAULT_REGION=" + iv.cfg.Region,
		"ALOFT_FUNCTION=" + t.name,
		"ALOFT_VERSION=" + t.version,
		"ALOFT_INSTANCE=" + id,
	}
	switch c.Runtime {
	case fn.RuntimeLambda:
		spec.Argv = []string{filepath.Join("/var/task", c.Handler)}
		env = append(env, "_HANDLER="+c.Handler, "AWS_EXECUTION_ENV=AWS_Lambda_provided.al2023")
		spec.ListenEnv = "AWS_LAMBDA_RUNTIME_API"
	case fn.RuntimeNode:
		spec.Argv = []string{"/usr/bin/node", "/var/runtime/node/bootstrap.js"}
		env = append(env, "_HANDLER="+c.Handler, "AWS_EXECUTION_ENV=AWS_Lambda_nodejs20.x", "NODE_PATH=/var/task/node_modules:/var/task")
		spec.ListenEnv = "AWS_LAMBDA_RUNTIME_API"
	case fn.RuntimePython:
		spec.Argv = append(append([]string{runtimes.Python}, runtimes.PythonFlags...), "/var/runtime/"+runtimes.PythonBootstrap)
		env = append(env, "_HANDLER="+c.Handler, "AWS_EXECUTION_ENV=AWS_Lambda_python3.11", "PYTHONDONTWRITEBYTECODE=1")
		spec.ListenEnv = "AWS_LAMBDA_RUNTIME_API"
	case fn.RuntimeHTTP:
		spec.Argv = []string{filepath.Join("/var/task", c.Handler)}
		env = append(env, "K_SERVICE="+t.name, "K_REVISION="+t.name+"-"+t.version)
		spec.PortEnv = "PORT"
	default:
		return spec, fmt.Errorf("runtime %q has no instance protocol", c.Runtime)
	}
	if c.Runtime == fn.RuntimeNode || c.Runtime == fn.RuntimePython {
		spec.Mounts = []sandbox.Mount{{Source: iv.runtimesDir, Target: "/var/runtime"}}
	}
	// The sandbox hides /sys/fs/cgroup, so a Go function cannot see its CPU
	// quota: tell it, unless the function sets GOMAXPROCS itself.
	if _, set := c.Env["GOMAXPROCS"]; !set {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(int(math.Ceil(spec.CPUs))))
	}
	spec.Env = withEnv(env, c.Env)
	return spec, nil
}

// withEnv returns base with the function's own env applied: a key base
// already holds (PATH, TZ, AWS_REGION, ...) takes the function's value in
// its place, for a process reading a duplicated key sees only the first.
// The keys Aloft must set are refused when the function is deployed
// (fn.Config.Validate).
func withEnv(base []string, own map[string]string) []string {
	at := make(map[string]int, len(base))
	for i, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		at[k] = i
	}
	for _, k := range sortedEnvKeys(own) {
		if i, ok := at[k]; ok {
			base[i] = k + "=" + own[k]
			continue
		}
		base = append(base, k+"="+own[k])
	}
	return base
}

// cpusFor gives CPU in proportion to memory as Lambda does (1,769 MB = 1
// vCPU), but never less than one core: a smaller quota makes interpreter
// and runtime start-up wait for the next CFS period, which is exactly the
// cold start Aloft exists to avoid.
func cpusFor(memoryMB int) float64 {
	return max(1, float64(memoryMB)/1769)
}

// invokeEvent runs one event-style invocation on in.
func (in *instance) invokeEvent(ctx context.Context, inv *fn.Invocation) (*fn.Result, error) {
	if in.lambda != nil {
		return in.lambda.Invoke(ctx, inv)
	}
	return in.proxy.Invoke(ctx, inv.Payload, inv.Headers)
}

// serveHTTP proxies one request to an http-runtime instance.
func (in *instance) serveHTTP(w http.ResponseWriter, r *http.Request) {
	in.proxy.ServeHTTP(w, r)
}

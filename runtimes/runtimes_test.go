package runtimes_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"aloft/internal/fn"
	"aloft/internal/runtime/lambda"
	"aloft/runtimes"
)

const (
	nodeBin   = "/usr/bin/node"
	pythonBin = "/usr/bin/python3"
)

var runtimeDir string // WriteTo's output, shared by the tests

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "runtimes-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	runtimeDir = filepath.Join(dir, "runtime")
	err = runtimes.WriteTo(runtimeDir)
	if _, statErr := os.Stat(pythonBin); err == nil && statErr == nil {
		err = runtimes.CompilePython(context.Background(), pythonBin, runtimeDir) // as the invoker does
	}
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestWriteTo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "rt")
	if err := runtimes.WriteTo(dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{runtimes.NodeBootstrap, runtimes.PythonBootstrap} {
		want, err := readEmbedded(p)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, p)
		got, err := os.ReadFile(dst)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: %v, content equal %v", p, err, bytes.Equal(got, want))
		}
		fi, _ := os.Stat(dst)
		mtime := fi.ModTime()
		// A second call leaves a correct file alone and repairs a changed one.
		if err := runtimes.WriteTo(dir); err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Stat(dst); !fi.ModTime().Equal(mtime) {
			t.Errorf("%s rewritten although unchanged", p)
		}
		if err := os.WriteFile(dst, []byte("tampered"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := runtimes.WriteTo(dir); err != nil {
			t.Fatal(err)
		}
		got, _ = os.ReadFile(dst)
		if fi, _ := os.Stat(dst); !bytes.Equal(got, want) || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s not repaired: mode %v", p, fi.Mode())
		}
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "node"))
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

// TestCompilePython checks the bootstrap module is loaded from the .pyc
// CompilePython wrote, and from the source once the source changed.
func TestCompilePython(t *testing.T) {
	if _, err := os.Stat(pythonBin); err != nil {
		t.Skipf("%s is missing: %v", pythonBin, err)
	}
	dir := filepath.Join(t.TempDir(), "rt")
	if err := runtimes.WriteTo(dir); err != nil {
		t.Fatal(err)
	}
	if err := runtimes.CompilePython(context.Background(), pythonBin, dir); err != nil {
		t.Fatal(err)
	}
	loadedFrom := func() string {
		t.Helper()
		cmd := exec.Command(pythonBin, "-S", "-v", "-c", "import _aloft_bootstrap")
		cmd.Dir = filepath.Join(dir, "python")
		cmd.Env = []string{"PYTHONDONTWRITEBYTECODE=1"}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("import the bootstrap module: %v\n%s", err, out)
		}
		for line := range strings.Lines(string(out)) {
			if strings.HasPrefix(line, "# code object from") && strings.Contains(line, "_aloft_bootstrap") {
				return line
			}
		}
		t.Fatalf("no code object line in python -v output:\n%s", out)
		return ""
	}
	if got := loadedFrom(); !strings.Contains(got, ".pyc") {
		t.Errorf("loaded %q, want the compiled .pyc", got)
	}
	src := filepath.Join(dir, "python", "_aloft_bootstrap.py")
	f, err := os.OpenFile(src, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("# changed\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := loadedFrom(); strings.Contains(got, ".pyc") {
		t.Errorf("loaded %q after the source changed, want the source", got)
	}
	if err := runtimes.CompilePython(context.Background(), "/nonexistent/python3", dir); err == nil {
		t.Error("CompilePython with a missing interpreter: no error")
	}
}

func readEmbedded(p string) ([]byte, error) {
	f, err := runtimes.FS().Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(f)
	return b.Bytes(), err
}

// instance is a bootstrap process attached to a real Runtime API server.
type instance struct {
	srv    *lambda.Server
	exited chan struct{}
	out    *output
}

type output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// start runs the bootstrap of lang ("node" or "python") with _HANDLER set
// to handler and LAMBDA_TASK_ROOT at testdata/<lang>.
func start(t *testing.T, lang, handler string) *instance {
	t.Helper()
	bin, args := nodeBin, []string{filepath.Join(runtimeDir, runtimes.NodeBootstrap)}
	if lang == "python" {
		bin, args = pythonBin, append(append([]string(nil), runtimes.PythonFlags...), filepath.Join(runtimeDir, runtimes.PythonBootstrap))
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("%s is missing: %v", bin, err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := lambda.NewServer(lambda.Config{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()

	root, err := filepath.Abs(filepath.Join("testdata", lang))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = root
	cmd.Env = []string{
		"PATH=/usr/bin:/bin",
		"AWS_LAMBDA_RUNTIME_API=" + l.Addr().String(),
		"_HANDLER=" + handler,
		"LAMBDA_TASK_ROOT=" + root,
		"LAMBDA_RUNTIME_DIR=" + runtimeDir,
		"AWS_LAMBDA_FUNCTION_NAME=testfn",
		"AWS_LAMBDA_FUNCTION_VERSION=3",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256",
		"AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/testfn",
		"AWS_LAMBDA_LOG_STREAM_NAME=2026/01/01/[3]abc",
		"PYTHONDONTWRITEBYTECODE=1",
	}
	inst := &instance{srv: srv, exited: make(chan struct{}), out: &output{}}
	cmd.Stdout, cmd.Stderr = inst.out, inst.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		close(inst.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-inst.exited
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
		if t.Failed() {
			t.Logf("function output:\n%s", inst.out)
		}
	})
	return inst
}

func (in *instance) ready(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := in.srv.WaitReady(ctx); err != nil {
		t.Fatalf("wait ready: %v", err)
	}
}

// logged waits until the function's output holds every one of want.
func (in *instance) logged(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := in.out.String()
		missing := ""
		for _, w := range want {
			if !strings.Contains(out, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("output lacks %q; output so far:\n%s", missing, out)
		}
		time.Sleep(time.Millisecond)
	}
}

// initError waits for the bootstrap to post an init error and exit.
func (in *instance) initError(t *testing.T) *lambda.InitError {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ie *lambda.InitError
	if err := in.srv.WaitReady(ctx); !errors.As(err, &ie) {
		t.Fatalf("wait ready = %v, want an init error", err)
	}
	<-in.exited
	return ie
}

var ids atomic.Int64

func newInvocation(payload string) *fn.Invocation {
	n := ids.Add(1)
	return &fn.Invocation{
		ID:       fmt.Sprintf("inv-%d", n),
		ARN:      "arn:aws:lambda:local:000000000000:function:testfn:3",
		Payload:  []byte(payload),
		Deadline: time.Now().Add(time.Minute),
		TraceID:  fmt.Sprintf("Root=1-00000000-%024d;Sampled=0", n),
	}
}

func (in *instance) invoke(t *testing.T, inv *fn.Invocation) *fn.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := in.srv.Invoke(ctx, inv)
	if err != nil {
		t.Fatalf("invoke %s: %v", inv.Payload, err)
	}
	return res
}

func (in *instance) call(t *testing.T, payload string) *fn.Result {
	t.Helper()
	return in.invoke(t, newInvocation(payload))
}

type lambdaError struct {
	Message    string   `json:"errorMessage"`
	Type       string   `json:"errorType"`
	StackTrace []string `json:"stackTrace"`
}

func decodeError(t *testing.T, payload []byte) lambdaError {
	t.Helper()
	var e lambdaError
	if err := json.Unmarshal(payload, &e); err != nil {
		t.Fatalf("error body %s: %v", payload, err)
	}
	return e
}

func wantJSON(t *testing.T, res *fn.Result, want string) {
	t.Helper()
	if res.FunctionError {
		t.Fatalf("function error: %s", res.Payload)
	}
	var got, w any
	if err := json.Unmarshal(res.Payload, &got); err != nil {
		t.Fatalf("result %s: %v", res.Payload, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	g, _ := json.Marshal(got)
	ww, _ := json.Marshal(w)
	if !bytes.Equal(g, ww) {
		t.Errorf("result = %s, want %s", g, ww)
	}
}

func wantError(t *testing.T, res *fn.Result, errType, message string) lambdaError {
	t.Helper()
	if !res.FunctionError {
		t.Fatalf("result %s is not an error", res.Payload)
	}
	e := decodeError(t, res.Payload)
	if e.Type != errType || e.Message != message {
		t.Errorf("error = %s: %s, want %s: %s", e.Type, e.Message, errType, message)
	}
	return e
}

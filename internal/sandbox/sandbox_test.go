//go:build linux

package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"aloft/internal/testnet"
)

var (
	testDir string // world-searchable scratch dir for the whole run
	codeDir string // holds the probe binary (testdata/probe)
)

func TestMain(m *testing.M) {
	if code, ok := MaybeRunInit(); ok {
		os.Exit(code)
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	var err error
	if testDir, err = os.MkdirTemp("", "sandbox-test-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(testDir)
	codeDir = filepath.Join(testDir, "code")
	if err := os.Chmod(testDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	build := exec.Command("go", "build", "-o", filepath.Join(codeDir, "probe"), "./testdata/probe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build probe: %v\n%s", err, out)
		return 1
	}
	if err := os.Chmod(codeDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newExecutor returns a sandboxing executor, or skips with exactly what is
// missing.
func newExecutor(t testing.TB, cfg Config) *Executor {
	t.Helper()
	if !cfg.Insecure {
		if err := Supported(); err != nil {
			t.Skip(err.Error())
		}
	}
	if cfg.StateDir == "" {
		dir, err := os.MkdirTemp(testDir, "state-")
		if err != nil {
			t.Fatal(err)
		}
		cfg.StateDir = dir
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return e
}

var idSeq struct {
	sync.Mutex
	n int
}

// newRunningExecutor is newExecutor with Run going until the test ends.
func newRunningExecutor(t testing.TB, cfg Config) *Executor {
	t.Helper()
	e := newExecutor(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-runDone
	})
	return e
}

func probeSpec(args ...string) Spec {
	idSeq.Lock()
	idSeq.n++
	n := idSeq.n
	idSeq.Unlock()
	return Spec{
		ID:      fmt.Sprintf("test-%d", n),
		CodeDir: codeDir,
		Argv:    append([]string{"/var/task/probe"}, args...),
		Env:     []string{"PATH=/usr/bin:/bin", "HOME=/tmp"},
	}
}

type result struct {
	stdout, stderr string
	exit           ExitStatus
	inst           *Instance
}

// runOnce starts spec and waits until the instance is done.
func runOnce(t *testing.T, e *Executor, spec Spec) result {
	t.Helper()
	var out, errOut syncBuffer
	spec.Stdout, spec.Stderr = &out, &errOut
	inst, err := e.Start(context.Background(), spec)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	waitDone(t, inst)
	return result{out.String(), errOut.String(), inst.Exit(), inst}
}

func waitDone(t testing.TB, inst *Instance) {
	t.Helper()
	select {
	case <-inst.Done():
	case <-time.After(60 * time.Second):
		inst.Kill()
		t.Fatalf("instance %s did not finish within a minute", inst.ID())
	}
}

// waitFor polls cond until it holds or a minute passed.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestOutputAndExit(t *testing.T) {
	e := newExecutor(t, Config{})
	r := runOnce(t, e, probeSpec("echo", "hello", "sandbox"))
	if r.stdout != "hello sandbox\n" || r.stderr != "to stderr\n" {
		t.Errorf("stdout %q stderr %q", r.stdout, r.stderr)
	}
	if r.exit != (ExitStatus{}) || r.exit.String() != "exit status 0" {
		t.Errorf("exit = %+v (%s)", r.exit, r.exit)
	}
	r = runOnce(t, e, probeSpec("exit", "3"))
	if r.exit.Code != 3 || r.exit.Signal != "" || r.exit.String() != "exit status 3" {
		t.Errorf("exit = %+v (%s)", r.exit, r.exit)
	}
}

func TestKilledBySignal(t *testing.T) {
	e := newExecutor(t, Config{})
	inst, err := e.Start(context.Background(), probeSpec("sleep"))
	if err != nil {
		t.Fatal(err)
	}
	inst.Kill()
	inst.Kill()
	waitDone(t, inst)
	if got := inst.Exit(); got.Signal != "SIGKILL" || got.OOMKilled || got.String() != "killed by SIGKILL" {
		t.Errorf("exit = %+v (%s)", got, got)
	}
	inst.Kill() // after exit: still harmless
}

func TestStartErrors(t *testing.T) {
	e := newExecutor(t, Config{})
	spec := probeSpec()
	spec.Argv = []string{"/var/task/missing"}
	if _, err := e.Start(context.Background(), spec); err == nil || !strings.Contains(err.Error(), "exec /var/task/missing") {
		t.Errorf("missing program: err = %v", err)
	}
	bad := Spec{ID: "a/b", Argv: []string{"rel"}, MemoryMB: -1}
	_, err := e.Start(context.Background(), bad)
	for _, want := range []string{"id", "code dir", "argv", "limits"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("invalid spec: err = %v, want it to mention %s", err, want)
		}
	}
	hidden := filepath.Join(t.TempDir(), "code")
	if err := os.Mkdir(hidden, 0o755); err != nil {
		t.Fatal(err)
	}
	spec = probeSpec("echo")
	spec.CodeDir = hidden
	if _, err := e.Start(context.Background(), spec); err == nil || !strings.Contains(err.Error(), "not searchable") {
		t.Errorf("unreachable code dir: err = %v", err)
	}
}

// TestExecErrors: a program that cannot be executed is an *ExecError
// with execve's errno, sandboxed and not, so the caller can blame the
// function rather than the sandbox.
func TestExecErrors(t *testing.T) {
	dir, err := os.MkdirTemp(testDir, "badcode-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"text":   "not a program\n",
		"script": "#!/no/such/interpreter\necho hi\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, cfg := range []Config{{}, {Insecure: true}} {
		e := newExecutor(t, cfg)
		for _, tc := range []struct {
			prog string
			want syscall.Errno
		}{
			{"/var/task/text", syscall.ENOEXEC},
			{"/var/task/script", syscall.ENOENT},
			{"/var/task/missing", syscall.ENOENT},
		} {
			spec := probeSpec()
			spec.CodeDir, spec.Argv = dir, []string{tc.prog}
			_, err := e.Start(context.Background(), spec)
			var xe *ExecError
			if !errors.As(err, &xe) || xe.Err != tc.want || xe.Path != tc.prog {
				t.Errorf("insecure=%v %s: err = %v, want an ExecError %v", cfg.Insecure, tc.prog, err, tc.want)
			}
		}
	}
	// The status message round trip, and a message that only looks like one.
	if err := statusError(statusMessage(&ExecError{Path: "/var/task/a b", Err: syscall.EACCES})); err.Error() != "exec /var/task/a b: permission denied" {
		t.Errorf("round trip: %v", err)
	}
	var xe *ExecError
	if err := statusError(execFailed + "x /p"); errors.As(err, &xe) {
		t.Errorf("a malformed message became %#v", xe)
	}
}

func TestIdentityAndPrivileges(t *testing.T) {
	e := newExecutor(t, Config{})
	spec := probeSpec("self")
	r := runOnce(t, e, spec)
	if r.exit.Code != 0 {
		t.Fatalf("exit %s: %s", r.exit, r.stderr)
	}
	for _, want := range []string{
		"uid=1000 gid=1000 groups=[] hostname=" + spec.ID + " pid=",
		"CapInh: 0000000000000000", "CapPrm: 0000000000000000", "CapEff: 0000000000000000",
		"CapBnd: 0000000000000000", "CapAmb: 0000000000000000",
		"NoNewPrivs: 1", "Seccomp: 2", "Seccomp_filters: 2",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("missing %q in:\n%s", want, r.stdout)
		}
	}
	// Process 1 is the init, which reaps; the function sees only its own
	// tree besides.
	var pid int
	if _, err := fmt.Sscanf(r.stdout[strings.Index(r.stdout, " pid=")+1:], "pid=%d", &pid); err != nil || pid == 1 ||
		!strings.Contains(r.stdout, fmt.Sprintf("pids 1,%d\n", pid)) {
		t.Errorf("want the function as a child of process 1, alone with it:\n%s", r.stdout)
	}
}

func TestEnvironmentScrubbed(t *testing.T) {
	e := newExecutor(t, Config{})
	spec := probeSpec("env")
	spec.Env = []string{"A=1", "PORT=stale"}
	spec.PortEnv = "PORT"
	spec.ListenEnv = "AWS_LAMBDA_RUNTIME_API"
	r := runOnce(t, e, spec)
	want := "A=1\nAWS_LAMBDA_RUNTIME_API=127.0.0.1:9001\nPORT=8080\n"
	if r.stdout != want {
		t.Errorf("env:\n%s\nwant:\n%s", r.stdout, want)
	}
}

func TestFileSystem(t *testing.T) {
	e := newExecutor(t, Config{})
	secretDir, err := os.MkdirTemp(testDir, "data-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secretDir, "secret"), []byte("s3cret"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args     []string
		wantCode int
		want     string // in stdout+stderr
	}{
		{[]string{"cat", "/etc/shadow"}, 1, "no such file"},
		{[]string{"cat", "/etc/passwd"}, 0, "sbx_user:x:1000:1000"},
		{[]string{"cat", filepath.Join(secretDir, "secret")}, 1, "no such file"},
		{[]string{"ls", testDir}, 1, "no such file"},
		{[]string{"ls", "/root"}, 1, "no such file"},
		{[]string{"ls", "/home"}, 1, "no such file"},
		{[]string{"ls", "/var/task"}, 0, "probe"},
		{[]string{"write", "/var/task/x"}, 1, "read-only file system"},
		{[]string{"write", "/x"}, 1, "read-only file system"},
		{[]string{"write", "/usr/x"}, 1, "read-only file system"},
		{[]string{"write", "/etc/x"}, 1, "read-only file system"},
		{[]string{"write", "/dev/x"}, 1, "read-only file system"},
		{[]string{"write", "/tmp/x"}, 0, ""},
		{[]string{"write", "/dev/shm/x"}, 0, ""},
		{[]string{"write", "/dev/null"}, 0, ""},
		{[]string{"cat", "/etc/resolv.conf"}, 0, ""},
		{[]string{"ls", "/etc/ssl/certs"}, 0, ".pem"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, "_"), func(t *testing.T) {
			r := runOnce(t, e, probeSpec(c.args...))
			if r.exit.Code != c.wantCode || !strings.Contains(r.stdout+r.stderr, c.want) {
				t.Errorf("%s; stdout %q stderr %q; want code %d and %q", r.exit, r.stdout, r.stderr, c.wantCode, c.want)
			}
		})
	}
}

func TestTmpCapped(t *testing.T) {
	e := newExecutor(t, Config{})
	spec := probeSpec("fill", "/tmp/big")
	spec.TmpMB = 8
	r := runOnce(t, e, spec)
	if r.exit.Code != 0 || !strings.Contains(r.stdout, "wrote 8 MiB: write /tmp/big: no space left on device") {
		t.Errorf("%s: stdout %q stderr %q", r.exit, r.stdout, r.stderr)
	}
}

func TestSeccompAndPrivilegeRefusals(t *testing.T) {
	e := newExecutor(t, Config{})
	r := runOnce(t, e, probeSpec("syscalls"))
	for _, want := range []string{
		"unshare-user: operation not permitted",
		"mount: operation not permitted",
		"ptrace: operation not permitted",
		"clone-newuser: operation not permitted",
		"clone3: function not implemented",
		"sethostname: operation not permitted",
		"setuid0: operation not permitted",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("missing %q in:\n%s%s", want, r.stdout, r.stderr)
		}
	}
}

func TestSeccompProgramsAssemble(t *testing.T) {
	prepared, start, err := seccompPrograms()
	if err != nil {
		t.Fatal(err)
	}
	if len(prepared)+len(start) < len(deniedSyscalls) {
		t.Errorf("filters have %d+%d instructions for %d denied syscalls", len(prepared), len(start), len(deniedSyscalls))
	}
	if len(start) > 16 {
		t.Errorf("the filter loaded at a start has %d instructions: keep it small", len(start))
	}
}

func TestNetworkIsolation(t *testing.T) {
	e := newExecutor(t, Config{})
	outside, err := testnet.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { outside.Close() })
	// A service on the internet, one on the host's loopback and one on
	// every host address.
	remote := make(chan string, 8)
	serve := func(ln net.Listener) string {
		acceptAll(t, ln, remote)
		return ln.Addr().String()
	}
	listen := func(addr string) net.Listener {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	oln, err := outside.Listen(0)
	if err != nil {
		t.Fatal(err)
	}
	internet := serve(oln)
	loopback := serve(listen("127.0.0.1:0"))
	_, anyPort, _ := net.SplitHostPort(serve(listen(":0")))
	hostOnLink := net.JoinHostPort(outside.HostAddr.String(), anyPort)

	// Another instance with network access, serving on its egress address.
	other := probeSpec("serve")
	other.PortEnv, other.Network = "PORT", true
	inst, err := e.Start(context.Background(), other)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		inst.Kill()
		waitDone(t, inst)
	}()
	httpViaDial(t, inst)
	_, otherAddr := e.eg.addrs(inst.link.block)
	// Nothing of the host is reachable over IPv6 either: its side of a
	// link has no address at all, not even a link-local one.
	if hl, err := netlink.LinkByName(inst.link.name()); err != nil {
		t.Error(err)
	} else if a6, err := netlink.AddrList(hl, netlink.FAMILY_V6); err != nil || len(a6) > 0 {
		t.Errorf("host side of an egress link has IPv6 addresses %v (%v)", a6, err)
	}
	neighbour := net.JoinHostPort(otherAddr.String(), strconv.Itoa(privatePort))

	for _, tc := range []struct {
		name    string
		network bool
		addr    string
		want    string // "connected" or a part of the error
	}{
		{"private to host loopback", false, loopback, "connection refused"},
		{"private to internet", false, internet, "network is unreachable"},
		{"network to internet", true, internet, "connected"},
		{"network to host loopback", true, loopback, "connection refused"},
		{"network to host address", true, hostOnLink, "no route to host"},
		{"network to another instance", true, neighbour, "no route to host"},
		{"network to link-local metadata", true, "169.254.169.254:80", "no route to host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := probeSpec("connect", tc.addr)
			spec.Network = tc.network
			r := runOnce(t, e, spec)
			if tc.want == "connected" {
				if r.exit.Code != 0 || r.stdout != "connected\n" {
					t.Fatalf("%s, %q %q", r.exit, r.stdout, r.stderr)
				}
				if got := <-remote; got != outside.HostAddr.String() {
					t.Errorf("the outside saw the connection come from %s, want the host's masquerading address %s", got, outside.HostAddr)
				}
				return
			}
			if r.exit.Code != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("want an error with %q: %s, %q %q", tc.want, r.exit, r.stdout, r.stderr)
			}
		})
	}
	select {
	case addr := <-remote:
		t.Errorf("a refused connection reached a listener (from %s)", addr)
	default:
	}
	// The host cannot open connections into an instance either.
	if c, err := net.DialTimeout("tcp", neighbour, 5*time.Second); err == nil {
		c.Close()
		t.Errorf("the host connected to an instance's egress address")
	}
}

// acceptAll accepts and closes connections on ln until it is closed (at
// t's cleanup), sending each peer's IP address to seen unless seen is nil.
func acceptAll(t testing.TB, ln net.Listener, seen chan<- string) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if seen != nil {
				seen <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			}
			c.Close()
		}
	}()
}

func TestMemoryLimitOOM(t *testing.T) {
	e := newExecutor(t, Config{})
	spec := probeSpec("alloc", "200")
	spec.MemoryMB = 64
	r := runOnce(t, e, spec)
	if !r.exit.OOMKilled || r.exit.Signal != "SIGKILL" || r.exit.String() != "killed by SIGKILL (out of memory)" {
		t.Errorf("exit %+v (%s), stdout %q", r.exit, r.exit, r.stdout)
	}
	// v1's max_usage_in_bytes can overshoot the limit by a charge batch.
	if p := r.inst.MemoryPeak(); p < 32<<20 || p > 65<<20 {
		t.Errorf("memory peak %d, want between 32 MiB and about the 64 MiB limit", p)
	}
	spec = probeSpec("alloc", "16")
	spec.MemoryMB = 64
	r = runOnce(t, e, spec)
	if r.exit != (ExitStatus{}) || r.inst.MemoryPeak() < 16<<20 {
		t.Errorf("within limit: exit %s, peak %d", r.exit, r.inst.MemoryPeak())
	}
}

func TestPidsLimit(t *testing.T) {
	e := newExecutor(t, Config{})
	spec := probeSpec("spawn")
	spec.PidsMax = 40
	r := runOnce(t, e, spec)
	if r.exit.Code != 0 || !strings.Contains(r.stdout, "resource temporarily unavailable") {
		t.Errorf("%s: stdout %q stderr %q", r.exit, r.stdout, r.stderr)
	}
}

// pidsInNamespaceOf lists host pids sharing the pid namespace whose inode
// is ns.
func pidsInNamespace(t testing.TB, ns string) []string {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, e := range ents {
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/pid"); err == nil && l == ns {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

func TestKillKillsTree(t *testing.T) {
	e := newExecutor(t, Config{})
	var out syncBuffer
	spec := probeSpec("tree")
	spec.Stdout = &out
	inst, err := e.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "tree ready", func() bool { return strings.Contains(out.String(), "tree ready") })
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", inst.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	if pids := pidsInNamespace(t, ns); len(pids) != 3 {
		t.Fatalf("pids in the instance's namespace: %v, want the init, the probe and its detached grandchild", pids)
	}
	inst.Kill()
	waitDone(t, inst)
	if pids := pidsInNamespace(t, ns); len(pids) != 0 {
		t.Errorf("survivors after Kill: %v", pids)
	}
}

// TestOrphansReaped: processes a function leaves behind go to process 1,
// the init, which reaps them; a function that is process 1 itself would
// keep them as zombies until the pids limit refuses it a fork.
func TestOrphansReaped(t *testing.T) {
	e := newExecutor(t, Config{})
	r := runOnce(t, e, probeSpec("orphans"))
	if r.exit.Code != 0 || r.stdout != "zombies 0\n" {
		t.Errorf("%s: %q %q", r.exit, r.stdout, r.stderr)
	}
}

func TestCloseKillsEverything(t *testing.T) {
	e := newExecutor(t, Config{Prewarm: 1})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- e.Run(ctx) }()
	var insts []*Instance
	for range 3 {
		inst, err := e.Start(context.Background(), probeSpec("sleep"))
		if err != nil {
			t.Fatal(err)
		}
		insts = append(insts, inst)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	for _, inst := range insts {
		select {
		case <-inst.Done():
		default:
			t.Errorf("instance %s not done after Close", inst.ID())
		}
	}
	if err := <-runDone; err != nil {
		t.Errorf("run: %v", err)
	}
	cancel()
	if _, err := e.Start(context.Background(), probeSpec("echo")); err == nil {
		t.Error("Start after Close succeeded")
	}
	for key, dir := range e.cg.parents {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("cgroup %s %s left behind: %v", key, dir, err)
		}
	}
}

// lambdaServer answers the runtime API's "next" with a fixed event.
func lambdaServer(t testing.TB, ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/2018-06-01/runtime/invocation/next" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, `{"hello":"world"}`)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
}

func TestListener(t *testing.T) {
	for _, network := range []bool{false, true} {
		t.Run(fmt.Sprintf("network=%v", network), func(t *testing.T) {
			e := newExecutor(t, Config{})
			spec := probeSpec("runtimeapi")
			spec.ListenEnv = "AWS_LAMBDA_RUNTIME_API"
			spec.Network = network
			var out syncBuffer
			spec.Stdout = &out
			inst, err := e.Start(context.Background(), spec)
			if err != nil {
				t.Fatal(err)
			}
			lambdaServer(t, inst.Listener())
			waitDone(t, inst)
			if got := out.String(); got != "event: {\"hello\":\"world\"}\n" || inst.Exit().Code != 0 {
				t.Errorf("%s: output %q", inst.Exit(), got)
			}
		})
	}
}

func TestDial(t *testing.T) {
	for _, network := range []bool{false, true} {
		t.Run(fmt.Sprintf("network=%v", network), func(t *testing.T) {
			e := newExecutor(t, Config{})
			spec := probeSpec("serve")
			spec.PortEnv = "PORT"
			spec.Network = network
			inst, err := e.Start(context.Background(), spec)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				inst.Kill()
				waitDone(t, inst)
			}()
			body := httpViaDial(t, inst)
			if body != "hello from "+spec.ID {
				t.Errorf("body %q", body)
			}
		})
	}
}

// httpViaDial GETs / from the instance through Dial, polling until it
// listens.
func httpViaDial(t testing.TB, inst *Instance) string {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return inst.Dial(ctx) },
	}}
	defer client.CloseIdleConnections()
	var body string
	waitFor(t, "the instance to serve", func() bool {
		resp, err := client.Get("http://instance/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return true
	})
	return body
}

func TestInterpreters(t *testing.T) {
	e := newExecutor(t, Config{})
	cases := []struct {
		argv []string
		want string
	}{
		{[]string{"/usr/bin/node", "-e", "console.log('node', process.getuid(), require('os').hostname().length > 0)"}, "node 1000 true\n"},
		{[]string{"/usr/bin/python3", "-c", "import os, ssl, json; print('python', os.getuid(), ssl.OPENSSL_VERSION[:7])"}, "python 1000 OpenSSL\n"},
		{[]string{"/bin/sh", "-c", "echo sh $(id -u)"}, "sh 1000\n"},
	}
	for _, c := range cases {
		t.Run(filepath.Base(c.argv[0]), func(t *testing.T) {
			if _, err := os.Stat(c.argv[0]); err != nil {
				t.Skipf("%s not installed", c.argv[0])
			}
			spec := probeSpec()
			spec.Argv = c.argv
			r := runOnce(t, e, spec)
			if r.exit.Code != 0 || r.stdout != c.want {
				t.Errorf("%s: stdout %q stderr %q, want %q", r.exit, r.stdout, r.stderr, c.want)
			}
		})
	}
}

func TestPrewarm(t *testing.T) {
	e := newExecutor(t, Config{Prewarm: 2})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- e.Run(ctx) }()
	waitFor(t, "two prepared sandboxes", func() bool { return len(e.warm) == 2 })
	spec := probeSpec("self")
	r := runOnce(t, e, spec)
	if r.exit.Code != 0 || !strings.Contains(r.stdout, "hostname="+spec.ID) || !strings.Contains(r.stdout, "uid=1000") {
		t.Errorf("prewarmed: %s: %q %q", r.exit, r.stdout, r.stderr)
	}
	for _, dir := range r.inst.cg.dirs {
		if filepath.Base(dir) != spec.ID {
			t.Errorf("prewarmed: cgroup %s not named after the instance %s", dir, spec.ID)
		}
	}
	waitFor(t, "the pool to refill", func() bool { return len(e.warm) == 2 })
	// A prepared sandbox also serves the runtime API listener and limits.
	spec = probeSpec("runtimeapi")
	spec.ListenEnv = "AWS_LAMBDA_RUNTIME_API"
	spec.MemoryMB = 64
	var out syncBuffer
	spec.Stdout = &out
	inst, err := e.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	lambdaServer(t, inst.Listener())
	waitDone(t, inst)
	if got := out.String(); got != "event: {\"hello\":\"world\"}\n" {
		t.Errorf("prewarmed runtime api: %s %q", inst.Exit(), got)
	}
	// The first instance with network access starts a pool of sandboxes
	// with their egress link attached; the next one comes from it.
	outside, err := testnet.New()
	if err != nil {
		t.Fatal(err)
	}
	defer outside.Close()
	ln, err := outside.Listen(0)
	if err != nil {
		t.Fatal(err)
	}
	acceptAll(t, ln, nil)
	for n := range 2 {
		if n == 1 {
			waitFor(t, "a prepared sandbox with a link", func() bool { return len(e.warmNet) == 1 })
		}
		var pooled *Instance
		select {
		case pooled = <-e.warmNet:
			e.warmNet <- pooled
		default:
		}
		spec = probeSpec("connect", ln.Addr().String())
		spec.Network = true
		r := runOnce(t, e, spec)
		if r.exit.Code != 0 || r.stdout != "connected\n" {
			t.Errorf("network instance %d: %s: %q %q", n, r.exit, r.stdout, r.stderr)
		}
		if (r.inst == pooled) != (n == 1) {
			t.Errorf("network instance %d: from the pool %v, want %v", n, r.inst == pooled, n == 1)
		}
	}
	cancel()
	if err := <-runDone; err != nil {
		t.Errorf("run: %v", err)
	}
	if n := len(e.warm) + len(e.warmNet); n != 0 {
		t.Errorf("%d prepared sandboxes left after Run returned", n)
	}
}

func TestInsecure(t *testing.T) {
	e := newExecutor(t, Config{Insecure: true})
	spec := probeSpec("env")
	spec.Env = []string{"A=1"}
	spec.PortEnv = "PORT"
	r := runOnce(t, e, spec)
	if !strings.HasPrefix(r.stdout, "A=1\nPORT=") || strings.Count(r.stdout, "\n") != 2 {
		t.Errorf("insecure env: %q", r.stdout)
	}
	r = runOnce(t, e, probeSpec("exit", "4"))
	if r.exit.Code != 4 {
		t.Errorf("insecure exit: %s", r.exit)
	}
	spec = probeSpec("serve")
	spec.PortEnv = "PORT"
	inst, err := e.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if body := httpViaDial(t, inst); !strings.HasPrefix(body, "hello from ") {
		t.Errorf("insecure dial: %q", body)
	}
	inst.Kill()
	waitDone(t, inst)
	if inst.Exit().Signal != "SIGKILL" {
		t.Errorf("insecure kill: %s", inst.Exit())
	}
	spec = probeSpec("runtimeapi")
	spec.ListenEnv = "AWS_LAMBDA_RUNTIME_API"
	var out syncBuffer
	spec.Stdout = &out
	inst, err = e.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	lambdaServer(t, inst.Listener())
	waitDone(t, inst)
	if out.String() != "event: {\"hello\":\"world\"}\n" {
		t.Errorf("insecure runtime api: %s %q", inst.Exit(), out.String())
	}
}

func TestHammer(t *testing.T) {
	e := newRunningExecutor(t, Config{Prewarm: 4})
	const n = 20
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, n)
	for k := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			spec := probeSpec("echo", fmt.Sprint(k))
			spec.Network = k%3 == 0
			spec.MemoryMB = 128
			var out syncBuffer
			spec.Stdout = &out
			inst, err := e.Start(context.Background(), spec)
			if err != nil {
				errs <- err
				return
			}
			if k%4 == 0 {
				inst.Kill()
			}
			<-inst.Done()
			if k%4 != 0 && (out.String() != fmt.Sprintf("%d\n", k) || inst.Exit().Code != 0) {
				errs <- fmt.Errorf("instance %d: %s, output %q", k, inst.Exit(), out.String())
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestResolvConf(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	stub := write("stub", "# systemd-resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n")
	upstream := write("upstream", "nameserver 192.0.2.53\nnameserver 2001:db8::53\n")
	plain := write("plain", "nameserver 198.51.100.53\nnameserver 127.0.0.1\n")
	loopbackOnly := write("loopback", "nameserver ::1\n")
	link := filepath.Join(dir, "link")
	if err := os.Symlink(stub, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, fallback, want string
	}{
		{"stub resolver: upstream servers", stub, upstream, "nameserver 192.0.2.53\nnameserver 2001:db8::53\n"},
		{"read through a symlink", link, upstream, "nameserver 192.0.2.53\nnameserver 2001:db8::53\n"},
		{"some reachable: kept as is", plain, upstream, "nameserver 198.51.100.53\nnameserver 127.0.0.1\n"},
		{"no fallback file: kept", stub, filepath.Join(dir, "missing"), "# systemd-resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n"},
		{"fallback no better: kept", stub, loopbackOnly, "# systemd-resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n"},
		{"no resolv.conf: empty", filepath.Join(dir, "missing"), upstream, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(resolvConf(tc.path, tc.fallback)); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestPresetLimits starts instances with limits that go up, down, on and
// off, each from a sandbox preset with the previous one's limits, and reads
// the cgroup files while each runs.
func TestPresetLimits(t *testing.T) {
	e := newRunningExecutor(t, Config{Prewarm: 1})
	read := func(cg *cgroup, ctl, name string) string {
		b, err := os.ReadFile(cg.file(ctl, name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	// check compares the cgroup's files with l; unlimited memory reads as
	// "max" (v2) or a huge number (v1).
	check := func(what string, cg *cgroup, l limits) {
		t.Helper()
		mem, pids, cpu := "", "", ""
		if e.cg.v2 {
			mem, pids, cpu = read(cg, "", "memory.max"), read(cg, "", "pids.max"), read(cg, "", "cpu.max")
		} else {
			mem, pids, cpu = read(cg, "memory", "memory.limit_in_bytes"), read(cg, "pids", "pids.max"), read(cg, "cpu", "cpu.cfs_quota_us")
			if e.cg.memsw {
				if sw := read(cg, "memory", "memory.memsw.limit_in_bytes"); sw != mem {
					t.Errorf("%s: memsw %s, memory %s", what, sw, mem)
				}
			}
		}
		if n, err := strconv.ParseInt(mem, 10, 64); l.memoryMB == 0 && mem != "max" && (err != nil || n < 1<<60) ||
			l.memoryMB > 0 && (err != nil || n != int64(l.memoryMB)<<20) {
			t.Errorf("%s: memory limit %s, want %d MB", what, mem, l.memoryMB)
		}
		if want := strconv.Itoa(l.pids); pids != want {
			t.Errorf("%s: pids.max %s, want %s", what, pids, want)
		}
		quota := "max"
		if !e.cg.v2 {
			quota = "-1"
		}
		if l.cpus > 0 {
			quota = strconv.Itoa(int(l.cpus * cpuPeriod))
		}
		if !strings.HasPrefix(cpu, quota) {
			t.Errorf("%s: cpu quota %s, want %s", what, cpu, quota)
		}
	}
	var prev *limits
	for n, l := range []limits{
		{memoryMB: 256, pids: 100, cpus: 1},
		{memoryMB: 128, pids: 256},            // lower memory, cpu off
		{memoryMB: 512, pids: 256, cpus: 2},   // raise memory, cpu on
		{pids: 50, cpus: 0.5},                 // memory off
		{memoryMB: 192, pids: 256, cpus: 1.5}, // memory on again
		{memoryMB: 192, pids: 256, cpus: 1.5}, // the same: no write at all
	} {
		waitFor(t, "a prepared sandbox", func() bool { return len(e.warm) == 1 })
		if prev != nil {
			warm := <-e.warm
			if warm.cg.set != *prev {
				t.Errorf("instance %d: prepared sandbox preset with %+v, want the last instance's %+v", n, warm.cg.set, *prev)
			}
			check(fmt.Sprintf("prepared sandbox %d", n), warm.cg, *prev)
			e.warm <- warm
		}
		spec := probeSpec("sleep")
		spec.MemoryMB, spec.PidsMax, spec.CPUs = l.memoryMB, l.pids, l.cpus
		inst, err := e.Start(context.Background(), spec)
		if err != nil {
			t.Fatalf("instance %d: %v", n, err)
		}
		check(fmt.Sprintf("instance %d", n), inst.cg, l)
		inst.Kill()
		waitDone(t, inst)
		prev = &l
	}
}

func TestEgressSubnetInUse(t *testing.T) {
	if err := Supported(); err != nil {
		t.Skip(err.Error())
	}
	outside, err := testnet.New()
	if err != nil {
		t.Fatal(err)
	}
	defer outside.Close()
	used := netip.PrefixFrom(outside.HostAddr, 24).Masked()
	err = newEgress(used).checkFree()
	if err == nil || !strings.Contains(err.Error(), "is in use on this host") || !strings.Contains(err.Error(), "--egress-subnet") {
		t.Errorf("subnet %s of a host link: %v", used, err)
	}
	if err := newEgress(DefaultEgressSubnet).checkFree(); err != nil {
		t.Errorf("default subnet: %v", err)
	}
	// The executor refuses network instances on a subnet in use, and says why.
	e := newExecutor(t, Config{EgressSubnet: used})
	spec := probeSpec("exit", "0")
	spec.Network = true
	if _, err := e.Start(context.Background(), spec); err == nil || !strings.Contains(err.Error(), "is in use on this host") {
		t.Errorf("start on a subnet in use: %v", err)
	}
}

func TestCheckEgressSubnet(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		want   string // part of the error; "" for none
	}{
		{"10.213.0.0/16", ""},
		{"172.30.0.0/30", ""},
		{"100.64.0.0/10", ""},
		{"fd00::/64", "want an IPv4 prefix"},
		{"10.0.0.0/31", "between /8 and /30"},
		{"10.0.0.0/7", "between /8 and /30"},
		{"10.1.2.3/16", "did you mean 10.1.0.0/16?"},
		{"127.0.0.0/8", "cannot be routed"},
		{"169.254.0.0/16", "cannot be routed"},
		{"224.0.0.0/8", "cannot be routed"},
	} {
		err := CheckEgressSubnet(netip.MustParsePrefix(tc.prefix))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.prefix, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error saying %q", tc.prefix, err, tc.want)
		}
	}
	if err := CheckEgressSubnet(netip.Prefix{}); err == nil {
		t.Error("the zero prefix passed")
	}
	if _, err := New(Config{StateDir: t.TempDir(), EgressSubnet: netip.MustParsePrefix("10.1.2.3/16")}); err == nil ||
		!strings.Contains(err.Error(), "did you mean") {
		t.Errorf("New with a bad subnet: %v", err)
	}
}

package sandbox

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path"
	"strings"
	"syscall"
)

// Config configures an Executor. The zero value of every field but StateDir
// is usable.
type Config struct {
	// StateDir is a directory owned by Aloft for per-instance scratch (the
	// mount point of new roots, the minimal /etc). Required unless Insecure.
	StateDir string
	// Logger receives the executor's own log; nil discards it.
	Logger *slog.Logger
	// Insecure runs processes directly on the host: no namespaces, cgroups
	// or seccomp (the operator passed --insecure-no-sandbox).
	Insecure bool
	// UIDBase is the first host uid (and gid) of the 65536 ids the sandbox
	// maps; default 100000.
	UIDBase int
	// Prewarm is how many prepared empty sandboxes Run keeps ready (0 = none).
	Prewarm int
	// EgressSubnet is the IPv4 range the links of instances with
	// Spec.Network are numbered from, a /30 per instance; the zero value
	// means DefaultEgressSubnet. It must not overlap the host's networks.
	EgressSubnet netip.Prefix
}

// DefaultEgressSubnet is where instances with Spec.Network get their
// addresses unless Config.EgressSubnet says otherwise.
var DefaultEgressSubnet = netip.MustParsePrefix("10.213.0.0/16")

// CheckEgressSubnet reports why p cannot number egress links, or nil.
func CheckEgressSubnet(p netip.Prefix) error {
	switch {
	case !p.IsValid() || !p.Addr().Is4():
		return fmt.Errorf("egress subnet %s: want an IPv4 prefix such as %s", p, DefaultEgressSubnet)
	case p.Bits() < 8 || p.Bits() > 30:
		return fmt.Errorf("egress subnet %s: want a prefix length between /8 and /30", p)
	case p.Masked() != p:
		return fmt.Errorf("egress subnet %s: host bits set, did you mean %s?", p, p.Masked())
	case p.Addr().IsLoopback() || p.Addr().IsLinkLocalUnicast() || p.Addr().IsMulticast():
		return fmt.Errorf("egress subnet %s: loopback, link-local and multicast ranges cannot be routed", p)
	}
	return nil
}

// Mount is an extra read-only bind mount of host path Source at Target
// inside the sandbox.
type Mount struct{ Source, Target string }

// ExecError is a Start that failed because the function's program could
// not be executed: a file that is no executable for this machine, a
// missing #! interpreter or dynamic loader. It is the function's fault,
// not the sandbox's; the instance never ran.
type ExecError struct {
	Path string        // the program, as the function sees it
	Err  syscall.Errno // what execve answered
}

func (e *ExecError) Error() string { return "exec " + e.Path + ": " + e.Err.Error() }

func (e *ExecError) Unwrap() error { return e.Err }

// Spec describes one instance to start.
type Spec struct {
	ID       string   // instance id: cgroup name and hostname; [A-Za-z0-9._-], at most 63 bytes
	CodeDir  string   // host dir mounted read-only at /var/task
	Mounts   []Mount  // extra read-only mounts (e.g. bootstraps at /var/runtime)
	Argv     []string // argv[0] is an absolute path inside the sandbox
	Env      []string // the complete, already scrubbed environment; only ListenEnv/PortEnv are added
	Dir      string   // working dir inside (default /var/task)
	MemoryMB int      // cgroup memory limit, no swap (0 = none)
	PidsMax  int      // default 256
	CPUs     float64  // CPU quota in cores, 0 = none
	TmpMB    int      // size cap of the tmpfs at /tmp (default 512)
	// Every instance has a private network namespace. Without Network it
	// holds only its own loopback; with Network it also gets an egress
	// link: a route to the outside world through the host (masqueraded),
	// but not to the host itself, its loopback, link-local addresses or
	// other instances.
	Network bool
	// ListenEnv, if set, names an env var set to the "host:port" of a TCP
	// listener the function can reach; Instance.Listener returns it.
	ListenEnv string
	// PortEnv, if set, names an env var set to the port the function must
	// listen on; Instance.Dial connects there.
	PortEnv string
	// Stdout and Stderr receive the function's output; nil discards it.
	// A writer that implements OutputReader reads the pipe itself.
	Stdout, Stderr io.Writer
}

// OutputReader may be implemented by Spec.Stdout and Spec.Stderr to read
// the function's output pipe directly instead of being written to, for
// example to drain what is pending at a given moment. ReadOutput must read
// r until EOF and must not close it.
type OutputReader interface {
	ReadOutput(r *os.File)
}

// Defaults for Spec fields left zero.
const (
	DefaultPidsMax = 256
	DefaultTmpMB   = 512
	DefaultUIDBase = 100000

	taskDir     = "/var/task"
	sandboxUID  = 1000 // the function's uid and gid inside the sandbox
	idRange     = 65536
	listenAddr  = "127.0.0.1:9001" // the ListenEnv listener inside a private netns
	privatePort = 8080             // the PortEnv port inside a private netns
	maxTrees    = 16               // mounts handed to the init at a start: the code and Spec.Mounts
)

// ExitStatus is how an instance ended.
type ExitStatus struct {
	Code      int    // exit code; -1 when killed by a signal
	Signal    string // e.g. "SIGKILL"; empty when it exited
	OOMKilled bool   // the cgroup's OOM killer killed a process of the instance
}

// String reads like "exit status 2" or "killed by SIGKILL (out of memory)".
func (s ExitStatus) String() string {
	var msg string
	if s.Signal != "" {
		msg = "killed by " + s.Signal
	} else {
		msg = fmt.Sprintf("exit status %d", s.Code)
	}
	if s.OOMKilled {
		msg += " (out of memory)"
	}
	return msg
}

// withDefaults returns spec with defaults filled in, or every problem found.
func (s Spec) withDefaults() (Spec, error) {
	var errs []error
	if !validID(s.ID) {
		errs = append(errs, fmt.Errorf("id %q: want 1-63 bytes of [A-Za-z0-9._-]", s.ID))
	}
	if s.CodeDir == "" || !path.IsAbs(s.CodeDir) {
		errs = append(errs, fmt.Errorf("code dir %q: not an absolute path", s.CodeDir))
	}
	if len(s.Argv) == 0 || !path.IsAbs(s.Argv[0]) {
		errs = append(errs, errors.New("argv: argv[0] must be an absolute path"))
	}
	if len(s.Mounts) > maxTrees-1 {
		errs = append(errs, fmt.Errorf("mounts: %d, at most %d", len(s.Mounts), maxTrees-1))
	}
	for _, m := range s.Mounts {
		if !path.IsAbs(m.Source) || !path.IsAbs(m.Target) || path.Clean(m.Target) != m.Target || reservedTarget(m.Target) {
			errs = append(errs, fmt.Errorf("mount %s -> %s: want absolute paths and a clean target outside /, /proc, /dev, /tmp, /etc and /var/task", m.Source, m.Target))
		}
	}
	for _, kv := range s.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			errs = append(errs, fmt.Errorf("env %q: want KEY=value", kv))
		}
	}
	for _, name := range []string{s.ListenEnv, s.PortEnv} {
		if strings.ContainsAny(name, "=\x00") {
			errs = append(errs, fmt.Errorf("env name %q: contains = or NUL", name))
		}
	}
	if s.MemoryMB < 0 || s.PidsMax < 0 || s.CPUs < 0 || s.TmpMB < 0 {
		errs = append(errs, errors.New("limits: MemoryMB, PidsMax, CPUs and TmpMB must not be negative"))
	}
	if s.Dir == "" {
		s.Dir = taskDir
	} else if !path.IsAbs(s.Dir) {
		errs = append(errs, fmt.Errorf("dir %q: not an absolute path", s.Dir))
	}
	if s.PidsMax == 0 {
		s.PidsMax = DefaultPidsMax
	}
	if s.TmpMB == 0 {
		s.TmpMB = DefaultTmpMB
	}
	if s.Stdout == nil {
		s.Stdout = io.Discard
	}
	if s.Stderr == nil {
		s.Stderr = io.Discard
	}
	if err := errors.Join(errs...); err != nil {
		return s, fmt.Errorf("invalid spec: %w", err)
	}
	return s, nil
}

func validID(id string) bool {
	if id == "" || len(id) > 63 || id == "." || id == ".." {
		return false
	}
	for _, c := range []byte(id) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}

func reservedTarget(t string) bool {
	for _, r := range []string{"/proc", "/dev", "/tmp", "/etc", taskDir} {
		if t == r || strings.HasPrefix(t, r+"/") {
			return true
		}
	}
	return t == "/"
}

// hostMounts is what the instance sees of the host's files besides the
// system directories: the code at /var/task, then Spec.Mounts.
func (s Spec) hostMounts() []Mount {
	return append([]Mount{{Source: s.CodeDir, Target: taskDir}}, s.Mounts...)
}

// buildEnv returns env with the entries for the names in add replaced.
func buildEnv(env []string, add map[string]string) []string {
	out := make([]string, 0, len(env)+len(add))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := add[k]; !ok {
			out = append(out, kv)
		}
	}
	for k, v := range add {
		if k != "" {
			out = append(out, k+"="+v)
		}
	}
	return out
}

package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Instance is one running function instance. Its methods are safe for
// concurrent use.
type Instance struct {
	e        *Executor
	id       string
	cmd      *exec.Cmd
	cg       *cgroup // nil when Insecure
	insecure bool
	port     int // PortEnv port, 0 if unset
	done     chan struct{}
	exit     ExitStatus // set before done closes
	peak     atomic.Int64
	peakRead atomic.Int64 // unix nanos of the last cgroup read
	ready    atomic.Bool  // awaitReady consumed readyByte

	// parent ends of the pipes; specW and statusR are used only by Start
	specW, statusR, outR, errR *os.File
	copies                     sync.WaitGroup // output copiers

	mu        sync.Mutex
	proc      *os.Process
	nsFD      int         // the instance's netns, -1 when Insecure
	link      *egressLink // nil unless Spec.Network
	ln        net.Listener
	killed    bool
	exited    bool
	streaming bool
	started   bool // the init reported the function running; it reports its end too
}

// ID returns the instance id.
func (i *Instance) ID() string { return i.id }

// Pid returns the host pid of the instance's first process (the
// pid-namespace init, which is the function itself).
func (i *Instance) Pid() int { return i.proc.Pid }

// Listener returns the ListenEnv listener, nil if ListenEnv was unset. The
// caller serves it; it is closed when the instance is done.
func (i *Instance) Listener() net.Listener {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.ln
}

// Done is closed when the whole process tree has exited and cleanup is
// finished.
func (i *Instance) Done() <-chan struct{} { return i.done }

// Exit returns how the instance ended; valid after Done.
func (i *Instance) Exit() ExitStatus {
	<-i.done
	return i.exit
}

// MemoryPeak returns the highest memory use of the instance's cgroup in
// bytes, 0 if unknown (Insecure).
func (i *Instance) MemoryPeak() int64 {
	select {
	case <-i.done:
		return i.peak.Load()
	default:
	}
	if i.cg == nil {
		return 0
	}
	// Reading the cgroup costs tens of microseconds; on a busy instance
	// a value at most peakMaxAge old is good enough.
	now := time.Now().UnixNano()
	if now-i.peakRead.Load() < int64(peakMaxAge) {
		return i.peak.Load()
	}
	i.peakRead.Store(now)
	if p := i.cg.peak(); p > 0 {
		i.peak.Store(p)
		return p
	}
	return i.peak.Load()
}

// peakMaxAge is how stale a cached MemoryPeak may be.
const peakMaxAge = 250 * time.Millisecond

// Kill kills the whole process tree now. It is idempotent and returns
// before the tree is gone: wait on Done.
func (i *Instance) Kill() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.killed = true
	if i.exited || i.proc == nil {
		return // launch kills it once started
	}
	if i.cg != nil {
		i.cg.kill()
	}
	if i.insecure {
		_ = unix.Kill(-i.proc.Pid, unix.SIGKILL)
	}
	// os.Process signals through a pidfd: never a recycled pid. Killing
	// the pid-namespace init kills everything else in the namespace.
	_ = i.proc.Kill()
}

// Terminate asks the function to end: it sends SIGTERM to the function's
// process (through the init, which passes it on). It returns at once and
// does nothing before the function runs or after it ended; wait on Done,
// and Kill what has not ended in time.
func (i *Instance) Terminate() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.exited || i.killed || i.proc == nil || (!i.insecure && !i.started) {
		return
	}
	_ = i.proc.Signal(syscall.SIGTERM)
}

// Dial opens a TCP connection to the function's PortEnv port, made inside
// the instance's network namespace when it has one. It fails with
// "connection refused" until the function listens; callers poll.
func (i *Instance) Dial(ctx context.Context) (net.Conn, error) {
	if i.port == 0 {
		return nil, fmt.Errorf("dial instance %s: no PortEnv was set", i.id)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(i.port))
	var d net.Dialer
	i.mu.Lock()
	if i.exited {
		i.mu.Unlock()
		return nil, fmt.Errorf("dial instance %s: exited", i.id)
	}
	if i.nsFD < 0 {
		i.mu.Unlock()
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("dial instance %s: %w", i.id, err)
		}
		return c, nil
	}
	fd, err := unix.Dup(i.nsFD)
	i.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("dial instance %s: %w", i.id, err)
	}
	defer unix.Close(fd)
	var c net.Conn
	err = inNetns(fd, func() error {
		var err error
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial instance %s: %w", i.id, err)
	}
	return c, nil
}

// rename gives a prepared sandbox its instance id; run renames its cgroup.
func (i *Instance) rename(id string) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.exited {
		return errors.New("prepared sandbox exited")
	}
	i.id = id
	return nil
}

// renameCgroup names the cgroup after the instance. run calls it while the
// init sets up the root, off the start's critical path; a failure only
// leaves the prepared sandbox's name.
func (i *Instance) renameCgroup() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.exited || i.cg.name() == i.id {
		return
	}
	if err := i.cg.rename(i.id); err != nil {
		i.e.log.Debug("rename cgroup", "instance", i.id, "error", err)
	}
}

// presetLimits sets a prepared sandbox's cgroup limits ahead of its spec.
func (i *Instance) presetLimits(l limits) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.cg.setLimits(l)
}

// connect gives the instance its egress link.
func (i *Instance) connect() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.exited {
		return errors.New("sandbox exited before start")
	}
	l, err := i.e.eg.attach(i.nsFD)
	if err != nil {
		return err
	}
	i.link = l
	return nil
}

// connected reports whether the instance has its egress link.
func (i *Instance) connected() bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.link != nil
}

// run hands a prepared sandbox its spec and waits until the function was
// exec'ed.
func (i *Instance) run(ctx context.Context, spec Spec) error {
	if err := i.cg.setLimits(limitsOf(spec)); err != nil {
		return err
	}
	add := map[string]string{}
	if spec.ListenEnv != "" {
		add[spec.ListenEnv] = listenAddr
	} else {
		i.mu.Lock()
		ln := i.ln
		i.ln = nil
		i.mu.Unlock()
		closeListener(ln)
	}
	if spec.PortEnv != "" {
		i.port = privatePort
		add[spec.PortEnv] = strconv.Itoa(i.port)
	}
	if err := i.stream(spec); err != nil {
		return err
	}
	// The trees go only to an init that has read its layout and waits:
	// a read of the layout could otherwise take the byte that carries
	// them, and drop them.
	if !i.ready.Load() {
		if err := i.awaitReady(ctx); err != nil {
			return err
		}
	}
	if err := i.sendTrees(spec); err != nil {
		return err
	}
	var targets []string
	for _, m := range spec.hostMounts() {
		targets = append(targets, m.Target)
	}
	rs := runSpec{ID: i.id, Targets: targets, Argv: spec.Argv,
		Env: buildEnv(spec.Env, add), Dir: spec.Dir, TmpMB: spec.TmpMB}
	err := json.NewEncoder(i.specW).Encode(rs)
	_ = i.specW.Close()
	if err != nil {
		return fmt.Errorf("send spec: %w", err)
	}
	i.renameCgroup()
	stop := context.AfterFunc(ctx, func() { _ = i.statusR.SetReadDeadline(time.Unix(1, 0)) })
	var b [1]byte
	_, err = io.ReadFull(i.statusR, b[:])
	if stop() && err == nil && b[0] == startedByte {
		// The status pipe stays open: reap reads the function's end,
		// unless it has already reaped the init (a function that ended
		// at once), and then its exit code stands.
		i.mu.Lock()
		started := !i.exited
		i.started = started
		i.mu.Unlock()
		if !started {
			_ = i.statusR.Close()
		}
		return nil
	}
	var msg []byte
	if err == nil {
		rest, _ := io.ReadAll(i.statusR)
		msg = append(b[:], rest...)
	}
	_ = i.statusR.Close()
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, io.EOF):
		return errors.New("the sandbox init ended before it started the function")
	case err != nil:
		return fmt.Errorf("read sandbox status: %w", err)
	}
	return statusError(string(msg))
}

// awaitReady waits until the init has built the base root and waits for
// the spec, so a prepared sandbox is handed out only once it is warm.
func (i *Instance) awaitReady(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = i.statusR.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var b [1]byte
	if _, err := io.ReadFull(i.statusR, b[:]); err != nil {
		return fmt.Errorf("wait for prepared sandbox: %w", err)
	}
	if b[0] != readyByte {
		msg, _ := io.ReadAll(i.statusR)
		return fmt.Errorf("prepare sandbox: %s", append(b[:], msg...))
	}
	i.ready.Store(true)
	return nil
}

// sendTrees hands the init spec's host mounts as detached read-only mount
// trees. The init's root is already built and entered, so attaching them
// is all that is left of the mounts at a start.
func (i *Instance) sendTrees(spec Spec) error {
	var fds []int
	defer func() {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
	}()
	for _, m := range spec.hostMounts() {
		fd, err := openTree(m.Source)
		if err != nil {
			return err
		}
		fds = append(fds, fd)
	}
	conn, err := i.specW.SyscallConn()
	if err != nil {
		return fmt.Errorf("send mounts: %w", err)
	}
	var serr error
	if err := conn.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), []byte{treesByte}, unix.UnixRights(fds...), nil, 0)
		return serr != unix.EAGAIN
	}); err != nil {
		return fmt.Errorf("send mounts: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("send mounts: %w", serr)
	}
	return nil
}

// openTree returns a detached, read-only, nosuid, nodev copy of the mount
// tree at path (open_tree and mount_setattr: Linux 5.12).
func openTree(path string) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return -1, fmt.Errorf("mount %s: %w", path, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("make mount of %s read-only: %w", path, err)
	}
	return fd, nil
}

// stream starts copying the function's output to the spec's writers.
func (i *Instance) stream(spec Spec) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.exited {
		return errors.New("sandbox exited before start")
	}
	i.streaming = true
	i.copies.Add(2)
	go i.copyOut(spec.Stdout, i.outR)
	go i.copyOut(spec.Stderr, i.errR)
	return nil
}

func (i *Instance) copyOut(w io.Writer, r *os.File) {
	defer i.copies.Done()
	if or, ok := w.(OutputReader); ok {
		or.ReadOutput(r)
		_, _ = io.Copy(io.Discard, r)
		_ = r.Close()
		return
	}
	if _, err := io.Copy(w, r); err != nil {
		_, _ = io.Copy(io.Discard, r) // keep draining: never block the function
	}
	_ = r.Close()
}

// reap waits for the process tree, records the exit status and cleans up.
func (i *Instance) reap() {
	defer i.e.forget(i)
	_ = i.cmd.Wait()
	if i.insecure {
		_ = unix.Kill(-i.proc.Pid, unix.SIGKILL) // stragglers of the process group
	}
	i.mu.Lock()
	i.exited = true
	streaming, started := i.streaming, i.started
	ln, nsFD, link := i.ln, i.nsFD, i.link
	i.nsFD, i.link = -1, nil
	i.mu.Unlock()
	if !streaming {
		closeFiles(i.outR, i.errR)
	}
	i.copies.Wait()
	closeFiles(i.specW)
	if !streaming {
		closeFiles(i.statusR)
	}
	if ln != nil {
		_ = ln.Close()
	}
	if nsFD >= 0 {
		_ = unix.Close(nsFD)
	}
	i.exit = exitStatus(i.cmd.ProcessState)
	if started {
		// The init reported how the function ended; its own exit only
		// mirrors that.
		msg, _ := io.ReadAll(i.statusR)
		if st, ok := functionExit(string(msg)); ok {
			i.exit = st
		}
		closeFiles(i.statusR)
	}
	if i.cg != nil {
		i.exit.OOMKilled = i.cg.oomKills() > 0
		i.peak.Store(i.cg.peak())
		if err := i.cg.remove(); err != nil {
			i.e.log.Warn("remove instance cgroup", "instance", i.id, "error", err)
		}
	}
	close(i.done)
	// Deleting a veth waits for the network stack to quiesce: after Done,
	// before the executor forgets the instance.
	if link != nil {
		i.e.eg.detach(link)
	}
}

func exitStatus(ps *os.ProcessState) ExitStatus {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	switch {
	case !ok:
		return ExitStatus{Code: ps.ExitCode()}
	case ws.Signaled():
		return ExitStatus{Code: -1, Signal: unix.SignalName(ws.Signal())}
	default:
		return ExitStatus{Code: ws.ExitStatus()}
	}
}

// startInsecure runs spec as a plain host process in its own process group.
func (e *Executor) startInsecure(spec Spec) (*Instance, error) {
	i := &Instance{e: e, id: spec.ID, insecure: true, nsFD: -1, done: make(chan struct{})}
	add := map[string]string{}
	if spec.ListenEnv != "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("start %s: listen: %w", spec.ID, err)
		}
		i.ln = ln
		add[spec.ListenEnv] = ln.Addr().String()
	}
	if spec.PortEnv != "" {
		var err error
		if i.port, err = freePort(); err != nil {
			closeListener(i.ln)
			return nil, fmt.Errorf("start %s: %w", spec.ID, err)
		}
		add[spec.PortEnv] = strconv.Itoa(i.port)
	}
	p, err := newPipes()
	if err != nil {
		closeListener(i.ln)
		return nil, fmt.Errorf("start %s: %w", spec.ID, err)
	}
	closeFiles(p.specR, p.specW, p.statusR, p.statusW)
	i.outR, i.errR = p.outR, p.errR
	argv := make([]string, len(spec.Argv))
	for n, a := range spec.Argv {
		argv[n] = hostPath(spec, a)
	}
	cmd := &exec.Cmd{
		Path:        argv[0],
		Args:        argv,
		Env:         hostEnv(spec, buildEnv(spec.Env, add)),
		Dir:         hostPath(spec, spec.Dir),
		Stdout:      p.outW,
		Stderr:      p.errW,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	// Copy the output from before the start: a process that prints and
	// exits at once must not be reaped (its pipes closed) before anyone
	// reads them.
	i.streaming = true
	i.copies.Add(2)
	go i.copyOut(spec.Stdout, i.outR)
	go i.copyOut(spec.Stderr, i.errR)
	if err := e.launch(i, cmd, p.outW, p.errW); err != nil {
		i.copies.Wait() // launch closed both ends of the pipes
		closeListener(i.ln)
		var pe *fs.PathError
		var errno syscall.Errno
		if errors.As(err, &pe) && pe.Op == "fork/exec" && errors.As(pe.Err, &errno) {
			err = &ExecError{Path: spec.Argv[0], Err: errno}
		}
		return nil, fmt.Errorf("start %s: %w", spec.ID, err)
	}
	return i, nil
}

func closeListener(ln net.Listener) {
	if ln != nil {
		_ = ln.Close()
	}
}

// hostEnv rewrites environment values that are sandbox paths
// (LAMBDA_TASK_ROOT=/var/task, NODE_PATH=/var/task/node_modules:...) to host
// paths, for Insecure mode.
func hostEnv(spec Spec, env []string) []string {
	out := make([]string, len(env))
	for n, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		parts := strings.Split(v, ":")
		for j, p := range parts {
			parts[j] = hostPath(spec, p)
		}
		out[n] = k + "=" + strings.Join(parts, ":")
	}
	return out
}

// hostPath maps a path inside the sandbox (/var/task/..., a mount target)
// to the host path it stands for, for Insecure mode.
func hostPath(spec Spec, p string) string {
	for _, m := range spec.hostMounts() {
		if p == m.Target {
			return m.Source
		}
		if rest, ok := strings.CutPrefix(p, m.Target+"/"); ok {
			return m.Source + "/" + rest
		}
	}
	return p
}

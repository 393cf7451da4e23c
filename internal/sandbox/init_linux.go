package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// initArg is the hidden argument that makes the re-executed binary the
// sandbox init.
const initArg = "__aloft_sandbox_init__"

// File descriptors the executor hands the init.
const (
	specFD   = 3 // a Unix socket: the layout as JSON; then treesByte carrying the mounts, and the runSpec as JSON
	statusFD = 4 // write: readyByte once the root is built and entered; then an error message, or startedByte and the function's end
	// 5...: cgroup v1 tasks files, see cgroup.openTasks
)

// treesByte is the byte on the spec socket that carries the detached mount
// trees of a start, in the order of runSpec.Targets.
const treesByte = 'T'

// readyByte is what the init writes on the status pipe once it waits for
// the run spec.
const readyByte = 'R'

// runSpec is the last message on the spec socket: what the instance runs.
// Targets are where the trees go: /var/task, then Spec.Mounts' targets.
type runSpec struct {
	ID      string
	Targets []string
	Argv    []string
	Env     []string
	Dir     string
	TmpMB   int
}

// MaybeRunInit runs the sandbox init if this process was started as one and
// reports ok == true; the caller must then exit with code. It returns
// (0, false) at once in any other process. The init starts the function as
// its child and stays, as the instance's process 1, to reap every process
// the function leaves behind; it returns when the function has exited,
// with its exit code. A failure has been reported to the executor, and
// code is then nonzero too.
func MaybeRunInit() (code int, ok bool) {
	if len(os.Args) != 2 || os.Args[1] != initArg {
		return 0, false
	}
	runtime.LockOSThread() // credentials, seccomp and pdeathsig are this thread's
	status := os.NewFile(statusFD, "status")
	pid, err := runInit()
	if err != nil {
		_, _ = status.WriteString(statusMessage(err))
		return 127, true
	}
	forwardTerm(pid)
	if _, err := status.Write([]byte{startedByte}); err != nil {
		return 127, true
	}
	// The init's other threads keep the credentials they built the
	// sandbox with (only this thread dropped them, see dropPrivileges):
	// it runs no code of the function's and can be neither traced (seccomp)
	// nor read (not dumpable) from the function, which can at most signal
	// it, ending its own instance.
	return reapChildren(status, pid), true
}

// forwardTerm passes each SIGTERM the init gets (Instance.Terminate) on to
// the function, which may then end on its own: the init's own default
// would be to exit, which kills the whole instance at once.
func forwardTerm(pid int) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM)
	go func() {
		for range ch {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	}()
}

// startedByte is what the init writes on the status pipe once the
// function runs; its exit follows as "exit N" or "signal N".
const startedByte = 0x01

// reapChildren waits for the init's children, the function and every
// process the function left that the kernel hands to process 1, until the
// function exits. It writes the function's end on status and returns the
// init's exit code; leaving, the init takes what is left of the instance
// with it (the kernel kills the rest of its PID namespace).
func reapChildren(status *os.File, pid int) int {
	for {
		var ws syscall.WaitStatus
		wpid, err := syscall.Wait4(-1, &ws, 0, nil)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			_, _ = status.WriteString("exit 127")
			return 127
		case wpid != pid:
			continue // an orphan: reaped, so that no zombie fills the pids limit
		case ws.Signaled():
			_, _ = status.WriteString("signal " + strconv.Itoa(int(ws.Signal())))
			return 128 + int(ws.Signal())
		default:
			_, _ = status.WriteString("exit " + strconv.Itoa(ws.ExitStatus()))
			return ws.ExitStatus()
		}
	}
}

// functionExit reads the end the init reported for the function: "exit N"
// or "signal N".
func functionExit(msg string) (ExitStatus, bool) {
	kind, num, _ := strings.Cut(msg, " ")
	n, err := strconv.Atoi(num)
	switch {
	case err != nil:
		return ExitStatus{}, false
	case kind == "exit":
		return ExitStatus{Code: n}, true
	case kind == "signal" && n > 0:
		return ExitStatus{Code: -1, Signal: unix.SignalName(syscall.Signal(n))}, true
	}
	return ExitStatus{}, false
}

func runInit() (int, error) {
	specf := os.NewFile(specFD, "spec")
	dec := json.NewDecoder(specf)
	var l layout
	if err := dec.Decode(&l); err != nil {
		return 0, fmt.Errorf("sandbox init: read layout: %w", err)
	}
	for fd := statusFD + 1; fd <= statusFD+l.TasksFDs; fd++ {
		if _, err := unix.Write(fd, []byte("0")); err != nil {
			return 0, fmt.Errorf("sandbox init: join cgroup: %w", err)
		}
		_ = unix.Close(fd)
	}
	if err := mountBase(l); err != nil {
		return 0, fmt.Errorf("sandbox init: %w", err)
	}
	if err := enterRoot(l.Root); err != nil {
		return 0, fmt.Errorf("sandbox init: %w", err)
	}
	prepared, start, err := seccompPrograms()
	if err != nil {
		return 0, fmt.Errorf("sandbox init: %w", err)
	}
	if err := loadSeccomp(prepared); err != nil {
		return 0, fmt.Errorf("sandbox init: %w", err)
	}
	if err := dropBoundingSet(); err != nil {
		return 0, fmt.Errorf("sandbox init: %w", err)
	}
	warmSpecDecoder()
	if _, err := unix.Write(statusFD, []byte{readyByte}); err != nil {
		return 0, fmt.Errorf("sandbox init: report ready: %w", err)
	}
	trees, err := recvTrees()
	if err != nil {
		return 0, fmt.Errorf("sandbox init: %w", err)
	}
	var s runSpec
	if err := json.NewDecoder(io.MultiReader(dec.Buffered(), specf)).Decode(&s); err != nil {
		return 0, fmt.Errorf("sandbox init: read spec: %w", err)
	}
	_ = specf.Close()
	if err := mountTask(s, trees); err != nil {
		return 0, fmt.Errorf("sandbox init: %w", err)
	}
	if err := unix.Sethostname([]byte(s.ID)); err != nil {
		return 0, fmt.Errorf("sandbox init: set hostname: %w", err)
	}
	if err := os.Chdir(s.Dir); err != nil {
		return 0, fmt.Errorf("sandbox init: %w", err)
	}
	if err := dropPrivileges(); err != nil {
		return 0, fmt.Errorf("sandbox init: %w", err)
	}
	// Changing credentials cleared the parent-death signal: set it again.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return 0, fmt.Errorf("sandbox init: set pdeathsig: %w", err)
	}
	syscall.CloseOnExec(statusFD)
	if err := loadSeccomp(start); err != nil {
		return 0, fmt.Errorf("sandbox init: %w", err)
	}
	// From this thread, so the function has its credentials and filters;
	// a vfork: the init's memory is not copied, nor torn down at the exec.
	pid, err := syscall.ForkExec(s.Argv[0], s.Argv, &syscall.ProcAttr{Env: s.Env, Files: []uintptr{0, 1, 2}})
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return 0, &ExecError{Path: s.Argv[0], Err: errno}
	}
	if err != nil {
		return 0, fmt.Errorf("exec %s: %w", s.Argv[0], err)
	}
	return pid, nil
}

// execFailed starts the status message of an exec that failed:
// execFailed, the errno in decimal, a space, the program's path.
const execFailed = "exec failed: "

// statusMessage is how the init reports err to the executor.
func statusMessage(err error) string {
	var xe *ExecError
	if errors.As(err, &xe) {
		return execFailed + strconv.Itoa(int(xe.Err)) + " " + xe.Path
	}
	return err.Error()
}

// statusError is the error the executor makes of the init's message.
func statusError(msg string) error {
	if rest, ok := strings.CutPrefix(msg, execFailed); ok {
		num, path, _ := strings.Cut(rest, " ")
		if n, err := strconv.Atoi(num); err == nil && n > 0 && path != "" {
			return &ExecError{Path: path, Err: syscall.Errno(n)}
		}
	}
	return errors.New(msg)
}

// warmSpecDecoder decodes a made-up run spec while the sandbox is only
// prepared. The first decode of a type in a process builds encoding/json's
// field cache and faults in its code: 0.1-0.2 ms here that a start would
// otherwise pay after the spec arrives.
func warmSpecDecoder() {
	var s runSpec
	_ = json.Unmarshal([]byte(`{"ID":"i","Targets":["/var/task"],"Argv":["/var/task/bootstrap"],"Env":["A=B"],"Dir":"/var/task","TmpMB":1}`), &s)
}

const (
	roFlags  = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV
	tmpFlags = unix.MS_NOSUID | unix.MS_NODEV
)

// hostDevices are bound from the host's /dev.
var hostDevices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// mountBase builds everything of the new root that does not depend on the
// spec, under l.Root, including /proc (the kernel refuses a fresh proc
// mount once the old root, with its fully visible /proc, is gone).
func mountBase(l layout) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	root := l.Root
	if err := unix.Mount("tmpfs", root, "tmpfs", tmpFlags, "size=1m,mode=0755"); err != nil {
		return fmt.Errorf("mount root tmpfs: %w", err)
	}
	for _, e := range l.System {
		if e.Link != "" {
			if err := os.Symlink(e.Link, root+e.Path); err != nil {
				return err
			}
			continue
		}
		if err := bindRO(e.Path, root+e.Path, true); err != nil {
			return err
		}
	}
	if err := bindRO(l.Etc, root+"/etc", true); err != nil {
		return err
	}
	for _, p := range l.EtcBind {
		if err := bindRO(p, root+p, false); err != nil {
			return err
		}
	}
	if err := mountDev(root + "/dev"); err != nil {
		return err
	}
	if err := os.Mkdir(root+"/proc", 0o555); err != nil {
		return err
	}
	if err := unix.Mount("proc", root+"/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount proc: %w", err)
	}
	return os.Mkdir(root+"/tmp", 0o755)
}

func mountDev(dev string) error {
	if err := os.Mkdir(dev, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "size=64k,mode=0755"); err != nil {
		return fmt.Errorf("mount /dev: %w", err)
	}
	for _, d := range hostDevices {
		f, err := os.OpenFile(filepath.Join(dev, d), os.O_CREATE|os.O_WRONLY, 0o666)
		if err != nil {
			return err
		}
		_ = f.Close()
		if err := unix.Mount("/dev/"+d, filepath.Join(dev, d), "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", d, err)
		}
	}
	links := map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dev+"/shm", 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", dev+"/shm", "tmpfs", tmpFlags, "mode=1777"); err != nil {
		return fmt.Errorf("mount /dev/shm: %w", err)
	}
	if err := unix.Mount("", dev, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("remount /dev read-only: %w", err)
	}
	return nil
}

// bindRO bind-mounts src read-only, nosuid, nodev at dst, creating dst (a
// directory or an empty file, like src) when mk is set.
func bindRO(src, dst string, mk bool) error {
	if mk {
		fi, err := os.Stat(src)
		if err != nil {
			return err
		}
		if err := mkTarget(dst, fi.IsDir()); err != nil {
			return err
		}
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | roFlags)
	var st unix.Statfs_t
	if err := unix.Statfs(dst, &st); err == nil && st.Flags&unix.ST_NOEXEC != 0 {
		flags |= unix.MS_NOEXEC // a locked flag: keep it or the remount fails
	}
	if err := unix.Mount("", dst, "", flags, ""); err != nil {
		return fmt.Errorf("remount %s read-only: %w", src, err)
	}
	return nil
}

func mkTarget(dst string, dir bool) error {
	if dir {
		return os.MkdirAll(dst, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// recvTrees reads treesByte and the mount trees it carries.
func recvTrees() ([]int, error) {
	var b [1]byte
	oob := make([]byte, unix.CmsgSpace(4*maxTrees))
	n, oobn, flags, _, err := unix.Recvmsg(specFD, b[:], oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil || n != 1 || b[0] != treesByte {
		return nil, fmt.Errorf("read mounts: got %q, %v", b[:n], err)
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return nil, fmt.Errorf("read mounts: more than %d", maxTrees)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("read mounts: %d control messages, %v", len(msgs), err)
	}
	return unix.ParseUnixRights(&msgs[0])
}

// mountTask attaches trees (detached read-only mounts the executor made) at
// s.Targets, mounts /tmp and makes the root read-only.
func mountTask(s runSpec, trees []int) error {
	targets := s.Targets
	if len(trees) != len(targets) {
		return fmt.Errorf("got %d mounts for %d targets", len(trees), len(targets))
	}
	for n, fd := range trees {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return fmt.Errorf("mount %s: %w", targets[n], err)
		}
		if err := mkTarget(targets[n], st.Mode&unix.S_IFMT == unix.S_IFDIR); err != nil {
			return err
		}
		if err := unix.MoveMount(fd, "", unix.AT_FDCWD, targets[n], unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("mount %s: %w", targets[n], err)
		}
		_ = unix.Close(fd)
	}
	if err := unix.Mount("tmpfs", "/tmp", "tmpfs", tmpFlags, fmt.Sprintf("size=%dm,mode=1777", s.TmpMB)); err != nil {
		return fmt.Errorf("mount /tmp: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|roFlags, ""); err != nil {
		return fmt.Errorf("remount root read-only: %w", err)
	}
	return nil
}

// enterRoot makes root the process's / and detaches the old root.
func enterRoot(root string) error {
	if err := os.Chdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	return os.Chdir("/")
}

// dropBoundingSet empties the capability bounding set; the effective
// capabilities the mounts need stay until dropPrivileges.
func dropBoundingSet() error {
	for c := 0; c <= 63; c++ {
		err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0)
		if errors.Is(err, unix.EINVAL) {
			return nil // past the last capability
		}
		if err != nil {
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	return nil
}

// dropPrivileges becomes the function's uid and gid with no supplementary
// groups; changing from uid 0 clears every capability.
//
// The calls change only the calling thread's credentials (raw syscalls, not
// Go's all-threads variants, which signal every thread and cost about a
// millisecond here). That is enough for the function: this thread is
// locked and is the one that starts it, and a child has the credentials of
// the thread that forked it. The init's other threads keep theirs (see
// MaybeRunInit).
func dropPrivileges() error {
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
		return fmt.Errorf("setgroups: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, sandboxUID, sandboxUID, sandboxUID); e != 0 {
		return fmt.Errorf("setresgid: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, sandboxUID, sandboxUID, sandboxUID); e != 0 {
		return fmt.Errorf("setresuid: %w", e)
	}
	return nil
}

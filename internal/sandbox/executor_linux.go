package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/sys/unix"
)

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("sandbox executor closed")

// Executor starts sandboxed instances. Its methods are safe for concurrent
// use.
type Executor struct {
	cfg Config
	log *slog.Logger
	lay layout
	cg  *cgroupLayout // nil when Insecure
	eg  *egress       // nil when Insecure

	spawnc      chan spawnReq
	quit        chan struct{} // closed by Close
	spawnerDone chan struct{}
	closeOnce   sync.Once

	mu     sync.Mutex
	closed bool
	live   map[*Instance]struct{}

	warm    chan *Instance         // prepared sandboxes
	warmNet chan *Instance         // prepared sandboxes with an egress link
	wantNet atomic.Bool            // an instance with Spec.Network was started: fill warmNet
	preset  atomic.Pointer[limits] // the last instance's: prepared sandboxes get them
	refill  chan struct{}
	wg      sync.WaitGroup // reapers
	seq     atomic.Uint64
}

var supported = sync.OnceValue(checkSupported)

// Supported reports nil if this machine and these privileges can run the
// native sandbox, else an error saying everything that is missing.
func Supported() error { return supported() }

func checkSupported() error {
	var errs []error
	if uid := os.Geteuid(); uid != 0 {
		errs = append(errs, fmt.Errorf("needs root (running as uid %d)", uid))
	}
	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err != nil {
		errs = append(errs, fmt.Errorf("user namespaces unavailable: %w", err))
	} else if strings.TrimSpace(string(b)) == "0" {
		errs = append(errs, errors.New("user namespaces disabled (/proc/sys/user/max_user_namespaces is 0)"))
	}
	for _, ns := range []string{"user", "pid", "mnt", "net", "ipc", "uts"} {
		if _, err := os.Stat("/proc/self/ns/" + ns); err != nil {
			errs = append(errs, fmt.Errorf("kernel lacks %s namespaces", ns))
		}
	}
	if _, _, err := detectCgroups(); err != nil {
		errs = append(errs, err)
	}
	if !seccomp.Supported() {
		errs = append(errs, errors.New("kernel lacks seccomp filters"))
	}
	// Without root the probe fails with EPERM, which "needs root" covers.
	if fd, err := openTree("/"); errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) {
		errs = append(errs, fmt.Errorf("kernel lacks the mount API (open_tree, mount_setattr: Linux 5.12): %w", err))
	} else if err == nil {
		_ = unix.Close(fd)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("native sandbox unsupported: %w", err)
	}
	return nil
}

// New validates cfg and returns an executor. Unless cfg.Insecure it fails
// with Supported's error, or when StateDir or the cgroups cannot be set up.
func New(cfg Config) (*Executor, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.UIDBase == 0 {
		cfg.UIDBase = DefaultUIDBase
	}
	var errs []error
	if cfg.UIDBase < 1 || int64(cfg.UIDBase)+idRange > 1<<32-1 {
		errs = append(errs, fmt.Errorf("uid base %d: out of range", cfg.UIDBase))
	}
	if cfg.Prewarm < 0 {
		errs = append(errs, fmt.Errorf("prewarm %d: negative", cfg.Prewarm))
	}
	if cfg.StateDir == "" && !cfg.Insecure {
		errs = append(errs, errors.New("state dir: required"))
	}
	if !cfg.EgressSubnet.IsValid() {
		cfg.EgressSubnet = DefaultEgressSubnet
	}
	if err := CheckEgressSubnet(cfg.EgressSubnet); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("new sandbox executor: %w", err)
	}
	e := &Executor{
		cfg:         cfg,
		log:         cfg.Logger,
		spawnc:      make(chan spawnReq),
		quit:        make(chan struct{}),
		spawnerDone: make(chan struct{}),
		live:        map[*Instance]struct{}{},
		warm:        make(chan *Instance, cfg.Prewarm),
		warmNet:     make(chan *Instance, min(cfg.Prewarm, 1)),
		refill:      make(chan struct{}, 1),
	}
	if !cfg.Insecure {
		if err := Supported(); err != nil {
			return nil, err
		}
		lay, err := prepareState(cfg.StateDir)
		if err != nil {
			return nil, fmt.Errorf("new sandbox executor: %w", err)
		}
		e.lay = lay
		if e.cg, err = newCgroupLayout(); err != nil {
			return nil, fmt.Errorf("new sandbox executor: %w", err)
		}
		e.eg = newEgress(cfg.EgressSubnet)
	}
	go e.spawner()
	return e, nil
}

// spawnReq asks the spawner thread to start a command.
type spawnReq struct {
	cmd  *exec.Cmd
	errc chan error
}

// spawner starts every process from one locked OS thread that lives as long
// as the executor: Linux sends the parent-death signal when the *thread*
// that forked exits, and Go may retire other threads at any time.
func (e *Executor) spawner() {
	defer close(e.spawnerDone)
	runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
	for {
		select {
		case req := <-e.spawnc:
			req.errc <- req.cmd.Start()
		case <-e.quit:
			return
		}
	}
}

func (e *Executor) spawn(cmd *exec.Cmd) error {
	req := spawnReq{cmd: cmd, errc: make(chan error, 1)}
	select {
	case e.spawnc <- req:
		return <-req.errc
	case <-e.quit:
		return ErrClosed
	}
}

// Run keeps Config.Prewarm prepared sandboxes ready until ctx is done or the
// executor is closed, then kills the prepared ones and returns nil. Once an
// instance with Spec.Network was started, it also keeps one prepared sandbox
// with its egress link attached. Call it once.
func (e *Executor) Run(ctx context.Context) error {
	defer e.drainWarm()
	retry := time.NewTimer(0)
	defer retry.Stop()
	<-retry.C
	for {
		if err := e.fill(ctx); err != nil {
			if errors.Is(err, ErrClosed) || ctx.Err() != nil {
				return nil
			}
			e.log.Warn("prepare sandbox", "error", err)
			retry.Reset(time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-e.quit:
			return nil
		case <-e.refill:
			// Preparing a sandbox takes a few milliseconds of CPU; while
			// others are still ready, let the instance just taken finish
			// starting first.
			if len(e.warm) > 0 {
				retry.Reset(refillDelay)
				select {
				case <-ctx.Done():
					return nil
				case <-e.quit:
					return nil
				case <-retry.C:
				}
			}
		case <-retry.C:
		}
	}
}

// fill prepares sandboxes until both pools are full. Only Run sends to the
// pools, so there is room for what it prepares.
func (e *Executor) fill(ctx context.Context) error {
	if e.cfg.Insecure {
		return nil
	}
	for len(e.warm) < cap(e.warm) {
		i, err := e.prepareWarm(ctx, false)
		if err != nil {
			return err
		}
		e.warm <- i
	}
	for e.wantNet.Load() && len(e.warmNet) < cap(e.warmNet) {
		i, err := e.prepareWarm(ctx, true)
		if err != nil {
			// Try again at the next network start, not every second.
			e.wantNet.Store(false)
			return err
		}
		e.warmNet <- i
	}
	return nil
}

// prepareWarm prepares a sandbox, with an egress link if network, and
// waits until its init is ready.
func (e *Executor) prepareWarm(ctx context.Context, network bool) (*Instance, error) {
	i, err := e.prepare("warm-" + strconv.FormatUint(e.seq.Add(1), 10))
	if err != nil {
		return nil, err
	}
	if p := e.preset.Load(); p != nil {
		err = i.presetLimits(*p)
	}
	if err == nil {
		err = i.awaitReady(ctx)
	}
	if err == nil && network {
		err = i.connect()
	}
	if err != nil {
		i.Kill()
		<-i.done
		return nil, err
	}
	return i, nil
}

// refillDelay is how long a refill waits while prepared sandboxes remain.
const refillDelay = 25 * time.Millisecond

func (e *Executor) drainWarm() {
	for _, pool := range []chan *Instance{e.warm, e.warmNet} {
		for drained := false; !drained; {
			select {
			case i := <-pool:
				i.Kill()
				<-i.done
			default:
				drained = true
			}
		}
	}
}

// takeWarm returns a sandbox from pool renamed to id, or nil.
func (e *Executor) takeWarm(pool chan *Instance, id string) *Instance {
	for {
		select {
		case i := <-pool:
			e.wakeRun()
			if err := i.rename(id); err != nil {
				e.log.Debug("rename prepared sandbox", "instance", id, "error", err)
				i.Kill()
				continue
			}
			return i
		default:
			return nil
		}
	}
}

// wakeRun asks Run to refill the pools.
func (e *Executor) wakeRun() {
	select {
	case e.refill <- struct{}{}:
	default:
	}
}

// Start starts an instance described by spec. ctx bounds only the start:
// Start returns once the function's program has been exec'ed (or failed to
// be), and the instance lives until it exits or Kill. Errors: an invalid
// spec (every problem joined), ErrClosed, a code dir or mount source the
// sandbox uid cannot reach, a failed setup or exec inside the sandbox, or
// ctx's error.
func (e *Executor) Start(ctx context.Context, spec Spec) (*Instance, error) {
	spec, err := spec.withDefaults()
	if err != nil {
		return nil, err
	}
	if e.cfg.Insecure {
		return e.startInsecure(spec)
	}
	if err := checkDir(spec.CodeDir); err != nil {
		return nil, fmt.Errorf("start %s: code dir: %w", spec.ID, err)
	}
	for _, m := range spec.Mounts {
		if _, err := os.Stat(m.Source); err != nil {
			return nil, fmt.Errorf("start %s: mount: %w", spec.ID, err)
		}
		if err := checkReachable(parentDir(m.Source)); err != nil {
			return nil, fmt.Errorf("start %s: mount: %w", spec.ID, err)
		}
	}
	// Before taking a sandbox: the refill that taking wakes presets these.
	l := limitsOf(spec)
	e.preset.Store(&l)
	var i *Instance
	if spec.Network {
		if !e.wantNet.Swap(true) {
			e.wakeRun()
		}
		i = e.takeWarm(e.warmNet, spec.ID)
	}
	if i == nil {
		i = e.takeWarm(e.warm, spec.ID)
	}
	if i == nil {
		if i, err = e.prepare(spec.ID); err != nil {
			return nil, fmt.Errorf("start %s: %w", spec.ID, err)
		}
	}
	if spec.Network && !i.connected() {
		err = i.connect()
	}
	if err == nil {
		err = i.run(ctx, spec)
	}
	if err != nil {
		i.Kill()
		<-i.done
		return nil, fmt.Errorf("start %s: %w", spec.ID, err)
	}

	return i, nil
}

func parentDir(p string) string {
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		return p
	}
	return p[:strings.LastIndexByte(p, '/')+1]
}

// Close kills every instance and prepared sandbox, waits until they are
// gone and removes the executor's cgroups; it reports a cgroup that could
// not be removed. Calls after the first return nil.
func (e *Executor) Close() error {
	var err error
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		list := make([]*Instance, 0, len(e.live))
		for i := range e.live {
			list = append(list, i)
		}
		e.mu.Unlock()
		for _, i := range list {
			i.Kill()
		}
		close(e.quit)
		e.wg.Wait()
		<-e.spawnerDone
		if e.cg != nil {
			if rerr := e.cg.remove(); rerr != nil {
				err = fmt.Errorf("close sandbox executor: %w", rerr)
			}
		}
	})
	return err
}

// register adds i to the live set and counts its reaper.
func (e *Executor) register(i *Instance) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	e.live[i] = struct{}{}
	e.wg.Add(1)
	return nil
}

func (e *Executor) forget(i *Instance) {
	e.mu.Lock()
	delete(e.live, i)
	e.mu.Unlock()
	e.wg.Done()
}

// prepare starts a sandbox up to the point where its init waits for the
// spec: namespaces, cgroup, base root, loopback and listener are ready.
func (e *Executor) prepare(name string) (*Instance, error) {
	cg, err := e.cg.create(name)
	if err != nil {
		return nil, err
	}
	i := &Instance{e: e, id: name, cg: cg, nsFD: -1, done: make(chan struct{})}
	p, err := newPipes()
	if err != nil {
		_ = cg.remove()
		return nil, err
	}
	flags := uintptr(unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWNET)
	ids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: e.cfg.UIDBase, Size: idRange}}
	cmd := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{"aloft-sandbox-init", initArg},
		Env:        []string{"GOMAXPROCS=1"}, // fewer threads: cheaper setresuid and exec
		Stdout:     p.outW,
		Stderr:     p.errW,
		ExtraFiles: []*os.File{p.specR, p.statusW},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:  flags,
			UidMappings: ids,
			GidMappings: ids,
			// The parent is root, so setgroups may stay allowed: Go then
			// clears the host's supplementary groups in the child.
			GidMappingsEnableSetgroups: true,
			Credential:                 &syscall.Credential{Uid: 0, Gid: 0},
			Pdeathsig:                  syscall.SIGKILL,
		},
	}
	tasks, err := cg.openTasks()
	if err != nil {
		p.closeAll()
		_ = cg.remove()
		return nil, err
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, tasks...)
	var cgfd *os.File
	if e.cg.v2 {
		if cgfd, err = os.Open(cg.dirs[""]); err != nil {
			p.closeAll()
			closeFiles(tasks...)
			_ = cg.remove()
			return nil, fmt.Errorf("open cgroup: %w", err)
		}
		defer cgfd.Close()
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(cgfd.Fd())
	}
	i.specW, i.statusR, i.outR, i.errR = p.specW, p.statusR, p.outR, p.errR
	childEnds := append([]*os.File{p.specR, p.statusW, p.outW, p.errW}, tasks...)
	if err := e.launch(i, cmd, childEnds...); err != nil {
		_ = cg.remove()
		return nil, err
	}
	if err := i.setup(len(tasks)); err != nil {
		i.Kill()
		<-i.done
		return nil, err
	}
	return i, nil
}

// launch registers i, starts cmd from the spawner thread, closes the
// child's ends of the pipes and starts the reaper. On error everything of
// i but its cgroup is released.
func (e *Executor) launch(i *Instance, cmd *exec.Cmd, childEnds ...*os.File) error {
	i.cmd = cmd
	if err := e.register(i); err != nil {
		closeFiles(childEnds...)
		closeFiles(i.specW, i.statusR, i.outR, i.errR)
		return err
	}
	err := e.spawn(cmd)
	closeFiles(childEnds...)
	if err != nil {
		closeFiles(i.specW, i.statusR, i.outR, i.errR)
		e.forget(i)
		return fmt.Errorf("start sandbox process: %w", err)
	}
	i.mu.Lock()
	i.proc = cmd.Process
	killed := i.killed
	i.mu.Unlock()
	go i.reap()
	if killed {
		i.Kill()
	}
	return nil
}

// setup finishes a prepared sandbox: loopback and listener in its network
// namespace, and the layout for its init.
func (i *Instance) setup(tasksFDs int) error {
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", i.proc.Pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open instance netns: %w", err)
	}
	i.mu.Lock()
	i.nsFD = fd
	i.mu.Unlock()
	var ln net.Listener
	err = inNetns(fd, func() error {
		if err := loopbackUp(); err != nil {
			return err
		}
		var err error
		ln, err = net.Listen("tcp", listenAddr)
		return err
	})
	if err != nil {
		return err
	}
	i.mu.Lock()
	i.ln = ln
	i.mu.Unlock()
	lay := i.e.lay
	lay.TasksFDs = tasksFDs
	if err := json.NewEncoder(i.specW).Encode(lay); err != nil {
		return fmt.Errorf("send layout: %w", err)
	}
	return nil
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// pipes are an instance's four channels: three pipes, and for the spec a
// Unix socket, which also carries the mounts handed to the init.
type pipes struct {
	specR, specW, statusR, statusW, outR, outW, errR, errW *os.File
}

func newPipes() (*pipes, error) {
	var p pipes
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("create spec socket: %w", err)
	}
	p.specR, p.specW = os.NewFile(uintptr(fds[1]), "spec"), os.NewFile(uintptr(fds[0]), "spec")
	pairs := [][2]**os.File{{&p.statusR, &p.statusW}, {&p.outR, &p.outW}, {&p.errR, &p.errW}}
	for _, pr := range pairs {
		if *pr[0], *pr[1], err = os.Pipe(); err != nil {
			p.closeAll()
			return nil, fmt.Errorf("create pipe: %w", err)
		}
	}
	return &p, nil
}

func (p *pipes) closeAll() {
	closeFiles(p.specR, p.specW, p.statusR, p.statusW, p.outR, p.outW, p.errR, p.errW)
}

func closeFiles(fs ...*os.File) {
	for _, f := range fs {
		if f != nil {
			_ = f.Close()
		}
	}
}

package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupRoot is where cgroup file systems are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// v1Controllers are the v1 hierarchies an instance joins.
var v1Controllers = []string{"memory", "pids", "cpu"}

// cgroupLayout is the detected cgroup layout and the executor's parent
// cgroup(s) in it.
type cgroupLayout struct {
	v2 bool
	// parents: v1: controller name -> the executor's parent dir in that
	// hierarchy; v2: "" -> the executor's parent dir.
	parents map[string]string
	memsw   bool // v1: memory.memsw.* exists (swap accounting)
}

var executorSeq atomic.Uint64

// detectCgroups reads the layout without changing anything.
func detectCgroups() (v2 bool, mounts map[string]string, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(cgroupRoot, &st); err != nil {
		return false, nil, fmt.Errorf("statfs %s: %w", cgroupRoot, err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		b, err := os.ReadFile(filepath.Join(cgroupRoot, "cgroup.controllers"))
		if err != nil {
			return true, nil, fmt.Errorf("read cgroup controllers: %w", err)
		}
		have := strings.Fields(string(b))
		var missing []string
		for _, c := range v1Controllers {
			if !contains(have, c) {
				missing = append(missing, c)
			}
		}
		if len(missing) > 0 {
			return true, nil, fmt.Errorf("cgroup v2 controller(s) %s not available in %s", strings.Join(missing, ", "), cgroupRoot)
		}
		return true, map[string]string{"": cgroupRoot}, nil
	}
	mounts, err = v1Mounts()
	if err != nil {
		return false, nil, err
	}
	var missing []string
	for _, c := range v1Controllers {
		if mounts[c] == "" {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return false, nil, fmt.Errorf("cgroup v1 controller(s) %s not mounted", strings.Join(missing, ", "))
	}
	return false, mounts, nil
}

// v1Mounts maps each mounted v1 controller to its mount point.
func v1Mounts() (map[string]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts ... - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 || qf[0] != "cgroup" {
			continue
		}
		for _, o := range strings.Split(qf[2], ",") {
			if contains(v1Controllers, o) && out[o] == "" {
				out[o] = pf[4]
			}
		}
	}
	return out, sc.Err()
}

// ownCgroups maps each hierarchy ("" for v2, else controller name) to this
// process's cgroup path in it.
func ownCgroups() (map[string]string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("read own cgroup: %w", err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			out[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	return out, nil
}

// newCgroupLayout creates the executor's parent cgroup(s) below the cgroup(s)
// this process runs in, named aloft-<pid>-<n>, after removing empty ones
// left by dead processes.
func newCgroupLayout() (*cgroupLayout, error) {
	v2, mounts, err := detectCgroups()
	if err != nil {
		return nil, err
	}
	own, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("aloft-%d-%d", os.Getpid(), executorSeq.Add(1))
	l := &cgroupLayout{v2: v2, parents: map[string]string{}}
	for key, mnt := range mounts {
		base := filepath.Join(mnt, own[key])
		if v2 {
			if err := enableControllers(base, true); err != nil {
				return nil, err
			}
		}
		sweepStale(base)
		dir := filepath.Join(base, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			_ = l.remove()
			return nil, fmt.Errorf("create cgroup: %w", err)
		}
		l.parents[key] = dir
		if v2 {
			if err := enableControllers(dir, false); err != nil {
				_ = l.remove()
				return nil, err
			}
		}
	}
	if !v2 {
		_, err := os.Stat(filepath.Join(l.parents["memory"], "memory.memsw.limit_in_bytes"))
		l.memsw = err == nil
	}
	return l, nil
}

// enableControllers turns on memory, pids and cpu for the children of dir.
// cgroup v2 forbids that while dir itself holds processes, so when own is
// set and the write fails with EBUSY, this process moves into a leaf
// dir/aloft-supervisor first.
func enableControllers(dir string, own bool) error {
	ctl := filepath.Join(dir, "cgroup.subtree_control")
	err := os.WriteFile(ctl, []byte("+memory +pids +cpu"), 0)
	if err == nil || !own || !errors.Is(err, unix.EBUSY) {
		if err != nil {
			return fmt.Errorf("enable cgroup controllers in %s: %w", dir, err)
		}
		return nil
	}
	leaf := filepath.Join(dir, "aloft-supervisor")
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create supervisor cgroup: %w", err)
	}
	if err := os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
		return fmt.Errorf("move into supervisor cgroup: %w", err)
	}
	if err := os.WriteFile(ctl, []byte("+memory +pids +cpu"), 0); err != nil {
		return fmt.Errorf("enable cgroup controllers in %s (other processes share this cgroup; run aloft in a cgroup of its own): %w", dir, err)
	}
	return nil
}

// sweepStale removes empty aloft-<pid>-<n> cgroups whose process is gone.
func sweepStale(base string) {
	ents, _ := os.ReadDir(base)
	for _, e := range ents {
		var pid, n int
		if _, err := fmt.Sscanf(e.Name(), "aloft-%d-%d", &pid, &n); err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue
		}
		dir := filepath.Join(base, e.Name())
		subs, _ := os.ReadDir(dir)
		for _, s := range subs {
			if s.IsDir() {
				_ = unix.Rmdir(filepath.Join(dir, s.Name()))
			}
		}
		_ = unix.Rmdir(dir)
	}
}

func (l *cgroupLayout) remove() error {
	var errs []error
	for _, dir := range l.parents {
		if err := rmdirRetry(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cgroup is one instance's cgroup (one dir per v1 hierarchy, or one v2 dir).
type cgroup struct {
	l    *cgroupLayout
	dirs map[string]string // by controller; all with the cgroup's name

	set       limits // written so far
	swapOff   bool   // swap turned off (v2 memory.swap.max, v1 swappiness)
	periodSet bool   // v1 cpu.cfs_period_us written
}

func (l *cgroupLayout) create(name string) (*cgroup, error) {
	cg := &cgroup{l: l, dirs: map[string]string{}}
	for key, parent := range l.parents {
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			cg.remove()
			return nil, fmt.Errorf("create cgroup %s: %w", name, err)
		}
		cg.dirs[key] = dir
	}
	return cg, nil
}

func (cg *cgroup) file(ctl, name string) string {
	if cg.l.v2 {
		ctl = ""
	}
	return filepath.Join(cg.dirs[ctl], name)
}

func writeFile(p, v string) error {
	if err := os.WriteFile(p, []byte(v), 0); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// openTasks opens the v1 tasks files of the cgroup for writing (nil on v2,
// where the process is cloned straight into its cgroup). The init writes
// "0" to each to move the thread that will exec: migrating the current
// thread skips the global lock a write of another pid to cgroup.procs takes
// (an RCU grace period: 5-15 ms measured here, against 0.1-0.5 ms). The
// permission check uses the opener's (root's) credentials, so the
// unprivileged init needs no access of its own.
func (cg *cgroup) openTasks() ([]*os.File, error) {
	if cg.l.v2 {
		return nil, nil
	}
	var fs []*os.File
	for _, c := range v1Controllers {
		f, err := os.OpenFile(filepath.Join(cg.dirs[c], "tasks"), os.O_WRONLY, 0)
		if err != nil {
			closeFiles(fs...)
			return nil, fmt.Errorf("open cgroup tasks: %w", err)
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// limits are a cgroup's memory, pids and cpu limits; zero fields are no
// limit, as in a new cgroup.
type limits struct {
	memoryMB int
	pids     int
	cpus     float64
}

func limitsOf(s Spec) limits { return limits{memoryMB: s.MemoryMB, pids: s.PidsMax, cpus: s.CPUs} }

// cpuPeriod is the CFS period: short periods keep throttling pauses short.
const cpuPeriod = 20000 // µs

// setLimits writes the limits that differ from those already set. A
// prepared sandbox's cgroup is preset with the last instance's limits, so
// an instance like it starts without a single write.
func (cg *cgroup) setLimits(want limits) error {
	have := cg.set
	if want == have {
		return nil
	}
	var errs []error
	write := func(ctl, file, v string) {
		if err := writeFile(cg.file(ctl, file), v); err != nil {
			errs = append(errs, err)
		}
	}
	unlimited := "max"
	if !cg.l.v2 {
		unlimited = "-1"
	}
	mem := unlimited
	if want.memoryMB > 0 {
		mem = strconv.Itoa(want.memoryMB << 20)
	}
	pids := "max"
	if want.pids > 0 {
		pids = strconv.Itoa(want.pids)
	}
	quota := unlimited
	if want.cpus > 0 {
		quota = strconv.Itoa(int(want.cpus * cpuPeriod))
	}
	if cg.l.v2 {
		if want.memoryMB != have.memoryMB {
			write("", "memory.max", mem)
			if want.memoryMB > 0 && !cg.swapOff {
				if _, err := os.Stat(cg.file("", "memory.swap.max")); err == nil {
					write("", "memory.swap.max", "0")
				}
				cg.swapOff = true
			}
		}
		if want.pids != have.pids {
			write("", "pids.max", pids)
		}
		if want.cpus != have.cpus {
			write("", "cpu.max", quota+" "+strconv.Itoa(cpuPeriod))
		}
	} else {
		switch {
		case want.memoryMB == have.memoryMB:
		case cg.l.memsw:
			// memory.limit_in_bytes may never exceed memory.memsw.limit_in_bytes:
			// raise the latter first, lower the former first.
			files := []string{"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"}
			if want.memoryMB == 0 || have.memoryMB != 0 && want.memoryMB > have.memoryMB {
				files[0], files[1] = files[1], files[0]
			}
			write("memory", files[0], mem)
			write("memory", files[1], mem)
		default:
			write("memory", "memory.limit_in_bytes", mem)
			if !cg.swapOff {
				write("memory", "memory.swappiness", "0")
				cg.swapOff = true
			}
		}
		if want.pids != have.pids {
			write("pids", "pids.max", pids)
		}
		if want.cpus != have.cpus {
			if !cg.periodSet {
				write("cpu", "cpu.cfs_period_us", strconv.Itoa(cpuPeriod))
				cg.periodSet = true
			}
			write("cpu", "cpu.cfs_quota_us", quota)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("set cgroup limits: %w", err)
	}
	cg.set = want
	return nil
}

// oomKills is how many processes the OOM killer killed in this cgroup.
func (cg *cgroup) oomKills() int64 {
	name := "memory.oom_control"
	if cg.l.v2 {
		name = "memory.events"
	}
	b, err := os.ReadFile(cg.file("memory", name))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// peak is the highest memory use in bytes, 0 if unknown.
func (cg *cgroup) peak() int64 {
	name := "memory.max_usage_in_bytes"
	if cg.l.v2 {
		name = "memory.peak"
	}
	b, err := os.ReadFile(cg.file("memory", name))
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// kill kills every process in the cgroup (v2 only; v1 has no cgroup.kill).
func (cg *cgroup) kill() {
	if cg.l.v2 {
		_ = os.WriteFile(cg.file("", "cgroup.kill"), []byte("1"), 0)
	}
}

// rename renames the cgroup within its parent(s); a failure leaves the old
// name on the dirs not yet renamed.
func (cg *cgroup) rename(name string) error {
	for key, dir := range cg.dirs {
		to := filepath.Join(filepath.Dir(dir), name)
		if err := os.Rename(dir, to); err != nil {
			return fmt.Errorf("rename cgroup: %w", err)
		}
		cg.dirs[key] = to
	}
	return nil
}

// name is the cgroup's name (that of all its directories).
func (cg *cgroup) name() string {
	for _, dir := range cg.dirs {
		return filepath.Base(dir)
	}
	return ""
}

func (cg *cgroup) remove() error {
	var errs []error
	for _, dir := range cg.dirs {
		if err := rmdirRetry(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// rmdirRetry removes a cgroup dir, retrying while the kernel still reports
// it busy (it can, briefly, after the last task exited).
func rmdirRetry(dir string) error {
	delay := 100 * time.Microsecond
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(delay)
		delay = min(2*delay, 50*time.Millisecond)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

package sandbox

import (
	"fmt"
	"slices"
	"unsafe"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// deniedSyscalls fail with EPERM inside a sandbox. The filter is a deny-list
// (default allow): see the package's RATIONALE entry. Names missing from the
// architecture's table are skipped.
var deniedSyscalls = []string{
	// file systems and the root
	"mount", "umount2", "pivot_root", "chroot", "mount_setattr", "move_mount",
	"open_tree", "fsopen", "fsconfig", "fsmount", "fspick",
	"open_by_handle_at", "name_to_handle_at", "quotactl", "quotactl_fd",
	// other processes
	"ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
	// namespaces
	"unshare", "setns",
	// the kernel itself
	"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
	"bpf", "perf_event_open", "userfaultfd", "lookup_dcookie", "syslog",
	"io_uring_setup", "io_uring_enter", "io_uring_register",
	"keyctl", "add_key", "request_key",
	"swapon", "swapoff", "reboot", "acct", "vhangup", "uselib", "nfsservctl",
	"iopl", "ioperm", "create_module", "get_kernel_syms", "query_module",
	// the machine's identity and clocks
	"sethostname", "setdomainname", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
}

// cloneNamespaceFlags are the clone flags that create namespaces.
const cloneNamespaceFlags = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS |
	unix.CLONE_NEWIPC | unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWTIME

// startSyscalls are the denied syscalls the init itself makes at a start,
// after its prepared-time filter is loaded: a second, small filter denies
// them just before exec. Loading a filter costs in proportion to its size,
// so the start pays for three syscalls, not the whole list.
var startSyscalls = []string{"mount", "move_mount", "sethostname"}

// seccompPrograms assembles the sandbox's two filters for the running
// architecture: prepared, loaded while the sandbox is prepared, denies
// all of deniedSyscalls but startSyscalls; start denies those.
func seccompPrograms() (prepared, start []bpf.RawInstruction, err error) {
	info, err := arch.GetInfo("")
	if err != nil {
		return nil, nil, fmt.Errorf("seccomp arch: %w", err)
	}
	var early, late []string
	for _, n := range deniedSyscalls {
		switch _, ok := info.SyscallNames[n]; {
		case !ok:
		case slices.Contains(startSyscalls, n):
			late = append(late, n)
		default:
			early = append(early, n)
		}
	}
	if prepared, err = seccompProgram(info, early, true); err != nil {
		return nil, nil, err
	}
	if start, err = seccompProgram(info, late, false); err != nil {
		return nil, nil, err
	}
	return prepared, start, nil
}

// seccompProgram assembles a filter that kills syscalls of a foreign
// architecture and answers EPERM to names, and with clone also to clone
// with namespace flags and ENOSYS to clone3.
func seccompProgram(info *arch.Info, names []string, clone bool) ([]bpf.RawInstruction, error) {
	eperm := seccomp.ActionErrno | seccomp.Action(unix.EPERM)
	groups := []seccomp.SyscallGroup{{Action: eperm, Names: names}}
	if clone {
		groups = append(groups, seccomp.SyscallGroup{Action: eperm, NamesWithCondtions: []seccomp.NameWithConditions{{
			Name:       "clone",
			Conditions: seccomp.ArgumentConditions{{Argument: 0, Operation: seccomp.BitsSet, Value: cloneNamespaceFlags}},
		}}})
	}
	if _, ok := info.SyscallNames["clone3"]; ok && clone {
		// clone3 passes its flags in memory a filter cannot read: make it
		// look absent so libc and runtimes fall back to clone.
		groups = append(groups, seccomp.SyscallGroup{
			Action: seccomp.ActionErrno | seccomp.Action(unix.ENOSYS), Names: []string{"clone3"},
		})
	}
	policy := seccomp.Policy{DefaultAction: seccomp.ActionAllow, Syscalls: groups}
	insts, err := policy.Assemble()
	if err != nil {
		return nil, fmt.Errorf("assemble seccomp policy: %w", err)
	}
	// The library lets foreign-architecture syscalls (e.g. int 0x80 on
	// x86_64) through to the default action; with a deny-list that would be
	// a bypass, so kill them first.
	prog := append([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 4, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(info.ID), SkipTrue: 1},
		bpf.RetConstant{Val: uint32(seccomp.ActionKillProcess)},
	}, insts...)
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("assemble seccomp filter: %w", err)
	}
	return raw, nil
}

// loadSeccomp sets no_new_privs and adds raw to every thread's filters.
func loadSeccomp(raw []bpf.RawInstruction) error {
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog)))
	if errno != 0 {
		return fmt.Errorf("load seccomp filter: %w", errno)
	}
	return nil
}

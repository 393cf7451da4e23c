// Package sandbox is Aloft's native executor: it starts and stops one
// sandboxed function instance.
//
// Each instance gets new user, pid, mount, ipc, uts and network namespaces
// (the network one holds only its own loopback, plus with Spec.Network an
// egress link routed and masqueraded by the host), a
// read-only root built from the host's system directories plus a minimal /etc,
// its code read-only at /var/task, a fresh /proc, a size-capped tmpfs at /tmp,
// memory/pids/cpu limits through cgroups (v1 or v2), a seccomp deny-list, no
// capabilities and an unprivileged uid (1000 inside, Config.UIDBase+1000 on
// the host).
//
// The in-namespace setup is done by a small init: the executor re-executes
// its own binary (/proc/self/exe) with a hidden argument. Every program that
// starts instances — the aloft binary and every TestMain of a package whose
// tests start instances — must therefore call MaybeRunInit first thing:
//
//	func main() {
//		if code, ok := sandbox.MaybeRunInit(); ok {
//			os.Exit(code)
//		}
//		...
//	}
//
// In the parent MaybeRunInit returns at once (ok == false). In the init it
// returns if the setup failed (the error has been reported to the
// executor), or once the function has ended: the init starts the function
// as its child and stays as the instance's process 1, reaping every
// process the function leaves behind, and reports how the function ended.
//
// Files handed to an instance (Spec.CodeDir, Spec.Mounts sources, and
// Config.StateDir with every parent directory) must be reachable by the
// unprivileged host uid: directories searchable by others (o+x), files
// readable by others (o+r). Start and New check the directories and say which
// one is not.
//
// With Config.Insecure the executor runs functions as plain host processes
// (os/exec, own process group) with the same environment scrubbing; it exists
// for development machines that cannot sandbox.
package sandbox

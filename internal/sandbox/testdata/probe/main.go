// Command probe is run inside sandboxes by the sandbox package's tests; its
// first argument selects what it checks and prints.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: probe command [args]")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "echo":
		fmt.Println(strings.Join(rest, " "))
		fmt.Fprintln(os.Stderr, "to stderr")
	case "exit":
		n, _ := strconv.Atoi(rest[0])
		os.Exit(n)
	case "cat":
		b, err := os.ReadFile(rest[0])
		if err != nil {
			return err
		}
		os.Stdout.Write(b)
	case "ls":
		ents, err := os.ReadDir(rest[0])
		if err != nil {
			return err
		}
		for _, e := range ents {
			fmt.Println(e.Name())
		}
	case "write":
		return os.WriteFile(rest[0], []byte("x"), 0o644)
	case "fill":
		return fill(rest[0])
	case "connect":
		c, err := net.DialTimeout("tcp", rest[0], 5*time.Second)
		if err != nil {
			return err
		}
		c.Close()
		fmt.Println("connected")
	case "alloc":
		mb, _ := strconv.Atoi(rest[0])
		var keep [][]byte
		for i := 0; i < mb; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = byte(j)
			}
			keep = append(keep, b)
		}
		fmt.Println("allocated", len(keep))
	case "spawn":
		return spawn()
	case "tree":
		return tree()
	case "orphans":
		return orphans()
	case "sleep":
		time.Sleep(time.Hour)
	case "detached":
		// a grandchild of tree: outlives its parent
		time.Sleep(time.Hour)
	case "runtimeapi":
		return runtimeAPI()
	case "serve":
		return serve()
	case "self":
		return self()
	case "env":
		env := os.Environ()
		sort.Strings(env)
		fmt.Println(strings.Join(env, "\n"))
	case "syscalls":
		return syscalls()
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
	return nil
}

// fill writes to path until the file system is full and prints the MiB written.
func fill(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	n := 0
	for {
		if _, err := f.Write(buf); err != nil {
			fmt.Println("wrote", n, "MiB:", err)
			return nil
		}
		n++
		if n > 4096 {
			return fmt.Errorf("no cap after %d MiB", n)
		}
	}
}

// spawn starts sleeping children until it cannot and prints how many.
func spawn() error {
	n := 0
	for ; n < 1000; n++ {
		c := exec.Command("/proc/self/exe", "sleep")
		if err := c.Start(); err != nil {
			fmt.Println("spawned", n, "then:", err)
			return nil
		}
	}
	return fmt.Errorf("spawned %d without hitting a limit", n)
}

// tree starts a child that starts a detached grandchild and exits, then
// sleeps.
func tree() error {
	if len(os.Args) > 2 && os.Args[2] == "child" {
		c := exec.Command("/proc/self/exe", "detached")
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		return c.Start()
	}
	c := exec.Command("/proc/self/exe", "tree", "child")
	if err := c.Run(); err != nil {
		return err
	}
	fmt.Println("tree ready")
	time.Sleep(time.Hour)
	return nil
}

// orphans leaves 20 processes that exit at once to process 1, as a shell
// running "cmd &" does, then counts the zombies in its namespace.
func orphans() error {
	if len(os.Args) > 2 && os.Args[2] == "child" {
		return exec.Command("/proc/self/exe", "exit", "0").Start() // and leave it
	}
	for range 20 {
		if err := exec.Command("/proc/self/exe", "orphans", "child").Run(); err != nil {
			return err
		}
	}
	// A process is a zombie from its exit until it is reaped: look a few
	// times, so one caught in between does not count.
	zombies := 0
	for try := 0; try < 40; try++ {
		time.Sleep(50 * time.Millisecond)
		zombies = 0
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
			if err == nil && strings.Contains(string(b), ") Z ") {
				zombies++
			}
		}
		if zombies == 0 {
			break
		}
	}
	fmt.Println("zombies", zombies)
	return nil
}

func runtimeAPI() error {
	api := os.Getenv("AWS_LAMBDA_RUNTIME_API")
	resp, err := http.Get("http://" + api + "/2018-06-01/runtime/invocation/next")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	fmt.Printf("event: %s\n", b)
	return nil
}

func serve() error {
	ln, err := net.Listen("tcp", ":"+os.Getenv("PORT"))
	if err != nil {
		return err
	}
	return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, _ := os.Hostname()
		fmt.Fprintf(w, "hello from %s", h)
	}))
}

// self prints identity facts: uid, gid, groups, capabilities, hostname,
// no_new_privs, seccomp mode, pids visible in /proc.
func self() error {
	h, _ := os.Hostname()
	groups, _ := os.Getgroups()
	fmt.Printf("uid=%d gid=%d groups=%v hostname=%s pid=%d\n", os.Getuid(), os.Getgid(), groups, h, os.Getpid())
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters"} {
			if strings.HasPrefix(sc.Text(), k+":") {
				fmt.Println(strings.Join(strings.Fields(sc.Text()), " "))
			}
		}
	}
	ents, _ := os.ReadDir("/proc")
	var pids []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, e.Name())
		}
	}
	fmt.Println("pids", strings.Join(pids, ","))
	return nil
}

// syscalls tries operations the seccomp filter or the lack of privilege
// must refuse and prints one line per result.
func syscalls() error {
	try := func(name string, err error) { fmt.Printf("%s: %v\n", name, err) }
	try("unshare-user", syscall.Unshare(syscall.CLONE_NEWUSER))
	try("mount", syscall.Mount("tmpfs", "/tmp", "tmpfs", 0, ""))
	_, _, e := syscall.RawSyscall(syscall.SYS_PTRACE, 0x4206 /* PTRACE_SEIZE */, 1, 0)
	try("ptrace", errnoErr(e))
	_, _, e = syscall.RawSyscall(syscall.SYS_CLONE, syscall.CLONE_NEWUSER|uintptr(syscall.SIGCHLD), 0, 0)
	try("clone-newuser", errnoErr(e))
	_, _, e = syscall.RawSyscall(435 /* clone3 */, 0, 0, 0)
	try("clone3", errnoErr(e))
	try("sethostname", syscall.Sethostname([]byte("x")))
	try("setuid0", syscall.Setuid(0))
	return nil
}

func errnoErr(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

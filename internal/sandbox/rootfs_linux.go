package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// hostSystemDirs are the host directories the sandbox root is built from,
// bind-mounted read-only, or re-created as the same symlink (Debian's merged
// /usr makes /bin, /lib... symlinks into /usr).
var hostSystemDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}

// etcBinds are host directories bind-mounted read-only into the minimal
// /etc: the CA certificates egress needs.
var etcBinds = []string{"/etc/ssl/certs", "/etc/ca-certificates"}

// etcCopies are host files copied into the minimal /etc (symlinks are
// re-created): nothing secret, all needed by common runtimes.
var etcCopies = []string{"/etc/localtime", "/etc/ld.so.cache", "/etc/ssl/openssl.cnf"}

// rootEntry is one top-level entry of the sandbox root.
type rootEntry struct {
	Path string // absolute, e.g. /usr
	Link string // symlink target, or "" for a bind-mounted directory
}

// layout is the part of the init's instructions fixed for the executor's
// lifetime (the first message on the spec pipe).
type layout struct {
	Root    string      // empty mount point under StateDir for the new root
	Etc     string      // the minimal /etc under StateDir
	System  []rootEntry // host system dirs
	EtcBind []string    // host dirs bound below /etc
	// TasksFDs is how many cgroup tasks files follow statusFD (v1); the
	// init writes "0" to each to join its cgroup.
	TasksFDs int
}

// prepareState creates StateDir/root and StateDir/etc and returns the layout.
func prepareState(stateDir string) (layout, error) {
	dir, err := filepath.Abs(stateDir)
	if err != nil {
		return layout{}, fmt.Errorf("state dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return layout{}, fmt.Errorf("state dir: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return layout{}, fmt.Errorf("state dir: %w", err)
	}
	if err := checkReachable(dir); err != nil {
		return layout{}, fmt.Errorf("state dir: %w", err)
	}
	l := layout{Root: filepath.Join(dir, "root"), Etc: filepath.Join(dir, "etc")}
	if err := os.MkdirAll(l.Root, 0o755); err != nil {
		return layout{}, fmt.Errorf("state dir: %w", err)
	}
	if err := writeEtc(l.Etc); err != nil {
		return layout{}, fmt.Errorf("state dir: %w", err)
	}
	for _, p := range hostSystemDirs {
		fi, err := os.Lstat(p)
		switch {
		case err != nil:
			continue
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return layout{}, fmt.Errorf("read host %s: %w", p, err)
			}
			l.System = append(l.System, rootEntry{Path: p, Link: target})
		case fi.IsDir():
			l.System = append(l.System, rootEntry{Path: p})
		}
	}
	for _, p := range etcBinds {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			if err := os.MkdirAll(filepath.Join(l.Etc, strings.TrimPrefix(p, "/etc/")), 0o755); err != nil {
				return layout{}, fmt.Errorf("state dir: %w", err)
			}
			l.EtcBind = append(l.EtcBind, p)
		}
	}
	return l, nil
}

// writeEtc (re)creates the sandbox's minimal /etc in dir.
func writeEtc(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "ssl"), 0o755); err != nil {
		return err
	}
	files := map[string]string{
		"passwd": "root:x:0:0:root:/root:/usr/sbin/nologin\n" +
			fmt.Sprintf("sbx_user:x:%d:%d:function:/tmp:/usr/sbin/nologin\n", sandboxUID, sandboxUID) +
			"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
		"group":         fmt.Sprintf("root:x:0:\nsbx_user:x:%d:\nnogroup:x:65534:\n", sandboxUID),
		"hosts":         "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
		"nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n",
		"resolv.conf":   string(resolvConf("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf")),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	for _, src := range etcCopies {
		dst := filepath.Join(dir, strings.TrimPrefix(src, "/etc/"))
		fi, err := os.Lstat(src)
		if err != nil {
			continue
		}
		_ = os.Remove(dst)
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(src)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, dst); err != nil {
				return err
			}
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// resolvConf returns the resolver configuration instances get: the host's
// (read through a symlink: its target is often under /run, which instances
// do not see). A resolver on the host's loopback, such as
// systemd-resolved's stub, is unreachable from an instance's network
// namespace; then the upstream servers in fallback are used when that
// file lists some.
func resolvConf(path, fallback string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	if onlyLoopbackResolvers(b) {
		if u, err := os.ReadFile(fallback); err == nil && !onlyLoopbackResolvers(u) {
			return u
		}
	}
	return b
}

// onlyLoopbackResolvers reports whether conf names nameservers and all of
// them are loopback addresses.
func onlyLoopbackResolvers(conf []byte) bool {
	n := 0
	for line := range strings.Lines(string(conf)) {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil || !a.IsLoopback() {
			return false
		}
		n++
	}
	return n > 0
}

// checkReachable reports an error unless every directory from / down to dir
// can be searched by an unprivileged uid (the sandbox's host uid).
func checkReachable(dir string) error {
	var errs []error
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if fi.IsDir() && fi.Mode().Perm()&0o001 == 0 {
			errs = append(errs, fmt.Errorf("%s (mode %v) is not searchable by others; the sandbox uid cannot reach %s", p, fi.Mode().Perm(), dir))
		}
		if p == "/" {
			break
		}
	}
	if len(errs) > 0 {
		return errs[len(errs)-1]
	}
	return nil
}

var errNotDir = errors.New("not a directory")

func checkDir(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: %w", p, errNotDir)
	}
	return checkReachable(p)
}

// Package runtimes holds the bootstraps Aloft ships so that unmodified
// AWS Lambda handlers run: node/bootstrap.js for Node.js 20 and
// python/bootstrap.py (with the module it runs, python/_aloft_bootstrap.py)
// for Python 3.11. They speak the Lambda Runtime API
// (served by internal/runtime/lambda) and need nothing but the
// interpreter's standard library. WriteTo puts them in a directory that the
// sandbox bind-mounts read-only at /var/runtime.
package runtimes

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
)

//go:embed node python/bootstrap.py python/_aloft_bootstrap.py
var files embed.FS

// Paths of the bootstraps relative to the directory WriteTo fills, which is
// mounted at /var/runtime inside a sandbox.
const (
	NodeBootstrap   = "node/bootstrap.js"
	PythonBootstrap = "python/bootstrap.py"
)

// Python is the interpreter the Python runtime runs: Debian's, by absolute
// path (a python3 found first on PATH may be a slow shim).
const Python = "/usr/bin/python3"

// PythonFlags are the interpreter flags the Python bootstrap runs with:
// unbuffered output, so a function's prints reach its log at once.
var PythonFlags = []string{"-u"}

// FS returns the embedded runtime files.
func FS() fs.FS { return files }

// WriteTo writes the runtime files under dir (created if missing), leaving
// files that already hold the right content untouched and replacing others
// atomically, so it is safe to call at every start and while sandboxes
// have the directory mounted. Directories get mode 0755, files 0644.
func WriteTo(dir string) error {
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if d.IsDir() {
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
			return os.Chmod(dst, 0o755)
		}
		data, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		return writeFile(dst, data)
	})
	if err != nil {
		return fmt.Errorf("write runtimes to %s: %w", dir, err)
	}
	return nil
}

// CompilePython precompiles the Python bootstrap's module under dir (as
// written by WriteTo) with python, into a checked-hash .pyc: Python checks
// it against the source's hash rather than its modification time, so it
// stays valid while WriteTo leaves the source alone and is ignored, not
// trusted, once the source changes. Sandboxes cannot write bytecode, and
// without it every cold start compiles the bootstrap again (milliseconds).
func CompilePython(ctx context.Context, python, dir string) error {
	src := filepath.Join(dir, "python", "_aloft_bootstrap.py")
	cmd := exec.CommandContext(ctx, python, "-S", "-c",
		"import py_compile, sys; py_compile.compile(sys.argv[1], doraise=True, "+
			"invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)", src)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("compile %s: %w: %s", src, err, bytes.TrimSpace(out))
	}
	return nil
}

func writeFile(dst string, data []byte) error {
	if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, data) {
		if fi, err := os.Stat(dst); err == nil && fi.Mode().Perm() == 0o644 {
			return nil
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename this fails harmlessly
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

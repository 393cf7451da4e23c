// Package runtimes holds the bootstraps Aloft ships so that unmodified
// AWS Lambda handlers run: node/bootstrap.js for Node.js 20 and
// python/bootstrap.py for Python 3.11. They speak the Lambda Runtime API
// (served by internal/runtime/lambda) and need nothing but the
// interpreter's standard library. WriteTo puts them in a directory that the
// sandbox bind-mounts read-only at /var/runtime.
package runtimes

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

//go:embed node python
var files embed.FS

// Paths of the bootstraps relative to the directory WriteTo fills, which is
// mounted at /var/runtime inside a sandbox.
const (
	NodeBootstrap   = "node/bootstrap.js"
	PythonBootstrap = "python/bootstrap.py"
)

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

// Package build turns a function's Go source tree into the static Linux
// executable the sandbox runs, so users can deploy source instead of
// binaries. It shells out to the Go toolchain found on the server.
package build

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"aloft/internal/fn"
)

// Config says how to build.
type Config struct {
	// Go is the go command; default: "go" on PATH, else /usr/local/go/bin/go.
	Go string
	// Timeout bounds one build (default 5 minutes).
	Timeout time.Duration
	// Env is added to the build's environment (e.g. GOMODCACHE, GOCACHE).
	Env []string
}

// IsGoSource reports whether dir holds a Go module to build: a go.mod at
// its root.
func IsGoSource(dir string) bool {
	st, err := os.Stat(filepath.Join(dir, "go.mod"))
	return err == nil && st.Mode().IsRegular()
}

// maxBuildOutput bounds the compiler output quoted back to the user.
const maxBuildOutput = 4096

// Target says what to build for. The zero value is a static Linux
// executable for this machine's architecture.
type Target struct {
	// Wasm builds a WebAssembly module (GOOS=wasip1 GOARCH=wasm).
	Wasm bool
	// Reactor builds a WebAssembly reactor (-buildmode=c-shared): a module
	// that exports functions instead of running _start.
	Reactor bool
	// Tags are passed to -tags.
	Tags []string
}

// Go builds the main package at the root of src into out/name for the
// target. A compile error is returned as a client-facing fn.Error quoting
// the compiler's output; a missing toolchain or timeout as an internal
// error.
func Go(ctx context.Context, cfg Config, src, out, name string, target Target) error {
	gobin, err := goCommand(cfg.Go)
	if err != nil {
		return err
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", filepath.Join(out, name)}
	if len(target.Tags) > 0 {
		args = append(args, "-tags", strings.Join(target.Tags, ","))
	}
	goos, goarch := "linux", runtime.GOARCH
	if target.Wasm {
		goos, goarch = "wasip1", "wasm"
		if target.Reactor {
			args = append(args, "-buildmode=c-shared")
		}
	}
	args = append(args, ".")
	cmd := exec.CommandContext(ctx, gobin, args...)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch, "GOFLAGS=-mod=mod", "GOWORK=off")
	cmd.Env = append(cmd.Env, cfg.Env...)
	var output bytes.Buffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	err = cmd.Run()
	if ctx.Err() != nil {
		return fmt.Errorf("go build: %w", ctx.Err())
	}
	if err != nil {
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			return fmt.Errorf("go build: %w", err)
		}
		msg := strings.TrimSpace(output.String())
		if len(msg) > maxBuildOutput {
			msg = "..." + msg[len(msg)-maxBuildOutput:]
		}
		return fn.Invalid("building the Go source failed; fix the code and deploy again:\n%s", msg)
	}
	return nil
}

// HasWasmExports reports whether any Go file at the root of src declares a
// //go:wasmexport function: such a module is built as a reactor.
func HasWasmExports(src string) bool {
	files, _ := filepath.Glob(filepath.Join(src, "*.go"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.Contains(string(b), "//go:wasmexport ") {
			return true
		}
	}
	return false
}

func goCommand(configured string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	const fallback = "/usr/local/go/bin/go"
	if _, err := os.Stat(fallback); err == nil {
		return fallback, nil
	}
	return "", errors.New("go build: no Go toolchain found on PATH or at /usr/local/go/bin/go; install Go on the server to deploy Go source")
}

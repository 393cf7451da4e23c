package build

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"aloft/internal/fn"
)

func writeModule(t *testing.T, mainSrc string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/f\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(mainSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestGoBuildsStaticBinary(t *testing.T) {
	src := writeModule(t, "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Print(\"built\") }\n")
	if !IsGoSource(src) {
		t.Fatal("IsGoSource = false for a dir with go.mod")
	}
	out := t.TempDir()
	if err := Go(context.Background(), Config{}, src, out, "bootstrap", Target{}); err != nil {
		t.Fatal(err)
	}
	got, err := exec.Command(filepath.Join(out, "bootstrap")).Output()
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "built" {
		t.Fatalf("binary printed %q, want %q", got, "built")
	}
	file, err := exec.Command("file", filepath.Join(out, "bootstrap")).Output()
	if err == nil && !strings.Contains(string(file), "statically linked") {
		t.Fatalf("binary is not static: %s", file)
	}
}

func TestGoCompileErrorIsClientError(t *testing.T) {
	src := writeModule(t, "package main\n\nfunc main() { undefinedThing() }\n")
	err := Go(context.Background(), Config{}, src, t.TempDir(), "bootstrap", Target{})
	var fe *fn.Error
	if !errors.As(err, &fe) || fe.Status != http.StatusBadRequest {
		t.Fatalf("err = %v, want a 400 fn.Error", err)
	}
	if !strings.Contains(fe.Message, "undefinedThing") {
		t.Fatalf("message does not quote the compiler: %q", fe.Message)
	}
}

func TestIsGoSourceWithoutGoMod(t *testing.T) {
	if IsGoSource(t.TempDir()) {
		t.Fatal("IsGoSource = true for an empty dir")
	}
}

func TestGoBuildsWasmReactor(t *testing.T) {
	src := writeModule(t, "package main\n\n//go:wasmexport answer\nfunc answer() int32 { return 42 }\n\nfunc main() {}\n")
	if !HasWasmExports(src) {
		t.Fatal("HasWasmExports = false for a file with //go:wasmexport")
	}
	out := t.TempDir()
	if err := Go(context.Background(), Config{}, src, out, "main.wasm", Target{Wasm: true, Reactor: true}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "main.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 8 || string(b[:4]) != "\x00asm" {
		t.Fatalf("output is not a wasm module: % x", b[:min(8, len(b))])
	}
}

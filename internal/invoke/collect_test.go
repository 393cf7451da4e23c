package invoke

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"aloft/internal/sandbox"
	"aloft/internal/store"
)

// TestCollectCode: extracted copies go when no one names them and they are
// older than the grace; copies in use, recent ones and those being
// extracted stay; leftovers of stopped extractions go.
func TestCollectCode(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the executor runs on Linux only")
	}
	dir := t.TempDir()
	st, err := store.Open(t.Context(), store.Config{DataDir: filepath.Join(dir, "store"), NodeID: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ex, err := sandbox.New(sandbox.Config{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	iv, err := New(Config{Store: st, Executor: ex, DataDir: filepath.Join(dir, "data")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = iv.wasm.Close(t.Context()) })
	sha := func(c string) string { return strings.Repeat(c, 64) }
	old := time.Now().Add(-2 * time.Hour)
	mk := func(name string, mtime time.Time) {
		t.Helper()
		p := filepath.Join(iv.codeRoot, name)
		if err := os.MkdirAll(filepath.Join(p, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	mk(sha("a"), old)        // unused, old: goes
	mk(sha("b"), old)        // named by a function or version: stays
	mk(sha("c"), time.Now()) // unused but recent: stays
	mk(sha("d"), old)        // being extracted: stays
	mk(".tmp-123", old)      // a stopped extraction: goes
	iv.codeWait[sha("d")] = make(chan struct{})

	if n := iv.CollectCode(map[string]bool{sha("b"): true}, time.Hour); n != 1 {
		t.Errorf("deleted %d copies, want 1", n)
	}
	for name, want := range map[string]bool{sha("a"): false, sha("b"): true, sha("c"): true, sha("d"): true, ".tmp-123": false} {
		_, err := os.Stat(filepath.Join(iv.codeRoot, name))
		if got := err == nil; got != want {
			t.Errorf("%s exists %v, want %v", name[:8], got, want)
		}
	}

	// Compiled WebAssembly modules go with their packages: here an empty
	// command module, deployed in package b and in package e.
	module := []byte("\x00asm\x01\x00\x00\x00" +
		"\x01\x04\x01\x60\x00\x00" + // type: () -> ()
		"\x03\x02\x01\x00" + // one function of that type
		"\x07\x0a\x01\x06_start\x00\x00" + // exported as _start
		"\x0a\x04\x01\x02\x00\x0b") // its body: end
	for _, p := range []string{sha("b"), sha("e")} {
		if err := iv.CompileWasm(t.Context(), "f", p, "main.wasm", module); err != nil {
			t.Fatal(err)
		}
	}
	iv.CollectCode(map[string]bool{sha("b"): true}, time.Hour)
	if iv.wasm.Module(sha("e")+"/main.wasm") == nil {
		t.Error("a module compiled within the grace was dropped")
	}
	iv.CollectCode(map[string]bool{sha("b"): true}, 0)
	if iv.wasm.Module(sha("e")+"/main.wasm") != nil {
		t.Error("the module of an unused package is still compiled")
	}
	if iv.wasm.Module(sha("b")+"/main.wasm") == nil {
		t.Error("the module of a package in use was dropped")
	}
}

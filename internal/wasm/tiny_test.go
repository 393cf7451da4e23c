package wasm

import (
	"context"
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"aloft/internal/fn"
)

// A hand-assembled module, so that the non-Go path needs no toolchain.

func uleb(v uint32) []byte { return binary.AppendUvarint(nil, uint64(v)) }

func vec(items ...[]byte) []byte {
	out := uleb(uint32(len(items)))
	for _, it := range items {
		out = append(out, it...)
	}
	return out
}

func name(s string) []byte { return append(uleb(uint32(len(s))), s...) }

func section(id byte, body []byte) []byte {
	return append(append([]byte{id}, uleb(uint32(len(body)))...), body...)
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

const (
	i32 = 0x7f
	i64 = 0x7e
)

func funcType(params, results []byte) []byte {
	return cat([]byte{0x60}, vec(bytesOf(params)...), vec(bytesOf(results)...))
}

func bytesOf(b []byte) [][]byte {
	out := make([][]byte, len(b))
	for i := range b {
		out[i] = b[i : i+1]
	}
	return out
}

// i32const encodes a small non-negative constant (signed LEB128).
func i32const(v uint32) []byte {
	out := []byte{0x41}
	for {
		b := byte(v & 0x7f)
		v >>= 7
		if v == 0 && b&0x40 == 0 {
			return append(out, b)
		}
		out = append(out, b|0x80)
	}
}

// tinyCommand is a WASI command whose _start writes response to stdout
// with one fd_write: the smallest WAGI handler.
func tinyCommand(response string) []byte {
	types := section(1, vec(
		funcType([]byte{i32, i32, i32, i32}, []byte{i32}), // fd_write
		funcType(nil, nil), // _start
	))
	imports := section(2, vec(cat(name("wasi_snapshot_preview1"), name("fd_write"), []byte{0x00}, uleb(0))))
	funcs := section(3, vec(uleb(1)))
	memory := section(5, vec([]byte{0x00, 0x01})) // min 1 page
	exports := section(7, vec(
		cat(name("memory"), []byte{0x02}, uleb(0)),
		cat(name("_start"), []byte{0x00}, uleb(1)),
	))
	body := cat([]byte{0x00}, // no locals
		i32const(1), i32const(0), i32const(1), i32const(8),
		[]byte{0x10, 0x00}, // call fd_write
		[]byte{0x1a},       // drop
		[]byte{0x0b})       // end
	code := section(10, vec(cat(uleb(uint32(len(body))), body)))
	// Memory: iovec {16, len} at 0, nwritten at 8, the response at 16.
	data := binary.LittleEndian.AppendUint32(nil, 16)
	data = binary.LittleEndian.AppendUint32(data, uint32(len(response)))
	data = append(data, make([]byte, 8)...)
	data = append(data, response...)
	datas := section(11, vec(cat([]byte{0x00}, i32const(0), []byte{0x0b}, uleb(uint32(len(data))), data)))
	return cat([]byte("\x00asm\x01\x00\x00\x00"), types, imports, funcs, memory, exports, code, datas)
}

// tinyModule is a module with the given imports (module.name, all of type
// () -> ()) and no exports but its memory.
func tinyModule(imports ...[2]string) []byte {
	var imps [][]byte
	for _, im := range imports {
		imps = append(imps, cat(name(im[0]), name(im[1]), []byte{0x00}, uleb(0)))
	}
	return cat([]byte("\x00asm\x01\x00\x00\x00"),
		section(1, vec(funcType(nil, nil))),
		section(2, vec(imps...)),
		section(5, vec([]byte{0x00, 0x01})),
		section(7, vec(cat(name("memory"), []byte{0x02}, uleb(0)))))
}

const tinyResponse = "Content-Type: text/plain\nX-Tiny: 1\n\nhello from 200 bytes"

func TestTinyCommand(t *testing.T) {
	e := newEngine(t, "")
	m := compile(t, e, tinyCommand(tinyResponse))
	if m.Kind() != KindCommand {
		t.Fatalf("kind %v", m.Kind())
	}
	w := httptest.NewRecorder()
	if err := m.ServeCGI(context.Background(), w, httptest.NewRequest("GET", "/t", nil), "/t", Limits{}); err != nil {
		t.Fatal(err)
	}
	if w.Code != 200 || w.Header().Get("X-Tiny") != "1" || w.Body.String() != "hello from 200 bytes" {
		t.Errorf("got %d %v %q", w.Code, w.Header(), w.Body)
	}
}

func TestCompileRejects(t *testing.T) {
	e := newEngine(t, "")
	for _, tc := range []struct {
		name string
		wasm []byte
	}{
		{"not wasm", []byte("#!/bin/sh\necho hi\n")},
		{"neither command nor reactor", tinyModule()},
		{"foreign import", tinyModule([2]string{"env", "open_socket"})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.Compile(context.Background(), keyOf(tc.wasm), tc.wasm)
			var fe *fn.Error
			if !errors.As(err, &fe) || fe.Status != http.StatusBadRequest {
				t.Fatalf("error = %v, want a client-facing fn.Invalid", err)
			}
			t.Log(fe.Message)
			if e.Module(keyOf(tc.wasm)) != nil {
				t.Error("a rejected module is kept")
			}
		})
	}
}

func TestCompileOnceForgetAndModule(t *testing.T) {
	e := newEngine(t, "")
	wasm := tinyCommand(tinyResponse)
	key := keyOf(wasm)
	if e.Module(key) != nil {
		t.Fatal("Module before Compile")
	}
	const n = 16
	mods := make([]*Module, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			m, err := e.Compile(context.Background(), key, wasm)
			if err != nil {
				t.Error(err)
			}
			mods[i] = m
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if mods[i] != mods[0] || mods[i] == nil {
			t.Fatal("concurrent Compiles returned different modules")
		}
	}
	if st := e.CacheStats(); st.Compiled != 1 || st.FromCache != 0 {
		t.Errorf("stats %+v, want one compile", st)
	}
	if e.Module(key) != mods[0] {
		t.Error("Module does not return the compiled module")
	}
	e.Forget(key)
	if e.Module(key) != nil {
		t.Error("Module after Forget")
	}
	compile(t, e, wasm)
	if st := e.CacheStats(); st.Compiled != 2 {
		t.Errorf("stats %+v after Forget and Compile, want 2 compiles", st)
	}
}

func TestRestartUsesDiskCache(t *testing.T) {
	dir := t.TempDir()
	wasm := tinyCommand(tinyResponse)
	first, err := New(context.Background(), Config{CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	compile(t, first, wasm)
	if st := first.CacheStats(); st != (CacheStats{Compiled: 1}) {
		t.Errorf("first engine: %+v", st)
	}
	if err := first.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	second := newEngine(t, dir)
	m := compile(t, second, wasm)
	if st := second.CacheStats(); st != (CacheStats{FromCache: 1}) {
		t.Errorf("second engine: %+v, want one load from the disk cache", st)
	}
	w := httptest.NewRecorder()
	if err := m.ServeCGI(context.Background(), w, httptest.NewRequest("GET", "/t", nil), "/t", Limits{}); err != nil || w.Code != 200 {
		t.Fatalf("serve from a cached module: %v %d", err, w.Code)
	}
	if ents, _ := os.ReadDir(second.cacheDir); len(ents) != 1 {
		t.Errorf("cache dir %s holds %d entries, want 1", second.cacheDir, len(ents))
	}
	// The rewritten module is kept too; a damaged one is rewritten.
	kept, _ := filepath.Glob(filepath.Join(second.codeDir, "*.wasm"))
	if len(kept) != 1 {
		t.Fatalf("kept rewrites %v, want one", kept)
	}
	if err := os.WriteFile(kept[0], []byte("\x00asm\x01\x00\x00\x00\x0a"), 0o600); err != nil {
		t.Fatal(err)
	}
	third := newEngine(t, dir)
	m = compile(t, third, wasm)
	if st := third.CacheStats(); st != (CacheStats{FromCache: 1}) {
		t.Errorf("third engine: %+v, want one load from the disk cache", st)
	}
	if err := m.ServeCGI(context.Background(), httptest.NewRecorder(), httptest.NewRequest("GET", "/t", nil), "/t", Limits{}); err != nil {
		t.Fatalf("serve after a damaged rewrite: %v", err)
	}
	if b, _ := os.ReadFile(kept[0]); len(b) < 20 {
		t.Errorf("the damaged rewrite was not replaced: %q", b)
	}
}

// TestConcurrentCGI runs many requests on one compiled command module at
// once, from a bounded set of goroutines.
func TestConcurrentCGI(t *testing.T) {
	e := newEngine(t, "")
	m := compile(t, e, tinyCommand(tinyResponse))
	const requests, workers = 1000, 32
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range workers {
		wg.Go(func() {
			for range jobs {
				w := httptest.NewRecorder()
				err := m.ServeCGI(context.Background(), w, httptest.NewRequest("GET", "/t", nil), "/t", Limits{MemoryMB: 1})
				if err != nil || w.Body.String() != "hello from 200 bytes" {
					t.Errorf("%v %q", err, w.Body)
					continue
				}
				mu.Lock()
				ok++
				mu.Unlock()
			}
		})
	}
	for range requests {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	if ok != requests {
		t.Errorf("%d of %d succeeded", ok, requests)
	}
}

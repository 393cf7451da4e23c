package wasm

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// dirNames lists dir's file names, sorted.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range ents {
		names = append(names, en.Name())
	}
	sort.Strings(names)
	return names
}

func compileKey(t *testing.T, e *Engine, key string, wasm []byte) {
	t.Helper()
	if _, err := e.Compile(context.Background(), key, wasm); err != nil {
		t.Fatal(err)
	}
}

// keepOnly keeps the keys named.
func keepOnly(keys ...string) func(string) bool {
	return func(key string) bool {
		for _, k := range keys {
			if k == key {
				return true
			}
		}
		return false
	}
}

// TestCollect drops modules no function uses, from memory and from the
// disk cache, and keeps files another kept module shares.
func TestCollect(t *testing.T) {
	dir := t.TempDir()
	e := newEngine(t, dir)
	a, b := tinyCommand(tinyResponse), tinyCommand("Content-Type: text/plain\n\nanother module")
	const keyA, keyB, keyC = "aaaa/main.wasm", "bbbb/main.wasm", "cccc/other.wasm"
	compileKey(t, e, keyA, a)
	compileKey(t, e, keyB, b)
	compileKey(t, e, keyC, a) // the same module as keyA, in another package
	if st := e.CacheStats(); st != (CacheStats{Compiled: 2, FromCache: 1}) {
		t.Fatalf("cache stats %+v", st)
	}
	wdir := e.wazeroDir()
	if wdir == "" || len(dirNames(t, wdir)) != 2 || len(dirNames(t, e.codeDir)) != 2 {
		t.Fatalf("cache holds %v and rewrites %v, want two of each", dirNames(t, wdir), dirNames(t, e.codeDir))
	}
	recA, err := readRecord(e.recordPath(keyA))
	if err != nil || len(recA.Files) != 1 || recA.Rewrite != rewriteName(a) {
		t.Fatalf("record of %s: %+v, %v", keyA, recA, err)
	}
	if recC, err := readRecord(e.recordPath(keyC)); err != nil || len(recC.Files) != 1 || recC.Files[0] != recA.Files[0] {
		t.Fatalf("record of %s (loaded from the cache) = %+v, %v; want %s's files", keyC, recC, err, keyA)
	}

	// Compiled just now: within the grace nothing goes.
	if f, d := e.Collect(keepOnly(), time.Hour); f != 0 || d != 0 {
		t.Fatalf("collect within the grace dropped %d, deleted %d", f, d)
	}
	// A goes; C keeps the files it shares with A.
	if f, d := e.Collect(keepOnly(keyB, keyC), 0); f != 1 || d != 1 {
		t.Fatalf("collect of A dropped %d, deleted %d; want 1, 1", f, d)
	}
	if e.Module(keyA) != nil || e.Module(keyB) == nil || e.Module(keyC) == nil {
		t.Fatal("collect dropped the wrong modules from memory")
	}
	if _, err := os.Stat(e.recordPath(keyA)); !os.IsNotExist(err) {
		t.Errorf("A's record is still there: %v", err)
	}
	if n := len(dirNames(t, wdir)); n != 2 {
		t.Errorf("cache holds %d files after A, want 2 (C shares A's)", n)
	}
	// C goes, and with it the files.
	if f, d := e.Collect(keepOnly(keyB), 0); f != 1 || d != 1 {
		t.Fatalf("collect of C dropped %d, deleted %d; want 1, 1", f, d)
	}
	recB, _ := readRecord(e.recordPath(keyB))
	if got := dirNames(t, wdir); len(got) != 1 || got[0] != recB.Files[0] {
		t.Errorf("cache holds %v, want only B's %v", got, recB.Files)
	}
	if got := dirNames(t, e.codeDir); len(got) != 1 || got[0] != rewriteName(b) {
		t.Errorf("rewrites %v, want only B's", got)
	}
	// A dropped module compiles again, from scratch.
	compileKey(t, e, keyA, a)
	if st := e.CacheStats(); st.Compiled != 3 {
		t.Errorf("cache stats after compiling A again: %+v", st)
	}

	// A restart loads B from the cache, and B's record stays.
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	second := newEngine(t, dir)
	compileKey(t, second, keyB, b)
	if st := second.CacheStats(); st != (CacheStats{FromCache: 1}) {
		t.Errorf("restart: %+v, want a load from the cache", st)
	}
	if rec, err := readRecord(second.recordPath(keyB)); err != nil || len(rec.Files) != 1 || rec.Files[0] != recB.Files[0] {
		t.Errorf("B's record after the restart: %+v, %v", rec, err)
	}
}

// TestCollectRefusesDamagedRecords leaves alone a record that names
// something other than a file in the cache.
func TestCollectRefusesDamagedRecords(t *testing.T) {
	root := t.TempDir()
	outside := filepath.Join(root, "precious")
	if err := os.WriteFile(outside, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEngine(t, filepath.Join(root, "cache"))
	b, _ := json.Marshal(cacheRecord{Key: "dddd/main.wasm", Rewrite: "../../precious", Files: []string{"../../precious"}})
	path := e.recordPath("dddd/main.wasm")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, d := e.Collect(keepOnly(), 0); d != 0 {
		t.Errorf("collect deleted %d records, want 0", d)
	}
	if _, err := os.Stat(outside); err != nil {
		t.Errorf("a file outside the cache was touched: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the damaged record is gone: %v", err)
	}
}

// TestCollectInMemoryOnly drops modules of an engine without a disk cache.
func TestCollectInMemoryOnly(t *testing.T) {
	e := newEngine(t, "")
	compileKey(t, e, "eeee/main.wasm", tinyCommand(tinyResponse))
	if f, d := e.Collect(keepOnly(), 0); f != 1 || d != 0 || e.Module("eeee/main.wasm") != nil {
		t.Errorf("collect dropped %d, deleted %d", f, d)
	}
}

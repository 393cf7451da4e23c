package wasm

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Collecting compiled code. A compiled Go module is tens of megabytes of
// machine code, in memory while it is compiled and in the on-disk cache
// (wazero's file, plus Aloft's rewritten module) after. Deploys of new code
// would grow both without end, so Collect drops what no function uses.
//
// wazero names its cache files by a hash of its own; which file a module
// left is learnt at its compile, the one time it is known (compiles are
// serialized: the files that appear are the module's), and kept in a
// record per module key in recordDir.

// cacheRecord is what one module key left in the on-disk cache.
type cacheRecord struct {
	Key     string   `json:"key"`
	Rewrite string   `json:"rewrite"`         // Aloft's rewritten module, in codeDir
	Files   []string `json:"files,omitempty"` // wazero's files, in its cache directory
}

// recordVersion names the record format; a change must bump it.
const recordVersion = 1

// recordPath is where key's record is kept.
func (e *Engine) recordPath(key string) string {
	return filepath.Join(e.recordDir, fmt.Sprintf("%x.json", sha256.Sum256([]byte(key))))
}

// wazeroDir is wazero's versioned cache directory, which it creates at its
// first write. The caller holds compileMu.
func (e *Engine) wazeroDir() string {
	if e.cacheDir == "" && e.recordDir != "" {
		if dirs, _ := filepath.Glob(filepath.Join(filepath.Dir(e.recordDir), "wazero-*")); len(dirs) == 1 {
			e.cacheDir = dirs[0]
		}
	}
	return e.cacheDir
}

// cacheNames lists wazero's cache files. The caller holds compileMu.
func (e *Engine) cacheNames() map[string]bool {
	dir := e.wazeroDir()
	if dir == "" {
		return nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	names := make(map[string]bool, len(ents))
	for _, en := range ents {
		names[en.Name()] = true
	}
	return names
}

// remember records what the compile of key left in the cache: the
// rewrite, and the files wazero added (in after, not before). A module
// loaded from the cache adds none: its record stays, or one is made from a
// record of another key with the same module. The caller holds compileMu.
func (e *Engine) remember(key, rewrite string, before, after map[string]bool) {
	if e.recordDir == "" {
		return
	}
	rec := cacheRecord{Key: key, Rewrite: rewrite}
	for name := range after {
		if !before[name] && !strings.HasPrefix(name, ".") {
			rec.Files = append(rec.Files, name)
		}
	}
	path := e.recordPath(key)
	if len(rec.Files) == 0 {
		if old, err := readRecord(path); err == nil && old.Key == key {
			now := time.Now()
			_ = os.Chtimes(path, now, now) // compiled again: a fresh grace
			return
		}
		recs, _ := e.records()
		for _, r := range recs {
			if r.rec.Rewrite == rewrite {
				rec.Files = r.rec.Files
				break
			}
		}
	}
	b, err := json.Marshal(rec)
	if err == nil {
		err = writeWhole(path, b)
	}
	if err != nil {
		e.log.Warn("record a compiled wasm module's cache files", "module", key, "error", err)
	}
}

func readRecord(path string) (cacheRecord, error) {
	var rec cacheRecord
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	return rec, err
}

type recordFile struct {
	path string
	mod  time.Time
	rec  cacheRecord
}

// records reads every record; unreadable ones are skipped.
func (e *Engine) records() ([]recordFile, error) {
	ents, err := os.ReadDir(e.recordDir)
	if err != nil {
		return nil, err
	}
	var out []recordFile
	for _, en := range ents {
		if !strings.HasSuffix(en.Name(), ".json") {
			continue
		}
		info, err := en.Info()
		if err != nil {
			continue
		}
		path := filepath.Join(e.recordDir, en.Name())
		rec, err := readRecord(path)
		if err != nil || rec.Key == "" {
			continue
		}
		out = append(out, recordFile{path: path, mod: info.ModTime(), rec: rec})
	}
	return out, nil
}

// Collect drops the compiled modules whose key keep refuses and that were
// compiled more than grace ago (a deploy compiles before its function is
// stored): from memory, and with an on-disk cache their files there too,
// unless a module kept shares them. It returns how many modules it dropped
// from memory and how many it deleted from disk. Instances already running
// finish normally.
func (e *Engine) Collect(keep func(key string) bool, grace time.Duration) (forgotten, deleted int) {
	cutoff := time.Now().Add(-grace)
	var drop []string
	e.mu.Lock()
	for key, en := range e.modules {
		select {
		case <-en.done:
		default:
			continue // compiling
		}
		if en.at.Before(cutoff) && !keep(key) {
			drop = append(drop, key)
		}
	}
	e.mu.Unlock()
	for _, key := range drop {
		e.Forget(key)
	}
	if e.recordDir == "" {
		return len(drop), 0
	}
	e.compileMu.Lock()
	defer e.compileMu.Unlock()
	recs, err := e.records()
	if err != nil {
		e.log.Warn("collect compiled wasm modules", "error", err)
		return len(drop), 0
	}
	kept := map[string]bool{}
	var gone []recordFile
	for _, r := range recs {
		if r.mod.Before(cutoff) && !keep(r.rec.Key) && e.Module(r.rec.Key) == nil {
			gone = append(gone, r)
			continue
		}
		kept["r/"+r.rec.Rewrite] = true
		for _, f := range r.rec.Files {
			kept["f/"+f] = true
		}
	}
	wdir := e.wazeroDir()
	for _, r := range gone {
		var errs []error
		if r.rec.Rewrite != "" && !kept["r/"+r.rec.Rewrite] {
			errs = append(errs, removeName(e.codeDir, r.rec.Rewrite))
		}
		for _, f := range r.rec.Files {
			if wdir != "" && !kept["f/"+f] {
				errs = append(errs, removeName(wdir, f))
			}
		}
		if err := errors.Join(errs...); err != nil {
			e.log.Warn("collect compiled wasm module", "module", r.rec.Key, "error", err)
			continue // the record stays, for the next collection
		}
		if err := os.Remove(r.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			e.log.Warn("collect compiled wasm module", "module", r.rec.Key, "error", err)
			continue
		}
		deleted++
	}
	return len(drop), deleted
}

// removeName deletes dir/name; a name that is not a plain file name (a
// damaged record) is refused, and one already gone is no error.
func removeName(dir, name string) error {
	if name == "" || name != filepath.Base(name) || name == "." || name == ".." {
		return fmt.Errorf("cache record names %q, not a file name", name)
	}
	if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

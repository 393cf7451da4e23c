package wasm

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"aloft/internal/fn"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// Config configures an Engine.
type Config struct {
	// CacheDir holds the on-disk compilation cache; "" keeps compiled code
	// in memory only.
	CacheDir string
	Logger   *slog.Logger
}

// Kind says how a module is run.
type Kind int

const (
	// KindCommand exports _start: a WAGI/CGI handler, a fresh instance per request.
	KindCommand Kind = iota + 1
	// KindReactor exports the Aloft reactor ABI: instances are reused.
	KindReactor
)

func (k Kind) String() string {
	switch k {
	case KindCommand:
		return "command"
	case KindReactor:
		return "reactor"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// CacheStats counts how this Engine's Compile calls got their code.
type CacheStats struct {
	Compiled  int // compiled from the wasm bytes
	FromCache int // loaded from the on-disk compilation cache
}

// Engine compiles and runs modules. One wazero runtime serves every
// module and every memory cap: the cap is enforced per instance by the
// memory allocator (see memory.go), so one compiled module serves all.
type Engine struct {
	log       *slog.Logger
	cache     wazero.CompilationCache
	cacheDir  string // wazero's versioned subdirectory of Config.CacheDir, or "" (see wazeroDir)
	codeDir   string // rewritten modules (runnable), in Config.CacheDir, or ""
	recordDir string // what each module left in the cache (collect.go), or ""
	rt        wazero.Runtime

	compileMu sync.Mutex // serializes compiles, so the files a compile adds are its own

	mu      sync.Mutex
	modules map[string]*entry
	stats   CacheStats

	procs procs // every instance's command line and environment
	runs  runs  // live instances and running calls
}

type entry struct {
	done chan struct{}
	mod  *Module
	err  error
	at   time.Time // when the compile finished
}

// New starts an Engine. Close releases it.
func New(ctx context.Context, cfg Config) (*Engine, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{log: log, modules: make(map[string]*entry)}
	if cfg.CacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("open wasm compilation cache %s: %w", cfg.CacheDir, err)
		}
		e.cache = c
		e.codeDir = filepath.Join(cfg.CacheDir, fmt.Sprintf("aloft-rewritten-v%d", rewriteVersion))
		e.recordDir = filepath.Join(cfg.CacheDir, fmt.Sprintf("aloft-records-v%d", recordVersion))
		for _, d := range []string{e.codeDir, e.recordDir} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				_ = c.Close(ctx)
				return nil, fmt.Errorf("open wasm compilation cache: %w", err)
			}
		}
		e.wazeroDir() // wazero keeps its files in one versioned subdirectory
	} else {
		e.cache = wazero.NewCompilationCache()
	}
	// Not WithCloseOnContextDone: calls are bounded by the module's own
	// interrupt check (interrupt.go), at a fraction of the cost.
	rc := wazero.NewRuntimeConfig().WithCompilationCache(e.cache)
	e.rt = wazero.NewRuntimeWithConfig(ctx, rc)
	if err := instantiateWASI(ctx, e.rt, &e.procs); err != nil {
		_ = e.rt.Close(ctx)
		_ = e.cache.Close(ctx)
		return nil, fmt.Errorf("instantiate wasi: %w", err)
	}
	return e, nil
}

// Close closes every compiled module, every instance and the runtime.
// Running calls are interrupted first, and the runtime is closed only once
// they have returned (if ctx ends before, it stays open: closing frees
// memory the code still uses); no instance starts or runs afterwards.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	e.modules = make(map[string]*entry)
	e.mu.Unlock()
	if err := e.runs.stopAll(ctx); err != nil {
		return fmt.Errorf("close wasm engine: %w", err)
	}
	err := e.rt.Close(ctx)
	if cerr := e.cache.Close(ctx); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("close wasm engine: %w", err)
	}
	return nil
}

// CacheStats reports how this Engine's compiles were served.
func (e *Engine) CacheStats() CacheStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stats
}

// Module returns the compiled module for key, or nil if it has not been
// compiled in this process (or was forgotten).
func (e *Engine) Module(key string) *Module {
	e.mu.Lock()
	defer e.mu.Unlock()
	en := e.modules[key]
	if en == nil {
		return nil
	}
	select {
	case <-en.done:
		return en.mod
	default:
		return nil
	}
}

// Forget drops the compiled module for key from memory (the disk cache
// keeps it). Instances already running finish normally; a compile of key
// in flight returns an error.
func (e *Engine) Forget(key string) {
	e.mu.Lock()
	en := e.modules[key]
	delete(e.modules, key)
	e.mu.Unlock()
	if en == nil {
		return
	}
	select {
	case <-en.done:
		if en.mod != nil {
			_ = en.mod.compiled.Close(context.Background())
		}
	default: // the compile in flight sees it was forgotten and closes it
	}
}

// Compile compiles wasm (or loads it from the compilation cache) and keeps
// the result in memory under key, the code's sha256 in hex. Concurrent
// calls for one key compile once; a key already compiled returns at once.
//
// Errors: a module that is not valid WebAssembly, imports anything but
// wasi_snapshot_preview1, or is neither a command nor a reactor is a
// client-facing *fn.Error (fn.Invalid); ctx ending while waiting for
// another caller's compile returns ctx.Err().
func (e *Engine) Compile(ctx context.Context, key string, wasm []byte) (*Module, error) {
	e.mu.Lock()
	if en := e.modules[key]; en != nil {
		e.mu.Unlock()
		select {
		case <-en.done:
			return en.mod, en.err
		case <-ctx.Done():
			return nil, fmt.Errorf("compile wasm %s: %w", key, ctx.Err())
		}
	}
	en := &entry{done: make(chan struct{})}
	e.modules[key] = en
	e.mu.Unlock()

	mod, err := e.compile(ctx, key, wasm)
	e.mu.Lock()
	switch {
	case err != nil && e.modules[key] == en:
		delete(e.modules, key) // let a later deploy try again
	case err == nil && e.modules[key] != en:
		_ = mod.compiled.Close(ctx)
		mod, err = nil, fmt.Errorf("compile wasm %s: forgotten while compiling", key)
	}
	en.mod, en.err, en.at = mod, err, time.Now()
	e.mu.Unlock()
	close(en.done)
	return mod, err
}

func (e *Engine) compile(ctx context.Context, key string, wasm []byte) (*Module, error) {
	e.compileMu.Lock()
	defer e.compileMu.Unlock()
	before := e.cacheNames()
	name := rewriteName(wasm)
	code, kept, err := e.runnable(wasm, name)
	if err != nil {
		return nil, err
	}
	// Compiling a Go module takes seconds, which a deploy waits for: use
	// every core (compiles are serialized, so at most that many workers).
	ctx = experimental.WithCompilationWorkers(ctx, runtime.GOMAXPROCS(0))
	cm, err := e.rt.CompileModule(ctx, code)
	if err != nil && kept != "" {
		// The kept rewrite is damaged: rewrite again.
		e.log.Warn("a kept rewritten wasm module does not compile; rewriting it", "module", key, "error", err)
		_ = os.Remove(kept)
		if code, _, err = e.runnable(wasm, name); err != nil {
			return nil, err
		}
		cm, err = e.rt.CompileModule(ctx, code)
	}
	if err != nil {
		return nil, fn.Invalid("the code is not a valid WebAssembly module: %v", err)
	}
	after := e.cacheNames()
	fromCache := before != nil && len(after) == len(before)
	kind, err := classify(cm)
	if err != nil {
		_ = cm.Close(ctx)
		return nil, err
	}
	e.remember(key, name, before, after)
	e.mu.Lock()
	if fromCache {
		e.stats.FromCache++
	} else {
		e.stats.Compiled++
	}
	e.mu.Unlock()
	e.log.Debug("wasm module compiled", "module", key, "kind", kind.String(), "from_cache", fromCache)
	return newModule(e, key, cm, kind), nil
}

// rewriteVersion names the rewrites runnable applies; a change to them
// must bump it, so that no module rewritten the old way is reused.
const rewriteVersion = 1

// runnable returns the module as Aloft runs it: data coalesced
// (coalesce.go) and loops made interruptible (interrupt.go). With an
// on-disk cache the result is kept there by the module's sha256: a restart
// then skips the rewrites, about 45 ms of a Go module's reload. name is
// rewriteName(wasm); kept is the file the result was read from, if it was.
func (e *Engine) runnable(wasm []byte, name string) (code []byte, kept string, err error) {
	var path string
	if e.codeDir != "" {
		path = filepath.Join(e.codeDir, name)
		if b, err := os.ReadFile(path); err == nil {
			return b, path, nil
		}
	}
	code, err = interruptible(coalesceData(wasm))
	if err != nil {
		return nil, "", fn.Invalid("the code is not a WebAssembly 2.0 module Aloft can run: %v", err)
	}
	if path != "" {
		if err := writeWhole(path, code); err != nil {
			e.log.Warn("keep a rewritten wasm module on disk", "error", err)
		}
	}
	return code, "", nil
}

// rewriteName is the file name of wasm's rewrite in codeDir.
func rewriteName(wasm []byte) string {
	return fmt.Sprintf("%x.wasm", sha256.Sum256(wasm))
}

// writeWhole writes b to path whole or not at all (through a temporary
// file in its directory and a rename): a torn file would be reused.
func writeWhole(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
	return err
}

// classify checks the imports and detects the kind from the exports.
func classify(cm wazero.CompiledModule) (Kind, error) {
	for _, f := range cm.ImportedFunctions() {
		mod, name, _ := f.Import()
		if mod != wasi_snapshot_preview1.ModuleName {
			return 0, fn.Invalid("the WebAssembly module imports %s.%s: only %s (WASI preview1) is available", mod, name, wasi_snapshot_preview1.ModuleName)
		}
	}
	for _, m := range cm.ImportedMemories() {
		mod, name, _ := m.Import()
		return 0, fn.Invalid("the WebAssembly module imports memory %s.%s: it must define and export its own", mod, name)
	}
	ex := cm.ExportedFunctions()
	if _, ok := ex[startExport]; ok && !hasSig(ex, startExport, nil, nil) {
		// The format requires it of a start function; the rewrite turned
		// the start section into an export, which wazero does not check.
		return 0, fn.Invalid("the WebAssembly module's start function must take no parameters and return nothing")
	}
	if hasSig(ex, "aloft_alloc", []api.ValueType{api.ValueTypeI32}, []api.ValueType{api.ValueTypeI32}) &&
		hasSig(ex, "aloft_handle", []api.ValueType{api.ValueTypeI32, api.ValueTypeI32}, []api.ValueType{api.ValueTypeI64}) {
		if _, ok := cm.ExportedMemories()["memory"]; !ok {
			return 0, fn.Invalid("the WebAssembly reactor does not export its memory as \"memory\"")
		}
		return KindReactor, nil
	}
	if hasSig(ex, "_start", nil, nil) {
		return KindCommand, nil
	}
	return 0, fn.Invalid("the WebAssembly module is neither a command nor a reactor: " +
		"a command (WAGI/CGI) exports _start and writes a CGI response on stdout (e.g. Go's net/http/cgi.Serve built with GOOS=wasip1); " +
		"a reactor exports memory, aloft_alloc(i32) -> i32 and aloft_handle(i32, i32) -> i64 (the Aloft reactor ABI)")
}

func hasSig(ex map[string]api.FunctionDefinition, name string, params, results []api.ValueType) bool {
	d, ok := ex[name]
	if !ok {
		return false
	}
	return sameTypes(d.ParamTypes(), params) && sameTypes(d.ResultTypes(), results)
}

func sameTypes(a, b []api.ValueType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"aloft/internal/build"
	"aloft/internal/client"
	"aloft/internal/fn"
	"aloft/internal/wasm"
)

// wasmRows measures the WebAssembly runtime: cold start of a tiny non-Go
// module, a Go CGI module with a fresh instance per request, a warm Go
// reactor, reloading a compiled module from the on-disk cache, and memory
// per live Go instance.
func wasmRows(ctx context.Context, o options, work string, c *client.Client, hc *http.Client, baseURL string, deploy func(fn.Config, string) error, direct time.Duration) ([]row, error) {
	dirs := map[string]string{}
	for name, src := range map[string]string{"cgi": "examples/hello-wasm", "reactor": "examples/hello-reactor"} {
		dir := filepath.Join(work, "pkg-wasm-"+name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		target := build.Target{Wasm: true, Reactor: build.HasWasmExports(src)}
		if err := build.Go(ctx, build.Config{}, src, dir, "main.wasm", target); err != nil {
			return nil, fmt.Errorf("build %s: %w", src, err)
		}
		dirs[name] = dir
	}
	dirs["tiny"] = "examples/hello-tiny"
	wasmCfg := func(name, handler string, max int) fn.Config {
		return fn.Config{Name: name, Runtime: fn.RuntimeWasm, Handler: handler, Timeout: fn.Duration(10 * time.Second),
			Scale: fn.Scale{Max: max, Idle: fn.Duration(10 * time.Minute)}}
	}
	if err := deploy(wasmCfg("wasm-cgi", "main.wasm", 32), dirs["cgi"]); err != nil {
		return nil, err
	}
	if err := deploy(wasmCfg("wasm-reactor", "main.wasm", 32), dirs["reactor"]); err != nil {
		return nil, err
	}
	n := o.cold
	for i := 0; i < n; i++ {
		if err := deploy(wasmCfg(fmt.Sprintf("cold-tiny-%d", i), "hello.wasm", 4), dirs["tiny"]); err != nil {
			return nil, err
		}
	}
	get := func(url string) func() error { return func() error { return call(hc, "GET", url, nil) } }
	var cold []time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		if err := get(fmt.Sprintf("%s/fn/cold-tiny-%d/", baseURL, i))(); err != nil {
			return nil, err
		}
		cold = append(cold, time.Since(start))
	}
	cgiURL, reactorURL := baseURL+"/fn/wasm-cgi/", baseURL+"/fn/wasm-reactor/"
	cgiLat := latencies(min(o.warm, 300), get(cgiURL))
	cgiRPS := throughput(32, o.duration, get(cgiURL))
	reLat := latencies(o.warm, get(reactorURL))
	reRPS := warmThroughput(32, o.duration, get(reactorURL))

	reload, err := reloadFromCache(ctx, work, filepath.Join(dirs["cgi"], "main.wasm"))
	if err != nil {
		return nil, err
	}
	perInstance, err := memoryPerInstance(ctx, filepath.Join(dirs["reactor"], "main.wasm"))
	if err != nil {
		return nil, err
	}
	return []row{
		{name: fmt.Sprintf("wasm cold start, tiny non-Go module, first request (n=%d)", len(cold)),
			value: fmt.Sprintf("p50 %s, p99 %s", us(pct(cold, 50)), us(pct(cold, 99))), target: "p50 <= 1 ms over HTTP",
			floor: "loopback HTTP " + us(direct), ratio: ratio(pct(cold, 50), direct), ok: pct(cold, 50) <= time.Millisecond},
		{name: "wasm Go CGI module, fresh instance per request, c=1 / c=32",
			value: fmt.Sprintf("p50 %s; %.0f req/s at c=32", ms(pct(cgiLat, 50)), cgiRPS), target: "p50 <= 6 ms; report req/s",
			floor: "loopback HTTP " + us(direct), ratio: ratio(pct(cgiLat, 50), direct), ok: pct(cgiLat, 50) <= 6*time.Millisecond},
		{name: "wasm Go reactor, warm, c=1 / c=32",
			value: fmt.Sprintf("p50 %s; %.0f req/s at c=32", us(pct(reLat, 50)), reRPS), target: "p50 <= 150 us; >= 20,000 req/s",
			floor: "loopback HTTP " + us(direct), ratio: ratio(pct(reLat, 50), direct),
			ok: pct(reLat, 50) <= 150*time.Microsecond && reRPS >= 20000},
		{name: fmt.Sprintf("wasm restart: reload one Go module from the compilation cache (median of %d)", reloads),
			value: ms(reload), target: "<= 100 ms", floor: "-", ratio: "-", ok: reload <= 100*time.Millisecond},
		{name: "wasm memory per live Go reactor instance (1,000 live: extrapolated)",
			value:  fmt.Sprintf("%.1f MiB; 1,000 = %.1f GiB", float64(perInstance)/(1<<20), float64(perInstance)*1000/(1<<30)),
			target: "1,000 fit in 8 GiB", floor: "-", ratio: "-", ok: perInstance*1000 <= 8<<30},
	}, nil
}

// reloadFromCache times what a restart does: a new process opens an engine
// on the same cache directory and compiles the module (a cache load, not
// a compile). Each reload is a fresh process, as a restart is, so the
// bench's own heap (a server and its instances) does not slow the
// collector during it; it reports the median of reloads.
func reloadFromCache(ctx context.Context, work, module string) (time.Duration, error) {
	b, err := os.ReadFile(module)
	if err != nil {
		return 0, err
	}
	dir := filepath.Join(work, "wasm-bench-cache")
	first, err := wasm.New(ctx, wasm.Config{CacheDir: dir})
	if err != nil {
		return 0, err
	}
	if _, err := first.Compile(ctx, "m", b); err != nil {
		return 0, err
	}
	if err := first.Close(ctx); err != nil {
		return 0, err
	}
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	var d []time.Duration
	for range reloads {
		cmd := exec.CommandContext(ctx, self)
		cmd.Env = append(os.Environ(), reloadEnv+"="+dir+string(filepath.ListSeparator)+module)
		out, err := cmd.Output()
		if err != nil {
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(exit.Stderr))
			}
			return 0, fmt.Errorf("reload in a new process: %w", err)
		}
		took, err := time.ParseDuration(strings.TrimSpace(string(out)))
		if err != nil {
			return 0, fmt.Errorf("reload in a new process: %q: %w", out, err)
		}
		d = append(d, took)
	}
	return median(d), nil
}

// reloads is how many restarts reloadFromCache times.
const reloads = 7

// reloadEnv asks the bench binary to be one reload: "CACHEDIR:MODULE".
const reloadEnv = "ALOFT_BENCH_RELOAD"

// maybeReload runs the reload this process was started for, if any: it
// prints how long the compile took, and fails if it compiled instead of
// loading from the cache.
func maybeReload() (int, bool) {
	arg := os.Getenv(reloadEnv)
	if arg == "" {
		return 0, false
	}
	dir, module, _ := strings.Cut(arg, string(filepath.ListSeparator))
	fail := func(err error) (int, bool) {
		fmt.Fprintln(os.Stderr, "reload:", err)
		return 1, true
	}
	b, err := os.ReadFile(module)
	if err != nil {
		return fail(err)
	}
	ctx := context.Background()
	e, err := wasm.New(ctx, wasm.Config{CacheDir: dir})
	if err != nil {
		return fail(err)
	}
	defer e.Close(ctx)
	start := time.Now()
	if _, err := e.Compile(ctx, "m", b); err != nil {
		return fail(err)
	}
	took := time.Since(start)
	if st := e.CacheStats(); st.FromCache == 0 {
		return fail(fmt.Errorf("the reload compiled instead of using the cache: %+v", st))
	}
	fmt.Println(took)
	return 0, true
}

// memoryPerInstance starts live reactor instances and measures the
// process's resident memory they add, per instance.
func memoryPerInstance(ctx context.Context, module string) (int64, error) {
	b, err := os.ReadFile(module)
	if err != nil {
		return 0, err
	}
	e, err := wasm.New(ctx, wasm.Config{})
	if err != nil {
		return 0, err
	}
	defer e.Close(ctx)
	m, err := e.Compile(ctx, "r", b)
	if err != nil {
		return 0, err
	}
	const n = 100
	// The engine keeps the memory of up to 8 freed instances per size for
	// reuse (resident already): take those first, so that every measured
	// instance maps fresh memory.
	var pooled []*wasm.Instance
	for i := 0; i < 8; i++ {
		inst, err := m.NewInstance(ctx, wasm.Limits{MemoryMB: 128})
		if err != nil {
			return 0, err
		}
		pooled = append(pooled, inst)
	}
	defer func() {
		for _, inst := range pooled {
			_ = inst.Close(ctx)
		}
	}()
	runtime.GC()
	before := rss()
	var live []*wasm.Instance
	for i := 0; i < n; i++ {
		inst, err := m.NewInstance(ctx, wasm.Limits{MemoryMB: 128})
		if err != nil {
			return 0, err
		}
		live = append(live, inst)
	}
	// Serve one request on each so every instance has run its Go runtime.
	for _, inst := range live {
		req, _ := http.NewRequest("GET", "/", nil)
		if err := inst.Serve(ctx, discardWriter{h: http.Header{}}, req); err != nil {
			return 0, err
		}
	}
	after := rss()
	for _, inst := range live {
		_ = inst.Close(ctx)
	}
	return (after - before) / n, nil
}

type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header         { return d.h }
func (d discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d discardWriter) WriteHeader(int)             {}

// rss is this process's resident set size in bytes.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, resident int64
	_, _ = fmt.Sscan(string(b), &size, &resident)
	return resident * int64(os.Getpagesize())
}

package wasm

import (
	"context"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

func benchCGI(b *testing.B, m *Module, target string) {
	b.ReportAllocs()
	ctx := context.Background()
	for b.Loop() {
		w := httptest.NewRecorder()
		if err := m.ServeCGI(ctx, w, httptest.NewRequest("GET", target, nil), "/fn", Limits{}); err != nil || w.Code != 200 {
			b.Fatalf("%v %d", err, w.Code)
		}
	}
}

// BenchmarkCGIGo is a fresh Go instance (net/http/cgi) per request.
func BenchmarkCGIGo(b *testing.B) { benchCGI(b, goCGI(b), "/fn/counter") }

// BenchmarkCGISmall is a fresh instance of a 200-byte module per request.
func BenchmarkCGISmall(b *testing.B) {
	benchCGI(b, compile(b, newEngine(b, ""), tinyCommand(tinyResponse)), "/fn")
}

// BenchmarkReactorGo is one request on a reused Go reactor instance.
func BenchmarkReactorGo(b *testing.B) {
	i := newInstance(b, goReactor(b), Limits{})
	b.ReportAllocs()
	ctx := context.Background()
	for b.Loop() {
		w := httptest.NewRecorder()
		if err := i.Serve(ctx, w, httptest.NewRequest("GET", "/counter", nil)); err != nil || w.Code != 200 {
			b.Fatalf("%v %d", err, w.Code)
		}
	}
}

// BenchmarkCompileFromCache is a restart's reload of the Go CGI module
// from the on-disk compilation cache.
func BenchmarkCompileFromCache(b *testing.B) {
	needGo(b)
	dir := b.TempDir()
	e, err := New(context.Background(), Config{CacheDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	compile(b, e, cgiWasm)
	_ = e.Close(context.Background())
	b.ReportAllocs()
	for b.Loop() {
		e, err := New(context.Background(), Config{CacheDir: dir})
		if err != nil {
			b.Fatal(err)
		}
		compile(b, e, cgiWasm)
		if st := e.CacheStats(); st.FromCache != 1 {
			b.Fatalf("stats %+v", st)
		}
		_ = e.Close(context.Background())
	}
}

// BenchmarkReactorInstanceMemory reports what a live Go reactor instance
// costs after one request: its linear memory, the Go heap it holds, and
// the process's resident memory (which counts the mmap-backed memory).
func BenchmarkReactorInstanceMemory(b *testing.B) {
	m := goReactor(b)
	const n = 20
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		rssBefore := rss(b)
		var linear uint32
		insts := make([]*Instance, n)
		for k := range insts {
			i, err := m.NewInstance(context.Background(), Limits{})
			if err != nil {
				b.Fatal(err)
			}
			if err := i.Serve(context.Background(), httptest.NewRecorder(), httptest.NewRequest("GET", "/counter", nil)); err != nil {
				b.Fatal(err)
			}
			linear += i.mod.Memory().Size()
			insts[k] = i
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		rssAfter := rss(b)
		for _, i := range insts {
			_ = i.Close(context.Background())
		}
		b.ReportMetric(float64(linear)/n, "linear-B/instance")
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/n, "heap-B/instance")
		b.ReportMetric(float64(rssAfter-rssBefore)/n, "rss-B/instance")
	}
}

// rss reads the process's resident set size in bytes.
func rss(b *testing.B) int64 {
	s, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		b.Skip("no /proc/self/statm: resident memory unknown")
	}
	f := strings.Fields(string(s))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"aloft/internal/archive"
	"aloft/internal/build"
	"aloft/internal/client"
	"aloft/internal/fn"
	"aloft/internal/server"
)

type options struct {
	cold       int
	warm       int
	duration   time.Duration
	insecure   bool
	cpuProfile string
	eventsOnly bool
	coreOnly   bool
	noCrash    bool
}

// row is one line of the result table.
type row struct {
	name   string
	value  string
	target string
	floor  string
	ratio  string
	ok     bool
}

func run(ctx context.Context, o options, out io.Writer) error {
	if o.duration <= 0 {
		o.duration = 3 * time.Second
	}
	work, err := os.MkdirTemp("", "aloft-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o711); err != nil { // the sandbox uid traverses it
		return err
	}
	fmt.Fprintln(out, "building fixtures...")
	bins := map[string]string{}
	for _, name := range []string{"echo", "httpecho", "noop", "ticklag"} {
		dir := filepath.Join(work, "pkg-"+name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		var target build.Target
		if name == "echo" || name == "ticklag" {
			target.Tags = []string{"lambda.norpc"}
		}
		if err := build.Go(ctx, build.Config{}, filepath.Join("bench", "testdata", name), dir, "bootstrap", target); err != nil {
			return fmt.Errorf("build %s (run from the repository root): %w", name, err)
		}
		bins[name] = dir
	}
	for name, src := range map[string]map[string]string{
		"node":   {"index.js": "exports.handler = async (event) => event;\n"},
		"python": {"app.py": "def handler(event, context):\n    return event\n"},
	} {
		dir := filepath.Join(work, "pkg-"+name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for f, body := range src {
			if err := os.WriteFile(filepath.Join(dir, f), []byte(body), 0o644); err != nil {
				return err
			}
		}
		bins[name] = dir
	}

	fmt.Fprintln(out, "measuring floors...")
	execFloor := median(repeat(30, func() error { return exec.Command(filepath.Join(bins["noop"], "bootstrap")).Run() }))
	fnStart, err := functionStart(filepath.Join(bins["echo"], "bootstrap"), 30)
	if err != nil {
		return err
	}
	fnAlone, err := functionAlone(filepath.Join(bins["echo"], "bootstrap"), 3000)
	if err != nil {
		return err
	}
	// The most invocations per second the machine's cores could give the
	// function if Aloft and the caller cost nothing.
	fnCeiling := float64(runtime.NumCPU()) / fnAlone.Seconds()
	nodeFloor := median(repeat(10, func() error { return exec.Command("/usr/bin/node", "-e", "0").Run() }))
	pyFloor := median(repeat(10, func() error { return exec.Command("/usr/bin/python3", "-c", "0").Run() }))

	direct, stopDirect, err := startDirect(bins["httpecho"])
	if err != nil {
		return err
	}
	defer stopDirect()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxIdleConns: 256, DisableCompression: true}}
	get := func(url string) func() error {
		return func() error { return call(hc, "GET", url, nil) }
	}
	directLat := latencies(o.warm, get(direct))
	directRPS := warmThroughput(32, o.duration, get(direct))

	fmt.Fprintln(out, "starting aloft...")
	srv, err := server.New(server.Config{Addr: "127.0.0.1:0", DataDir: filepath.Join(work, "data"), NoAuth: true,
		Insecure: o.insecure, Prewarm: 4, Logger: benchLogger()})
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	c := client.New(srv.URL(), "")
	deploy := func(name string, rt fn.Runtime, dir string, mod func(*fn.Config)) error {
		cfg := fn.Config{Name: name, Runtime: rt, Timeout: fn.Duration(10 * time.Second), Scale: fn.Scale{Max: 32, Idle: fn.Duration(10 * time.Minute)}}
		if rt == fn.RuntimeNode {
			cfg.Handler = "index.handler"
		}
		if rt == fn.RuntimePython {
			cfg.Handler = "app.handler"
		}
		if mod != nil {
			mod(&cfg)
		}
		var buf bytes.Buffer
		if err := archive.Pack(&buf, dir); err != nil {
			return err
		}
		_, _, err := c.Deploy(ctx, cfg, &buf)
		return err
	}
	fmt.Fprintln(out, "deploying...")
	if err := deploy("echo", fn.RuntimeLambda, bins["echo"], nil); err != nil {
		return err
	}
	if err := deploy("httpecho", fn.RuntimeHTTP, bins["httpecho"], func(c *fn.Config) { c.Concurrency = 32; c.Scale.Max = 2 }); err != nil {
		return err
	}
	var rows []row
	core := func() error {
		coldRuns := map[string]int{"echo": o.cold, "node": o.cold / 2, "python": o.cold / 2}
		rts := map[string]fn.Runtime{"echo": fn.RuntimeLambda, "node": fn.RuntimeNode, "python": fn.RuntimePython}
		for _, kind := range []string{"echo", "node", "python"} {
			for i := 0; i <= coldRuns[kind]; i++ { // one extra: the first also extracts the code
				if err := deploy(fmt.Sprintf("cold-%s-%d", kind, i), rts[kind], bins[kind], nil); err != nil {
					return err
				}
			}
		}
		invoke := func(name string) func() error {
			url := srv.URL() + "/v1/functions/" + name + "/invoke"
			return func() error { return call(hc, "POST", url, []byte(`{"hello":"world"}`)) }
		}
		fmt.Fprintln(out, "measuring cold starts...")
		cold := map[string][]time.Duration{}
		for _, kind := range []string{"echo", "node", "python"} {
			for i := 0; i <= coldRuns[kind]; i++ {
				// Give the executor time to refill its pre-warmed sandboxes, as
				// it would between cold starts that are not back to back.
				time.Sleep(50 * time.Millisecond)
				start := time.Now()
				if err := invoke(fmt.Sprintf("cold-%s-%d", kind, i))(); err != nil {
					return fmt.Errorf("cold start %s %d: %w", kind, i, err)
				}
				if i > 0 {
					cold[kind] = append(cold[kind], time.Since(start))
				}
			}
		}
		fmt.Fprintln(out, "measuring warm invocations...")
		if o.cpuProfile != "" {
			f, err := os.Create(o.cpuProfile)
			if err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			defer f.Close()
		}
		if err := invoke("echo")(); err != nil {
			return err
		}
		warmLat := latencies(o.warm, invoke("echo"))
		throughput(32, time.Second, invoke("echo")) // as warmThroughput, outside the CPU count
		cpuBefore := functionCPU()
		warmRPS := throughput(32, o.duration, invoke("echo"))
		fnCPU := time.Duration(float64(functionCPU()-cpuBefore) / (warmRPS * o.duration.Seconds()))
		if o.cpuProfile != "" {
			pprof.StopCPUProfile()
		}
		httpURL := srv.URL() + "/fn/httpecho/"
		if err := get(httpURL)(); err != nil {
			return err
		}
		httpLat := latencies(o.warm, get(httpURL))
		httpRPS := warmThroughput(32, o.duration, get(httpURL))

		goCold := cold["echo"]
		rows = []row{
			{name: fmt.Sprintf("cold start, Go lambda, sandboxed (n=%d)", len(goCold)),
				value:  fmt.Sprintf("p50 %s, p99 %s", ms(pct(goCold, 50)), ms(pct(goCold, 99))),
				target: "p50 <= 5 ms", floor: "exec " + ms(execFloor) + "; the function's own start " + ms(fnStart),
				ratio: ratio(pct(goCold, 50), fnStart), ok: pct(goCold, 50) <= 5*time.Millisecond},
			{name: fmt.Sprintf("cold start, node (n=%d)", len(cold["node"])),
				value:  fmt.Sprintf("p50 %s, p99 %s", ms(pct(cold["node"], 50)), ms(pct(cold["node"], 99))),
				target: "p50 <= node -e 0 + 10 ms", floor: "node -e 0 " + ms(nodeFloor),
				ratio: ratio(pct(cold["node"], 50), nodeFloor), ok: pct(cold["node"], 50) <= nodeFloor+10*time.Millisecond},
			{name: fmt.Sprintf("cold start, python (n=%d)", len(cold["python"])),
				value:  fmt.Sprintf("p50 %s, p99 %s", ms(pct(cold["python"], 50)), ms(pct(cold["python"], 99))),
				target: "p50 <= python3 -c 0 + 10 ms", floor: "python3 -c 0 " + ms(pyFloor),
				ratio: ratio(pct(cold["python"], 50), pyFloor), ok: pct(cold["python"], 50) <= pyFloor+10*time.Millisecond},
			{name: "warm invoke, Go lambda echo, c=1",
				value:  fmt.Sprintf("p50 %s, p99 %s", us(pct(warmLat, 50)), us(pct(warmLat, 99))),
				target: "p50 <= 150 us and <= 2.5x floor", floor: "loopback HTTP " + us(pct(directLat, 50)),
				ratio: ratio(pct(warmLat, 50), pct(directLat, 50)),
				ok:    pct(warmLat, 50) <= 150*time.Microsecond || pct(warmLat, 50) <= pct(directLat, 50)*5/2},
			{name: "warm throughput, Go lambda echo, c=32",
				value: fmt.Sprintf("%.0f req/s", warmRPS), target: ">= 10,000 req/s (aim 15,000)",
				floor: fmt.Sprintf("loopback HTTP %.0f req/s; the function alone %.0f req/s (%s CPU per invocation)", directRPS, fnCeiling, us(fnAlone)),
				ratio: fmt.Sprintf("%.2f", warmRPS/min(directRPS, fnCeiling)), ok: warmRPS >= 10000},
			{name: "diagnostic: CPU the Go function's processes spend per request at c=32",
				value: us(fnCPU), target: "report", floor: "-", ratio: "-", ok: true},
			{name: "http runtime vs direct, c=1",
				value:  fmt.Sprintf("p50 %s, p99 %s", us(pct(httpLat, 50)), us(pct(httpLat, 99))),
				target: "p50 <= 2x direct", floor: "direct " + us(pct(directLat, 50)),
				ratio: ratio(pct(httpLat, 50), pct(directLat, 50)), ok: pct(httpLat, 50) <= 2*pct(directLat, 50)},
			{name: "http runtime vs direct, c=32",
				value: fmt.Sprintf("%.0f req/s", httpRPS), target: ">= 40% of direct",
				floor: fmt.Sprintf("direct %.0f req/s", directRPS), ratio: fmt.Sprintf("%.2f", httpRPS/directRPS),
				ok: httpRPS >= 0.4*directRPS},
		}
		fmt.Fprintln(out, "measuring WebAssembly...")
		wrows, err := wasmRows(ctx, o, work, c, hc, srv.URL(), func(cfg fn.Config, dir string) error {
			var buf bytes.Buffer
			if err := archive.Pack(&buf, dir); err != nil {
				return err
			}
			_, _, err := c.Deploy(ctx, cfg, &buf)
			return err
		}, pct(directLat, 50))
		if err != nil {
			return fmt.Errorf("wasm rows: %w", err)
		}
		rows = append(rows, wrows...)
		return nil
	}
	if !o.eventsOnly {
		if err := core(); err != nil {
			return err
		}
	}
	if o.coreOnly {
		printTable(out, rows, o.insecure)
		return nil
	}
	fmt.Fprintln(out, "measuring events...")
	erows, err := eventRows(ctx, o, out, srv, c, hc, func(cfg fn.Config, dir string) error {
		var buf bytes.Buffer
		if err := archive.Pack(&buf, dir); err != nil {
			return err
		}
		_, _, err := c.Deploy(ctx, cfg, &buf)
		return err
	}, bins)
	if err != nil {
		return fmt.Errorf("event rows: %w", err)
	}
	rows = append(rows, erows...)
	// Stop the in-process server (and the backlog the accept row left)
	// before the crash test runs the binary.
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_ = srv.Shutdown(sctx)
	cancel()
	if !o.noCrash {
		fmt.Fprintln(out, "crash test (10,000 in flight, kill -9, restart)...")
		crow, err := crashRow(ctx, o, work)
		if err != nil {
			return fmt.Errorf("crash row: %w", err)
		}
		rows = append(rows, crow)
	}
	printTable(out, rows, o.insecure)
	return nil
}

func printTable(out io.Writer, rows []row, insecure bool) {
	fmt.Fprintln(out)
	mode := "sandboxed"
	if insecure {
		mode = "NOT sandboxed (--insecure-no-sandbox): not comparable"
	}
	fmt.Fprintf(out, "Aloft benchmark (%s), %s\n\n", mode, time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintln(out, "| row | measured | target | floor (same run) | ratio to floor | ok |")
	fmt.Fprintln(out, "| --- | --- | --- | --- | --- | --- |")
	for _, r := range rows {
		ok := "yes"
		if !r.ok {
			ok = "NO"
		}
		fmt.Fprintf(out, "| %s | %s | %s | %s | %s | %s |\n", r.name, r.value, r.target, r.floor, r.ratio, ok)
	}
}

// startDirect runs the http echo server as a plain host process: the
// direct baseline.
func startDirect(dir string) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	cmd := exec.Command(filepath.Join(dir, "bootstrap"))
	cmd.Env = []string{"PORT=" + port}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	url := "http://127.0.0.1:" + port + "/"
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
			c.Close()
			return url, stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, errors.New("direct http server did not listen")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func call(hc *http.Client, method, url string, body []byte) error {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Aloft-Function-Error") != "" {
		return fmt.Errorf("%s %s: status %d", method, url, resp.StatusCode)
	}
	return nil
}

// functionStart is the floor of a Go lambda's cold start that belongs to
// the function: the median time from exec of its bootstrap, outside any
// sandbox, to its first GET /next arriving on a plain listener (the Go
// runtime's and aws-lambda-go's start-up, and a connect).
func functionStart(bootstrap string, n int) (time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	var d []time.Duration
	for range n {
		cmd := aloneCmd(bootstrap, ln)
		start := time.Now()
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		c, err := ln.Accept()
		if err == nil {
			_, err = bufio.NewReader(c).ReadString('\n')
			d = append(d, time.Since(start))
			c.Close()
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if err != nil {
			return 0, fmt.Errorf("the function's own start: %w", err)
		}
	}
	return median(d), nil
}

// aloneCmd runs a Lambda bootstrap outside any sandbox against a Runtime
// API on ln, with the GOMAXPROCS an instance of 128 MB gets.
func aloneCmd(bootstrap string, ln net.Listener) *exec.Cmd {
	cmd := exec.Command(bootstrap)
	cmd.Env = []string{"AWS_LAMBDA_RUNTIME_API=" + ln.Addr().String(), "GOMAXPROCS=1", "_HANDLER=bootstrap"}
	return cmd
}

// functionAlone is the CPU the Go function's process spends per
// invocation when nothing else runs: outside any sandbox, served one
// invocation after another by a minimal Runtime API on one connection.
func functionAlone(bootstrap string, n int) (time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	cmd := aloneCmd(bootstrap, ln)
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	c, err := ln.Accept()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	br, bw := bufio.NewReader(c), bufio.NewWriter(c)
	next := func() error { // read one request, drain its body
		req, err := http.ReadRequest(br)
		if err != nil {
			return fmt.Errorf("the function alone: %w", err)
		}
		_, err = io.Copy(io.Discard, req.Body)
		return err
	}
	var cpu0 time.Duration
	const event = `{"hello":"world"}`
	for i := 0; i <= n; i++ {
		if i == 1 { // after the first, which pays the function's warm-up
			cpu0 = processCPU(cmd.Process.Pid)
		}
		if err := next(); err != nil { // GET /next
			return 0, err
		}
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: req-%d\r\n"+
			"Lambda-Runtime-Deadline-Ms: %d\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:000000000000:function:echo\r\n"+
			"Content-Length: %d\r\n\r\n%s", i, time.Now().Add(time.Minute).UnixMilli(), len(event), event)
		if err := bw.Flush(); err != nil {
			return 0, err
		}
		if err := next(); err != nil { // POST .../response
			return 0, err
		}
		bw.WriteString("HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
		if err := bw.Flush(); err != nil {
			return 0, err
		}
	}
	return (processCPU(cmd.Process.Pid) - cpu0) / time.Duration(n), nil
}

func repeat(n int, f func() error) []time.Duration {
	var d []time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		if f() == nil {
			d = append(d, time.Since(start))
		}
	}
	return d
}

func latencies(n int, f func() error) []time.Duration {
	for i := 0; i < n/10; i++ { // warm up connections and caches
		_ = f()
	}
	return repeat(n, f)
}

// warmThroughput is throughput after one second at the same concurrency,
// so that what it measures is warm: the function's pool has scaled up to
// c, and its instances and connections have served requests.
func warmThroughput(c int, d time.Duration, f func() error) float64 {
	throughput(c, time.Second, f)
	return throughput(c, d, f)
}

// throughput runs f from c goroutines for d and returns successes per second.
func throughput(c int, d time.Duration, f func() error) float64 {
	var ok atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < c; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if f() == nil {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(ok.Load()) / time.Since(start).Seconds()
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i < 1 {
		i = 1
	}
	if i > len(s) {
		i = len(s)
	}
	return s[i-1]
}

func median(d []time.Duration) time.Duration { return pct(d, 50) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
func us(d time.Duration) string { return fmt.Sprintf("%d us", d.Microseconds()) }

func ratio(a, b time.Duration) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", float64(a)/float64(b))
}

// functionCPU sums the user and system CPU time of every process named
// bootstrap (the functions' executables), from /proc.
func functionCPU() time.Duration {
	var total int64
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil || !bytes.Contains(b, []byte("(bootstrap)")) {
			continue
		}
		total += statCPU(b)
	}
	return time.Duration(total) * 10 * time.Millisecond
}

// processCPU is the user and system CPU time of one process so far.
func processCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	return time.Duration(statCPU(b)) * 10 * time.Millisecond
}

// statCPU reads utime + stime, in clock ticks (USER_HZ, 100 on Linux),
// from a /proc/PID/stat line.
func statCPU(b []byte) int64 {
	f := bytes.Fields(b[bytes.LastIndexByte(b, ')')+2:])
	u, _ := strconv.ParseInt(string(f[11]), 10, 64)
	st, _ := strconv.ParseInt(string(f[12]), 10, 64)
	return u + st
}

// benchLogger discards the server's log unless BENCH_LOG=debug asks for it
// on stderr (to see where a cold start spends its time).
func benchLogger() *slog.Logger {
	if os.Getenv("BENCH_LOG") == "debug" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

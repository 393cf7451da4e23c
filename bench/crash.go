package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"aloft/internal/archive"
	"aloft/internal/client"
	"aloft/internal/fn"
	"aloft/internal/testnet"
)

// crashRow runs the real binary, accepts 5,000 async events and 5,000 queue
// messages for a function that reports each execution to this process,
// kills the server with SIGKILL while they run, restarts it on the same
// data, and counts what was lost and what ran twice.
func crashRow(ctx context.Context, o options, work string) (row, error) {
	const events, messages = 5000, 5000
	bin := filepath.Join(work, "aloft")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/aloft").CombinedOutput(); err != nil {
		return row{}, fmt.Errorf("build aloft: %v: %s", err, out)
	}
	data := filepath.Join(work, "crash-data")
	if err := os.Mkdir(data, 0o711); err != nil {
		return row{}, err
	}
	col, err := startCollector(o.insecure)
	if err != nil {
		return row{}, err
	}
	defer col.close()

	srv, err := startBinary(ctx, bin, data, o.insecure)
	if err != nil {
		return row{}, err
	}
	defer func() { srv.kill() }()
	c := client.New(srv.url, srv.token)
	if _, _, err := c.CreateQueue(ctx, "crashq"); err != nil {
		return row{}, err
	}
	var pkg bytes.Buffer
	if err := archive.Pack(&pkg, filepath.Join("e2e", "testdata", "collector")); err != nil {
		return row{}, err
	}
	cfg := fn.Config{Name: "crash", Runtime: fn.RuntimeLambda, Network: true, Timeout: fn.Duration(10 * time.Second),
		Env: map[string]string{"COLLECT_URL": col.url}, Scale: fn.Scale{Max: 8, Idle: fn.Duration(10 * time.Minute)},
		Events: []fn.Event{{Queue: "crashq", BatchSize: 10, Concurrency: 4}}}
	if _, _, err := c.Deploy(ctx, cfg, &pkg); err != nil {
		return row{}, err
	}

	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}}
	invokeURL := srv.url + "/v1/functions/crash/invoke"
	var n int64
	var mu sync.Mutex
	accept := func() error {
		mu.Lock()
		n++
		id := n
		mu.Unlock()
		req, _ := http.NewRequest("POST", invokeURL, strings.NewReader(fmt.Sprintf(`{"id":"e%d"}`, id)))
		req.Header.Set("X-Aloft-Invocation-Type", "Event")
		req.Header.Set("Authorization", "Bearer "+srv.token)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("async invoke: status %d", resp.StatusCode)
		}
		return nil
	}
	var wg sync.WaitGroup
	var acceptErr, sendErr error
	wg.Go(func() { acceptErr = fanOut(64, events, accept) })
	wg.Go(func() {
		for i := 0; i < messages && sendErr == nil; i += 500 {
			var msgs []client.Message
			for j := i; j < i+500; j++ {
				msgs = append(msgs, client.Message{Body: fmt.Sprintf("q%d", j)})
			}
			_, sendErr = c.Send(ctx, "crashq", msgs)
		}
	})
	wg.Wait()
	if err := errors.Join(acceptErr, sendErr); err != nil {
		return row{}, err
	}
	// Kill it while most of the work is still queued or running.
	deadline := time.Now().Add(2 * time.Minute)
	for col.total() < 1000 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	atKill := col.total()
	srv.kill()

	srv, err = startBinary(ctx, bin, data, o.insecure)
	if err != nil {
		return row{}, err
	}
	want := make([]string, 0, events+messages)
	for i := 1; i <= events; i++ {
		want = append(want, fmt.Sprintf("event e%d", i))
	}
	for i := range messages {
		want = append(want, fmt.Sprintf("sqs q%d", i))
	}
	deadline = time.Now().Add(5 * time.Minute)
	lost := len(want)
	for time.Now().Before(deadline) {
		if lost = col.missing(want); lost == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	dups := col.total() - (len(want) - lost)
	srv.stop()
	return row{name: fmt.Sprintf("crash test: %d accepted, kill -9 after %d executions, restart", len(want), atKill),
		value: fmt.Sprintf("%d lost, %d duplicate executions", lost, dups), target: "0 lost; duplicates reported",
		floor: "-", ratio: "-", ok: lost == 0}, nil
}

// collectorServer counts the executions the collector function reports.
type collectorServer struct {
	mu   sync.Mutex
	seen map[string]int
	n    int
	url  string
	srv  *http.Server

	outside *testnet.Network // nil when insecure
}

// startCollector listens on the loopback for insecure runs; sandboxed
// functions cannot reach the host, so then it listens in an outside
// network, where their egress links lead.
func startCollector(insecure bool) (*collectorServer, error) {
	var outside *testnet.Network
	var ln net.Listener
	var err error
	if insecure {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	} else if outside, err = testnet.New(); err == nil {
		if ln, err = outside.Listen(0); err != nil {
			_ = outside.Close()
		}
	}
	if err != nil {
		return nil, err
	}
	c := &collectorServer{seen: map[string]int{}, url: "http://" + ln.Addr().String() + "/", outside: outside}
	c.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.seen[string(b)]++
		c.n++
		c.mu.Unlock()
	})}
	go func() { _ = c.srv.Serve(ln) }()
	return c, nil
}

func (c *collectorServer) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *collectorServer) missing(want []string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, w := range want {
		if c.seen[w] == 0 {
			n++
		}
	}
	return n
}

func (c *collectorServer) close() {
	_ = c.srv.Close()
	if c.outside != nil {
		_ = c.outside.Close()
	}
}

// binary is an `aloft serve` process.
type binary struct {
	cmd   *exec.Cmd
	url   string
	token string
	done  chan struct{}
}

func startBinary(ctx context.Context, bin, data string, insecure bool) (*binary, error) {
	b := &binary{token: "bench-token", done: make(chan struct{})}
	args := []string{"serve", "--addr", "127.0.0.1:0", "--data", data, "--token", b.token, "--retry-base", "200ms", "--log-level", "warn"}
	if insecure {
		args = append(args, "--insecure-no-sandbox")
	}
	b.cmd = exec.CommandContext(ctx, bin, args...)
	stdout, err := b.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	b.cmd.Stderr = &stderr
	if err := b.cmd.Start(); err != nil {
		return nil, err
	}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "aloft listening on "); ok {
				urls <- u
			}
		}
	}()
	go func() { _ = b.cmd.Wait(); close(b.done) }()
	select {
	case b.url = <-urls:
		return b, nil
	case <-b.done:
		return nil, fmt.Errorf("aloft exited at start: %s", stderr.String())
	case <-time.After(60 * time.Second):
		b.kill()
		return nil, errors.New("aloft did not start in 60 s")
	}
}

func (b *binary) kill() {
	_ = b.cmd.Process.Kill()
	<-b.done
}

func (b *binary) stop() {
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(40 * time.Second):
		b.kill()
	}
}

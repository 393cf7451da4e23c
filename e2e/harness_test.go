package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"aloft/internal/sandbox"
)

var (
	aloftBin string
	// sandboxed is false when this machine cannot sandbox: the server then
	// runs with --insecure-no-sandbox and isolation tests skip.
	sandboxed  bool
	sandboxWhy string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "aloft-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	aloftBin = filepath.Join(dir, "aloft")
	build := exec.Command("go", "build", "-o", aloftBin, "../cmd/aloft")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build aloft:", err)
		os.Exit(1)
	}
	if err := sandbox.Supported(); err != nil {
		sandboxWhy = err.Error()
	} else {
		sandboxed = true
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is a running aloft binary.
type server struct {
	t     *testing.T
	cmd   *exec.Cmd
	url   string
	token string
	data  string
	logs  *syncBuffer
	done  chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServer runs `aloft serve` on a free loopback port with data in dir.
func startServer(t *testing.T, data string, extra ...string) *server {
	t.Helper()
	s := &server{t: t, token: "test-token-123", data: data, logs: &syncBuffer{}, done: make(chan struct{})}
	args := []string{"serve", "--addr", "127.0.0.1:0", "--data", data, "--token", s.token, "--prewarm", "1"}
	args = append(args, extra...)
	if !sandboxed {
		args = append(args, "--insecure-no-sandbox")
	}
	s.cmd = exec.Command(aloftBin, args...)
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stderr = s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if u, ok := strings.CutPrefix(line, "aloft listening on "); ok {
				urls <- u
			}
		}
	}()
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	select {
	case s.url = <-urls:
	case <-s.done:
		t.Fatalf("server exited at start:\n%s", s.logs)
	case <-time.After(60 * time.Second):
		s.kill()
		t.Fatalf("server did not start in 60s:\n%s", s.logs)
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("server log:\n%s", tail(s.logs.String(), 8000))
		}
	})
	return s
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// stop sends SIGTERM and waits for a clean exit.
func (s *server) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(40 * time.Second):
		s.kill()
		s.t.Errorf("server did not stop within 40s of SIGTERM")
	}
}

func (s *server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// cli runs an aloft client verb against s and returns stdout, stderr.
func (s *server) cli(args ...string) (string, string, error) {
	return s.cliIn(nil, args...)
}

func (s *server) cliIn(stdin io.Reader, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, aloftBin, args...)
	cmd.Env = append(os.Environ(), "ALOFT_URL="+s.url, "ALOFT_TOKEN="+s.token)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Stdin = &out, &errb, stdin
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// mustCLI runs a verb that must succeed.
func (s *server) mustCLI(args ...string) string {
	s.t.Helper()
	out, errOut, err := s.cli(args...)
	if err != nil {
		s.t.Fatalf("aloft %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// do sends an HTTP request to the server; auth adds the token.
func (s *server) do(method, path string, body io.Reader, auth bool, hdr ...string) (*http.Response, []byte) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.url+path, body)
	if err != nil {
		s.t.Fatal(err)
	}
	if auth {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return resp, b
}

// invoke calls the invoke API and returns the response and body.
func (s *server) invoke(name string, payload any, query string) (*http.Response, []byte) {
	s.t.Helper()
	b, err := json.Marshal(payload)
	if err != nil {
		s.t.Fatal(err)
	}
	return s.do("POST", "/v1/functions/"+name+"/invoke"+query, bytes.NewReader(b), true)
}

// stats returns the instance stats of a function's $LATEST.
func (s *server) stats(name string) map[string]any {
	s.t.Helper()
	return s.versionStats(name, "$LATEST")
}

// versionStats is the instance stats of one version of a function on
// s, nil when it has no pool.
func (s *server) versionStats(name, version string) map[string]any {
	s.t.Helper()
	resp, b := s.do("GET", "/v1/functions/"+name+"/instances", nil, true)
	if resp.StatusCode != 200 {
		s.t.Fatalf("instances: %d %s", resp.StatusCode, b)
	}
	var out struct {
		Versions map[string]map[string]any `json:"versions"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		s.t.Fatal(err)
	}
	st := out.Versions[version]
	if _, ok := st["instances"]; st != nil && !ok {
		s.t.Fatalf("instances: no \"instances\" count in %s", b)
	}
	return st
}

func num(m map[string]any, k string) int {
	f, _ := m[k].(float64)
	return int(f)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeManifest writes an aloft.yaml into dir.
func writeManifest(t *testing.T, dir, yaml string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "aloft.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
}

func abs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// dataDir makes a data directory whose parents the sandbox's unprivileged
// uid can traverse (t.TempDir's parent is private).
func dataDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "aloft-e2e-data-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

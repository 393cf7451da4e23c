package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"aloft/internal/archive"
	"aloft/internal/client"
	"aloft/internal/fn"
	"aloft/internal/sandbox"
)

func TestMain(m *testing.M) {
	if code, ok := sandbox.MaybeRunInit(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func TestConfigValidate(t *testing.T) {
	err := (&Config{NoAuth: true, Addr: "0.0.0.0:8080", Prewarm: 100}).Validate()
	for _, want := range []string{"data dir is required", "only allowed on a loopback address", "prewarm 100"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
	if err := (&Config{DataDir: "x", Token: "t"}).Validate(); err != nil {
		t.Errorf("a minimal config: %v", err)
	}
}

func TestLoadOrCreateToken(t *testing.T) {
	dir := t.TempDir()
	tok, created, err := LoadOrCreateToken(dir)
	if err != nil || !created || !strings.HasPrefix(tok, "aloft_") {
		t.Fatalf("first call: %q %v %v", tok, created, err)
	}
	st, err := os.Stat(filepath.Join(dir, "token"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", st, err)
	}
	again, created, err := LoadOrCreateToken(dir)
	if err != nil || created || again != tok {
		t.Fatalf("second call: %q %v %v, want the same token", again, created, err)
	}
}

// TestServerInProcess runs a whole server in this process, so the race
// detector sees the invoker, pools, gateway and API under concurrent use.
func TestServerInProcess(t *testing.T) {
	insecure := sandbox.Supported() != nil
	data, err := os.MkdirTemp("", "aloft-server-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(data) })
	srv, err := New(Config{Addr: "127.0.0.1:0", DataDir: data, Token: "tok", Insecure: insecure, Prewarm: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	if err := srv.Ready(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	code := t.TempDir()
	if err := os.WriteFile(filepath.Join(code, "index.js"), []byte(
		"exports.handler = async (e) => { console.log('got', e.n); return {n: e.n}; };\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var pkg bytes.Buffer
	if err := archive.Pack(&pkg, code); err != nil {
		t.Fatal(err)
	}
	c := client.New(srv.URL(), "tok")
	cfg := fn.Config{Name: "echo", Runtime: fn.RuntimeNode, Scale: fn.Scale{Max: 3}}
	if _, created, err := c.Deploy(ctx, cfg, &pkg); err != nil || !created {
		t.Fatalf("deploy: created=%v %v", created, err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 12)
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := c.Invoke(ctx, "echo", []byte(fmt.Sprintf(`{"n":%d}`, i)), client.InvokeOptions{LogTail: true})
			switch {
			case err != nil:
				errs <- err
			case res.FunctionError != "" || string(res.Payload) != fmt.Sprintf(`{"n":%d}`, i):
				errs <- fmt.Errorf("invoke %d: %q %s", i, res.FunctionError, res.Payload)
			case !strings.Contains(res.LogTail, fmt.Sprintf("got %d", i)):
				errs <- fmt.Errorf("invoke %d: log tail %q lacks its own line", i, res.LogTail)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// A config change drains the old instances while requests go on.
	cfg.Env = map[string]string{"STAGE": "2"}
	if _, err := c.UpdateConfig(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Invoke(ctx, "echo", []byte(`{"n":99}`), client.InvokeOptions{}); err != nil {
		t.Fatal(err)
	}
	var apiErr *client.APIError
	if _, err := c.Invoke(ctx, "missing", nil, client.InvokeOptions{}); !errors.As(err, &apiErr) || apiErr.Status != 404 {
		t.Fatalf("invoke of a missing function: %v, want a 404", err)
	}
}

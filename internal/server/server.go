// Package server is the embeddable Aloft server: New validates a Config,
// Start brings up the store (embedded NATS JetStream or an external one),
// the sandbox executor, the invoker, the gateway and the API on one HTTP
// listener without blocking, and Shutdown stops everything it started and
// waits for it. cmd/aloft is a thin shell around it, and tests start real
// servers in-process the same way.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"aloft/internal/api"
	"aloft/internal/archive"
	"aloft/internal/events"
	"aloft/internal/gateway"
	"aloft/internal/invoke"
	"aloft/internal/sandbox"
	"aloft/internal/store"
)

// Config is the whole configuration of one server.
type Config struct {
	// Addr is the HTTP listen address (default 127.0.0.1:8080; port 0 picks one).
	Addr string
	// DataDir holds all state (required).
	DataDir string
	// NATSURL points at an external NATS cluster; empty embeds one.
	NATSURL string
	// NATSListen makes the embedded NATS accept clients (producers for
	// subject triggers) on this host:port, authenticated with the API
	// token (required unless the address is loopback).
	NATSListen string
	// Token is the API bearer token; empty turns auth off (only allowed
	// when NoAuth is set, for `aloft dev` on loopback).
	Token  string
	NoAuth bool
	// Insecure runs instances without a sandbox (--insecure-no-sandbox).
	Insecure bool
	// Prewarm is how many empty sandboxes to keep ready (default 2).
	Prewarm int
	// EgressSubnet numbers the egress links of functions with network
	// access (zero: sandbox.DefaultEgressSubnet).
	EgressSubnet netip.Prefix
	// MaxPayload bounds synchronous payloads (default 6 MB).
	MaxPayload int64
	// QueueWait bounds how long a request waits for an instance.
	QueueWait time.Duration
	// MaxAsyncPayload bounds an async invocation's payload (default 1 MiB).
	MaxAsyncPayload int64
	// RetryBase is the first backoff of a failed async event or queue
	// message (default 10s).
	RetryBase time.Duration
	// CatchUp is how old a schedule tick missed while down may be and
	// still fire at start (default 1h).
	CatchUp time.Duration
	Logger  *slog.Logger
}

// Validate reports every problem with c, joined.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is required (--data DIR)"))
	}
	if c.Token == "" && !c.NoAuth {
		errs = append(errs, errors.New("an API token is required (--token or ALOFT_TOKEN)"))
	}
	if c.NoAuth && c.Addr != "" {
		host, _, err := net.SplitHostPort(c.Addr)
		ip := net.ParseIP(host)
		if err != nil || !(host == "localhost" || (ip != nil && ip.IsLoopback())) {
			errs = append(errs, fmt.Errorf("running without a token is only allowed on a loopback address, not %q", c.Addr))
		}
	}
	if c.NATSListen != "" && c.NATSURL != "" {
		errs = append(errs, errors.New("--nats-listen applies to the embedded NATS: with --nats, producers connect to that cluster"))
	}
	if c.NATSListen != "" && c.Token == "" {
		host, _, err := net.SplitHostPort(c.NATSListen)
		ip := net.ParseIP(host)
		if err != nil || !(host == "localhost" || (ip != nil && ip.IsLoopback())) {
			errs = append(errs, fmt.Errorf("a NATS listener without a token is only allowed on a loopback address, not %q", c.NATSListen))
		}
	}
	if c.EgressSubnet.IsValid() {
		if err := sandbox.CheckEgressSubnet(c.EgressSubnet); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Prewarm < 0 || c.Prewarm > 64 {
		errs = append(errs, fmt.Errorf("prewarm %d is out of range: use 0-64", c.Prewarm))
	}
	if c.MaxPayload < 0 || c.MaxAsyncPayload < 0 {
		errs = append(errs, errors.New("payload limits must not be negative"))
	}
	if c.RetryBase < 0 {
		errs = append(errs, errors.New("retry base must not be negative"))
	}
	return errors.Join(errs...)
}

// Server is one Aloft node.
type Server struct {
	cfg  Config
	log  *slog.Logger
	ln   net.Listener
	http *http.Server

	store    *store.Store
	executor *sandbox.Executor
	invoker  *invoke.Invoker
	gateway  *gateway.Gateway
	events   *events.Events

	cancel context.CancelFunc
	group  *errgroup.Group
	nodeID string
}

// New validates cfg and returns a server that is not started.
func New(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8080"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, log: cfg.Logger}, nil
}

// Start brings every component up and starts serving; it does not block.
// On error everything started so far is stopped.
func (s *Server) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			if s.cancel != nil {
				_ = s.http.Close()
				s.cancel()
				_ = s.group.Wait()
			}
			s.stopComponents()
		}
	}()
	dir := s.cfg.DataDir
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	// Traversable but not listable: sandboxes bind-mount code from below it.
	if err := os.Chmod(dir, 0o711); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if s.nodeID, err = nodeID(dir); err != nil {
		return err
	}
	if s.cfg.Insecure {
		s.log.Warn("RUNNING WITHOUT A SANDBOX: functions run as host processes with the server's privileges (--insecure-no-sandbox); never do this with code you do not trust")
	}
	s.executor, err = sandbox.New(sandbox.Config{
		StateDir:     filepath.Join(dir, "sandbox"),
		Logger:       s.log.With("component", "sandbox"),
		Insecure:     s.cfg.Insecure,
		Prewarm:      s.cfg.Prewarm,
		EgressSubnet: s.cfg.EgressSubnet,
	})
	if err != nil {
		return fmt.Errorf("sandbox: %w (run as root, or pass --insecure-no-sandbox to run functions unsandboxed)", err)
	}
	s.store, err = store.Open(ctx, store.Config{
		DataDir: dir, NATSURL: s.cfg.NATSURL, NodeID: s.nodeID,
		Logger: s.log.With("component", "store"), Listen: s.cfg.NATSListen, ListenToken: natsToken(s.cfg.Token),
	})
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	s.invoker, err = invoke.New(invoke.Config{
		Store: s.store, Executor: s.executor, DataDir: dir,
		Logger:    s.log.With("component", "invoke"),
		QueueWait: s.cfg.QueueWait, MaxResponse: 6<<20 + 100,
	})
	if err != nil {
		return err
	}
	s.events, err = events.New(ctx, events.Config{Store: s.store, Invoker: s.invoker,
		Logger: s.log.With("component", "events"), NodeID: s.nodeID, RetryBase: s.cfg.RetryBase,
		CatchUp: s.cfg.CatchUp, MaxAsyncPayload: s.cfg.MaxAsyncPayload})
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	s.gateway = gateway.New(gateway.Config{Invoker: s.invoker, Store: s.store,
		Logger: s.log.With("component", "gateway"), MaxBody: s.cfg.MaxPayload})
	if err := s.gateway.Reload(ctx); err != nil {
		return err
	}
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	a := api.New(api.Config{Store: s.store, Invoker: s.invoker, Gateway: s.gateway, Events: s.events,
		MaxAsyncPayload: s.cfg.MaxAsyncPayload,
		Logger:          s.log.With("component", "api"), Token: s.cfg.Token,
		Archive: archive.DefaultLimits(), MaxPayload: s.cfg.MaxPayload, TempDir: tmp})

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	a.Register(mux)
	mux.HandleFunc("/fn/{name}", s.gateway.ServeFunction)
	mux.HandleFunc("/fn/{name}/{rest...}", s.gateway.ServeFunction)
	mux.Handle("/", s.gateway)

	s.ln, err = net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}

	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	g, gctx := errgroup.WithContext(runCtx)
	s.group = g
	g.Go(func() error { return s.executor.Run(gctx) })
	g.Go(func() error { return s.invoker.Run(gctx) })
	g.Go(func() error { return s.gateway.Run(gctx) })
	g.Go(func() error { return s.events.Run(gctx) })
	g.Go(func() error { s.collectCode(gctx); return nil })
	g.Go(func() error {
		if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	select {
	case <-s.invoker.Ready():
	case <-gctx.Done():
		return fmt.Errorf("start: %w", errors.Join(context.Cause(gctx), g.Wait()))
	case <-ctx.Done():
		return ctx.Err()
	}
	s.log.Info("aloft serving", "addr", s.ln.Addr().String(), "data", dir, "node", s.nodeID,
		"nats", natsMode(s.cfg.NATSURL))
	if u := s.store.ListenURL(); u != "" {
		s.log.Info("embedded nats accepting clients (token: the API token)", "url", u)
	}
	return nil
}

// Code packages no function or version names any more are deleted every
// codeCollectEvery, once codeGrace old (a deploy stores its package a
// moment before the function that names it).
const (
	codeCollectEvery = time.Hour
	codeGrace        = time.Hour
)

// collectCode deletes unused code packages until ctx ends. Every node runs
// it; the deletes are idempotent.
func (s *Server) collectCode(ctx context.Context) {
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, used, err := s.store.CollectCode(ctx, codeGrace)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("collect unused code packages", "error", err)
		case n > 0:
			s.log.Info("unused code packages deleted", "count", n)
		}
		if used != nil {
			if n := s.invoker.CollectCode(used, codeGrace); n > 0 {
				s.log.Info("unused extracted code deleted", "count", n)
			}
		}
		t.Reset(codeCollectEvery)
	}
}

// natsToken is what clients of the embedded NATS listener present: the API
// token, or a fixed one in dev mode (loopback only, no token).
func natsToken(apiToken string) string {
	if apiToken == "" {
		return "aloft-dev"
	}
	return apiToken
}

func natsMode(url string) string {
	if url == "" {
		return "embedded"
	}
	return "external"
}

// Events is the server's event subsystem (async invocations, schedules,
// queues), for in-process callers such as the benchmark.
func (s *Server) Events() *events.Events { return s.events }

// NATSListenURL is where outside NATS clients reach the embedded server,
// or "" when it does not listen (--nats-listen).
func (s *Server) NATSListenURL() string { return s.store.ListenURL() }

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the server's base URL.
func (s *Server) URL() string { return "http://" + s.Addr() }

// Ready waits until /healthz answers, or timeout.
func (s *Server) Ready(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(s.URL() + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server not ready after %s", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Wait blocks until a component fails or Shutdown is called, and returns
// the first failure.
func (s *Server) Wait() error { return s.group.Wait() }

// Shutdown stops accepting requests, lets in-flight ones finish (bounded by
// ctx), stops every instance and closes the store.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	if s.http != nil {
		if err := s.http.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.cancel != nil {
		s.cancel()
		if err := s.group.Wait(); err != nil {
			errs = append(errs, err)
		}
	}
	s.stopComponents()
	return errors.Join(errs...)
}

func (s *Server) stopComponents() {
	if s.executor != nil {
		_ = s.executor.Close()
		s.executor = nil
	}
	if s.store != nil {
		_ = s.store.FlushLogs(context.Background())
		_ = s.store.Close()
		s.store = nil
	}
	if s.ln != nil && s.http == nil {
		_ = s.ln.Close()
	}
}

// nodeID returns this data dir's node id, creating it once.
func nodeID(dir string) (string, error) {
	path := filepath.Join(dir, "node-id")
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	id := "node-" + hex.EncodeToString(b[:])
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("node id: %w", err)
	}
	return id, nil
}

// LoadOrCreateToken returns the API token stored in dir, generating one
// (mode 0600) when there is none. created says whether it is new.
func LoadOrCreateToken(dir string) (token string, created bool, err error) {
	path := filepath.Join(dir, "token")
	if b, err := os.ReadFile(path); err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, false, nil
		}
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return "", false, fmt.Errorf("token: %w", err)
	}
	var b [24]byte
	_, _ = rand.Read(b[:])
	token = "aloft_" + hex.EncodeToString(b[:])
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("token: %w", err)
	}
	return token, true, nil
}

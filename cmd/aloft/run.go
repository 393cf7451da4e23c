package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"aloft/internal/cli"
	"aloft/internal/client"
	"aloft/internal/manifest"
	"aloft/internal/sandbox"
	"aloft/internal/server"
)

const usage = `aloft — a self-hosted serverless platform

Server:
  aloft serve [--addr HOST:PORT] [--data DIR] [--token T] [--nats URL] [--insecure-no-sandbox]
              [--nats-listen HOST:PORT] [--retry-base 10s] [--catch-up 1h] [--max-async-payload BYTES]
              [--egress-subnet 10.213.0.0/16]
  aloft dev [DIR]        run a local server without a token and deploy DIR/aloft.yaml (default ./examples)

Client (talks to the API at --url / ALOFT_URL with --token / ALOFT_TOKEN):
  aloft deploy [DIR|FILE]       deploy the functions of an aloft.yaml
  aloft invoke NAME [PAYLOAD]   invoke a function and print its result
  aloft ls | get NAME | rm NAME
  aloft logs NAME [-f] [--since 10m]
  aloft publish NAME            freeze $LATEST as a numbered version
  aloft alias set|ls|rm ...
  aloft invoke --async NAME [PAYLOAD]   accept an async invocation (retried, dead-lettered)
  aloft invocations NAME        recent event invocations and their status
  aloft dlq ls|redrive NAME     dead letters of a function; send them again
  aloft queue create|ls|rm|send ...
  aloft schedules [NAME]        schedules and their next fire times
  aloft triggers ls             every declared event

Run "aloft VERB -h" for a verb's flags.
`

func exitCode(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "dev":
		return dev(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "aloft", version)
		return nil
	}
	if cli.IsClientVerb(args[0]) || strings.HasPrefix(args[0], "-") {
		return cli.Run(ctx, args, stdin, stdout, stderr)
	}
	return fmt.Errorf("unknown command %q: run \"aloft help\" for the list", args[0])
}

var version = "dev"

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", envOr("ALOFT_ADDR", "127.0.0.1:8080"), "HTTP listen address")
	data := fs.String("data", envOr("ALOFT_DATA", defaultDataDir()), "data directory (all state)")
	token := fs.String("token", os.Getenv("ALOFT_TOKEN"), "API bearer token (default: generated into DIR/token)")
	natsURL := fs.String("nats", os.Getenv("ALOFT_NATS"), "external NATS URL (default: embedded)")
	natsListen := fs.String("nats-listen", "", "let NATS clients (producers for subject triggers) reach the embedded NATS at `HOST:PORT`, with the API token")
	insecure := fs.Bool("insecure-no-sandbox", false, "run functions as plain host processes (DANGEROUS)")
	prewarm := fs.Int("prewarm", 2, "empty sandboxes kept ready")
	egress := egressFlag(fs)
	maxPayload := fs.Int64("max-payload", 6<<20, "synchronous payload limit in bytes")
	maxAsync := fs.Int64("max-async-payload", 1<<20, "async payload limit in bytes")
	retryBase := fs.Duration("retry-base", 10*time.Second, "first backoff of a failed async event or queue message (doubles each attempt, up to 5m)")
	catchUp := fs.Duration("catch-up", time.Hour, "a schedule tick missed while down fires once at start when no older than this")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve takes no arguments, got %q", fs.Args())
	}
	log, err := newLogger(stderr, *logLevel, true)
	if err != nil {
		return err
	}
	if *token == "" {
		t, created, err := server.LoadOrCreateToken(*data)
		if err != nil {
			return err
		}
		*token = t
		if created {
			fmt.Fprintf(stdout, "API token (saved in %s, shown once): %s\n", filepath.Join(*data, "token"), t)
		}
	}
	srv, err := server.New(server.Config{Addr: *addr, DataDir: *data, NATSURL: *natsURL, NATSListen: *natsListen, Token: *token,
		Insecure: *insecure, Prewarm: *prewarm, EgressSubnet: *egress, MaxPayload: *maxPayload, MaxAsyncPayload: *maxAsync,
		RetryBase: *retryBase, CatchUp: *catchUp, Logger: log})
	if err != nil {
		return err
	}
	return runServer(ctx, srv, func() {
		fmt.Fprintf(stdout, "aloft listening on %s\n", srv.URL())
		if u := srv.NATSListenURL(); u != "" {
			fmt.Fprintf(stdout, "nats listening on %s\n", u)
		}
	})
}

// runServer starts srv, calls started, and serves until ctx ends or a
// component fails.
// egressFlag defines --egress-subnet on fs.
func egressFlag(fs *flag.FlagSet) *netip.Prefix {
	p := sandbox.DefaultEgressSubnet
	fs.Func("egress-subnet", "IPv4 `PREFIX` the egress links of functions with network: true are numbered from, a /30 each (default "+p.String()+")", func(s string) error {
		v, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("want an IPv4 prefix such as %s", sandbox.DefaultEgressSubnet)
		}
		p = v
		return nil
	})
	return &p
}

func runServer(ctx context.Context, srv *server.Server, started func()) error {
	if err := srv.Start(ctx); err != nil {
		return err
	}
	started()
	failed := make(chan error, 1)
	go func() { failed <- srv.Wait() }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-failed:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return errors.Join(err, srv.Shutdown(sctx))
}

func dev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "HTTP listen address (loopback only: dev has no token)")
	data := fs.String("data", filepath.Join(os.TempDir(), "aloft-dev"), "data directory")
	insecure := fs.Bool("insecure-no-sandbox", false, "run functions as plain host processes (DANGEROUS)")
	egress := egressFlag(fs)
	if err := fs.Parse(reorder(args)); err != nil {
		return err
	}
	dir := "examples"
	if fs.NArg() > 1 {
		return fmt.Errorf("dev takes one directory, got %q", fs.Args())
	}
	if fs.NArg() == 1 {
		dir = fs.Arg(0)
	}
	m, err := manifest.Load(dir)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, "info", false)
	if err != nil {
		return err
	}
	srv, err := server.New(server.Config{Addr: *addr, DataDir: *data, NoAuth: true,
		Insecure: *insecure, Prewarm: 2, EgressSubnet: *egress, Logger: log})
	if err != nil {
		return err
	}
	return runServer(ctx, srv, func() {
		fmt.Fprintf(stdout, "aloft dev server on %s (data in %s, no token)\n", srv.URL(), *data)
		c := client.New(srv.URL(), "")
		if err := cli.Deploy(ctx, c, m, srv.URL(), stdout); err != nil {
			fmt.Fprintf(stderr, "deploy %s: %v\n", dir, err)
			return
		}
		fmt.Fprintf(stdout, "ready: try  curl %s/fn/%s/\n", srv.URL(), m.Functions[0].Name)
	})
}

// reorder moves flags before positional arguments so both orders work.
func reorder(args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") && a != "-" {
			flags = append(flags, a)
			if !strings.Contains(a, "=") && i+1 < len(args) && a != "--insecure-no-sandbox" && a != "-insecure-no-sandbox" {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		pos = append(pos, a)
	}
	return append(flags, pos...)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func newLogger(w io.Writer, level string, asJSON bool) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	if asJSON {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// defaultDataDir is /var/lib/aloft for root and ./aloft-data otherwise.
// Sandboxed instances bind-mount code from below it, so every parent must
// be searchable by other users (a home directory often is not).
func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/aloft"
	}
	return "aloft-data"
}

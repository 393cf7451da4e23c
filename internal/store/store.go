package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Names of the buckets and streams the store owns.
const (
	FunctionsBucket = "functions"
	CodeBucket      = "code"
	LogsStream      = "LOGS"
)

// Defaults of Config.
const (
	DefaultLogMaxBytes = 256 << 20
	DefaultLogMaxAge   = 7 * 24 * time.Hour
)

const (
	// embeddedMaxMemory bounds the embedded server's memory-backed streams
	// (the store uses none; later subsystems may).
	embeddedMaxMemory = 256 << 20
	// embeddedStoreHeadroom is the embedded server's file storage limit on
	// top of the logs stream's bound: a limit, not a preallocation, and
	// well short of "the whole disk" (nats-server's default is 75 % of it).
	embeddedStoreHeadroom = 16 << 30
	// embeddedMaxPayload is the embedded server's largest message.
	embeddedMaxPayload = 8 << 20
	// readyTimeout bounds the wait for the embedded server to start.
	readyTimeout = 30 * time.Second
	// closeFlushTimeout bounds the wait for pending log publishes at Close.
	closeFlushTimeout = 5 * time.Second
	// logQueueLines and logQueueBytes bound the lines AppendLog has queued
	// and the publisher has not yet handed to NATS; beyond them AppendLog
	// drops (and counts) lines.
	logQueueLines = 16384
	logQueueBytes = 16 << 20
	// logWindow is how many log publishes may await their ack at once; the
	// publisher waits (AppendLog does not) when it is full.
	logWindow = 4096
	// logAckTimeout is how long a log publish waits for its ack, or for
	// room in the window, before it counts as dropped.
	logAckTimeout = 10 * time.Second
)

// Config says where the store lives. The zero value of an optional field
// means its default.
type Config struct {
	// DataDir holds the embedded server's JetStream files (DataDir/nats)
	// and spooled uploads (DataDir/tmp). Required when NATSURL is empty.
	DataDir string
	// NATSURL is an external NATS server or cluster; empty starts an
	// embedded server.
	NATSURL string
	// NodeID is this node's id: the embedded server's name and part of the
	// connection name. Required.
	NodeID string
	// Logger receives the store's and the embedded server's own log
	// (the server's notices at debug level). Nil discards.
	Logger *slog.Logger
	// LogMaxBytes bounds the logs stream (default 256 MiB); the oldest
	// lines go first.
	LogMaxBytes int64
	// LogMaxAge bounds the age of log lines (default 7 days).
	LogMaxAge time.Duration
	// Replicas of every stream and bucket, for external clusters (default 1).
	Replicas int
	// Listen, when set, makes the embedded server accept NATS clients on
	// this host:port (for producers of subject triggers); they must
	// present ListenToken. Ignored with NATSURL.
	Listen      string
	ListenToken string

	// listen makes the embedded server listen on 127.0.0.1 on a random
	// port, so tests can connect a second Store through NATSURL.
	listen bool
}

var nodeIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// withDefaults returns c with defaults filled in and every problem joined.
func (c Config) withDefaults() (Config, error) {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.LogMaxBytes == 0 {
		c.LogMaxBytes = DefaultLogMaxBytes
	}
	if c.LogMaxAge == 0 {
		c.LogMaxAge = DefaultLogMaxAge
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	var errs []error
	if !nodeIDRE.MatchString(c.NodeID) {
		errs = append(errs, fmt.Errorf("node id %q is invalid: use 1-64 letters, digits, '-' or '_'", c.NodeID))
	}
	if c.NATSURL == "" && c.DataDir == "" {
		errs = append(errs, errors.New("data dir is empty: the embedded NATS server needs one (or set a NATS URL)"))
	}
	if c.LogMaxBytes < 0 {
		errs = append(errs, fmt.Errorf("log max bytes %d is negative", c.LogMaxBytes))
	}
	if c.LogMaxAge < 0 {
		errs = append(errs, fmt.Errorf("log max age %s is negative", c.LogMaxAge))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("replicas %d is out of range: use 1-5", c.Replicas))
	}
	if c.Listen != "" {
		if _, port, err := net.SplitHostPort(c.Listen); err != nil {
			errs = append(errs, fmt.Errorf("nats listen address %q is invalid: use HOST:PORT", c.Listen))
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("nats listen port %q is invalid: use 0-65535", port))
		}
		if c.ListenToken == "" {
			errs = append(errs, errors.New("a NATS listener needs a token for its clients"))
		}
	}
	if c.NATSURL == "" && c.Replicas != 1 {
		errs = append(errs, fmt.Errorf("replicas %d needs an external NATS cluster: the embedded server has one node", c.Replicas))
	}
	return c, errors.Join(errs...)
}

// Store is Aloft's durable state on JetStream. Its methods are safe for
// concurrent use.
type Store struct {
	cfg    Config
	log    *slog.Logger
	srv    *server.Server // nil with an external server
	nc     *nats.Conn
	js     jetstream.JetStream
	logJS  jetstream.JetStream // async log publishes only, so its window counts logs alone
	kv     jetstream.KeyValue
	obs    jetstream.ObjectStore
	logs   jetstream.Stream
	tmpDir string

	closed    chan struct{} // closed when the connection is closed
	done      chan struct{} // closed by Close to stop watchers and the log publisher
	watchers  sync.WaitGroup
	publisher sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	logQueue chan logItem
	flushNow chan struct{} // FlushLogs ends the publisher's gathering window
	// logBatchBytes caps one log message: 64 KiB, or an eighth of a
	// small stream bound so a batch always fits.
	logBatchBytes int
	logQueued     atomic.Int64 // bytes of text in logQueue
	logsClosed    atomic.Bool
	logsDropped   atomic.Uint64
}

// Open starts the embedded server unless cfg.NATSURL is set, connects, and
// creates or updates the buckets and the logs stream. It fails on an invalid
// cfg (every problem joined), a server that does not start, an unreachable
// external server, or a bucket or stream it cannot create.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Store{
		cfg:      cfg,
		log:      cfg.Logger,
		closed:   make(chan struct{}),
		done:     make(chan struct{}),
		tmpDir:   os.TempDir(),
		logQueue: make(chan logItem, logQueueLines),
		flushNow: make(chan struct{}, 1),

		logBatchBytes: int(min(64<<10, cfg.LogMaxBytes/8)),
	}
	if cfg.DataDir != "" {
		s.tmpDir = filepath.Join(cfg.DataDir, "tmp")
		if err := os.MkdirAll(s.tmpDir, 0o700); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	}
	if err := s.connect(); err != nil {
		s.shutdownServer()
		return nil, fmt.Errorf("open store: %w", err)
	}
	if err := s.setup(ctx); err != nil {
		s.nc.Close()
		s.shutdownServer()
		return nil, fmt.Errorf("open store: %w", err)
	}
	s.publisher.Add(1)
	go func() {
		defer s.publisher.Done()
		s.publishLogs()
	}()
	return s, nil
}

// connect starts the embedded server if needed and connects to it or to
// the external server.
func (s *Store) connect() error {
	opts := []nats.Option{
		nats.Name("aloft-" + s.cfg.NodeID),
		nats.ClosedHandler(func(*nats.Conn) { close(s.closed) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				s.log.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { s.log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			s.log.Warn("nats async error", "subject", subject, "error", err)
		}),
	}
	url := s.cfg.NATSURL
	if url == "" {
		srv, err := s.startServer()
		if err != nil {
			return err
		}
		s.srv = srv
		if !s.cfg.listen {
			opts = append(opts, nats.InProcessServer(srv))
		}
		if s.cfg.Listen != "" {
			opts = append(opts, nats.Token(s.cfg.ListenToken))
		}
		url = srv.ClientURL()
	} else {
		opts = append(opts, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(false))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	s.nc = nc
	return nil
}

// startServer starts the embedded nats-server and waits until it is ready.
func (s *Store) startServer() (*server.Server, error) {
	opts := &server.Options{
		ServerName:         s.cfg.NodeID,
		DontListen:         !s.cfg.listen,
		JetStream:          true,
		StoreDir:           filepath.Join(s.cfg.DataDir, "nats"),
		JetStreamMaxMemory: embeddedMaxMemory,
		JetStreamMaxStore:  s.cfg.LogMaxBytes + embeddedStoreHeadroom,
		NoSigs:             true,
		NoLog:              true,
		// 1 MiB async payloads plus headers, and dead letters holding
		// them, exceed NATS's 1 MiB default.
		MaxPayload: embeddedMaxPayload,
	}
	switch {
	case s.cfg.listen:
		opts.Host = "127.0.0.1"
		opts.Port = server.RANDOM_PORT
	case s.cfg.Listen != "" && s.cfg.NATSURL == "":
		host, port, _ := net.SplitHostPort(s.cfg.Listen)
		opts.Host = host
		opts.Port, _ = strconv.Atoi(port)
		if opts.Port == 0 {
			opts.Port = server.RANDOM_PORT
		}
		opts.DontListen = false
		opts.Authorization = s.cfg.ListenToken
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start embedded nats: %w", err)
	}
	debug := s.log.Enabled(context.Background(), slog.LevelDebug)
	srv.SetLoggerV2(serverLog{s.log}, debug, false, false)
	srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("start embedded nats: not ready after %s", readyTimeout)
	}
	return srv, nil
}

// setup creates or updates the buckets and streams.
func (s *Store) setup(ctx context.Context) error {
	var err error
	if s.js, err = jetstream.New(s.nc); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	s.logJS, err = jetstream.New(s.nc,
		jetstream.WithPublishAsyncMaxPending(logWindow),
		jetstream.WithPublishAsyncTimeout(logAckTimeout),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { s.logsDropped.Add(1) }))
	if err != nil {
		return fmt.Errorf("jetstream for logs: %w", err)
	}
	s.kv, err = s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      FunctionsBucket,
		Description: "Aloft functions, versions and aliases",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    s.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", FunctionsBucket, err)
	}
	s.obs, err = s.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      CodeBucket,
		Description: "Aloft code packages by sha256",
		Storage:     jetstream.FileStorage,
		Replicas:    s.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("create object store %s: %w", CodeBucket, err)
	}
	s.logs, err = s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        LogsStream,
		Description: "Aloft function logs",
		Subjects:    []string{logSubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxBytes:    s.cfg.LogMaxBytes,
		MaxAge:      s.cfg.LogMaxAge,
		MaxMsgSize:  maxLogMsgBytes,
		Replicas:    s.cfg.Replicas,
		AllowDirect: true,
	})
	if err != nil {
		return fmt.Errorf("create stream %s: %w", LogsStream, err)
	}
	return nil
}

// Close waits (at most a few seconds) for queued log lines to be stored,
// stops the watchers and the log publisher, drains the connection and shuts
// the embedded server down, waiting for it. Lines appended after Close are
// dropped. Calling Close again returns the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), closeFlushTimeout)
		if err := s.FlushLogs(ctx); err != nil {
			s.log.Warn("log lines not flushed at close", "error", err)
		}
		cancel()
		s.logsClosed.Store(true)
		close(s.done)
		s.watchers.Wait()
		s.publisher.Wait()
		if err := s.nc.Drain(); err != nil {
			s.closeErr = fmt.Errorf("close store: drain: %w", err)
			s.nc.Close()
		}
		<-s.closed
		s.shutdownServer()
	})
	return s.closeErr
}

func (s *Store) shutdownServer() {
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	}
}

// Conn returns the store's NATS connection, for subsystems that publish
// and subscribe (events). It is closed by Close.
func (s *Store) Conn() *nats.Conn { return s.nc }

// JetStream returns the store's JetStream context for subsystems that keep
// their own streams and buckets.
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// ListenURL is the address NATS clients outside the process reach the
// embedded server at (Config.Listen), or "" when it does not listen.
func (s *Store) ListenURL() string {
	if s.srv == nil || s.cfg.Listen == "" || s.cfg.NATSURL != "" {
		return ""
	}
	return s.srv.ClientURL()
}

// clientURL is the embedded server's listening address, when it listens.
func (s *Store) clientURL() string {
	if s.srv == nil || !s.cfg.listen {
		return ""
	}
	return s.srv.ClientURL()
}

// serverLog routes the embedded nats-server's log into slog: notices and
// debug lines at debug level, warnings and errors at theirs, traces nowhere.
type serverLog struct{ l *slog.Logger }

func (g serverLog) Noticef(format string, v ...any) { g.emit(slog.LevelDebug, format, v) }
func (g serverLog) Warnf(format string, v ...any)   { g.emit(slog.LevelWarn, format, v) }
func (g serverLog) Fatalf(format string, v ...any)  { g.emit(slog.LevelError, format, v) }
func (g serverLog) Errorf(format string, v ...any)  { g.emit(slog.LevelError, format, v) }
func (g serverLog) Debugf(format string, v ...any)  { g.emit(slog.LevelDebug, format, v) }
func (g serverLog) Tracef(string, ...any)           {}

func (g serverLog) emit(level slog.Level, format string, v []any) {
	ctx := context.Background()
	if !g.l.Enabled(ctx, level) {
		return
	}
	g.l.Log(ctx, level, "nats server", "text", strings.TrimSpace(fmt.Sprintf(format, v...)))
}

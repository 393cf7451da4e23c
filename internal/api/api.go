// Package api is Aloft's control plane: the REST API under /v1 that manages
// functions, their code, versions and aliases, invokes them and reads their
// logs. Handlers return errors; httperror turns them into status codes and
// JSON bodies. Every change is validated in full before anything is stored,
// so a rejected request changes nothing.
package api

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"aloft/internal/archive"
	"aloft/internal/build"
	"aloft/internal/events"
	"aloft/internal/fn"
	"aloft/internal/gateway"
	"aloft/internal/httperror"
	"aloft/internal/invoke"
	"aloft/internal/store"
)

// Config configures the API.
type Config struct {
	Store   *store.Store
	Invoker *invoke.Invoker
	Gateway *gateway.Gateway
	// Events runs async invocations, schedules and queues.
	Events *events.Events
	Logger *slog.Logger
	// Token is the bearer token every /v1 request must carry; empty turns
	// authentication off (dev mode on loopback only).
	Token string
	// Build configures Go source builds.
	Build build.Config
	// Archive bounds uploaded code packages.
	Archive archive.Limits
	// MaxPayload bounds a synchronous invoke payload (default 6 MB).
	MaxPayload int64
	// MaxAsyncPayload bounds an async invoke payload (default 1 MiB).
	MaxAsyncPayload int64
	// TempDir is where uploads are unpacked and built (default os.TempDir()).
	TempDir string
}

// API serves /v1.
type API struct {
	cfg Config
	log *slog.Logger
}

// New returns the API.
func New(cfg Config) *API {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = 6 << 20
	}
	if cfg.MaxAsyncPayload <= 0 {
		cfg.MaxAsyncPayload = 1 << 20
	}
	if cfg.Archive == (archive.Limits{}) {
		cfg.Archive = archive.DefaultLimits()
	}
	return &API{cfg: cfg, log: cfg.Logger}
}

type handler func(w http.ResponseWriter, r *http.Request) error

// Register adds the /v1 routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	h := map[string]handler{
		"GET /v1/functions":                           a.listFunctions,
		"GET /v1/functions/{name}":                    a.getFunction,
		"PUT /v1/functions/{name}":                    a.putFunction,
		"DELETE /v1/functions/{name}":                 a.deleteFunction,
		"POST /v1/functions/{name}/versions":          a.publish,
		"GET /v1/functions/{name}/versions":           a.listVersions,
		"GET /v1/functions/{name}/aliases":            a.listAliases,
		"PUT /v1/functions/{name}/aliases/{alias}":    a.putAlias,
		"GET /v1/functions/{name}/aliases/{alias}":    a.getAlias,
		"DELETE /v1/functions/{name}/aliases/{alias}": a.deleteAlias,
		"POST /v1/functions/{name}/invoke":            a.invoke,
		"GET /v1/functions/{name}/logs":               a.logs,
		"GET /v1/functions/{name}/instances":          a.instances,
		"GET /v1/functions/{name}/invocations":        a.invocations,
		"GET /v1/functions/{name}/dlq":                a.deadLetters,
		"POST /v1/functions/{name}/dlq/redrive":       a.redrive,
		"GET /v1/triggers":                            a.triggers,
		"GET /v1/schedules":                           a.schedules,
		"GET /v1/queues":                              a.listQueues,
		"PUT /v1/queues/{queue}":                      a.putQueue,
		"GET /v1/queues/{queue}":                      a.getQueue,
		"DELETE /v1/queues/{queue}":                   a.deleteQueue,
		"POST /v1/queues/{queue}/messages":            a.send,
	}
	for pattern, fn := range h {
		mux.Handle(pattern, a.wrap(fn))
	}
	mux.Handle("/v1/", a.wrap(func(w http.ResponseWriter, r *http.Request) error {
		return notFoundPath(r)
	}))
}

func notFoundPath(r *http.Request) error {
	return fn.NotFound("no API endpoint %s %s: see the API section of the README", r.Method, r.URL.Path)
}

// wrap authenticates, runs h and writes its error.
func (a *API) wrap(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqID := newRequestID()
		if !a.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="aloft"`)
			httperror.Write(w, a.log, reqID, fn.Errorf(http.StatusUnauthorized, "unauthorized",
				"missing or wrong bearer token: pass --token or set ALOFT_TOKEN to the server's token"))
			return
		}
		if err := h(w, r); err != nil {
			httperror.Write(w, a.log, reqID, err)
		}
	})
}

func (a *API) authorized(r *http.Request) bool {
	if a.cfg.Token == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(a.cfg.Token)) == 1
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// decodeJSON reads a small JSON body strictly: unknown fields are errors.
func decodeJSON(r io.Reader, limit int64, v any) error {
	dec := json.NewDecoder(io.LimitReader(r, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return fn.Invalid("request body is empty: send a JSON object")
		}
		return fn.Invalid("request body is not valid JSON for this endpoint: %v", err)
	}
	if dec.More() {
		return fn.Invalid("request body has data after the JSON object")
	}
	return nil
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func newRevision() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// tenant is the tenant of a request; "default" until multi-tenancy lands.
func tenant(*http.Request) string { return fn.DefaultTenant }

func (a *API) changed(ctx context.Context, name string) {
	a.cfg.Invoker.Refresh(ctx, fn.DefaultTenant, name)
	a.cfg.Events.Changed(ctx, fn.DefaultTenant, name)
	if err := a.cfg.Gateway.Reload(ctx); err != nil {
		a.log.Error("reload routes", "function", name, "error", err)
	}
	// The change is stored; readying the first request is best effort.
	if err := a.cfg.Invoker.Prepare(ctx, fn.DefaultTenant, name); err != nil {
		a.log.Warn("prepare function", "function", name, "error", err)
	}
}

func pathName(r *http.Request) (string, error) {
	name := r.PathValue("name")
	if err := fn.ValidateName(name); err != nil {
		return "", err
	}
	return name, nil
}

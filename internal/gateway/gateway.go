// Package gateway is Aloft's data-plane HTTP: it serves every function at
// /fn/{name}/... and at the routes functions declare ("GET /users/{id}").
// For Lambda-style runtimes a request becomes an API Gateway HTTP API 2.0
// event and the result is mapped back; for the http runtime the request is
// proxied as it is, streaming both ways.
package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"aloft/internal/apigw"
	"aloft/internal/fn"
	"aloft/internal/httperror"
	"aloft/internal/invoke"
	"aloft/internal/store"
)

// Config configures a Gateway.
type Config struct {
	Invoker *invoke.Invoker
	Store   *store.Store
	Logger  *slog.Logger
	// MaxBody bounds a request body for Lambda-style functions (default 6 MB).
	MaxBody int64
}

// Gateway routes HTTP requests to functions.
type Gateway struct {
	cfg    Config
	log    *slog.Logger
	routes atomic.Pointer[table]
}

// route is one declared route of one function.
type route struct {
	fn.Route
	function  string
	qualifier string     // the version or alias the route runs; "" for $LATEST
	runtime   fn.Runtime // $LATEST's; "" when qualified
}

// table holds every declared route, most specific first.
type table struct {
	routes []route
}

// New returns a Gateway with an empty route table; call Reload.
func New(cfg Config) *Gateway {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 6 << 20
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger}
	g.routes.Store(&table{})
	return g
}

// Reload rebuilds the route table from the store.
func (g *Gateway) Reload(ctx context.Context) error {
	fns, err := g.cfg.Store.ListFunctions(ctx, fn.DefaultTenant)
	if err != nil {
		return fmt.Errorf("reload routes: %w", err)
	}
	t := &table{}
	for _, f := range fns {
		for _, raw := range f.Routes {
			r, err := fn.ParseRoute(raw)
			if err != nil {
				g.log.Warn("skipping invalid stored route", "function", f.Name, "route", raw, "error", err)
				continue
			}
			rt := route{Route: r, function: f.Name, runtime: f.Runtime}
			if q := f.RouteQualifier; q != "" && q != fn.LatestVersion {
				// The version's runtime is looked up per request: it
				// may differ from $LATEST's.
				rt.qualifier, rt.runtime = q, ""
			}
			t.routes = append(t.routes, rt)
		}
	}
	sort.SliceStable(t.routes, func(i, j int) bool {
		a, b := t.routes[i], t.routes[j]
		if a.Specificity() != b.Specificity() {
			return a.Specificity() > b.Specificity()
		}
		if a.Raw != b.Raw {
			return a.Raw < b.Raw
		}
		return a.function < b.function
	})
	g.routes.Store(t)
	return nil
}

// Run reloads the route table whenever a function changes, until ctx ends.
func (g *Gateway) Run(ctx context.Context) error {
	changes, err := g.cfg.Store.Watch(ctx)
	if err != nil {
		return fmt.Errorf("gateway: watch store: %w", err)
	}
	for ch := range changes {
		if ch.Kind != "function" {
			continue
		}
		if err := g.Reload(ctx); err != nil && ctx.Err() == nil {
			g.log.Error("reload routes", "error", err)
		}
	}
	return nil
}

// Conflicts returns a client-facing error if any of routes is already
// declared by a function other than name: with the same method and a path
// that matches the same requests.
func (g *Gateway) Conflicts(name string, routes []string) error {
	t := g.routes.Load()
	for _, raw := range routes {
		r, err := fn.ParseRoute(raw)
		if err != nil {
			return err
		}
		for _, have := range t.routes {
			if have.function != name && have.Key() == r.Key() {
				as := ""
				if have.Raw != r.Raw {
					as = fmt.Sprintf(" as %q", have.Raw)
				}
				return fn.Conflict("route %q is already served by function %q%s: remove it there first or choose another path", r.Raw, have.function, as)
			}
		}
	}
	return nil
}

// ServeFunction serves /fn/{name} and /fn/{name}/{rest...}: $LATEST, or
// with a name of the form NAME:QUALIFIER a published version or an alias,
// as Lambda's function URLs of an alias.
func (g *Gateway) ServeFunction(w http.ResponseWriter, r *http.Request) {
	name, qualifier, err := fn.SplitQualified(r.PathValue("name"))
	if err != nil {
		g.writeError(w, "", err)
		return
	}
	rest := "/" + r.PathValue("rest")
	g.serve(w, r, name, qualifier, "", rest, "$default", nil)
}

// ServeHTTP serves declared routes; anything else is a 404.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := g.routes.Load()
	path := r.URL.Path
	for _, rt := range t.routes {
		params, ok := rt.Match(r.Method, path)
		if !ok {
			continue
		}
		routeKey := rt.Raw
		if rt.Method == "" {
			routeKey = "ANY " + rt.Raw
		}
		g.serve(w, r, rt.function, rt.qualifier, rt.runtime, path, routeKey, params)
		return
	}
	g.writeError(w, "", fn.NotFound("no function serves %s %s: functions are at /fn/{name}/ and at the routes they declare", r.Method, path))
}

// serve runs a request with the function name at qualifier ("" for
// $LATEST); rt is its runtime when the caller knows it.
func (g *Gateway) serve(w http.ResponseWriter, r *http.Request, name, qualifier string, rt fn.Runtime, path, routeKey string, params map[string]string) {
	id := invoke.NewInvocationID()
	if rt == "" {
		var err error
		rt, err = g.cfg.Invoker.Runtime(r.Context(), fn.DefaultTenant, name, qualifier)
		if err != nil {
			g.writeError(w, id, err)
			return
		}
	}
	req := invoke.Request{Tenant: fn.DefaultTenant, Function: name, Qualifier: qualifier, ID: id, TraceID: traceID(r)}
	if !rt.EventStyle() { // http and wasm take the request as it is
		// A shallow copy with its own URL: only the path changes.
		r2 := new(http.Request)
		*r2 = *r
		u := *r.URL
		u.Path, u.RawPath = path, ""
		r2.URL = &u
		if err := g.cfg.Invoker.ServeHTTP(w, r2, req); err != nil {
			g.writeError(w, id, err)
		}
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.MaxBody))
	if err != nil {
		g.writeError(w, id, err)
		return
	}
	ev, err := apigw.NewEvent(r, body, apigw.RequestInfo{
		RouteKey: routeKey, PathParams: params, RequestID: id, APIID: "aloft",
		Now: time.Now(), SourceIP: sourceIP(r.RemoteAddr), Path: path,
	})
	if err != nil {
		g.writeError(w, id, err)
		return
	}
	req.Payload = ev
	resp, err := g.cfg.Invoker.Invoke(r.Context(), req)
	if err != nil {
		g.writeError(w, id, err)
		return
	}
	w.Header().Set("X-Aloft-Invocation-Id", id)
	w.Header().Set("X-Aloft-Executed-Version", resp.Version)
	if resp.FunctionError {
		apigw.WriteFunctionError(w, resp.Payload)
		return
	}
	if err := apigw.WriteResponse(w, resp.Payload); err != nil {
		g.log.Warn("function response", "function", name, "invocation_id", id, "error", err)
	}
}

func (g *Gateway) writeError(w http.ResponseWriter, id string, err error) {
	if id != "" {
		w.Header().Set("X-Aloft-Invocation-Id", id)
	}
	httperror.Write(w, g.log, id, err)
}

func sourceIP(remote string) string {
	if i := strings.LastIndexByte(remote, ':'); i > 0 {
		return strings.Trim(remote[:i], "[]")
	}
	return remote
}

// traceID carries an incoming X-Ray header through; W3C traceparent
// bridging comes with tracing.
func traceID(r *http.Request) string {
	return r.Header.Get("X-Amzn-Trace-Id")
}

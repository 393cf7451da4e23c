package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"aloft/internal/fn"
)

const token = "s3cret"

// standIn is a small in-memory server that speaks the /v1 wire contract, so
// the client can be tested against real HTTP. The real server is exercised
// by the end-to-end tests.
type standIn struct {
	mu        sync.Mutex
	functions map[string]*fn.Function
	code      map[string][]byte
	codeName  map[string]string
	versions  map[string][]*fn.Version
	aliases   map[string]map[string]*fn.Alias
	logs      []fn.LogLine
	lastQuery string
	// deployHook, when set, handles PUT multipart bodies instead.
	deployHook func(w http.ResponseWriter, r *http.Request)
	// ev is the state of the event endpoints (events_test.go).
	ev eventState
}

func newStandIn(t *testing.T) (*standIn, *Client) {
	t.Helper()
	s := &standIn{
		functions: map[string]*fn.Function{},
		code:      map[string][]byte{},
		codeName:  map[string]string{},
		versions:  map[string][]*fn.Version{},
		aliases:   map[string]map[string]*fn.Alias{},
	}
	srv := httptest.NewServer(s.handler())
	t.Cleanup(srv.Close)
	return s, New(srv.URL+"/", token)
}

func writeErr(w http.ResponseWriter, e *fn.Error) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": e.Code, "message": e.Message}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *standIn) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]string{"status": "ok"})
	})
	v1 := http.NewServeMux()
	mux.Handle("/v1/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			writeErr(w, fn.Errorf(401, "unauthorized", "missing or wrong token"))
			return
		}
		s.mu.Lock()
		s.lastQuery = r.URL.RawQuery
		s.mu.Unlock()
		v1.ServeHTTP(w, r)
	}))
	v1.HandleFunc("PUT /v1/functions/{name}", s.put)
	v1.HandleFunc("GET /v1/functions", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		out := []*fn.Function{}
		for _, f := range s.functions {
			out = append(out, f)
		}
		slices.SortFunc(out, func(a, b *fn.Function) int { return strings.Compare(a.Name, b.Name) })
		writeJSON(w, 200, map[string]any{"functions": out})
	})
	v1.HandleFunc("GET /v1/functions/{name}", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		f, ok := s.functions[r.PathValue("name")]
		if !ok {
			writeErr(w, fn.NotFound("function %q not found", r.PathValue("name")))
			return
		}
		writeJSON(w, 200, f)
	})
	v1.HandleFunc("DELETE /v1/functions/{name}", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.functions[r.PathValue("name")]; !ok {
			writeErr(w, fn.NotFound("function %q not found", r.PathValue("name")))
			return
		}
		delete(s.functions, r.PathValue("name"))
		w.WriteHeader(204)
	})
	v1.HandleFunc("POST /v1/functions/{name}/versions", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Description string }
		if r.ContentLength != 0 {
			if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
				writeErr(w, fn.Invalid("body: %v", err))
				return
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		name := r.PathValue("name")
		f, ok := s.functions[name]
		if !ok {
			writeErr(w, fn.NotFound("function %q not found", name))
			return
		}
		v := &fn.Version{Number: len(s.versions[name]) + 1, Config: f.Config, Description: in.Description}
		s.versions[name] = append(s.versions[name], v)
		writeJSON(w, 201, v)
	})
	v1.HandleFunc("GET /v1/functions/{name}/versions", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		writeJSON(w, 200, map[string]any{"versions": s.versions[r.PathValue("name")]})
	})
	v1.HandleFunc("PUT /v1/functions/{name}/aliases/{alias}", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Version     int    `json:"version"`
			Description string `json:"description"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			writeErr(w, fn.Invalid("body: %v", err))
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		name, alias := r.PathValue("name"), r.PathValue("alias")
		if in.Version < 1 || in.Version > len(s.versions[name]) {
			writeErr(w, fn.NotFound("version %d of %q not found", in.Version, name))
			return
		}
		if s.aliases[name] == nil {
			s.aliases[name] = map[string]*fn.Alias{}
		}
		a := &fn.Alias{Function: name, Name: alias, Version: in.Version, Description: in.Description}
		s.aliases[name][alias] = a
		writeJSON(w, 200, a)
	})
	v1.HandleFunc("GET /v1/functions/{name}/aliases", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		out := []*fn.Alias{}
		for _, a := range s.aliases[r.PathValue("name")] {
			out = append(out, a)
		}
		slices.SortFunc(out, func(a, b *fn.Alias) int { return strings.Compare(a.Name, b.Name) })
		writeJSON(w, 200, map[string]any{"aliases": out})
	})
	v1.HandleFunc("DELETE /v1/functions/{name}/aliases/{alias}", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.aliases[r.PathValue("name")][r.PathValue("alias")]; !ok {
			writeErr(w, fn.NotFound("alias %q not found", r.PathValue("alias")))
			return
		}
		delete(s.aliases[r.PathValue("name")], r.PathValue("alias"))
		w.WriteHeader(204)
	})
	v1.HandleFunc("POST /v1/functions/{name}/invoke", s.invoke)
	v1.HandleFunc("GET /v1/functions/{name}/logs", s.logsHandler)
	s.eventRoutes(v1)
	return mux
}

func (s *standIn) put(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var cfg fn.Config
		if err := json.NewDecoder(r.Body).Decode(&cfg); err != nil {
			writeErr(w, fn.Invalid("config: %v", err))
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		f, ok := s.functions[name]
		if !ok {
			writeErr(w, fn.NotFound("function %q not found", name))
			return
		}
		f.Config = cfg
		writeJSON(w, 200, f)
		return
	}
	if s.deployHook != nil {
		s.deployHook(w, r)
		return
	}
	mr, err := r.MultipartReader()
	if err != nil {
		writeErr(w, fn.Invalid("body: %v", err))
		return
	}
	var cfg fn.Config
	var code []byte
	var codeName string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			writeErr(w, fn.Invalid("body: %v", err))
			return
		}
		switch p.FormName() {
		case "config":
			if p.Header.Get("Content-Type") != "application/json" {
				writeErr(w, fn.Invalid("config part is %q", p.Header.Get("Content-Type")))
				return
			}
			if err := json.NewDecoder(p).Decode(&cfg); err != nil {
				writeErr(w, fn.Invalid("config: %v", err))
				return
			}
		case "code":
			codeName = p.FileName()
			if code, err = io.ReadAll(p); err != nil {
				writeErr(w, fn.Invalid("code: %v", err))
				return
			}
		}
	}
	if cfg.Name != "" && cfg.Name != name {
		writeErr(w, fn.Invalid("config name %q differs from path %q", cfg.Name, name))
		return
	}
	if code == nil {
		writeErr(w, fn.Invalid("code part is missing"))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	status := 200
	if _, ok := s.functions[name]; !ok {
		status = 201
	}
	s.functions[name] = &fn.Function{Config: cfg, CodeSize: int64(len(code))}
	s.code[name] = code
	s.codeName[name] = codeName
	writeJSON(w, status, s.functions[name])
}

// invoke echoes the payload; a payload of "fail" makes the function fail.
// An Event invocation is queued instead (see invokeAsync).
func (s *standIn) invoke(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Aloft-Invocation-Type") == "Event" {
		s.invokeAsync(w, r)
		return
	}
	s.mu.Lock()
	_, ok := s.functions[r.PathValue("name")]
	s.mu.Unlock()
	if !ok {
		writeErr(w, fn.NotFound("function %q not found", r.PathValue("name")))
		return
	}
	body, _ := io.ReadAll(r.Body)
	if string(body) == "busy" {
		writeErr(w, fn.Throttled(7, "too many requests: retry later"))
		return
	}
	w.Header().Set("X-Aloft-Invocation-Id", "inv-1")
	v := r.URL.Query().Get("qualifier")
	if v == "" {
		v = fn.LatestVersion
	}
	w.Header().Set("X-Aloft-Executed-Version", v)
	if r.URL.Query().Get("log") == "tail" {
		w.Header().Set("X-Aloft-Log-Result", base64.StdEncoding.EncodeToString([]byte("START\nhello from the function\nEND\n")))
	}
	if string(body) == "fail" {
		w.Header().Set("X-Aloft-Function-Error", "Unhandled")
		w.Write(fn.ErrorPayload("Boom", "it failed"))
		return
	}
	w.Write(body)
}

func (s *standIn) logsHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	s.mu.Lock()
	lines := slices.Clone(s.logs)
	s.mu.Unlock()
	enc := json.NewEncoder(w)
	for _, l := range lines {
		enc.Encode(l)
	}
	if r.URL.Query().Get("follow") != "true" {
		return
	}
	w.(http.Flusher).Flush()
	<-r.Context().Done()
}

func TestHealthAndAuth(t *testing.T) {
	_, c := newStandIn(t)
	ctx := t.Context()
	if err := c.Health(ctx); err != nil {
		t.Fatalf("Health: %v", err)
	}
	bad := New(c.base, "wrong")
	_, err := bad.List(ctx)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 401 || ae.Code != "unauthorized" {
		t.Fatalf("List with a wrong token: got %v, want an APIError 401 unauthorized", err)
	}
	if want := "missing or wrong token (unauthorized, HTTP 401)"; ae.Error() != want {
		t.Errorf("APIError.Error() = %q, want %q", ae.Error(), want)
	}
}

func TestAPIErrorFromForeignBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "3")
		http.Error(w, "upstream is down", http.StatusBadGateway)
	}))
	defer srv.Close()
	err := New(srv.URL, "").Health(t.Context())
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("Health: got %v, want an APIError", err)
	}
	if ae.Status != 502 || ae.Code != "" || ae.RetryAfter != 3 || ae.Message != "Bad Gateway: upstream is down" {
		t.Errorf("APIError = %+v", *ae)
	}
}

func TestDeployAndConfig(t *testing.T) {
	s, c := newStandIn(t)
	ctx := t.Context()
	cfg := fn.Config{Name: "hello", Runtime: fn.RuntimeLambda, Routes: []string{"GET /hello/{name}"}}
	tgz := append([]byte{0x1f, 0x8b, 8, 0}, bytes.Repeat([]byte("x"), 100_000)...)

	f, created, err := c.Deploy(ctx, cfg, bytes.NewReader(tgz))
	if err != nil {
		t.Fatalf("Deploy: %v", err)
	}
	if !created || f.Name != "hello" || f.CodeSize != int64(len(tgz)) {
		t.Errorf("Deploy = %+v, created %v; want hello, created, code size %d", f, created, len(tgz))
	}
	if !bytes.Equal(s.code["hello"], tgz) || s.codeName["hello"] != "code.tar.gz" {
		t.Errorf("server got %d code bytes named %q, want the %d bytes sent as code.tar.gz", len(s.code["hello"]), s.codeName["hello"], len(tgz))
	}

	zip := []byte("PK\x03\x04rest-of-zip")
	_, created, err = c.Deploy(ctx, cfg, bytes.NewReader(zip))
	if err != nil || created {
		t.Fatalf("second Deploy: created %v, err %v; want an update", created, err)
	}
	if s.codeName["hello"] != "code.zip" {
		t.Errorf("zip code named %q, want code.zip", s.codeName["hello"])
	}

	cfg.MemoryMB = 512
	f, err = c.UpdateConfig(ctx, cfg)
	if err != nil || f.MemoryMB != 512 {
		t.Fatalf("UpdateConfig = %+v, %v; want memory 512", f, err)
	}
	if _, err := c.UpdateConfig(ctx, fn.Config{Name: "nope", Runtime: fn.RuntimeLambda}); !IsNotFound(err) {
		t.Errorf("UpdateConfig of a missing function: got %v, want a 404", err)
	}
	if _, _, err := c.Deploy(ctx, fn.Config{}, bytes.NewReader(zip)); err == nil {
		t.Error("Deploy without a name: got no error")
	}
	if _, _, err := c.Deploy(ctx, cfg, nil); err == nil {
		t.Error("Deploy without code: got no error")
	}
}

// gatedReader yields first, then blocks until gate is closed, then yields rest.
type gatedReader struct {
	first, rest []byte
	gate        <-chan struct{}
	ctx         context.Context
	stage       int
}

func (g *gatedReader) Read(p []byte) (int, error) {
	switch g.stage {
	case 0:
		g.stage = 1
		return copy(p, g.first), nil
	case 1:
		select {
		case <-g.gate:
		case <-g.ctx.Done():
			return 0, fmt.Errorf("gate never opened: the client buffered the body instead of streaming it")
		}
		g.stage = 2
		return copy(p, g.rest), nil
	}
	return 0, io.EOF
}

func TestDeployStreams(t *testing.T) {
	s, c := newStandIn(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	first := append([]byte{0x1f, 0x8b}, []byte("first-chunk")...)
	gate := make(chan struct{})
	s.deployHook = func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != -1 {
			writeErr(w, fn.Invalid("content length %d is known: the body was buffered", r.ContentLength))
			return
		}
		mr, err := r.MultipartReader()
		if err != nil {
			writeErr(w, fn.Invalid("%v", err))
			return
		}
		mr.NextPart() // config
		p, err := mr.NextPart()
		if err != nil || p.FormName() != "code" {
			writeErr(w, fn.Invalid("code part: %v", err))
			return
		}
		buf := make([]byte, len(first))
		if _, err := io.ReadFull(p, buf); err != nil {
			writeErr(w, fn.Invalid("first chunk: %v", err))
			return
		}
		close(gate) // the server has the first chunk while the client still holds the rest
		rest, _ := io.ReadAll(p)
		writeJSON(w, 201, fn.Function{Config: fn.Config{Name: "s"}, CodeSize: int64(len(buf) + len(rest))})
	}
	f, created, err := c.Deploy(ctx, fn.Config{Name: "s"}, &gatedReader{first: first, rest: []byte("-rest"), gate: gate, ctx: ctx})
	if err != nil {
		t.Fatalf("Deploy: %v", err)
	}
	if !created || f.CodeSize != int64(len(first)+5) {
		t.Errorf("Deploy = %+v, created %v", f, created)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestDeployErrors(t *testing.T) {
	s, c := newStandIn(t)
	ctx := t.Context()

	// An early answer that does not read the body must not hang the client.
	s.deployHook = func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, fn.TooLarge("code is too large: keep it under 1 byte"))
	}
	big := io.MultiReader(bytes.NewReader([]byte{0x1f, 0x8b}), io.LimitReader(zeros{}, 16<<20))
	_, _, err := c.Deploy(ctx, fn.Config{Name: "big"}, big)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 413 {
		t.Errorf("Deploy rejected early: got %v, want APIError 413", err)
	}

	// A failing code reader fails the deploy with its error.
	s.deployHook = nil
	_, _, err = c.Deploy(ctx, fn.Config{Name: "bad"}, failingReader{})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("Deploy with a failing reader: got %v, want the reader's error", err)
	}
	if _, ok := s.functions["bad"]; ok {
		t.Error("Deploy with a failing reader created the function")
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestFunctionsVersionsAliases(t *testing.T) {
	s, c := newStandIn(t)
	ctx := t.Context()
	for _, n := range []string{"b", "a"} {
		if _, _, err := c.Deploy(ctx, fn.Config{Name: n, Runtime: fn.RuntimeHTTP}, strings.NewReader("PK\x03\x04")); err != nil {
			t.Fatal(err)
		}
	}
	fs, err := c.List(ctx)
	if err != nil || len(fs) != 2 || fs[0].Name != "a" || fs[1].Name != "b" {
		t.Fatalf("List = %v, %v; want a, b", fs, err)
	}
	if f, err := c.Get(ctx, "a"); err != nil || f.Runtime != fn.RuntimeHTTP {
		t.Errorf("Get(a) = %+v, %v", f, err)
	}
	// Names are path-escaped: "x/y" must reach the server as one segment.
	_, err = c.Get(ctx, "x/y")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 404 || !strings.Contains(ae.Message, `"x/y"`) {
		t.Errorf("Get(x/y): got %v, want a 404 naming \"x/y\"", err)
	}

	v, err := c.Publish(ctx, "a", "first")
	if err != nil || v.Number != 1 || v.Description != "first" {
		t.Fatalf("Publish = %+v, %v", v, err)
	}
	if v, err = c.Publish(ctx, "a", ""); err != nil || v.Number != 2 {
		t.Fatalf("second Publish = %+v, %v", v, err)
	}
	vs, err := c.Versions(ctx, "a")
	if err != nil || len(vs) != 2 || vs[1].Number != 2 {
		t.Errorf("Versions = %v, %v", vs, err)
	}
	if _, err := c.Publish(ctx, "missing", ""); !IsNotFound(err) {
		t.Errorf("Publish(missing): got %v, want 404", err)
	}

	al, err := c.SetAlias(ctx, "a", "prod", 2, "live")
	if err != nil || al.Version != 2 || al.Name != "prod" || al.Description != "live" {
		t.Fatalf("SetAlias = %+v, %v", al, err)
	}
	if _, err := c.SetAlias(ctx, "a", "next", 9, ""); !IsNotFound(err) {
		t.Errorf("SetAlias to a missing version: got %v, want 404", err)
	}
	als, err := c.Aliases(ctx, "a")
	if err != nil || len(als) != 1 || als[0].Name != "prod" {
		t.Errorf("Aliases = %v, %v", als, err)
	}
	if err := c.DeleteAlias(ctx, "a", "prod"); err != nil {
		t.Errorf("DeleteAlias: %v", err)
	}
	if err := c.DeleteAlias(ctx, "a", "prod"); !IsNotFound(err) {
		t.Errorf("second DeleteAlias: got %v, want 404", err)
	}

	if err := c.Delete(ctx, "b"); err != nil {
		t.Errorf("Delete: %v", err)
	}
	if _, err := c.Get(ctx, "b"); !IsNotFound(err) {
		t.Errorf("Get after Delete: got %v, want 404", err)
	}
	_ = s
}

func TestInvoke(t *testing.T) {
	s, c := newStandIn(t)
	ctx := t.Context()
	if _, _, err := c.Deploy(ctx, fn.Config{Name: "echo"}, strings.NewReader("PK\x03\x04")); err != nil {
		t.Fatal(err)
	}
	res, err := c.Invoke(ctx, "echo", []byte(`{"a":1}`), InvokeOptions{})
	if err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	if string(res.Payload) != `{"a":1}` || res.FunctionError != "" || res.InvocationID != "inv-1" || res.ExecutedVersion != "$LATEST" || res.LogTail != "" {
		t.Errorf("Invoke = %+v", res)
	}

	res, err = c.Invoke(ctx, "echo", []byte("fail"), InvokeOptions{Qualifier: "prod", LogTail: true})
	if err != nil {
		t.Fatalf("Invoke (failing): %v", err)
	}
	if s.lastQuery != "log=tail&qualifier=prod" {
		t.Errorf("query = %q, want log=tail&qualifier=prod", s.lastQuery)
	}
	if res.FunctionError != "Unhandled" || res.ExecutedVersion != "prod" || !strings.Contains(res.LogTail, "hello from the function") {
		t.Errorf("Invoke (failing) = %+v", res)
	}
	var ep struct{ ErrorMessage, ErrorType string }
	if err := json.Unmarshal(res.Payload, &ep); err != nil || ep.ErrorType != "Boom" {
		t.Errorf("error payload %s: %v", res.Payload, err)
	}

	_, err = c.Invoke(ctx, "echo", []byte("busy"), InvokeOptions{})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 429 || ae.RetryAfter != 7 || ae.Code != "throttled" {
		t.Errorf("Invoke (throttled): got %v, want APIError 429 with Retry-After 7", err)
	}
	if _, err := c.Invoke(ctx, "missing", nil, InvokeOptions{}); !IsNotFound(err) {
		t.Errorf("Invoke(missing): got %v, want 404", err)
	}
}

func TestLogs(t *testing.T) {
	s, c := newStandIn(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s.logs = []fn.LogLine{
		{Time: t0, Function: "f", InvocationID: "i1", Stream: "stdout", Text: "one"},
		{Time: t0.Add(time.Second), Function: "f", InvocationID: "i1", Stream: "stdout", Text: "two"},
		{Time: t0.Add(2 * time.Second), Function: "f", Stream: "platform", Text: "three"},
	}
	var got []string
	err := c.Logs(t.Context(), "f", LogsOptions{Since: t0, Limit: 10}, func(l fn.LogLine) error {
		got = append(got, l.Text)
		return nil
	})
	if err != nil || !slices.Equal(got, []string{"one", "two", "three"}) {
		t.Fatalf("Logs = %v, %v", got, err)
	}
	if s.lastQuery != "limit=10&since=2026-01-02T03%3A04%3A05Z" {
		t.Errorf("query = %q", s.lastQuery)
	}

	stop := errors.New("stop")
	got = nil
	err = c.Logs(t.Context(), "f", LogsOptions{}, func(l fn.LogLine) error {
		got = append(got, l.Text)
		return stop
	})
	if !errors.Is(err, stop) || len(got) != 1 {
		t.Errorf("Logs with a failing callback = %v, %v; want stop after one line", got, err)
	}

	// Follow: the stream stays open until the caller's context ends.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got = nil
	err = c.Logs(ctx, "f", LogsOptions{Follow: true}, func(l fn.LogLine) error {
		got = append(got, l.Text)
		if len(got) == 3 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || len(got) != 3 {
		t.Errorf("Logs with follow = %v, %v; want 3 lines then context.Canceled", got, err)
	}
	if s.lastQuery != "follow=true" {
		t.Errorf("query = %q, want follow=true", s.lastQuery)
	}
}

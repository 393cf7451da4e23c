package cli

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"aloft/internal/fn"
)

const token = "tok"

// standIn is a small server speaking the parts of the /v1 wire contract the
// verbs use; the real server is exercised by the end-to-end tests.
type standIn struct {
	mu      sync.Mutex
	fns     map[string]*fn.Function
	code    map[string][]byte
	queries []string
	bodies  []string
	logs    []fn.LogLine
	srv     *httptest.Server
	// ev is the state of the event endpoints (events_test.go).
	ev eventState
}

func newStandIn(t *testing.T) *standIn {
	t.Helper()
	s := &standIn{fns: map[string]*fn.Function{}, code: map[string][]byte{}}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/functions/{name}", s.put)
	mux.HandleFunc("GET /v1/functions", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		out := []*fn.Function{}
		for _, f := range s.fns {
			out = append(out, f)
		}
		slices.SortFunc(out, func(a, b *fn.Function) int { return strings.Compare(a.Name, b.Name) })
		writeJSONResp(w, 200, map[string]any{"functions": out})
	})
	mux.HandleFunc("GET /v1/functions/{name}", func(w http.ResponseWriter, r *http.Request) {
		if f := s.get(r.PathValue("name")); f != nil {
			writeJSONResp(w, 200, f)
			return
		}
		writeErr(w, fn.NotFound("function %q not found", r.PathValue("name")))
	})
	mux.HandleFunc("DELETE /v1/functions/{name}", func(w http.ResponseWriter, r *http.Request) {
		if s.get(r.PathValue("name")) == nil {
			writeErr(w, fn.NotFound("function %q not found", r.PathValue("name")))
			return
		}
		s.mu.Lock()
		delete(s.fns, r.PathValue("name"))
		s.mu.Unlock()
		w.WriteHeader(204)
	})
	mux.HandleFunc("POST /v1/functions/{name}/versions", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		f := s.fns[r.PathValue("name")]
		f.LatestPublished++
		writeJSONResp(w, 201, fn.Version{Number: f.LatestPublished, Config: f.Config, CodeSHA256: "0123456789abcdef0123"})
	})
	mux.HandleFunc("GET /v1/functions/{name}/versions", func(w http.ResponseWriter, r *http.Request) {
		writeJSONResp(w, 200, map[string]any{"versions": []fn.Version{
			{Number: 1, Description: "first", CodeSHA256: "0123456789abcdef0123", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		}})
	})
	mux.HandleFunc("PUT /v1/functions/{name}/aliases/{alias}", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Version int `json:"version"`
		}
		json.NewDecoder(r.Body).Decode(&in)
		writeJSONResp(w, 200, fn.Alias{Function: r.PathValue("name"), Name: r.PathValue("alias"), Version: in.Version})
	})
	mux.HandleFunc("GET /v1/functions/{name}/aliases", func(w http.ResponseWriter, r *http.Request) {
		writeJSONResp(w, 200, map[string]any{"aliases": []fn.Alias{{Name: "prod", Version: 2, Description: "live"}}})
	})
	mux.HandleFunc("DELETE /v1/functions/{name}/aliases/{alias}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(204)
	})
	mux.HandleFunc("POST /v1/functions/{name}/invoke", s.invoke)
	mux.HandleFunc("GET /v1/functions/{name}/logs", s.logsHandler)
	s.eventRoutes(mux)
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			writeErr(w, fn.Errorf(401, "unauthorized", "missing or wrong token"))
			return
		}
		s.mu.Lock()
		s.queries = append(s.queries, r.URL.RawQuery)
		s.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *standIn) get(name string) *fn.Function {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fns[name]
}

func (s *standIn) lastQuery() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[len(s.queries)-1]
}

func writeErr(w http.ResponseWriter, e *fn.Error) {
	writeJSONResp(w, e.Status, map[string]any{"error": map[string]string{"code": e.Code, "message": e.Message}})
}

func writeJSONResp(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *standIn) put(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if name == "bad" {
		writeErr(w, fn.Invalid("the server refuses %q", name))
		return
	}
	mr, err := r.MultipartReader()
	if err != nil {
		writeErr(w, fn.Invalid("%v", err))
		return
	}
	var cfg fn.Config
	var code []byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			writeErr(w, fn.Invalid("%v", err))
			return
		}
		if p.FormName() == "config" {
			json.NewDecoder(p).Decode(&cfg)
		} else {
			code, _ = io.ReadAll(p)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	status := 200
	if s.fns[name] == nil {
		status = 201
	}
	s.fns[name] = &fn.Function{Config: cfg, CodeSize: int64(len(code)), Updated: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	s.code[name] = code
	writeJSONResp(w, status, s.fns[name])
}

func (s *standIn) invoke(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Aloft-Invocation-Type") == "Event" {
		s.invokeAsync(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.bodies = append(s.bodies, string(body))
	s.mu.Unlock()
	if r.URL.Query().Get("log") == "tail" {
		w.Header().Set("X-Aloft-Log-Result", base64.StdEncoding.EncodeToString([]byte("START\nlogged line\nEND")))
	}
	if string(body) == `"fail"` {
		w.Header().Set("X-Aloft-Function-Error", "Unhandled")
		w.Write(fn.ErrorPayload("Boom", "it broke"))
		return
	}
	w.Write(body)
}

func (s *standIn) logsHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	for _, l := range s.logs {
		enc.Encode(l)
	}
	if r.URL.Query().Get("follow") == "true" {
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}
}

// run runs the CLI against s with the given stdin.
func run(t *testing.T, s *standIn, stdin io.Reader, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return runCtx(t.Context(), s, stdin, args...)
}

func runCtx(ctx context.Context, s *standIn, stdin io.Reader, args ...string) (string, string, error) {
	var out, errOut bytes.Buffer
	err := Run(ctx, append([]string{"--url", s.srv.URL, "--token", token}, args...), stdin, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		args []string
		pos  []string
		only string
		f    bool
	}{
		{[]string{"a", "b"}, []string{"a", "b"}, "", false},
		{[]string{"--only", "x", "a"}, []string{"a"}, "x", false},
		{[]string{"a", "--only", "x", "b", "-f"}, []string{"a", "b"}, "x", true},
		{[]string{"a", "--", "-f", "--only"}, []string{"a", "-f", "--only"}, "", false},
		{[]string{"-", "-f"}, []string{"-"}, "", true},
		{nil, nil, "", false},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		only := fs.String("only", "", "")
		f := fs.Bool("f", false, "")
		pos, err := parseArgs(fs, tt.args)
		if err != nil || !slices.Equal(pos, tt.pos) || *only != tt.only || *f != tt.f {
			t.Errorf("parseArgs(%q) = %q, only %q, f %v, err %v; want %q, %q, %v", tt.args, pos, *only, *f, err, tt.pos, tt.only, tt.f)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	s := newStandIn(t)
	tests := []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"get"}, "get: missing NAME (usage: aloft get NAME)"},
		{[]string{"get", "a", "b"}, `get: unexpected argument "b"`},
		{[]string{"ls", "x"}, `ls: unexpected argument "x"`},
		{[]string{"invoke"}, "invoke: missing NAME"},
		{[]string{"invoke", "f", "{}", "--data", "{}"}, "give the payload once"},
		{[]string{"invoke", "f", "--data", "@/does/not/exist"}, "invoke: --data: open /does/not/exist"},
		{[]string{"logs", "f", "--since", "yesterday"}, `--since "yesterday": use a duration like 10m`},
		{[]string{"logs", "f", "--since", "-5m"}, "use a positive duration"},
		{[]string{"logs", "f", "--limit", "-1"}, "--limit -1"},
		{[]string{"logs", "f", "--limit", "many"}, `logs: invalid value "many" for flag -limit`},
		{[]string{"alias"}, "alias needs a subcommand"},
		{[]string{"alias", "move", "f"}, `unknown alias subcommand "move"`},
		{[]string{"alias", "set", "f", "prod"}, "alias set: missing VERSION"},
		{[]string{"alias", "set", "f", "prod", "two"}, `VERSION "two" must be a published version number`},
		{[]string{"alias", "rm", "f"}, "alias rm: missing ALIAS"},
		{[]string{"invoke", "f", "--async", "--log"}, "invoke: --async and --log do not mix: read an async invocation's log with 'aloft logs f'"},
		{[]string{"invoke", "f", "--idempotency-key", "k"}, "--idempotency-key applies to --async invocations only"},
		{[]string{"invocations"}, "invocations: missing NAME"},
		{[]string{"invocations", "f", "--limit", "-1"}, "invocations: --limit -1: use a positive number"},
		{[]string{"dlq"}, "dlq needs a subcommand: ls or redrive (run 'aloft dlq -h')"},
		{[]string{"dlq", "purge", "f"}, `unknown dlq subcommand "purge": use ls or redrive`},
		{[]string{"dlq", "ls"}, "dlq ls: missing NAME (usage: aloft dlq ls NAME)"},
		{[]string{"dlq", "ls", "f", "--limit", "-2"}, "dlq ls: --limit -2"},
		{[]string{"dlq", "redrive", "f", "g"}, `dlq redrive: unexpected argument "g"`},
		{[]string{"schedules", "a", "b"}, `schedules: unexpected argument "b"`},
		{[]string{"triggers"}, "triggers needs a subcommand: ls"},
		{[]string{"triggers", "ls", "x"}, `triggers ls: unexpected argument "x"`},
		{[]string{"queue"}, "queue needs a subcommand: create, ls, rm or send"},
		{[]string{"queue", "--bogus"}, "queue needs a subcommand"},
		{[]string{"queue", "create"}, "queue create: missing NAME"},
		{[]string{"queue", "send", "q"}, "queue send: missing BODY... (usage: aloft queue send NAME BODY...)"},
		{[]string{"queue", "send", "q", "x", "--attr", "novalue"}, `invalid value "novalue" for flag -attr: "novalue": use KEY=VALUE`},
		{[]string{"queue", "send", "q", "x", "--attr", "=v"}, `"=v": use KEY=VALUE`},
		{[]string{"deploy", filepath.Join(t.TempDir(), "none")}, "no such file or directory"},
		{[]string{"deploy", t.TempDir()}, "no aloft.yaml or aloft.yml"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := Run(t.Context(), append([]string{"--url", s.srv.URL}, tt.args...), nil, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run(%q): got %v, want an error containing %q", tt.args, err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			if out.Len() > 0 {
				t.Errorf("stdout got %q on a usage error", out.String())
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"deploy", "-h"}, {"logs", "NAME", "--help"}, {"alias", "-h"}, {"alias", "set", "-h"}} {
		var out, errOut bytes.Buffer
		err := Run(t.Context(), args, nil, &out, &errOut)
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("Run(%q) = %v, want flag.ErrHelp", args, err)
		}
		if !strings.Contains(errOut.String(), "usage") && !strings.Contains(errOut.String(), "Client commands") {
			t.Errorf("Run(%q) printed no usage: %q", args, errOut.String())
		}
	}
	t.Setenv("ALOFT_TOKEN", "env-secret")
	var errOut bytes.Buffer
	Run(t.Context(), []string{"--token", "flag-secret", "invoke", "-h"}, nil, io.Discard, &errOut)
	if strings.Contains(errOut.String(), "secret") {
		t.Errorf("help shows the token:\n%s", errOut.String())
	}

	var b bytes.Buffer
	Usage(&b)
	for _, v := range []string{"deploy", "invoke", "ls", "get", "rm", "logs", "publish", "versions", "alias set", "alias ls", "alias rm"} {
		if !strings.Contains(b.String(), "  "+v+" ") {
			t.Errorf("Usage does not list %q", v)
		}
	}
	for _, v := range []string{"deploy", "invoke", "alias", "logs"} {
		if !IsClientVerb(v) {
			t.Errorf("IsClientVerb(%q) = false", v)
		}
	}
	for _, v := range []string{"serve", "dev", "alias set", ""} {
		if IsClientVerb(v) {
			t.Errorf("IsClientVerb(%q) = true", v)
		}
	}
}

func TestSetupHints(t *testing.T) {
	s := newStandIn(t)
	var out, errOut bytes.Buffer
	err := Run(t.Context(), []string{"ls", "--url", s.srv.URL}, nil, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "set --token or ALOFT_TOKEN") {
		t.Errorf("ls without a token: got %v, want a hint about the token", err)
	}

	// A port nobody listens on: take one and close it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	t.Setenv("ALOFT_URL", dead)
	err = Run(t.Context(), []string{"ls"}, nil, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "is the server running at "+dead) {
		t.Errorf("ls with no server: got %v, want a hint naming %s", err, dead)
	}
}

func TestEnvironment(t *testing.T) {
	s := newStandIn(t)
	t.Setenv("ALOFT_URL", s.srv.URL)
	t.Setenv("ALOFT_TOKEN", token)
	var out, errOut bytes.Buffer
	if err := Run(t.Context(), []string{"ls"}, nil, &out, &errOut); err != nil {
		t.Fatalf("ls with ALOFT_URL and ALOFT_TOKEN: %v", err)
	}
	if !strings.Contains(errOut.String(), "no functions") {
		t.Errorf("stderr = %q, want a note that there are no functions", errOut.String())
	}
}

// writeProject writes an aloft.yaml with a directory source (a), a zip
// source (b) and, if withBad, a function the stand-in refuses.
func writeProject(t *testing.T, withBad bool) (dir string, zip []byte) {
	t.Helper()
	dir = t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "a", "index.js"), []byte("exports.handler = async e => e;\n"), 0o644)
	zip = []byte("PK\x05\x06" + strings.Repeat("\x00", 18))
	os.WriteFile(filepath.Join(dir, "b.zip"), zip, 0o644)
	y := "functions:\n" +
		"  - {name: a, runtime: node, source: ./a, routes: ['GET /a/{x}', '/hooks/{p...}']}\n" +
		"  - {name: b, runtime: http, source: b.zip}\n"
	if withBad {
		y += "  - {name: bad, runtime: node, source: ./a}\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "aloft.yaml"), []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, zip
}

func tarNames(t *testing.T, tgz []byte) []string {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		t.Fatalf("code is not gzip: %v", err)
	}
	tr := tar.NewReader(gz)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatalf("code is not a tar: %v", err)
		}
		names = append(names, strings.TrimPrefix(h.Name, "./"))
	}
}

func TestDeploy(t *testing.T) {
	s := newStandIn(t)
	dir, zip := writeProject(t, false)

	out, _, err := run(t, s, nil, "deploy", dir)
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	want := s.srv.URL + "/fn/a/  GET /a/{x}, /hooks/{p...}\n"
	if !strings.HasPrefix(out, "a  node  created  "+want) || !strings.Contains(out, "b  http  created  "+s.srv.URL+"/fn/b/\n") {
		t.Errorf("deploy printed:\n%s", out)
	}
	if names := tarNames(t, s.code["a"]); !slices.Contains(names, "index.js") {
		t.Errorf("a's code holds %q, want index.js", names)
	}
	if !bytes.Equal(s.code["b"], zip) {
		t.Errorf("b's code = %q, want the zip file as it is", s.code["b"])
	}

	// Again, from the manifest file, only b: updated.
	out, _, err = run(t, s, nil, "deploy", "--only", "b", filepath.Join(dir, "aloft.yaml"))
	if err != nil || out != "b  http  updated  "+s.srv.URL+"/fn/b/\n" {
		t.Errorf("deploy --only b = %q, %v", out, err)
	}
	_, _, err = run(t, s, nil, "deploy", dir, "--only", "zzz")
	if err == nil || !strings.Contains(err.Error(), `--only "zzz": the manifest has no such function (it has a, b)`) {
		t.Errorf("deploy --only zzz: got %v", err)
	}
}

func TestDeployCarriesOnPastFailures(t *testing.T) {
	s := newStandIn(t)
	dir, _ := writeProject(t, true)
	out, _, err := run(t, s, nil, "deploy", dir)
	if err == nil || !strings.Contains(err.Error(), `the server refuses "bad"`) {
		t.Fatalf("deploy: got %v, want the refusal of bad", err)
	}
	if strings.Count(out, "created") != 2 {
		t.Errorf("deploy printed %q, want a and b deployed", out)
	}
}

func TestDeployPackFailure(t *testing.T) {
	s := newStandIn(t)
	dir, _ := writeProject(t, false)
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "a", "escape")); err != nil {
		t.Fatal(err)
	}
	out, _, err := run(t, s, nil, "deploy", dir)
	if err == nil || !strings.HasPrefix(err.Error(), "deploy a: pack ") || !strings.Contains(err.Error(), "escape") {
		t.Fatalf("deploy: got %v, want a pack error for a naming the symlink", err)
	}
	if s.get("a") != nil || !strings.HasPrefix(out, "b  http  created") {
		t.Errorf("deploy printed %q; want a not deployed and b deployed", out)
	}
}

func TestInvoke(t *testing.T) {
	s := newStandIn(t)
	file := filepath.Join(t.TempDir(), "event.json")
	os.WriteFile(file, []byte(`{"from":"file"}`), 0o644)
	tests := []struct {
		name  string
		args  []string
		stdin io.Reader
		sent  string
	}{
		{"argument", []string{"invoke", "f", `{"a":1}`}, nil, `{"a":1}`},
		{"flags after the argument", []string{"invoke", "f", `{"a":2}`, "--qualifier", "prod"}, nil, `{"a":2}`},
		{"dash reads stdin", []string{"invoke", "f", "-"}, strings.NewReader(`{"from":"stdin"}`), `{"from":"stdin"}`},
		{"data literal", []string{"invoke", "--data", `[1]`, "f"}, nil, `[1]`},
		{"data file", []string{"invoke", "f", "--data", "@" + file}, nil, `{"from":"file"}`},
		{"piped stdin", []string{"invoke", "f"}, strings.NewReader(`"piped"`), `"piped"`},
		{"empty stdin", []string{"invoke", "f"}, strings.NewReader(""), `{}`},
		{"no stdin", []string{"invoke", "f"}, nil, `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, err := run(t, s, tt.stdin, tt.args...)
			if err != nil {
				t.Fatalf("invoke: %v", err)
			}
			if out != tt.sent || errOut != "" {
				t.Errorf("stdout %q, stderr %q; want stdout %q (the echo) and no stderr", out, errOut, tt.sent)
			}
			s.mu.Lock()
			got := s.bodies[len(s.bodies)-1]
			s.mu.Unlock()
			if got != tt.sent {
				t.Errorf("server got payload %q, want %q", got, tt.sent)
			}
		})
	}
	if q := s.lastQuery(); q != "" {
		t.Errorf("query of a plain invoke = %q", q)
	}

	out, errOut, err := run(t, s, nil, "invoke", "f", `"fail"`, "--log", "--qualifier", "3")
	if err == nil || err.Error() != "function f failed (Unhandled): it broke" {
		t.Errorf("failing invoke: got error %v", err)
	}
	if out != string(fn.ErrorPayload("Boom", "it broke")) {
		t.Errorf("failing invoke printed %q, want the error JSON", out)
	}
	if errOut != "START\nlogged line\nEND\n" {
		t.Errorf("--log printed %q to stderr", errOut)
	}
	if q := s.lastQuery(); q != "log=tail&qualifier=3" {
		t.Errorf("query = %q, want log=tail&qualifier=3", q)
	}
}

func TestFunctionVerbs(t *testing.T) {
	s := newStandIn(t)
	dir, _ := writeProject(t, false)
	if _, _, err := run(t, s, nil, "deploy", dir); err != nil {
		t.Fatal(err)
	}
	out, _, err := run(t, s, nil, "ls")
	if err != nil {
		t.Fatalf("ls: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "a ") ||
		!strings.Contains(lines[1], "GET /a/{x}, /hooks/{p...}") || !strings.Contains(lines[2], "2026-01-02T03:04:05Z") {
		t.Errorf("ls printed:\n%s", out)
	}

	out, _, err = run(t, s, nil, "get", "a")
	var f fn.Function
	if err != nil || json.Unmarshal([]byte(out), &f) != nil || f.Name != "a" || f.Runtime != fn.RuntimeNode {
		t.Errorf("get a = %q, %v", out, err)
	}
	if _, _, err := run(t, s, nil, "get", "nope"); err == nil || !strings.Contains(err.Error(), `function "nope" not found (not_found, HTTP 404)`) {
		t.Errorf("get nope: got %v", err)
	}

	out, _, err = run(t, s, nil, "publish", "a", "--description", "first")
	if err != nil || out != "published a version 1\n" {
		t.Errorf("publish = %q, %v", out, err)
	}
	out, _, err = run(t, s, nil, "versions", "a")
	if err != nil || !strings.Contains(out, "1        2026-01-02T03:04:05Z  0123456789ab  first") {
		t.Errorf("versions printed %q, %v", out, err)
	}
	out, _, err = run(t, s, nil, "alias", "set", "a", "prod", "1")
	if err != nil || out != "alias prod of a points at version 1\n" {
		t.Errorf("alias set = %q, %v", out, err)
	}
	out, _, err = run(t, s, nil, "alias", "ls", "a")
	if err != nil || !strings.Contains(out, "prod   2        -        live") {
		t.Errorf("alias ls printed %q, %v", out, err)
	}
	out, _, err = run(t, s, nil, "alias", "rm", "a", "prod")
	if err != nil || out != "deleted alias prod of a\n" {
		t.Errorf("alias rm = %q, %v", out, err)
	}
	out, _, err = run(t, s, nil, "rm", "a")
	if err != nil || out != "deleted a\n" || s.get("a") != nil {
		t.Errorf("rm a = %q, %v", out, err)
	}
}

func TestLogs(t *testing.T) {
	s := newStandIn(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
	s.logs = []fn.LogLine{
		{Time: t0, Stream: "platform", InvocationID: "inv-1", Text: "START"},
		{Time: t0, Instance: "i-7", InvocationID: "inv-1", Stream: "stdout", Text: "hello\n"},
		{Time: t0, Instance: "i-7", Stream: "stderr", Text: "between calls"},
	}
	want := "2026-01-02T03:04:05.006Z inv-1 START\n" +
		"2026-01-02T03:04:05.006Z i-7 inv-1 hello\n" +
		"2026-01-02T03:04:05.006Z i-7 between calls\n"
	out, _, err := run(t, s, nil, "logs", "f", "--limit", "5", "--since", "2026-01-01T00:00:00Z")
	if err != nil || out != want {
		t.Errorf("logs printed:\n%s\nerr %v; want:\n%s", out, err, want)
	}
	if q := s.lastQuery(); q != "limit=5&since=2026-01-01T00%3A00%3A00Z" {
		t.Errorf("query = %q", q)
	}

	// Following ends without an error when the context ends.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w := &lineWatcher{want: 3, done: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		errc <- Run(ctx, []string{"--url", s.srv.URL, "--token", token, "logs", "-f", "f", "--since", "10m"}, nil, w, io.Discard)
	}()
	<-w.done
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("logs -f ended with %v, want nil after an interrupt", err)
	}
	if q := s.lastQuery(); !strings.HasPrefix(q, "follow=true&since=") {
		t.Errorf("query = %q", q)
	}
}

// lineWatcher closes done once it has seen want lines.
type lineWatcher struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	want   int
	closed bool
	done   chan struct{}
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.closed && bytes.Count(w.buf.Bytes(), []byte("\n")) >= w.want {
		w.closed = true
		close(w.done)
	}
	return len(p), nil
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"10m":                       now.Add(-10 * time.Minute),
		"1h30m":                     now.Add(-90 * time.Minute),
		"2026-04-30T08:00:00Z":      time.Date(2026, 4, 30, 8, 0, 0, 0, time.UTC),
		"2026-04-30T10:00:00+02:00": time.Date(2026, 4, 30, 8, 0, 0, 0, time.UTC),
	} {
		got, err := parseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

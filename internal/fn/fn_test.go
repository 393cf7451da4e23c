package fn

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	valid := func() Config {
		c := Config{Name: "hello", Runtime: RuntimeLambda}
		c.Normalize()
		return c
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   []string // substrings of the error; none = valid
	}{
		{"defaults are valid", func(*Config) {}, nil},
		{"bad name", func(c *Config) { c.Name = "Hello_World" }, []string{"function name"}},
		{"name too long", func(c *Config) { c.Name = strings.Repeat("a", 65) }, []string{"function name"}},
		{"unknown runtime", func(c *Config) { c.Runtime = "java" }, []string{`runtime "java" is unknown`}},
		{"memory low", func(c *Config) { c.MemoryMB = 64 }, []string{"memory 64 MB"}},
		{"memory high", func(c *Config) { c.MemoryMB = 20000 }, []string{"memory 20000 MB"}},
		{"timeout high", func(c *Config) { c.Timeout = Duration(16 * time.Minute) }, []string{"timeout 16m0s"}},
		{"lambda concurrency", func(c *Config) { c.Concurrency = 4 }, []string{"concurrency 4 is not allowed"}},
		{"scale min above max", func(c *Config) { c.Scale.Min = 5; c.Scale.Max = 2 }, []string{"scale min 5 / max 2"}},
		{"reserved env", func(c *Config) { c.Env = map[string]string{"AWS_LAMBDA_RUNTIME_API": "x"} }, []string{"reserved"}},
		{"bad env name", func(c *Config) { c.Env = map[string]string{"1X": "x"} }, []string{`env name "1X"`}},
		{"NUL in an env value", func(c *Config) { c.Env = map[string]string{"A": "x\x00y"} }, []string{"env A: the value holds a NUL byte"}},
		{"bad route", func(c *Config) { c.Routes = []string{"/v1/x"} }, []string{"belong to Aloft"}},
		{"handler escapes", func(c *Config) { c.Handler = "../bin/sh" }, []string{"handler"}},
		{"route qualifier", func(c *Config) { c.Routes = []string{"/a"}; c.RouteQualifier = "prod" }, nil},
		{"route qualifier a version", func(c *Config) { c.Routes = []string{"/a"}; c.RouteQualifier = "3" }, nil},
		{"route qualifier without routes", func(c *Config) { c.RouteQualifier = "prod" }, []string{`routeQualifier "prod" without routes`}},
		{"bad route qualifier", func(c *Config) { c.Routes = []string{"/a"}; c.RouteQualifier = "a b" }, []string{`routeQualifier: qualifier "a b" is invalid`}},
		{"every problem at once", func(c *Config) { c.MemoryMB = 1; c.Name = "X" }, []string{"memory 1 MB", "function name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.change(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var fe *Error
			if !errors.As(err, &fe) || fe.Status != http.StatusBadRequest {
				t.Fatalf("Validate() = %v, want a 400 *Error", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestNormalizeDefaults(t *testing.T) {
	for _, tt := range []struct {
		rt      Runtime
		handler string
		conc    int
	}{
		{RuntimeLambda, "bootstrap", 1},
		{RuntimeHTTP, "bootstrap", DefaultHTTPConc},
		{RuntimeNode, "index.handler", 1},
		{RuntimePython, "app.handler", 1},
		{RuntimeWasm, "main.wasm", 1},
	} {
		c := Config{Name: "f", Runtime: tt.rt}
		c.Normalize()
		if c.Handler != tt.handler || c.Concurrency != tt.conc || c.MemoryMB != DefaultMemoryMB ||
			c.Timeout.D() != DefaultTimeout || c.Scale.Max != DefaultMaxScale || c.Scale.Idle.D() != DefaultIdle {
			t.Errorf("%s: Normalize gave %+v", tt.rt, c)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%s: defaults do not validate: %v", tt.rt, err)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	for in, want := range map[string]time.Duration{`"30s"`: 30 * time.Second, `"5m"`: 5 * time.Minute, `10`: 10 * time.Second, `1.5`: 1500 * time.Millisecond} {
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err != nil || d.D() != want {
			t.Errorf("unmarshal %s = %v, %v; want %v", in, d.D(), err, want)
		}
	}
	for _, bad := range []string{`"soon"`, `true`, `{}`} {
		var d Duration
		if err := json.Unmarshal([]byte(bad), &d); err == nil {
			t.Errorf("unmarshal %s succeeded, want an error", bad)
		}
	}
	b, _ := json.Marshal(Duration(90 * time.Second))
	if string(b) != `"1m30s"` {
		t.Errorf("marshal = %s", b)
	}
}

func TestRouteMatch(t *testing.T) {
	tests := []struct {
		route, method, path string
		ok                  bool
		params              map[string]string
	}{
		{"GET /users/{id}", "GET", "/users/42", true, map[string]string{"id": "42"}},
		{"GET /users/{id}", "HEAD", "/users/42", true, map[string]string{"id": "42"}},
		{"GET /users/{id}", "POST", "/users/42", false, nil},
		{"GET /users/{id}", "GET", "/users/", false, nil},
		{"GET /users/{id}", "GET", "/users/42/x", false, nil},
		{"/hooks/{rest...}", "POST", "/hooks/a/b/c", true, map[string]string{"rest": "a/b/c"}},
		{"/hooks/{rest...}", "POST", "/hooks/", true, map[string]string{"rest": ""}},
		{"ANY /api/{proxy+}", "POST", "/api/a/b", true, map[string]string{"proxy": "a/b"}},
		{"ANY /", "DELETE", "/", true, nil},
		{"/", "GET", "/x", false, nil},
		{"/a/", "GET", "/a/", true, nil},
		{"/a/", "GET", "/a", false, nil},
	}
	for _, tt := range tests {
		r, err := ParseRoute(tt.route)
		if err != nil {
			t.Fatalf("ParseRoute(%q): %v", tt.route, err)
		}
		params, ok := r.Match(tt.method, tt.path)
		if ok != tt.ok {
			t.Errorf("%q.Match(%s %s) = %v, want %v", tt.route, tt.method, tt.path, ok, tt.ok)
			continue
		}
		for k, v := range tt.params {
			if params[k] != v {
				t.Errorf("%q.Match(%s %s) params %v, want %v", tt.route, tt.method, tt.path, params, tt.params)
			}
		}
	}
}

func TestParseRouteErrors(t *testing.T) {
	for _, bad := range []string{"", "users", "FETCH /x", "/a//b", "/a/{}", "/a/{x}/{x}", "/a/{r...}/b", "/a/{r+}/b", "/a/{+}", "/a/x{y}", "/a/../b", "/v1/functions", "/fn/x", "/healthz"} {
		if _, err := ParseRoute(bad); err == nil {
			t.Errorf("ParseRoute(%q) succeeded, want an error", bad)
		}
	}
}

// Routes that match the same requests have one Key, however their
// wildcards are named and spelled.
func TestRouteKey(t *testing.T) {
	for _, same := range [][2]string{
		{"get /a/{p+}", "GET /a/{rest...}"}, {"/a/{id}/b", "ANY /a/{name}/b"}, {"/a/", "/a/"}, {" / ", "/"},
	} {
		a, errA := ParseRoute(same[0])
		b, errB := ParseRoute(same[1])
		if errA != nil || errB != nil || a.Key() != b.Key() {
			t.Errorf("keys of %q and %q: %q, %q (%v, %v); want them equal", same[0], same[1], a.Key(), b.Key(), errA, errB)
		}
	}
	for _, differ := range [][2]string{{"GET /a/{x}", "POST /a/{x}"}, {"/a/{x}", "/a/{x...}"}, {"/a", "/a/"}, {"/a/{x}", "/a/x"}} {
		a, _ := ParseRoute(differ[0])
		b, _ := ParseRoute(differ[1])
		if a.Key() == b.Key() {
			t.Errorf("%q and %q share the key %q", differ[0], differ[1], a.Key())
		}
	}
}

func TestRouteSpecificity(t *testing.T) {
	lit, _ := ParseRoute("GET /users/me")
	param, _ := ParseRoute("GET /users/{id}")
	rest, _ := ParseRoute("/users/{rest...}")
	if !(lit.Specificity() > param.Specificity() && param.Specificity() > rest.Specificity()) {
		t.Errorf("specificity order wrong: %d %d %d", lit.Specificity(), param.Specificity(), rest.Specificity())
	}
}

// FuzzParseRoute: parsing never panics, a parsed route re-parses to itself,
// and matching never panics.
func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{"GET /users/{id}", "/hooks/{rest...}", "ANY /", "/a/", "post /x/{y}/z"} {
		f.Add(s, "/users/1")
	}
	f.Fuzz(func(t *testing.T, route, path string) {
		r, err := ParseRoute(route)
		if err != nil {
			return
		}
		again, err := ParseRoute(r.Raw)
		if err != nil || again.Raw != r.Raw {
			t.Fatalf("re-parse of %q (from %q): %q, %v", r.Raw, route, again.Raw, err)
		}
		r.Match("GET", path)
	})
}

func TestIsNameToken(t *testing.T) {
	for s, want := range map[string]bool{
		"default": true, "a-b_C9": true, "": false, "a.b": false, "a*": false, "a>": false, "a b": false, "é": false,
	} {
		if got := IsNameToken(s); got != want {
			t.Errorf("IsNameToken(%q) = %v, want %v", s, got, want)
		}
	}
}

package fn

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Runtime says how an instance talks to Aloft.
type Runtime string

const (
	// RuntimeLambda runs an executable `bootstrap` speaking the Lambda Runtime API.
	RuntimeLambda Runtime = "lambda"
	// RuntimeNode runs a Lambda-style Node.js handler through Aloft's bootstrap.
	RuntimeNode Runtime = "node"
	// RuntimePython runs a Lambda-style Python handler through Aloft's bootstrap.
	RuntimePython Runtime = "python"
	// RuntimeHTTP runs any program that serves HTTP on $PORT.
	RuntimeHTTP Runtime = "http"
	// RuntimeWasm runs a WebAssembly module: a WASI command module (the
	// WAGI/CGI contract, a fresh instance per request) or a reactor module
	// exporting Aloft's handler ABI (reused instances).
	RuntimeWasm Runtime = "wasm"
)

// OneRequestPerInstance reports whether an instance of the runtime serves
// one request at a time (its concurrency is fixed at 1).
func (r Runtime) OneRequestPerInstance() bool {
	return r.EventStyle() || r == RuntimeWasm
}

// EventStyle reports whether the runtime takes Lambda-style events (as
// opposed to raw HTTP requests).
func (r Runtime) EventStyle() bool {
	return r == RuntimeLambda || r == RuntimeNode || r == RuntimePython
}

// Limits and defaults of a function's configuration.
const (
	MaxNameLen        = 64
	MinMemoryMB       = 128
	MaxMemoryMB       = 10240
	DefaultMemoryMB   = 128
	MinTimeout        = time.Second
	MaxTimeout        = 15 * time.Minute
	DefaultTimeout    = 3 * time.Second
	DefaultIdle       = 5 * time.Minute
	DefaultMaxScale   = 10
	DefaultHTTPConc   = 8
	MaxConcurrency    = 1000
	MaxScaleInstances = 1000
	DefaultTenant     = "default"
	LatestVersion     = "$LATEST"
	maxEnvBytes       = 4096
	maxRoutesPerFunc  = 64
)

// Scale bounds a function's instances.
type Scale struct {
	// Min instances kept warm (0 = scale to zero).
	Min int `json:"min"`
	// Max instances at once.
	Max int `json:"max"`
	// Idle is how long an unused instance lives before it stops.
	Idle Duration `json:"idle"`
}

// Config is what a user sets on a function. The zero value of every optional
// field means "default"; Normalize fills the defaults in.
type Config struct {
	Name    string            `json:"name"`
	Runtime Runtime           `json:"runtime"`
	Handler string            `json:"handler,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	// MemoryMB caps the instance's memory.
	MemoryMB int `json:"memory,omitempty"`
	// Timeout of one invocation.
	Timeout Duration `json:"timeout,omitempty"`
	// Concurrency is how many requests one instance serves at once
	// (lambda, node, python: always 1).
	Concurrency int   `json:"concurrency,omitempty"`
	Scale       Scale `json:"scale"`
	// Network grants egress; off, the instance has only its own loopback.
	Network bool `json:"network,omitempty"`
	// Routes are HTTP routes like "GET /users/{id}" or "/hooks/{path...}".
	Routes []string `json:"routes,omitempty"`
	// RouteQualifier is the version or alias the routes run (default
	// $LATEST), as an API Gateway integration names a Lambda alias.
	RouteQualifier string `json:"routeQualifier,omitempty"`
	// Events are the function's triggers other than HTTP: schedules,
	// queues and NATS subjects.
	Events []Event `json:"events,omitempty"`
	// Async configures asynchronous invocations: retries, maximum event
	// age and destinations.
	Async Async `json:"async,omitzero"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// ValidateName reports whether name is a valid function name.
func ValidateName(name string) error {
	if name == "" {
		return Invalid("function name is empty: use lower-case letters, digits and '-'")
	}
	if len(name) > MaxNameLen || !nameRE.MatchString(name) {
		return Invalid("function name %q is invalid: use 1-%d lower-case letters, digits and '-', not starting or ending with '-'", name, MaxNameLen)
	}
	return nil
}

// SplitQualified splits a function reference, NAME or NAME:QUALIFIER (a
// version number or an alias, as Lambda takes a function name), and checks
// the name; the qualifier is "" without a colon.
func SplitQualified(ref string) (name, qualifier string, err error) {
	name, qualifier, colon := strings.Cut(ref, ":")
	if err := ValidateName(name); err != nil {
		return "", "", err
	}
	if colon && qualifier == "" {
		return "", "", Invalid("%q names no version after the ':': write %s:1 or %s:ALIAS, or %s for $LATEST", ref, name, name, name)
	}
	return name, qualifier, nil
}

var envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// reservedEnv are set by Aloft and cannot be overridden.
var reservedEnv = map[string]bool{
	"AWS_LAMBDA_RUNTIME_API": true, "_LAMBDA_SERVER_PORT": true, "_HANDLER": true,
	"LAMBDA_TASK_ROOT": true, "LAMBDA_RUNTIME_DIR": true, "PORT": true,
	"AWS_LAMBDA_FUNCTION_NAME": true, "AWS_LAMBDA_FUNCTION_VERSION": true,
	"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": true,
}

// Normalize fills defaults in c.
func (c *Config) Normalize() {
	if c.MemoryMB == 0 {
		c.MemoryMB = DefaultMemoryMB
	}
	if c.Timeout == 0 {
		c.Timeout = Duration(DefaultTimeout)
	}
	if c.Concurrency == 0 {
		c.Concurrency = 1
		if c.Runtime == RuntimeHTTP {
			c.Concurrency = DefaultHTTPConc
		}
	}
	if c.Scale.Max == 0 {
		c.Scale.Max = DefaultMaxScale
	}
	if c.Scale.Idle == 0 {
		c.Scale.Idle = Duration(DefaultIdle)
	}
	if c.Handler == "" {
		switch c.Runtime {
		case RuntimeLambda, RuntimeHTTP:
			c.Handler = "bootstrap"
		case RuntimeWasm:
			c.Handler = "main.wasm"
		case RuntimeNode:
			c.Handler = "index.handler"
		case RuntimePython:
			c.Handler = "app.handler"
		}
	}
}

// Validate returns every problem with c, joined; nil if c is valid.
// Call Normalize first.
func (c *Config) Validate() error {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if err := ValidateName(c.Name); err != nil {
		add("%s", err.Error())
	}
	switch c.Runtime {
	case RuntimeLambda, RuntimeNode, RuntimePython, RuntimeHTTP, RuntimeWasm:
	case "":
		add("runtime is missing: use one of lambda, node, python, http, wasm")
	default:
		add("runtime %q is unknown: use one of lambda, node, python, http, wasm", c.Runtime)
	}
	if c.MemoryMB < MinMemoryMB || c.MemoryMB > MaxMemoryMB {
		add("memory %d MB is out of range: use %d-%d", c.MemoryMB, MinMemoryMB, MaxMemoryMB)
	}
	if t := c.Timeout.D(); t < MinTimeout || t > MaxTimeout {
		add("timeout %s is out of range: use 1s-15m", t)
	}
	if c.Runtime.OneRequestPerInstance() && c.Concurrency != 1 {
		add("concurrency %d is not allowed for runtime %s: it serves one request per instance (use 1)", c.Concurrency, c.Runtime)
	}
	if c.Concurrency < 1 || c.Concurrency > MaxConcurrency {
		add("concurrency %d is out of range: use 1-%d", c.Concurrency, MaxConcurrency)
	}
	if c.Scale.Min < 0 || c.Scale.Max < 1 || c.Scale.Max > MaxScaleInstances || c.Scale.Min > c.Scale.Max {
		add("scale min %d / max %d is invalid: use 0 <= min <= max, 1 <= max <= %d", c.Scale.Min, c.Scale.Max, MaxScaleInstances)
	}
	if c.Scale.Idle.D() < time.Second || c.Scale.Idle.D() > 24*time.Hour {
		add("scale idle %s is out of range: use 1s-24h", c.Scale.Idle.D())
	}
	if err := validateHandler(c.Runtime, c.Handler); err != nil {
		add("%s", err)
	}
	size := 0
	for _, k := range sortedKeys(c.Env) {
		if !envKeyRE.MatchString(k) {
			add("env name %q is invalid: use letters, digits and '_', not starting with a digit", k)
		}
		if reservedEnv[k] {
			add("env name %q is reserved: Aloft sets it", k)
		}
		if strings.IndexByte(c.Env[k], 0) >= 0 {
			add("env %s: the value holds a NUL byte, which no process environment can carry", k)
		}
		size += len(k) + len(c.Env[k])
	}
	if size > maxEnvBytes {
		add("env is %d bytes: keep it under %d", size, maxEnvBytes)
	}
	if len(c.Routes) > maxRoutesPerFunc {
		add("%d routes: at most %d per function", len(c.Routes), maxRoutesPerFunc)
	}
	for _, r := range c.Routes {
		if _, err := ParseRoute(r); err != nil {
			add("%s", err)
		}
	}
	if q := c.RouteQualifier; q != "" {
		if len(c.Routes) == 0 {
			add("routeQualifier %q without routes: it says which version the routes run; declare routes or remove it", q)
		} else if q != LatestVersion {
			if err := validateQualifier(q); err != nil {
				add("routeQualifier: %s", err)
			}
		}
	}
	c.validateEvents(add)
	if len(errs) == 0 {
		return nil
	}
	return Invalid("%s", strings.Join(errs, "; "))
}

var handlerRE = regexp.MustCompile(`^[A-Za-z0-9_./-]+\.[A-Za-z_$][A-Za-z0-9_$]*$`)

func validateHandler(rt Runtime, h string) error {
	switch rt {
	case RuntimeNode, RuntimePython:
		if !handlerRE.MatchString(h) || strings.Contains(h, "..") || strings.HasPrefix(h, "/") {
			return errors.New("handler " + fmt.Sprintf("%q", h) + " is invalid: use file.function, e.g. index.handler")
		}
	case RuntimeLambda, RuntimeHTTP, RuntimeWasm:
		if strings.Contains(h, "..") || strings.HasPrefix(h, "/") {
			return fmt.Errorf("handler %q is invalid: name a file inside the code package", h)
		}
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Function is a function's $LATEST state as stored.
type Function struct {
	Tenant string `json:"tenant"`
	Config
	// CodeSHA256 is the hex sha256 of the code package (a tar.gz).
	CodeSHA256 string    `json:"code_sha256"`
	CodeSize   int64     `json:"code_size"`
	Revision   string    `json:"revision"`
	Updated    time.Time `json:"updated"`
	// LatestPublished is the highest published version number (0: none).
	LatestPublished int `json:"latest_published,omitempty"`
}

// Version is an immutable published version of a function.
type Version struct {
	Tenant string `json:"tenant"`
	Number int    `json:"version"`
	Config
	CodeSHA256  string    `json:"code_sha256"`
	CodeSize    int64     `json:"code_size"`
	Revision    string    `json:"revision"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
}

// Alias names a published version.
type Alias struct {
	Tenant      string    `json:"tenant"`
	Function    string    `json:"function"`
	Name        string    `json:"name"`
	Version     int       `json:"version"`
	Description string    `json:"description,omitempty"`
	Updated     time.Time `json:"updated"`
}

var aliasRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_-]{0,127}$`)

// ValidateAliasName reports whether name can be an alias (it must not look
// like a version number or $LATEST).
func ValidateAliasName(name string) error {
	if !aliasRE.MatchString(name) {
		return Invalid("alias name %q is invalid: start with a letter, then letters, digits, '-' or '_' (at most 128)", name)
	}
	return nil
}

// IsNameToken reports whether s is a non-empty run of ASCII letters, digits,
// '-' and '_': what tenants, function names and queue names are made of,
// and so a safe token of a NATS subject or key.
func IsNameToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		ok := c == '-' || c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
		if !ok {
			return false
		}
	}
	return true
}

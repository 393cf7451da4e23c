// Package manifest reads aloft.yaml, the file that describes a project's
// functions and queues for `aloft deploy` and `aloft dev`:
//
//	queues:                    # created (if missing) before any function
//	  - name: orders
//	  - name: failed
//	functions:
//	  - name: hello
//	    runtime: lambda
//	    source: ./hello        # a directory, or a .zip / .tar.gz file
//	    routes: ["GET /hello/{name}"]
//	    events:
//	      - schedule: cron(0 12 * * ? *)   # or rate(5 minutes), or "*/5 * * * *"
//	        timezone: Europe/Paris
//	      - queue: orders                  # batches of messages (SQS-style event)
//	        batchSize: 25
//	        batchWindow: 2s
//	      - subject: sensors.*.temperature # raw NATS messages
//	    async:                 # invocations with X-Aloft-Invocation-Type: Event
//	      retries: 1
//	      maxAge: 1h
//	      onFailure: queue:failed          # or function:NAME; also onSuccess
//
// Every function takes fn.Config's fields under their JSON names (name,
// runtime, handler, env, memory, timeout, concurrency, scale {min, max,
// idle}, network, routes, events, async) plus source, resolved against the
// manifest's directory. An event sets exactly one of schedule (with
// timezone, input), queue (with batchSize, batchWindow, concurrency,
// retries) or subject, and may set qualifier and disabled. Parsing is
// strict: an unknown key is an error, inside an event or async too, and
// every problem in the file is reported at once, each with where it is.
// Schedule expressions and whether queues exist are checked by the server
// at deploy time.
package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"aloft/internal/fn"
)

// File names Load looks for in a directory, in order.
var fileNames = []string{"aloft.yaml", "aloft.yml"}

// maxSize caps a manifest file; a real one is a few KB.
const maxSize = 1 << 20

// Function is one function of a manifest: its configuration, normalized and
// validated, and where its code is.
type Function struct {
	fn.Config
	// Source is the absolute path of the function's code: a directory, or a
	// .zip / .tar.gz / .tgz file.
	Source string `json:"source"`
}

// Queue is a queue a manifest declares; deploy creates it if it is missing.
type Queue struct {
	Name string `json:"name"`
}

// Manifest is a parsed aloft.yaml.
type Manifest struct {
	Functions []Function
	// Queues are the declared queues, in the file's order.
	Queues []Queue
	// Dir is the absolute directory the manifest's paths are relative to.
	Dir string
}

// Function returns the function named name, or false.
func (m *Manifest) Function(name string) (Function, bool) {
	for _, f := range m.Functions {
		if f.Name == name {
			return f, true
		}
	}
	return Function{}, false
}

// Load reads and parses the manifest at path: a file, or a directory holding
// aloft.yaml (or aloft.yml). Relative sources resolve against the file's
// directory. It returns an error if the file is missing, unreadable, over
// 1 MiB, or not a valid manifest (see Parse).
func Load(path string) (*Manifest, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("load manifest: %w", err)
	}
	if st.IsDir() {
		file := ""
		for _, n := range fileNames {
			if _, err := os.Stat(filepath.Join(path, n)); err == nil {
				file = filepath.Join(path, n)
				break
			}
		}
		if file == "" {
			return nil, fmt.Errorf("load manifest: no aloft.yaml or aloft.yml in %s: create one or name the file", path)
		}
		path = file
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load manifest: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("load manifest %s: %w", path, err)
	}
	if len(data) > maxSize {
		return nil, fmt.Errorf("load manifest %s: the file is over %d bytes", path, maxSize)
	}
	m, err := Parse(data, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", path, err)
	}
	return m, nil
}

// Parse parses manifest data whose relative sources resolve against dir. It
// returns an error if the YAML is malformed or has duplicate keys, or, joined
// in one error naming each one's place: an unknown key (at the top level, in
// a function, an event, async, scale or a queue), a value of the wrong type,
// a function whose configuration fn.Config.Validate refuses, a missing or
// nonexistent source or one that is neither a directory nor a .zip/.tar.gz
// file, a function name used twice, a route served by two functions, a
// queue triggering two functions, an invalid or repeated queue name, or no
// functions at all.
func Parse(data []byte, dir string) (*Manifest, error) {
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolve manifest directory: %w", err)
	}
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("read YAML: %w", err)
	}
	var p problems
	var top map[string]json.RawMessage
	if err := json.Unmarshal(j, &top); err != nil {
		return nil, errors.New("the manifest must be a mapping with a functions: list")
	}
	for _, k := range sortedKeys(top) {
		if k != "functions" && k != "queues" {
			p.add("unknown key %q at the top level: use functions or queues", k)
		}
	}
	m := &Manifest{Dir: absDir}
	m.Queues = parseQueues(top["queues"], &p)
	var raws []json.RawMessage
	if fs := top["functions"]; fs != nil && !bytes.Equal(fs, []byte("null")) {
		if err := json.Unmarshal(fs, &raws); err != nil {
			p.add("functions must be a list of functions, each starting with '- name: ...'")
		}
	}
	if len(raws) == 0 && len(p) == 0 {
		p.add("no functions: list at least one under functions:")
	}

	names := map[string]int{}
	routes := map[string]routeUse{}
	consumers := map[string]consumer{}
	for i, raw := range raws {
		f, errs := parseFunction(raw, absDir)
		loc := location(i, f.Name)
		for _, e := range errs {
			p.add("%s: %s", loc, e)
		}
		if f.Name != "" {
			if j, ok := names[f.Name]; ok {
				p.add("%s: name %q is already used by functions[%d]: names must be unique", loc, f.Name, j)
			} else {
				names[f.Name] = i
			}
		}
		for _, r := range f.Routes {
			rt, err := fn.ParseRoute(r)
			if err != nil {
				continue // Validate reported it
			}
			key := rt.Key()
			if u, ok := routes[key]; ok {
				p.add("%s: route %q is also served by %s as %q: give each route one function", loc, r, u.loc, u.raw)
				continue
			}
			routes[key] = routeUse{loc: loc, raw: r}
		}
		for _, ev := range f.EventsOf(fn.EventQueue) {
			q := ev.Event.Queue
			if u, ok := consumers[q]; ok && u.index != i {
				p.add("%s: events[%d]: queue %q also triggers %s: a queue feeds one function (send to a second queue, or use a destination)", loc, ev.Index, q, u.loc)
				continue
			}
			consumers[q] = consumer{index: i, loc: loc}
		}
		m.Functions = append(m.Functions, f)
	}
	if len(p) > 0 {
		return nil, p
	}
	return m, nil
}

// parseQueues decodes the top-level queues: list, adding its problems to p.
func parseQueues(raw json.RawMessage, p *problems) []Queue {
	if raw == nil || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(raw, &raws); err != nil {
		p.add("queues must be a list of queues, each like '- name: orders'")
		return nil
	}
	var out []Queue
	seen := map[string]int{}
	for i, r := range raws {
		loc := fmt.Sprintf("queues[%d]", i)
		var obj map[string]json.RawMessage
		if json.Unmarshal(r, &obj) != nil {
			p.add("%s: a queue must be a mapping like '- name: orders'", loc)
			continue
		}
		var q Queue
		for _, e := range decodeStrict(r, reflect.ValueOf(&q).Elem(), "") {
			p.add("%s: %s", loc, e)
		}
		switch j, dup := seen[q.Name]; {
		case q.Name == "":
			p.add("%s: name is missing: name the queue, e.g. '- name: orders'", loc)
			continue
		case dup:
			p.add("%s: queue %q is already declared by queues[%d]: declare each queue once", loc, q.Name, j)
			continue
		}
		if err := fn.ValidateQueueName(q.Name); err != nil {
			p.add("%s: %s", loc, err.Error())
		}
		seen[q.Name] = i
		out = append(out, q)
	}
	return out
}

type routeUse struct{ loc, raw string }

// consumer is the function a queue triggers: its index and location.
type consumer struct {
	index int
	loc   string
}

func location(i int, name string) string {
	if name == "" {
		return fmt.Sprintf("functions[%d]", i)
	}
	return fmt.Sprintf("functions[%d] (name %q)", i, name)
}

// parseFunction decodes, normalizes and validates one function, returning
// every problem found.
func parseFunction(raw json.RawMessage, dir string) (Function, []string) {
	var f Function
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return f, []string{"a function must be a mapping of keys to values, e.g. '- name: hello'"}
	}
	errs := decodeStrict(raw, reflect.ValueOf(&f).Elem(), "")
	if len(errs) > 0 && f.Name == "" {
		// Keep the name for the location even if the mapping was bad.
		var named struct {
			Name string `json:"name"`
		}
		if json.Unmarshal(raw, &named) == nil {
			f.Name = named.Name
		}
	}
	f.Normalize()
	if err := f.Validate(); err != nil {
		var fe *fn.Error
		if errors.As(err, &fe) {
			errs = append(errs, fe.Message)
		} else {
			errs = append(errs, err.Error())
		}
	}
	src, err := resolveSource(f.Source, dir)
	if err != nil {
		errs = append(errs, err.Error())
	}
	f.Source = src
	return f, errs
}

func resolveSource(src, dir string) (string, error) {
	if src == "" {
		return "", errors.New("source is missing: name the function's directory or .zip/.tar.gz file, relative to the manifest")
	}
	abs := src
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(dir, src)
	}
	abs = filepath.Clean(abs)
	st, err := os.Stat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return abs, fmt.Errorf("source %q does not exist (looked for %s)", src, abs)
	case err != nil:
		return abs, fmt.Errorf("source %q: %v", src, err)
	case st.IsDir():
		return abs, nil
	case st.Mode().IsRegular() && isArchiveName(abs):
		return abs, nil
	}
	return abs, fmt.Errorf("source %q is neither a directory nor a .zip/.tar.gz/.tgz file", src)
}

// isArchiveName reports whether a file's name says it is a code archive.
func isArchiveName(name string) bool {
	n := strings.ToLower(name)
	return strings.HasSuffix(n, ".zip") || strings.HasSuffix(n, ".tar.gz") || strings.HasSuffix(n, ".tgz")
}

// decodeStrict decodes the JSON object raw into the struct v key by key, so
// that every unknown key and every badly typed value is reported, each with
// its path (prefix + key). Nested plain structs (scale, async) and lists of
// them (events) are decoded the same way.
func decodeStrict(raw json.RawMessage, v reflect.Value, prefix string) []string {
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		what := "a function"
		if prefix != "" {
			what = strings.TrimSuffix(prefix, ".")
		}
		return []string{fmt.Sprintf("%s must be a mapping of keys to values", what)}
	}
	fields := jsonFields(v.Type())
	var errs []string
	for _, k := range sortedKeys(obj) {
		idx, ok := fields[k]
		if !ok {
			errs = append(errs, unknownKey(prefix, k, fields))
			continue
		}
		fv := v.FieldByIndex(idx)
		if fv.Kind() == reflect.Struct && !fv.Addr().Type().Implements(unmarshalerType) {
			errs = append(errs, decodeStrict(obj[k], fv, prefix+k+".")...)
			continue
		}
		if fv.Kind() == reflect.Map && fv.Type().Key().Kind() == reflect.String {
			errs = append(errs, decodeMap(obj[k], fv, prefix+k)...)
			continue
		}
		if fv.Kind() == reflect.Slice && isPlainStruct(fv.Type().Elem()) {
			errs = append(errs, decodeList(obj[k], fv, prefix+k)...)
			continue
		}
		if err := json.Unmarshal(obj[k], fv.Addr().Interface()); err != nil {
			errs = append(errs, fmt.Sprintf("%s%s: %s", prefix, k, explain(err)))
		}
	}
	return errs
}

// isPlainStruct reports whether t is a struct that decodeStrict decodes
// field by field (one without its own JSON decoding).
func isPlainStruct(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && !reflect.PointerTo(t).Implements(unmarshalerType)
}

// decodeList decodes a JSON array into the slice of structs v element by
// element, so every problem is reported with its index (events[1].queue).
func decodeList(raw json.RawMessage, v reflect.Value, path string) []string {
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return []string{fmt.Sprintf("%s: got %s, want a list of mappings", path, jsonKind(raw))}
	}
	var errs []string
	out := reflect.MakeSlice(v.Type(), len(items), len(items))
	for i, item := range items {
		errs = append(errs, decodeStrict(item, out.Index(i), fmt.Sprintf("%s[%d].", path, i))...)
	}
	v.Set(out)
	return errs
}

// decodeMap decodes a JSON object into the map v entry by entry, so every
// badly typed value is reported with its key (env.DEBUG).
func decodeMap(raw json.RawMessage, v reflect.Value, path string) []string {
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return []string{fmt.Sprintf("%s: got %s, want %s", path, jsonKind(raw), kindWord(v.Type()))}
	}
	if v.IsNil() {
		v.Set(reflect.MakeMapWithSize(v.Type(), len(obj)))
	}
	var errs []string
	for _, k := range sortedKeys(obj) {
		ev := reflect.New(v.Type().Elem())
		if err := json.Unmarshal(obj[k], ev.Interface()); err != nil {
			msg := explain(err)
			if ev.Elem().Kind() == reflect.String {
				msg += " (quote the value)"
			}
			errs = append(errs, fmt.Sprintf("%s.%s: %s", path, k, msg))
			continue
		}
		v.SetMapIndex(reflect.ValueOf(k).Convert(v.Type().Key()), ev.Elem())
	}
	return errs
}

// jsonKind names the kind of a JSON value as encoding/json's errors do.
func jsonKind(raw json.RawMessage) string {
	switch b := bytes.TrimSpace(raw); {
	case len(b) == 0:
		return "nothing"
	case b[0] == '"':
		return "string"
	case b[0] == '[':
		return "array"
	case b[0] == '{':
		return "object"
	case b[0] == 't' || b[0] == 'f':
		return "bool"
	}
	return "number"
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

func unknownKey(prefix, k string, fields map[string][]int) string {
	for name := range fields {
		if strings.EqualFold(name, k) {
			return fmt.Sprintf("unknown key %q: did you mean %q?", prefix+k, prefix+name)
		}
	}
	known := sortedKeys(fields)
	return fmt.Sprintf("unknown key %q: use one of %s", prefix+k, strings.Join(known, ", "))
}

// jsonFields maps the JSON names of t's fields (embedded structs' included)
// to their index paths.
func jsonFields(t reflect.Type) map[string][]int {
	out := map[string][]int{}
	for _, f := range reflect.VisibleFields(t) {
		if f.Anonymous || !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Index
	}
	return out
}

// explain turns a JSON decoding error into words about the value.
func explain(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("got %s, want %s", te.Value, kindWord(te.Type))
	}
	return err.Error()
}

func kindWord(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Pointer:
		return kindWord(t.Elem())
	case reflect.Slice, reflect.Array:
		return "a list of " + strings.TrimPrefix(kindWord(t.Elem()), "a ") + "s"
	case reflect.Map:
		return "a mapping of names to " + strings.TrimPrefix(kindWord(t.Elem()), "a ") + "s"
	}
	return "a " + t.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// problems is every problem found in a manifest.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

func (p problems) Error() string {
	if len(p) == 1 {
		return p[0]
	}
	return fmt.Sprintf("%d problems:\n  %s", len(p), strings.Join(p, "\n  "))
}

package manifest

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aloft/internal/fn"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/cases")

// render is what a golden file holds for a manifest: the parsed queues and
// functions with sources relative to the manifest, or the error, with the
// absolute testdata directory replaced by $DIR.
func render(t *testing.T, m *Manifest, err error, dir string) string {
	t.Helper()
	if err != nil {
		return "error:\n" + strings.ReplaceAll(err.Error(), dir, "$DIR") + "\n"
	}
	fs := make([]Function, len(m.Functions))
	for i, f := range m.Functions {
		rel, rerr := filepath.Rel(m.Dir, f.Source)
		if rerr != nil {
			t.Fatal(rerr)
		}
		f.Source = filepath.ToSlash(rel)
		fs[i] = f
	}
	out := struct {
		Queues    []Queue    `json:"queues,omitempty"`
		Functions []Function `json:"functions"`
	}{m.Queues, fs}
	b, jerr := json.MarshalIndent(out, "", "  ")
	if jerr != nil {
		t.Fatal(jerr)
	}
	return string(b) + "\n"
}

func TestGolden(t *testing.T) {
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	inputs, err := filepath.Glob("testdata/cases/*.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no cases in testdata/cases: %v", err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Parse(data, "testdata")
			if strings.HasPrefix(name, "valid-") != (err == nil) {
				t.Errorf("Parse: err = %v; cases named valid-* must parse, others must fail", err)
			}
			got := render(t, m, err, dir)
			golden := strings.TrimSuffix(in, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Parse(%s):\n--- got\n%s--- want\n%s", in, got, want)
			}
		})
	}
}

func TestParseTable(t *testing.T) {
	const head = "functions:\n  - name: a\n    runtime: node\n    source: ./src/hello\n"
	tests := []struct {
		name string
		yaml string
		// want are substrings of the error; none means Parse must succeed.
		want []string
	}{
		{"defaults filled in", head, nil},
		{"timeout in seconds", head + "    timeout: 90\n", nil},
		{"timeout out of range", head + "    timeout: 20m\n", []string{`functions[0] (name "a"): timeout 20m0s is out of range`}},
		{"memory too small", head + "    memory: 64\n", []string{`functions[0] (name "a"): memory 64 MB is out of range: use 128-10240`}},
		{"unknown key named", head + "    colour: blue\n", []string{`unknown key "colour"`}},
		{"unknown nested key named", head + "    scale: {mni: 1}\n", []string{`unknown key "scale.mni"`}},
		{"case hint", head + "    Runtime: node\n", []string{`unknown key "Runtime": did you mean "runtime"?`}},
		{"all problems at once", head + "    memory: 1\n    colour: blue\n  - name: a\n    runtime: node\n",
			[]string{"4 problems:", `memory 1 MB`, `"colour"`, `functions[1] (name "a"): source is missing`, `name "a" is already used by functions[0]`}},
		{"route clash despite wildcard names", head + "    routes: ['/x/{a}']\n  - name: b\n    runtime: node\n    source: ./src/hello\n    routes: ['ANY /x/{b}']\n",
			[]string{`functions[1] (name "b"): route "ANY /x/{b}" is also served by functions[0] (name "a") as "/x/{a}"`}},
		{"same path, different methods", head + "    routes: ['GET /x']\n  - name: b\n    runtime: node\n    source: ./src/hello\n    routes: ['POST /x', '/x']\n", nil},
		{"absolute source", "functions:\n  - name: a\n    runtime: node\n    source: " + mustAbs(t, "testdata/src/hello") + "\n", nil},
		{"events of every kind", head + "    events: [{schedule: rate(5 minutes)}, {queue: q, batchSize: 5}, {subject: a.b}]\n    async: {retries: 0}\n", nil},
		{"event with two sources", head + "    events: [{schedule: rate(5 minutes)}, {schedule: rate(1 hour), queue: q}]\n",
			[]string{`functions[0] (name "a"): events[1]: set exactly one of schedule, queue or subject`}},
		{"event with no source", head + "    events: [{disabled: true}]\n",
			[]string{`functions[0] (name "a"): events[0]: set exactly one of schedule, queue or subject`}},
		{"unknown key inside an event", head + "    events: [{subject: a.b}, {queue: q, batchsize: 5}]\n",
			[]string{`functions[0] (name "a"): unknown key "events[1].batchsize": did you mean "events[1].batchSize"?`}},
		{"unknown key inside an event, no near miss", head + "    events: [{queue: q, fifo: true}]\n",
			[]string{`unknown key "events[0].fifo": use one of batchSize, batchWindow, concurrency, disabled, input, qualifier, queue, retries, schedule, subject, timezone`}},
		{"wrong type inside an event", head + "    events: [{queue: q, batchSize: lots}]\n",
			[]string{`functions[0] (name "a"): events[0].batchSize: got string, want a whole number`}},
		{"event not a mapping", head + "    events: [rate(5 minutes)]\n", []string{`events[0] must be a mapping of keys to values`}},
		{"events not a list", head + "    events: {schedule: rate(5 minutes)}\n", []string{`events: got object, want a list of mappings`}},
		{"queue option on a schedule", head + "    events: [{schedule: rate(5 minutes), batchSize: 3}]\n",
			[]string{`events[0]: batchSize, batchWindow, concurrency and retries apply only to queues`}},
		{"unknown key inside async", head + "    async: {retry: 1}\n", []string{`unknown key "async.retry": use one of maxAge, onFailure, onSuccess, retries`}},
		{"async out of range", head + "    async: {retries: 11, maxAge: 30s}\n",
			[]string{`async retries 11 is out of range: use 0-10`, `async maxAge 30s is out of range: use 1m-6h`}},
		{"own destination", head + "    async: {onFailure: 'function:a'}\n", []string{`async onFailure: a function cannot be its own destination`}},
		{"queue triggering two functions", head + "    events: [{queue: q}]\n  - name: b\n    runtime: node\n    source: ./src/hello\n    events: [{subject: x.y}, {queue: q}]\n",
			[]string{`functions[1] (name "b"): events[1]: queue "q" also triggers functions[0] (name "a"): a queue feeds one function`}},
		{"one function, one queue, twice", head + "    events: [{queue: q}, {queue: q, batchSize: 2}]\n", nil},
		{"queues declared", "queues: [{name: q}, {name: r}]\n" + head, nil},
		{"queue problems located", "queues: [{name: q}, {name: Q}, {name: q}, {nam: r}]\n" + head,
			[]string{`queues[1]: queue name "Q" is invalid`, `queues[2]: queue "q" is already declared by queues[0]`, `queues[3]: unknown key "nam": use one of name`, `queues[3]: name is missing`}},
		{"unknown top-level key", "queue: [{name: q}]\n" + head, []string{`unknown key "queue" at the top level: use functions or queues`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(tt.yaml), "testdata")
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				f := m.Functions[0]
				if f.MemoryMB != fn.DefaultMemoryMB && !strings.Contains(tt.yaml, "memory") || f.Handler != "index.handler" {
					t.Errorf("function not normalized: %+v", f.Config)
				}
				if f.Source != mustAbs(t, "testdata/src/hello") {
					t.Errorf("Source = %q, want the absolute path of testdata/src/hello", f.Source)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse: no error, want one containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestLoad(t *testing.T) {
	src := mustAbs(t, "testdata/src/hello")
	body := "functions:\n  - name: a\n    runtime: node\n    source: " + src + "\n"

	t.Run("directory with aloft.yml", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "aloft.yml"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := Load(dir)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if m.Dir != dir || len(m.Functions) != 1 {
			t.Errorf("Load = %+v, want one function with Dir %s", m, dir)
		}
		if _, ok := m.Function("a"); !ok {
			t.Error(`Function("a") not found`)
		}
	})
	t.Run("aloft.yaml wins over aloft.yml", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "aloft.yml"), []byte("junk: ["), 0o644)
		os.WriteFile(filepath.Join(dir, "aloft.yaml"), []byte(body), 0o644)
		if _, err := Load(dir); err != nil {
			t.Fatalf("Load: %v", err)
		}
	})
	t.Run("relative sources resolve against the file", func(t *testing.T) {
		m, err := Load("testdata/cases/valid-minimal.yaml")
		if err == nil {
			t.Fatalf("Load of a case whose sources are relative to testdata/, not testdata/cases: got %+v, want an error", m)
		}
		if !strings.Contains(err.Error(), "cases/src/hello") {
			t.Errorf("error %q does not name the path resolved against the file's directory", err)
		}
	})
	t.Run("directory without a manifest", func(t *testing.T) {
		_, err := Load(t.TempDir())
		if err == nil || !strings.Contains(err.Error(), "no aloft.yaml or aloft.yml") {
			t.Errorf("Load: got %v", err)
		}
	})
	t.Run("missing path", func(t *testing.T) {
		_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Load: got %v, want ErrNotExist", err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "aloft.yaml")
		os.WriteFile(p, []byte("# "+strings.Repeat("x", maxSize)), 0o644)
		_, err := Load(p)
		if err == nil || !strings.Contains(err.Error(), "over") {
			t.Errorf("Load: got %v, want a size error", err)
		}
	})
}

func TestParseEvents(t *testing.T) {
	m, err := Parse(mustRead(t, "testdata/cases/valid-events.yaml"), "testdata")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(m.Queues) != 2 || m.Queues[0].Name != "orders" || m.Queues[1].Name != "failed-orders" {
		t.Errorf("Queues = %+v, want orders, failed-orders in the file's order", m.Queues)
	}
	ticker, _ := m.Function("ticker")
	worker, _ := m.Function("worker")
	if len(ticker.Events) != 2 || len(worker.Events) != 2 {
		t.Fatalf("events: ticker %+v, worker %+v", ticker.Events, worker.Events)
	}
	cron := ticker.Events[0]
	if cron.Kind() != fn.EventSchedule || cron.Schedule != "cron(0 12 * * ? *)" || cron.Timezone != "Europe/Paris" || string(cron.Input) != `{"report":"daily"}` {
		t.Errorf("schedule event = %+v (input %s)", cron, cron.Input)
	}
	if !ticker.Events[1].Disabled {
		t.Errorf("second schedule is not disabled: %+v", ticker.Events[1])
	}
	// retries: 0 is set, not the default.
	if ticker.Async.Retries == nil || *ticker.Async.Retries != 0 || ticker.Async.Age() != time.Hour || ticker.Async.OnFailure != "queue:failed-orders" {
		t.Errorf("ticker async = %+v", ticker.Async)
	}
	q := worker.Events[0]
	if q.Kind() != fn.EventQueue || q.Queue != "orders" || q.BatchSize != 25 || q.BatchWindow.D() != 2*time.Second ||
		q.Concurrency != 4 || q.RetryCount() != 5 || q.Qualifier != "prod" {
		t.Errorf("queue event = %+v", q)
	}
	if sub := worker.Events[1]; sub.Kind() != fn.EventSubject || sub.Subject != "sensors.*.temperature" {
		t.Errorf("subject event = %+v", sub)
	}
	if worker.Async.Retries != nil || worker.Async.RetryCount() != fn.DefaultAsyncRetries || worker.Async.OnSuccess != "function:ticker" {
		t.Errorf("worker async = %+v", worker.Async)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzParse(f *testing.F) {
	cases, _ := filepath.Glob("testdata/cases/*.yaml")
	for _, c := range cases {
		if b, err := os.ReadFile(c); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data, "testdata")
		if err == nil {
			for _, got := range m.Functions {
				if err := got.Validate(); err != nil {
					t.Errorf("Parse accepted an invalid function: %v", err)
				}
				if !filepath.IsAbs(got.Source) {
					t.Errorf("Source %q is not absolute", got.Source)
				}
			}
			seen := map[string]bool{}
			for _, q := range m.Queues {
				if err := fn.ValidateQueueName(q.Name); err != nil || seen[q.Name] {
					t.Errorf("Parse accepted queue %q (invalid: %v, repeated: %v)", q.Name, err, seen[q.Name])
				}
				seen[q.Name] = true
			}
		}
	})
}

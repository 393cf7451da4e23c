package manifest

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"aloft/internal/fn"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/cases")

// render is what a golden file holds for a manifest: the parsed functions
// with sources relative to the manifest, or the error, with the absolute
// testdata directory replaced by $DIR.
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
	b, jerr := json.MarshalIndent(fs, "", "  ")
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
			for _, fn := range m.Functions {
				if err := fn.Validate(); err != nil {
					t.Errorf("Parse accepted an invalid function: %v", err)
				}
				if !filepath.IsAbs(fn.Source) {
					t.Errorf("Source %q is not absolute", fn.Source)
				}
			}
		}
	})
}

package layout

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

type pkg struct {
	ImportPath string
	Doc        string
	Imports    []string
	Module     *struct{ Path string }
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "aloft/...")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(out)
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

func TestEveryPackageHasADocComment(t *testing.T) {
	for _, p := range listPackages(t) {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("package %s has no doc comment", p.ImportPath)
		}
	}
}

// allowed maps a third-party module to the packages that may import it
// (DEPENDENCIES.md says why).
var allowed = map[string][]string{
	"github.com/nats-io/nats-server/v2": {"aloft/internal/store"},
	"github.com/nats-io/nats.go":        {"aloft/internal/store", "aloft/internal/events"},
	"github.com/elastic/go-seccomp-bpf": {"aloft/internal/sandbox"},
	"golang.org/x/sys":                  {"aloft/internal/sandbox", "aloft/internal/invoke", "aloft/internal/testnet"},
	"github.com/google/nftables":        {"aloft/internal/sandbox"},
	"github.com/vishvananda/netlink":    {"aloft/internal/sandbox", "aloft/internal/testnet"},
	"github.com/vishvananda/netns":      {"aloft/internal/sandbox", "aloft/internal/testnet"},
	"golang.org/x/net":                  {"aloft/internal/sandbox"},
	"golang.org/x/sync":                 {"aloft/internal/server", "aloft/internal/events"},
	"github.com/hashicorp/cronexpr":     {"aloft/internal/events/schedule"},
	"sigs.k8s.io/yaml":                  {"aloft/internal/manifest"},
	"github.com/tetratelabs/wazero":     {"aloft/internal/wasm"},
	"github.com/aws/aws-lambda-go":      {}, // tests and functions only
	"github.com/google/uuid":            {"aloft/internal/runtime/lambda"},
}

func TestDependenciesAreImportedOnlyWhereAllowed(t *testing.T) {
	for _, p := range listPackages(t) {
		for _, imp := range p.Imports {
			if !strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") {
				continue // standard library
			}
			mod := ""
			for m := range allowed {
				if imp == m || strings.HasPrefix(imp, m+"/") {
					mod = m
				}
			}
			if mod == "" {
				t.Errorf("%s imports %s, which is not a listed dependency: add it to DEPENDENCIES.md and this test", p.ImportPath, imp)
				continue
			}
			ok := false
			for _, a := range allowed[mod] {
				if p.ImportPath == a || strings.HasPrefix(p.ImportPath, a+"/") {
					ok = true
				}
			}
			if !ok {
				t.Errorf("%s imports %s; only %v may", p.ImportPath, imp, allowed[mod])
			}
		}
	}
}

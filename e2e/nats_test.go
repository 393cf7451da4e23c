package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// TestExternalNATS runs the binary against an external NATS server (started
// here, with JetStream and a loopback listener) instead of the embedded one:
// functions deployed through one data directory are served after a restart
// with another, empty one, because the state lives in NATS.
func TestExternalNATS(t *testing.T) {
	url := startNATS(t)

	s := startServer(t, dataDir(t), "--nats", url)
	dir := t.TempDir()
	writeManifest(t, dir, fmt.Sprintf("functions:\n  - name: ext-node\n    runtime: node\n    source: %s\n", abs(t, "../examples/hello-node")))
	s.mustCLI("deploy", dir)
	if out := s.mustCLI("invoke", "ext-node", `{"via":"external"}`); !strings.Contains(out, `"via":"external"`) {
		t.Fatalf("invoke: %s", out)
	}
	s.stop()

	// A second node with its own, empty data directory sees the function.
	s2 := startServer(t, dataDir(t), "--nats", url)
	if out := s2.mustCLI("invoke", "ext-node", `{"node":2}`); !strings.Contains(out, `"node":2`) {
		t.Fatalf("invoke on the second node: %s", out)
	}
	if !strings.Contains(s2.logs.String(), `"nats":"external"`) {
		t.Fatalf("the server did not report external NATS:\n%s", s2.logs.String())
	}
}

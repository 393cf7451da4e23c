package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// startNATS runs a NATS server with JetStream and a loopback listener, as
// an external cluster of one.
func startNATS(t *testing.T) string {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true,
		ServerName: "e2e-" + strings.ReplaceAll(t.Name(), "/", "-"),
	})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	return ns.ClientURL()
}

// TestTwoNodesOneNATS runs two server processes on one external NATS: a
// schedule fires once per tick although both nodes run it, and a NATS
// subject trigger serves an external producer, fire-and-forget and
// request-reply.
func TestTwoNodesOneNATS(t *testing.T) {
	url := startNATS(t)
	col := newCollector(t)
	a := startServer(t, dataDir(t), "--nats", url)
	b := startServer(t, dataDir(t), "--nats", url)
	dir := t.TempDir()
	writeManifest(t, dir, fmt.Sprintf(`functions:
  - name: tick2
    runtime: lambda
    source: %[1]s
    network: true
    env: {COLLECT_URL: %[2]s}
    events:
      - schedule: rate(1 second)
  - name: sensor
    runtime: lambda
    source: %[1]s
    network: true
    env: {COLLECT_URL: %[2]s}
    events:
      - subject: sensors.>
`, abs(t, "testdata/collector"), col.url))
	a.mustCLI("deploy", dir)

	// Both nodes know the schedule.
	eventually(t, 20*time.Second, "the second node to list the schedule", func() bool {
		out, _, err := b.cli("schedules")
		return err == nil && strings.Contains(out, "tick2")
	})
	eventually(t, 30*time.Second, "six ticks", func() bool { return len(col.matching("tick ")) >= 6 })
	a.stop() // the survivor keeps firing
	n := len(col.matching("tick "))
	eventually(t, 30*time.Second, "three more ticks from the surviving node", func() bool { return len(col.matching("tick ")) >= n+3 })
	seen := map[string]int{}
	for _, l := range col.matching("tick ") {
		seen[l]++
	}
	for l, c := range seen {
		if c != 1 {
			t.Errorf("%s fired %d times across two nodes, want once", l, c)
		}
	}

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Publish("sensors.temp", []byte(`{"id":"s1"}`)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the published message to run", func() bool { return col.count("event s1") == 1 })
	msg, err := nc.Request("sensors.req", []byte(`{"id":"s2"}`), 30*time.Second)
	if err != nil {
		t.Fatalf("request-reply through the subject trigger: %v", err)
	}
	if !strings.Contains(string(msg.Data), `"done":"s2"`) || col.count("event s2") != 1 {
		t.Fatalf("reply %q, executions %d", msg.Data, col.count("event s2"))
	}
	msg, err = nc.Request("sensors.req", []byte(`{"id":"s3","fail":true}`), 30*time.Second)
	if err != nil || msg.Header.Get("Aloft-Function-Error") == "" || !strings.Contains(string(msg.Data), "failed on purpose") {
		t.Fatalf("a failing request: %v %v %q", err, msg, msg.Data)
	}
}

// TestEmbeddedNATSListener lets a producer outside the process reach the
// embedded NATS (--nats-listen) with the API token, and only with it.
func TestEmbeddedNATSListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	col := newCollector(t)
	s := startServer(t, dataDir(t), "--nats-listen", addr)
	dir := t.TempDir()
	writeManifest(t, dir, fmt.Sprintf(`functions:
  - name: listener
    runtime: lambda
    source: %s
    network: true
    env: {COLLECT_URL: %s}
    events:
      - subject: orders.created
`, abs(t, "testdata/collector"), col.url))
	s.mustCLI("deploy", dir)
	if nc, err := nats.Connect("nats://"+addr, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("a client without the token reached the embedded NATS")
	}
	nc, err := nats.Connect("nats://"+addr, nats.Token(s.token))
	if err != nil {
		t.Fatalf("connect with the API token: %v", err)
	}
	defer nc.Close()
	msg, err := nc.Request("orders.created", []byte(`{"id":"n1"}`), 30*time.Second)
	if err != nil || !strings.Contains(string(msg.Data), `"done":"n1"`) || col.count("event n1") != 1 {
		t.Fatalf("request through the embedded listener: %v %v", err, msg)
	}
}

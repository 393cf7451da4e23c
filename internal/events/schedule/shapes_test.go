package schedule

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"aloft/internal/fn"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/shapes")

func sampleTick(input string) Tick {
	at := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	ev := fn.Event{Schedule: "cron(0 12 * * ? *)", Timezone: "Europe/Paris"}
	if input != "" {
		ev.Input = json.RawMessage(input)
	}
	return Tick{ID: tickID("default", "hello", 2, at), Tenant: "default", Function: "hello", Index: 2,
		Event: ev, Time: at}
}

// golden compares got with testdata/shapes/name, or rewrites it with
// -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "shapes", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the golden file:\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

// cloudEvent renders headers, sorted, a blank line and the body.
func cloudEvent(t Tick) []byte {
	h := CloudEventHeaders(t)
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(h)) {
		fmt.Fprintf(&b, "%s: %s\n", k, h[k])
	}
	b.WriteString("\n")
	b.Write(CloudEventBody(t))
	b.WriteString("\n")
	return []byte(b.String())
}

func TestShapesGolden(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
	}{
		{"eventbridge.json", EventBridgeEvent(sampleTick(""), "eu-west-3", "123456789012")},
		{"eventbridge-input.json", EventBridgeEvent(sampleTick(`{"job": "nightly" , "n":1}`), "eu-west-3", "123456789012")},
		{"cloudevent.txt", cloudEvent(sampleTick(""))},
		{"cloudevent-input.txt", cloudEvent(sampleTick(`{"job":"nightly"}`))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { golden(t, tt.name, tt.got) })
	}
}

// The envelope decodes into aws-lambda-go's type as a Go handler sees it.
func TestEventBridgeDecodes(t *testing.T) {
	tick := sampleTick("")
	var ev events.EventBridgeEvent
	if err := json.Unmarshal(EventBridgeEvent(tick, "us-east-1", "000000000000"), &ev); err != nil {
		t.Fatal(err)
	}
	checks := []struct{ field, got, want string }{
		{"version", ev.Version, "0"},
		{"id", ev.ID, "default/hello/2/1704110400"},
		{"detail-type", ev.DetailType, "Scheduled Event"},
		{"source", ev.Source, "aws.events"},
		{"account", ev.AccountID, "000000000000"},
		{"region", ev.Region, "us-east-1"},
		{"time", ev.Time.Format(time.RFC3339), "2024-01-01T12:00:00Z"},
		{"resources", strings.Join(ev.Resources, ","), "arn:aws:events:us-east-1:000000000000:rule/hello-2"},
		{"detail", string(ev.Detail), "{}"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.field, c.got, c.want)
		}
	}
}

// With Input the payload is exactly the Input bytes, and a copy.
func TestEventBridgeInput(t *testing.T) {
	in := `{"a" : [1, 2]}`
	tick := sampleTick(in)
	got := EventBridgeEvent(tick, "r", "a")
	if string(got) != in {
		t.Fatalf("payload = %s, want %s", got, in)
	}
	got[0] = 'x'
	if string(tick.Event.Input) != in {
		t.Fatal("the payload shares memory with the event's Input")
	}
}

func TestCloudEventHeaders(t *testing.T) {
	tick := sampleTick("")
	tick.ID = "a b\"%é"
	h := CloudEventHeaders(tick)
	if got, want := h["ce-id"], "a%20b%22%25%C3%A9"; got != want {
		t.Errorf("ce-id = %q, want percent-encoded %q", got, want)
	}
	if _, ok := h["ce-datacontenttype"]; ok {
		t.Error("binary mode must not carry ce-datacontenttype")
	}
	if got := string(CloudEventBody(sampleTick(""))); got != "{}" {
		t.Errorf("body without input = %s, want {}", got)
	}
}

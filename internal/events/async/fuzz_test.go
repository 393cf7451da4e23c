package async

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"aloft/internal/fn"
	"aloft/internal/invoke"
)

func resultOf(payload []byte) fn.Result { return fn.Result{Payload: payload, FunctionError: true} }

// FuzzDecode feeds decode what a stored message may hold: it must never
// fail on a well-formed subject, always yield an id usable as a key, and
// read back what encode writes from its own result.
func FuzzDecode(f *testing.F) {
	f.Add("async.default.hello", "id-1", "prod", "schedule", "1700000000000", `{"ce-id":"1"}`, "", []byte(`{}`), uint64(1))
	f.Add("async.t.fn", "", "", "", "", "", "t/fn/key", []byte(nil), uint64(7))
	f.Add("async.t.fn", "bad id!", "$LATEST", "api", "-5", `not json`, "", []byte("x"), uint64(0))
	f.Fuzz(func(t *testing.T, subj, id, qualifier, trigger, accepted, headers, msgID string, data []byte, seq uint64) {
		h := nats.Header{}
		for k, v := range map[string]string{hdrID: id, hdrQualifier: qualifier, hdrTrigger: trigger,
			hdrAccepted: accepted, hdrHeaders: headers, hdrMsgID: msgID} {
			if v != "" {
				h.Set(k, v)
			}
		}
		streamTime := time.Unix(1700000000, 0)
		got, ok := decode(subj, h, data, seq, streamTime)
		if !ok {
			return
		}
		if !validID(got.ID) || !validTenant(got.Tenant) || got.Function == "" ||
			got.Qualifier == "" || got.Trigger == "" || got.accepted.IsZero() {
			t.Fatalf("decoded %+v", got)
		}
		msg, err := encode(&got.Event, got.accepted)
		if err != nil {
			t.Fatal(err)
		}
		again, ok := decode(msg.Subject, msg.Header, msg.Data, seq, streamTime)
		if !ok || fmt.Sprint(again.Event) != fmt.Sprint(got.Event) || again.accepted.UnixMilli() != got.accepted.UnixMilli() {
			t.Fatalf("round trip: %+v, then %+v", got, again)
		}
	})
}

// FuzzFunctionFailure feeds a function's error answer (untrusted) to the
// parser and the destination record built from it.
func FuzzFunctionFailure(f *testing.F) {
	f.Add([]byte(`{"errorType":"Boom","errorMessage":"failed"}`))
	f.Add([]byte(`{"errorMessage":"no type"}`))
	f.Add([]byte("plain text \xff"))
	f.Add([]byte(nil))
	f.Fuzz(func(t *testing.T, payload []byte) {
		fl := functionFailure(&invoke.Response{Version: "$LATEST", Result: resultOf(payload)})
		if fl.Type == "" || len(fl.Type) > 256 || len(fl.Message) > maxErrorLen {
			t.Fatalf("failure %+v", fl)
		}
		if utf8.Valid(payload) && (!utf8.ValidString(fl.Type) || !utf8.ValidString(fl.Message)) {
			t.Fatalf("cut inside a character: %+v", fl)
		}
		a := &Async{cfg: Config{Region: "local"}, now: time.Now}
		d := &delivery{ev: stored{Event: Event{ID: "id", Tenant: "t", Function: "f", Qualifier: "$LATEST", Payload: payload}}}
		rec := a.destinationRecord(d, condRetries, 1, fl.Version, true, fl.payload)
		var back destinationRecord
		if !json.Valid(rec) || json.Unmarshal(rec, &back) != nil || back.RequestContext.RequestID != "id" {
			t.Fatalf("destination record %s is not valid", rec)
		}
	})
}

// The expressions the hand-written checks stand for.
var (
	tenantRE   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	idRE       = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)
	versionRE  = regexp.MustCompile(`^[1-9][0-9]{0,9}$`)
	triggerRE  = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	functionRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
)

// checkValidators fails when a hand-written check disagrees with its
// expression on s, or accepts a function name fn.ValidateName refuses.
func checkValidators(t *testing.T, s string) {
	t.Helper()
	for _, c := range []struct {
		name string
		got  bool
		re   *regexp.Regexp
	}{
		{"validTenant", validTenant(s), tenantRE},
		{"validID", validID(s), idRE},
		{"validVersion", validVersion(s), versionRE},
		{"validTrigger", validTrigger(s), triggerRE},
		{"validFunction", validFunction(s), functionRE},
	} {
		want := c.re.MatchString(s)
		if c.name == "validFunction" {
			want = want && len(s) <= fn.MaxNameLen
		}
		if c.got != want {
			t.Errorf("%s(%q) = %v, want %v", c.name, s, c.got, want)
		}
	}
	if validFunction(s) && fn.ValidateName(s) != nil {
		t.Errorf("validFunction(%q) accepts what fn.ValidateName refuses: %v", s, fn.ValidateName(s))
	}
}

func TestValidators(t *testing.T) {
	for _, s := range []string{"", "a", "A", "-", "_", "0", "1", "01", "9999999999", "10000000000", "a-b", "-ab", "ab-",
		"a_b", "a.b", "ab\n", "é", strings.Repeat("a", 32), strings.Repeat("a", 33), strings.Repeat("a", 64),
		strings.Repeat("a", 65), strings.Repeat("A", 128), strings.Repeat("A", 129), "default", "api", "redrive",
		"$LATEST", "hello-world-2"} {
		checkValidators(t, s)
	}
}

func FuzzValidators(f *testing.F) {
	f.Add("hello-world")
	f.Add("Tenant_1")
	f.Add("123")
	f.Fuzz(checkValidators)
}

// FuzzParsePubAck checks that the hand-read answers to a publish read as
// JSON does, and that whatever is not an answer is refused.
func FuzzParsePubAck(f *testing.F) {
	f.Add([]byte(`{"stream":"ASYNC","seq":42}`))
	f.Add([]byte(`{"stream":"ASYNC","seq":7,"duplicate": true}`))
	f.Add([]byte(`{"stream":"ASYNC","domain":"hub","seq":7}`))
	f.Add([]byte(`{"error":{"code":503,"err_code":10077,"description":"resource limits exceeded for account"}}`))
	f.Add([]byte(`{"stream":"ASYNC","seq":18446744073709551615}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := parsePubAck(b)
		var want struct {
			Error *jetstream.APIError `json:"error"`
			jetstream.PubAck
		}
		switch jerr := json.Unmarshal(b, &want); {
		case jerr != nil:
			if err == nil {
				t.Fatalf("parsePubAck(%q) = %+v, want an error", b, got)
			}
		case want.Error != nil:
			var apiErr *jetstream.APIError
			if !errors.As(err, &apiErr) || *apiErr != *want.Error {
				t.Fatalf("parsePubAck(%q) error = %v, want %v", b, err, want.Error)
			}
		case want.Stream == "":
			if !errors.Is(err, jetstream.ErrInvalidJSAck) {
				t.Fatalf("parsePubAck(%q) error = %v, want ErrInvalidJSAck", b, err)
			}
		default:
			if err != nil || got.Stream != want.Stream || got.Sequence != want.Sequence || got.Duplicate != want.Duplicate {
				t.Fatalf("parsePubAck(%q) = %+v, %v; want %+v", b, got, err, want.PubAck)
			}
		}
	})
}

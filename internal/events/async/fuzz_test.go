package async

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

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
		if !idRE.MatchString(got.ID) || !tenantRE.MatchString(got.Tenant) || got.Function == "" ||
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

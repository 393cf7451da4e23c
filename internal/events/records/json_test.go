package records

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzRecordJSON: the hand-written encoding decodes to what encoding/json's
// own does.
func FuzzRecordJSON(f *testing.F) {
	f.Add("id-1", "fn", "$LATEST", "api", "succeeded", 2, int64(1700000000123456789), int64(1234567), "Error: \"boom\"\n\x00\xff")
	f.Add("", "", "", "", "", 0, int64(0), int64(0), "")
	f.Fuzz(func(t *testing.T, id, function, version, trigger, status string, attempt int, ns, dur int64, errText string) {
		r := Record{ID: id, Tenant: "default", Function: function, Version: version, Trigger: trigger,
			Status: Status(status), Attempt: attempt, Time: time.Unix(0, ns%(1<<62)).UTC(), Duration: time.Duration(dur), Error: errText}
		var got, want Record
		if err := json.Unmarshal(r.appendJSON(nil), &got); err != nil {
			t.Fatalf("%s does not decode: %v", r.appendJSON(nil), err)
		}
		std, err := json.Marshal(r)
		if err != nil {
			t.Skip(err)
		}
		if err := json.Unmarshal(std, &want); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("decoded %+v, encoding/json's %+v", got, want)
		}
	})
}

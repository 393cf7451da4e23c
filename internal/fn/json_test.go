package fn

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// FuzzLogLineJSON: the hand-written encoding decodes to what encoding/json's
// own decodes to, for any text (control characters, invalid UTF-8, quotes).
func FuzzLogLineJSON(f *testing.F) {
	f.Add("fn", "hello \"world\"\n\t\\ \x00 \u2028 é", "abc", int64(1700000000123456789))
	f.Add("", "\xff\xfe broken \xc3", "", int64(0))
	f.Fuzz(func(t *testing.T, function, text, id string, ns int64) {
		l := LogLine{Time: time.Unix(0, ns%(1<<62)).UTC(), Tenant: "default", Function: function, Version: "$LATEST",
			Instance: id, InvocationID: id, Stream: "stdout", Text: text}
		var got, want LogLine
		if err := json.Unmarshal(l.AppendJSON(nil), &got); err != nil {
			t.Fatalf("%s does not decode: %v", l.AppendJSON(nil), err)
		}
		std, err := json.Marshal(l)
		if err != nil {
			t.Skip(err)
		}
		if err := json.Unmarshal(std, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) || !got.Time.Equal(l.Time) {
			t.Errorf("decoded %+v, encoding/json's %+v", got, want)
		}
	})
}

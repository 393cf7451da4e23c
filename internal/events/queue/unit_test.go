package queue

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-lambda-go/events"
	"github.com/nats-io/nats.go"

	"aloft/internal/fn"
	"aloft/internal/invoke"
)

func TestBackoff(t *testing.T) {
	base := 10 * time.Second
	for _, tc := range []struct {
		delivered int
		jitter    float64
		want      time.Duration
	}{
		{1, 0, 5 * time.Second},
		{1, 0.999999, 10*time.Second - 5*time.Microsecond},
		{2, 0, 10 * time.Second},
		{3, 0.5, 30 * time.Second}, // 40s → [20s, 40s)
		{6, 0, 150 * time.Second},  // 320s capped at 300s
		{50, 0, 150 * time.Second},
		{50, 0.5, 225 * time.Second},
	} {
		t.Run(fmt.Sprint(tc.delivered, tc.jitter), func(t *testing.T) {
			got := backoff(base, tc.delivered, tc.jitter)
			if got.Round(10*time.Microsecond) != tc.want.Round(10*time.Microsecond) {
				t.Errorf("backoff(%d, %v) = %s, want %s", tc.delivered, tc.jitter, got, tc.want)
			}
		})
	}
}

func TestJudge(t *testing.T) {
	ids := []string{"a", "b", "c"}
	resp := func(payload string) *invoke.Response { return ok(payload) }
	for _, tc := range []struct {
		name      string
		resp      *invoke.Response
		err       error
		partial   bool
		failed    []bool
		errorType string
		internal  bool
	}{
		{"success", resp(`"ok"`), nil, true, []bool{false, false, false}, "", false},
		{"listed", resp(`{"batchItemFailures":[{"itemIdentifier":"b"}]}`), nil, true, []bool{false, true, false}, "Aloft.BatchItemFailure", false},
		{"listed ignored for http", resp(`{"batchItemFailures":[{"itemIdentifier":"b"}]}`), nil, false, []bool{false, false, false}, "", false},
		{"unknown id", resp(`{"batchItemFailures":[{"itemIdentifier":"z"}]}`), nil, true, []bool{true, true, true}, "Aloft.InvalidBatchItemFailures", false},
		{"null list", resp(`{"batchItemFailures":null}`), nil, true, []bool{false, false, false}, "", false},
		{"function error", failed("TypeError", "x is undefined"), nil, true, []bool{true, true, true}, "TypeError", false},
		{"throttled", nil, fn.Throttled(1, "busy"), true, []bool{true, true, true}, "throttled", false},
		{"not found", nil, fn.NotFound("no such function"), true, []bool{true, true, true}, "not_found", false},
		{"internal", nil, errors.New("nats: connection closed"), true, []bool{true, true, true}, "internal", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := judge(ids, tc.resp, tc.err, tc.partial)
			if !slices.Equal(v.failed, tc.failed) || v.errorType != tc.errorType || (v.internal != nil) != tc.internal {
				t.Errorf("judge = %+v, want failed %v type %q internal %v", v, tc.failed, tc.errorType, tc.internal)
			}
			if v.any != slices.Contains(tc.failed, true) {
				t.Errorf("any = %v", v.any)
			}
			if tc.internal && strings.Contains(v.errorMessage, "nats") {
				t.Errorf("an internal error reaches the dead letter: %q", v.errorMessage)
			}
		})
	}
}

// batchResponses are parseBatchResponse's cases and FuzzParseBatchResponse's
// seeds.
var batchResponses = []struct {
	name     string
	payload  string
	failures []string
	ok       bool
}{
	{"two", `{"batchItemFailures":[{"itemIdentifier":"a"},{"itemIdentifier":"b"}]}`, []string{"a", "b"}, true},
	{"empty", `{"batchItemFailures":[]}`, nil, true},
	{"null", `{"batchItemFailures":null}`, nil, true},
	{"other object", `{"statusCode":200}`, nil, true},
	{"string", `"done"`, nil, true},
	{"not json", `done`, nil, true},
	{"nothing", ``, nil, true},
	{"not a list", `{"batchItemFailures":"a"}`, nil, false},
	{"empty id", `{"batchItemFailures":[{"itemIdentifier":""}]}`, nil, false},
	{"null id", `{"batchItemFailures":[{"itemIdentifier":null}]}`, nil, false},
	{"wrong key", `{"batchItemFailures":[{"id":"a"}]}`, nil, false},
	{"number id", `{"batchItemFailures":[{"itemIdentifier":1}]}`, nil, false},
	{"entry not an object", `{"batchItemFailures":["a"]}`, nil, false},
	{"after other keys", `{"Records":[{"body":"{\"batchItemFailures\":1}","a":{"b":["]}",-1.5e3,true,null]}}],` +
		` "n" : 12 , "batchItemFailures":[{"itemIdentifier":"a"}]}`, []string{"a"}, true},
	{"echoed event", `{"Records":[{"messageId":"a","body":"{\"batchItemFailures\":[]}"}]}`, nil, true},
	{"nested key", `{"x":{"batchItemFailures":[{"itemIdentifier":"a"}]}}`, nil, true},
	{"key in another case", `{"BATCHitemFAILURES":[{"itemIdentifier":"a"}]}`, []string{"a"}, true},
	{"escaped key", `{"batchItem\u0046ailures":[{"itemIdentifier":"a"}]}`, []string{"a"}, true},
	{"twice", `{"batchItemFailures":[],"batchItemFailures":[{"itemIdentifier":"a"}]}`, []string{"a"}, true},
	{"long s key", `{"batchItemFailureſ":[{"itemIdentifier":"a"}]}`, []string{"a"}, true},
	{"truncated", `{"n":1,"batchItemFailures":[{"itemIdentifier":"a"}]`, nil, true},
}

func TestParseBatchResponse(t *testing.T) {
	for _, tc := range batchResponses {
		t.Run(tc.name, func(t *testing.T) {
			failures, ok := parseBatchResponse([]byte(tc.payload))
			if !slices.Equal(failures, tc.failures) || ok != tc.ok {
				t.Errorf("parseBatchResponse(%s) = %q, %v; want %q, %v", tc.payload, failures, ok, tc.failures, tc.ok)
			}
			if *update {
				writeSeed(t, "FuzzParseBatchResponse", tc.name, fmt.Sprintf("[]byte(%q)", tc.payload))
			}
		})
	}
}

func FuzzParseBatchResponse(f *testing.F) {
	f.Fuzz(func(t *testing.T, payload []byte) {
		failures, ok := parseBatchResponse(payload)
		if want, wantOK := decodeBatchResponse(payload); !slices.Equal(failures, want) || ok != wantOK {
			t.Fatalf("parseBatchResponse = %q, %v; decoding says %q, %v", failures, ok, want, wantOK)
		}
		if !ok && failures != nil {
			t.Fatalf("malformed, yet failures %q", failures)
		}
		for _, id := range failures {
			if id == "" {
				t.Fatal("an empty identifier counted as a failure")
			}
		}
		ids := append([]string{"x"}, failures...)
		v := judge(ids, ok2(payload), nil, true)
		if !ok && !v.any {
			t.Fatal("a malformed answer did not fail the batch")
		}
		if ok && v.failed[0] {
			t.Fatal("a message not listed failed")
		}
	})
}

func ok2(payload []byte) *invoke.Response { return ok(string(payload)) }

// sqsCases are headers and bodies of stored messages: FuzzSQSEvent's
// seeds.
var sqsCases = []struct{ name, body, id, sent, attrs string }{
	{"plain", "hello", "6b1d3e52-9a41-4f0c-8e27-55d30a9f61c4", "1700000000000", ""},
	{"json with attributes", `{"a":[1,2]}`, "x", "1700000000000", `{"k":"v","z":"<&>"}`},
	{"invalid utf8", "a\xffb\xc3", "i\xfed", "x", "{\"k\":\"\xff\"}"},
	{"missing headers", "", "", "", "not json"},
}

func TestParseHeaders(t *testing.T) {
	stored := time.UnixMilli(1600000000000)
	for _, tc := range sqsCases {
		t.Run(tc.name, func(t *testing.T) {
			h := nats.Header{hdrID: {tc.id}, hdrSent: {tc.sent}, hdrAttrs: {tc.attrs}}
			id, sent, attrs := parseHeaders(h, 42, stored)
			switch {
			case tc.id == "" && id != "seq-42", tc.id != "" && id != tc.id:
				t.Errorf("id %q", id)
			case tc.sent == "1700000000000" && sent.UnixMilli() != 1700000000000,
				tc.sent != "1700000000000" && !sent.Equal(stored):
				t.Errorf("sent %s", sent)
			case tc.attrs == `{"k":"v","z":"<&>"}` && attrs["z"] != "<&>":
				t.Errorf("attrs %v", attrs)
			case tc.attrs == "not json" && attrs != nil:
				t.Errorf("attrs %v from a malformed header", attrs)
			}
			if *update {
				writeSeed(t, "FuzzSQSEvent", tc.name,
					fmt.Sprintf("[]byte(%q)\n[]byte(%q)\n[]byte(%q)\n[]byte(%q)", tc.body, tc.id, tc.sent, tc.attrs))
			}
		})
	}
}

// FuzzSQSEvent builds the event of one stored message from arbitrary
// headers and body: it always decodes as events.SQSEvent, with a body whose
// md5 is md5OfBody.
func FuzzSQSEvent(f *testing.F) {
	q := &Queues{cfg: Config{Region: DefaultRegion, Account: DefaultAccount}}
	f.Fuzz(func(t *testing.T, body, id, sent, attrs []byte) {
		h := nats.Header{hdrID: {string(id)}, hdrSent: {string(sent)}, hdrAttrs: {string(attrs)}}
		it := &item{body: string(body), delivered: 1, seq: 7, received: time.Now()}
		it.id, it.sent, it.attrs = parseHeaders(h, 7, time.Now())
		payload := q.sqsEvent(spec{queue: "q"}, []*item{it})
		if want := q.sqsEventByReflection(spec{queue: "q"}, []*item{it}); !bytes.Equal(payload, want) {
			t.Fatalf("the event differs from encoding/json's:\n%s\n%s", payload, want)
		}
		var ev events.SQSEvent
		if err := json.Unmarshal(payload, &ev); err != nil {
			t.Fatalf("%v\n%s", err, payload)
		}
		if len(ev.Records) != 1 {
			t.Fatalf("%d records", len(ev.Records))
		}
		r := ev.Records[0]
		sum := md5.Sum([]byte(r.Body))
		if r.Md5OfBody != hex.EncodeToString(sum[:]) {
			t.Fatalf("md5OfBody %s does not match the body %q", r.Md5OfBody, r.Body)
		}
		if utf8.Valid(body) && r.Body != string(body) {
			t.Fatalf("body %q, want %q", r.Body, body)
		}
		if len(it.attrs) > 0 && r.Md5OfMessageAttributes == "" {
			t.Fatal("attributes without md5OfMessageAttributes")
		}
	})
}

func writeSeed(t *testing.T, fuzz, name, values string) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", fuzz)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
	if err := os.WriteFile(file, []byte("go test fuzz v1\n"+values+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Digests AWS returns, as moto's SQS tests pin them.
func TestAttributesMD5(t *testing.T) {
	for _, tc := range []struct {
		attrs    map[string]string
		dataType string
		want     string
	}{
		{map[string]string{"timestamp": "1493147359900"}, "Number", "235c5c510d26fb653d073faed50ae77c"},
		{map[string]string{"timestamp": "1493147359901"}, "Number", "994258b45346a2cc3f9cbb611aa7af30"},
		{map[string]string{"SOME_Valid.attribute-Name": "1493147359900"}, "Number", "36655e7e9d7c0e8479fa3f3f42247ae7"},
	} {
		if got := typedAttributesMD5(tc.attrs, tc.dataType); got != tc.want {
			t.Errorf("md5 of %v = %s, want %s", tc.attrs, got, tc.want)
		}
	}
	a := attributesMD5(map[string]string{"b": "2", "a": "1"})
	if a != attributesMD5(map[string]string{"a": "1", "b": "2"}) || a == attributesMD5(map[string]string{"a": "2", "b": "1"}) {
		t.Error("the digest must depend on names and values, not on map order")
	}
}

func TestChunks(t *testing.T) {
	big := &item{body: strings.Repeat("x", 2<<20)}
	small := &item{body: "x"}
	for _, tc := range []struct {
		name  string
		items []*item
		sizes []int
	}{
		{"none", nil, nil},
		{"small", []*item{small, small, small}, []int{3}},
		{"split", []*item{big, big, big, big, small}, []int{2, 3}},
		{"one over the limit alone", []*item{{body: strings.Repeat("x", 7<<20)}, small}, []int{1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sizes []int
			n := 0
			for _, c := range chunks(tc.items) {
				sizes = append(sizes, len(c))
				n += len(c)
			}
			if !slices.Equal(sizes, tc.sizes) || n != len(tc.items) {
				t.Errorf("chunks of %d items: %v, want %v", len(tc.items), sizes, tc.sizes)
			}
		})
	}
}

func TestSpecOf(t *testing.T) {
	zero := 0
	got := specOf("t", "f", fn.IndexedEvent{Index: 3, Event: fn.Event{Queue: "q"}})
	want := spec{tenant: "t", function: "f", index: 3, queue: "q", batchSize: 10, concurrency: 2, retries: 2}
	if got != want {
		t.Errorf("defaults: %+v, want %+v", got, want)
	}
	got = specOf("t", "f", fn.IndexedEvent{Event: fn.Event{Queue: "q", BatchSize: 1, Concurrency: 7,
		BatchWindow: fn.Duration(time.Second), Retries: &zero, Qualifier: "prod"}})
	want = spec{tenant: "t", function: "f", queue: "q", qualifier: "prod", batchSize: 1, window: time.Second, concurrency: 7}
	if got != want {
		t.Errorf("set: %+v, want %+v", got, want)
	}
}

func TestIDs(t *testing.T) {
	if nameUUID("a/b/c") != nameUUID("a/b/c") || nameUUID("a/b/c") == nameUUID("a/b/d") {
		t.Error("name-based ids must be stable and distinct")
	}
	for _, id := range []string{newUUID(), nameUUID("x")} {
		if !uuidRE.MatchString(id) {
			t.Errorf("%q is not a uuid", id)
		}
	}
	// Queue names have no '_', so tenant a_b's queue c and tenant a's queue
	// b_c (impossible) cannot collide; tenant a_b/c and a/b-c differ.
	if consumerName("a_b", "c") == consumerName("a", "b-c") {
		t.Error("consumer names collide")
	}
}

func TestJSONSafe(t *testing.T) {
	for _, s := range []string{"plain", "é", "a\xffb", "\xc3", "\xed\xa0\x80"} {
		b, _ := json.Marshal(s)
		var back string
		_ = json.Unmarshal(b, &back)
		if got := jsonSafe(s); got != back {
			t.Errorf("jsonSafe(%q) = %q, json carries %q", s, got, back)
		}
	}
}

// The SQS event as encoding/json encodes it: the reference sqsEvent
// writes by hand.
type (
	sqsEventJSON struct {
		Records []sqsRecordJSON `json:"Records"`
	}
	sqsRecordJSON struct {
		MessageID              string                      `json:"messageId"`
		ReceiptHandle          string                      `json:"receiptHandle"`
		Body                   string                      `json:"body"`
		Attributes             sqsAttributesJSON           `json:"attributes"`
		MessageAttributes      map[string]sqsAttributeJSON `json:"messageAttributes"`
		MD5OfMessageAttributes *string                     `json:"md5OfMessageAttributes"`
		MD5OfBody              string                      `json:"md5OfBody"`
		EventSource            string                      `json:"eventSource"`
		EventSourceARN         string                      `json:"eventSourceARN"`
		AWSRegion              string                      `json:"awsRegion"`
	}
	sqsAttributesJSON struct {
		ApproximateReceiveCount          string `json:"ApproximateReceiveCount"`
		SentTimestamp                    string `json:"SentTimestamp"`
		SenderID                         string `json:"SenderId"`
		ApproximateFirstReceiveTimestamp string `json:"ApproximateFirstReceiveTimestamp"`
	}
	sqsAttributeJSON struct {
		StringValue      string   `json:"stringValue"`
		StringListValues []string `json:"stringListValues"`
		BinaryListValues []string `json:"binaryListValues"`
		DataType         string   `json:"dataType"`
	}
)

func (q *Queues) sqsEventByReflection(s spec, items []*item) []byte {
	arn := "arn:aws:sqs:" + q.cfg.Region + ":" + q.cfg.Account + ":" + s.queue
	ev := sqsEventJSON{Records: make([]sqsRecordJSON, len(items))}
	for i, it := range items {
		body := jsonSafe(it.body)
		sum := md5.Sum([]byte(body))
		firstReceive := it.received
		if it.delivered > 1 {
			firstReceive = it.sent
		}
		r := sqsRecordJSON{
			MessageID:     it.id,
			ReceiptHandle: string(appendReceiptHandle(nil, s.queue, it.seq, it.delivered)),
			Body:          body,
			Attributes: sqsAttributesJSON{
				ApproximateReceiveCount:          strconv.Itoa(it.delivered),
				SentTimestamp:                    strconv.FormatInt(it.sent.UnixMilli(), 10),
				SenderID:                         "aloft",
				ApproximateFirstReceiveTimestamp: strconv.FormatInt(firstReceive.UnixMilli(), 10),
			},
			MessageAttributes: make(map[string]sqsAttributeJSON, len(it.attrs)),
			MD5OfBody:         hex.EncodeToString(sum[:]),
			EventSource:       "aws:sqs",
			EventSourceARN:    arn,
			AWSRegion:         q.cfg.Region,
		}
		if len(it.attrs) > 0 {
			attrs := make(map[string]string, len(it.attrs))
			for k, v := range it.attrs {
				k, v = jsonSafe(k), jsonSafe(v)
				attrs[k] = v
				r.MessageAttributes[k] = sqsAttributeJSON{StringValue: v, StringListValues: []string{}, BinaryListValues: []string{}, DataType: "String"}
			}
			sum := attributesMD5(attrs)
			r.MD5OfMessageAttributes = &sum
		}
		ev.Records[i] = r
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(ev); err != nil {
		panic(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// The hand-written event is encoding/json's, for every case and for
// strings that need escaping.
func TestSQSEventMatchesEncodingJSON(t *testing.T) {
	q := &Queues{cfg: Config{Region: "eu-west-\u2028", Account: DefaultAccount}}
	var items []*item
	for _, tc := range sqsCases {
		h := nats.Header{hdrID: {tc.id}, hdrSent: {tc.sent}, hdrAttrs: {tc.attrs}}
		it := &item{body: tc.body, delivered: 2, seq: 1 << 40, received: time.UnixMilli(1700000000123)}
		it.id, it.sent, it.attrs = parseHeaders(h, 7, time.UnixMilli(1600000000000))
		items = append(items, it)
	}
	var all strings.Builder
	for c := range 256 {
		all.WriteByte(byte(c))
	}
	all.WriteString("\u2028\u2029<>&é😀\xed\xa0\x80")
	items = append(items, &item{id: all.String(), body: all.String(), delivered: 1,
		attrs: map[string]string{all.String(): all.String(), "b": "", "a": "\x00"}})
	for n := range len(items) + 1 {
		if got, want := q.sqsEvent(spec{queue: "orders"}, items[:n]), q.sqsEventByReflection(spec{queue: "orders"}, items[:n]); !bytes.Equal(got, want) {
			t.Errorf("%d records: the event differs from encoding/json's:\n%s\n%s", n, got, want)
		}
	}
}

// benchItems are a batch of ten small messages, as the benchmark program
// sends them.
func benchItems() []*item {
	items := make([]*item, 10)
	now := time.Now()
	for i := range items {
		items[i] = &item{id: newUUID(), body: fmt.Sprintf(`{"n":%d}`, i), delivered: 1, seq: uint64(1000 + i),
			sent: now, received: now}
	}
	return items
}

func BenchmarkSQSEvent(b *testing.B) {
	q := &Queues{cfg: Config{Region: DefaultRegion, Account: DefaultAccount}}
	items := benchItems()
	b.ReportAllocs()
	for b.Loop() {
		q.sqsEvent(spec{queue: "benchq"}, items)
	}
}

// BenchmarkParseBatchResponse parses what an echo function answers: the
// event itself.
func BenchmarkParseBatchResponse(b *testing.B) {
	q := &Queues{cfg: Config{Region: DefaultRegion, Account: DefaultAccount}}
	payload := q.sqsEvent(spec{queue: "benchq"}, benchItems())
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if failures, ok := parseBatchResponse(payload); !ok || failures != nil {
			b.Fatal(failures, ok)
		}
	}
}

package apigw

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-lambda-go/events"
)

var update = flag.Bool("update", false, "rewrite golden files and fuzz seeds")

var fixedNow = time.Date(2024, 1, 2, 3, 4, 5, 678_000_000, time.UTC)

const (
	infoSep     = "\n=== info\n"
	eventSep    = "=== event\n"
	responseSep = "\n=== response\n"
)

// goldenInfo is the info section of an event golden file.
type goldenInfo struct {
	RouteKey   string            `json:"routeKey"`
	PathParams map[string]string `json:"pathParams"`
	Path       string            `json:"path"`
	RemoteAddr string            `json:"remoteAddr"`
	SourceIP   string            `json:"sourceIp"`
	Stage      string            `json:"stage"`
	APIID      string            `json:"apiId"`
	// BodyBase64, when set, replaces the request's body (for binary bodies).
	BodyBase64 string `json:"bodyBase64"`
}

// parseRequest reads the raw HTTP request section of a golden file. The
// body is everything after the blank line, not what Content-Length says.
func parseRequest(t testing.TB, raw string) (*http.Request, []byte) {
	t.Helper()
	head, body, _ := strings.Cut(raw, "\n\n")
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head + "\n\n")))
	if err != nil {
		t.Fatalf("parse request: %v", err)
	}
	return r, []byte(body)
}

func TestNewEventGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/events/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			reqPart, rest, ok := strings.Cut(string(data), infoSep)
			if !ok {
				t.Fatalf("%s: no %q separator", file, strings.TrimSpace(infoSep))
			}
			infoPart, want, ok := strings.Cut(rest, eventSep)
			if !ok {
				t.Fatalf("%s: no %q separator", file, strings.TrimSpace(eventSep))
			}
			var gi goldenInfo
			if err := json.Unmarshal([]byte(infoPart), &gi); err != nil {
				t.Fatalf("info: %v", err)
			}
			r, body := parseRequest(t, reqPart)
			if gi.BodyBase64 != "" {
				body, err = base64.StdEncoding.DecodeString(gi.BodyBase64)
				if err != nil {
					t.Fatal(err)
				}
			}
			r.RemoteAddr = gi.RemoteAddr
			info := RequestInfo{
				RouteKey: gi.RouteKey, PathParams: gi.PathParams, RequestID: "inv-0001",
				Stage: gi.Stage, APIID: gi.APIID, Now: fixedNow, SourceIP: gi.SourceIP, Path: gi.Path,
			}
			got, err := NewEvent(r, body, info)
			if err != nil {
				t.Fatalf("NewEvent: %v", err)
			}
			checkCompatible(t, got, r, body)
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, got, "", "  "); err != nil {
				t.Fatalf("event is not valid JSON: %v\n%s", err, got)
			}
			pretty.WriteByte('\n')
			if *update {
				out := reqPart + infoSep + infoPart + eventSep + pretty.String()
				if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
				writeSeed(t, "FuzzNewEvent", filepath.Base(file), []byte(reqPart))
				return
			}
			if pretty.String() != want {
				t.Errorf("event mismatch (run with -update to accept)\ngot:\n%s\nwant:\n%s", pretty.String(), want)
			}
		})
	}
}

// checkCompatible decodes an event with aws-lambda-go's own type, refusing
// unknown fields, and checks what a handler would see.
func checkCompatible(t testing.TB, event []byte, r *http.Request, body []byte) {
	t.Helper()
	var ev events.APIGatewayV2HTTPRequest
	d := json.NewDecoder(bytes.NewReader(event))
	d.DisallowUnknownFields()
	if err := d.Decode(&ev); err != nil {
		t.Fatalf("aws-lambda-go cannot decode the event: %v\n%s", err, event)
	}
	if ev.Version != "2.0" || ev.RequestContext.HTTP.Method != r.Method {
		t.Errorf("version %q method %q, want 2.0 %q", ev.Version, ev.RequestContext.HTTP.Method, r.Method)
	}
	if ev.RawQueryString != r.URL.RawQuery && utf8.ValidString(r.URL.RawQuery) {
		t.Errorf("rawQueryString %q, want %q", ev.RawQueryString, r.URL.RawQuery)
	}
	got := []byte(ev.Body)
	if ev.IsBase64Encoded {
		var err error
		if got, err = base64.StdEncoding.DecodeString(ev.Body); err != nil {
			t.Fatalf("body is not base64: %v", err)
		}
	}
	if !bytes.Equal(got, body) {
		t.Errorf("body round trip: got %q, want %q", got, body)
	}
	for k := range ev.Headers {
		if k != strings.ToLower(k) || k == "cookie" {
			t.Errorf("header %q: want lower-case names and no cookie", k)
		}
	}
}

func TestWriteResponseGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/responses/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			payload, want, ok := strings.Cut(string(data), responseSep)
			if !ok {
				t.Fatalf("%s: no %q separator", file, strings.TrimSpace(responseSep))
			}
			rec := httptest.NewRecorder()
			err = WriteResponse(rec, []byte(payload))
			if err != nil && !errors.Is(err, ErrInvalidResponse) {
				t.Fatalf("WriteResponse: %v", err)
			}
			got := formatResponse(rec, err)
			if *update {
				if err := os.WriteFile(file, []byte(payload+responseSep+got), 0o644); err != nil {
					t.Fatal(err)
				}
				writeSeed(t, "FuzzWriteResponse", filepath.Base(file), []byte(payload))
				return
			}
			if got != want {
				t.Errorf("response mismatch (run with -update to accept)\ngot:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// formatResponse prints a recorded response: status, the error, sorted
// headers, a blank line, the body (quoted when it is not valid UTF-8).
func formatResponse(rec *httptest.ResponseRecorder, err error) string {
	var b strings.Builder
	fmt.Fprintf(&b, "status: %d\n", rec.Code)
	if err != nil {
		fmt.Fprintf(&b, "error: %v\n", err)
	}
	h := rec.Result().Header
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range h {
			if !yield(k) {
				return
			}
		}
	}) {
		for _, v := range h[k] {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	b.WriteString("\n")
	body := rec.Body.Bytes()
	if utf8.Valid(body) {
		b.Write(body)
	} else {
		fmt.Fprintf(&b, "%q", body)
	}
	b.WriteString("\n")
	return b.String()
}

// writeSeed writes data as a fuzz corpus entry under testdata/fuzz/<fuzz>/.
func writeSeed(t testing.TB, fuzz, name string, data []byte) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", fuzz)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	entry := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
	if err := os.WriteFile(filepath.Join(dir, strings.TrimSuffix(name, ".txt")), []byte(entry), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestWriteResponseOverHTTP checks what a real client receives through a
// real server, where net/http's own rules (HEAD, 204, header writing) apply.
func TestWriteResponseOverHTTP(t *testing.T) {
	payloads := map[string]string{
		"/json":    `{"statusCode":200,"headers":{"content-type":"application/json"},"cookies":["a=1","b=2"],"body":"{\"x\":1}"}`,
		"/nobody":  `{"statusCode":204,"body":"dropped"}`,
		"/inject":  `{"statusCode":200,"headers":{"X-Bad":"a\r\nX-Evil: 1","Content-Length":"1"},"body":"hello"}`,
		"/invalid": `{"statusCode":200,`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = WriteResponse(w, []byte(payloads[r.URL.Path]))
	}))
	defer srv.Close()
	tests := []struct {
		method, path string
		status       int
		body         string
		check        func(t *testing.T, h http.Header)
	}{
		{"GET", "/json", 200, `{"x":1}`, func(t *testing.T, h http.Header) {
			if got := h.Values("Set-Cookie"); !slices.Equal(got, []string{"a=1", "b=2"}) {
				t.Errorf("Set-Cookie %q, want [a=1 b=2]", got)
			}
		}},
		{"HEAD", "/json", 200, "", func(t *testing.T, h http.Header) {
			if got := h.Get("Content-Length"); got != "7" {
				t.Errorf("HEAD Content-Length %q, want 7", got)
			}
		}},
		{"GET", "/nobody", 204, "", nil},
		{"GET", "/inject", 200, "hello", func(t *testing.T, h http.Header) {
			if h.Get("X-Evil") != "" || h.Get("X-Bad") != "" {
				t.Errorf("header injection got through: %v", h)
			}
		}},
		{"GET", "/invalid", 502, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.path, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body bytes.Buffer
			if _, err := body.ReadFrom(resp.Body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.body != "" && body.String() != tt.body {
				t.Errorf("body %q, want %q", body.String(), tt.body)
			}
			if tt.check != nil {
				tt.check(t, resp.Header)
			}
		})
	}
}

func TestWriteFunctionError(t *testing.T) {
	tests := []struct {
		name, payload, header string
	}{
		{"go error", `{"errorMessage":"boom","errorType":"errorString","stackTrace":[{"path":"/src/main.go","line":12,"label":"main"}]}`, "errorString"},
		{"node", `{"errorType":"TypeError","errorMessage":"x is undefined","trace":["TypeError: x","    at /var/task/index.js:3:9"]}`, "TypeError"},
		{"odd type", `{"errorType":"Bad\r\nType: 1","errorMessage":"m"}`, "Unhandled"},
		{"not json", `Runtime exited`, "Unhandled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			WriteFunctionError(rec, []byte(tt.payload))
			if rec.Code != http.StatusBadGateway {
				t.Errorf("status %d, want 502", rec.Code)
			}
			if got := rec.Body.String(); got != `{"message":"Internal Server Error"}` {
				t.Errorf("body %q", got)
			}
			if got := rec.Header().Get("X-Aloft-Function-Error"); got != tt.header {
				t.Errorf("X-Aloft-Function-Error %q, want %q", got, tt.header)
			}
		})
	}
}

// TestEscapeMatchesEncodingJSON checks the hand-written string escaper
// against encoding/json on awkward inputs.
func TestEscapeMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", "quote\"back\\slash", "\x00\x01\x1f\x7f", "tab\tnl\ncr\r",
		"é€😀", "bad\xffutf8\xc3", "\u2028\u2029", "<html>&amp;"} {
		var e eventEncoder
		e.str(s)
		var back string
		if err := json.Unmarshal(e.buf, &back); err != nil {
			t.Errorf("escape(%q) = %s: not JSON: %v", s, e.buf, err)
			continue
		}
		want, _ := json.Marshal(s)
		var wantBack string
		_ = json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Errorf("escape(%q) decodes to %q, encoding/json gives %q", s, back, wantBack)
		}
	}
}

func FuzzNewEvent(f *testing.F) {
	f.Add([]byte("GET /a?b=1&b=2 HTTP/1.1\nHost: h\nCookie: a=1; b=2\n\nbody"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		head, body, _ := bytes.Cut(raw, []byte("\n\n"))
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(append(head, "\n\n"...))))
		if err != nil {
			return
		}
		r.RemoteAddr = "192.0.2.1:1"
		got, err := NewEvent(r, body, RequestInfo{RequestID: "x", Now: fixedNow, PathParams: map[string]string{"p": string(body)}})
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(got) {
			t.Fatalf("invalid JSON: %s", got)
		}
		checkCompatible(t, got, r, body)
	})
}

func FuzzWriteResponse(f *testing.F) {
	f.Add([]byte(`{"statusCode":200,"body":"x"}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		rec := httptest.NewRecorder()
		err := WriteResponse(rec, payload)
		if err != nil && !errors.Is(err, ErrInvalidResponse) {
			t.Fatalf("unexpected error: %v", err)
		}
		if err != nil && rec.Code != http.StatusBadGateway {
			t.Fatalf("invalid response gave status %d, want 502", rec.Code)
		}
		if rec.Code < 200 || rec.Code > 599 {
			t.Fatalf("status %d", rec.Code)
		}
		for k, vs := range rec.Header() {
			for _, v := range vs {
				if !validHeader(k, v) {
					t.Fatalf("unsafe header %q: %q", k, v)
				}
			}
		}
	})
}

func BenchmarkNewEvent(b *testing.B) {
	r := httptest.NewRequest("POST", "http://api.example.com/users/42?a=1&b=2&a=3", nil)
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("User-Agent", "bench/1.0")
	r.Header.Set("Accept", "*/*")
	r.Header.Set("Accept-Encoding", "gzip")
	r.Header.Set("X-Request-Id", "abc")
	r.Header.Set("Cookie", "a=1; b=2")
	body := []byte(`{"name":"tea","qty":2,"notes":"a longer field to make the body realistic"}`)
	info := RequestInfo{RouteKey: "POST /users/{id}", PathParams: map[string]string{"id": "42"}, RequestID: "inv", Now: fixedNow}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewEvent(r, body, info); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNewEventEncodingJSON is the alternative NewEvent's hand-written
// encoder was chosen over: fill aws-lambda-go's struct, json.Marshal it.
func BenchmarkNewEventEncodingJSON(b *testing.B) {
	r := httptest.NewRequest("POST", "http://api.example.com/users/42?a=1&b=2&a=3", nil)
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("User-Agent", "bench/1.0")
	r.Header.Set("Accept", "*/*")
	r.Header.Set("Accept-Encoding", "gzip")
	r.Header.Set("X-Request-Id", "abc")
	r.Header.Set("Cookie", "a=1; b=2")
	body := []byte(`{"name":"tea","qty":2,"notes":"a longer field to make the body realistic"}`)
	b.ReportAllocs()
	for b.Loop() {
		ev := events.APIGatewayV2HTTPRequest{
			Version: "2.0", RouteKey: "POST /users/{id}", RawPath: r.URL.EscapedPath(), RawQueryString: r.URL.RawQuery,
			Headers: map[string]string{}, QueryStringParameters: map[string]string{},
			PathParameters: map[string]string{"id": "42"}, Body: string(body),
		}
		for k, vs := range r.Header {
			if k == "Cookie" {
				for _, v := range vs {
					ev.Cookies = append(ev.Cookies, strings.Split(v, "; ")...)
				}
				continue
			}
			ev.Headers[strings.ToLower(k)] = strings.Join(vs, ",")
		}
		for k, vs := range r.URL.Query() {
			ev.QueryStringParameters[k] = strings.Join(vs, ",")
		}
		ev.RequestContext = events.APIGatewayV2HTTPRequestContext{
			RouteKey: ev.RouteKey, AccountID: "000000000000", Stage: "$default", RequestID: "inv", APIID: "aloft",
			DomainName: r.Host, Time: fixedNow.Format(timeLayout), TimeEpoch: fixedNow.UnixMilli(),
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: r.Method, Path: ev.RawPath, Protocol: r.Proto, SourceIP: "192.0.2.1", UserAgent: r.UserAgent()},
		}
		if _, err := json.Marshal(&ev); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteResponse(b *testing.B) {
	cases := map[string][]byte{
		"structured": []byte(`{"statusCode":200,"headers":{"content-type":"application/json","x-id":"1"},"cookies":["a=1"],"body":"{\"ok\":true,\"items\":[1,2,3]}"}`),
		"inferred":   []byte(`{"ok":true,"items":[1,2,3],"name":"a plain object the gateway sends as it is"}`),
	}
	for name, payload := range cases {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				w := discardWriter{h: http.Header{}}
				if err := WriteResponse(&w, payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// discardWriter is the least a ResponseWriter can do, so that benchmarks
// measure WriteResponse and not the recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

package wasm

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestParseCGI(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     string
		status int
		header http.Header
		body   string
		bad    bool
	}{
		{name: "go cgi", in: "Status: 201 Created\r\nContent-Type: text/plain\r\nX-Test: 1\r\n\r\nbody",
			status: 201, header: http.Header{"Content-Type": {"text/plain"}, "X-Test": {"1"}}, body: "body"},
		{name: "lf and no reason", in: "status: 404\ncontent-type: text/html\n\n<p>", status: 404,
			header: http.Header{"Content-Type": {"text/html"}}, body: "<p>"},
		{name: "default 200", in: "Content-Type: a/b\n\n", status: 200, header: http.Header{"Content-Type": {"a/b"}}},
		{name: "location", in: "Location: /x\r\n\r\n", status: 302, header: http.Header{"Location": {"/x"}}},
		{name: "location with status", in: "Status: 301\nLocation: /x\n\n", status: 301, header: http.Header{"Location": {"/x"}}},
		{name: "body keeps blank lines", in: "Content-Type: a/b\n\n\n\nx\n", status: 200, header: http.Header{"Content-Type": {"a/b"}}, body: "\n\nx\n"},
		{name: "empty", in: "", bad: true},
		{name: "no content type", in: "X-A: 1\n\nbody", bad: true},
		{name: "no blank line", in: "Content-Type: a/b\n", bad: true},
		{name: "body only", in: "hello world\n\n", bad: true},
		{name: "bad status", in: "Status: abc\nContent-Type: a/b\n\n", bad: true},
		{name: "status out of range", in: "Status: 42\nContent-Type: a/b\n\n", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body, err := parseCGI([]byte(tc.in))
			if tc.bad {
				if err == nil {
					t.Fatalf("parsed %d %v %q, want an error", status, h, body)
				}
				// A module that wrote text but no headers is told what to write.
				if tc.in != "" && !strings.Contains(err.Error(), "Content-Type: text/plain, a blank line, then the body") &&
					!strings.Contains(err.Error(), "Status") {
					t.Errorf("error %q does not say what a CGI response holds", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if status != tc.status || !reflect.DeepEqual(h, tc.header) || string(body) != tc.body {
				t.Errorf("got %d %v %q, want %d %v %q", status, h, body, tc.status, tc.header, tc.body)
			}
		})
	}
}

// FuzzParseCGI checks that module output never panics the parser and that
// what it accepts is a response it may send.
func FuzzParseCGI(f *testing.F) {
	f.Add([]byte("Status: 201 Created\r\nContent-Type: text/plain\r\n\r\nbody"))
	f.Add([]byte("Location: /x\n\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		status, h, body, err := parseCGI(out)
		if err != nil {
			return
		}
		if status < 100 || status > 999 {
			t.Errorf("status %d accepted", status)
		}
		if h.Get("Content-Type") == "" && h.Get("Location") == "" {
			t.Error("accepted without Content-Type or Location")
		}
		if h.Get("Status") != "" {
			t.Error("Status header kept")
		}
		if len(body) > len(out) {
			t.Error("body longer than the output")
		}
	})
}

package runtimes_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPythonEcho(t *testing.T) {
	in := start(t, "python", "app.echo")
	in.ready(t)
	for _, p := range []string{`{"a":[1,2],"s":"é"}`, `"text"`, `null`, `42`} {
		wantJSON(t, in.call(t, p), p)
	}
}

// TestPythonEventDecoding checks events the bootstrap's fast JSON path does
// not take (a BOM, invalid JSON) still decode, or fail, as json.loads does.
func TestPythonEventDecoding(t *testing.T) {
	in := start(t, "python", "app.echo")
	in.ready(t)
	wantJSON(t, in.call(t, "\ufeff{\"bom\":1}"), `{"bom":1}`)
	e := wantError(t, in.call(t, `{"a":`), "Runtime.UnmarshalError",
		"Unable to unmarshal input: Expecting value: line 1 column 6 (char 5)")
	if len(e.StackTrace) != 0 {
		t.Errorf("stackTrace = %q, want none: the frames are the json module's", e.StackTrace)
	}
	wantJSON(t, in.call(t, ` [2.5, "\u00e9"] `), `[2.5, "é"]`)
}

// TestPythonFirstEventInvalid sends invalid JSON to a fresh runtime. The C
// scanner raises its errors through json.decoder, which the bootstrap has
// not imported then: it must still answer an UnmarshalError, and live on.
func TestPythonFirstEventInvalid(t *testing.T) {
	in := start(t, "python", "app.echo")
	in.ready(t)
	wantError(t, in.call(t, `{oops`), "Runtime.UnmarshalError",
		"Unable to unmarshal input: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)")
	wantJSON(t, in.call(t, `{"after":1}`), `{"after":1}`)
}

// TestPythonSysPath checks the function's directory comes first, the
// bootstrap's is gone, and the system's package directory is there.
func TestPythonSysPath(t *testing.T) {
	if _, err := os.Stat("/usr/lib/python3/dist-packages"); err != nil {
		t.Skipf("no system package directory: %v", err)
	}
	in := start(t, "python", "app.paths")
	in.ready(t)
	res := in.call(t, `{}`)
	var paths []string
	if err := json.Unmarshal(res.Payload, &paths); err != nil {
		t.Fatalf("result %s: %v", res.Payload, err)
	}
	if len(paths) == 0 || !strings.HasSuffix(paths[0], "testdata/python") {
		t.Errorf("sys.path = %q, want the task root first", paths)
	}
	if slices.Contains(paths, filepath.Join(runtimeDir, "python")) {
		t.Errorf("sys.path = %q, want the bootstrap's directory gone", paths)
	}
	if !slices.Contains(paths, "/usr/lib/python3/dist-packages") {
		t.Errorf("sys.path = %q, want /usr/lib/python3/dist-packages on it", paths)
	}
}

func TestPythonErrorShape(t *testing.T) {
	in := start(t, "python", "app.fail")
	in.ready(t)
	e := wantError(t, in.call(t, `{}`), "ValueError", "bad value")
	if len(e.StackTrace) == 0 || !strings.Contains(e.StackTrace[len(e.StackTrace)-1], `app.py", line`) ||
		!strings.Contains(e.StackTrace[len(e.StackTrace)-1], "in fail") {
		t.Errorf("stackTrace = %q, want traceback.format_list lines ending in app.py's fail", e.StackTrace)
	}
	if strings.Contains(strings.Join(e.StackTrace, ""), "bootstrap") {
		t.Errorf("stackTrace = %q, want only the function's frames", e.StackTrace)
	}
	// The log has the error with its traceback, for async callers.
	in.logged(t, "[ERROR] ValueError: bad value\nTraceback (most recent call last):\n", `app.py", line`, "in fail\n")
	wantError(t, in.call(t, `{}`), "ValueError", "bad value") // still alive
}

// A handler calling sys.exit answers Runtime.ExitError with the status the
// process exits with, logs it, and ends the process.
func TestPythonSysExit(t *testing.T) {
	for _, tc := range []struct{ arg, status string }{{"3", "3"}, {`"a message"`, "1"}, {"null", "0"}} {
		in := start(t, "python", "app.exits")
		in.ready(t)
		inv := newInvocation(tc.arg)
		want := "RequestId: " + inv.ID + " Error: Runtime exited with error: exit status " + tc.status
		wantError(t, in.invoke(t, inv), "Runtime.ExitError", want)
		in.logged(t, "[ERROR] Runtime.ExitError: "+want+"\nTraceback (most recent call last):\n", "in exits")
		select {
		case <-in.exited:
		case <-time.After(10 * time.Second):
			t.Fatalf("sys.exit(%s): the process lives on", tc.arg)
		}
	}
}

func TestPythonContext(t *testing.T) {
	in := start(t, "python", "app.info")
	in.ready(t)
	inv := newInvocation(`{}`)
	inv.Deadline = time.UnixMilli(time.Now().Add(40 * time.Second).UnixMilli())
	upper := time.Until(inv.Deadline).Milliseconds() + 1 // remaining can only shrink from here
	inv.ClientContext = `{"client":{"app_title":"app"},"custom":{},"env":{}}`
	res := in.invoke(t, inv)
	var got struct {
		RequestID       string  `json:"aws_request_id"`
		FunctionName    string  `json:"function_name"`
		FunctionVersion string  `json:"function_version"`
		ARN             string  `json:"invoked_function_arn"`
		Memory          string  `json:"memory_limit_in_mb"`
		LogGroup        string  `json:"log_group_name"`
		LogStream       string  `json:"log_stream_name"`
		Remaining       int64   `json:"remaining"`
		ClientApp       string  `json:"client_app"`
		Identity        *string `json:"identity"`
		Trace           string  `json:"trace"`
	}
	if err := json.Unmarshal(res.Payload, &got); err != nil {
		t.Fatalf("%s: %v", res.Payload, err)
	}
	if got.RequestID != inv.ID || got.FunctionName != "testfn" || got.FunctionVersion != "3" ||
		got.ARN != inv.ARN || got.Memory != "256" || got.LogGroup != "/aws/lambda/testfn" ||
		got.LogStream != "2026/01/01/[3]abc" || got.ClientApp != "app" || got.Identity != nil ||
		got.Trace != inv.TraceID {
		t.Errorf("context = %+v, invocation %+v", got, inv)
	}
	if got.Remaining <= 0 || got.Remaining > upper {
		t.Errorf("remaining = %d ms, want in (0, %d]", got.Remaining, upper)
	}
}

func TestPythonResults(t *testing.T) {
	tests := []struct {
		handler, want, errType, errMsg string
	}{
		{handler: "pkg/app.handler", want: `{"nested":true,"event":{"n":1}}`},
		{handler: "pkg.app.handler", want: `{"nested":true,"event":{"n":1}}`},
		{handler: "app.decimals", want: `{"i":3,"f":1.5}`},
		{handler: "app.unserialisable", errType: "Runtime.MarshalError",
			errMsg: "Unable to marshal response: Object of type object is not JSON serializable"},
	}
	for _, tc := range tests {
		t.Run(tc.handler, func(t *testing.T) {
			in := start(t, "python", tc.handler)
			in.ready(t)
			for range 2 {
				res := in.call(t, `{"n":1}`)
				if tc.errType != "" {
					if e := wantError(t, res, tc.errType, tc.errMsg); len(e.StackTrace) != 0 {
						t.Errorf("stackTrace = %q, want none: the frames are the json module's", e.StackTrace)
					}
				} else {
					wantJSON(t, res, tc.want)
				}
			}
		})
	}
}

// TestPythonOutputPerLine checks stdout is not held back in a buffer while
// the process lives on.
func TestPythonOutputPerLine(t *testing.T) {
	in := start(t, "python", "app.printer")
	in.ready(t)
	wantJSON(t, in.call(t, `{}`), `"printed"`)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !strings.Contains(in.out.String(), "hello from python\n") {
		select {
		case <-ctx.Done():
			t.Fatalf("printed line not seen; output so far: %q", in.out.String())
		case <-in.exited:
			t.Fatal("process exited")
		case <-time.After(time.Millisecond):
		}
	}
}

func TestPythonInitErrors(t *testing.T) {
	tests := []struct {
		handler, errType, msg string
	}{
		{"missing.handler", "Runtime.ImportModuleError", "Unable to import module 'missing': No module named 'missing'"},
		{"app.nope", "Runtime.HandlerNotFound", "Handler 'nope' missing on module 'app'"},
		{"app.not_callable", "Runtime.HandlerNotFound", "Handler 'not_callable' on module 'app' is not callable"},
		{"bad.handler", "RuntimeError", "load failed"},
		{"nodot", "Runtime.MalformedHandlerName", "Bad handler 'nodot': not enough values to unpack"},
	}
	for _, tc := range tests {
		t.Run(tc.handler, func(t *testing.T) {
			in := start(t, "python", tc.handler)
			ie := in.initError(t)
			e := decodeError(t, ie.Payload)
			if ie.Type != tc.errType || e.Type != tc.errType || e.Message != tc.msg {
				t.Errorf("init error %s %s, want %s: %s", ie.Type, ie.Payload, tc.errType, tc.msg)
			}
		})
	}
}

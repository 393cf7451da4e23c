package runtimes_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestNodeEcho(t *testing.T) {
	in := start(t, "node", "index.echo")
	in.ready(t)
	for _, p := range []string{`{"a":[1,2],"s":"é"}`, `"text"`, `null`, `42`} {
		wantJSON(t, in.call(t, p), p)
	}
}

func TestNodeErrorShape(t *testing.T) {
	in := start(t, "node", "index.fail")
	in.ready(t)
	e := wantError(t, in.call(t, `{}`), "TypeError", "bad thing")
	if len(e.StackTrace) < 2 || e.StackTrace[0] != "TypeError: bad thing" || !strings.Contains(strings.Join(e.StackTrace, "\n"), "index.js") {
		t.Errorf("stackTrace = %q, want the error's stack lines", e.StackTrace)
	}
	// The log has the error with its stack's frames, for async callers.
	in.logged(t, "Invoke Error TypeError: bad thing\n    at ", "index.js:")
	wantError(t, in.call(t, `{}`), "TypeError", "bad thing") // still alive
}

func TestNodeContext(t *testing.T) {
	in := start(t, "node", "index.info")
	in.ready(t)
	inv := newInvocation(`{}`)
	inv.Deadline = time.UnixMilli(time.Now().Add(40 * time.Second).UnixMilli())
	upper := time.Until(inv.Deadline).Milliseconds() + 1 // remaining can only shrink from here
	inv.ClientContext = `{"Client":{"app_title":"app"},"custom":{"k":"v"},"env":{}}`
	res := in.invoke(t, inv)
	var got struct {
		AwsRequestID       string         `json:"awsRequestId"`
		FunctionName       string         `json:"functionName"`
		FunctionVersion    string         `json:"functionVersion"`
		InvokedFunctionArn string         `json:"invokedFunctionArn"`
		MemoryLimitInMB    string         `json:"memoryLimitInMB"`
		LogGroupName       string         `json:"logGroupName"`
		LogStreamName      string         `json:"logStreamName"`
		CallbackWaits      bool           `json:"callbackWaitsForEmptyEventLoop"`
		Remaining          int64          `json:"remaining"`
		ClientContext      map[string]any `json:"clientContext"`
		Identity           any            `json:"identity"`
		Trace              string         `json:"trace"`
	}
	if err := json.Unmarshal(res.Payload, &got); err != nil {
		t.Fatalf("%s: %v", res.Payload, err)
	}
	if got.AwsRequestID != inv.ID || got.FunctionName != "testfn" || got.FunctionVersion != "3" ||
		got.InvokedFunctionArn != inv.ARN || got.MemoryLimitInMB != "256" ||
		got.LogGroupName != "/aws/lambda/testfn" || got.LogStreamName != "2026/01/01/[3]abc" ||
		!got.CallbackWaits || got.Trace != inv.TraceID || got.Identity != nil {
		t.Errorf("context = %+v, invocation %+v", got, inv)
	}
	if c, _ := got.ClientContext["custom"].(map[string]any); c["k"] != "v" {
		t.Errorf("clientContext = %v", got.ClientContext)
	}
	if got.Remaining <= 0 || got.Remaining > upper {
		t.Errorf("remaining = %d ms, want in (0, %d]", got.Remaining, upper)
	}
}

func TestNodeHandlerStyles(t *testing.T) {
	tests := []struct {
		handler string
		want    string // JSON result; empty when wantErr
		errType string
		errMsg  string
	}{
		{handler: "index.callback", want: `{"via":"callback","event":{"n":1},"late":true}`},
		{handler: "index.callbackNoWait", want: `"no wait"`},
		{handler: "index.callbackError", errType: "RangeError", errMsg: "out of range"},
		{handler: "index.succeed", want: `{"via":"succeed"}`},
		{handler: "index.contextFail", errType: "Error", errMsg: "via fail"},
		{handler: "index.done", want: `"via done"`},
		{handler: "index.nothing", want: `null`},
		{handler: "src/app.handler", want: `{"nested":true,"event":{"n":1}}`},
		{handler: "esm/index.handler", want: `{"esm":"mjs","loadedAt":"top-level await","event":{"n":1}}`},
		{handler: "esmpkg/index.handler", want: `{"esm":"package type module","event":{"n":1}}`},
	}
	for _, tc := range tests {
		t.Run(tc.handler, func(t *testing.T) {
			in := start(t, "node", tc.handler)
			in.ready(t)
			for range 2 { // the second call checks the loop continues
				res := in.call(t, `{"n":1}`)
				if tc.errType != "" {
					wantError(t, res, tc.errType, tc.errMsg)
				} else {
					wantJSON(t, res, tc.want)
				}
			}
		})
	}
}

func TestNodeUncaughtException(t *testing.T) {
	in := start(t, "node", "index.crash")
	in.ready(t)
	wantError(t, in.call(t, `{}`), "Error", "async crash")
	<-in.exited
}

func TestNodeInitErrors(t *testing.T) {
	tests := []struct {
		handler, errType, msgPart string
	}{
		{"missing.handler", "Runtime.ImportModuleError", "Cannot find module 'missing'"},
		{"index.nope", "Runtime.HandlerNotFound", "index.nope is undefined or not exported"},
		{"index.notfn", "Runtime.HandlerNotFound", "index.notfn is not a function"},
		{"bad/index.handler", "Error", "load failed"},
		{"nodot", "Runtime.MalformedHandlerName", "Bad handler nodot"},
	}
	for _, tc := range tests {
		t.Run(tc.handler, func(t *testing.T) {
			in := start(t, "node", tc.handler)
			ie := in.initError(t)
			e := decodeError(t, ie.Payload)
			if ie.Type != tc.errType || e.Type != tc.errType || !strings.Contains(e.Message, tc.msgPart) {
				t.Errorf("init error %s %s, want %s containing %q", ie.Type, ie.Payload, tc.errType, tc.msgPart)
			}
		})
	}
}

func TestNodeResponseStreaming(t *testing.T) {
	tests := []struct {
		handler, want, contentType string
		fnErr                      bool
	}{
		{handler: "stream.chunks", want: "one,two", contentType: "text/plain"},
		{handler: "stream.http", want: `{"statusCode":201,"headers":{"x-a":"b"}}` + strings.Repeat("\x00", 8) + "body",
			contentType: "application/vnd.awslambda.http-integration-response"},
		{handler: "stream.failMidway", want: `"errorType":"Error","errorMessage":"stream broke"`, fnErr: true,
			contentType: "application/json"},
	}
	for _, tc := range tests {
		t.Run(tc.handler, func(t *testing.T) {
			in := start(t, "node", tc.handler)
			in.ready(t)
			for range 2 {
				res := in.call(t, `{}`)
				ok := string(res.Payload) == tc.want
				if tc.fnErr {
					ok = strings.Contains(string(res.Payload), tc.want)
				}
				if !ok || res.FunctionError != tc.fnErr || res.ContentType != tc.contentType {
					t.Errorf("result %q (function error %v, %q), want %q (%v, %q)",
						res.Payload, res.FunctionError, res.ContentType, tc.want, tc.fnErr, tc.contentType)
				}
			}
		})
	}
}

package lambda_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"aloft/internal/runtime/lambda"
)

// FuzzRuntimeRequest feeds the Runtime API arbitrary requests, as untrusted
// function code may send them: the server must answer each with a
// well-formed status and never panic or block.
func FuzzRuntimeRequest(f *testing.F) {
	f.Add("GET", "/2018-06-01/runtime/invocation/next", "", "", "")
	f.Add("POST", "/2018-06-01/runtime/invocation/abc/response", "streaming", "", `{"a":1}`)
	f.Add("POST", "/2018-06-01/runtime/invocation/abc/error", "", "Function.X", `not json`)
	f.Add("POST", "/2018-06-01/runtime/init/error", "", "Runtime.ImportModuleError", `{"errorType":"x"}`)
	f.Add("POST", "/2020-01-01/extension/register", "", "", `{"events":["INVOKE"]}`)
	f.Add("PUT", "/2022-07-01/telemetry", "", "", `{}`)
	f.Add("GET", "/2018-06-01/runtime/invocation//response", "bogus", "", "")
	f.Fuzz(func(t *testing.T, method, path, mode, errType, body string) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		req, err := http.NewRequest(method, "http://runtime"+path, strings.NewReader(body))
		if err != nil {
			return // not a request a client could send
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // long polls return at once
		req = req.WithContext(ctx)
		req.Header.Set("Lambda-Runtime-Function-Response-Mode", mode)
		req.Header.Set("Lambda-Runtime-Function-Error-Type", errType)
		s := lambda.NewServer(lambda.Config{MaxResponse: 64})
		defer s.Close()
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		switch w.Code {
		case 200, 202, 400, 403, 404, 405, 413:
		default:
			t.Errorf("%s %s: status %d", method, path, w.Code)
		}
	})
}

package fn

import (
	"encoding/json"
	"time"
)

// Invocation is one call of a function, as handed to an instance.
type Invocation struct {
	ID       string `json:"id"`
	Tenant   string `json:"tenant"`
	Function string `json:"function"`
	// Version is the version that runs: "$LATEST" or a number.
	Version string `json:"version"`
	// ARN is the invoked function ARN, including any qualifier.
	ARN      string    `json:"arn"`
	Payload  []byte    `json:"-"`
	Deadline time.Time `json:"deadline"`
	// TraceID is the X-Ray style trace header value ("Root=1-...;Sampled=0").
	TraceID string `json:"trace_id,omitempty"`
	// ClientContext is JSON, already base64-decoded; empty when absent.
	ClientContext string `json:"client_context,omitempty"`
	// Headers are extra request headers for runtimes that take HTTP
	// (http, wasm): the CloudEvents attributes of a trigger's event.
	// Lambda-style runtimes ignore them.
	Headers map[string]string `json:"-"`
}

// Result is what an instance answered.
type Result struct {
	Payload []byte
	// FunctionError is true when the function failed: Payload is then the
	// error JSON {"errorMessage","errorType","stackTrace"}.
	FunctionError bool
	// ContentType the runtime posted with the result, if any.
	ContentType string
}

// ErrorPayload builds a Lambda-style error body.
func ErrorPayload(errorType, message string) []byte {
	b, _ := json.Marshal(struct {
		Message string `json:"errorMessage"`
		Type    string `json:"errorType"`
	}{message, errorType})
	return b
}

// LogLine is one line a function wrote, or a line Aloft wrote about an
// invocation (START/END/REPORT).
type LogLine struct {
	Time         time.Time `json:"time"`
	Tenant       string    `json:"tenant"`
	Function     string    `json:"function"`
	Version      string    `json:"version"`
	Instance     string    `json:"instance,omitempty"`
	InvocationID string    `json:"invocation_id,omitempty"`
	// Stream is "stdout", "stderr" or "platform".
	Stream string `json:"stream"`
	Text   string `json:"text"`
}

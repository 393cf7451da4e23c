package async

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"aloft/internal/fn"
)

// Conditions of a destination record.
const (
	condSuccess = "Success"
	condRetries = "RetriesExhausted"
	condAge     = "EventAgeExceeded"
)

// destinationRecord is Lambda's invocation record sent to destinations.
type destinationRecord struct {
	Version         string           `json:"version"`
	Timestamp       string           `json:"timestamp"`
	RequestContext  requestContext   `json:"requestContext"`
	RequestPayload  json.RawMessage  `json:"requestPayload"`
	ResponseContext *responseContext `json:"responseContext,omitempty"`
	ResponsePayload json.RawMessage  `json:"responsePayload,omitempty"`
}

type requestContext struct {
	RequestID              string `json:"requestId"`
	FunctionArn            string `json:"functionArn"`
	Condition              string `json:"condition"`
	ApproximateInvokeCount int    `json:"approximateInvokeCount"`
}

type responseContext struct {
	StatusCode      int    `json:"statusCode"`
	ExecutedVersion string `json:"executedVersion,omitempty"`
	FunctionError   string `json:"functionError,omitempty"`
}

// destinationRecord builds the record of an event's outcome. attempts is
// how many times it ran; with none, the record has no response.
func (a *Async) destinationRecord(d *delivery, cond string, attempts int, version string, functionError bool, response []byte) []byte {
	rec := destinationRecord{
		Version:   "1.0",
		Timestamp: a.now().UTC().Format("2006-01-02T15:04:05.000Z"),
		RequestContext: requestContext{
			RequestID: d.ev.ID,
			FunctionArn: fmt.Sprintf("arn:aws:lambda:%s:000000000000:function:%s:%s",
				a.cfg.Region, d.ev.Function, d.ev.Qualifier),
			Condition:              cond,
			ApproximateInvokeCount: attempts,
		},
		RequestPayload: jsonValue(d.ev.Payload),
	}
	if attempts > 0 {
		rec.ResponseContext = &responseContext{StatusCode: 200, ExecutedVersion: version}
		if functionError {
			rec.ResponseContext.FunctionError = "Unhandled"
		}
		rec.ResponsePayload = jsonValue(response)
	}
	b, _ := json.Marshal(rec) // only strings, numbers and valid JSON
	return b
}

// jsonValue is b itself when it is JSON, else b as a JSON string (null
// when empty).
func jsonValue(b []byte) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("null")
	}
	if json.Valid(b) {
		return b
	}
	s, _ := json.Marshal(string(b))
	return s
}

// sendDestination delivers rec to "function:NAME" (an async event,
// deduplicated per event and condition) or "queue:NAME". A failure is
// logged and counted, never retried.
func (a *Async) sendDestination(ctx context.Context, d *delivery, spec, cond string, rec []byte) {
	dest, err := fn.ParseDestination(spec)
	if err == nil {
		switch dest.Kind {
		case "function":
			key := d.ev.Function + "/" + d.ev.ID + "/" + strconv.FormatInt(d.ev.accepted.UnixMilli(), 10) + "/" + cond
			_, _, err = a.Enqueue(ctx, Event{Tenant: d.ev.Tenant, Function: dest.Name, Payload: rec,
				TraceID: d.ev.TraceID, Trigger: "destination", IdempotencyKey: key})
		case "queue":
			if a.cfg.Sender == nil {
				err = fmt.Errorf("queue %q: no queue sender on this node", dest.Name)
				break
			}
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = a.cfg.Sender.SendRaw(sctx, d.ev.Tenant, dest.Name, rec)
			cancel()
		}
	}
	if err != nil {
		a.stat.destinationErrors.Add(1)
		a.log.Warn("async destination undeliverable", "tenant", d.ev.Tenant, "function", d.ev.Function,
			"invocation_id", d.ev.ID, "destination", spec, "error", err)
	}
}

package schedule

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// CloudEvents attributes of a tick.
const (
	CloudEventType = "dev.aloft.schedule.tick"
	// cloudEventSource is the prefix of ce-source; tenant, function and
	// index follow.
	cloudEventSource = "/aloft/schedules/"
)

// eventBridgeEvent is contracts §3.4's envelope, fields in AWS's order.
type eventBridgeEvent struct {
	Version    string          `json:"version"`
	ID         string          `json:"id"`
	DetailType string          `json:"detail-type"`
	Source     string          `json:"source"`
	Account    string          `json:"account"`
	Time       string          `json:"time"`
	Region     string          `json:"region"`
	Resources  []string        `json:"resources"`
	Detail     json.RawMessage `json:"detail"`
}

// EventBridgeEvent returns the payload of a tick for functions that take
// Lambda-style events: the event's Input exactly when it has one, otherwise
// an EventBridge "Scheduled Event" (id the tick's id, time the scheduled
// tick in UTC, the resource a rule ARN named <function>-<index>).
func EventBridgeEvent(t Tick, region, account string) []byte {
	if len(t.Event.Input) > 0 {
		return append([]byte(nil), t.Event.Input...)
	}
	b, err := json.Marshal(eventBridgeEvent{
		Version:    "0",
		ID:         t.ID,
		DetailType: "Scheduled Event",
		Source:     "aws.events",
		Account:    account,
		Time:       t.Time.UTC().Format(time.RFC3339),
		Region:     region,
		Resources:  []string{fmt.Sprintf("arn:aws:events:%s:%s:rule/%s-%d", region, account, t.Function, t.Index)},
		Detail:     json.RawMessage("{}"),
	})
	if err != nil {
		// Strings and a raw "{}" always marshal.
		return []byte("{}")
	}
	return b
}

// CloudEventHeaders returns the headers of a tick delivered to an http or
// wasm function as a binary-mode CloudEvent (contracts §10): ce-specversion
// 1.0, ce-id the tick's id, ce-source /aloft/schedules/<tenant>/<function>/
// <index>, ce-type dev.aloft.schedule.tick, ce-time the scheduled tick in
// UTC, and Content-Type application/json. The body goes with
// CloudEventBody.
func CloudEventHeaders(t Tick) map[string]string {
	return map[string]string{
		"ce-specversion": "1.0",
		"ce-id":          percentEncode(t.ID),
		"ce-source":      percentEncode(fmt.Sprintf("%s%s/%s/%d", cloudEventSource, t.Tenant, t.Function, t.Index)),
		"ce-type":        CloudEventType,
		"ce-time":        t.Time.UTC().Format(time.RFC3339),
		"Content-Type":   "application/json",
	}
}

// CloudEventBody returns the body that goes with CloudEventHeaders: the
// event's Input, or {}.
func CloudEventBody(t Tick) []byte {
	if len(t.Event.Input) > 0 {
		return append([]byte(nil), t.Event.Input...)
	}
	return []byte("{}")
}

// percentEncode encodes what the CloudEvents HTTP binding requires in a
// header value: space, '"', '%', and bytes outside printable ASCII.
func percentEncode(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == '"' || r == '%' || r >= 0x7f }) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == '"' || c == '%' || c >= 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

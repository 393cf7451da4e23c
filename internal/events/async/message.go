package async

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"aloft/internal/fn"
)

// Headers of a stored event. The payload is the message body; tenant and
// function are the subject's last two tokens.
const (
	hdrID        = "Aloft-Id"
	hdrQualifier = "Aloft-Qualifier" // absent: $LATEST
	hdrTrigger   = "Aloft-Trigger"   // absent: api
	hdrTrace     = "Aloft-Trace"
	hdrAccepted  = "Aloft-Accepted" // unix milliseconds
	hdrHeaders   = "Aloft-Headers"  // JSON object of the extra headers
	hdrMsgID     = "Nats-Msg-Id"    // <tenant>/<function>/<idempotency key>
)

// encode builds the message that stores e, accepted at now.
func encode(e *Event, now time.Time) (*nats.Msg, error) {
	h := nats.Header{hdrAccepted: {strconv.FormatInt(now.UnixMilli(), 10)}}
	if e.ID != "" {
		h[hdrID] = []string{e.ID}
	}
	if e.Qualifier != fn.LatestVersion {
		h[hdrQualifier] = []string{e.Qualifier}
	}
	if e.Trigger != "api" {
		h[hdrTrigger] = []string{e.Trigger}
	}
	if e.TraceID != "" {
		h[hdrTrace] = []string{e.TraceID}
	}
	if len(e.Headers) > 0 {
		b, err := json.Marshal(e.Headers)
		if err != nil {
			return nil, fmt.Errorf("encode event headers: %w", err)
		}
		h[hdrHeaders] = []string{string(b)}
	}
	if e.IdempotencyKey != "" {
		h[hdrMsgID] = []string{e.Tenant + "/" + e.Function + "/" + e.IdempotencyKey}
	}
	return &nats.Msg{Subject: subject(e.Tenant, e.Function), Header: h, Data: e.Payload}, nil
}

// stored is an event as read back from the stream.
type stored struct {
	Event
	accepted time.Time
}

// decode reads a stored event. It never fails: what is missing or
// malformed gets a fallback (the id derived from the stream sequence, the
// accept time from the stream's timestamp), so that every message can be
// run or dead-lettered. ok is false only when the subject does not name a
// tenant and function.
func decode(subj string, h nats.Header, data []byte, seq uint64, streamTime time.Time) (s stored, ok bool) {
	rest, found := strings.CutPrefix(subj, subjectPrefix)
	tenant, function, found2 := strings.Cut(rest, ".")
	if !found || !found2 || !validTenant(tenant) || !validFunction(function) && fn.ValidateName(function) != nil {
		return stored{}, false
	}
	s.Tenant, s.Function, s.Payload = tenant, function, data
	s.ID = h.Get(hdrID)
	if !validID(s.ID) {
		s.ID = derivedID(h.Get(hdrMsgID), seq)
	}
	s.Qualifier = h.Get(hdrQualifier)
	if s.Qualifier == "" {
		s.Qualifier = fn.LatestVersion
	}
	s.Trigger = h.Get(hdrTrigger)
	if s.Trigger == "" {
		s.Trigger = "api"
	}
	s.TraceID = h.Get(hdrTrace)
	if hs := h.Get(hdrHeaders); hs != "" {
		var m map[string]string
		if json.Unmarshal([]byte(hs), &m) == nil && len(m) > 0 {
			s.Headers = m
		}
	}
	s.accepted = streamTime
	if ms, err := strconv.ParseInt(h.Get(hdrAccepted), 10, 64); err == nil && ms > 0 {
		s.accepted = time.UnixMilli(ms)
	}
	return s, true
}

// derivedID is the id of an event stored without one: a UUID-shaped hash
// of its dedup id (tenant/function/key) and stream sequence, so a
// duplicate enqueue, answered with the first event's sequence, returns the
// same id even after that event has run and left the stream.
func derivedID(msgID string, seq uint64) string {
	sum := sha256.Sum256([]byte(msgID + "\x00" + strconv.FormatUint(seq, 10)))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x80 // version 8: custom
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// pubAckPrefix starts JetStream's answer to a store in the stream.
const pubAckPrefix = `{"stream":"` + StreamName + `","seq":`

// parsePubAck reads JetStream's answer to a publish as jetstream's
// PublishMsg does, with the same errors: a *jetstream.APIError (wrapped)
// when the stream refused the message, jetstream.ErrInvalidJSAck when the
// answer is not one. The server's usual answers, {"stream":"ASYNC",
// "seq":N} and the same with "duplicate": true, are read by hand.
func parsePubAck(b []byte) (*jetstream.PubAck, error) {
	if rest, ok := bytes.CutPrefix(b, []byte(pubAckPrefix)); ok {
		var seq uint64
		n := 0
		for ; n < len(rest) && n < 19 && rest[n] >= '0' && rest[n] <= '9'; n++ {
			seq = seq*10 + uint64(rest[n]-'0')
		}
		if n > 0 && (n == 1 || rest[0] != '0') {
			switch string(rest[n:]) {
			case "}":
				return &jetstream.PubAck{Stream: StreamName, Sequence: seq}, nil
			case `,"duplicate": true}`, `,"duplicate":true}`:
				return &jetstream.PubAck{Stream: StreamName, Sequence: seq, Duplicate: true}, nil
			}
		}
	}
	var resp struct {
		Error *jetstream.APIError `json:"error"`
		jetstream.PubAck
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		return nil, jetstream.ErrInvalidJSAck
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("nats: %w", resp.Error)
	}
	if resp.Stream == "" {
		return nil, jetstream.ErrInvalidJSAck
	}
	return &resp.PubAck, nil
}

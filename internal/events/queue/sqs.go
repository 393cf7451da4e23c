package queue

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"aloft/internal/fn"
)

// sqsEvent encodes items as the SQS batch event Lambda hands a function
// (contracts §3.5) for s's queue: {"Records":[...]}, each record's fields
// in the order of sqsRecordFields, strings escaped as encoding/json
// escapes them without HTML escaping, message attributes sorted by name.
// It writes the JSON by hand: the reflection encoder cost a tenth of a
// queue trigger's CPU.
func (q *Queues) sqsEvent(s spec, items []*item) []byte {
	arn := "arn:aws:sqs:" + q.cfg.Region + ":" + q.cfg.Account + ":" + s.queue
	size := 16
	for _, it := range items {
		size += len(it.body) + len(it.id) + len(arn) + 2*len(q.cfg.Region) + 400
		for k, v := range it.attrs {
			size += len(k) + len(v) + 120
		}
	}
	b := make([]byte, 0, size+size/8)
	b = append(b, `{"Records":[`...)
	for i, it := range items {
		if i > 0 {
			b = append(b, ',')
		}
		b = q.appendRecord(b, s, arn, it)
	}
	return append(b, "]}"...)
}

// appendRecord appends one record of an SQS batch event.
func (q *Queues) appendRecord(b []byte, s spec, arn string, it *item) []byte {
	body := jsonSafe(it.body)
	sum := md5.Sum([]byte(body))
	firstReceive := it.received
	if it.delivered > 1 {
		firstReceive = it.sent // the first receipt is not kept; it was after the send
	}
	b = append(b, `{"messageId":`...)
	b = fn.AppendJSONString(b, it.id)
	b = append(b, `,"receiptHandle":"`...)
	b = appendReceiptHandle(b, s.queue, it.seq, it.delivered)
	b = append(b, `","body":`...)
	b = fn.AppendJSONString(b, body)
	b = append(b, `,"attributes":{"ApproximateReceiveCount":"`...)
	b = strconv.AppendInt(b, int64(it.delivered), 10)
	b = append(b, `","SentTimestamp":"`...)
	b = strconv.AppendInt(b, it.sent.UnixMilli(), 10)
	b = append(b, `","SenderId":"aloft","ApproximateFirstReceiveTimestamp":"`...)
	b = strconv.AppendInt(b, firstReceive.UnixMilli(), 10)
	b = append(b, `"},"messageAttributes":{`...)
	if len(it.attrs) == 0 {
		b = append(b, `},"md5OfMessageAttributes":null`...)
	} else {
		attrs := make(map[string]string, len(it.attrs))
		for k, v := range it.attrs {
			attrs[jsonSafe(k)] = jsonSafe(v)
		}
		names := make([]string, 0, len(attrs))
		for k := range attrs {
			names = append(names, k)
		}
		slices.Sort(names)
		for i, k := range names {
			if i > 0 {
				b = append(b, ',')
			}
			b = fn.AppendJSONString(b, k)
			b = append(b, `:{"stringValue":`...)
			b = fn.AppendJSONString(b, attrs[k])
			b = append(b, `,"stringListValues":[],"binaryListValues":[],"dataType":"String"}`...)
		}
		b = append(b, `},"md5OfMessageAttributes":"`...)
		b = append(b, attributesMD5(attrs)...)
		b = append(b, '"')
	}
	b = append(b, `,"md5OfBody":"`...)
	b = hex.AppendEncode(b, sum[:])
	b = append(b, `","eventSource":"aws:sqs","eventSourceARN":`...)
	b = fn.AppendJSONString(b, arn)
	b = append(b, `,"awsRegion":`...)
	b = fn.AppendJSONString(b, q.cfg.Region)
	return append(b, '}')
}

// appendReceiptHandle appends an opaque handle of one delivery: base64
// (URL alphabet, unpadded) of queue:seq:delivered.
func appendReceiptHandle(b []byte, queue string, seq uint64, delivered int) []byte {
	var raw [160]byte
	h := append(raw[:0], queue...)
	h = append(h, ':')
	h = strconv.AppendUint(h, seq, 10)
	h = append(h, ':')
	h = strconv.AppendInt(h, int64(delivered), 10)
	return base64.RawURLEncoding.AppendEncode(b, h)
}

// attributesMD5 is SQS's MD5 of String message attributes.
func attributesMD5(attrs map[string]string) string { return typedAttributesMD5(attrs, "String") }

// typedAttributesMD5 is SQS's MD5 of message attributes of one string
// data type (String or Number): for each attribute in name order, the
// length-prefixed name, the length-prefixed data type, the transport byte 1
// (a string value) and the length-prefixed value.
func typedAttributesMD5(attrs map[string]string, dataType string) string {
	names := make([]string, 0, len(attrs))
	for k := range attrs {
		names = append(names, k)
	}
	slices.Sort(names)
	h := md5.New()
	put := func(s string) {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	for _, k := range names {
		put(k)
		put(dataType)
		h.Write([]byte{1})
		put(attrs[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// jsonSafe returns s as JSON will carry it: each byte of an invalid UTF-8
// sequence replaced by U+FFFD, so md5OfBody matches the body a function
// decodes.
func jsonSafe(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

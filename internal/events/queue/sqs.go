package queue

import (
	"bytes"
	"crypto/md5"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// sqsEvent is the SQS batch event Lambda hands a function (contracts §3.5).
type sqsEvent struct {
	Records []sqsRecord `json:"Records"`
}

type sqsRecord struct {
	MessageID              string                  `json:"messageId"`
	ReceiptHandle          string                  `json:"receiptHandle"`
	Body                   string                  `json:"body"`
	Attributes             sqsAttributes           `json:"attributes"`
	MessageAttributes      map[string]sqsAttribute `json:"messageAttributes"`
	MD5OfMessageAttributes *string                 `json:"md5OfMessageAttributes"`
	MD5OfBody              string                  `json:"md5OfBody"`
	EventSource            string                  `json:"eventSource"`
	EventSourceARN         string                  `json:"eventSourceARN"`
	AWSRegion              string                  `json:"awsRegion"`
}

type sqsAttributes struct {
	ApproximateReceiveCount          string `json:"ApproximateReceiveCount"`
	SentTimestamp                    string `json:"SentTimestamp"`
	SenderID                         string `json:"SenderId"`
	ApproximateFirstReceiveTimestamp string `json:"ApproximateFirstReceiveTimestamp"`
}

type sqsAttribute struct {
	StringValue      string   `json:"stringValue"`
	StringListValues []string `json:"stringListValues"`
	BinaryListValues []string `json:"binaryListValues"`
	DataType         string   `json:"dataType"`
}

// sqsEvent encodes items as the SQS batch event of s's queue.
func (q *Queues) sqsEvent(s spec, items []*item) []byte {
	arn := "arn:aws:sqs:" + q.cfg.Region + ":" + q.cfg.Account + ":" + s.queue
	ev := sqsEvent{Records: make([]sqsRecord, len(items))}
	for i, it := range items {
		body := jsonSafe(it.body)
		sum := md5.Sum([]byte(body))
		firstReceive := it.received
		if it.delivered > 1 {
			firstReceive = it.sent // the first receipt is not kept; it was after the send
		}
		r := sqsRecord{
			MessageID:     it.id,
			ReceiptHandle: receiptHandle(s.queue, it.seq, it.delivered),
			Body:          body,
			Attributes: sqsAttributes{
				ApproximateReceiveCount:          strconv.Itoa(it.delivered),
				SentTimestamp:                    strconv.FormatInt(it.sent.UnixMilli(), 10),
				SenderID:                         "aloft",
				ApproximateFirstReceiveTimestamp: strconv.FormatInt(firstReceive.UnixMilli(), 10),
			},
			MessageAttributes: make(map[string]sqsAttribute, len(it.attrs)),
			MD5OfBody:         hex.EncodeToString(sum[:]),
			EventSource:       "aws:sqs",
			EventSourceARN:    arn,
			AWSRegion:         q.cfg.Region,
		}
		if len(it.attrs) > 0 {
			attrs := make(map[string]string, len(it.attrs))
			for k, v := range it.attrs {
				k, v = jsonSafe(k), jsonSafe(v)
				attrs[k] = v
				r.MessageAttributes[k] = sqsAttribute{StringValue: v, StringListValues: []string{}, BinaryListValues: []string{}, DataType: "String"}
			}
			sum := attributesMD5(attrs)
			r.MD5OfMessageAttributes = &sum
		}
		ev.Records[i] = r
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(ev) // only strings, maps of strings and slices: always encodes
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// receiptHandle is an opaque handle of one delivery.
func receiptHandle(queue string, seq uint64, delivered int) string {
	return base64.RawURLEncoding.EncodeToString([]byte(queue + ":" + strconv.FormatUint(seq, 10) + ":" + strconv.Itoa(delivered)))
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

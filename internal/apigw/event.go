// Package apigw maps HTTP requests to API Gateway HTTP API (payload format
// 2.0) events and maps what a function returns back to an HTTP response, as
// API Gateway does for a Lambda proxy integration. It is on the invoke hot
// path, so events are encoded by hand into one buffer rather than through
// encoding/json; tests decode the output with aws-lambda-go's event types to
// prove the two agree.
package apigw

import (
	"encoding/base64"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// RequestInfo is what the gateway knows about a request beyond the request
// itself. Zero fields take the defaults named below.
type RequestInfo struct {
	// RouteKey is the matched route, "GET /users/{id}"; default "$default".
	RouteKey string
	// PathParams are the values of the route's {params}; nil when none.
	PathParams map[string]string
	// RequestID is the invocation id.
	RequestID string
	// Stage defaults to "$default".
	Stage string
	// APIID defaults to "aloft".
	APIID string
	// AccountID defaults to "000000000000" (later: derived from the tenant).
	AccountID string
	// Now is the time the request arrived.
	Now time.Time
	// SourceIP defaults to the host part of r.RemoteAddr.
	SourceIP string
	// Path is the path the function sees, still percent-encoded (for
	// /fn/{name}/rest the caller passes "/rest"); it becomes rawPath and
	// requestContext.http.path. Default: r.URL.EscapedPath().
	Path string
}

const (
	defaultRouteKey  = "$default"
	defaultStage     = "$default"
	defaultAPIID     = "aloft"
	defaultAccountID = "000000000000"
	// timeLayout is API Gateway's requestContext.time format.
	timeLayout = "02/Jan/2006:15:04:05 -0700"
)

// NewEvent returns the JSON of the payload format 2.0 event for r, whose
// body the caller has already read into body. It reads nothing from r.Body.
//
// Headers are lower-cased and repeats joined with commas; Cookie headers are
// split into cookies and left out of headers; a host header is added from
// r.Host. Query parameters are URL-decoded and repeats joined with commas.
// The body is sent as text when the content type is textual (text/*, JSON,
// XML, form-urlencoded, JavaScript, GraphQL, NDJSON, +json, +xml) or absent,
// and the bytes are valid UTF-8; otherwise base64 with isBase64Encoded.
//
// The error result is always nil today; it is there so that a later limit
// (header count, event size) can refuse a request without an API change.
func NewEvent(r *http.Request, body []byte, info RequestInfo) ([]byte, error) {
	e := eventEncoder{buf: make([]byte, 0, eventSizeHint(r, body))}
	e.encode(r, body, &info)
	return e.buf, nil
}

// eventSizeHint guesses the encoded size so that encoding allocates once.
func eventSizeHint(r *http.Request, body []byte) int {
	n := 768 + 2*len(r.URL.RawQuery) + 2*len(r.URL.Path) + base64.StdEncoding.EncodedLen(len(body))
	for k, vs := range r.Header {
		n += len(k) + 8
		for _, v := range vs {
			n += len(v) + 2
		}
	}
	return n
}

type eventEncoder struct {
	buf []byte
}

func (e *eventEncoder) encode(r *http.Request, body []byte, info *RequestInfo) {
	routeKey := orDefault(info.RouteKey, defaultRouteKey)
	path := info.Path
	if path == "" {
		path = r.URL.EscapedPath()
	}
	e.raw(`{"version":"2.0","routeKey":`)
	e.str(routeKey)
	e.raw(`,"rawPath":`)
	e.str(path)
	e.raw(`,"rawQueryString":`)
	e.str(r.URL.RawQuery)
	e.cookies(r.Header["Cookie"])
	e.headers(r)
	e.query(r.URL.RawQuery)
	if len(info.PathParams) > 0 {
		e.raw(`,"pathParameters":`)
		e.stringMap(info.PathParams)
	}
	e.requestContext(r, info, routeKey, path)
	if len(body) > 0 {
		if isTextual(r.Header.Get("Content-Type"), body) {
			e.raw(`,"body":`)
			e.str(string(body))
			e.raw(`,"isBase64Encoded":false}`)
		} else {
			e.raw(`,"body":"`)
			e.buf = base64.StdEncoding.AppendEncode(e.buf, body)
			e.raw(`","isBase64Encoded":true}`)
		}
		return
	}
	e.raw(`,"isBase64Encoded":false}`)
}

func (e *eventEncoder) requestContext(r *http.Request, info *RequestInfo, routeKey, path string) {
	domain := r.Host
	if h, _, err := net.SplitHostPort(domain); err == nil {
		domain = h
	}
	prefix, _, _ := strings.Cut(domain, ".")
	sourceIP := info.SourceIP
	if sourceIP == "" {
		sourceIP = r.RemoteAddr
		if h, _, err := net.SplitHostPort(sourceIP); err == nil {
			sourceIP = h
		}
	}
	now := info.Now.UTC()
	e.raw(`,"requestContext":{"accountId":`)
	e.str(orDefault(info.AccountID, defaultAccountID))
	e.raw(`,"apiId":`)
	e.str(orDefault(info.APIID, defaultAPIID))
	e.raw(`,"domainName":`)
	e.str(domain)
	e.raw(`,"domainPrefix":`)
	e.str(prefix)
	e.raw(`,"http":{"method":`)
	e.str(r.Method)
	e.raw(`,"path":`)
	e.str(path)
	e.raw(`,"protocol":`)
	e.str(r.Proto)
	e.raw(`,"sourceIp":`)
	e.str(sourceIP)
	e.raw(`,"userAgent":`)
	e.str(r.UserAgent())
	e.raw(`},"requestId":`)
	e.str(info.RequestID)
	e.raw(`,"routeKey":`)
	e.str(routeKey)
	e.raw(`,"stage":`)
	e.str(orDefault(info.Stage, defaultStage))
	e.raw(`,"time":"`)
	e.buf = now.AppendFormat(e.buf, timeLayout)
	e.raw(`","timeEpoch":`)
	e.buf = strconv.AppendInt(e.buf, now.UnixMilli(), 10)
	e.raw(`}`)
}

// cookies writes the cookies array: every Cookie header split at ';'.
func (e *eventEncoder) cookies(values []string) {
	first := true
	for _, v := range values {
		for c := range strings.SplitSeq(v, ";") {
			c = strings.TrimSpace(c)
			if c == "" {
				continue
			}
			if first {
				e.raw(`,"cookies":[`)
				first = false
			} else {
				e.raw(`,`)
			}
			e.str(c)
		}
	}
	if !first {
		e.raw(`]`)
	}
}

// headers writes the headers object: names lower-cased and sorted, repeats
// (including names that differ only in case) joined with commas, Cookie left
// out, host added from r.Host.
func (e *eventEncoder) headers(r *http.Request) {
	var stack [32]string
	keys := stack[:0]
	for k := range r.Header {
		if !strings.EqualFold(k, "Cookie") && !strings.EqualFold(k, "Host") {
			keys = append(keys, k)
		}
	}
	if r.Host != "" {
		keys = append(keys, "Host")
	}
	slices.SortFunc(keys, compareFold)
	e.raw(`,"headers":{`)
	for i := 0; i < len(keys); {
		if i > 0 {
			e.raw(`,`)
		}
		e.lowerStr(keys[i])
		e.raw(`:"`)
		n := 0
		j := i
		for ; j < len(keys) && strings.EqualFold(keys[j], keys[i]); j++ {
			if keys[j] == "Host" {
				n = e.joinValue(n, r.Host)
				continue
			}
			for _, v := range r.Header[keys[j]] {
				n = e.joinValue(n, v)
			}
		}
		e.raw(`"`)
		i = j
	}
	e.raw(`}`)
}

// joinValue appends v, escaped, after a comma unless it is the first (n==0).
func (e *eventEncoder) joinValue(n int, v string) int {
	if n > 0 {
		e.raw(`,`)
	}
	e.escape(v)
	return n + 1
}

type queryPair struct{ k, v string }

// query writes queryStringParameters (omitted when there are none): keys and
// values URL-decoded (left raw when the escape is malformed), sorted by key,
// repeated keys' values joined with commas in order.
func (e *eventEncoder) query(raw string) {
	if raw == "" {
		return
	}
	var stack [16]queryPair
	pairs := stack[:0]
	for kv := range strings.SplitSeq(raw, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		if u, err := url.QueryUnescape(k); err == nil {
			k = u
		}
		if u, err := url.QueryUnescape(v); err == nil {
			v = u
		}
		pairs = append(pairs, queryPair{k, v})
	}
	if len(pairs) == 0 {
		return
	}
	slices.SortStableFunc(pairs, func(a, b queryPair) int { return strings.Compare(a.k, b.k) })
	e.raw(`,"queryStringParameters":{`)
	for i := 0; i < len(pairs); {
		if i > 0 {
			e.raw(`,`)
		}
		e.str(pairs[i].k)
		e.raw(`:"`)
		n := 0
		j := i
		for ; j < len(pairs) && pairs[j].k == pairs[i].k; j++ {
			n = e.joinValue(n, pairs[j].v)
		}
		e.raw(`"`)
		i = j
	}
	e.raw(`}`)
}

func (e *eventEncoder) stringMap(m map[string]string) {
	var stack [8]string
	keys := stack[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	e.raw(`{`)
	for i, k := range keys {
		if i > 0 {
			e.raw(`,`)
		}
		e.str(k)
		e.raw(`:`)
		e.str(m[k])
	}
	e.raw(`}`)
}

func (e *eventEncoder) raw(s string) { e.buf = append(e.buf, s...) }

// str appends s as a JSON string.
func (e *eventEncoder) str(s string) {
	e.buf = append(e.buf, '"')
	e.escape(s)
	e.buf = append(e.buf, '"')
}

// lowerStr appends s, ASCII-lower-cased, as a JSON string. Lower-casing the
// escaped bytes in place is safe: escapes use only lower-case letters and
// multi-byte UTF-8 sequences have no ASCII bytes.
func (e *eventEncoder) lowerStr(s string) {
	e.buf = append(e.buf, '"')
	start := len(e.buf)
	e.escape(s)
	for i := start; i < len(e.buf); i++ {
		e.buf[i] = lower(e.buf[i])
	}
	e.buf = append(e.buf, '"')
}

const hexDigits = "0123456789abcdef"

// escape appends the body of a JSON string holding s: quotes, backslashes
// and control characters escaped; invalid UTF-8 replaced by U+FFFD; U+2028
// and U+2029 escaped so the output is also valid JavaScript (as
// encoding/json does).
func (e *eventEncoder) escape(s string) {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			e.buf = append(e.buf, s[start:i]...)
			switch c {
			case '"', '\\':
				e.buf = append(e.buf, '\\', c)
			case '\n':
				e.buf = append(e.buf, '\\', 'n')
			case '\r':
				e.buf = append(e.buf, '\\', 'r')
			case '\t':
				e.buf = append(e.buf, '\\', 't')
			default:
				e.buf = append(e.buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			e.buf = append(e.buf, s[start:i]...)
			e.buf = append(e.buf, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			e.buf = append(e.buf, s[start:i]...)
			e.buf = append(e.buf, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	e.buf = append(e.buf, s[start:]...)
}

// compareFold orders strings by their ASCII-lower-cased bytes, then by the
// strings themselves so that the order is total.
func compareFold(a, b string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		ca, cb := lower(a[i]), lower(b[i])
		if ca != cb {
			if ca < cb {
				return -1
			}
			return 1
		}
	}
	if c := len(a) - len(b); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// isTextual reports whether a body with this Content-Type goes into the
// event as text rather than base64. Bytes that are not valid UTF-8 are
// always base64: a JSON string cannot carry them unchanged.
func isTextual(contentType string, body []byte) bool {
	if !utf8.Valid(body) {
		return false
	}
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	if mt == "" {
		return true
	}
	typ, sub, ok := strings.Cut(mt, "/")
	if !ok {
		return false
	}
	if typ == "text" || strings.HasSuffix(sub, "+json") || strings.HasSuffix(sub, "+xml") {
		return true
	}
	switch sub {
	case "json", "xml", "x-www-form-urlencoded", "javascript", "x-javascript",
		"ecmascript", "graphql", "x-ndjson", "ndjson", "jsonl", "x-jsonlines":
		return true
	}
	return false
}

package apigw

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
)

// ErrInvalidResponse marks an error from WriteResponse whose cause is what
// the function returned, not the connection. A 502 has been written.
var ErrInvalidResponse = errors.New("function returned an invalid response")

// response is a decoded payload format 2.0 response.
type response struct {
	status  int
	header  http.Header
	cookies []string
	body    []byte
}

// WriteResponse writes what a function returned on an HTTP route to w, as
// API Gateway does for payload format 2.0.
//
// A JSON object with a non-null "statusCode" is a structured response: its
// statusCode (an integer 200-599 or a string holding one), headers,
// multiValueHeaders (these replace a header of the same name), cookies (each
// its own Set-Cookie) and body (base64-decoded when isBase64Encoded is true)
// are used. A body that is not a JSON string is sent as its JSON text.
// Headers with invalid names or values containing CR, LF or NUL, and
// hop-by-hop headers, are dropped; Content-Length is always Aloft's own.
// When no Content-Type is given, one is sniffed from the body.
//
// Any other valid JSON is inferred to be the body: status 200, content-type
// application/json, the JSON text as the body (a bare JSON string is sent as
// the text it holds).
//
// Invalid JSON, a statusCode that is not an integer in 200-599, a header
// value that is an object or array, or a base64 body that does not decode
// makes a 502 with {"error":{"code":"invalid_response","message":...}}; the
// returned error then wraps ErrInvalidResponse and says why (for the log).
// Otherwise the error, if any, is from writing the body.
func WriteResponse(w http.ResponseWriter, payload []byte) error {
	resp, err := decodeResponse(payload)
	if err != nil {
		writeInvalid(w, err)
		return fmt.Errorf("write function response: %w: %w", ErrInvalidResponse, err)
	}
	h := w.Header()
	for k, vs := range resp.header {
		h[k] = vs
	}
	for _, c := range resp.cookies {
		h.Add("Set-Cookie", c)
	}
	if !bodyAllowed(resp.status) {
		w.WriteHeader(resp.status)
		return nil
	}
	if h.Get("Content-Type") == "" && len(resp.body) > 0 {
		h.Set("Content-Type", http.DetectContentType(resp.body))
	}
	h.Set("Content-Length", strconv.Itoa(len(resp.body)))
	w.WriteHeader(resp.status)
	if _, err := w.Write(resp.body); err != nil && !errors.Is(err, http.ErrBodyNotAllowed) {
		return fmt.Errorf("write function response: %w", err)
	}
	return nil
}

// WriteFunctionError answers an HTTP route whose function failed as API
// Gateway does: 502 {"message":"Internal Server Error"}. The error's type,
// when it is a plain identifier, goes into an X-Aloft-Function-Error header
// (otherwise "Unhandled"); its message and stack trace never reach the
// client. payload is the function's error JSON.
func WriteFunctionError(w http.ResponseWriter, payload []byte) {
	kind := "Unhandled"
	var e struct {
		Type string `json:"errorType"`
	}
	if json.Unmarshal(payload, &e) == nil && isIdentifier(e.Type) {
		kind = e.Type
	}
	h := w.Header()
	h.Set("X-Aloft-Function-Error", kind)
	writeJSON(w, http.StatusBadGateway, `{"message":"Internal Server Error"}`)
}

// writeInvalid answers for a function whose response could not be used.
func writeInvalid(w http.ResponseWriter, cause error) {
	msg, _ := json.Marshal(ErrInvalidResponse.Error() + ": " + cause.Error())
	writeJSON(w, http.StatusBadGateway, `{"error":{"code":"invalid_response","message":`+string(msg)+`}}`)
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body)) // the client went away; nothing to do
}

// decodeResponse turns a payload into a response, or says why it cannot.
func decodeResponse(payload []byte) (*response, error) {
	if !json.Valid(payload) {
		return nil, errors.New("not valid JSON")
	}
	i := skipSpace(payload, 0)
	if payload[i] == '{' {
		var f fields
		objectFields(payload, i, f.set)
		if f.statusCode != nil && string(f.statusCode) != "null" {
			return f.decode()
		}
	}
	resp := &response{status: http.StatusOK, header: http.Header{"Content-Type": {"application/json"}}, body: payload}
	if payload[i] == '"' {
		resp.body = stringBytes(payload[i:skipString(payload, i)])
	}
	return resp, nil
}

// fields are the raw values of a structured response's members.
type fields struct {
	statusCode, headers, multiValueHeaders, cookies, body, isBase64Encoded []byte
}

func (f *fields) set(key string, value []byte) {
	switch key {
	case "statusCode":
		f.statusCode = value
	case "headers":
		f.headers = value
	case "multiValueHeaders":
		f.multiValueHeaders = value
	case "cookies":
		f.cookies = value
	case "body":
		f.body = value
	case "isBase64Encoded":
		f.isBase64Encoded = value
	}
}

func (f *fields) decode() (*response, error) {
	status, err := decodeStatus(f.statusCode)
	if err != nil {
		return nil, err
	}
	resp := &response{status: status, header: http.Header{}}
	if err := decodeHeaders(f.headers, f.multiValueHeaders, resp.header); err != nil {
		return nil, err
	}
	if err := decodeCookies(f.cookies, resp); err != nil {
		return nil, err
	}
	switch {
	case f.body == nil || string(f.body) == "null":
	case f.body[0] == '"':
		resp.body = stringBytes(f.body)
	default:
		resp.body = f.body
	}
	if string(f.isBase64Encoded) == "true" {
		b, err := base64.StdEncoding.AppendDecode(nil, resp.body)
		if err != nil {
			return nil, errors.New("isBase64Encoded is true but the body is not valid base64")
		}
		resp.body = b
	}
	return resp, nil
}

func decodeStatus(raw []byte) (int, error) {
	s := string(raw)
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, fmt.Errorf("statusCode: %w", err)
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) {
		return 0, fmt.Errorf("statusCode %.20q is not an integer", s)
	}
	// 1xx cannot be a final response: net/http would send it as
	// informational and then a 200.
	if f < 200 || f > 599 {
		return 0, fmt.Errorf("statusCode %.20q is outside 200-599", s)
	}
	return int(f), nil
}

// hopByHop are headers that belong to one connection, or that Aloft sets
// itself; a function cannot set them.
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true,
	"Transfer-Encoding": true, "Upgrade": true, "Te": true, "Trailer": true,
	"Content-Length": true,
}

// decodeHeaders reads headers then multiValueHeaders into h, in document
// order (a repeated name: the last wins, as with any JSON decoder).
func decodeHeaders(single, multi []byte, h http.Header) error {
	if present(single) {
		if single[0] != '{' {
			return errors.New("headers is not an object")
		}
		var err error
		objectFields(single, 0, func(k string, raw []byte) {
			v, ok, verr := scalarText(raw)
			if verr != nil && err == nil {
				err = fmt.Errorf("header %q: %w", k, verr)
			}
			if ok && validHeader(k, v) {
				h.Set(k, v)
			}
		})
		if err != nil {
			return err
		}
	}
	if present(multi) {
		if multi[0] != '{' {
			return errors.New("multiValueHeaders is not an object")
		}
		var err error
		objectFields(multi, 0, func(k string, raw []byte) {
			if raw[0] != '[' {
				if err == nil && present(raw) {
					err = fmt.Errorf("multiValueHeaders %q is not an array", k)
				}
				return
			}
			var vs []string
			arrayElems(raw, 0, func(elem []byte) {
				v, ok, verr := scalarText(elem)
				if verr != nil && err == nil {
					err = fmt.Errorf("header %q: %w", k, verr)
				}
				if ok && validHeader(k, v) {
					vs = append(vs, v)
				}
			})
			if len(vs) > 0 {
				h[http.CanonicalHeaderKey(k)] = vs
			}
		})
		if err != nil {
			return err
		}
	}
	for k := range h {
		if hopByHop[k] {
			delete(h, k)
		}
	}
	return nil
}

func decodeCookies(raw []byte, resp *response) error {
	if !present(raw) {
		return nil
	}
	if raw[0] != '[' {
		return errors.New("cookies is not an array")
	}
	var err error
	arrayElems(raw, 0, func(elem []byte) {
		v, ok, verr := scalarText(elem)
		if verr != nil && err == nil {
			err = fmt.Errorf("cookie: %w", verr)
		}
		if ok && validHeader("Set-Cookie", v) {
			resp.cookies = append(resp.cookies, v)
		}
	})
	return err
}

// present reports whether a member was given and is not null.
func present(raw []byte) bool { return len(raw) > 0 && string(raw) != "null" }

// scalarText returns a JSON scalar as header text: a string's contents, a
// number's or boolean's literal. ok is false for null. Objects and arrays
// are an error.
func scalarText(raw []byte) (text string, ok bool, err error) {
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return "", false, nil
	case raw[0] == '"':
		return stringText(raw), true, nil
	case raw[0] == '{' || raw[0] == '[':
		return "", false, errors.New("value is not a string")
	default:
		return string(raw), true, nil
	}
}

// validHeader reports whether name is an HTTP token and value holds no
// CR, LF or NUL (which would let a function split the response).
func validHeader(name, value string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !isTokenByte(name[i]) {
			return false
		}
	}
	for i := 0; i < len(value); i++ {
		if c := value[i]; c == '\r' || c == '\n' || c == 0 {
			return false
		}
	}
	return true
}

func isTokenByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// isIdentifier reports whether s is short and made of letters, digits, '.',
// '_' and '-' only: safe to echo in a header.
func isIdentifier(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// bodyAllowed reports whether a response with this status may have a body.
func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified
}

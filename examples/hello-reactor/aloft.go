package main

// The Aloft reactor ABI for Go: copy this file into a package main, call
// Serve from init with an http.Handler, and build with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o fn.wasm
//
// Aloft calls _initialize once (which runs init), then aloft_alloc and
// aloft_handle once per request, one request at a time; package state
// survives between requests.

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unsafe"
)

var (
	handler http.Handler
	reqBuf  []byte // the request, written by the host after aloft_alloc
	respBuf []byte // the last response, valid until the next call
)

// Serve sets the handler of every request.
func Serve(h http.Handler) { handler = h }

//go:wasmexport aloft_alloc
func aloftAlloc(size int32) int32 {
	// Allocation is slow inside a wasm module (tens of microseconds for a
	// few kilobytes), so the request buffer, its reader and the response
	// buffer are reused from request to request.
	if int(size) > cap(reqBuf) {
		reqBuf = make([]byte, size)
	}
	reqBuf = reqBuf[:size]
	if size == 0 {
		return 0
	}
	return int32(uintptr(unsafe.Pointer(&reqBuf[0])))
}

var (
	reqReader bytes.Reader
	bufReader = bufio.NewReaderSize(nil, 4096)
	w         responseWriter
	out       bytes.Buffer
)

//go:wasmexport aloft_handle
func aloftHandle(ptr, size int32) int64 {
	w.header, w.status = http.Header{}, 0
	w.body.Reset()
	req, err := readRequest(reqBuf[:size])
	if err != nil {
		http.Error(&w, "bad request: "+err.Error(), http.StatusBadRequest)
	} else {
		handler.ServeHTTP(&w, req)
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.header.Get("Content-Type") == "" && w.body.Len() > 0 {
		w.header.Set("Content-Type", http.DetectContentType(w.body.Bytes()))
	}
	w.header.Del("Content-Length")
	w.header.Del("Transfer-Encoding")
	out.Reset()
	out.WriteString("HTTP/1.1 ")
	out.WriteString(strconv.Itoa(w.status))
	out.WriteString(" ")
	out.WriteString(http.StatusText(w.status))
	out.WriteString("\r\nContent-Length: ")
	out.WriteString(strconv.Itoa(w.body.Len()))
	out.WriteString("\r\n")
	for k, vs := range w.header { // Header.Write sorts: slow in a module
		for _, v := range vs {
			out.WriteString(k)
			out.WriteString(": ")
			out.WriteString(strings.Map(noNewline, v))
			out.WriteString("\r\n")
		}
	}
	out.WriteString("\r\n")
	out.Write(w.body.Bytes())
	respBuf = out.Bytes()
	return int64(uintptr(unsafe.Pointer(&respBuf[0])))<<32 | int64(len(respBuf))
}

type responseWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *responseWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

// noNewline keeps a header value on its line, as Header.Write does.
func noNewline(r rune) rune {
	if r == '\r' || r == '\n' {
		return ' '
	}
	return r
}

// readRequest parses the request. Code runs many times slower inside a
// module than natively, and http.ReadRequest is most of a small request's
// time there, so the form Aloft sends (a request line, one "Key: value"
// per header line, an exact Content-Length, the body) is parsed directly;
// anything else goes to http.ReadRequest.
func readRequest(b []byte) (*http.Request, error) {
	if req := parseRequest(b); req != nil {
		return req, nil
	}
	reqReader.Reset(b)
	bufReader.Reset(&reqReader)
	return http.ReadRequest(bufReader)
}

func parseRequest(b []byte) *http.Request {
	line, b, ok := bytes.Cut(b, []byte("\r\n"))
	if !ok {
		return nil
	}
	method, rest, ok1 := strings.Cut(string(line), " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || method == "" || proto != "HTTP/1.1" {
		return nil
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil
	}
	req := &http.Request{Method: method, URL: u, Proto: proto, ProtoMajor: 1, ProtoMinor: 1,
		Header: make(http.Header, 8), RequestURI: target, ContentLength: -1}
	for {
		line, b, ok = bytes.Cut(b, []byte("\r\n"))
		if !ok {
			return nil
		}
		if len(line) == 0 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(k) == 0 || bytes.ContainsAny(k, " \t") {
			return nil
		}
		key, value := http.CanonicalHeaderKey(string(k)), string(bytes.TrimSpace(v))
		switch key {
		case "Host":
			req.Host = value
			continue // promoted, as http.ReadRequest does
		case "Content-Length":
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil || n < 0 || req.ContentLength >= 0 {
				return nil
			}
			req.ContentLength = n
		case "Transfer-Encoding":
			return nil
		}
		req.Header[key] = append(req.Header[key], value)
	}
	if req.ContentLength != int64(len(b)) {
		return nil
	}
	req.Body = http.NoBody
	if len(b) > 0 {
		req.Body = io.NopCloser(bytes.NewReader(b))
	}
	return req
}

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
	"net/http"
	"strconv"
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
	reqReader.Reset(reqBuf[:size])
	bufReader.Reset(&reqReader)
	w.header, w.status = http.Header{}, 0
	w.body.Reset()
	req, err := http.ReadRequest(bufReader)
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
	_ = w.header.Write(&out)
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

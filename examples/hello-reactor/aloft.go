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
	reqBuf = make([]byte, size)
	if size == 0 {
		return 0
	}
	return int32(uintptr(unsafe.Pointer(&reqBuf[0])))
}

//go:wasmexport aloft_handle
func aloftHandle(ptr, size int32) int64 {
	w := &responseWriter{header: http.Header{}}
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(reqBuf[:size])))
	if err != nil {
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
	} else {
		handler.ServeHTTP(w, req)
	}
	reqBuf = nil
	if w.status == 0 {
		w.status = http.StatusOK
	}
	resp := http.Response{
		StatusCode: w.status, ProtoMajor: 1, ProtoMinor: 1,
		Header: w.header, ContentLength: int64(w.body.Len()),
		Body: io.NopCloser(&w.body),
	}
	if resp.Header.Get("Content-Type") == "" && w.body.Len() > 0 {
		resp.Header.Set("Content-Type", http.DetectContentType(w.body.Bytes()))
	}
	var out bytes.Buffer
	_ = resp.Write(&out)
	respBuf = out.Bytes()
	if len(respBuf) == 0 {
		return 0
	}
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

// Package respbuf holds an http.ResponseWriter that keeps the response in
// memory, for handlers whose answer is passed on rather than written to a
// connection: a wasm function behind the invoke API, a Runtime API request
// answered on a connection the server took over. (net/http/httptest's
// recorder does this too, but importing httptest registers a command-line
// flag in the binary.)
package respbuf

import (
	"bytes"
	"net/http"
)

// Response is an in-memory http.ResponseWriter. Its zero value is not
// usable; create one with New.
type Response struct {
	header http.Header
	// Status is the status written, 0 until WriteHeader or Write.
	Status int
	// Body is what was written.
	Body bytes.Buffer
}

// New returns an empty Response.
func New() *Response { return &Response{header: http.Header{}} }

// Header returns the header to send.
func (b *Response) Header() http.Header { return b.header }

// WriteHeader records status; later calls are ignored.
func (b *Response) WriteHeader(status int) {
	if b.Status == 0 {
		b.Status = status
	}
}

// Write appends p to the body, with status 200 if none was written.
func (b *Response) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	return b.Body.Write(p)
}

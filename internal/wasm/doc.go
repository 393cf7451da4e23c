// Package wasm runs WebAssembly (WASI preview1) functions on wazero.
//
// An Engine compiles each module once, when it is deployed (Compile), keeps
// the compiled code in memory until Forget, and persists it in an on-disk
// compilation cache so that a restart reloads instead of recompiling.
// Requests never compile: they instantiate the in-memory compiled module.
//
// A module is one of two kinds, detected from its exports:
//
// # Command modules (WAGI / CGI 1.1)
//
// A command module exports _start. Every request gets a fresh instance
// (nothing survives between requests), run once by ServeCGI: the request's
// CGI meta-variables (REQUEST_METHOD, SERVER_PROTOCOL=HTTP/1.1, PATH_INFO,
// QUERY_STRING, HTTP_*, ...) and the function's environment are its
// environment, argv is SCRIPT_NAME followed by the query parameters, the
// body is on stdin (CONTENT_LENGTH is exact) and stderr is the function's
// log. The module writes a CGI response on stdout: header lines, a blank
// line, the body. Content-Type or Location must be present; "Status: 404"
// (reason phrase optional) sets the status, Location alone means 302. Go's
// net/http/cgi.Serve is such a handler when built with GOOS=wasip1.
//
// # Reactor modules (the Aloft reactor ABI)
//
// A reactor module keeps its state between requests: one instance serves
// many requests, one at a time (NewInstance, Instance.Serve). It exports:
//
//	memory                                    its linear memory
//	aloft_alloc(size i32) -> i32              a buffer of size bytes for the next request
//	aloft_handle(ptr i32, len i32) -> i64     handle the request in [ptr, ptr+len)
//	_initialize()                             optional; called once per instance
//
// The request is a raw HTTP/1.1 request: request line (origin-form target),
// Host and the other headers, a blank line, and the body with an exact
// Content-Length (never chunked). aloft_handle returns resp_ptr<<32 |
// resp_len, pointing at a raw HTTP/1.1 response in linear memory: status
// line, headers, blank line, body (delimited by Content-Length or by the end
// of the buffer). The request buffer belongs to the module once aloft_handle
// is called; the response buffer must stay valid until the next call into
// the module. Stdout and stderr are the function's log; stdin is empty.
// examples/hello-reactor/aloft.go is the whole glue for Go (GOOS=wasip1
// GOARCH=wasm go build -buildmode=c-shared): a handler is an http.Handler.
//
// # Sandbox
//
// Modules may import only wasi_snapshot_preview1 (no sockets). Clocks and
// the random source are the host's real ones (crypto/rand). The file
// system holds only the optional code directory, read-only at /var/task,
// and a private, per-instance, in-memory /tmp. Linear memory is capped per
// instance (Limits.MemoryMB). A context's end interrupts the running code
// (interrupt.go: every loop checks a global the host sets), and the
// instance is closed; modules must therefore be WebAssembly 2.0, which the
// compile-time rewrite can decode.
package wasm

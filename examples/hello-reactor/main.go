// Command hello-reactor is a WebAssembly reactor: Aloft builds it with
// GOOS=wasip1 -buildmode=c-shared (it has //go:wasmexport functions, in
// aloft.go) and reuses one instance for many requests, one at a time, so
// package state survives between requests. The handler is an ordinary
// http.Handler.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
)

var served int

func init() {
	Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served++
		body, _ := io.ReadAll(r.Body)
		name := r.URL.Query().Get("name")
		if name == "" {
			name = "world"
		}
		fmt.Fprintf(os.Stderr, "greeting %s\n", name)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "Hello, %s! (from a WebAssembly reactor, %s %s, request %d on this instance)", name, r.Method, r.URL.Path, served)
		if len(body) > 0 {
			fmt.Fprintf(w, " body=%s", body)
		}
		fmt.Fprintln(w)
	}))
}

func main() {}

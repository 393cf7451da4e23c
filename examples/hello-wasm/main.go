// Command hello-wasm is a WebAssembly command module speaking CGI (the
// WAGI contract): Aloft builds it with GOOS=wasip1 and runs a fresh
// instance per request. It is a plain net/http handler behind cgi.Serve.
package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cgi"
	"os"
)

func main() {
	err := cgi.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		name := r.URL.Query().Get("name")
		if name == "" {
			name = "world"
		}
		fmt.Fprintf(os.Stderr, "greeting %s\n", name)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "Hello, %s! (from WebAssembly, %s %s)", name, r.Method, r.URL.Path)
		if len(body) > 0 {
			fmt.Fprintf(w, " body=%s", body)
		}
		fmt.Fprintln(w)
	}))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

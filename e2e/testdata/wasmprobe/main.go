// Command wasmprobe is a WebAssembly command module (CGI) the end-to-end
// tests drive: ?op=count shows that every request gets a fresh instance,
// loop and hog exercise the timeout and the memory cap, exit fails.
package main

import (
	"fmt"
	"net/http"
	"net/http/cgi"
	"os"
)

var requests int

var hog [][]byte

func main() {
	_ = cgi.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests++
		switch r.URL.Query().Get("op") {
		case "loop":
			for {
				requests++
			}
		case "hog":
			for {
				hog = append(hog, make([]byte, 1<<20))
			}
		case "exit":
			fmt.Fprintln(os.Stderr, "exiting on purpose")
			os.Exit(3)
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "requests=%d", requests)
	}))
}

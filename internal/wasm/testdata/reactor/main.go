// Command reactor is a test function for the wasm package's reactor ABI,
// built with GOOS=wasip1 GOARCH=wasm -buildmode=c-shared.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

var counter int

func init() {
	Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/counter":
			counter++
			fmt.Fprint(w, counter)
		case "/echo":
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Echo", "yes")
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprintf(w, "%s %s host=%s ua=%s body=%s", r.Method, r.URL.RequestURI(), r.Host, r.Header.Get("User-Agent"), body)
		case "/time":
			fmt.Fprint(w, time.Now().UnixNano())
		case "/env":
			fmt.Fprint(w, os.Getenv(r.URL.Query().Get("k")))
		case "/log":
			fmt.Println("to stdout")
			fmt.Fprintln(os.Stderr, "to stderr")
			fmt.Fprint(w, "logged")
		case "/headers":
			w.Header()["X-Multi"] = []string{"a", "b"}
			w.Header().Set("X-Newline", "x\ny")
			_, hostInHeader := r.Header["Host"]
			fmt.Fprintf(w, "%d %q %q %v", r.ContentLength, r.Header.Values("X-Many"), r.Header.Get("Content-Type"), hostInHeader)
		case "/sleep":
			time.Sleep(time.Hour)
		case "/loop":
			for {
				counter++
			}
		default:
			http.NotFound(w, r)
		}
	}))
}

func main() {}

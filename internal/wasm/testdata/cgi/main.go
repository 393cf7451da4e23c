// Command cgi is a WAGI (CGI) test function for the wasm package, built
// with GOOS=wasip1 GOARCH=wasm. Its path picks the behaviour.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/cgi"
	"os"
	"strconv"
	"strings"
	"time"
)

var counter int

func main() {
	// Paths that must bypass net/http/cgi's well-formed output.
	switch os.Getenv("PATH_INFO") {
	case "/notype":
		fmt.Print("X-Only: header\r\n\r\nno content type")
		return
	case "/exit":
		fmt.Fprintln(os.Stderr, "exiting with 3")
		os.Exit(3)
	case "/loop":
		for {
			counter++
		}
	}
	err := cgi.Serve(http.HandlerFunc(serve))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/fn/echo":
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Echo", "yes")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "method=%s path=%s info=%s query=%s q=%s ua=%s args=%s body=%s",
			r.Method, r.URL.Path, os.Getenv("PATH_INFO"), r.URL.RawQuery, r.URL.Query().Get("q"),
			r.Header.Get("User-Agent"), strings.Join(os.Args, ","), body)
	case "/fn/env":
		fmt.Fprintf(w, "%s=%s", r.URL.Query().Get("k"), os.Getenv(r.URL.Query().Get("k")))
	case "/fn/counter":
		counter++
		fmt.Fprint(w, counter)
	case "/fn/time":
		fmt.Fprint(w, time.Now().UnixNano())
	case "/fn/rand":
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		fmt.Fprint(w, hex.EncodeToString(b))
	case "/fn/hog":
		mb, _ := strconv.Atoi(r.URL.Query().Get("mb"))
		var keep [][]byte
		for range mb {
			keep = append(keep, make([]byte, 1<<20))
		}
		fmt.Fprint(w, len(keep))
	case "/fn/tmp":
		err := os.WriteFile("/tmp/x", []byte("written"), 0o600)
		if err == nil {
			var b []byte
			b, err = os.ReadFile("/tmp/x")
			fmt.Fprintf(w, "%s ", b)
		}
		ents, _ := os.ReadDir("/tmp")
		fmt.Fprintf(w, "err=%v entries=%d", err, len(ents))
	case "/fn/code":
		b, err := os.ReadFile("/var/task/hello.txt")
		werr := os.WriteFile("/var/task/new.txt", nil, 0o600)
		fmt.Fprintf(w, "read=%s err=%v write_failed=%t", b, err, werr != nil)
	case "/fn/redirect":
		http.Redirect(w, r, "/elsewhere", http.StatusSeeOther)
	default:
		http.NotFound(w, r)
	}
}

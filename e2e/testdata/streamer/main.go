// Command streamer is an http-runtime function for the end-to-end tests:
// it answers with ?n= lines (default 100), one every 50 ms, each flushed.
package main

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil {
			n = 100
		}
		w.Header().Set("Content-Type", "text/plain")
		for i := range n {
			if _, err := fmt.Fprintf(w, "line %d\n", i); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			if i < n-1 {
				time.Sleep(50 * time.Millisecond)
			}
		}
	})
	_ = http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil)
}

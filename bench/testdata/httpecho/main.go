// Command httpecho is the benchmark's http-runtime function: it answers
// every request with its body (or "ok"). Run directly, it is the direct
// baseline the platform is compared with.
package main

import (
	"io"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if len(b) == 0 {
			b = []byte("ok")
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(b)
	})
	_ = http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil)
}

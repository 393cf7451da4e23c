// Command hello-http is a plain Go HTTP server: Aloft runs anything that
// listens on $PORT (the Cloud Run / Knative contract).
package main

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "Hello from an http function: %s %s", r.Method, r.URL.Path)
		if len(body) > 0 {
			fmt.Fprintf(w, " body=%s", body)
		}
		fmt.Fprintln(w)
	})
	log.Printf("listening on :%s", os.Getenv("PORT"))
	log.Fatal(http.ListenAndServe(":"+os.Getenv("PORT"), nil))
}

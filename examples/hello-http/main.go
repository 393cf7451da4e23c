// Command hello-http is a plain Go HTTP server: Aloft runs anything that
// listens on $PORT (the Cloud Run / Knative contract). When Aloft stops
// the instance (scaled to zero, a redeploy, the server's exit) it sends
// SIGTERM and gives it 10 seconds: the server finishes the requests it
// has, then exits.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "Hello from an http function: %s %s", r.Method, r.URL.Path)
		if len(body) > 0 {
			fmt.Fprintf(w, " body=%s", body)
		}
		fmt.Fprintln(w)
	})
	srv := &http.Server{Addr: ":" + os.Getenv("PORT"), Handler: mux}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		log.Print("SIGTERM: finishing the requests in flight, then exiting")
		sctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Printf("listening on :%s", os.Getenv("PORT"))
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
	<-stopped // ListenAndServe returns as Shutdown begins: wait for its end
	log.Print("stopped")
}

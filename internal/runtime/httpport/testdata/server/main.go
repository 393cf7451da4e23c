// Command server is a plain HTTP function for the tests of package
// httpport: it listens on 127.0.0.1:$PORT.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
)

func main() {
	mux := http.NewServeMux()
	// / answers invocations: {"status":N,"body":"..."} sets the reply, any
	// other payload is echoed.
	mux.HandleFunc("POST /{$}", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var want struct {
			Status int    `json:"status"`
			Body   string `json:"body"`
		}
		if json.Unmarshal(b, &want) == nil && want.Status != 0 {
			w.WriteHeader(want.Status)
			io.WriteString(w, want.Body)
			return
		}
		w.Header().Set("Content-Type", "application/x-echo")
		w.Write(b)
	})
	// /echo describes the request it got.
	mux.HandleFunc("/echo/", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Echo", "1")
		status, _ := strconv.Atoi(r.URL.Query().Get("status"))
		if status == 0 {
			status = http.StatusOK
		}
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{
			"method": r.Method, "path": r.URL.Path, "query": r.URL.RawQuery, "host": r.Host,
			"header": r.Header, "body": string(b),
		})
	})
	// /copy streams the request body back.
	mux.HandleFunc("/copy", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, r.Body)
	})
	// /duplex answers each line of the request body as soon as it arrives.
	mux.HandleFunc("/duplex", func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		rc.EnableFullDuplex()
		w.WriteHeader(http.StatusOK)
		rc.Flush()
		sc := bufio.NewScanner(r.Body)
		for sc.Scan() {
			fmt.Fprintf(w, "got %s\n", sc.Text())
			rc.Flush()
		}
	})
	// /sleep answers only when the client goes away.
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	if err := http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

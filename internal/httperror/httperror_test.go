package httperror

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"aloft/internal/fn"
)

func TestWrite(t *testing.T) {
	var logged strings.Builder
	log := slog.New(slog.NewTextHandler(&logged, nil))
	tests := []struct {
		name       string
		err        error
		status     int
		code       string
		retryAfter string
		leak       string // must not appear in the body
	}{
		{"client error", fn.Invalid("memory 64 MB is out of range"), 400, "invalid_request", "", ""},
		{"wrapped client error", errors.Join(errors.New("ctx"), fn.NotFound("function \"x\" not found")), 404, "not_found", "", ""},
		{"throttled", fn.Throttled(2, "queue full"), 429, "throttled", "2", ""},
		{"too large", &http.MaxBytesError{Limit: 10}, 413, "too_large", "", ""},
		{"internal", errors.New("open /var/lib/secret: permission denied"), 500, "internal", "", "/var/lib/secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			Write(rec, log, "req-1", tt.err)
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d", rec.Code, tt.status)
			}
			var b Body
			if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
				t.Fatalf("body %q is not JSON: %v", rec.Body, err)
			}
			if b.Error.Code != tt.code || b.Error.Message == "" {
				t.Fatalf("body = %+v, want code %q and a message", b, tt.code)
			}
			if got := rec.Header().Get("Retry-After"); got != tt.retryAfter {
				t.Fatalf("Retry-After = %q, want %q", got, tt.retryAfter)
			}
			if tt.leak != "" && strings.Contains(rec.Body.String(), tt.leak) {
				t.Fatalf("internal detail leaked: %s", rec.Body)
			}
			if tt.status == 500 && !strings.Contains(logged.String(), tt.leak) {
				t.Fatalf("internal error was not logged: %s", logged.String())
			}
		})
	}
}

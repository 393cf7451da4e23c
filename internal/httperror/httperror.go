// Package httperror is the one adapter that turns an error into an HTTP
// status and a JSON body {"error":{"code","message"}}. Only *fn.Error values
// reach the client as they are; anything else is logged with a request id
// and answered 500 without internal detail.
package httperror

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"aloft/internal/fn"
)

// Body is the JSON shape of every error response.
type Body struct {
	Error Detail `json:"error"`
}

// Detail is the inside of Body.
type Detail struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id,omitempty"`
}

// Write answers err. requestID is included in 500s so operators can find the
// log line.
func Write(w http.ResponseWriter, log *slog.Logger, requestID string, err error) {
	var fe *fn.Error
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &fe):
	case errors.As(err, &mbe):
		fe = fn.TooLarge("request body is over the %d byte limit: send less", mbe.Limit)
	case errors.Is(err, context.DeadlineExceeded):
		fe = fn.Errorf(http.StatusGatewayTimeout, "timeout", "the request timed out")
	case errors.Is(err, context.Canceled):
		// The client went away; nothing useful to send.
		fe = fn.Errorf(499, "canceled", "request canceled")
	default:
		log.Error("internal error", "request_id", requestID, "error", err)
		fe = &fn.Error{Status: http.StatusInternalServerError, Code: "internal",
			Message: "internal error; the server log has details under this request id"}
	}
	if fe.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(fe.RetryAfter))
	}
	body := Body{Error: Detail{Code: fe.Code, Message: fe.Message}}
	if fe.Status >= 500 {
		body.Error.RequestID = requestID
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(fe.Status)
	_ = json.NewEncoder(w).Encode(body)
}

package fn

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is an error built to be shown to a client. Status is the HTTP status
// it maps to, Code a stable machine-readable word, Message says what to fix.
// Errors of any other type are internal: they are logged, never shown.
type Error struct {
	Status  int
	Code    string
	Message string
	// RetryAfter, when positive, is sent as a Retry-After header (seconds).
	RetryAfter int
}

func (e *Error) Error() string { return e.Message }

// Errorf returns a client-facing error with the given status and code.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid reports a malformed request (400 invalid_request).
func Invalid(format string, args ...any) *Error {
	return Errorf(http.StatusBadRequest, "invalid_request", format, args...)
}

// NotFound reports a missing resource (404 not_found).
func NotFound(format string, args ...any) *Error {
	return Errorf(http.StatusNotFound, "not_found", format, args...)
}

// Conflict reports a state conflict (409 conflict).
func Conflict(format string, args ...any) *Error {
	return Errorf(http.StatusConflict, "conflict", format, args...)
}

// TooLarge reports a payload over a limit (413 too_large).
func TooLarge(format string, args ...any) *Error {
	return Errorf(http.StatusRequestEntityTooLarge, "too_large", format, args...)
}

// Throttled reports a full queue (429 throttled) with a Retry-After hint.
func Throttled(retryAfter int, format string, args ...any) *Error {
	e := Errorf(http.StatusTooManyRequests, "throttled", format, args...)
	e.RetryAfter = retryAfter
	return e
}

// Unavailable reports capacity that did not free up in time (503 unavailable).
func Unavailable(format string, args ...any) *Error {
	return Errorf(http.StatusServiceUnavailable, "unavailable", format, args...)
}

// IsNotFound reports whether err is a client-facing 404.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

package wasm

import (
	"context"
	"errors"
	"fmt"

	"github.com/tetratelabs/wazero/sys"
)

// Error types of a FunctionError, named as Lambda names them.
const (
	ErrExit            = "Runtime.ExitError"             // exit code != 0, or a trap
	ErrOutOfMemory     = "Runtime.OutOfMemory"           // grew past Limits.MemoryMB
	ErrTimeout         = "Sandbox.Timedout"              // the context's deadline passed
	ErrInvalidResponse = "Function.InvalidResponse"      // output that is not a valid response
	ErrResponseTooBig  = "Function.ResponseSizeTooLarge" // output over MaxResponseBytes
)

// FunctionError is a failure of the function's code, meant to be answered
// to the client the way Lambda answers a function error. Nothing has been
// written to the response when it is returned.
type FunctionError struct {
	Type    string
	Message string
}

func (e *FunctionError) Error() string { return e.Type + ": " + e.Message }

// runError turns the error of a call into the module into a FunctionError,
// or returns it wrapped when the caller canceled ctx. ctx's end is checked
// first: it interrupts the code (interrupt.go), which then traps.
func runError(ctx context.Context, err error, mem *cappedMemory) error {
	var exit *sys.ExitError
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &FunctionError{Type: ErrTimeout, Message: "the function did not finish before its timeout"}
	case errors.Is(ctx.Err(), context.Canceled):
		return fmt.Errorf("run wasm function: %w", context.Canceled)
	case mem.refused.Load():
		return &FunctionError{Type: ErrOutOfMemory, Message: fmt.Sprintf("the function needed more than its %d MB of memory", mem.limit>>20)}
	case errors.As(err, &exit):
		return &FunctionError{Type: ErrExit, Message: fmt.Sprintf("the function exited with code %d", exit.ExitCode())}
	}
	return &FunctionError{Type: ErrExit, Message: fmt.Sprintf("the function trapped: %v", err)}
}

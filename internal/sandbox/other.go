//go:build !linux

package sandbox

import (
	"context"
	"errors"
	"net"
	"runtime"
)

var errUnsupported = errors.New("native sandbox unsupported: needs Linux (this is " + runtime.GOOS + ")")

// Supported reports why this system cannot sandbox: it is not Linux.
func Supported() error { return errUnsupported }

// MaybeRunInit does nothing outside Linux.
func MaybeRunInit() (code int, ok bool) { return 0, false }

// Executor is unavailable outside Linux.
type Executor struct{}

// Instance is unavailable outside Linux.
type Instance struct{}

// New fails outside Linux, even with Insecure: Aloft runs functions on
// Linux only.
func New(cfg Config) (*Executor, error) { return nil, errUnsupported }

func (e *Executor) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (e *Executor) Start(ctx context.Context, spec Spec) (*Instance, error) {
	return nil, errUnsupported
}
func (e *Executor) Close() error                           { return nil }
func (i *Instance) ID() string                             { return "" }
func (i *Instance) Pid() int                               { return 0 }
func (i *Instance) Listener() net.Listener                 { return nil }
func (i *Instance) Dial(context.Context) (net.Conn, error) { return nil, errUnsupported }
func (i *Instance) Done() <-chan struct{}                  { return nil }
func (i *Instance) Exit() ExitStatus                       { return ExitStatus{} }
func (i *Instance) Kill()                                  {}
func (i *Instance) Terminate()                             {}
func (i *Instance) MemoryPeak() int64                      { return 0 }

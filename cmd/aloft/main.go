// Command aloft is the Aloft server and its command-line client.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"aloft/internal/sandbox"
)

func main() {
	if code, ok := sandbox.MaybeRunInit(); ok {
		os.Exit(code) // this process was a sandbox init whose setup failed
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "aloft:", err)
		}
		os.Exit(exitCode(err))
	}
}

// Command bench measures Aloft against the physical floors of the machine
// it runs on and prints one table: cold starts, warm invocations, warm
// throughput, the http runtime against the same server called directly,
// WebAssembly, and events (async invocations, schedules, queues, a crash).
// Every floor is measured in the same run, so ratios are comparable across
// noisy machines. Run it as root (the sandbox needs it):
//
//	go run ./bench
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"aloft/internal/sandbox"
)

func main() {
	if code, ok := sandbox.MaybeRunInit(); ok {
		os.Exit(code) // this process was a sandbox init whose setup failed
	}
	if code, ok := maybeReload(); ok {
		os.Exit(code) // this process was a restart's reload (wasm.go)
	}
	var o options
	flag.IntVar(&o.cold, "cold", 50, "cold starts measured for the Go row (node and python: half)")
	flag.IntVar(&o.warm, "warm", 3000, "requests measured for each c=1 latency row")
	flag.DurationVar(&o.duration, "duration", 0, "duration of each throughput row (default 3s)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the warm Go lambda rows (c=1 and c=32) to this file")
	flag.BoolVar(&o.insecure, "insecure-no-sandbox", false, "run without the sandbox (figures are then not comparable)")
	flag.BoolVar(&o.eventsOnly, "events-only", false, "measure only the events rows (async, schedules, queues, crash test)")
	flag.BoolVar(&o.coreOnly, "core-only", false, "measure only the core and WebAssembly rows")
	flag.BoolVar(&o.noCrash, "no-crash", false, "skip the crash-test row")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, o, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

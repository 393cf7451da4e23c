//go:build linux

package sandbox

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// benchStart starts the probe (which exits at once) b.N times and waits for
// each to be Done; it reports the mean time until Start returned (the
// function exec'ed) as start-ms.
func benchStart(b *testing.B, e *Executor, network bool, beforeEach func()) {
	var startTotal time.Duration
	n := 0
	for b.Loop() {
		if beforeEach != nil {
			b.StopTimer()
			beforeEach()
			b.StartTimer()
		}
		spec := probeSpec("exit", "0")
		spec.Network = network
		t0 := time.Now()
		inst, err := e.Start(context.Background(), spec)
		if err != nil {
			b.Fatal(err)
		}
		startTotal += time.Since(t0)
		n++
		<-inst.Done()
		if inst.Exit().Code != 0 {
			b.Fatalf("exit %s", inst.Exit())
		}
	}
	b.ReportMetric(float64(startTotal.Microseconds())/1000/float64(n), "start-ms")
}

func BenchmarkStartCold(b *testing.B) {
	e := newExecutor(b, Config{})
	benchStart(b, e, false, nil)
}

func BenchmarkStartPrewarmed(b *testing.B) {
	for _, network := range []bool{false, true} {
		b.Run(fmt.Sprintf("network=%v", network), func(b *testing.B) { benchPrewarmed(b, network) })
	}
}

func benchPrewarmed(b *testing.B, network bool) {
	e := newRunningExecutor(b, Config{Prewarm: 1})
	benchStart(b, e, network, func() {
		waitFor(b, "a prepared sandbox", func() bool { return len(e.warm) == 1 && (!e.wantNet.Load() || len(e.warmNet) == 1) })
	})
}

func BenchmarkStartInsecure(b *testing.B) {
	e := newExecutor(b, Config{Insecure: true})
	benchStart(b, e, false, nil)
}

func ExampleExitStatus_String() {
	fmt.Println(ExitStatus{Code: 2})
	fmt.Println(ExitStatus{Code: -1, Signal: "SIGKILL", OOMKilled: true})
	// Output:
	// exit status 2
	// killed by SIGKILL (out of memory)
}

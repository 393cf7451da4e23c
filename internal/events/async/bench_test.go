package async

import (
	"context"
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"

	"aloft/internal/fn"
)

var benchPayload = []byte(`{"order":12345,"customer":"c-42","items":[{"sku":"a-1","qty":2},{"sku":"b-7","qty":1}]}`)

// parallel64 makes RunParallel use 64 goroutines, like 64 concurrent
// callers.
func parallel64(b *testing.B) {
	b.SetParallelism(max(64/runtime.GOMAXPROCS(0), 1))
}

// BenchmarkEnqueue measures durable enqueues (each waits for JetStream's
// ack) from 64 concurrent callers.
func BenchmarkEnqueue(b *testing.B) {
	e := newEnv(b)
	e.createFunction(b, "bench")
	a := e.newAsync(b)
	enqueue(b, a, Event{Function: "bench"}) // creates the stream and consumer
	b.ReportAllocs()
	parallel64(b)
	start, cpu := time.Now(), cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, _, err := a.Enqueue(ctx, Event{Tenant: tenant, Function: "bench", Payload: benchPayload}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "enqueues/s")
	reportCPU(b, cpu)
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time per operation since cpu (the embedded
// NATS server's included): on a loaded machine it varies less than the
// wall-clock figures.
func reportCPU(b *testing.B, cpu time.Duration) {
	b.ReportMetric(float64(cpuTime()-cpu)/float64(time.Microsecond)/float64(b.N), "cpu-us/op")
}

// BenchmarkExecutions measures end to end: 64 callers enqueue while Run
// executes with an instant function, until every event has succeeded.
func BenchmarkExecutions(b *testing.B) {
	e := newEnv(b)
	e.createFunction(b, "bench", func(f *fn.Function) { f.Scale.Max = 100 })
	a := e.newAsync(b)
	run(b, a)
	enqueue(b, a, Event{Function: "bench"})
	eventually(b, "the first event", func() bool { return a.Stats().Succeeded == 1 })
	b.ReportAllocs()
	parallel64(b)
	start, cpu := time.Now(), cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, _, err := a.Enqueue(ctx, Event{Tenant: tenant, Function: "bench", Payload: benchPayload}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	want := uint64(b.N) + 1
	waitSucceeded(b, a, want)
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "execs/s")
	reportCPU(b, cpu)
	b.ReportMetric(float64(e.rec.Dropped()), "records-dropped")
}

// BenchmarkDrain measures executions alone: events stored first, then Run
// drains them with an instant function.
func BenchmarkDrain(b *testing.B) {
	for _, scale := range []int{10, 100} {
		b.Run(fmt.Sprintf("cap-%d", scale), func(b *testing.B) { benchmarkDrain(b, scale) })
	}
}

func benchmarkDrain(b *testing.B, scale int) {
	e := newEnv(b)
	e.createFunction(b, "bench", func(f *fn.Function) { f.Scale.Max = scale })
	a := e.newAsync(b)
	parallel64(b)
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, _, err := a.Enqueue(ctx, Event{Tenant: tenant, Function: "bench", Payload: benchPayload}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ResetTimer()
	b.ReportAllocs()
	start, cpu := time.Now(), cpuTime()
	run(b, a)
	waitSucceeded(b, a, uint64(b.N))
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "execs/s")
	reportCPU(b, cpu)
}

func waitSucceeded(b *testing.B, a *Async, want uint64) {
	deadline := time.Now().Add(5 * time.Minute)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for a.Stats().Succeeded < want {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d events succeeded", a.Stats().Succeeded, want)
		}
		<-tick.C
	}
}

func BenchmarkEncodeDecode(b *testing.B) {
	ev := Event{ID: "0b7e6c1e-8a0f-4d5e-9a57-3f7f2a1c9d10", Tenant: tenant, Function: "bench",
		Qualifier: fn.LatestVersion, Trigger: "api", Payload: benchPayload}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		msg, err := encode(&ev, now)
		if err != nil {
			b.Fatal(err)
		}
		if _, ok := decode(msg.Subject, msg.Header, msg.Data, 1, now); !ok {
			b.Fatal("decode failed")
		}
	}
}

package scale

import (
	"context"
	"testing"
	"time"
)

// BenchmarkAcquireRelease measures the hot path: a slot on a warm instance,
// taken and given back.
func BenchmarkAcquireRelease(b *testing.B) {
	bench := func(b *testing.B, cfg Config, body func(b *testing.B, p *Pool)) {
		fl := &fleet{}
		cfg.Name, cfg.Start = "f:1", fl.start
		cfg.Idle, cfg.QueueWait = time.Hour, time.Minute
		p, err := NewPool(cfg)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				b.Error(err)
			}
		}()
		// Warm up to Max instances (one holds every slot when Concurrency > 1).
		var leases []*Lease
		for range max(cfg.Max/cfg.Concurrency, 1) {
			l, err := p.Acquire(ctx)
			if err != nil {
				b.Fatal(err)
			}
			leases = append(leases, l)
		}
		for _, l := range leases {
			l.Release()
		}
		b.ReportAllocs()
		b.ResetTimer()
		body(b, p)
	}
	b.Run("warm", func(b *testing.B) {
		bench(b, Config{Max: 1, Concurrency: 1}, func(b *testing.B, p *Pool) {
			ctx := context.Background()
			for b.Loop() {
				l, err := p.Acquire(ctx)
				if err != nil {
					b.Fatal(err)
				}
				l.Release()
			}
		})
	})
	b.Run("parallel", func(b *testing.B) {
		bench(b, Config{Max: 1, Concurrency: 1024}, func(b *testing.B, p *Pool) {
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					l, err := p.Acquire(ctx)
					if err != nil {
						b.Error(err)
						return
					}
					l.Release()
				}
			})
		})
	})
	b.Run("parallel-8-instances", func(b *testing.B) {
		bench(b, Config{Min: 8, Max: 8, Concurrency: 1}, func(b *testing.B, p *Pool) {
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					l, err := p.Acquire(ctx)
					if err != nil {
						b.Error(err)
						return
					}
					l.Release()
				}
			})
		})
	})
}

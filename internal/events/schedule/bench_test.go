package schedule

import (
	"testing"
	"time"
)

// The loop computes Next after every tick of every schedule, and builds a
// payload per tick.

func BenchmarkNext(b *testing.B) {
	for _, bc := range []struct{ name, expr, tz string }{
		{"rate", "rate(5 minutes)", ""},
		{"aws-cron", "cron(0/15 8-18 ? * MON-FRI *)", ""},
		{"aws-cron-paris", "cron(30 2 ? * 6L *)", "Europe/Paris"},
		{"standard", "*/5 * * * *", ""},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := Parse(bc.expr, bc.tz)
			if err != nil {
				b.Fatal(err)
			}
			at := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
			b.ReportAllocs()
			for b.Loop() {
				at = s.Next(at)
				if at.Year() > 2090 {
					at = time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
				}
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("cron(0/15 8-18 ? * MON-FRI *)", "Europe/Paris"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEventBridgeEvent(b *testing.B) {
	t := sampleTick("")
	b.ReportAllocs()
	for b.Loop() {
		_ = EventBridgeEvent(t, "us-east-1", "000000000000")
	}
}

func BenchmarkDecide(b *testing.B) {
	tick := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	st := &state{Tick: tick.Add(-time.Minute), Fired: true}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = decide(st, tick, tick.Add(time.Millisecond), "me", lease, time.Hour)
	}
}

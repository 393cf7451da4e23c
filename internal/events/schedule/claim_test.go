package schedule

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestDecide(t *testing.T) {
	tick := mustTime(t, "2024-01-01T12:00:00Z")
	at := func(d time.Duration) time.Time { return tick.Add(d) }
	const me = "run-me"
	tests := []struct {
		name  string
		st    *state
		now   time.Time
		want  verdict
		until time.Time
	}{
		{"no state: create", nil, at(time.Millisecond), claim, time.Time{}},
		{"older tick: claim", &state{Tick: at(-time.Minute), Fired: true}, at(0), claim, time.Time{}},
		{"older unfired tick: claim the newer", &state{Tick: at(-time.Minute), Run: "other", Claimed: at(-time.Second)}, at(0), claim, time.Time{}},
		{"newer tick claimed: skip", &state{Tick: at(time.Minute), Run: "other"}, at(0), skip, time.Time{}},
		{"baseline after the tick: skip", &state{Tick: at(time.Second), Fired: true}, at(2 * time.Second), skip, time.Time{}},
		{"fired: skip", &state{Tick: tick, Run: "other", Fired: true}, at(time.Second), skip, time.Time{}},
		{"own claim: skip", &state{Tick: tick, Run: me, Claimed: at(-time.Hour)}, at(time.Second), skip, time.Time{}},
		{"other's live claim: wait for its lease", &state{Tick: tick, Run: "other", Claimed: at(time.Millisecond)}, at(time.Second),
			wait, at(time.Millisecond + lease)},
		{"other's claim at the lease's end: take over", &state{Tick: tick, Run: "other", Claimed: at(0)}, at(lease), claim, time.Time{}},
		{"other's stale claim: take over", &state{Tick: tick, Run: "other", Claimed: at(-time.Hour)}, at(time.Minute), claim, time.Time{}},
		{"too old to fire", nil, at(time.Hour + time.Second), skip, time.Time{}},
		{"stale claim too old to take over", &state{Tick: tick, Run: "other", Claimed: at(0)}, at(2 * time.Hour), skip, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, until := decide(tt.st, tick, tt.now, me, lease, time.Hour)
			if v != tt.want || !until.Equal(tt.until) {
				t.Fatalf("decide = %v, %s; want %v, %s", v, until, tt.want, tt.until)
			}
		})
	}
}

func TestDue(t *testing.T) {
	minute, err := Parse("rate(1 minute)", "")
	if err != nil {
		t.Fatal(err)
	}
	daily, err := Parse("cron(0 9 * * ? *)", "Europe/Paris") // 08:00Z in winter
	if err != nil {
		t.Fatal(err)
	}
	once, err := Parse("cron(0 0 1 1 ? 2020)", "")
	if err != nil {
		t.Fatal(err)
	}
	now := mustTime(t, "2024-01-10T12:00:30Z")
	ts := func(s string) time.Time { return mustTime(t, s) }
	tests := []struct {
		name   string
		st     *state
		sched  *Schedule
		window time.Duration
		want   string // "" = nothing due
	}{
		{"no state: nothing (a new schedule baselines)", nil, minute, time.Hour, ""},
		{"several missed: only the latest", &state{Tick: ts("2024-01-10T11:50:00Z"), Fired: true}, minute, time.Hour, "2024-01-10T12:00:00Z"},
		{"nothing missed", &state{Tick: ts("2024-01-10T12:00:00Z"), Fired: true}, minute, time.Hour, ""},
		{"baseline after the latest tick", &state{Tick: ts("2024-01-10T12:00:10Z"), Fired: true}, minute, time.Hour, ""},
		{"latest claimed but never fired", &state{Tick: ts("2024-01-10T12:00:00Z"), Run: "dead"}, minute, time.Hour, "2024-01-10T12:00:00Z"},
		{"inside the window", &state{Tick: ts("2024-01-10T11:00:00Z"), Fired: true}, minute, time.Minute, "2024-01-10T12:00:00Z"},
		{"outside a 20s window", &state{Tick: ts("2024-01-10T11:00:00Z"), Fired: true}, minute, 20 * time.Second, ""},
		{"catch-up disabled", &state{Tick: ts("2024-01-10T11:00:00Z"), Fired: true}, minute, 0, ""},
		{"daily within 5h", &state{Tick: ts("2024-01-09T08:00:00Z"), Fired: true}, daily, 5 * time.Hour, "2024-01-10T08:00:00Z"},
		{"daily outside 3h", &state{Tick: ts("2024-01-09T08:00:00Z"), Fired: true}, daily, 3 * time.Hour, ""},
		{"year over long ago", &state{Tick: ts("2019-12-31T00:00:00Z"), Fired: true}, once, time.Hour, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := due(tt.st, tt.sched, now, tt.window)
			switch {
			case tt.want == "" && ok:
				t.Fatalf("due = %s, want nothing", got)
			case tt.want != "" && (!ok || !got.Equal(ts(tt.want))):
				t.Fatalf("due = %s, %v; want %s", got, ok, tt.want)
			}
		})
	}
}

func TestStateKey(t *testing.T) {
	a, _ := Parse("rate(5 minutes)", "")
	a2, _ := Parse("rate(5  minute)", "") // the same schedule, written differently
	b, _ := Parse("rate(6 minutes)", "")
	c, _ := Parse("0 9 * * *", "")
	cParis, _ := Parse("0 9 * * *", "Europe/Paris")
	ka := stateKey("default", "hello", 0, a)
	switch {
	case ka != stateKey("default", "hello", 0, a2):
		t.Error("the same schedule written differently changed the key")
	case ka == stateKey("default", "hello", 0, b):
		t.Error("an edited expression kept the key")
	case stateKey("default", "hello", 0, c) == stateKey("default", "hello", 0, cParis):
		t.Error("an edited zone kept the key")
	case ka == stateKey("default", "hello", 1, a) || ka == stateKey("other", "hello", 0, a):
		t.Error("the key ignores the index or tenant")
	}
}

func TestBackoff(t *testing.T) {
	prev := time.Duration(0)
	for n := 1; n <= 40; n++ {
		d := backoff(n)
		if d < backoffBase*8/10 || d > backoffMax*12/10 {
			t.Fatalf("backoff(%d) = %s, out of [%s, %s]", n, d, backoffBase*8/10, backoffMax*12/10)
		}
		if n <= 5 && d < prev/2 {
			t.Fatalf("backoff(%d) = %s does not grow from %s", n, d, prev)
		}
		prev = d
	}
}

// The loop's sleep wakes exactly at the next tick, on a poke, or at
// maxWait, and stops with ctx.
func TestSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		timer := time.NewTimer(time.Hour)
		poke := make(chan struct{}, 1)

		start := time.Now()
		if !sleep(ctx, timer, start.Add(1500*time.Millisecond), poke) {
			t.Fatal("sleep ended early")
		}
		if got := time.Since(start); got != 1500*time.Millisecond {
			t.Fatalf("woke after %s, want 1.5s", got)
		}

		start = time.Now()
		sleep(ctx, timer, time.Time{}, poke)
		if got := time.Since(start); got != maxWait {
			t.Fatalf("with nothing due woke after %s, want %s", got, maxWait)
		}

		start = time.Now()
		sleep(ctx, timer, start.Add(-time.Second), poke)
		if got := time.Since(start); got != 0 {
			t.Fatalf("with a tick past due woke after %s, want at once", got)
		}

		start = time.Now()
		go func() {
			time.Sleep(200 * time.Millisecond)
			poke <- struct{}{}
		}()
		sleep(ctx, timer, start.Add(time.Hour), poke)
		if got := time.Since(start); got != 200*time.Millisecond {
			t.Fatalf("poked after 200ms, woke after %s", got)
		}

		go func() {
			time.Sleep(time.Second)
			cancel()
		}()
		if sleep(ctx, timer, time.Now().Add(time.Hour), poke) {
			t.Fatal("sleep reported a live ctx after cancel")
		}
	})
}

// A failed Fire waits its backoff, unless a newer tick stops it or ctx
// ends.
func TestPause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		stop := make(chan struct{})
		start := time.Now()
		if !pause(ctx, 800*time.Millisecond, stop) || time.Since(start) != 800*time.Millisecond {
			t.Fatalf("pause returned after %s, want true after 800ms", time.Since(start))
		}
		start = time.Now()
		go func() {
			time.Sleep(100 * time.Millisecond)
			close(stop)
		}()
		if pause(ctx, time.Hour, stop) || time.Since(start) != 100*time.Millisecond {
			t.Fatalf("pause did not end when stopped after 100ms (%s)", time.Since(start))
		}
		cancel()
		if pause(ctx, time.Hour, make(chan struct{})) {
			t.Fatal("pause reported true after ctx ended")
		}
	})
}

// latest's bisection agrees with stepping through every tick.
func TestLatest(t *testing.T) {
	exprs := []struct{ expr, tz string }{
		{"cron(0/15 8-18 ? * MON-FRI *)", ""},
		{"cron(30 2 * * ? *)", "Europe/Paris"},
		{"cron(0 10 ? * 6L *)", ""},
		{"*/7 * * * *", "Asia/Kolkata"},
		{"cron(0 0 1 1 ? 2020)", ""},
		{"rate(90 minutes)", ""},
	}
	base := mustTime(t, "2024-03-25T00:00:00Z")
	for _, e := range exprs {
		s, err := Parse(e.expr, e.tz)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 40 {
			now := base.Add(time.Duration(i) * 7 * time.Hour).Add(time.Duration(i*i) * time.Second)
			from := now.Add(-time.Duration(i%5+1) * 24 * time.Hour)
			var want time.Time
			for n := s.Next(from.Add(-time.Nanosecond)); !n.IsZero() && !n.After(now); n = s.Next(n) {
				want = n
			}
			if got := latest(s, from, now); !got.Equal(want) {
				t.Fatalf("%s: latest(%s, %s) = %s, want %s", e.expr, from, now, got, want)
			}
		}
	}
}

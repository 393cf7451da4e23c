package scale

import (
	"slices"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0.Add(time.Hour)
	idle := time.Minute
	idleFor := func(d time.Duration) time.Time { return now.Add(-d) }
	tests := []struct {
		name string
		s    state
		want []action
	}{
		{
			name: "cold and quiet: nothing",
			s:    state{min: 0, max: 4, conc: 1, idle: idle},
		},
		{
			name: "warm minimum from zero",
			s:    state{min: 2, max: 4, conc: 1, idle: idle},
			want: []action{{kind: actStart, n: 2}},
		},
		{
			name: "warm minimum counts starting instances",
			s:    state{min: 2, max: 4, conc: 1, idle: idle, starting: 1},
			want: []action{{kind: actStart, n: 1}},
		},
		{
			name: "warm minimum waits for its backoff",
			s:    state{min: 2, max: 4, conc: 1, idle: idle, warmAfter: now.Add(time.Second)},
		},
		{
			name: "warm minimum capped by max with stopping instances",
			s:    state{min: 3, max: 3, conc: 1, idle: idle, stopping: 2},
			want: []action{{kind: actStart, n: 1}},
		},
		{
			name: "demand: uncovered waiters start instances",
			s:    state{max: 8, conc: 1, idle: idle, waiting: 5, starting: 2},
			want: []action{{kind: actStart, n: 3}},
		},
		{
			name: "demand: concurrency covers several waiters per start",
			s:    state{max: 8, conc: 4, idle: idle, waiting: 10},
			want: []action{{kind: actStart, n: 3}},
		},
		{
			name: "demand: starting slots already cover waiters",
			s:    state{max: 8, conc: 4, idle: idle, waiting: 8, starting: 2},
		},
		{
			name: "demand: never above max",
			s: state{max: 3, conc: 1, idle: idle, waiting: 50, starting: 1,
				running: []view{{id: 1, busy: 1}}},
			want: []action{{kind: actStart, n: 1}},
		},
		{
			name: "demand ignores warm backoff",
			s:    state{min: 1, max: 4, conc: 1, idle: idle, waiting: 2, warmAfter: now.Add(time.Hour)},
			want: []action{{kind: actStart, n: 2}},
		},
		{
			name: "idle exactly the keep-alive stops",
			s:    state{max: 4, conc: 1, idle: idle, running: []view{{id: 1, idleSince: idleFor(idle)}}},
			want: []action{{kind: actStop, id: 1}},
		},
		{
			name: "idle just under the keep-alive stays",
			s:    state{max: 4, conc: 1, idle: idle, running: []view{{id: 1, idleSince: idleFor(idle - time.Nanosecond)}}},
		},
		{
			name: "busy instance never stops for idleness",
			s:    state{max: 4, conc: 2, idle: idle, running: []view{{id: 1, busy: 1, idleSince: idleFor(time.Hour)}}},
		},
		{
			name: "min keeps the most recently idle ones",
			s: state{min: 1, max: 4, conc: 1, idle: idle, running: []view{
				{id: 1, idleSince: idleFor(2 * idle)},
				{id: 2, idleSince: idleFor(5 * idle)},
				{id: 3, idleSince: idleFor(3 * idle)},
			}},
			want: []action{{kind: actStop, id: 2}, {kind: actStop, id: 3}},
		},
		{
			name: "min equal to running stops nothing",
			s: state{min: 2, max: 4, conc: 1, idle: idle, running: []view{
				{id: 1, idleSince: idleFor(2 * idle)},
				{id: 2, idleSince: idleFor(5 * idle)},
			}},
		},
		{
			name: "draining stops every idle instance, even below min, and starts nothing",
			s: state{min: 2, max: 4, conc: 1, idle: idle, draining: true, waiting: 3, running: []view{
				{id: 1, idleSince: now},
				{id: 2, busy: 1},
			}},
			want: []action{{kind: actStop, id: 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decide(&tt.s, now, nil)
			if !slices.Equal(got, tt.want) {
				t.Errorf("decide = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDemandStarts(t *testing.T) {
	tests := []struct {
		waiting, starting, live, max, conc, want int
	}{
		{waiting: 0, max: 8, conc: 1, want: 0},
		{waiting: 1, max: 8, conc: 1, want: 1},
		{waiting: 1, starting: 1, live: 1, max: 8, conc: 1, want: 0},
		{waiting: 50, starting: 7, live: 7, max: 8, conc: 1, want: 1},
		{waiting: 50, starting: 8, live: 8, max: 8, conc: 1, want: 0},
		{waiting: 5, starting: 1, live: 1, max: 8, conc: 4, want: 1},
		{waiting: 4, starting: 1, live: 1, max: 8, conc: 4, want: 0},
		{waiting: 10, max: 8, conc: 4, want: 3},
		{waiting: 10, live: 8, max: 8, conc: 1, want: 0},
		{waiting: 3, live: 9, max: 8, conc: 1, want: 0}, // never negative
	}
	for _, tt := range tests {
		got := demandStarts(tt.waiting, tt.starting, tt.live, tt.max, tt.conc)
		if got != tt.want {
			t.Errorf("demandStarts(waiting %d, starting %d, live %d, max %d, conc %d) = %d, want %d",
				tt.waiting, tt.starting, tt.live, tt.max, tt.conc, got, tt.want)
		}
	}
}

func TestArrivalBucket(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want int
	}{
		{0, 0},
		{999 * time.Microsecond, 0},
		{time.Millisecond, 1},
		{3 * time.Millisecond, 1},
		{4 * time.Millisecond, 2},
		{15 * time.Millisecond, 2},
		{16 * time.Millisecond, 3},
		{time.Second, 5},
		{24 * time.Hour, ArrivalBuckets - 1},
	}
	for _, tt := range tests {
		got := arrivalBucket(tt.d)
		if got != tt.want {
			t.Errorf("arrivalBucket(%s) = %d, want %d", tt.d, got, tt.want)
		}
		if tt.d >= ArrivalBucketBound(got) || (got > 0 && tt.d < ArrivalBucketBound(got-1)) {
			t.Errorf("%s in bucket %d outside [%s, %s)", tt.d, got, ArrivalBucketBound(got-1), ArrivalBucketBound(got))
		}
	}
}

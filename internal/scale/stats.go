package scale

import (
	"math"
	"math/bits"
	"time"
)

// ArrivalBuckets is the number of buckets of the inter-arrival histogram.
const ArrivalBuckets = 12

// ArrivalBucketBound returns the exclusive upper bound of inter-arrival
// bucket i: 1ms for bucket 0, then 4ms, 16ms, … (powers of 4 in
// milliseconds); the last bucket is unbounded.
func ArrivalBucketBound(i int) time.Duration {
	switch {
	case i < 0:
		return 0
	case i >= ArrivalBuckets-1:
		return math.MaxInt64
	}
	return time.Millisecond << (2 * i)
}

// arrivalBucket returns the bucket of an inter-arrival time d.
func arrivalBucket(d time.Duration) int {
	ms := d.Milliseconds()
	if ms < 1 {
		return 0
	}
	return min(1+(bits.Len64(uint64(ms))-1)/2, ArrivalBuckets-1)
}

// Stats is a snapshot of a pool.
type Stats struct {
	Instances int `json:"instances"` // running, ready to serve
	Starting  int `json:"starting"`  // reserved or being started
	Stopping  int `json:"stopping"`  // removed, Stop not yet returned
	Busy      int `json:"busy"`      // slots leased
	Waiting   int `json:"waiting"`   // requests queued for a slot

	Started     uint64 `json:"started"`     // instances started successfully, in total
	Stopped     uint64 `json:"stopped"`     // instances whose Stop returned, in total
	StartErrors uint64 `json:"startErrors"` // starts that failed
	Crashed     uint64 `json:"crashed"`     // instances that died on their own
	Throttled   uint64 `json:"throttled"`   // requests refused because the queue was full
	TimedOut    uint64 `json:"timedOut"`    // requests that waited QueueWait without a slot

	// Arrivals counts the time between consecutive Acquire calls, bucketed
	// by ArrivalBucketBound; the seam for predictive warm-up.
	Arrivals [ArrivalBuckets]uint64 `json:"arrivals"`
}

// Stats returns a snapshot of the pool's counts.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{
		Instances:   len(p.insts),
		Starting:    p.starting,
		Stopping:    p.stopping,
		Busy:        p.busy,
		Waiting:     p.q.n,
		Started:     p.counts.started,
		Stopped:     p.counts.stopped,
		StartErrors: p.counts.startErrors,
		Crashed:     p.counts.crashed,
		Throttled:   p.counts.throttled,
		TimedOut:    p.counts.timedOut,
		Arrivals:    p.counts.arrivals,
	}
}

// recordArrival adds the time since the previous Acquire to the histogram.
// p.mu held.
func (p *Pool) recordArrival(now time.Time) {
	if !p.lastArrival.IsZero() {
		p.counts.arrivals[arrivalBucket(now.Sub(p.lastArrival))]++
	}
	p.lastArrival = now
}

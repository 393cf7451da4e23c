package scale

import (
	"slices"
	"time"
)

// view is what decide sees of one running instance.
type view struct {
	id        uint64
	busy      int
	idleSince time.Time // when busy last dropped to 0; meaningless while busy > 0
}

// state is a snapshot of a pool for decide. Starting counts instances reserved
// or being started; stopping counts instances removed whose Stop has not
// returned yet (they still hold resources, so they count toward max).
type state struct {
	min, max, conc int
	idle           time.Duration
	running        []view
	starting       int
	stopping       int
	waiting        int
	warmAfter      time.Time // no warm-minimum start before this (backoff after failures)
	draining       bool
}

type actionKind uint8

const (
	actStop  actionKind = iota + 1 // stop the running instance id
	actStart                       // start n instances
)

type action struct {
	kind actionKind
	id   uint64
	n    int
}

// decide returns what the pool should do now: which idle instances to stop
// for the keep-alive and how many instances to start, for waiting requests
// and for the warm minimum. It appends to buf and returns it.
//
// Rules:
//   - draining: stop every running instance with no busy slot; start nothing.
//   - start enough instances that the starting ones' slots cover the waiters
//     (demandStarts), or enough to bring running+starting up to min once the
//     backoff has passed, whichever is more, never above max counting
//     starting and stopping instances.
//   - stop instances idle for at least s.idle, the longest idle first, as long
//     as at least min stay running.
func decide(s *state, now time.Time, buf []action) []action {
	if s.draining {
		for _, v := range s.running {
			if v.busy == 0 {
				buf = append(buf, action{kind: actStop, id: v.id})
			}
		}
		return buf
	}
	live := len(s.running) + s.starting + s.stopping
	n := demandStarts(s.waiting, s.starting, live, s.max, s.conc)
	if need := s.min - len(s.running) - s.starting; need > n && !now.Before(s.warmAfter) {
		n = min(need, s.max-live)
	}
	if n > 0 {
		buf = append(buf, action{kind: actStart, n: n})
	}

	allowed := len(s.running) - s.min
	if allowed <= 0 {
		return buf
	}
	first := len(buf)
	for _, v := range s.running {
		if v.busy == 0 && now.Sub(v.idleSince) >= s.idle {
			buf = append(buf, action{kind: actStop, id: v.id})
		}
	}
	if len(buf)-first > allowed {
		idleSince := func(id uint64) time.Time {
			for _, v := range s.running {
				if v.id == id {
					return v.idleSince
				}
			}
			return time.Time{}
		}
		stops := buf[first:]
		slices.SortStableFunc(stops, func(a, b action) int {
			return idleSince(a.id).Compare(idleSince(b.id))
		})
		buf = buf[:first+allowed]
	}
	return buf
}

// demandStarts is how many instances to start for waiting requests: enough
// that the slots of the instances already starting cover every waiter, within
// max live instances (running, starting and stopping). It never starts more
// instances than there is concurrent demand for.
func demandStarts(waiting, starting, live, limit, conc int) int {
	uncovered := waiting - starting*conc
	if uncovered <= 0 {
		return 0
	}
	n := (uncovered + conc - 1) / conc
	return max(0, min(n, limit-live))
}

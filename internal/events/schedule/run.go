package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// job is one piece of work for an entry's worker.
type job struct {
	init    bool      // initialise: baseline, or catch up a missed tick
	catchUp bool      // with init: a missed tick may fire
	tick    time.Time // without init: the tick to claim and fire
	run     string
	stop    <-chan struct{}
}

// Run fires ticks until ctx ends, then waits for its goroutines and
// returns nil. One timer wakes it for the earliest tick of all schedules;
// each tick is claimed and fired in its own goroutine (at most 256 at
// once, one per schedule). It returns an error only when Run is already
// running.
func (s *Scheduler) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("schedule: Run is already running")
	}
	s.running = true
	s.run = newRunID()
	for _, m := range s.fns {
		for _, e := range m {
			e.ready, e.catchUp, e.known = false, true, false
			e.retry = time.Time{}
		}
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
	}()

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.watch(ctx) })
	timer := time.NewTimer(maxWait)
	defer timer.Stop()
	for {
		now := time.Now()
		s.mu.Lock()
		wake := s.step(ctx, &wg, now)
		s.mu.Unlock()
		if !sleep(ctx, timer, wake, s.wake) {
			return nil
		}
	}
}

// sleep waits until wake (at most maxWait; zero wake waits maxWait), a
// poke, or the end of ctx, and reports whether ctx is still live.
func sleep(ctx context.Context, timer *time.Timer, wake time.Time, poke <-chan struct{}) bool {
	d := maxWait
	if !wake.IsZero() {
		d = min(max(time.Until(wake), 0), maxWait)
	}
	timer.Reset(d)
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
	case <-poke:
	}
	return true
}

// pause waits d and reports true, or false when ctx ends or stop closes
// first.
func pause(ctx context.Context, d time.Duration, stop <-chan struct{}) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	case <-timer.C:
		return true
	}
}

// step starts the work due at now and returns when something is due next
// (zero: nothing is). s.mu is held.
func (s *Scheduler) step(ctx context.Context, wg *sync.WaitGroup, now time.Time) time.Time {
	var wake time.Time
	soonest := func(t time.Time) {
		if !t.IsZero() && (wake.IsZero() || t.Before(wake)) {
			wake = t
		}
	}
	for _, m := range s.fns {
		for _, e := range m {
			if e.event.Disabled {
				continue
			}
			if e.busy {
				// A newer tick is due: an older one still retrying gives up.
				if e.ready && !e.next.IsZero() && !e.next.After(now) {
					s.halt(e)
				}
				continue
			}
			if s.workers >= maxWorkers {
				continue // a finishing worker pokes the loop
			}
			switch {
			case !e.ready:
				if e.retry.After(now) {
					break // a failed start waits a little
				}
				e.retry = time.Time{}
				s.start(ctx, wg, e, job{init: true, catchUp: e.catchUp})
			case !e.next.IsZero() && !e.next.After(now):
				// A newer tick supersedes a claim still being looked at.
				t := e.next
				e.next, e.retry = e.sched.Next(now), time.Time{}
				s.start(ctx, wg, e, job{tick: t})
			case !e.retry.IsZero() && !e.retry.After(now):
				t := e.retryTick
				e.retry = time.Time{}
				s.start(ctx, wg, e, job{tick: t})
			}
			if !e.busy {
				if e.ready {
					soonest(e.next)
				}
				soonest(e.retry)
			}
		}
	}
	return wake
}

// start runs j for e in a new goroutine. s.mu is held.
func (s *Scheduler) start(ctx context.Context, wg *sync.WaitGroup, e *entry, j job) {
	e.busy, e.stopped = true, false
	e.stop = make(chan struct{})
	j.run, j.stop = s.run, e.stop
	s.workers++
	wg.Go(func() {
		s.work(ctx, e, j)
		s.mu.Lock()
		e.busy = false
		s.workers--
		s.mu.Unlock()
		s.poke()
	})
}

// work does one job.
func (s *Scheduler) work(ctx context.Context, e *entry, j job) {
	if !j.init {
		s.attempt(ctx, e, j.tick, false, j)
		return
	}
	now := time.Now()
	if err := s.initEntry(ctx, e, now, j); err != nil {
		if ctx.Err() == nil {
			s.log.Warn("start schedule", "tenant", e.tenant, "function", e.function, "error", err)
		}
		s.mu.Lock()
		e.retry = time.Now().Add(jitter(time.Second))
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	e.ready = true
	e.next = e.sched.Next(now)
	s.mu.Unlock()
}

// initEntry records a baseline for a schedule new to the bucket, or fires
// the one tick missed while no node ran when j allows catching up.
func (s *Scheduler) initEntry(ctx context.Context, e *entry, now time.Time, j job) error {
	st, rev, err := s.load(ctx, e.key)
	if err != nil {
		return err
	}
	if st == nil {
		base := &state{Tick: now.UTC().Truncate(time.Second), Node: s.cfg.NodeID, Run: j.run, Fired: true}
		rev, err = s.store(ctx, e.key, base, 0)
		switch {
		case errors.Is(err, errConflict):
			// Another node created it first: catch up from its baseline.
			if st, rev, err = s.load(ctx, e.key); err != nil {
				return err
			}
		case err != nil:
			return err
		default:
			e.st, e.rev, e.known = base, rev, true
			return nil
		}
	}
	e.st, e.rev, e.known = st, rev, true
	if !j.catchUp {
		return nil
	}
	if t, ok := due(st, e.sched, now, s.catchUp); ok {
		s.attempt(ctx, e, t, true, j)
	}
	return nil
}

// attempt claims tick t and, if this run won it, fires it.
func (s *Scheduler) attempt(ctx context.Context, e *entry, t time.Time, catchUp bool, j job) {
	won, again := s.claim(ctx, e, t, j.run)
	if !won {
		if !again.IsZero() {
			s.mu.Lock()
			e.retry, e.retryTick = again, t
			s.mu.Unlock()
		}
		return
	}
	s.fire(ctx, e, t, catchUp, j)
}

// claim compare-and-sets e's state to a claim of t by this run. It
// returns whether it won, and otherwise when to look again (zero: never).
func (s *Scheduler) claim(ctx context.Context, e *entry, t time.Time, run string) (bool, time.Time) {
	for range maxConflicts {
		if !e.known {
			st, rev, err := s.load(ctx, e.key)
			if err != nil {
				return s.claimError(ctx, e, err)
			}
			e.st, e.rev, e.known = st, rev, true
		}
		now := time.Now()
		v, until := decide(e.st, t, now, run, lease, s.window)
		switch v {
		case skip:
			return false, time.Time{}
		case wait:
			return false, until
		}
		next := &state{Tick: t.UTC(), Node: s.cfg.NodeID, Run: run, Claimed: now.UTC()}
		if e.st != nil {
			next.Last = e.st.Last
		}
		rev, err := s.store(ctx, e.key, next, e.rev)
		if errors.Is(err, errConflict) {
			e.known = false
			continue
		}
		if err != nil {
			return s.claimError(ctx, e, err)
		}
		e.st, e.rev = next, rev
		return true, time.Time{}
	}
	e.known = false
	return false, time.Now().Add(jitter(backoffBase))
}

// claimError logs a failed read or write of the bucket and asks to look
// again shortly.
func (s *Scheduler) claimError(ctx context.Context, e *entry, err error) (bool, time.Time) {
	e.known = false
	if ctx.Err() != nil {
		return false, time.Time{}
	}
	s.log.Warn("claim schedule tick", "tenant", e.tenant, "function", e.function, "error", err)
	return false, time.Now().Add(jitter(time.Second))
}

// fire calls Fire for a claimed tick until it succeeds, the tick is too
// old, the claim is lost, or the job is stopped; then marks it fired.
func (s *Scheduler) fire(ctx context.Context, e *entry, t time.Time, catchUp bool, j job) {
	s.mu.Lock()
	tick := Tick{ID: tickID(e.tenant, e.function, e.index, t), Tenant: e.tenant, Function: e.function,
		Index: e.index, Event: e.event, Time: t, CatchUp: catchUp}
	s.mu.Unlock()
	log := s.log.With("tenant", e.tenant, "function", e.function, "trigger", "schedule", "tick", t)
	for attempt := 1; ; attempt++ {
		fctx, cancel := context.WithTimeout(ctx, fireTimeout)
		err := s.cfg.Fire(fctx, tick)
		cancel()
		if err == nil {
			// Record the tick even when the node is stopping, so that a
			// restart does not fire it again.
			mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markTimeout)
			s.fired(mctx, e, t, log)
			cancel()
			if catchUp {
				log.Info("schedule tick caught up", "duration", time.Since(t))
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		if time.Since(t) > s.window {
			log.Error("schedule tick given up", "attempt", attempt, "error", err)
			return
		}
		log.Warn("fire schedule tick", "attempt", attempt, "error", err)
		if !pause(ctx, backoff(attempt), j.stop) {
			if ctx.Err() == nil {
				log.Warn("schedule tick superseded before it fired", "attempt", attempt, "error", err)
			}
			return
		}
		if !s.renew(ctx, e) {
			return
		}
	}
}

// renew restarts the lease of this run's claim; false when the claim
// was lost (taken over, or a newer tick claimed).
func (s *Scheduler) renew(ctx context.Context, e *entry) bool {
	next := *e.st
	next.Claimed = time.Now().UTC()
	rev, err := s.store(ctx, e.key, &next, e.rev)
	switch {
	case errors.Is(err, errConflict):
		e.known = false
		return false
	case err != nil:
		// Keep trying: at worst another node takes the claim over.
		s.log.Warn("renew schedule claim", "tenant", e.tenant, "function", e.function, "error", err)
		return true
	}
	e.st, e.rev = &next, rev
	return true
}

// fired marks t fired in the bucket.
func (s *Scheduler) fired(ctx context.Context, e *entry, t time.Time, log *slog.Logger) {
	next := *e.st
	next.Fired, next.Last = true, t.UTC()
	rev, err := s.store(ctx, e.key, &next, e.rev)
	switch {
	case errors.Is(err, errConflict):
		// Taken over while Fire ran: the new holder fires it again, and
		// Fire's idempotency on the tick id makes that a no-op.
		e.known = false
	case err != nil:
		e.known = false
		log.Warn("mark schedule tick fired", "error", err)
	default:
		e.st, e.rev = &next, rev
	}
	s.mu.Lock()
	if s.last[e.key].Before(t) {
		s.last[e.key] = t
	}
	s.mu.Unlock()
}

// watch follows the bucket to keep each schedule's last tick fired, as
// fired by any node, until ctx ends.
func (s *Scheduler) watch(ctx context.Context) {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("watch schedules: last fire times will show this node's only", "error", err)
		}
		return
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case kve, ok := <-w.Updates():
			if !ok {
				return
			}
			if kve == nil {
				continue // the initial values are all in
			}
			s.observe(kve)
		}
	}
}

func (s *Scheduler) observe(kve jetstream.KeyValueEntry) {
	var st state
	del := kve.Operation() != jetstream.KeyValuePut
	if !del && json.Unmarshal(kve.Value(), &st) != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case del:
		delete(s.last, kve.Key())
	case st.Last.After(s.last[kve.Key()]):
		s.last[kve.Key()] = st.Last
	}
}

// backoff returns the wait before retry n (1, 2, ...): doubling from
// backoffBase to backoffMax, with jitter.
func backoff(n int) time.Duration {
	d := backoffBase << min(n-1, 20)
	return jitter(min(d, backoffMax))
}

// jitter returns d ± 20 %.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.4-0.2)*float64(d))
}

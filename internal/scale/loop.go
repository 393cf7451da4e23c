package scale

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Run is the pool's one loop. It launches the starts that requests and the
// warm minimum need, stops instances idle for the keep-alive, replaces dead
// ones, and owns every goroutine the pool starts (one per instance, from its
// Start to the return of its Stop). It applies decisions on a ticker
// (Idle/10, within [10ms, 1s]) and whenever an event asks for it.
//
// Run returns nil when ctx is done, after failing waiting requests with
// ErrClosed and stopping every instance, or when a Drain has completed; it
// waits for all of the pool's goroutines first. Calling it twice is an error.
func (p *Pool) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.ran {
		p.mu.Unlock()
		return fmt.Errorf("run pool %q: already run", p.cfg.Name)
	}
	p.ran = true
	p.mu.Unlock()

	t := time.NewTicker(p.tick)
	defer t.Stop()
	for {
		p.step(ctx)
		select {
		case <-ctx.Done():
			p.shutdown()
			p.wg.Wait()
			return nil
		case <-p.drained:
			p.wg.Wait()
			p.mu.Lock()
			p.closed = true
			p.mu.Unlock()
			return nil
		case <-p.kick:
		case <-t.C:
		}
	}
}

// step applies one round of decisions and launches reserved starts.
func (p *Pool) step(ctx context.Context) {
	now := p.cfg.Now()
	p.mu.Lock()
	s := &p.snap
	*s = state{
		min: p.cfg.Min, max: p.cfg.Max, conc: p.cfg.Concurrency, idle: p.cfg.Idle,
		running:  s.running[:0],
		starting: p.starting, stopping: p.stopping, waiting: p.q.n,
		warmAfter: p.warmAfter, draining: p.draining,
	}
	for _, it := range p.insts {
		s.running = append(s.running, view{id: it.id, busy: it.busy, idleSince: it.idleSince})
	}
	p.acts = decide(s, now, p.acts[:0])
	for _, a := range p.acts {
		switch a.kind {
		case actStop:
			if it := p.running(a.id); it != nil {
				p.log.Debug("instance idle, stopping", "instance", it.id)
				p.remove(it)
			}
		case actStart:
			p.reserveStarts(a.n, nil)
		}
	}
	launch := p.pending
	p.pending = nil
	for _, sr := range launch {
		p.inflight[sr] = struct{}{}
	}
	p.mu.Unlock()
	for _, sr := range launch {
		p.wg.Go(func() { p.runInstance(ctx, sr) })
	}
}

func (p *Pool) running(id uint64) *inst {
	for _, it := range p.insts {
		if it.id == id {
			return it
		}
	}
	return nil
}

// runInstance is the goroutine of one instance: it starts it, waits until it
// dies or is removed, and stops it.
func (p *Pool) runInstance(ctx context.Context, sr *startReq) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.mu.Lock()
	sr.cancel = cancel
	if p.forced {
		cancel()
	}
	p.mu.Unlock()

	in, err := p.cfg.Start(ctx)
	if err == nil && in == nil {
		err = errors.New("start returned no instance")
	}
	if err != nil {
		if in != nil {
			in.Stop()
		}
		p.startFailed(sr, err)
		return
	}
	it := p.startDone(sr, in)
	select {
	case <-in.Done():
		p.died(it)
	case <-it.gone:
	}
	in.Stop()
	p.stopDone(it)
}

// startDone records a started instance and hands its slots to waiters; if
// the pool no longer takes requests the instance is returned removed.
func (p *Pool) startDone(sr *startReq, in Instance) *inst {
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.inflight, sr)
	if sr.trigger != nil {
		unlinkStart(sr.trigger)
	}
	p.starting--
	p.counts.started++
	p.warmFails = 0
	p.nextID++
	it := &inst{id: p.nextID, in: in, idleSince: now, gone: make(chan struct{})}
	if p.closed || p.draining {
		it.removed = true
		close(it.gone)
		p.stopping++
		return it
	}
	p.insts = append(p.insts, it)
	p.log.Debug("instance started", "instance", it.id)
	for it.busy < p.cfg.Concurrency && p.q.n > 0 {
		it.busy++
		p.busy++
		p.q.pop().deliver(grant{l: &Lease{p: p, it: it}})
	}
	p.seq++
	it.used = p.seq
	return it
}

// startFailed gives a start's error to the request that caused it (or logs
// it when there is none) and lets the remaining waiters cause another start.
func (p *Pool) startFailed(sr *startReq, err error) {
	err = fmt.Errorf("start instance of %s: %w", p.cfg.Name, err)
	now := p.cfg.Now()
	p.mu.Lock()
	delete(p.inflight, sr)
	p.starting--
	p.live--
	p.counts.startErrors++
	if w := sr.trigger; w != nil {
		if w.queued {
			p.q.remove(w)
		}
		w.deliver(grant{err: err})
	} else {
		p.log.Warn("instance start failed", "error", err)
		// Only starts nobody waits for (the warm minimum) back off.
		p.warmFails++
		p.warmAfter = now.Add(min(100*time.Millisecond<<min(p.warmFails-1, 10), 30*time.Second))
	}
	n := p.startForDemand(nil)
	p.checkDrained()
	p.mu.Unlock()
	if n > 0 {
		p.poke()
	}
}

// died removes an instance that exited on its own; the loop replaces it if
// the warm minimum needs it.
func (p *Pool) died(it *inst) {
	p.mu.Lock()
	if !it.removed {
		p.counts.crashed++
		p.log.Warn("instance died", "instance", it.id, "busy", it.busy)
		p.remove(it)
	}
	p.mu.Unlock()
	p.poke()
}

// stopDone records that an instance's Stop returned; its capacity may start
// an instance for waiting requests.
func (p *Pool) stopDone(it *inst) {
	p.mu.Lock()
	p.stopping--
	p.live--
	p.counts.stopped++
	p.log.Debug("instance stopped", "instance", it.id)
	n := p.startForDemand(nil)
	p.checkDrained()
	p.mu.Unlock()
	if n > 0 {
		p.poke()
	}
}

// checkDrained closes p.drained once draining and nothing is live. p.mu held.
func (p *Pool) checkDrained() {
	if p.draining && p.live == 0 && !p.isDrained {
		p.isDrained = true
		close(p.drained)
	}
}

// shutdown is Run's exit: no new requests, waiters fail, every instance and
// start is stopped.
func (p *Pool) shutdown() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.endWaiters(ErrClosed)
	p.stopAll()
}

// endWaiters fails every waiting request with err and drops starts not yet
// launched. p.mu held.
func (p *Pool) endWaiters(err error) {
	for p.q.n > 0 {
		p.q.pop().deliver(grant{err: err})
	}
	for _, sr := range p.pending {
		if sr.trigger != nil {
			unlinkStart(sr.trigger)
		}
	}
	p.starting -= len(p.pending)
	p.live -= len(p.pending)
	p.pending = nil
}

// stopAll removes every running instance, busy or not, and cancels every
// start in progress. p.mu held.
func (p *Pool) stopAll() {
	p.forced = true
	for len(p.insts) > 0 {
		p.remove(p.insts[len(p.insts)-1])
	}
	for sr := range p.inflight {
		if sr.cancel != nil {
			sr.cancel()
		}
	}
}

// Drain retires the pool: Acquire returns ErrDraining from now on (waiting
// requests get it too), starts not yet launched are dropped, and each
// instance stops once its slots are released. Drain returns nil when every
// instance has stopped; if ctx ends first it stops the rest at once (busy or
// starting) and returns ctx's error, wrapped. Run returns once the drain has
// completed. Drain may be called more than once.
func (p *Pool) Drain(ctx context.Context) error {
	p.mu.Lock()
	if !p.draining {
		p.draining = true
		p.log.Debug("pool draining")
		p.endWaiters(ErrDraining)
		for i := len(p.insts) - 1; i >= 0; i-- {
			if it := p.insts[i]; it.busy == 0 {
				p.remove(it)
			}
		}
		p.checkDrained()
	}
	p.mu.Unlock()
	select {
	case <-p.drained:
		return nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	p.stopAll()
	p.mu.Unlock()
	return fmt.Errorf("drain pool %q: %w", p.cfg.Name, ctx.Err())
}

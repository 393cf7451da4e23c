package schedule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// state is a schedule's value in the KV bucket: the latest tick some node
// claimed (or, for a schedule never fired, the baseline it started from).
type state struct {
	// Tick is the latest tick claimed, or the baseline.
	Tick time.Time `json:"tick"`
	// Node and Run name the claimer: a node id and one Scheduler value.
	Node string `json:"node"`
	Run  string `json:"run"`
	// Fired is set once Fire succeeded for Tick (and for a baseline).
	Fired bool `json:"fired"`
	// Claimed is when the claim was taken or last renewed: the lease
	// starts there.
	Claimed time.Time `json:"claimed,omitzero"`
	// Last is the latest tick that fired, zero if none has.
	Last time.Time `json:"last,omitzero"`
}

// stateKey is a schedule's key: the hash of expression and zone makes an
// edited schedule start fresh.
func stateKey(tenant, function string, index int, s *Schedule) string {
	h := sha256.Sum256([]byte(s.String() + "\x00" + s.Location().String()))
	return fmt.Sprintf("%s.%s.%d.%s", tenant, function, index, hex.EncodeToString(h[:6]))
}

// verdict is what to do about one tick given the stored state.
type verdict int

const (
	skip  verdict = iota // fired, superseded, or too old
	claim                // compare-and-set the claim, then fire
	wait                 // another run holds a live claim: look again when it ends
)

// decide says what to do about tick at now, given the stored state (nil
// when there is none), this Scheduler's run id, the lease of a claim, and
// the age after which a tick is given up. With wait, the time is when the
// other claim's lease ends.
func decide(st *state, tick, now time.Time, run string, lease, window time.Duration) (verdict, time.Time) {
	switch {
	case now.Sub(tick) > window:
		return skip, time.Time{}
	case st == nil, st.Tick.Before(tick):
		return claim, time.Time{}
	case st.Tick.After(tick), st.Fired, st.Run == run:
		return skip, time.Time{}
	}
	if end := st.Claimed.Add(lease); now.Before(end) {
		return wait, end
	}
	return claim, time.Time{}
}

// due returns the tick to fire when a schedule with stored state st starts
// at now: the most recent tick at or before now, if it is no older than
// window and either newer than the stored tick or the stored tick claimed
// but never fired. Only that one tick fires, however many were missed.
func due(st *state, s *Schedule, now time.Time, window time.Duration) (time.Time, bool) {
	if window <= 0 || st == nil {
		return time.Time{}, false
	}
	from := now.Add(-window)
	if st.Tick.After(from) {
		from = st.Tick
	}
	last := latest(s, from, now)
	switch {
	case last.IsZero():
		return time.Time{}, false
	case last.After(st.Tick), last.Equal(st.Tick) && !st.Fired:
		return last, true
	}
	return time.Time{}, false
}

// latest returns the last tick in [from, now], or zero. For a cron it
// bisects on "is there a tick between x and now", which Next answers, so
// a long window with many ticks costs a few dozen calls.
func latest(s *Schedule, from, now time.Time) time.Time {
	if now.Before(from) {
		return time.Time{}
	}
	if s.period > 0 {
		t := nextRate(now, s.period).Add(-s.period)
		if t.Before(from) {
			return time.Time{}
		}
		return t
	}
	has := func(x time.Time) bool { // a tick in (x, now]
		t := s.Next(x)
		return !t.IsZero() && !t.After(now)
	}
	lo, hi := from.Add(-time.Nanosecond), now
	if !has(lo) {
		return time.Time{}
	}
	// has(lo) and not has(hi); ticks are whole seconds, so once the gap
	// is under a second it holds exactly one.
	for hi.Sub(lo) >= time.Second {
		mid := lo.Add(hi.Sub(lo) / 2)
		if has(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return s.Next(lo)
}

// tickID names one tick of one schedule, the same on every node.
func tickID(tenant, function string, index int, t time.Time) string {
	return fmt.Sprintf("%s/%s/%d/%d", tenant, function, index, t.Unix())
}

// load reads a schedule's state: nil and revision 0 when there is none.
// A value that does not decode counts as an empty state that any tick
// replaces.
func (s *Scheduler) load(ctx context.Context, key string) (*state, uint64, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read schedule state %q: %w", key, err)
	}
	var st state
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		s.log.Warn("schedule state is unreadable: replacing it", "key", key, "error", err)
		return &state{}, e.Revision(), nil
	}
	return &st, e.Revision(), nil
}

// errConflict means another writer changed the state first.
var errConflict = errors.New("schedule state changed concurrently")

// store writes st over revision rev (0: the key must not exist) and
// returns the new revision; errConflict when the key moved on.
func (s *Scheduler) store(ctx context.Context, key string, st *state, rev uint64) (uint64, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return 0, fmt.Errorf("encode schedule state: %w", err)
	}
	if rev == 0 {
		rev, err = s.kv.Create(ctx, key, b)
	} else {
		rev, err = s.kv.Update(ctx, key, b, rev)
	}
	switch {
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return 0, errConflict
	case err != nil:
		return 0, fmt.Errorf("write schedule state %q: %w", key, err)
	}
	return rev, nil
}

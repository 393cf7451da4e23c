// Package schedule fires functions at times: it parses schedule
// expressions (rate(...), AWS cron(...), standard 5-field cron and
// @descriptors, in an IANA time zone), builds the payloads a tick is
// delivered with (an EventBridge scheduled event, or CloudEvents headers for
// http and wasm functions), and runs the Scheduler, which fires each tick
// once across every node sharing one NATS.
//
// Each schedule has a key in the "schedules" KV bucket holding the latest
// tick claimed. To fire a tick a node compare-and-sets the key from an
// older tick to its own claim; only the winner calls Fire, then marks the
// tick fired. A claim left unfired longer than a lease (a node died between
// claim and Fire) is taken over by the next node that looks. Fire must be
// idempotent on Tick.ID, which makes a takeover safe. A tick missed while
// no node ran fires once at start when it is recent enough (the catch-up
// window); a schedule new to the bucket starts from now and fires nothing
// from the past.
package schedule

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"aloft/internal/fn"
)

// Bucket is the KV bucket of the schedules' claims.
const Bucket = "schedules"

// DefaultCatchUp is Config.CatchUp's default.
const DefaultCatchUp = time.Hour

const (
	// lease is how long a claim stays with a node that has not fired it
	// (nor renewed it while retrying) before another node takes it over.
	lease = 15 * time.Second
	// fireTimeout bounds one Fire call; shorter than the lease so a node
	// renews its claim between attempts before anyone takes it over.
	fireTimeout = 10 * time.Second
	// markTimeout bounds recording a fired tick, which goes on when the
	// scheduler is stopped meanwhile.
	markTimeout = 5 * time.Second
	// maxWorkers bounds the goroutines claiming and firing at once.
	maxWorkers = 256
	// maxConflicts bounds the compare-and-set rounds of one claim.
	maxConflicts = 8
	// backoffBase and backoffMax shape the retries of a failed Fire, and
	// of reading the bucket.
	backoffBase = 100 * time.Millisecond
	backoffMax  = 30 * time.Second
	// minWindow is the shortest time a tick is retried.
	minWindow = time.Minute
	// maxWait caps the loop's sleep, so a step of the wall clock is
	// noticed within it.
	maxWait = 30 * time.Second
)

// Tick is one firing of one schedule.
type Tick struct {
	// ID is the same on every node for one schedule and tick time:
	// "<tenant>/<function>/<index>/<unix seconds>". Use it as the
	// idempotency key downstream.
	ID       string
	Tenant   string
	Function string
	// Index is the event's index in the function's Events.
	Index int
	// Event is the schedule event: Schedule, Timezone, Input, Qualifier.
	Event fn.Event
	// Time is the scheduled tick time, in UTC.
	Time time.Time
	// CatchUp is set for a tick missed while no node ran, fired at start.
	CatchUp bool
}

// Config configures a Scheduler. KV, Fire and NodeID are required.
type Config struct {
	// KV is the schedules bucket, from OpenBucket.
	KV jetstream.KeyValue
	// Fire hands a tick on durably (the async queue, idempotent on t.ID).
	// An error means "not fired": the tick is retried with backoff until
	// Fire succeeds or the tick is older than the catch-up window (at
	// least a minute; an hour when catch-up is disabled).
	Fire func(ctx context.Context, t Tick) error
	// CatchUp is how old a tick missed while no node ran may be and still
	// fire once at start (0 means DefaultCatchUp; negative disables).
	CatchUp time.Duration
	// NodeID names this node in the claims.
	NodeID string
	// Logger receives the scheduler's log; nil discards it.
	Logger *slog.Logger
}

// Entry is one schedule as List shows it.
type Entry struct {
	Function string `json:"function"`
	Index    int    `json:"index"`
	Schedule string `json:"schedule"`
	Timezone string `json:"timezone,omitempty"`
	Disabled bool   `json:"disabled,omitempty"`
	// Next is the next tick, zero when disabled or when there is none.
	Next time.Time `json:"next,omitzero"`
	// Last is the last tick fired by any node, zero if none has (as far
	// as this node has seen while running).
	Last time.Time `json:"last,omitzero"`
}

// Scheduler fires the schedules it is given. Its methods are safe for
// concurrent use.
type Scheduler struct {
	cfg     Config
	log     *slog.Logger
	kv      jetstream.KeyValue
	catchUp time.Duration // 0: disabled
	window  time.Duration // how long a tick is retried or taken over
	wake    chan struct{} // Set and finished workers poke the loop

	mu      sync.Mutex
	fns     map[string]map[int]*entry // "tenant/function" → index → entry
	seen    map[string]bool           // "tenant/function/index" ever set
	last    map[string]time.Time      // state key → last tick fired, from the bucket
	running bool
	run     string // this Run's id in claims
	workers int
}

// entry is one schedule. Scheduler.mu guards every field but st, known and
// rev, which belong to the one worker running for the entry (busy).
type entry struct {
	tenant, function string
	index            int
	event            fn.Event
	sched            *Schedule
	key              string

	ready     bool // initialised (baseline or catch-up) in this Run
	catchUp   bool // initialising may fire a missed tick
	busy      bool // a worker runs for it
	stop      chan struct{}
	stopped   bool      // stop is closed: a newer tick or a change
	next      time.Time // the next tick to fire
	retry     time.Time // when to look again at retryTick (or retry init)
	retryTick time.Time
	known     bool // st and rev reflect the bucket as last seen
	st        *state
	rev       uint64
}

var tenantRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// New returns a Scheduler. It reports every problem of cfg, joined: a
// missing KV, Fire or NodeID.
func New(cfg Config) (*Scheduler, error) {
	var errs []error
	if cfg.KV == nil {
		errs = append(errs, errors.New("schedule: KV is nil: pass the bucket from OpenBucket"))
	}
	if cfg.Fire == nil {
		errs = append(errs, errors.New("schedule: Fire is nil"))
	}
	if cfg.NodeID == "" {
		errs = append(errs, errors.New("schedule: NodeID is empty"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s := &Scheduler{cfg: cfg, log: cfg.Logger, kv: cfg.KV, wake: make(chan struct{}, 1),
		fns: map[string]map[int]*entry{}, seen: map[string]bool{}, last: map[string]time.Time{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.CatchUp == 0:
		s.catchUp = DefaultCatchUp
	case cfg.CatchUp > 0:
		s.catchUp = cfg.CatchUp
	}
	s.window = max(s.catchUp, minWindow)
	if s.catchUp == 0 {
		s.window = DefaultCatchUp
	}
	return s, nil
}

// OpenBucket creates or updates the schedules bucket (file storage, one
// value per key) and returns it. replicas 0 means 1. It fails when
// JetStream does.
func OpenBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Aloft schedules: the latest tick claimed per schedule",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", Bucket, err)
	}
	return kv, nil
}

// Set replaces the schedules of one function with events (from
// (*fn.Config).EventsOf(fn.EventSchedule)); an empty slice removes them.
// Disabled events are kept for List but never fire. A schedule whose
// expression and zone are unchanged keeps its state; an edited one starts
// fresh. Set does not block on the bucket and works whether or not Run is
// running.
//
// It changes nothing and returns fn.Invalid when the tenant or function
// name is invalid, an event is not a schedule, two events share an index,
// or an expression or zone does not parse.
func (s *Scheduler) Set(tenant, function string, events []fn.IndexedEvent) error {
	fk := tenant + "/" + function
	if len(events) == 0 {
		s.mu.Lock()
		for _, e := range s.fns[fk] {
			s.halt(e)
		}
		delete(s.fns, fk)
		s.mu.Unlock()
		return nil
	}
	fresh, err := build(tenant, function, events)
	if err != nil {
		return err
	}
	s.mu.Lock()
	old := s.fns[fk]
	for idx, e := range fresh {
		prev := old[idx]
		ik := fmt.Sprintf("%s/%d", fk, idx)
		switch {
		case prev != nil && prev.key == e.key:
			if prev.event.Disabled && !e.event.Disabled {
				// Re-enabled: start from now, fire nothing missed.
				prev.ready, prev.catchUp, prev.retry = false, false, time.Time{}
			}
			if e.event.Disabled {
				s.halt(prev)
			}
			prev.event = e.event
			fresh[idx] = prev
		case prev != nil:
			s.halt(prev)
		default:
			e.catchUp = !s.seen[ik]
		}
		s.seen[ik] = true
	}
	for idx, e := range old {
		if _, ok := fresh[idx]; !ok {
			s.halt(e)
		}
	}
	s.fns[fk] = fresh
	s.mu.Unlock()
	s.poke()
	return nil
}

// build checks events and returns their entries by index.
func build(tenant, function string, events []fn.IndexedEvent) (map[int]*entry, error) {
	if !tenantRE.MatchString(tenant) {
		return nil, fn.Invalid("tenant %q is invalid: use 1-64 letters, digits, '-' or '_'", tenant)
	}
	if err := fn.ValidateName(function); err != nil {
		return nil, err
	}
	out := make(map[int]*entry, len(events))
	for _, ie := range events {
		where := fmt.Sprintf("events[%d]", ie.Index)
		switch {
		case ie.Index < 0:
			return nil, fn.Invalid("%s: index is negative", where)
		case ie.Event.Kind() != fn.EventSchedule:
			return nil, fn.Invalid("%s: not a schedule: set schedule alone", where)
		case out[ie.Index] != nil:
			return nil, fn.Invalid("%s: given twice", where)
		}
		sched, err := Parse(ie.Event.Schedule, ie.Event.Timezone)
		if err != nil {
			return nil, fn.Invalid("%s: %s", where, err.Error())
		}
		out[ie.Index] = &entry{tenant: tenant, function: function, index: ie.Index, event: ie.Event,
			sched: sched, key: stateKey(tenant, function, ie.Index, sched)}
	}
	return out, nil
}

// halt tells e's worker, if any, to stop retrying. s.mu is held.
func (s *Scheduler) halt(e *entry) {
	if e.busy && !e.stopped {
		close(e.stop)
		e.stopped = true
	}
}

func (s *Scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// List returns the tenant's schedules, of one function or of all when
// function is "", sorted by function and index.
func (s *Scheduler) List(tenant, function string) []Entry {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Entry
	for fk, m := range s.fns {
		t, f, _ := strings.Cut(fk, "/")
		if t != tenant || (function != "" && f != function) {
			continue
		}
		for _, e := range m {
			le := Entry{Function: e.function, Index: e.index, Schedule: e.event.Schedule,
				Timezone: e.event.Timezone, Disabled: e.event.Disabled, Last: s.last[e.key]}
			switch {
			case e.event.Disabled:
			case e.ready:
				le.Next = e.next
			default:
				le.Next = e.sched.Next(now)
			}
			out = append(out, le)
		}
	}
	slices.SortFunc(out, func(a, b Entry) int {
		if c := strings.Compare(a.Function, b.Function); c != 0 {
			return c
		}
		return a.Index - b.Index
	})
	return out
}

func newRunID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

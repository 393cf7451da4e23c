package fn

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Limits and defaults of events and asynchronous invocation.
const (
	DefaultAsyncRetries  = 2
	MaxAsyncRetries      = 10
	DefaultAsyncMaxAge   = 6 * time.Hour
	MinAsyncMaxAge       = time.Minute
	MaxAsyncMaxAge       = 6 * time.Hour
	DefaultBatchSize     = 10
	MaxBatchSize         = 1000
	MaxBatchWindow       = 5 * time.Minute
	DefaultTriggerConc   = 2
	MaxTriggerConc       = 1000
	DefaultQueueRetries  = 2
	maxEventsPerFunction = 32
)

// EventKind says what kind of source an Event is.
type EventKind string

// Kinds of event sources.
const (
	EventSchedule EventKind = "schedule"
	EventQueue    EventKind = "queue"
	EventSubject  EventKind = "subject"
)

// Event is one trigger of a function other than HTTP: exactly one of
// Schedule, Queue or Subject is set. Options that do not belong to the
// event's kind are an error.
type Event struct {
	// Schedule is rate(5 minutes), an AWS cron(0 12 * * ? *) or a standard
	// 5-field cron expression ("*/5 * * * *").
	Schedule string `json:"schedule,omitempty"`
	// Timezone is an IANA zone for cron schedules (default UTC).
	Timezone string `json:"timezone,omitempty"`
	// Input, when set, replaces the scheduled-event envelope as the payload.
	Input json.RawMessage `json:"input,omitempty"`

	// Queue names an Aloft queue whose messages invoke the function in
	// batches.
	Queue string `json:"queue,omitempty"`
	// BatchSize is the most messages in one invocation (default 10).
	BatchSize int `json:"batchSize,omitempty"`
	// BatchWindow is how long to wait to fill a batch (default 0: send
	// what is there).
	BatchWindow Duration `json:"batchWindow,omitempty"`
	// Concurrency bounds the batches in flight at once, per node
	// (default 2).
	Concurrency int `json:"concurrency,omitempty"`
	// Retries is how many times a failed message is retried before it is
	// dead-lettered (default 2; 0-10).
	Retries *int `json:"retries,omitempty"`

	// Subject is a NATS subject (wildcards allowed) whose messages invoke
	// the function: asynchronously, or synchronously when the message has
	// a reply subject.
	Subject string `json:"subject,omitempty"`

	// Qualifier is the version or alias the event invokes (default $LATEST).
	Qualifier string `json:"qualifier,omitempty"`
	// Disabled keeps the event declared but stops it firing.
	Disabled bool `json:"disabled,omitempty"`
}

// Kind returns the event's kind, or "" when none or several sources are set.
func (e *Event) Kind() EventKind {
	var kinds []EventKind
	if e.Schedule != "" {
		kinds = append(kinds, EventSchedule)
	}
	if e.Queue != "" {
		kinds = append(kinds, EventQueue)
	}
	if e.Subject != "" {
		kinds = append(kinds, EventSubject)
	}
	if len(kinds) != 1 {
		return ""
	}
	return kinds[0]
}

// RetryCount returns the event's retries with the default filled in.
func (e *Event) RetryCount() int {
	if e.Retries == nil {
		return DefaultQueueRetries
	}
	return *e.Retries
}

// IndexedEvent is one of a function's events with its position in
// Config.Events, which names it (schedules/hello/0).
type IndexedEvent struct {
	Index int
	Event Event
}

// EventsOf returns c's events of one kind, with their indexes.
func (c *Config) EventsOf(kind EventKind) []IndexedEvent {
	var out []IndexedEvent
	for i, e := range c.Events {
		if e.Kind() == kind {
			out = append(out, IndexedEvent{Index: i, Event: e})
		}
	}
	return out
}

// Batch returns the event's batch size with the default filled in.
func (e *Event) Batch() int {
	if e.BatchSize <= 0 {
		return DefaultBatchSize
	}
	return e.BatchSize
}

// Parallel returns the event's concurrency with the default filled in.
func (e *Event) Parallel() int {
	if e.Concurrency <= 0 {
		return DefaultTriggerConc
	}
	return e.Concurrency
}

// Async configures asynchronous invocations of a function.
type Async struct {
	// Retries after a failed attempt (default 2; 0-10).
	Retries *int `json:"retries,omitempty"`
	// MaxAge is how long an event may wait and be retried (default 6h;
	// 1m-6h).
	MaxAge Duration `json:"maxAge,omitempty"`
	// OnSuccess and OnFailure are destinations: "function:NAME" or
	// "queue:NAME".
	OnSuccess string `json:"onSuccess,omitempty"`
	OnFailure string `json:"onFailure,omitempty"`
}

// RetryCount returns the retries with the default filled in.
func (a *Async) RetryCount() int {
	if a.Retries == nil {
		return DefaultAsyncRetries
	}
	return *a.Retries
}

// Age returns the maximum event age with the default filled in.
func (a *Async) Age() time.Duration {
	if a.MaxAge == 0 {
		return DefaultAsyncMaxAge
	}
	return a.MaxAge.D()
}

// Destination is a parsed OnSuccess or OnFailure.
type Destination struct {
	// Kind is "function" or "queue".
	Kind string
	Name string
}

// ParseDestination parses "function:NAME" or "queue:NAME".
func ParseDestination(s string) (Destination, error) {
	kind, name, ok := strings.Cut(s, ":")
	switch {
	case !ok:
	case kind == "function":
		if err := ValidateName(name); err != nil {
			return Destination{}, Invalid("destination %q: %s", s, err.Error())
		}
		return Destination{Kind: kind, Name: name}, nil
	case kind == "queue":
		if err := ValidateQueueName(name); err != nil {
			return Destination{}, Invalid("destination %q: %s", s, err.Error())
		}
		return Destination{Kind: kind, Name: name}, nil
	}
	return Destination{}, Invalid("destination %q is invalid: use function:NAME or queue:NAME", s)
}

var queueRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// ValidateQueueName reports whether name can name a queue: like a function
// name, 1-64 lower-case letters, digits and '-'.
func ValidateQueueName(name string) error {
	if len(name) == 0 || len(name) > MaxNameLen || !queueRE.MatchString(name) {
		return Invalid("queue name %q is invalid: use 1-%d lower-case letters, digits and '-', not starting or ending with '-'", name, MaxNameLen)
	}
	return nil
}

var subjectTokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// ValidateSubject reports whether s is a NATS subject a function may
// subscribe to: dot-separated tokens of letters, digits, '_' and '-', or
// the wildcards '*' and a final '>'. Subjects Aloft uses itself ($JS, _INBOX,
// and aloft.*) are refused.
func ValidateSubject(s string) error {
	if s == "" || len(s) > 255 {
		return Invalid("subject %q is invalid: use 1-255 characters", s)
	}
	toks := strings.Split(s, ".")
	for i, t := range toks {
		switch {
		case t == "*":
		case t == ">" && i == len(toks)-1:
		case subjectTokenRE.MatchString(t):
		default:
			return Invalid("subject %q is invalid: use dot-separated tokens of letters, digits, '_' and '-', with '*' or a final '>' as wildcards", s)
		}
	}
	switch first := strings.ToLower(toks[0]); {
	case first == "aloft", first == "_inbox", strings.HasPrefix(first, "$"), first == "*", first == ">":
		return Invalid("subject %q is reserved or too broad: start with a token of your own", s)
	}
	return nil
}

// validateEvents appends the problems of c's events and async settings.
// Schedule expressions are checked by the events layer, which knows their
// syntax; here only their presence is.
func (c *Config) validateEvents(add func(string, ...any)) {
	if len(c.Events) > maxEventsPerFunction {
		add("%d events: at most %d per function", len(c.Events), maxEventsPerFunction)
	}
	for i := range c.Events {
		e := &c.Events[i]
		where := fmt.Sprintf("events[%d]", i)
		kind := e.Kind()
		if kind == "" {
			add("%s: set exactly one of schedule, queue or subject", where)
			continue
		}
		if kind != EventSchedule && (e.Timezone != "" || len(e.Input) > 0) {
			add("%s: timezone and input apply only to schedules", where)
		}
		if kind != EventQueue && (e.BatchSize != 0 || e.BatchWindow != 0 || e.Concurrency != 0 || e.Retries != nil) {
			add("%s: batchSize, batchWindow, concurrency and retries apply only to queues", where)
		}
		if e.Timezone != "" {
			if _, err := time.LoadLocation(e.Timezone); err != nil || e.Timezone == "Local" {
				add("%s: timezone %q is unknown: use an IANA name like Europe/Paris", where, e.Timezone)
			}
		}
		if len(e.Input) > 0 && !json.Valid(e.Input) {
			add("%s: input is not valid JSON", where)
		}
		switch kind {
		case EventQueue:
			if err := ValidateQueueName(e.Queue); err != nil {
				add("%s: %s", where, err.Error())
			}
			if e.BatchSize < 0 || e.BatchSize > MaxBatchSize {
				add("%s: batchSize %d is out of range: use 1-%d", where, e.BatchSize, MaxBatchSize)
			}
			if w := e.BatchWindow.D(); w < 0 || w > MaxBatchWindow {
				add("%s: batchWindow %s is out of range: use 0-5m", where, w)
			}
			if e.Concurrency < 0 || e.Concurrency > MaxTriggerConc {
				add("%s: concurrency %d is out of range: use 1-%d", where, e.Concurrency, MaxTriggerConc)
			}
			if r := e.RetryCount(); r < 0 || r > MaxAsyncRetries {
				add("%s: retries %d is out of range: use 0-%d", where, r, MaxAsyncRetries)
			}
		case EventSubject:
			if err := ValidateSubject(e.Subject); err != nil {
				add("%s: %s", where, err.Error())
			}
		}
		if e.Qualifier != "" && e.Qualifier != LatestVersion {
			if err := validateQualifier(e.Qualifier); err != nil {
				add("%s: %s", where, err.Error())
			}
		}
	}
	a := &c.Async
	if r := a.RetryCount(); r < 0 || r > MaxAsyncRetries {
		add("async retries %d is out of range: use 0-%d", r, MaxAsyncRetries)
	}
	if age := a.Age(); age < MinAsyncMaxAge || age > MaxAsyncMaxAge {
		add("async maxAge %s is out of range: use 1m-6h", age)
	}
	for _, d := range []struct{ field, v string }{{"onSuccess", a.OnSuccess}, {"onFailure", a.OnFailure}} {
		if d.v == "" {
			continue
		}
		if _, err := ParseDestination(d.v); err != nil {
			add("async %s: %s", d.field, err.Error())
		} else if d.v == "function:"+c.Name {
			add("async %s: a function cannot be its own destination", d.field)
		}
	}
}

var versionRE = regexp.MustCompile(`^[1-9][0-9]{0,9}$`)

func validateQualifier(q string) error {
	if versionRE.MatchString(q) {
		return nil
	}
	if err := ValidateAliasName(q); err != nil {
		return Invalid("qualifier %q is invalid: use $LATEST, a version number or an alias", q)
	}
	return nil
}

package async

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"aloft/internal/events/deadletter"
	"aloft/internal/events/records"
	"aloft/internal/fn"
	"aloft/internal/invoke"
)

const (
	// invokeGrace is added to a function's timeout to bound one call of
	// the invoker (which waits for an instance first).
	invokeGrace = 2 * time.Minute
	// settleTimeout bounds the writes that settle an attempt that ran
	// (attempt count, dead letter, destination), even while Run stops.
	settleTimeout = 10 * time.Second
	// storeRetryDelay is when an event is offered again after a store
	// read or write failed.
	storeRetryDelay = 5 * time.Second
	// maxErrorLen bounds the error message kept for an attempt.
	maxErrorLen = 4096
)

// Reasons an event is dead-lettered.
const (
	ReasonRetries  = "retries exhausted"
	ReasonAge      = "maximum event age exceeded"
	ReasonNotFound = "function not found"
	ReasonRejected = "invocation rejected"
)

// delivery is one delivered event being handled.
type delivery struct {
	msg       jetstream.Msg
	ev        stored
	delivered uint64
	f         *fn.Function // nil when the function does not exist
	failures  int          // failed attempts before this delivery
	last      failure      // the last of them
}

// failure is a failed attempt, as kept in the attempts bucket.
type failure struct {
	Failures int    `json:"n"`
	Version  string `json:"v,omitempty"`
	Status   int    `json:"s,omitempty"` // 200: the function failed; else the invoker's status
	Type     string `json:"t,omitempty"`
	Message  string `json:"m,omitempty"`
	payload  []byte // the function's answer, when it ran
}

func (fl failure) text() string {
	if fl.Type == "" && fl.Message == "" {
		return ""
	}
	return fl.Type + ": " + fl.Message
}

// handle runs one delivered event, which the keeper keeps alive, and
// settles it. It owns msg: every path acknowledges, hands back or (when
// Run stops) leaves it. It returns how long the attempt took, with ok
// false when none ran.
func (a *Async) handle(ctx context.Context, msg jetstream.Msg) (dur time.Duration, ok bool) {
	d, ok := a.open(ctx, msg)
	if !ok {
		return 0, false
	}
	retries, maxAge := d.f.Async.RetryCount(), d.f.Async.Age()
	switch {
	case d.failures > retries:
		a.deadLetter(ctx, d, d.failures, d.last, ReasonRetries, condRetries)
		return 0, false
	case a.now().Sub(d.ev.accepted) > maxAge:
		a.deadLetter(ctx, d, d.failures, d.last, ReasonAge, condAge)
		return 0, false
	}
	attempt := d.failures + 1
	start := a.now()
	a.record(records.Record{ID: d.ev.ID, Tenant: d.ev.Tenant, Function: d.ev.Function,
		Version: d.ev.Qualifier, Trigger: d.ev.Trigger, Status: records.Running, Attempt: attempt, Time: start})
	a.stat.started.Add(1)
	resp, err := a.invoke(ctx, d)
	if ctx.Err() != nil {
		a.keep.remove(msg) // Run stops: JetStream delivers it again after AckWait
		return 0, false
	}
	dur = a.now().Sub(start)
	if err == nil && !resp.FunctionError && d.failures == 0 && d.f.Async.OnSuccess == "" {
		// Settling a first success blocks on nothing: no context needed.
		a.succeed(ctx, d, attempt, dur, resp)
		return dur, true
	}
	// The attempt ran: settle it even if Run stops meanwhile.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	a.settleAttempt(sctx, d, attempt, dur, resp, err)
	return dur, true
}

// open decodes a delivery, reads the function and, for a redelivery, the
// failures so far. When it returns false it has settled msg.
func (a *Async) open(ctx context.Context, msg jetstream.Msg) (*delivery, bool) {
	meta, err := msg.Metadata()
	if err != nil {
		a.log.Error("read async event metadata", "error", err)
		a.settle(msg, jetstream.Msg.Term)
		return nil, false
	}
	ev, ok := decode(msg.Subject(), msg.Headers(), msg.Data(), meta.Sequence.Stream, meta.Timestamp)
	if !ok {
		a.log.Error("malformed async event", "subject", msg.Subject())
		a.settle(msg, jetstream.Msg.Term)
		return nil, false
	}
	d := &delivery{msg: msg, ev: ev, delivered: meta.NumDelivered}
	f, err := a.function(ctx, ev.Tenant, ev.Function)
	switch {
	case fn.IsNotFound(err):
		a.deadLetter(ctx, d, 0, failure{Type: "Aloft.FunctionNotFound", Message: err.Error()}, ReasonNotFound, "")
		return nil, false
	case err != nil:
		a.retryLater(ctx, d, "read function", err)
		return nil, false
	}
	d.f = f
	if d.delivered > 1 {
		if d.last, err = a.loadFailures(ctx, d); err != nil {
			a.retryLater(ctx, d, "read async attempts", err)
			return nil, false
		}
		d.failures = d.last.Failures
	}
	return d, true
}

// retryLater hands an event back after a store failure, without counting
// an attempt (or leaves it when Run stops).
func (a *Async) retryLater(ctx context.Context, d *delivery, op string, err error) {
	if ctx.Err() != nil {
		a.keep.remove(d.msg)
		return
	}
	a.log.Warn(op, "tenant", d.ev.Tenant, "function", d.ev.Function, "invocation_id", d.ev.ID, "error", err)
	a.settle(d.msg, func(m jetstream.Msg) error { return m.NakWithDelay(storeRetryDelay) })
}

func (a *Async) invoke(ctx context.Context, d *delivery) (*invoke.Response, error) {
	ictx, cancel := context.WithTimeout(ctx, d.f.Timeout.D()+invokeGrace)
	defer cancel()
	return a.cfg.Invoker.Invoke(ictx, invoke.Request{
		Tenant: d.ev.Tenant, Function: d.ev.Function, Qualifier: d.ev.Qualifier, ID: d.ev.ID,
		Payload: d.ev.Payload, TraceID: d.ev.TraceID, Headers: d.ev.Headers,
	})
}

// settleAttempt sorts the outcome of an attempt: success, a failed
// attempt (the function failed, timed out or was throttled, or the call
// failed inside Aloft), or a call refused for good.
func (a *Async) settleAttempt(ctx context.Context, d *delivery, attempt int, dur time.Duration, resp *invoke.Response, err error) {
	var fe *fn.Error
	switch {
	case err == nil && !resp.FunctionError:
		a.succeed(ctx, d, attempt, dur, resp)
	case err == nil:
		a.fail(ctx, d, attempt, dur, functionFailure(resp))
	case errors.As(err, &fe) && fe.Status == http.StatusNotFound:
		a.deadLetter(ctx, d, d.failures, failure{Type: "Aloft.FunctionNotFound", Message: fe.Message}, ReasonNotFound, "")
	case errors.As(err, &fe) && fe.Status == http.StatusTooManyRequests:
		a.fail(ctx, d, attempt, dur, failure{Status: fe.Status, Type: "Aloft.Throttled", Message: fe.Message})
	case errors.As(err, &fe) && fe.Status == http.StatusServiceUnavailable:
		a.fail(ctx, d, attempt, dur, failure{Status: fe.Status, Type: "Aloft.Unavailable", Message: fe.Message})
	case errors.As(err, &fe) && fe.Status < 500:
		a.deadLetter(ctx, d, d.failures, failure{Status: fe.Status, Type: "Aloft.Rejected", Message: fe.Message}, ReasonRejected, condRetries)
	default:
		a.log.Error("async invoke", "tenant", d.ev.Tenant, "function", d.ev.Function,
			"invocation_id", d.ev.ID, "trigger", d.ev.Trigger, "error", err)
		a.fail(ctx, d, attempt, dur, failure{Status: http.StatusInternalServerError, Type: "Aloft.InternalError",
			Message: "internal error; the server log has details under this invocation id"})
	}
}

func (a *Async) succeed(ctx context.Context, d *delivery, attempt int, dur time.Duration, resp *invoke.Response) {
	if dest := d.f.Async.OnSuccess; dest != "" {
		rec := a.destinationRecord(d, condSuccess, attempt, resp.Version, false, resp.Payload)
		a.sendDestination(ctx, d, dest, condSuccess, rec)
	}
	a.settle(d.msg, jetstream.Msg.Ack)
	if d.failures > 0 {
		if err := a.attempts.Delete(ctx, attemptsKey(d)); err != nil {
			a.log.Debug("delete async attempts", "invocation_id", d.ev.ID, "error", err)
		}
	}
	a.stat.succeeded.Add(1)
	a.record(records.Record{ID: d.ev.ID, Tenant: d.ev.Tenant, Function: d.ev.Function, Version: resp.Version,
		Trigger: d.ev.Trigger, Status: records.Succeeded, Attempt: attempt, Duration: dur})
}

// fail handles a failed attempt: a retry after a backoff if retries and
// age allow one, else a dead letter.
func (a *Async) fail(ctx context.Context, d *delivery, attempt int, dur time.Duration, fl failure) {
	fl.Failures = attempt
	if fl.Status == 0 {
		fl.Status = http.StatusOK
	}
	retries, maxAge := d.f.Async.RetryCount(), d.f.Async.Age()
	remaining := d.ev.accepted.Add(maxAge).Sub(a.now())
	a.saveFailures(ctx, d, fl)
	if attempt > retries || remaining <= 0 {
		reason, cond := ReasonRetries, condRetries
		if attempt <= retries {
			reason, cond = ReasonAge, condAge
		}
		a.deadLetter(ctx, d, attempt, fl, reason, cond)
		return
	}
	delay := min(retryDelay(a.cfg.RetryBase, attempt, a.rand()), remaining)
	a.stat.retried.Add(1)
	a.record(records.Record{ID: d.ev.ID, Tenant: d.ev.Tenant, Function: d.ev.Function, Version: fl.Version,
		Trigger: d.ev.Trigger, Status: records.Retrying, Attempt: attempt, Duration: dur, Error: fl.text()})
	a.log.Debug("async attempt failed", "tenant", d.ev.Tenant, "function", d.ev.Function,
		"invocation_id", d.ev.ID, "trigger", d.ev.Trigger, "duration", dur, "error", fl.text())
	a.settle(d.msg, func(m jetstream.Msg) error { return m.NakWithDelay(delay) })
}

// deadLetter stores the event in the dead-letter store (durably, once per
// event), sends the OnFailure destination when cond is set, and removes
// the event from the stream. If the store fails, the event is offered
// again later.
func (a *Async) deadLetter(ctx context.Context, d *delivery, attempts int, fl failure, reason, cond string) {
	err := a.cfg.DeadLetters.Put(ctx, &deadletter.Entry{
		ID: d.ev.ID, Tenant: d.ev.Tenant, Function: d.ev.Function, Source: "async",
		Qualifier: d.ev.Qualifier, Payload: d.ev.Payload, Headers: d.ev.Headers, Trigger: d.ev.Trigger,
		ErrorType: fl.Type, ErrorMessage: fl.Message, Attempts: attempts, Enqueued: d.ev.accepted,
		Reason: reason,
	})
	if err != nil {
		a.retryLater(ctx, d, "dead-letter async event", err)
		return
	}
	if cond != "" && d.f != nil && d.f.Async.OnFailure != "" {
		response := fl.payload
		if response == nil && fl.Type != "" {
			response = fn.ErrorPayload(fl.Type, fl.Message)
		}
		rec := a.destinationRecord(d, cond, attempts, fl.Version, fl.Status == http.StatusOK, response)
		a.sendDestination(ctx, d, d.f.Async.OnFailure, cond, rec)
	}
	a.settle(d.msg, jetstream.Msg.Ack)
	a.stat.deadLettered.Add(1)
	a.record(records.Record{ID: d.ev.ID, Tenant: d.ev.Tenant, Function: d.ev.Function, Version: fl.Version,
		Trigger: d.ev.Trigger, Status: records.DeadLettered, Attempt: attempts, Error: fl.text()})
	a.log.Warn("async event dead-lettered", "tenant", d.ev.Tenant, "function", d.ev.Function,
		"invocation_id", d.ev.ID, "trigger", d.ev.Trigger, "reason", reason, "error", fl.text())
}

// settle stops keeping msg alive, then acknowledges or hands it back.
func (a *Async) settle(msg jetstream.Msg, how func(jetstream.Msg) error) {
	a.keep.remove(msg)
	if err := how(msg); err != nil {
		a.log.Debug("settle async event", "error", err)
	}
}

func attemptsKey(d *delivery) string { return d.ev.Tenant + "." + d.ev.Function + "." + d.ev.ID }

// loadFailures reads the failures of a redelivered event (none when the
// bucket has no entry, or an unreadable one).
func (a *Async) loadFailures(ctx context.Context, d *delivery) (failure, error) {
	e, err := a.attempts.Get(ctx, attemptsKey(d))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return failure{}, nil
	}
	if err != nil {
		return failure{}, err
	}
	var fl failure
	if err := json.Unmarshal(e.Value(), &fl); err != nil || fl.Failures < 0 {
		a.log.Warn("decode async attempts", "invocation_id", d.ev.ID, "error", err)
		return failure{}, nil
	}
	return fl, nil
}

// saveFailures records a failed attempt so a later delivery (on any node)
// knows how many came before. A failed write is logged: the event may then
// run once more than its retries allow.
func (a *Async) saveFailures(ctx context.Context, d *delivery, fl failure) {
	b, err := json.Marshal(fl)
	if err == nil {
		_, err = a.attempts.Put(ctx, attemptsKey(d), b)
	}
	if err != nil {
		a.log.Warn("save async attempts", "tenant", d.ev.Tenant, "function", d.ev.Function,
			"invocation_id", d.ev.ID, "error", err)
	}
}

// functionFailure reads a function's error answer: Lambda's error JSON
// {"errorType","errorMessage"}, or anything else as the message.
func functionFailure(resp *invoke.Response) failure {
	fl := failure{Status: http.StatusOK, Version: resp.Version, payload: resp.Payload}
	var body struct {
		Type    string `json:"errorType"`
		Message string `json:"errorMessage"`
	}
	if json.Unmarshal(resp.Payload, &body) == nil && (body.Type != "" || body.Message != "") {
		fl.Type, fl.Message = body.Type, body.Message
	} else {
		fl.Message = string(resp.Payload)
	}
	if fl.Type == "" {
		fl.Type = "Unhandled"
	}
	fl.Type = truncate(fl.Type, 256)
	fl.Message = truncate(fl.Message, maxErrorLen)
	return fl
}

// truncate cuts s to at most n bytes of valid UTF-8.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for i := 0; i < utf8.UTFMax-1 && len(s) > 0; i++ {
		if r, size := utf8.DecodeLastRuneInString(s); r != utf8.RuneError || size != 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return s
}

// retryDelay is the backoff after failed attempt n (1-based): base, then
// doubling, capped at maxRetryDelay, spread by ±retryJitter with r in [0, 1).
func retryDelay(base time.Duration, n int, r float64) time.Duration {
	d := base
	for i := 1; i < n && d < maxRetryDelay; i++ {
		d *= 2
	}
	d = min(d, maxRetryDelay)
	d = time.Duration(float64(d) * (1 + retryJitter*(2*r-1)))
	return min(d, maxRetryDelay)
}

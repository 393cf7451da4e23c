package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"aloft/internal/fn"
)

// AsyncOptions tunes one asynchronous invocation.
type AsyncOptions struct {
	// Qualifier selects a version number or alias; empty means $LATEST.
	Qualifier string
	// IdempotencyKey, when set, makes a repeat with the same key within the
	// server's window answer with the first invocation's id instead of
	// running again.
	IdempotencyKey string
}

// InvokeAsync hands payload to a function asynchronously: the server stores
// the event durably and answers at once with its invocation id; the function
// runs later, with retries, and ends in a dead letter if it keeps failing.
// duplicate reports that an invocation with the same IdempotencyKey was
// already accepted (id is then the first one's). Errors are *APIError: 404
// for an unknown function or qualifier, 413 for a payload over the server's
// async limit (1 MiB by default), 400 for a bad idempotency key, 429/503
// when the server cannot take events now; or transport failures.
func (c *Client) InvokeAsync(ctx context.Context, name string, payload []byte, opt AsyncOptions) (id string, duplicate bool, err error) {
	q := url.Values{}
	if opt.Qualifier != "" {
		q.Set("qualifier", opt.Qualifier)
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("X-Aloft-Invocation-Type", "Event")
	if opt.IdempotencyKey != "" {
		h.Set("X-Aloft-Idempotency-Key", opt.IdempotencyKey)
	}
	resp, err := c.requestHeader(ctx, http.MethodPost, functionPath(name)+"/invoke", q, h, bytes.NewReader(payload))
	if err != nil {
		return "", false, fmt.Errorf("invoke %s asynchronously: %w", name, err)
	}
	defer resp.Body.Close()
	b, err := readLimited(resp.Body)
	if err != nil {
		return "", false, fmt.Errorf("invoke %s asynchronously: read response: %w", name, err)
	}
	var out struct {
		InvocationID string `json:"invocationId"`
		Duplicate    bool   `json:"duplicate"`
	}
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			return "", false, fmt.Errorf("invoke %s asynchronously: decode response: %w", name, err)
		}
	}
	if out.InvocationID == "" {
		out.InvocationID = resp.Header.Get("X-Aloft-Invocation-Id")
	}
	if resp.Header.Get("X-Aloft-Duplicate") == "true" {
		out.Duplicate = true
	}
	if out.InvocationID == "" {
		return "", false, fmt.Errorf("invoke %s asynchronously: the server answered %d without an invocation id", name, resp.StatusCode)
	}
	return out.InvocationID, out.Duplicate, nil
}

// Invocation is the latest status of one event invocation (async, schedule,
// queue or subject), as the server folds it from its records.
type Invocation struct {
	ID       string `json:"id"`
	Function string `json:"function"`
	Version  string `json:"version,omitempty"`
	// Trigger is what produced it: "api", "schedule", "queue", "subject",
	// "destination", "redrive".
	Trigger string `json:"trigger,omitempty"`
	// Status is queued, running, succeeded, retrying, failed or
	// dead-lettered.
	Status   string `json:"status"`
	Attempts int    `json:"attempts"`
	// Started is the time of the invocation's first record, Updated of its
	// latest.
	Started time.Time `json:"started"`
	Updated time.Time `json:"updated"`
	// Duration is the latest attempt's.
	Duration fn.Duration `json:"duration,omitempty"`
	// Error is "errorType: errorMessage" of a failed attempt.
	Error string `json:"error,omitempty"`
}

// Invocations returns the latest status of a function's recent event
// invocations, newest first: at most limit of them (0: the server's default,
// 50). Errors are *APIError (404 for an unknown function, 400 for a limit
// out of range) or transport failures.
func (c *Client) Invocations(ctx context.Context, name string, limit int) ([]*Invocation, error) {
	var out struct {
		Invocations []*Invocation `json:"invocations"`
	}
	if err := c.do(ctx, http.MethodGet, functionPath(name)+"/invocations", limitQuery(limit), "", nil, &out); err != nil {
		return nil, fmt.Errorf("list invocations of %s: %w", name, err)
	}
	return out.Invocations, nil
}

// DeadLetter is one event the server gave up on.
type DeadLetter struct {
	// ID is the async invocation id, or the queue message id.
	ID       string `json:"id"`
	Tenant   string `json:"tenant"`
	Function string `json:"function"`
	// Source is "async", "queue:NAME" or "subject:SUBJECT".
	Source    string `json:"source"`
	Qualifier string `json:"qualifier,omitempty"`
	// Payload is the event payload, or the queue message body.
	Payload []byte `json:"payload"`
	// Headers are the event's extra headers or the message's attributes.
	Headers      map[string]string `json:"headers,omitempty"`
	Trigger      string            `json:"trigger,omitempty"`
	ErrorType    string            `json:"errorType,omitempty"`
	ErrorMessage string            `json:"errorMessage,omitempty"`
	Attempts     int               `json:"attempts"`
	// Enqueued is when the event was first accepted.
	Enqueued     time.Time `json:"enqueued"`
	DeadLettered time.Time `json:"deadLettered"`
	// Reason says why the server gave up ("retries exhausted", "maximum
	// event age exceeded", ...).
	Reason string `json:"reason"`
	Seq    uint64 `json:"seq"`
}

// DeadLetters returns a function's dead-lettered events, oldest first: at
// most limit of them (0: the server's default, 100). Errors are *APIError
// (404 for a function that does not exist and has no dead letters, 400 for
// a limit out of range) or transport failures.
func (c *Client) DeadLetters(ctx context.Context, name string, limit int) ([]*DeadLetter, error) {
	var out struct {
		DeadLetters []*DeadLetter `json:"deadLetters"`
	}
	if err := c.do(ctx, http.MethodGet, functionPath(name)+"/dlq", limitQuery(limit), "", nil, &out); err != nil {
		return nil, fmt.Errorf("list dead letters of %s: %w", name, err)
	}
	return out.DeadLetters, nil
}

// Redrive sends a function's dead letters again — the one whose id is id,
// or all of them when id is "" — and returns how many were sent. Errors are
// *APIError (404 for an unknown function or an id that names no dead
// letter) or transport failures; after a failure part way some may have
// been redriven.
func (c *Client) Redrive(ctx context.Context, name, id string) (int, error) {
	in := struct {
		ID string `json:"id,omitempty"`
	}{id}
	var out struct {
		Redriven int `json:"redriven"`
	}
	if err := c.doJSON(ctx, http.MethodPost, functionPath(name)+"/dlq/redrive", nil, in, &out); err != nil {
		return 0, fmt.Errorf("redrive dead letters of %s: %w", name, err)
	}
	return out.Redriven, nil
}

// Trigger is one declared event of a function.
type Trigger struct {
	Function string `json:"function"`
	// Index is the event's position in the function's events.
	Index int          `json:"index"`
	Kind  fn.EventKind `json:"kind"`
	// Source is the schedule expression, queue name or subject.
	Source    string `json:"source"`
	Qualifier string `json:"qualifier,omitempty"`
	Disabled  bool   `json:"disabled,omitempty"`
	// Next is a schedule's next fire time; nil for other kinds and for
	// disabled schedules.
	Next *time.Time `json:"next,omitempty"`
	// Options summarizes batch size, window, concurrency, retries or
	// timezone.
	Options string `json:"options,omitempty"`
}

// Triggers lists every declared event of every function. Errors are
// *APIError or transport failures.
func (c *Client) Triggers(ctx context.Context) ([]*Trigger, error) {
	var out struct {
		Triggers []*Trigger `json:"triggers"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/triggers", nil, "", nil, &out); err != nil {
		return nil, fmt.Errorf("list triggers: %w", err)
	}
	return out.Triggers, nil
}

// Schedule is one schedule event of a function with its fire times.
type Schedule struct {
	Function string `json:"function"`
	// Index is the event's position in the function's events.
	Index    int    `json:"index"`
	Schedule string `json:"schedule"`
	Timezone string `json:"timezone,omitempty"`
	Disabled bool   `json:"disabled,omitempty"`
	// Next is when it fires next; Last when it last fired (zero: never).
	Next time.Time `json:"next"`
	Last time.Time `json:"last"`
}

// Schedules lists the schedules of one function, or of all functions when
// function is "", soonest first. Errors are *APIError (400 for an invalid
// function name) or transport failures.
func (c *Client) Schedules(ctx context.Context, function string) ([]*Schedule, error) {
	q := url.Values{}
	if function != "" {
		q.Set("function", function)
	}
	var out struct {
		Schedules []*Schedule `json:"schedules"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/schedules", q, "", nil, &out); err != nil {
		return nil, fmt.Errorf("list schedules: %w", err)
	}
	return out.Schedules, nil
}

// Queue is a named queue whose messages can trigger a function.
type Queue struct {
	Tenant  string    `json:"tenant"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	// Messages is how many messages wait in the queue.
	Messages uint64 `json:"messages"`
}

// CreateQueue creates the queue name, or returns it as it is if it exists;
// created reports which. Errors are *APIError (400 for an invalid name) or
// transport failures.
func (c *Client) CreateQueue(ctx context.Context, name string) (q *Queue, created bool, err error) {
	var out Queue
	status, err := c.send(ctx, http.MethodPut, queuePath(name), nil, "", nil, &out)
	if err != nil {
		return nil, false, fmt.Errorf("create queue %s: %w", name, err)
	}
	return &out, status == http.StatusCreated, nil
}

// Queues lists every queue. Errors are *APIError or transport failures.
func (c *Client) Queues(ctx context.Context) ([]*Queue, error) {
	var out struct {
		Queues []*Queue `json:"queues"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/queues", nil, "", nil, &out); err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	return out.Queues, nil
}

// GetQueue returns one queue. Errors are *APIError (404 for an unknown
// queue, 400 for an invalid name) or transport failures.
func (c *Client) GetQueue(ctx context.Context, name string) (*Queue, error) {
	var out Queue
	if err := c.do(ctx, http.MethodGet, queuePath(name), nil, "", nil, &out); err != nil {
		return nil, fmt.Errorf("get queue %s: %w", name, err)
	}
	return &out, nil
}

// DeleteQueue deletes a queue and the messages in it. Errors are *APIError
// (404 for an unknown queue, 409 while a function's event consumes it) or
// transport failures.
func (c *Client) DeleteQueue(ctx context.Context, name string) error {
	if err := c.do(ctx, http.MethodDelete, queuePath(name), nil, "", nil, nil); err != nil {
		return fmt.Errorf("delete queue %s: %w", name, err)
	}
	return nil
}

// Message is one message to send to a queue.
type Message struct {
	Body string `json:"body"`
	// Attributes travel with the message (SQS messageAttributes).
	Attributes map[string]string `json:"attributes,omitempty"`
	// ID, when set, deduplicates: a second message with the same id within
	// the server's window is dropped.
	ID string `json:"id,omitempty"`
}

// Send stores msgs in the queue, in order, and returns their ids. Errors:
// no messages; *APIError (404 for an unknown queue, 400 for an invalid name
// or message, 413 for a batch over the server's limit) or transport
// failures.
func (c *Client) Send(ctx context.Context, queue string, msgs []Message) ([]string, error) {
	if len(msgs) == 0 {
		return nil, fmt.Errorf("send to queue %s: no messages given", queue)
	}
	in := struct {
		Messages []Message `json:"messages"`
	}{msgs}
	var out struct {
		IDs []string `json:"ids"`
	}
	if err := c.doJSON(ctx, http.MethodPost, queuePath(queue)+"/messages", nil, in, &out); err != nil {
		return nil, fmt.Errorf("send to queue %s: %w", queue, err)
	}
	if len(out.IDs) != len(msgs) {
		return out.IDs, fmt.Errorf("send to queue %s: sent %d messages, the server returned %d ids", queue, len(msgs), len(out.IDs))
	}
	return out.IDs, nil
}

func queuePath(name string) string {
	return "/v1/queues/" + url.PathEscape(name)
}

func limitQuery(limit int) url.Values {
	if limit <= 0 {
		return nil
	}
	return url.Values{"limit": {strconv.Itoa(limit)}}
}

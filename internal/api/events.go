package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"

	"aloft/internal/events/async"
	"aloft/internal/events/queue"
	"aloft/internal/fn"
)

const (
	maxIdempotencyKey = 256
	// maxSendBody bounds a queue send request: a batch of messages as JSON.
	maxSendBody = 8 << 20
)

// invokeAsync accepts an Event invocation: 202 with the invocation id once
// the event is durably stored.
func (a *API) invokeAsync(w http.ResponseWriter, r *http.Request, name, qualifier, logMode string) error {
	if logMode == "tail" {
		return fn.Invalid("log=tail applies to synchronous invocations only: an async invocation's log is in `aloft logs`")
	}
	key := r.Header.Get("X-Aloft-Idempotency-Key")
	if len(key) > maxIdempotencyKey || strings.ContainsAny(key, "\r\n") {
		return fn.Invalid("X-Aloft-Idempotency-Key is too long or has line breaks: use at most %d characters", maxIdempotencyKey)
	}
	limit := a.cfg.MaxAsyncPayload
	if r.ContentLength > limit {
		return fn.TooLarge("async payload is over %d bytes: send less, or invoke synchronously (up to %d bytes)", limit, a.cfg.MaxPayload)
	}
	payload, err := readPayload(r, limit)
	if err != nil {
		return err
	}
	if int64(len(payload)) > limit {
		return fn.TooLarge("async payload is over %d bytes: send less, or invoke synchronously (up to %d bytes)", limit, a.cfg.MaxPayload)
	}
	if err := a.checkEvent(r, name, qualifier, payload); err != nil {
		return err
	}
	id, dup, err := a.cfg.Events.Enqueue(r.Context(), async.Event{
		Tenant: tenant(r), Function: name, Qualifier: qualifier,
		Payload: payload, IdempotencyKey: key, TraceID: r.Header.Get("X-Amzn-Trace-Id"), Trigger: "api",
	})
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("X-Aloft-Invocation-Id", id)
	if dup {
		h.Set("X-Aloft-Duplicate", "true")
	}
	// The accept path is hot: the 202 body is written without a map.
	quoted, _ := json.Marshal(id)
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = io.WriteString(w, `{"invocationId":`+string(quoted)+`,"duplicate":`+strconv.FormatBool(dup)+"}\n")
	return nil
}

// readPayload reads at most limit+1 bytes of r's body, sized from its
// Content-Length when it has one.
func readPayload(r *http.Request, limit int64) ([]byte, error) {
	if n := r.ContentLength; n >= 0 && n <= limit {
		b := make([]byte, n)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, fn.Invalid("reading the payload: %v", err)
		}
		return b, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, fn.Invalid("reading the payload: %v", err)
	}
	return b, nil
}

// limitParam reads ?limit= (default def, 1..max).
func limitParam(r *http.Request, def, max int) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > max {
		return 0, fn.Invalid("limit=%q: use a number from 1 to %d", s, max)
	}
	return n, nil
}

// existing checks the function exists and returns its name.
func (a *API) existing(r *http.Request) (string, error) {
	name, err := pathName(r)
	if err != nil {
		return "", err
	}
	if _, _, err := a.cfg.Store.GetFunction(r.Context(), tenant(r), name); err != nil {
		return "", err
	}
	return name, nil
}

func (a *API) invocations(w http.ResponseWriter, r *http.Request) error {
	name, err := a.existing(r)
	if err != nil {
		return err
	}
	limit, err := limitParam(r, 50, 10000)
	if err != nil {
		return err
	}
	list, err := a.cfg.Events.Invocations(r.Context(), tenant(r), name, limit)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"invocations": list})
}

func (a *API) deadLetters(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	limit, err := limitParam(r, 100, 10000)
	if err != nil {
		return err
	}
	list, err := a.cfg.Events.DeadLetters(r.Context(), tenant(r), name, limit)
	if err != nil {
		return err
	}
	if list == nil && !a.functionExists(r, name) {
		return fn.NotFound("function %q not found and it has no dead letters", name)
	}
	return writeJSON(w, http.StatusOK, map[string]any{"deadLetters": orEmpty(list)})
}

func (a *API) functionExists(r *http.Request, name string) bool {
	_, _, err := a.cfg.Store.GetFunction(r.Context(), tenant(r), name)
	return err == nil
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// redrive sends dead letters again: {"id": "..."} for one, {} for all.
func (a *API) redrive(w http.ResponseWriter, r *http.Request) error {
	name, err := a.existing(r)
	if err != nil {
		return err
	}
	var body struct {
		ID string `json:"id"`
	}
	if r.ContentLength != 0 {
		if err := decodeJSON(r.Body, 4096, &body); err != nil {
			return err
		}
	}
	n, err := a.cfg.Events.Redrive(r.Context(), tenant(r), name, body.ID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"redriven": n})
}

func (a *API) triggers(w http.ResponseWriter, r *http.Request) error {
	list, err := a.cfg.Events.Triggers(r.Context(), tenant(r))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"triggers": list})
}

func (a *API) schedules(w http.ResponseWriter, r *http.Request) error {
	function := r.URL.Query().Get("function")
	if function != "" {
		if err := fn.ValidateName(function); err != nil {
			return err
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"schedules": orEmpty(a.cfg.Events.Schedules(tenant(r), function))})
}

func queueName(r *http.Request) (string, error) {
	name := r.PathValue("queue")
	if err := fn.ValidateQueueName(name); err != nil {
		return "", err
	}
	return name, nil
}

func (a *API) putQueue(w http.ResponseWriter, r *http.Request) error {
	name, err := queueName(r)
	if err != nil {
		return err
	}
	// A queue has no settings: a body naming some would be ignored, and
	// mislead, so anything but nothing or {} is refused.
	b, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		return fn.Invalid("reading the body: %v", err)
	}
	if b = bytes.TrimSpace(b); len(b) > 0 && string(b) != "{}" {
		return fn.Invalid("a queue has no settings: send no body, or {}")
	}
	q, created, err := a.cfg.Events.Queues().Create(r.Context(), tenant(r), name)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		a.log.Info("queue created", "queue", name)
	}
	return writeJSON(w, status, q)
}

func (a *API) getQueue(w http.ResponseWriter, r *http.Request) error {
	name, err := queueName(r)
	if err != nil {
		return err
	}
	q, err := a.cfg.Events.Queues().Get(r.Context(), tenant(r), name)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, q)
}

func (a *API) listQueues(w http.ResponseWriter, r *http.Request) error {
	list, err := a.cfg.Events.Queues().List(r.Context(), tenant(r))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"queues": orEmpty(list)})
}

func (a *API) deleteQueue(w http.ResponseWriter, r *http.Request) error {
	name, err := queueName(r)
	if err != nil {
		return err
	}
	if _, err := a.cfg.Events.Queues().Get(r.Context(), tenant(r), name); err != nil {
		return err
	}
	user, err := a.cfg.Events.QueueInUse(r.Context(), tenant(r), name)
	if err != nil {
		return err
	}
	if user != "" {
		return fn.Conflict("queue %q triggers function %q: remove that event first", name, user)
	}
	if err := a.cfg.Events.Queues().Delete(r.Context(), tenant(r), name); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// send stores messages: {"messages":[{"body":...}, ...]} or one
// {"body":..., "attributes":{...}}.
func (a *API) send(w http.ResponseWriter, r *http.Request) error {
	name, err := queueName(r)
	if err != nil {
		return err
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxSendBody+1))
	if err != nil {
		return fn.Invalid("reading the body: %v", err)
	}
	if len(raw) > maxSendBody {
		return fn.TooLarge("send body is over %d bytes: send fewer messages at once", maxSendBody)
	}
	msgs, err := decodeMessages(raw)
	if err != nil {
		return err
	}
	ids, err := a.cfg.Events.Queues().Send(r.Context(), tenant(r), name, msgs)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"ids": ids})
}

func decodeMessages(raw []byte) ([]queue.Message, error) {
	var batch struct {
		Messages []queue.Message `json:"messages"`
	}
	if err := decodeJSON(bytes.NewReader(raw), int64(len(raw))+1, &batch); err == nil && batch.Messages != nil {
		return batch.Messages, nil
	}
	var one queue.Message
	if err := decodeJSON(bytes.NewReader(raw), int64(len(raw))+1, &one); err != nil {
		return nil, fn.Invalid(`send body must be {"body": "...", "attributes": {...}} or {"messages": [{"body": "..."}, ...]}`)
	}
	return []queue.Message{one}, nil
}

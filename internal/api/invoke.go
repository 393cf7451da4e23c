package api

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"aloft/internal/fn"
	"aloft/internal/invoke"
	"aloft/internal/store"
)

// invoke runs the function with the raw body as payload and answers the
// raw result; a function error is 200 with X-Aloft-Function-Error.
func (a *API) invoke(w http.ResponseWriter, r *http.Request) error {
	name, qualifier, err := invokeTarget(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	logMode := q.Get("log")
	if logMode != "" && logMode != "tail" && logMode != "none" {
		return fn.Invalid("log=%q is unknown: use log=tail or leave it out", logMode)
	}
	invType := r.Header.Get("X-Aloft-Invocation-Type")
	switch invType {
	case "", "RequestResponse":
	case "Event":
		return a.invokeAsync(w, r, name, qualifier, logMode)
	case "DryRun":
		if _, err := a.cfg.Invoker.Runtime(r.Context(), tenant(r), name, qualifier); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	default:
		return fn.Invalid("X-Aloft-Invocation-Type %q is unknown: use RequestResponse, Event or DryRun", invType)
	}
	if key := r.Header.Get("X-Aloft-Idempotency-Key"); key != "" {
		return fn.Invalid("X-Aloft-Idempotency-Key applies to async invocations only: add X-Aloft-Invocation-Type: Event")
	}
	payload, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxPayload))
	if err != nil {
		return err
	}
	if err := a.checkEvent(r, name, qualifier, payload); err != nil {
		return err
	}
	resp, err := a.cfg.Invoker.Invoke(r.Context(), invoke.Request{
		Tenant: tenant(r), Function: name, Qualifier: qualifier,
		Payload: payload, LogTail: logMode == "tail",
		TraceID: r.Header.Get("X-Amzn-Trace-Id"),
	})
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("X-Aloft-Invocation-Id", resp.InvocationID)
	h.Set("X-Aloft-Executed-Version", resp.Version)
	if logMode == "tail" {
		h.Set("X-Aloft-Log-Result", base64.StdEncoding.EncodeToString(resp.LogTail))
	}
	ct := resp.ContentType
	if resp.FunctionError {
		h.Set("X-Aloft-Function-Error", "Unhandled")
		ct = "application/json"
	}
	if ct == "" {
		ct = "application/json"
	}
	h.Set("Content-Type", ct)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(resp.Payload)
	return nil
}

// invokeTarget reads the function and the qualifier of an invoke: the
// path's NAME or NAME:QUALIFIER (as Lambda's Invoke takes a function name),
// and ?qualifier=.
func invokeTarget(r *http.Request) (name, qualifier string, err error) {
	name, inName, err := fn.SplitQualified(r.PathValue("name"))
	if err != nil {
		return "", "", err
	}
	qualifier = r.URL.Query().Get("qualifier")
	switch {
	case inName == "":
	case qualifier != "" && qualifier != inName:
		return "", "", fn.Invalid("the function name says qualifier %q and ?qualifier= says %q: give one of them", inName, qualifier)
	default:
		qualifier = inName
	}
	return name, qualifier, nil
}

// checkEvent refuses a payload that is not JSON for a function that takes
// Lambda-style events (lambda, node, python), as Lambda answers
// InvalidRequestContentException: the runtime could only fail it, and an
// async event would be retried and dead-lettered for nothing. An empty
// payload is the event {}. http and wasm functions take any bytes. It also
// answers 404 for an unknown function, version or alias.
func (a *API) checkEvent(r *http.Request, name, qualifier string, payload []byte) error {
	rt, err := a.cfg.Invoker.Runtime(r.Context(), tenant(r), name, qualifier)
	if err != nil {
		return err
	}
	if len(payload) > 0 && rt.EventStyle() && !json.Valid(payload) {
		return fn.Invalid("the payload is not valid JSON: a %s function takes its event as JSON (http and wasm functions take any bytes)", rt)
	}
	return nil
}

// logs streams a function's log lines as NDJSON.
func (a *API) logs(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	query := store.LogQuery{Tenant: tenant(r), Function: name}
	if s := q.Get("since"); s != "" {
		if d, err := time.ParseDuration(s); err == nil && d > 0 {
			query.Since = time.Now().Add(-d)
		} else if t, err := time.Parse(time.RFC3339, s); err == nil {
			query.Since = t
		} else {
			return fn.Invalid("since=%q: use a duration like 10m or an RFC 3339 time", s)
		}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 100000 {
			return fn.Invalid("limit=%q: use a number from 1 to 100000", s)
		}
		query.Limit = n
	}
	switch strings.ToLower(q.Get("follow")) {
	case "", "false", "0":
	case "true", "1":
		query.Follow = true
	default:
		return fn.Invalid("follow=%q: use true or false", q.Get("follow"))
	}
	if _, _, err := a.cfg.Store.GetFunction(r.Context(), tenant(r), name); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	err = a.cfg.Store.ReadLogs(r.Context(), query, func(l fn.LogLine) error {
		if err := enc.Encode(l); err != nil {
			return err
		}
		if query.Follow {
			if err := bw.Flush(); err != nil {
				return err
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		return nil
	})
	_ = bw.Flush()
	if err != nil && r.Context().Err() == nil {
		a.log.Warn("read logs", "function", name, "error", err)
	}
	return nil
}

// instances reports the live pools of a function: instances, busy slots,
// waiting requests, and totals started and stopped.
func (a *API) instances(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	if _, _, err := a.cfg.Store.GetFunction(r.Context(), tenant(r), name); err != nil {
		return err
	}
	prefix := tenant(r) + "/" + name + "/"
	out := map[string]any{}
	for k, st := range a.cfg.Invoker.Stats() {
		if v, ok := strings.CutPrefix(k, prefix); ok {
			out[v] = st
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"versions": out})
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"aloft/internal/client"
	"aloft/internal/fn"
	"aloft/internal/server"
)

// eventRows measures the events rows on the in-process server: async
// executions end to end, schedule precision, a queue trigger's throughput,
// and (last, because it leaves a backlog) durable async accepts.
func eventRows(ctx context.Context, o options, out io.Writer, srv *server.Server, c *client.Client, hc *http.Client,
	deploy func(cfg fn.Config, dir string) error, bins map[string]string) ([]row, error) {
	var rows []row
	fnCfg := func(name string, max int) fn.Config {
		return fn.Config{Name: name, Runtime: fn.RuntimeLambda, Timeout: fn.Duration(10 * time.Second),
			Scale: fn.Scale{Max: max, Idle: fn.Duration(10 * time.Minute)}}
	}

	// Async end to end: 10,000 events, accepted from 64 callers while they
	// run; the clock stops when the last one has succeeded.
	const asyncN = 10000
	if err := deploy(fnCfg("async-echo", 8), bins["echo"]); err != nil {
		return nil, err
	}
	post := func(name string) func() error {
		url := srv.URL() + "/v1/functions/" + name + "/invoke"
		return func() error { return postEvent(hc, url) }
	}
	if err := post("async-echo")(); err != nil {
		return nil, err
	}
	waitAsync := func(want uint64, timeout time.Duration) error {
		deadline := time.Now().Add(timeout)
		for srv.Events().Stats().Async.Succeeded < want {
			if time.Now().After(deadline) {
				return fmt.Errorf("only %d of %d async events succeeded in %s", srv.Events().Stats().Async.Succeeded, want, timeout)
			}
			time.Sleep(2 * time.Millisecond)
		}
		return nil
	}
	if err := waitAsync(1, time.Minute); err != nil {
		return nil, err
	}
	base := srv.Events().Stats().Async.Succeeded
	start := time.Now()
	if err := fanOut(64, asyncN, post("async-echo")); err != nil {
		return nil, err
	}
	if err := waitAsync(base+asyncN, 5*time.Minute); err != nil {
		return nil, err
	}
	e2e := float64(asyncN) / time.Since(start).Seconds()
	sync1 := warmThroughput(32, o.duration, invokeSync(hc, srv.URL()+"/v1/functions/async-echo/invoke"))
	rows = append(rows, row{name: fmt.Sprintf("async end-to-end, Go lambda echo (%d events, accepted at c=64)", asyncN),
		value: fmt.Sprintf("%.0f executions/s", e2e), target: ">= 5,000 executions/s",
		floor: fmt.Sprintf("sync invoke c=32 %.0f req/s", sync1), ratio: fmt.Sprintf("%.2f", e2e/sync1), ok: e2e >= 5000})

	// Schedule precision: four functions on rate(1 second), each printing
	// how late its tick arrived.
	fmt.Fprintln(out, "measuring schedule precision (15 s)...")
	var tickers []string
	for i := range 4 {
		name := fmt.Sprintf("ticklag-%d", i)
		cfg := fnCfg(name, 2)
		cfg.Events = []fn.Event{{Schedule: "rate(1 second)"}}
		if err := deploy(cfg, bins["ticklag"]); err != nil {
			return nil, err
		}
		tickers = append(tickers, name)
	}
	time.Sleep(15 * time.Second)
	var lags []time.Duration
	for _, name := range tickers {
		err := c.Logs(ctx, name, client.LogsOptions{}, func(l fn.LogLine) error {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l.Text), "lag_us "); ok {
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					lags = append(lags, time.Duration(n)*time.Microsecond)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if err := c.Delete(ctx, name); err != nil {
			return nil, err
		}
	}
	rows = append(rows, row{name: fmt.Sprintf("schedule precision, tick to function running (n=%d)", len(lags)),
		value: fmt.Sprintf("p50 %s, p99 %s", ms(pct(lags, 50)), ms(pct(lags, 99))), target: "p99 <= 50 ms",
		floor: "-", ratio: "-", ok: len(lags) > 0 && pct(lags, 99) <= 50*time.Millisecond})

	// Queue trigger: 20,000 messages waiting, then a function with batch
	// size 10 drains them.
	const queueN = 20000
	if _, _, err := srv.Events().Queues().Create(ctx, fn.DefaultTenant, "benchq"); err != nil {
		return nil, err
	}
	sendURL := srv.URL() + "/v1/queues/benchq/messages"
	var batch bytes.Buffer
	batch.WriteString(`{"messages":[`)
	for i := range 500 {
		if i > 0 {
			batch.WriteByte(',')
		}
		fmt.Fprintf(&batch, `{"body":"{\"n\":%d}"}`, i)
	}
	batch.WriteString(`]}`)
	if err := fanOut(4, queueN/500, func() error { return call(hc, "POST", sendURL, batch.Bytes()) }); err != nil {
		return nil, err
	}
	qcfg := fnCfg("queue-echo", 8)
	qcfg.Events = []fn.Event{{Queue: "benchq", BatchSize: 10, Concurrency: 8}}
	qbase := srv.Events().Stats().Queue.Succeeded
	dbase := srv.Events().Stats().Queue.Delivered
	// The clock starts with the first delivery: packing and deploying the
	// function is not the trigger's work (instance starts are).
	deployed := make(chan error, 1)
	go func() { deployed <- deploy(qcfg, bins["echo"]) }()
	deadline := time.Now().Add(time.Minute)
	for srv.Events().Stats().Queue.Delivered == dbase {
		select {
		case err := <-deployed:
			if err != nil {
				return nil, err
			}
			deployed <- nil
		default:
		}
		if time.Now().After(deadline) {
			return nil, errors.New("the queue trigger delivered nothing in a minute")
		}
		time.Sleep(200 * time.Microsecond)
	}
	start = time.Now()
	deadline = time.Now().Add(5 * time.Minute)
	for srv.Events().Stats().Queue.Succeeded < qbase+queueN {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("queue trigger handled %d of %d messages", srv.Events().Stats().Queue.Succeeded-qbase, queueN)
		}
		time.Sleep(2 * time.Millisecond)
	}
	qrate := float64(queueN) / time.Since(start).Seconds()
	if err := <-deployed; err != nil {
		return nil, err
	}
	rows = append(rows, row{name: fmt.Sprintf("queue trigger, batch size 10, Go lambda (%d messages)", queueN),
		value: fmt.Sprintf("%.0f messages/s", qrate), target: ">= 10,000 messages/s",
		floor: fmt.Sprintf("sync invoke c=32 %.0f req/s", sync1), ratio: fmt.Sprintf("%.2f", qrate/sync1), ok: qrate >= 10000})

	// Durable accepts at c=64. Last: the accepted events are still being
	// run when the server shuts down (they stay stored).
	if err := deploy(fnCfg("async-accept", 1), bins["echo"]); err != nil {
		return nil, err
	}
	accepts := throughput(64, o.duration, post("async-accept"))
	rows = append(rows, row{name: "async accept, durable 202s, c=64",
		value: fmt.Sprintf("%.0f accepts/s", accepts), target: ">= 10,000/s",
		floor: fmt.Sprintf("sync invoke c=32 %.0f req/s", sync1), ratio: fmt.Sprintf("%.2f", accepts/sync1), ok: accepts >= 10000})
	return rows, nil
}

// postEvent sends one async invocation and wants 202.
func postEvent(hc *http.Client, url string) error {
	req, err := http.NewRequest("POST", url, strings.NewReader(`{"hello":"world"}`))
	if err != nil {
		return err
	}
	req.Header.Set("X-Aloft-Invocation-Type", "Event")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	var body struct {
		ID string `json:"invocationId"`
	}
	err = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || err != nil || body.ID == "" {
		return fmt.Errorf("async invoke: status %d", resp.StatusCode)
	}
	return nil
}

func invokeSync(hc *http.Client, url string) func() error {
	return func() error { return call(hc, "POST", url, []byte(`{"hello":"world"}`)) }
}

// fanOut runs f n times from c goroutines and returns the first error.
func fanOut(c, n int, f func() error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range c {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := f(); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// Command collector is the function the end-to-end event tests drive. It
// reports every execution to the test's HTTP collector at $COLLECT_URL
// (the function runs with network: true) before it answers, so the test
// counts executions exactly, across crashes of the server.
//
// Run as a Lambda function (runtime lambda) it takes:
//   - an SQS batch: reports each record's body; bodies starting with "fail"
//     are answered as batchItemFailures;
//   - a scheduled event: reports "tick <time>";
//   - any other JSON {"id": "...", "fail": bool, "sleepMs": n}: reports the
//     id, sleeps, and fails when fail is set.
//
// Run as an http function (runtime http, $PORT set) it reports
// "http <ce-type> <ce-id> <ce-time> <body>" for each request.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

var collect = os.Getenv("COLLECT_URL")

func report(what string) error {
	resp, err := http.Post(collect, "text/plain", strings.NewReader(what))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("collector answered %d", resp.StatusCode)
	}
	return nil
}

type generic struct {
	ID      string `json:"id"`
	Fail    bool   `json:"fail"`
	SleepMs int    `json:"sleepMs"`
	// Scheduled events.
	DetailType string `json:"detail-type"`
	Time       string `json:"time"`
	// SQS batches.
	Records []json.RawMessage `json:"Records"`
}

func handle(ctx context.Context, raw json.RawMessage) (any, error) {
	var g generic
	if err := json.Unmarshal(raw, &g); err != nil {
		return nil, err
	}
	switch {
	case len(g.Records) > 0:
		var batch events.SQSEvent
		if err := json.Unmarshal(raw, &batch); err != nil {
			return nil, err
		}
		var resp events.SQSEventResponse
		for _, r := range batch.Records {
			if err := report("sqs " + r.Body); err != nil {
				return nil, err
			}
			if strings.HasPrefix(r.Body, "fail") {
				resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: r.MessageId})
			}
		}
		return resp, nil
	case g.DetailType == "Scheduled Event":
		return "ok", report("tick " + g.Time)
	default:
		if err := report("event " + g.ID); err != nil {
			return nil, err
		}
		time.Sleep(time.Duration(g.SleepMs) * time.Millisecond)
		if g.Fail {
			return nil, errors.New("failed on purpose: " + g.ID)
		}
		return map[string]string{"done": g.ID}, nil
	}
}

func serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	line := fmt.Sprintf("http %s %s %s %s", r.Header.Get("Ce-Type"), r.Header.Get("Ce-Id"), r.Header.Get("Ce-Time"), bytes.TrimSpace(body))
	if err := report(line); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	w.Write([]byte("ok"))
}

func main() {
	if port := os.Getenv("PORT"); port != "" {
		if err := http.ListenAndServe(":"+port, http.HandlerFunc(serveHTTP)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	lambda.Start(handle)
}

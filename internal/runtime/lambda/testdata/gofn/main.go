// Command gofn is an unmodified aws-lambda-go function used by the tests of
// package lambda. The event's "op" picks what it does.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

type event struct {
	Op   string          `json:"op"`
	Size int             `json:"size"`
	Data json.RawMessage `json:"data"`
}

type info struct {
	RequestID    string `json:"request_id"`
	ARN          string `json:"arn"`
	FunctionName string `json:"function_name"`
	TraceEnv     string `json:"trace_env"`
	DeadlineMs   int64  `json:"deadline_ms"`
	HasDeadline  bool   `json:"has_deadline"`
	ClientApp    string `json:"client_app"`
}

func handle(ctx context.Context, e event) (any, error) {
	switch e.Op {
	case "echo":
		return e.Data, nil
	case "error":
		return nil, errors.New("boom")
	case "panic":
		panic("oops")
	case "big":
		return strings.Repeat("x", e.Size), nil
	case "info":
		lc, _ := lambdacontext.FromContext(ctx)
		d, ok := ctx.Deadline()
		return info{
			RequestID:    lc.AwsRequestID,
			ARN:          lc.InvokedFunctionArn,
			FunctionName: lambdacontext.FunctionName,
			TraceEnv:     os.Getenv("_X_AMZN_TRACE_ID"),
			DeadlineMs:   d.UnixMilli(),
			HasDeadline:  ok,
			ClientApp:    lc.ClientContext.Client.AppTitle,
		}, nil
	case "wait":
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return nil, errors.New("unknown op " + e.Op)
}

func main() { lambda.Start(handle) }

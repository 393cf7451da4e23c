// Command hello-go is an unmodified AWS Lambda Go handler: it greets HTTP
// callers and echoes any other event. As on Lambda, WithEnableSIGTERM
// gets it a SIGTERM, and 500 ms, before its instance is stopped.
package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

func handle(ctx context.Context, raw json.RawMessage) (any, error) {
	lc, _ := lambdacontext.FromContext(ctx)
	var req events.APIGatewayV2HTTPRequest
	if err := json.Unmarshal(raw, &req); err == nil && req.RawPath != "" {
		name := req.PathParameters["name"]
		if name == "" {
			name = req.QueryStringParameters["name"]
		}
		if name == "" {
			name = "world"
		}
		fmt.Printf("greeting %s\n", name)
		return events.APIGatewayV2HTTPResponse{
			StatusCode: 200,
			Headers:    map[string]string{"Content-Type": "text/plain"},
			Body:       fmt.Sprintf("Hello, %s! (from Go, request %s)\n", name, lc.AwsRequestID),
		}, nil
	}
	return map[string]any{"echo": raw, "function": lambdacontext.FunctionName}, nil
}

func main() {
	lambda.StartWithOptions(handle, lambda.WithEnableSIGTERM(func() {
		fmt.Println("SIGTERM: the instance is stopping")
	}))
}

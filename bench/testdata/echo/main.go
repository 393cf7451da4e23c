// Command echo is the benchmark's Go Lambda function: it returns its event.
package main

import (
	"context"
	"encoding/json"

	"github.com/aws/aws-lambda-go/lambda"
)

func main() {
	lambda.Start(func(ctx context.Context, e json.RawMessage) (json.RawMessage, error) { return e, nil })
}

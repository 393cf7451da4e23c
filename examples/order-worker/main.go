// Command order-worker handles batches from the "orders" queue, written for
// AWS Lambda's SQS trigger and run unmodified by Aloft: each record's body
// is an order; an order without an "item" is reported as a batch item
// failure, so only that message is retried (and dead-lettered after its
// retries: see `aloft dlq ls order-worker`).
//
//	aloft queue send orders '{"item":"book","qty":2}' '{"qty":1}'
package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

type order struct {
	Item string `json:"item"`
	Qty  int    `json:"qty"`
}

func handle(ctx context.Context, batch events.SQSEvent) (events.SQSEventResponse, error) {
	var resp events.SQSEventResponse
	for _, m := range batch.Records {
		var o order
		if err := json.Unmarshal([]byte(m.Body), &o); err != nil || o.Item == "" {
			fmt.Printf("message %s (attempt %s) is not an order: %q\n", m.MessageId, m.Attributes["ApproximateReceiveCount"], m.Body)
			resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: m.MessageId})
			continue
		}
		fmt.Printf("order: %d x %s\n", o.Qty, o.Item)
	}
	return resp, nil
}

func main() { lambda.Start(handle) }

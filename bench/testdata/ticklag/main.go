// Command ticklag is the benchmark's scheduled function: it prints how long
// after its scheduled tick it started running, which the schedule-precision
// row reads back from the function's log.
package main

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

func main() {
	lambda.Start(func(ctx context.Context, e events.EventBridgeEvent) error {
		fmt.Printf("lag_us %d\n", time.Since(e.Time).Microseconds())
		return nil
	})
}

// Command probe is a Lambda function the end-to-end tests drive: each event
// names an operation that exercises the platform (timeouts, crashes, memory,
// what the sandbox lets it see).
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

type event struct {
	Op    string `json:"op"`
	Arg   string `json:"arg"`
	N     int    `json:"n"`
	Value any    `json:"value"`
}

var hog [][]byte

func handle(ctx context.Context, e event) (any, error) {
	lc, _ := lambdacontext.FromContext(ctx)
	switch e.Op {
	case "echo":
		return map[string]any{"value": e.Value, "request_id": lc.AwsRequestID, "pid": os.Getpid()}, nil
	case "print":
		for i := 0; i < e.N; i++ {
			fmt.Printf("line %d of %s\n", i, lc.AwsRequestID)
		}
		return "printed", nil
	case "sleep":
		time.Sleep(time.Duration(e.N) * time.Millisecond)
		return map[string]any{"slept": e.N, "pid": os.Getpid()}, nil
	case "crash":
		fmt.Println("about to crash")
		os.Exit(3)
	case "oom":
		for i := 0; i < 1<<14; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = byte(j)
			}
			hog = append(hog, b)
		}
		return "survived", nil
	case "fail":
		return nil, fmt.Errorf("failed on purpose: %s", e.Arg)
	case "read":
		b, err := os.ReadFile(e.Arg)
		if err != nil {
			return map[string]any{"error": err.Error()}, nil
		}
		return map[string]any{"content": string(b)}, nil
	case "write":
		err := os.WriteFile(e.Arg, []byte("x"), 0o644)
		return map[string]any{"error": errString(err)}, nil
	case "procs":
		entries, err := os.ReadDir("/proc")
		if err != nil {
			return nil, err
		}
		var pids []int
		for _, d := range entries {
			if n, err := strconv.Atoi(d.Name()); err == nil {
				pids = append(pids, n)
			}
		}
		return map[string]any{"pids": pids}, nil
	case "dial":
		c, err := net.DialTimeout("tcp", e.Arg, time.Second)
		if err == nil {
			c.Close()
		}
		return map[string]any{"error": errString(err)}, nil
	case "env":
		return map[string]any{"env": os.Environ(), "uid": os.Getuid()}, nil
	}
	return nil, fmt.Errorf("unknown op %q: use one of %s", e.Op, strings.Join([]string{"echo", "print", "sleep", "crash", "oom", "fail", "read", "write", "procs", "dial", "env"}, ", "))
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func main() { lambda.Start(handle) }

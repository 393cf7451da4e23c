package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"aloft/internal/client"
	"aloft/internal/fn"
	"aloft/internal/manifest"
)

var deployCmd = &command{
	name: "deploy", args: "[DIR|FILE]", min: 0, max: 1,
	summary: "deploy the functions of an aloft.yaml (default: ./aloft.yaml)",
	setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		only := fs.String("only", "", "deploy only the function `NAME`")
		return func(ctx context.Context, e *env, args []string) error {
			path := "."
			if len(args) == 1 {
				path = args[0]
			}
			m, err := manifest.Load(path)
			if err != nil {
				return err
			}
			if *only != "" {
				f, ok := m.Function(*only)
				if !ok {
					names := make([]string, len(m.Functions))
					for i, f := range m.Functions {
						names[i] = f.Name
					}
					return fmt.Errorf("deploy: --only %q: the manifest has no such function (it has %s)", *only, strings.Join(names, ", "))
				}
				m.Functions = []manifest.Function{f}
			}
			return Deploy(ctx, e.c, m, e.baseURL, e.stdout)
		}
	},
}

var invokeCmd = &command{
	name: "invoke", args: "NAME [PAYLOAD]", min: 1, max: 2,
	summary: "call a function and print its result, or its invocation id with --async (PAYLOAD '-' or piped stdin: read stdin; none: {})",
	setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		data := fs.String("data", "", "the payload, or `@FILE` to read it from a file")
		qualifier := fs.String("qualifier", "", "invoke this version number or alias instead of $LATEST")
		logTail := fs.Bool("log", false, "print the end of the invocation's log to stderr")
		async := fs.Bool("async", false, "queue the invocation (retried, dead-lettered) and print its id instead of the result")
		key := fs.String("idempotency-key", "", "with --async: a repeat with the same `KEY` returns the first invocation's id instead of running again")
		return func(ctx context.Context, e *env, args []string) error {
			if *async && *logTail {
				return fmt.Errorf("invoke: --async and --log do not mix: read an async invocation's log with 'aloft logs %s'", args[0])
			}
			if *key != "" && !*async {
				return errors.New("invoke: --idempotency-key applies to --async invocations only")
			}
			dataSet := false
			fs.Visit(func(f *flag.Flag) { dataSet = dataSet || f.Name == "data" })
			payload, err := invokePayload(args[1:], *data, dataSet, e.stdin)
			if err != nil {
				return err
			}
			if *async {
				return invokeAsync(ctx, e, args[0], payload, client.AsyncOptions{Qualifier: *qualifier, IdempotencyKey: *key})
			}
			res, err := e.c.Invoke(ctx, args[0], payload, client.InvokeOptions{Qualifier: *qualifier, LogTail: *logTail})
			if err != nil {
				return err
			}
			if *logTail && res.LogTail != "" {
				io.WriteString(e.stderr, res.LogTail)
				if !strings.HasSuffix(res.LogTail, "\n") {
					io.WriteString(e.stderr, "\n")
				}
			}
			if _, err := e.stdout.Write(res.Payload); err != nil {
				return fmt.Errorf("invoke: write result: %w", err)
			}
			if isTerminal(e.stdout) && len(res.Payload) > 0 && res.Payload[len(res.Payload)-1] != '\n' {
				io.WriteString(e.stdout, "\n")
			}
			if res.FunctionError != "" {
				return fmt.Errorf("function %s failed (%s)%s", args[0], res.FunctionError, errorMessage(res.Payload))
			}
			return nil
		}
	},
}

// invokeAsync queues one invocation and prints its id; a duplicate (a
// repeated idempotency key) is noted on stderr.
func invokeAsync(ctx context.Context, e *env, name string, payload []byte, opt client.AsyncOptions) error {
	id, dup, err := e.c.InvokeAsync(ctx, name, payload, opt)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(e.stdout, id); err != nil {
		return fmt.Errorf("invoke: write id: %w", err)
	}
	if dup {
		fmt.Fprintf(e.stderr, "(duplicate) idempotency key %q was used before: this is the first invocation's id, nothing new was queued\n", opt.IdempotencyKey)
	}
	return nil
}

// invokePayload picks the payload: an argument ("-" reads stdin), --data
// (@FILE reads a file), else stdin when it is not a terminal, else "{}".
func invokePayload(args []string, data string, dataSet bool, stdin io.Reader) ([]byte, error) {
	switch {
	case len(args) == 1 && dataSet:
		return nil, errors.New("invoke: give the payload once, as an argument or with --data, not both")
	case len(args) == 1 && args[0] == "-":
		return readStdin(stdin)
	case len(args) == 1:
		return []byte(args[0]), nil
	case dataSet && strings.HasPrefix(data, "@"):
		b, err := os.ReadFile(data[1:])
		if err != nil {
			return nil, fmt.Errorf("invoke: --data: %w", err)
		}
		return b, nil
	case dataSet:
		return []byte(data), nil
	case stdin != nil && !isTerminal(stdin):
		b, err := readStdin(stdin)
		if err != nil || len(b) > 0 {
			return b, err
		}
	}
	return []byte("{}"), nil
}

func readStdin(stdin io.Reader) ([]byte, error) {
	if stdin == nil {
		return nil, nil
	}
	b, err := io.ReadAll(stdin)
	if err != nil {
		return nil, fmt.Errorf("invoke: read payload from stdin: %w", err)
	}
	return b, nil
}

// errorMessage returns ": <errorMessage>" from a Lambda error payload, or "".
func errorMessage(payload []byte) string {
	var e struct {
		Message string `json:"errorMessage"`
	}
	if json.Unmarshal(payload, &e) != nil || e.Message == "" {
		return ""
	}
	return ": " + e.Message
}

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	if !ok {
		return false
	}
	st, err := file.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

var lsCmd = &command{
	name: "ls", min: 0, max: 0,
	summary: "list functions",
	setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, _ []string) error {
			fns, err := e.c.List(ctx)
			if err != nil {
				return err
			}
			if len(fns) == 0 {
				fmt.Fprintln(e.stderr, "no functions: deploy some with 'aloft deploy'")
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tRUNTIME\tMEMORY\tTIMEOUT\tPUBLISHED\tUPDATED\tROUTES")
			for _, f := range fns {
				pub := "-"
				if f.LatestPublished > 0 {
					pub = strconv.Itoa(f.LatestPublished)
				}
				fmt.Fprintf(tw, "%s\t%s\t%d MB\t%s\t%s\t%s\t%s\n", f.Name, f.Runtime, f.MemoryMB, f.Timeout.D(),
					pub, formatTime(f.Updated), routesOf(f.Config))
			}
			return tw.Flush()
		}
	},
}

var getCmd = &command{
	name: "get", args: "NAME", min: 1, max: 1,
	summary: "print a function as JSON",
	setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, args []string) error {
			f, err := e.c.Get(ctx, args[0])
			if err != nil {
				return err
			}
			return writeJSON(e.stdout, f)
		}
	},
}

var rmCmd = &command{
	name: "rm", args: "NAME", min: 1, max: 1,
	summary: "delete a function, its versions and aliases",
	setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, args []string) error {
			if err := e.c.Delete(ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "deleted %s\n", args[0])
			return nil
		}
	},
}

var logsCmd = &command{
	name: "logs", args: "NAME", min: 1, max: 1,
	summary: "print a function's log lines (time, instance, invocation, text)",
	setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		follow := fs.Bool("f", false, "follow: keep printing new lines until interrupted")
		since := fs.String("since", "", "only lines newer than this: a `duration` like 10m or a time like 2026-01-02T15:04:05Z")
		limit := fs.Int("limit", 0, "print at most `N` lines (the most recent)")
		return func(ctx context.Context, e *env, args []string) error {
			opt := client.LogsOptions{Limit: *limit, Follow: *follow}
			if *limit < 0 {
				return fmt.Errorf("logs: --limit %d: use a positive number", *limit)
			}
			if *since != "" {
				t, err := parseSince(*since, time.Now())
				if err != nil {
					return err
				}
				opt.Since = t
			}
			err := e.c.Logs(ctx, args[0], opt, func(l fn.LogLine) error {
				_, err := io.WriteString(e.stdout, formatLogLine(l))
				return err
			})
			if *follow && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				return nil // interrupted: the normal end of following
			}
			return err
		}
	},
}

// parseSince reads a duration before now ("10m") or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("logs: --since %q: use a positive duration like 10m", s)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("logs: --since %q: use a duration like 10m or a time like 2026-01-02T15:04:05Z", s)
}

func formatLogLine(l fn.LogLine) string {
	var b strings.Builder
	b.WriteString(l.Time.UTC().Format("2006-01-02T15:04:05.000Z"))
	for _, s := range []string{l.Instance, l.InvocationID} {
		if s != "" {
			b.WriteByte(' ')
			b.WriteString(s)
		}
	}
	b.WriteByte(' ')
	b.WriteString(strings.TrimRight(l.Text, "\r\n"))
	b.WriteByte('\n')
	return b.String()
}

var publishCmd = &command{
	name: "publish", args: "NAME", min: 1, max: 1,
	summary: "freeze $LATEST as the next numbered version",
	setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		desc := fs.String("description", "", "a `TEXT` describing the version")
		return func(ctx context.Context, e *env, args []string) error {
			v, err := e.c.Publish(ctx, args[0], *desc)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "published %s version %d\n", args[0], v.Number)
			return nil
		}
	},
}

var versionsCmd = &command{
	name: "versions", args: "NAME", min: 1, max: 1,
	summary: "list a function's published versions",
	setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, args []string) error {
			vs, err := e.c.Versions(ctx, args[0])
			if err != nil {
				return err
			}
			if len(vs) == 0 {
				fmt.Fprintf(e.stderr, "%s has no published versions: publish one with 'aloft publish %s'\n", args[0], args[0])
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tCREATED\tCODE\tDESCRIPTION")
			for _, v := range vs {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", v.Number, formatTime(v.Created), shortSHA(v.CodeSHA256), v.Description)
			}
			return tw.Flush()
		}
	},
}

var aliasSetCmd = &command{
	name: "alias set", args: "NAME ALIAS VERSION", min: 3, max: 3,
	summary: "point an alias at a published version",
	setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		desc := fs.String("description", "", "a `TEXT` describing the alias")
		return func(ctx context.Context, e *env, args []string) error {
			v, err := strconv.Atoi(args[2])
			if err != nil || v < 1 {
				return fmt.Errorf("alias set: VERSION %q must be a published version number like 3", args[2])
			}
			a, err := e.c.SetAlias(ctx, args[0], args[1], v, *desc)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "alias %s of %s points at version %d\n", a.Name, args[0], a.Version)
			return nil
		}
	},
}

var aliasLsCmd = &command{
	name: "alias ls", args: "NAME", min: 1, max: 1,
	summary: "list a function's aliases",
	setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, args []string) error {
			as, err := e.c.Aliases(ctx, args[0])
			if err != nil {
				return err
			}
			if len(as) == 0 {
				fmt.Fprintf(e.stderr, "%s has no aliases: add one with 'aloft alias set %s ALIAS VERSION'\n", args[0], args[0])
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ALIAS\tVERSION\tUPDATED\tDESCRIPTION")
			for _, a := range as {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", a.Name, a.Version, formatTime(a.Updated), a.Description)
			}
			return tw.Flush()
		}
	},
}

var aliasRmCmd = &command{
	name: "alias rm", args: "NAME ALIAS", min: 2, max: 2,
	summary: "delete an alias",
	setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, args []string) error {
			if err := e.c.DeleteAlias(ctx, args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "deleted alias %s of %s\n", args[1], args[0])
			return nil
		}
	},
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func shortSHA(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	if s == "" {
		return "-"
	}
	return s
}

// routesOf lists c's routes, with the version or alias they run when it is
// not $LATEST.
func routesOf(c fn.Config) string {
	s := strings.Join(c.Routes, ", ")
	if q := c.RouteQualifier; s != "" && q != "" && q != fn.LatestVersion {
		s += " -> " + q
	}
	return s
}

package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"aloft/internal/client"
	"aloft/internal/fn"
)

// Cell widths of the event tables.
const (
	invocationErrorWidth = 60
	deadErrorWidth       = 40
	payloadWidth         = 40
)

// Bounds of one `queue send` request: the messages read so far are sent
// when either is reached, so stdin of any length streams in batches.
const (
	sendBatchMessages = 100
	sendBatchBytes    = 1 << 20
	// maxLine bounds one message read from stdin.
	maxLine = 1 << 20
)

// limitFlag registers --limit; the value 0 leaves the server's default.
func limitFlag(fs *flag.FlagSet, what string) *int {
	return fs.Int("limit", 0, "list at most `N` "+what+" (default: the server's)")
}

func checkLimit(verb string, limit int) error {
	if limit < 0 {
		return fmt.Errorf("%s: --limit %d: use a positive number", verb, limit)
	}
	return nil
}

var invocationsCmd = &command{
	name: "invocations", args: "NAME", min: 1, max: 1,
	summary: "list a function's recent async, schedule, queue and subject invocations, newest first",
	setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		limit := limitFlag(fs, "invocations")
		return func(ctx context.Context, e *env, args []string) error {
			if err := checkLimit("invocations", *limit); err != nil {
				return err
			}
			invs, err := e.c.Invocations(ctx, args[0], *limit)
			if err != nil {
				return err
			}
			if len(invs) == 0 {
				fmt.Fprintf(e.stderr, "%s has no event invocations yet: queue one with 'aloft invoke --async %s'\n", args[0], args[0])
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATUS\tATTEMPTS\tTRIGGER\tVERSION\tSTARTED\tDURATION\tERROR")
			for _, in := range invs {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", cell(in.ID), cell(in.Status), in.Attempts, orDash(in.Trigger),
					orDash(in.Version), formatLocal(in.Started), formatDuration(in.Duration.D()), orDash(cut(in.Error, invocationErrorWidth)))
			}
			return tw.Flush()
		}
	},
}

var dlqLsCmd = &command{
	name: "dlq ls", args: "NAME", min: 1, max: 1,
	summary: "list a function's dead letters (events it kept failing), oldest first",
	setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		limit := limitFlag(fs, "dead letters")
		asJSON := fs.Bool("json", false, "print the entries as JSON, payloads whole (base64)")
		return func(ctx context.Context, e *env, args []string) error {
			if err := checkLimit("dlq ls", *limit); err != nil {
				return err
			}
			dls, err := e.c.DeadLetters(ctx, args[0], *limit)
			if err != nil {
				return err
			}
			if *asJSON {
				if dls == nil {
					dls = []*client.DeadLetter{}
				}
				return writeJSON(e.stdout, dls)
			}
			if len(dls) == 0 {
				fmt.Fprintf(e.stderr, "%s has no dead letters\n", args[0])
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSOURCE\tATTEMPTS\tREASON\tERROR\tDEAD-LETTERED\tPAYLOAD")
			for _, d := range dls {
				msg := d.ErrorMessage
				if d.ErrorType != "" {
					msg = strings.TrimSuffix(d.ErrorType+": "+msg, ": ")
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", cell(d.ID), cell(d.Source), d.Attempts, orDash(d.Reason),
					orDash(cut(msg, deadErrorWidth)), formatLocal(d.DeadLettered), orDash(preview(d.Payload, payloadWidth)))
			}
			return tw.Flush()
		}
	},
}

var dlqRedriveCmd = &command{
	name: "dlq redrive", args: "NAME", min: 1, max: 1,
	summary: "send a function's dead letters again (all of them, or one with --id)",
	setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		id := fs.String("id", "", "redrive only the dead letter with this `ID` (see 'aloft dlq ls')")
		return func(ctx context.Context, e *env, args []string) error {
			n, err := e.c.Redrive(ctx, args[0], *id)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "redriven %d\n", n)
			return nil
		}
	},
}

var schedulesCmd = &command{
	name: "schedules", args: "[NAME]", min: 0, max: 1,
	summary: "list the schedules of every function, or of NAME, soonest first",
	setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			list, err := e.c.Schedules(ctx, name)
			if err != nil {
				return err
			}
			if len(list) == 0 {
				if name != "" {
					fmt.Fprintf(e.stderr, "%s has no schedules: add one under its events: in aloft.yaml\n", name)
				} else {
					fmt.Fprintln(e.stderr, "no schedules: add one under a function's events: in aloft.yaml")
				}
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "FUNCTION\tSCHEDULE\tTIMEZONE\tNEXT\tLAST")
			for _, s := range list {
				sched, next := cell(s.Schedule), formatLocal(s.Next)
				if s.Disabled {
					sched, next = sched+" (disabled)", "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cell(s.Function), sched, orDash(s.Timezone), next, formatLocal(s.Last))
			}
			return tw.Flush()
		}
	},
}

var triggersLsCmd = &command{
	name: "triggers ls", min: 0, max: 0,
	summary: "list every function's schedules, queues and subjects",
	setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, _ []string) error {
			list, err := e.c.Triggers(ctx)
			if err != nil {
				return err
			}
			if len(list) == 0 {
				fmt.Fprintln(e.stderr, "no triggers: add events: (schedule, queue or subject) to a function in aloft.yaml")
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "FUNCTION\tKIND\tSOURCE\tOPTIONS\tNEXT\tQUALIFIER")
			for _, t := range list {
				source, next := cell(t.Source), "-"
				if t.Disabled {
					source += " (disabled)"
				}
				if t.Next != nil {
					next = formatLocal(*t.Next)
				}
				qualifier := t.Qualifier
				if qualifier == "" {
					qualifier = fn.LatestVersion
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", cell(t.Function), cell(string(t.Kind)), source, orDash(t.Options), next, cell(qualifier))
			}
			return tw.Flush()
		}
	},
}

var queueCreateCmd = &command{
	name: "queue create", args: "NAME", min: 1, max: 1,
	summary: "create a queue (nothing happens if it exists)",
	setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, args []string) error {
			q, created, err := e.c.CreateQueue(ctx, args[0])
			if err != nil {
				return err
			}
			if created {
				fmt.Fprintf(e.stdout, "created queue %s\n", q.Name)
			} else {
				fmt.Fprintf(e.stdout, "queue %s exists (%d messages)\n", q.Name, q.Messages)
			}
			return nil
		}
	},
}

var queueLsCmd = &command{
	name: "queue ls", min: 0, max: 0,
	summary: "list queues",
	setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, _ []string) error {
			qs, err := e.c.Queues(ctx)
			if err != nil {
				return err
			}
			if len(qs) == 0 {
				fmt.Fprintln(e.stderr, "no queues: create one with 'aloft queue create NAME' or under queues: in aloft.yaml")
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tMESSAGES\tCREATED")
			for _, q := range qs {
				fmt.Fprintf(tw, "%s\t%d\t%s\n", cell(q.Name), q.Messages, formatLocal(q.Created))
			}
			return tw.Flush()
		}
	},
}

var queueRmCmd = &command{
	name: "queue rm", args: "NAME", min: 1, max: 1,
	summary: "delete a queue and its messages (not while a function's event uses it)",
	setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, args []string) error {
			if err := e.c.DeleteQueue(ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "deleted queue %s\n", args[0])
			return nil
		}
	},
}

// attrFlag collects repeated --attr KEY=VALUE flags.
type attrFlag map[string]string

func (a attrFlag) String() string { return "" }

func (a attrFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: use KEY=VALUE", s)
	}
	a[k] = v
	return nil
}

var queueSendCmd = &command{
	name: "queue send", args: "NAME BODY...", min: 2, max: -1,
	summary: "send each BODY as one message ('-': each line of stdin is one, blank lines skipped) and print their ids",
	setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		attrs := attrFlag{}
		fs.Var(attrs, "attr", "add the attribute `KEY=VALUE` to every message (repeatable)")
		return func(ctx context.Context, e *env, args []string) error {
			dashes := 0
			for _, b := range args[1:] {
				if b == "-" {
					dashes++
				}
			}
			if dashes > 1 {
				return errors.New("queue send: give '-' (read stdin) once")
			}
			s := &sender{c: e.c, queue: args[0], out: e.stdout}
			if len(attrs) > 0 {
				s.attrs = attrs
			}
			for _, b := range args[1:] {
				var err error
				if b == "-" {
					err = s.addLines(ctx, e.stdin)
				} else {
					err = s.add(ctx, b)
				}
				if err != nil {
					return err
				}
			}
			return s.flush(ctx)
		}
	},
}

// sender sends messages to a queue in bounded batches, printing the ids of
// each batch as the server returns them.
type sender struct {
	c     *client.Client
	queue string
	attrs map[string]string
	out   io.Writer

	batch []client.Message
	bytes int
}

// add queues one message, sending the batch first if the message would
// take it over sendBatchBytes, and after if it is full.
func (s *sender) add(ctx context.Context, body string) error {
	if len(s.batch) > 0 && s.bytes+len(body) > sendBatchBytes {
		if err := s.flush(ctx); err != nil {
			return err
		}
	}
	s.batch = append(s.batch, client.Message{Body: body, Attributes: s.attrs})
	s.bytes += len(body)
	if len(s.batch) >= sendBatchMessages {
		return s.flush(ctx)
	}
	return nil
}

// addLines adds each non-blank line of r as one message.
func (s *sender) addLines(ctx context.Context, r io.Reader) error {
	if r == nil {
		return errors.New("queue send: '-' reads stdin, but there is none")
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSuffix(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		if err := s.add(ctx, line); err != nil {
			return err
		}
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		return fmt.Errorf("queue send: stdin line %d is over %d bytes: send a smaller message", n+1, maxLine)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("queue send: read stdin: %w", err)
	}
	return nil
}

func (s *sender) flush(ctx context.Context) error {
	if len(s.batch) == 0 {
		return nil
	}
	ids, err := s.c.Send(ctx, s.queue, s.batch)
	for _, id := range ids {
		if _, werr := fmt.Fprintln(s.out, id); werr != nil {
			return fmt.Errorf("queue send: write ids: %w", werr)
		}
	}
	if err != nil {
		return err
	}
	s.batch, s.bytes = s.batch[:0], 0
	return nil
}

// formatLocal prints t in the local time zone, to the second; "-" for the
// zero time.
func formatLocal(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// formatDuration prints d rounded to what a reader needs: 1µs below a
// millisecond, 10µs below a second, 1ms above; "-" for zero.
func formatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}

// cell makes s safe for one tabwriter cell on one line: tabs and line
// breaks become spaces.
func cell(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}

// cut returns s on one line, cut to at most n runes with "…" marking the cut.
func cut(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// preview returns the start of a payload as printable text: at most n runes,
// anything unprintable (including invalid UTF-8) shown as '.', "…" marking
// a cut.
func preview(b []byte, n int) string {
	rs := make([]rune, 0, n+1)
	for len(b) > 0 && len(rs) <= n {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size <= 1 || !unicode.IsPrint(r) {
			r = '.'
		}
		rs = append(rs, r)
		b = b[size:]
	}
	if len(rs) > n {
		return string(rs[:n-1]) + "…"
	}
	return string(rs)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return cell(s)
}

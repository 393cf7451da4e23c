package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"aloft/internal/archive"
	"aloft/internal/client"
	"aloft/internal/fn"
	"aloft/internal/manifest"
)

// Deploy creates every queue m declares that does not exist yet, then
// deploys every function of m, in order: a directory source is packed as a
// tar.gz while it streams to the server, a .zip or .tar.gz source is
// streamed as it is. It prints one line per queue — its name and whether it
// was created or existed — and one line per deployed function — its name,
// runtime, whether it was created or updated, its URL under baseURL and its
// routes — followed by one indented line per event (schedule, queue or
// subject). It carries on past a queue or function that fails, returning
// the failures joined; it stops early only when ctx ends.
func Deploy(ctx context.Context, c *client.Client, m *manifest.Manifest, baseURL string, out io.Writer) error {
	base := strings.TrimRight(baseURL, "/")
	var errs []error
	for _, q := range m.Queues {
		_, created, err := c.CreateQueue(ctx, q.Name)
		if err != nil {
			errs = append(errs, fmt.Errorf("deploy: %w", err))
			if ctx.Err() != nil {
				return errors.Join(errs...)
			}
			continue
		}
		state := "exists"
		if created {
			state = "created"
		}
		if _, err := fmt.Fprintf(out, "queue %s  %s\n", q.Name, state); err != nil {
			return fmt.Errorf("deploy: write output: %w", err)
		}
	}
	for _, f := range m.Functions {
		got, created, err := deployOne(ctx, c, f)
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		state := "updated"
		if created {
			state = "created"
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%s  %s  %s  %s/fn/%s/", got.Name, got.Runtime, state, base, got.Name)
		if len(got.Routes) > 0 {
			b.WriteString("  " + routesOf(got.Config))
		}
		b.WriteByte('\n')
		for _, ev := range got.Events {
			b.WriteString("  " + describeEvent(ev) + "\n")
		}
		if _, err := io.WriteString(out, b.String()); err != nil {
			return fmt.Errorf("deploy: write output: %w", err)
		}
	}
	return errors.Join(errs...)
}

// describeEvent says what an event is in one line: "schedule rate(5
// minutes)", "queue orders (disabled)", ...
func describeEvent(ev fn.Event) string {
	var s string
	switch ev.Kind() {
	case fn.EventSchedule:
		s = "schedule " + ev.Schedule
		if ev.Timezone != "" {
			s += " timezone " + ev.Timezone
		}
	case fn.EventQueue:
		s = "queue " + ev.Queue
	case fn.EventSubject:
		s = "subject " + ev.Subject
	default:
		s = "event"
	}
	if ev.Qualifier != "" {
		s += " qualifier " + ev.Qualifier
	}
	if ev.Disabled {
		s += " (disabled)"
	}
	return s
}

// errDeployDone stops the packer once the request has ended.
var errDeployDone = errors.New("deploy finished")

func deployOne(ctx context.Context, c *client.Client, f manifest.Function) (*fn.Function, bool, error) {
	st, err := os.Stat(f.Source)
	if err != nil {
		return nil, false, fmt.Errorf("deploy %s: %w", f.Name, err)
	}
	if !st.IsDir() {
		file, err := os.Open(f.Source)
		if err != nil {
			return nil, false, fmt.Errorf("deploy %s: %w", f.Name, err)
		}
		defer file.Close()
		return c.Deploy(ctx, f.Config, file)
	}
	pr, pw := io.Pipe()
	packed := make(chan error, 1)
	go func() {
		err := archive.Pack(pw, f.Source)
		pw.CloseWithError(err)
		packed <- err
	}()
	got, created, err := c.Deploy(ctx, f.Config, pr)
	pr.CloseWithError(errDeployDone) // unblock the packer if the request ended early
	if perr := <-packed; perr != nil && !errors.Is(perr, errDeployDone) {
		return nil, false, fmt.Errorf("deploy %s: %w", f.Name, perr)
	}
	return got, created, err
}

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

// Deploy deploys every function of m, in order: a directory source is packed
// as a tar.gz while it streams to the server, a .zip or .tar.gz source is
// streamed as it is. It prints one line per deployed function to out — its
// name, runtime, whether it was created or updated, its URL under baseURL
// and its routes — and carries on past a function that fails, returning the
// failures joined.
func Deploy(ctx context.Context, c *client.Client, m *manifest.Manifest, baseURL string, out io.Writer) error {
	base := strings.TrimRight(baseURL, "/")
	var errs []error
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
		line := fmt.Sprintf("%s  %s  %s  %s/fn/%s/", got.Name, got.Runtime, state, base, got.Name)
		if len(got.Routes) > 0 {
			line += "  " + strings.Join(got.Routes, ", ")
		}
		if _, err := fmt.Fprintln(out, line); err != nil {
			return fmt.Errorf("deploy: write output: %w", err)
		}
	}
	return errors.Join(errs...)
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

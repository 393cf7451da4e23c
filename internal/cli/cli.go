// Package cli implements the client verbs of the aloft command — deploy,
// invoke (sync or --async), ls, get, rm, logs, publish, versions, alias,
// invocations, dlq, schedules, triggers and queue — as a client of a running
// server's REST API. cmd/aloft calls Run for them; `aloft dev` reuses
// Deploy. Verbs that take a subcommand (alias set, dlq ls, queue send, ...)
// are listed in the command table under their two-word names.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"

	"aloft/internal/client"
)

// DefaultURL is the server address used when neither --url nor ALOFT_URL is
// set.
const DefaultURL = "http://127.0.0.1:8080"

// command is one client verb.
type command struct {
	name string
	// args is the positional part of the usage line.
	args    string
	summary string
	// min and max bound the number of positional arguments (max -1: any).
	min, max int
	// flags registers the verb's own flags; run reads them through the
	// closure it returns.
	setup func(fs *flag.FlagSet) func(ctx context.Context, e *env, args []string) error
}

// env is what a verb runs with.
type env struct {
	c       *client.Client
	baseURL string
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
}

var commands []*command

func init() {
	commands = []*command{
		deployCmd, invokeCmd, lsCmd, getCmd, rmCmd, logsCmd, publishCmd, versionsCmd,
		aliasSetCmd, aliasLsCmd, aliasRmCmd,
		invocationsCmd, dlqLsCmd, dlqRedriveCmd, schedulesCmd, triggersLsCmd,
		queueCreateCmd, queueLsCmd, queueRmCmd, queueSendCmd,
	}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// subcommands returns the subcommands of the group verb (alias: set, ls,
// rm), or none when verb takes no subcommand.
func subcommands(verb string) []string {
	var subs []string
	for _, c := range commands {
		if sub, ok := strings.CutPrefix(c.name, verb+" "); ok {
			subs = append(subs, sub)
		}
	}
	return subs
}

// orList joins words as "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// IsClientVerb reports whether verb is one of the verbs Run handles.
func IsClientVerb(verb string) bool {
	if strings.Contains(verb, " ") || verb == "" {
		return false
	}
	return lookup(verb) != nil || len(subcommands(verb)) > 0
}

// Usage writes the list of client verbs, for the binary's overall help.
func Usage(w io.Writer) {
	fmt.Fprintln(w, "Client commands (talk to a running server; --url or ALOFT_URL, --token or ALOFT_TOKEN):")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-32s %s\n", strings.TrimSpace(c.name+" "+c.args), c.summary)
	}
	fmt.Fprintln(w, "Run 'aloft COMMAND -h' for a command's flags.")
}

// Run runs one client verb. args exclude the program name, e.g.
// ["deploy", "./examples"]; global flags (--url, --token) may come before
// the verb or among its arguments, and flags may follow positional
// arguments. Run returns flag.ErrHelp after printing help for -h, and an
// error of one line saying what to fix for any mistake; the caller prints
// it and exits 1.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	// The token's default stays out of the flag so help never prints it.
	url, token := os.Getenv("ALOFT_URL"), ""
	if url == "" {
		url = DefaultURL
	}
	global := flag.NewFlagSet("aloft", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	global.StringVar(&url, "url", url, "server URL (env ALOFT_URL)")
	global.StringVar(&token, "token", token, "API token (default $ALOFT_TOKEN)")
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			Usage(stderr)
			return err
		}
		return fmt.Errorf("%v: run 'aloft -h' for usage", err)
	}
	args = global.Args()
	if len(args) == 0 {
		Usage(stderr)
		return errors.New("no command given: run 'aloft -h' for the list")
	}
	name := args[0]
	args = args[1:]
	if subs := subcommands(name); len(subs) > 0 {
		if len(args) == 0 || strings.HasPrefix(args[0], "-") && args[0] != "-h" && args[0] != "--help" {
			return fmt.Errorf("%s needs a subcommand: %s (run 'aloft %s -h')", name, orList(subs), name)
		}
		if args[0] == "-h" || args[0] == "--help" {
			groupUsage(stderr, name)
			return flag.ErrHelp
		}
		name += " " + args[0]
		args = args[1:]
	}
	cmd := lookup(name)
	if cmd == nil {
		if group, sub, ok := strings.Cut(name, " "); ok {
			return fmt.Errorf("unknown %s subcommand %q: use %s", group, sub, orList(subcommands(group)))
		}
		return fmt.Errorf("unknown command %q: run 'aloft -h' for the list", name)
	}

	fs := flag.NewFlagSet("aloft "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&url, "url", url, "server URL (env ALOFT_URL)")
	var verbToken string
	fs.StringVar(&verbToken, "token", "", "API token (default $ALOFT_TOKEN)")
	run := cmd.setup(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			cmd.usage(stderr, fs)
			return err
		}
		return fmt.Errorf("%s: %v (run 'aloft %s -h')", name, err, name)
	}
	if len(pos) < cmd.min || cmd.max >= 0 && len(pos) > cmd.max {
		return fmt.Errorf("%s: %s (usage: aloft %s %s)", name, countProblem(cmd, pos), name, cmd.args)
	}
	for _, t := range []string{verbToken, token, os.Getenv("ALOFT_TOKEN")} {
		if t != "" {
			token = t
			break
		}
	}
	e := &env{c: client.New(url, token), baseURL: url, stdin: stdin, stdout: stdout, stderr: stderr}
	if err := run(ctx, e, pos); err != nil {
		return withHint(err, url)
	}
	return nil
}

func countProblem(cmd *command, pos []string) string {
	if len(pos) < cmd.min {
		want := strings.Fields(strings.NewReplacer("[", "", "]", "").Replace(cmd.args))
		if len(pos) < len(want) {
			return "missing " + want[len(pos)]
		}
		return "missing arguments"
	}
	return fmt.Sprintf("unexpected argument %q", pos[cmd.max])
}

func (c *command) usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: aloft %s %s [flags]\n\n%s\n\nflags:\n", c.name, c.args, c.summary)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// groupUsage lists the subcommands of the group verb.
func groupUsage(w io.Writer, verb string) {
	fmt.Fprintln(w, "usage:")
	for _, c := range commands {
		if strings.HasPrefix(c.name, verb+" ") {
			fmt.Fprintf(w, "  aloft %-28s %s\n", strings.TrimSpace(c.name+" "+c.args), c.summary)
		}
	}
}

// parseArgs parses flags wherever they appear among the positional
// arguments; everything after "--" is positional.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if consumed := args[:len(args)-len(rest)]; len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// withHint adds what to check to errors whose cause is the setup, not the
// command: no server at the URL, or a missing or wrong token (unless the
// server's message already says so).
func withHint(err error, url string) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return fmt.Errorf("%w (is the server running at %s? set --url or ALOFT_URL)", err, url)
	}
	var ae *client.APIError
	if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized && !strings.Contains(ae.Message, "ALOFT_TOKEN") {
		return fmt.Errorf("%w (set --token or ALOFT_TOKEN)", err)
	}
	return err
}

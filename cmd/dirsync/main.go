// Command dirsync decides who may sign in, and with which plan, from
// directory group memberships, and publishes the decisions to the access
// cache the sign-in service reads. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/directory/sources"
)

// Exit codes (a public contract).
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// env is what a command gets from the process.
type env struct {
	getenv func(string) string
	stdout io.Writer
	stderr io.Writer
	// deadlines, when set, replace the pass deadlines (tests).
	deadlines *passDeadlines
	// kinds are the directory source kinds of the build (the table in
	// package sources): config loading and account wiring use only these.
	kinds []directory.Kind
}

// usageError marks errors that exit with code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e env, args []string) error
}

func commands() []command {
	return []command{
		{"run", "run the daemon: scheduled syncs and the HTTP API", cmdRun},
		{"sync", "run a one-off sync (or a dry run) and print per-account counts", cmdSync},
		{"release", "publish a sync the safeguard held (a forced full sync of one account)", cmdRelease},
		{"check", "print the decision for an email, read as the sign-in service reads it", cmdCheck},
		{"status", "print per-account sync status from a running daemon", cmdStatus},
		{"users", "manage users of console accounts (invite, accept, assign, remove, suspend, list)", cmdUsers},
		{"accounts", "manage accounts through the accounts API (list, show, apply, delete, groups, bindings, tokens)", cmdAccounts},
		{"validate", "check a config file without touching any server", cmdValidate},
		{"healthcheck", "exit 0 when the daemon's /healthz answers 200 (for container health checks)", cmdHealthcheck},
		{"version", "print the version", cmdVersion},
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return runEnv(ctx, env{getenv: getenv, stdout: stdout, stderr: stderr, kinds: sources.Kinds()}, args)
}

// runEnv runs the command args name in e and returns the exit code.
func runEnv(ctx context.Context, e env, args []string) int {
	stderr := e.stderr
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, e, args[1:])
		switch {
		case err == nil:
			return exitOK
		case errors.Is(err, flag.ErrHelp):
			return exitOK
		case errors.As(err, new(usageError)):
			fmt.Fprintf(stderr, "dirsync %s: %v\n", c.name, err)
			return exitUsage
		default:
			fmt.Fprintf(stderr, "dirsync %s: %v\n", c.name, err)
			return exitRuntime
		}
	}
	fmt.Fprintf(stderr, "dirsync: unknown command %q\n\n", args[0])
	printUsage(stderr)
	return exitUsage
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: dirsync <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'dirsync <command> -h' for a command's flags. --config defaults to $DIRSYNC_CONFIG.")
	fmt.Fprintln(w, "Exit codes: 0 ok, 1 runtime failure, 2 usage or config error.")
}

// newFlags returns a flag set whose errors and help go to e.stderr.
func newFlags(e env, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("dirsync "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: dirsync %s %s\n\nflags:\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags that may come before or after positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err}
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

func configFlag(fs *flag.FlagSet, e env) *string {
	return fs.String("config", e.getenv("DIRSYNC_CONFIG"), "config file (default $DIRSYNC_CONFIG)")
}

func cmdVersion(_ context.Context, e env, args []string) error {
	fs := newFlags(e, "version", "")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "dirsync", version)
	return nil
}

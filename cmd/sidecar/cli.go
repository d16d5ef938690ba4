package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// exitError carries the exit code of a failure that is not the command line's fault.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// failed marks err as the command's own failure (exit 1), not a usage error (exit 2).
func failed(err error) error { return &exitError{1, err} }

// execute runs the command line args and returns the process's exit code: 0, 1 when the
// command failed, 2 when the command line is wrong (unknown command or flag, missing value).
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(longFlags(root, args))
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	if errors.Is(err, errQuiet) {
		return 1
	}
	if e := (*exitError)(nil); errors.As(err, &e) && e.code != 2 {
		fmt.Fprintf(stderr, "%s: %v\n", cmd.CommandPath(), err)
		return e.code
	}
	fmt.Fprintf(stderr, "%s: %v\nusage: %s\nRun '%s --help' for more.\n", cmd.CommandPath(), err, cmd.UseLine(), cmd.CommandPath())
	return 2
}

// errQuiet fails with exit 1 after the command has said why itself.
var errQuiet = &exitError{1, errors.New("failed")}

// usageError is a wrong command line found by a command itself.
func usageError(format string, a ...any) error {
	return &exitError{2, fmt.Errorf(format, a...)}
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "sidecar",
		Short: "Make a legacy app's unary gRPC calls durable through Restate",
		Long: `sidecar makes a legacy app's unary gRPC calls durable through Restate: it accepts the app's
outbound calls (explicit, proxy-env or iptables interception) and serves the app to Restate
as a deployment. Flags are written --flag; -flag, as in earlier versions, works too.`,
		// Without a command there is nothing to do: say so, as for an unknown one.
		RunE: func(cmd *cobra.Command, args []string) error {
			return usageError("a command is required")
		},
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	// Flag errors are the command line's fault (exit 2) like any error cobra makes itself.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return err })
	root.AddCommand(runCmd(), checkCmd(), waitCmd(), invocationsCmd(), injectCmd(), injectorCmd(), iptablesCmd(), statusCmd(), versionCmd())
	return root
}

// longFlags rewrites the single-dash long flags of Go's flag package (-config FILE,
// -addr=X), which earlier versions of this command took, to pflag's --config FILE: pflag
// would read -config as the shorthands -c -o -n .... It follows the command path through
// args, so only names that are long flags of the command reached are rewritten, and skips
// flag values, which may start with a dash.
func longFlags(root *cobra.Command, args []string) []string {
	cmd := root
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			for _, sub := range cmd.Commands() {
				if sub.Name() == a || sub.HasAlias(a) {
					cmd = sub
					break
				}
			}
			out = append(out, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		cmd.InitDefaultHelpFlag() // cobra adds --help only when it runs the command
		f := lookupFlag(cmd, name)
		if !strings.HasPrefix(a, "--") && (f == nil || len(name) == 1) {
			// A shorthand (-h) or not one of ours: pflag reports it as it is.
			out = append(out, a)
			continue
		}
		out = append(out, "--"+strings.TrimLeft(a, "-"))
		if f != nil && !hasValue && f.NoOptDefVal == "" && i+1 < len(args) {
			i++
			out = append(out, args[i])
		}
	}
	return out
}

// lookupFlag finds a long flag of cmd, its own or inherited from its parents.
func lookupFlag(cmd *cobra.Command, name string) *pflag.Flag {
	for _, fs := range []*pflag.FlagSet{cmd.Flags(), cmd.PersistentFlags(), cmd.InheritedFlags()} {
		if f := fs.Lookup(string(fs.GetNormalizeFunc()(fs, name))); f != nil { // aliases too
			return f
		}
	}
	return nil
}

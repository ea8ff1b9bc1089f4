// Package cli holds gpugate's commands, one file and one Main-style type each: serve.go (the
// gateway), migrate.go, seed.go, worker.go, users.go (users import), dev.go (dev token, and
// the dev issuer serve starts) and version.go. Around them: flags.go (flags that fall back to
// environment variables), database.go (the store a command opens, PostgreSQL's own cluster in
// zero-config mode), evidence.go (worker limits and retention), jobs.go (serve's background
// job) and debug.go (the profiler). The gpugate command (server.go at the repository root)
// only calls Main.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const usage = `gpugate: GraphQL explorer and management gateway for a decentralized GPU network.

Usage:
  gpugate [serve] [flags]   run the gateway (the default command)
  gpugate migrate [flags]   apply the embedded database migrations and exit
  gpugate seed [flags]      load deterministic demo data into an empty database and exit
  gpugate worker [flags]    run the bundled GPU worker agent (NVML, or --simulate dgxh100)
  gpugate users import      link legacy accounts to OIDC identities (CSV or legacy table)
  gpugate dev token USER    print an access token for a demo user of a dev-mode gateway
  gpugate attest verify     verify a GPU's confidential-computing evidence offline (exit 0: verified)
  gpugate version           print the version, commit and Go version this binary was built from
  gpugate help [command]    show help for a command

Without DATABASE_URL every command uses the gateway's own PostgreSQL under --data-dir, started
from the server binaries on this machine (dev mode: demo data, GraphiQL, introspection).
Every flag can also be set by the environment variable named in its help.
Run 'gpugate <command> --help' for the flags of a command.
`

// A command is one gpugate subcommand, shaped like the Main of wtf's cmd/wtfd: ParseFlags reads
// the command line (the environment fills the flags it left unset) and opens nothing, Run does
// the work until it is done or ctx is cancelled by SIGINT/SIGTERM, and Close releases whatever
// Run opened, whether or not Run failed.
type command interface {
	ParseFlags(args []string) error
	Run(ctx context.Context) error
	Close() error
}

var commands = map[string]func() command{
	"serve":   func() command { return new(ServeMain) },
	"migrate": func() command { return new(MigrateMain) },
	"seed":    func() command { return new(SeedMain) },
	"dev":     func() command { return new(DevTokenMain) },
	"users":   func() command { return new(UsersImportMain) },
	"worker":  func() command { return new(WorkerMain) },
	"version": func() command { return new(VersionMain) },
	"attest":  func() command { return new(AttestMain) },
}

// exitCode is an error that carries the process's exit status and has already been reported.
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

// Main runs the command named by args (os.Args[1:]; serve when none is named) and returns the
// process's exit status: 0 on success and after --help, 1 when the command failed (its error
// printed to stderr), 2 for an unknown command.
func Main(args []string) int {
	name := "serve"
	switch {
	case len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help"):
		fmt.Print(usage)
		return 0
	case len(args) > 0 && args[0] == "help":
		if len(args) == 1 {
			fmt.Print(usage)
			return 0
		}
		name, args = args[1], []string{"--help"}
	case len(args) > 0 && !strings.HasPrefix(args[0], "-"):
		name, args = args[0], args[1:]
	}
	newCommand, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "gpugate: unknown command %q\n\n%s", name, usage)
		return 2
	}
	err := run(newCommand(), args)
	var code exitCode
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &code):
		return int(code)
	}
	fmt.Fprintln(os.Stderr, "gpugate:", err)
	return 1
}

// run parses cmd's flags, then runs it until SIGINT or SIGTERM and closes it.
func run(cmd command, args []string) (err error) {
	if err := cmd.ParseFlags(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer func() {
		if cerr := cmd.Close(); err == nil {
			err = cerr
		}
	}()
	return cmd.Run(ctx)
}

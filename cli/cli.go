// Package cli holds gpugate's commands, one file each: serve (the gateway), migrate, seed,
// worker, users import and dev token, with the environment-backed flags they share
// (flags.go), the database they open (database.go), the gateway's background jobs (jobs.go)
// and its profiler (debug.go). The gpugate command (server.go at the repository root) only
// calls Main.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/gpugate/gpugate/worker"
)

const usage = `gpugate: GraphQL explorer and management gateway for a decentralized GPU network.

Usage:
  gpugate [serve] [flags]   run the gateway (the default command)
  gpugate migrate [flags]   apply the embedded database migrations and exit
  gpugate seed [flags]      load deterministic demo data into an empty database and exit
  gpugate worker [flags]    run the bundled GPU worker agent (NVML, or --simulate dgxh100)
  gpugate users import      link legacy accounts to OIDC identities (CSV or legacy table)
  gpugate dev token USER    print an access token for a demo user of a dev-mode gateway
  gpugate help [command]    show help for a command

Without DATABASE_URL every command uses the gateway's own PostgreSQL under --data-dir, started
from the server binaries on this machine (dev mode: demo data, GraphiQL, introspection).
Every flag can also be set by the environment variable named in its help.
Run 'gpugate <command> --help' for the flags of a command.
`

var commands = map[string]func(args []string) error{
	"serve":   runServe,
	"migrate": runMigrate,
	"seed":    runSeed,
	"dev":     runDev,
	"users":   runUsers,
	"worker": func(args []string) error {
		os.Exit(worker.Main(args))
		return nil
	},
}

func Main() {
	args := os.Args[1:]
	cmd := "serve"
	switch {
	case len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help"):
		fmt.Print(usage)
		return
	case len(args) > 0 && args[0] == "help":
		if len(args) == 1 {
			fmt.Print(usage)
			return
		}
		cmd, args = args[1], []string{"--help"}
	case len(args) > 0 && !strings.HasPrefix(args[0], "-"):
		cmd, args = args[0], args[1:]
	}
	run, ok := commands[cmd]
	if !ok {
		fmt.Fprintf(os.Stderr, "gpugate: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	err := run(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, "gpugate:", err)
		os.Exit(1)
	}
}

package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// envFlags is a flag set whose flags fall back to environment variables.
type envFlags struct {
	*flag.FlagSet
	env      map[string]string // flag name -> variable
	explicit map[string]bool   // flags set by the command line or the environment
}

func newFlags(name, summary string) *envFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	f := &envFlags{FlagSet: fs, env: map[string]string{}}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: gpugate %s [flags]\n\n%s\n\nFlags:\n", name, summary)
		fs.PrintDefaults()
	}
	return f
}

func (f *envFlags) bind(name, env string) {
	f.env[name] = env
	fl := f.Lookup(name)
	fl.Usage += " (env " + env + ")"
}

func (f *envFlags) String(name, env, value, usage string) *string {
	p := f.FlagSet.String(name, value, usage)
	f.bind(name, env)
	return p
}

func (f *envFlags) Int(name, env string, value int, usage string) *int {
	p := f.FlagSet.Int(name, value, usage)
	f.bind(name, env)
	return p
}

func (f *envFlags) Bool(name, env string, value bool, usage string) *bool {
	p := f.FlagSet.Bool(name, value, usage)
	f.bind(name, env)
	return p
}

func (f *envFlags) Duration(name, env string, value time.Duration, usage string) *time.Duration {
	p := f.FlagSet.Duration(name, value, usage)
	f.bind(name, env)
	return p
}

// parse reads the command line, then the environment for flags the command line left unset.
func (f *envFlags) parse(args []string) error {
	if err := parseFlags(f.FlagSet, args); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see gpugate %s --help)", f.Arg(0), f.Name())
	}
	set := map[string]bool{}
	f.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	for name, env := range f.env {
		v, ok := os.LookupEnv(env)
		if !ok || set[name] {
			continue
		}
		if err := f.Set(name, v); err != nil {
			return fmt.Errorf("environment %s=%q: %w", env, v, err)
		}
		set[name] = true
	}
	f.explicit = set
	return nil
}

// dbFlags are shared by every command that needs the database.
type dbFlags struct {
	url, dataDir, pgBin *string
	maxConns            *int
	roles               roleFlags // cli/roles.go
}

func addDBFlags(f *envFlags) dbFlags {
	return dbFlags{
		url: f.String("database-url", "DATABASE_URL", "",
			"PostgreSQL URL; empty starts the gateway's own PostgreSQL under --data-dir (dev mode)"),
		dataDir: f.String("data-dir", "GPUGATE_DATA_DIR", defaultDataDir(),
			"where the gateway's own PostgreSQL keeps its data (reused on the next start)"),
		pgBin: f.String("pg-bin-dir", "GPUGATE_PG_BIN_DIR", "",
			"directory holding initdb and postgres (default: PATH, then /usr/lib/postgresql/*/bin)"),
		maxConns: f.Int("db-max-conns", "GPUGATE_DB_MAX_CONNS", 20, "maximum open database connections"),
		roles:    addRoleFlags(f),
	}
}

func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/gpugate"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "gpugate")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "gpugate")
	}
	return filepath.Join(os.TempDir(), "gpugate")
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// parseFlags parses args with fs. The usage that --help asks for goes to stdout (it is the
// command's output, and the exit status is 0); a parse error and the usage after it go to
// stderr. It returns fs.Parse's error: flag.ErrHelp after --help.
func parseFlags(fs *flag.FlagSet, args []string) error {
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	err := fs.Parse(args)
	fs.SetOutput(nil)
	out := os.Stderr
	if errors.Is(err, flag.ErrHelp) {
		out = os.Stdout
	}
	_, _ = buf.WriteTo(out)
	return err
}

// isHelp reports whether arg asks for help, as the flag package understands it.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--h", "--help":
		return true
	}
	return false
}

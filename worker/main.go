package worker

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/gpugate/gpugate/attest"
)

const usageText = `Usage: gpugate worker [flags]

Runs the gpugate worker on this GPU host: enrolls it under its owner's account with a one-time
token, proves its GPUs against the gateway's challenges and sends heartbeats, until SIGTERM or
SIGINT. The device key lives in --key-file (created, mode 0600, on first run).

  gpugate worker --server https://gateway.example --enroll TOKEN    first run: enroll, then keep going
  gpugate worker --server https://gateway.example                   later runs
  gpugate worker --server http://127.0.0.1:8080 --simulate dgxh100 --enroll TOKEN --once

Exit status: 0 when the proof passed (--once) or after a clean stop; 1 on failure or a flagged
proof (the reasons are printed); 2 for bad flags.

Flags:
`

// Main runs `gpugate worker` with args (the arguments after "worker") and returns the exit
// status: 0 for a passed proof (--once) or a clean stop on SIGTERM/SIGINT, 1 for a failure or
// a flagged proof, 2 for bad flags.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return mainContext(ctx, args, nil, os.Stdout, os.Stderr)
}

// mainContext is Main with its context, options hook and output streams injectable (tests).
func mainContext(ctx context.Context, args []string, tweak func(*Options), stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(name, def string) string {
		if v, ok := os.LookupEnv(name); ok {
			return v
		}
		return def
	}
	var o Options
	fs.StringVar(&o.Server, "server", env("GPUGATE_SERVER", "http://127.0.0.1:8080"), "gateway URL; /graphql is appended unless it has a path; https:// unless the host is loopback (127.0.0.0/8, ::1, localhost) or --insecure is given (env GPUGATE_SERVER)")
	fs.BoolVar(&o.Insecure, "insecure", false, "allow an http:// --server that is not loopback, on a lab network you trust: the enrollment token and every request cross it in clear text")
	fs.StringVar(&o.KeyFile, "key-file", env("GPUGATE_WORKER_KEY_FILE", defaultKeyFile()), "the device key and enrollment state, JSON, mode 0600 (env GPUGATE_WORKER_KEY_FILE)")
	fs.StringVar(&o.EnrollToken, "enroll", env("GPUGATE_ENROLL_TOKEN", ""), "one-time enrollment `TOKEN` from the device's owner (createEnrollmentToken); needed on the first run only (env GPUGATE_ENROLL_TOKEN)")
	fs.StringVar(&o.Simulate, "simulate", env("GPUGATE_SIMULATE", ""), "simulate the GPUs with go-nvml's mock servers instead of the driver: `PROFILE` is one of "+strings.Join(ProfileNames(), ", ")+" (env GPUGATE_SIMULATE)")
	fs.StringVar(&o.CloneUUIDsFrom, "clone-uuids-from", "", "with --simulate: report the GPU UUIDs of the simulated host whose key file is `FILE` (a counterfeit; the gateway flags this device, the later claimant, not the original)")
	fs.StringVar(&o.Region, "region", env("GPUGATE_REGION", DefaultRegion), "region shown in the public listing, 1..64 characters (env GPUGATE_REGION)")
	fs.StringVar(&o.Name, "name", env("GPUGATE_DEVICE_NAME", ""), "public device name at enrollment, 1..64 characters; by default none is sent and the gateway picks a random one (the host name stays owner-only) (env GPUGATE_DEVICE_NAME)")
	fs.BoolVar(&o.Once, "once", false, "enroll if needed, prove and heartbeat once, then exit: 0 if the proof passed, 1 if not")
	fs.DurationVar(&o.ReproveEvery, "reprove-every", 6*time.Hour, "how often to prove the GPUs again (without --once)")
	fs.DurationVar(&o.RequestTimeout, "request-timeout", 30*time.Second, "timeout of each request to the gateway")
	fs.DurationVar(&o.Backoff.Initial, "retry-initial", time.Second, "first pause before retrying an unreachable gateway (doubles, with jitter)")
	fs.DurationVar(&o.Backoff.Max, "retry-max", 2*time.Minute, "longest pause between retries")
	fs.DurationVar(&o.GiveUpAfter, "give-up-after", 0, "stop retrying an unreachable gateway after this long; 0 means never (with --once: 2m)")
	fs.IntVar(&o.MaxDifficulty, "max-difficulty", MaxDifficultyLimit, fmt.Sprintf("refuse a challenge asking for more proof-of-work bits than this, 1..%d (can be lowered, not raised)", MaxDifficultyLimit))
	fs.DurationVar(&o.MaxChallengeTTL, "max-challenge-ttl", MaxChallengeTTLLimit, fmt.Sprintf("work at most this long on one challenge, however late it expires; at most %v (can be lowered, not raised)", MaxChallengeTTLLimit))
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	fs.Usage = func() { printUsage(fs) }

	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" || a == "--h" {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gpugate worker: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "gpugate worker: --log-level %q: want debug, info, warn or error\n", *logLevel)
		return 2
	}
	hopts := &slog.HandlerOptions{Level: level}
	switch *logFormat {
	case "text":
		o.Logger = slog.New(slog.NewTextHandler(stderr, hopts))
	case "json":
		o.Logger = slog.New(slog.NewJSONHandler(stderr, hopts))
	default:
		fmt.Fprintf(stderr, "gpugate worker: --log-format %q: want text or json\n", *logFormat)
		return 2
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	if o.Once && !explicit["give-up-after"] {
		o.GiveUpAfter = 2 * time.Minute
	}
	if o.Simulate != "" {
		if _, ok := LookupProfile(o.Simulate); !ok {
			fmt.Fprintf(stderr, "gpugate worker: unknown --simulate profile %q; choose one of %s\n", o.Simulate, strings.Join(ProfileNames(), ", "))
			return 2
		}
	}
	if tweak != nil {
		tweak(&o)
	}
	if o.MaxDifficulty < 1 || o.MaxDifficulty > MaxDifficultyLimit {
		fmt.Fprintf(stderr, "gpugate worker: --max-difficulty %d: want 1..%d (it can be lowered, not raised)\n", o.MaxDifficulty, MaxDifficultyLimit)
		return 2
	}
	if o.MaxChallengeTTL <= 0 || o.MaxChallengeTTL > MaxChallengeTTLLimit {
		fmt.Fprintf(stderr, "gpugate worker: --max-challenge-ttl %v: want more than 0 and at most %v (it can be lowered, not raised)\n", o.MaxChallengeTTL, MaxChallengeTTLLimit)
		return 2
	}
	if _, _, err := graphqlEndpoint(o.Server, o.Insecure); err != nil {
		fmt.Fprintln(stderr, "gpugate worker:", err)
		return 2
	}

	err := Run(ctx, o)
	var flagged *FlaggedError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &flagged):
		level := flagged.Level
		if level == "" { // a gateway from before verification levels
			level = flagged.Verification
		}
		fmt.Fprintf(stderr, "gpugate worker: the proof was FLAGGED (device level %s):\n", level)
		for _, r := range flagged.Reasons {
			fmt.Fprintf(stderr, "  %s", r)
			if d := attest.Reason(r).Description(); d != "" {
				fmt.Fprintf(stderr, ": %s", d)
			}
			fmt.Fprintln(stderr)
		}
		return 1
	default:
		fmt.Fprintln(stderr, "gpugate worker:", err)
		return 1
	}
}

func printUsage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprint(w, usageText)
	fs.PrintDefaults()
	fmt.Fprintln(w, "\nSimulation profiles (--simulate):")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, p := range Profiles {
		fmt.Fprintf(tw, "  %s\t%s\n", p.Name, p.Description)
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "\n  Any profile plus --clone-uuids-from OTHER-KEY-FILE: the GPU UUIDs of another simulated host.")
	fmt.Fprintln(w, "  The -cc profiles sign each GPU's attestation report under gpugate's simulation CA, whose key is")
	fmt.Fprintln(w, "  public: they are ATTESTED only by a gateway that trusts that CA (zero-config dev mode, or explicit")
	fmt.Fprintln(w, "  configuration), and prove nothing about hardware. See docs/worker.md.")
}

// defaultKeyFile is $XDG_CONFIG_HOME/gpugate/worker-key.json (~/.config/... on Linux), or
// ./gpugate-worker-key.json when there is no config directory.
func defaultKeyFile() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "gpugate-worker-key.json"
	}
	return filepath.Join(dir, "gpugate", "worker-key.json")
}

// Command soak drives a dev-mode gateway with a bounded mixed load for a long time and reports,
// every interval and at the end, throughput, p50/p99 and errors per kind of request, and the
// gateway's memory and PostgreSQL connections over time, with a verdict: memory flat after
// warm-up, and no errors. bench/soak.sh builds and starts everything; docs/soak.md explains the
// mix and how to read the report.
//
//	soak enroll --server URL --devices 6000 --out fleet.json    # once, on a gateway with relaxed limits
//	soak run --server URL --fleet fleet.json --duration 10m     # on a gateway with the shipped limits
//
// enroll signs in as the demo users (the dev issuer), enrolls the simulated workers round-robin
// under them (each an Ed25519 key and an 8 × H100 host) and proves each once, as a worker does
// after enrolling, and writes the fleet (ids, keys, hosts, owners) to a file. run loads it and
// offers, open loop (each latency counts from when its request was due), the mix of
// docs/soak.md: heartbeats and proofs of every worker, explorer reads from anonymous clients,
// and owners' renames and pauses/resumes of their own devices.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gpugate/gpugate/bench/internal/benchkit"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: soak enroll|run [flags] (see -h of each)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "enroll":
		err = enrollMain(ctx, os.Args[2:])
	case "run":
		err = runMain(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: enroll or run", os.Args[1])
	}
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// fleetDevice is one simulated worker of the fleet file.
type fleetDevice struct {
	benchkit.Device
	Owner string `json:"owner"`
}

type fleet struct {
	Devices []*fleetDevice `json:"devices"`
}

func enrollMain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("soak enroll", flag.ContinueOnError)
	server := fs.String("server", "http://127.0.0.1:8080", "dev-mode gateway")
	n := fs.Int("devices", 6000, "simulated workers to enroll")
	users := fs.String("users", "alice,bob", "demo users who own the workers, round-robin")
	conc := fs.Int("concurrency", 8, "enrollments at once")
	out := fs.String("out", "fleet.json", "where to write the fleet (it holds private keys: a scratch file)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	owners := strings.Split(*users, ",")
	tokens := map[string]string{}
	for _, u := range owners {
		t, err := benchkit.DevToken(ctx, *server, u)
		if err != nil {
			return fmt.Errorf("sign in as %s: %w", u, err)
		}
		tokens[u] = t
	}
	c := benchkit.NewClient(*server, *conc*2)
	f := fleet{Devices: make([]*fleetDevice, *n)}
	start := time.Now()
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= *n || ctx.Err() != nil {
					return
				}
				owner := owners[i%len(owners)]
				err := func() error {
					dv, err := c.Enroll(ctx, tokens[owner], i, regions[i%len(regions)])
					if err != nil {
						return err
					}
					id, nonce, difficulty, err := c.Challenge(ctx, dv)
					if err != nil {
						return fmt.Errorf("first challenge: %w", err)
					}
					vars, err := benchkit.Prepare(ctx, dv, id, nonce, difficulty)
					if err != nil {
						return err
					}
					var res benchkit.ProofResult
					if err := c.Do(ctx, "", dv.PrivateKey(), dv.ID, benchkit.SubmitProofQuery, vars, &res); err != nil {
						return fmt.Errorf("first proof: %w", err)
					}
					if v := res.SubmitProof.Verdict; v != "PASSED" {
						return fmt.Errorf("first proof: verdict %s %v", v, res.SubmitProof.Reasons)
					}
					f.Devices[i] = &fleetDevice{Device: *dv, Owner: owner}
					return nil
				}()
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("worker %d: %w", i, err)
					}
					mu.Unlock()
					next.Store(int64(*n)) // stop the others
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	raw, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, raw, 0o600); err != nil {
		return err
	}
	fmt.Printf("enrolled and proved %d workers (owners %s) in %s\n", *n, *users, time.Since(start).Round(time.Millisecond))
	return nil
}

// regions spread the fleet over a few regions, so the explorer's region filter has choices.
var regions = []string{"eu-west", "us-east", "us-west", "ap-south"}

func loadFleet(path string) (*fleet, error) {
	raw, err := os.ReadFile(path) // #nosec G304 -- the operator's own --fleet file
	if err != nil {
		return nil, err
	}
	var f fleet
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(f.Devices) == 0 {
		return nil, fmt.Errorf("%s: no devices", path)
	}
	for i, d := range f.Devices {
		if d == nil || d.ID == "" || len(d.Key) == 0 || d.Owner == "" {
			return nil, fmt.Errorf("%s: device %d is incomplete", path, i)
		}
	}
	return &f, nil
}

// Command ingest measures the worker ingestion path of a running gateway over HTTP: heartbeats
// and proofs accepted per second, with signature checks, proof verification and the database
// write, at N concurrent simulated workers. It enrolls its own devices through the dev-mode
// sign-in (`gpugate serve` with its embedded database), so point it at a dev gateway:
//
//	go run ./bench/ingest --server http://127.0.0.1:8080 --workers 64 --duration 20s
//
// Proofs are solved before the timed phase (the load generator shares the machine's cores; the
// server's verification cost does not depend on the difficulty: one hash and one signature).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gpugate/gpugate/bench/internal/benchkit"
)

func main() {
	server := flag.String("server", "http://127.0.0.1:8080", "dev-mode gateway")
	workers := flag.Int("workers", 64, "concurrent simulated workers")
	duration := flag.Duration("duration", 20*time.Second, "length of each timed phase")
	proofsPer := flag.Int("proofs-per-worker", 400, "proofs each worker prepares for the proof phase")
	user := flag.String("user", "alice", "demo user who owns the benchmark devices")
	hbRate := flag.Int("heartbeat-rate", 0, "offered heartbeats/s for a second, open-loop heartbeat phase (0: skip)")
	proofRate := flag.Int("proof-rate", 0, "offered proofs/s for a second, open-loop proof phase (0: skip)")
	flag.StringVar(&profileURL, "debug-url", "", "the gateway's --debug-listen URL: record a CPU profile of each proof phase")
	flag.StringVar(&profileOut, "profile-out", "ingest", "file prefix of the CPU profiles (with --debug-url)")
	flag.IntVar(&gatewayPID, "gateway-pid", 0, "the gateway's process id: report the CPU time it and its PostgreSQL spend per request")
	flag.Parse()
	rates = [2]int{*hbRate, *proofRate}
	if err := run(*server, *user, *workers, *duration, *proofsPer); err != nil {
		fmt.Fprintln(os.Stderr, "ingest:", err)
		os.Exit(1)
	}
}

func run(server, user string, n int, d time.Duration, proofsPer int) error {
	ctx := context.Background()
	c := benchkit.NewClient(server, n*2)
	token, err := benchkit.DevToken(ctx, server, user)
	if err != nil {
		return err
	}

	start := time.Now()
	devices := make([]*benchkit.Device, n)
	for i := range devices {
		if devices[i], err = c.Enroll(ctx, token, i, "bench"); err != nil {
			return err
		}
	}
	fmt.Printf("enrolled %d devices in %s\n", n, time.Since(start).Round(time.Millisecond))

	hbOnce := func(i int) error {
		dv := devices[i]
		return c.Do(ctx, "", dv.PrivateKey(), dv.ID, benchkit.HeartbeatQuery, benchkit.HeartbeatVars(dv), nil)
	}
	cpu := cpuNow()
	hb := phase(n, d, hbOnce)
	report("heartbeat", hb, cpu)
	if rates[0] > 0 {
		cpu := cpuNow()
		report(fmt.Sprintf("heartbeat@%d", rates[0]), openPhase(n, rates[0], d, hbOnce), cpu)
	}

	// Prepare proofs: challenges requested and solved before the clock starts.
	start = time.Now()
	type prepared struct{ vars map[string]any }
	queues := make([][]prepared, n)
	var wg sync.WaitGroup
	var prepErr atomic.Value
	for i := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dv := devices[i]
			for range proofsPer {
				id, nonce, difficulty, err := c.Challenge(ctx, dv)
				if err != nil {
					prepErr.Store(err)
					return
				}
				vars, err := benchkit.Prepare(ctx, dv, id, nonce, difficulty)
				if err != nil {
					prepErr.Store(err)
					return
				}
				queues[i] = append(queues[i], prepared{vars})
			}
		}()
	}
	wg.Wait()
	if err, ok := prepErr.Load().(error); ok {
		return fmt.Errorf("preparing proofs: %w", err)
	}
	fmt.Printf("prepared %d proofs in %s\n", n*proofsPer, time.Since(start).Round(time.Millisecond))
	next := make([]int, n)
	var flagged atomic.Int64
	proofOnce := func(i int) error {
		if next[i] >= len(queues[i]) {
			return errExhausted
		}
		p := queues[i][next[i]]
		next[i]++
		var out benchkit.ProofResult
		dv := devices[i]
		if err := c.Do(ctx, "", dv.PrivateKey(), dv.ID, benchkit.SubmitProofQuery, p.vars, &out); err != nil {
			return err
		}
		if out.SubmitProof.Verdict != "PASSED" {
			flagged.Add(1)
		}
		return nil
	}
	stop := profile("proof-closed", d)
	cpu = cpuNow()
	report("submitProof", phase(n, d, proofOnce), cpu)
	stop()
	if rates[1] > 0 {
		stop := profile(fmt.Sprintf("proof-%d", rates[1]), d)
		cpu := cpuNow()
		report(fmt.Sprintf("submitProof@%d", rates[1]), openPhase(n, rates[1], d, proofOnce), cpu)
		stop()
	}
	if flagged.Load() > 0 {
		fmt.Printf("warning: %d proofs were flagged\n", flagged.Load())
	}
	return nil
}

var errExhausted = errors.New("no prepared proofs left")

var profileURL, profileOut string

// profile records the gateway's CPU profile for most of a phase of length d into
// <profile-out>-<name>.pprof (nothing without --debug-url); the returned function waits for it.
func profile(name string, d time.Duration) func() {
	if profileURL == "" {
		return func() {}
	}
	secs := max(1, int(d.Seconds())-2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", profileURL, secs))
		if err != nil {
			fmt.Fprintln(os.Stderr, "profile:", err)
			return
		}
		defer resp.Body.Close()
		// #nosec G304 -- the path is the operator's own --profile-out flag and a fixed phase name
		f, err := os.Create(profileOut + "-" + name + ".pprof")
		if err != nil {
			fmt.Fprintln(os.Stderr, "profile:", err)
			return
		}
		defer f.Close()
		_, _ = io.Copy(f, resp.Body)
	}()
	return func() { <-done }
}

// rates are the offered loads of the open-loop phases (heartbeats, proofs).
var rates [2]int

// openPhase offers rate requests per second for d, spread over n workers; each request's latency
// counts from when it was due, so a server that falls behind shows it (no coordinated omission).
func openPhase(n, rate int, d time.Duration, fn func(i int) error) result {
	due := make(chan time.Time, rate*int(d.Seconds()+1))
	start := time.Now()
	go func() {
		interval := time.Second / time.Duration(rate)
		for k := 0; ; k++ {
			at := start.Add(time.Duration(k) * interval)
			if at.After(start.Add(d)) {
				close(due)
				return
			}
			time.Sleep(time.Until(at))
			due <- at
		}
	}()
	var mu sync.Mutex
	var res result
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for at := range due {
				err := fn(i)
				lat := time.Since(at)
				mu.Lock()
				if errors.Is(err, errExhausted) {
					mu.Unlock()
					return
				}
				if err != nil {
					res.errs++
					if res.firstErr == nil {
						res.firstErr = err
					}
				} else {
					res.latencies = append(res.latencies, lat)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.n = len(res.latencies)
	return res
}

type result struct {
	n, errs   int
	elapsed   time.Duration
	latencies []time.Duration
	firstErr  error
}

// phase runs fn on n goroutines until d has passed (or fn runs out of work) and collects
// latencies.
func phase(n int, d time.Duration, fn func(i int) error) result {
	var mu sync.Mutex
	var res result
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			errs := 0
			var first error
			for time.Now().Before(deadline) {
				t0 := time.Now()
				err := fn(i)
				if errors.Is(err, errExhausted) {
					break
				}
				if err != nil {
					errs++
					if first == nil {
						first = err
					}
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			res.latencies = append(res.latencies, lat...)
			res.errs += errs
			if res.firstErr == nil {
				res.firstErr = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.n = len(res.latencies)
	return res
}

var gatewayPID int

func cpuNow() benchkit.CPUTimes { return benchkit.CPUNow(gatewayPID) }

func report(name string, r result, before benchkit.CPUTimes) {
	slices.Sort(r.latencies)
	pct := func(p float64) time.Duration {
		if len(r.latencies) == 0 {
			return 0
		}
		return r.latencies[int(p*float64(len(r.latencies)-1))]
	}
	fmt.Printf("%-12s %7d ok %5d errors in %5.1fs: %7.0f/s  p50 %6.1f ms  p99 %6.1f ms\n", name, r.n, r.errs,
		r.elapsed.Seconds(), float64(r.n)/r.elapsed.Seconds(), ms(pct(0.50)), ms(pct(0.99)))
	if r.firstErr != nil {
		fmt.Printf("             first error: %v\n", r.firstErr)
	}
	if after := cpuNow(); gatewayPID != 0 && r.n > 0 {
		// Exited postgres backends' time is lost from /proc; the pool keeps its connections, so little is.
		fmt.Printf("             CPU per request: gateway %.3f ms, PostgreSQL %.3f ms\n",
			ms((after.Gateway-before.Gateway)/time.Duration(r.n)), ms((after.Postgres-before.Postgres)/time.Duration(r.n)))
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

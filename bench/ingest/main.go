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
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/oidc/devissuer"
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

type client struct {
	server string
	http   *http.Client
}

type gqlResponse struct {
	Data   json.RawMessage `json:"data"`
	Errors []struct {
		Message string `json:"message"`
	} `json:"errors"`
}

// do sends one operation, signed by key as device when key is set.
func (c *client) do(ctx context.Context, bearer string, key ed25519.PrivateKey, device, query string, vars map[string]any, out any) error {
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.server+"/graphql", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if key != nil {
		req.Header.Set(attest.SignatureHeader, attest.SignRequest(key, device, "POST", "/graphql", time.Now(), body))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var r gqlResponse
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, raw)
	}
	if len(r.Errors) > 0 {
		return errors.New(r.Errors[0].Message)
	}
	if out != nil {
		return json.Unmarshal(r.Data, out)
	}
	return nil
}

type device struct {
	id   string
	key  ed25519.PrivateKey
	snap attest.Snapshot
}

func host(seed int) attest.Snapshot {
	s := attest.Snapshot{DriverVersion: "550.54.15", NVMLVersion: "12.550.54.15", CUDADriverVersion: 12040}
	for i := range 8 {
		s.GPUs = append(s.GPUs, attest.GPU{
			UUID: fmt.Sprintf("GPU-b%07x-%04x-4000-8000-%012x", seed, i, time.Now().UnixNano()&0xffffffffffff), Name: "NVIDIA H100 80GB HBM3",
			PCIDeviceID: 0x2330, PCIVendorID: attest.VendorNVIDIA, BusID: fmt.Sprintf("00000000:%02X:00.0", 0x18+i),
			MemoryTotalBytes: 81559 << 20, Architecture: "Hopper", ComputeMajor: 9, ComputeMinor: 0,
			Serial: fmt.Sprintf("16%05d%06d", seed%100000, i), // H100 boards report a 13-digit serial
		})
	}
	return s
}

func run(server, user string, n int, d time.Duration, proofsPer int) error {
	ctx := context.Background()
	c := &client{server: server, http: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: n * 2, MaxConnsPerHost: n * 2}}}
	var info struct{ Issuer, ClientID, RedirectURI string }
	resp, err := http.Get(server + "/dev/oidc")
	if err != nil {
		return err
	}
	err = json.NewDecoder(resp.Body).Decode(&info)
	_ = resp.Body.Close() // decoded already: a failed close loses nothing
	if err != nil {
		return fmt.Errorf("/dev/oidc: %w (is the gateway in dev mode?)", err)
	}
	token, err := devissuer.FetchToken(ctx, info.Issuer, info.ClientID, info.RedirectURI, user)
	if err != nil {
		return err
	}

	start := time.Now()
	devices := make([]*device, n)
	for i := range devices {
		var tok struct{ CreateEnrollmentToken struct{ Token string } }
		if err := c.do(ctx, token, nil, "", `mutation { createEnrollmentToken { token } }`, nil, &tok); err != nil {
			return fmt.Errorf("enrollment token: %w", err)
		}
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		dv := &device{key: priv, snap: host(i)}
		snap, _ := json.Marshal(dv.snap)
		var out struct{ EnrollDevice struct{ DeviceID string } }
		err := c.do(ctx, "", priv, "", `mutation($in: EnrollDeviceInput!) { enrollDevice(input: $in) { deviceId } }`,
			map[string]any{"in": map[string]any{"token": tok.CreateEnrollmentToken.Token, "region": "bench",
				"publicKey": base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey)), "snapshot": string(snap)}}, &out)
		if err != nil {
			return fmt.Errorf("enroll: %w", err)
		}
		dv.id = out.EnrollDevice.DeviceID
		devices[i] = dv
	}
	fmt.Printf("enrolled %d devices in %s\n", n, time.Since(start).Round(time.Millisecond))

	const hbQuery = `mutation($d: ID!, $in: HeartbeatInput!) { heartbeat(deviceId: $d, input: $in) { status } }`
	hbOnce := func(i int) error {
		dv := devices[i]
		readings := make([]map[string]any, len(dv.snap.GPUs))
		for j, g := range dv.snap.GPUs {
			readings[j] = map[string]any{"uuid": g.UUID, "utilizationPercent": 90, "temperatureC": 60, "memoryUsedMiB": 40000, "powerWatts": 650}
		}
		return c.do(ctx, "", dv.key, dv.id, hbQuery, map[string]any{"d": dv.id, "in": map[string]any{"gpus": readings}}, nil)
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
				var ch struct {
					RequestChallenge struct {
						ID, Nonce  string
						Difficulty int
					}
				}
				if err := c.do(ctx, "", dv.key, dv.id, `mutation($d: ID!) { requestChallenge(deviceId: $d) { id nonce difficulty } }`,
					map[string]any{"d": dv.id}, &ch); err != nil {
					prepErr.Store(err)
					return
				}
				nonce, _ := base64.StdEncoding.DecodeString(ch.RequestChallenge.Nonce)
				p, err := attest.Prove(ctx, dv.key, ch.RequestChallenge.ID, nonce, ch.RequestChallenge.Difficulty, dv.snap)
				if err != nil {
					prepErr.Store(err)
					return
				}
				snap, _ := json.Marshal(p.Snapshot)
				queues[i] = append(queues[i], prepared{map[string]any{"d": dv.id, "in": map[string]any{
					"challengeId": p.ChallengeID, "counter": strconv.FormatUint(p.Counter, 10), "snapshot": string(snap),
					"signature": base64.StdEncoding.EncodeToString(p.Signature)}}})
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
	const submit = `mutation($d: ID!, $in: ProofInput!) { submitProof(deviceId: $d, input: $in) { verdict } }`
	proofOnce := func(i int) error {
		if next[i] >= len(queues[i]) {
			return errExhausted
		}
		p := queues[i][next[i]]
		next[i]++
		var out struct{ SubmitProof struct{ Verdict string } }
		dv := devices[i]
		if err := c.do(ctx, "", dv.key, dv.id, submit, p.vars, &out); err != nil {
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

// cpuTimes is the CPU time (user+system) of the gateway and of its PostgreSQL (every other
// descendant process), from /proc.
type cpuTimes struct{ gateway, postgres time.Duration }

// cpuNow reads the CPU times now (zero without --gateway-pid or /proc).
func cpuNow() cpuTimes {
	if gatewayPID == 0 {
		return cpuTimes{}
	}
	parent := map[int]int{}
	ticks := map[int]time.Duration{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the command (which may hold spaces) end with ')': state ppid ... utime(14) stime(15).
		f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		parent[pid] = ppid
		ticks[pid] = time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
	}
	var c cpuTimes
	for pid, t := range ticks {
		if pid == gatewayPID {
			c.gateway += t
			continue
		}
		for p := parent[pid]; p > 1; p = parent[p] {
			if p == gatewayPID {
				c.postgres += t
				break
			}
		}
	}
	return c
}

func report(name string, r result, before cpuTimes) {
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
			ms((after.gateway-before.gateway)/time.Duration(r.n)), ms((after.postgres-before.postgres)/time.Duration(r.n)))
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

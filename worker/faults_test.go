package worker

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/internal/testutil"
)

// Gateway faults seen by workers (docs/resilience.md): real worker agents on go-nvml's
// simulated servers, a real gateway over real HTTP, and between them faultFront, an HTTP front
// (a load balancer, an ingress) that can drop connections, answer 502/503 with or without
// Retry-After, lose the gateway's answer after forwarding the request, or be closed entirely.

// frontAction is what faultFront does with one request instead of relaying it.
type frontAction struct {
	status     int    // answer this status without forwarding (with a GraphQL-shaped body)
	retryAfter string // the Retry-After header of that answer, if any
	drop       bool   // close the connection without any answer, before forwarding
	lose       bool   // forward, then close the connection without relaying the answer
}

// frontHit is one request the front saw.
type frontHit struct {
	at        time.Time
	device    string // from the signature header; "" for enrollment
	op        string // GraphQL operation name
	status    int    // what the worker got; 0: the connection was closed
	forwarded bool   // the gateway received the request
}

type faultFront struct {
	t      *testing.T
	target string // the gateway's base URL
	addr   string
	up     *http.Transport

	mu     sync.Mutex
	srv    *http.Server
	all    *frontAction             // applies to every request while set
	script map[string][]frontAction // per operation, consumed first
	hits   []frontHit
}

var operationName = regexp.MustCompile(`"operationName":"(\w+)"`)

func newFaultFront(t *testing.T, target string) *faultFront {
	t.Helper()
	f := &faultFront{t: t, target: target, up: &http.Transport{}, script: map[string][]frontAction{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	f.serve(ln)
	t.Cleanup(func() {
		f.mu.Lock()
		srv := f.srv
		f.mu.Unlock()
		if srv != nil {
			_ = srv.Close()
		}
		f.up.CloseIdleConnections()
	})
	return f
}

func (f *faultFront) url() string { return "http://" + f.addr }

func (f *faultFront) serve(ln net.Listener) {
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 5 * time.Second}
	f.mu.Lock()
	f.srv = srv
	f.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// stop closes the front entirely: the listener and every connection (connection refused).
func (f *faultFront) stop() {
	f.mu.Lock()
	srv := f.srv
	f.srv = nil
	f.mu.Unlock()
	_ = srv.Close()
}

// start listens again on the same address.
func (f *faultFront) start() {
	f.t.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the port is ours; a closing socket may hold it for a moment
		if ln, err = net.Listen("tcp", f.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		f.t.Fatalf("front: listening again on %s: %v", f.addr, err)
	}
	f.serve(ln)
}

// set makes every request meet a (nil: relay them all).
func (f *faultFront) set(a *frontAction) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.all = a
}

// plan queues actions for the next requests of operation op.
func (f *faultFront) plan(op string, actions ...frontAction) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script[op] = append(f.script[op], actions...)
}

// seen returns the hits of op (all operations for "") since from, by device.
func (f *faultFront) seen(op string, from time.Time) map[string][]frontHit {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string][]frontHit{}
	for _, h := range f.hits {
		if (op == "" || h.op == op) && !h.at.Before(from) {
			out[h.device] = append(out[h.device], h)
		}
	}
	return out
}

func (f *faultFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	hit := frontHit{at: time.Now()}
	if m := operationName.FindSubmatch(body); m != nil {
		hit.op = string(m[1])
	}
	if s, err := attest.ParseSignature(r.Header.Get(attest.SignatureHeader)); err == nil {
		hit.device = s.DeviceID
	}
	f.mu.Lock()
	var act frontAction
	if q := f.script[hit.op]; len(q) > 0 {
		act, f.script[hit.op] = q[0], q[1:]
	} else if f.all != nil {
		act = *f.all
	}
	f.mu.Unlock()
	record := func() {
		f.mu.Lock()
		f.hits = append(f.hits, hit)
		f.mu.Unlock()
	}
	defer record()

	switch {
	case act.drop:
		hangUp(w)
		return
	case act.status != 0:
		if act.retryAfter != "" {
			w.Header().Set("Retry-After", act.retryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(act.status)
		_, _ = w.Write([]byte(`{"errors":[{"message":"front: the gateway is unavailable"}]}`))
		hit.status = act.status
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, f.target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		f.t.Errorf("front: %v", err)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := f.up.RoundTrip(req)
	if err != nil {
		hit.status = http.StatusBadGateway
		http.Error(w, "front: "+err.Error(), http.StatusBadGateway)
		return
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	hit.forwarded = true
	if act.lose {
		hangUp(w) // the gateway did the work; its answer never reaches the worker
		return
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(out)
	hit.status = resp.StatusCode
}

// hangUp closes the client's connection without an answer.
func hangUp(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			_ = c.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// gaps returns the pauses between consecutive hits.
func gaps(hits []frontHit) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(hits); i++ {
		out = append(out, hits[i].at.Sub(hits[i-1].at))
	}
	return out
}

// waitFor polls cond every 20 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Several workers heartbeat through the front while it answers 503, then 503 with Retry-After,
// then drops connections, then is closed entirely: each worker backs off exponentially, the
// workers' retries are not synchronized, none retries before a Retry-After, and once the front
// relays again every worker heartbeats within its longest backoff (Backoff.Max) plus a bound.
func TestWorkersRideOutGatewayFaults(t *testing.T) {
	t.Parallel()
	cfg := devConfig()
	cfg.HeartbeatEvery, cfg.Difficulty = time.Second, 8
	g := startGateway(t, cfg, nil)
	f := newFaultFront(t, g.url)
	backoff := Backoff{Initial: 100 * time.Millisecond, Max: 1600 * time.Millisecond}

	const workers = 4
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, workers)
	for i := range workers {
		o := g.options(t, "dgxh100", keyPath(t, "k.json"), g.token(t, "alice"))
		o.Server, o.Once, o.GiveUpAfter, o.Backoff, o.ReproveEvery = f.url(), false, 0, backoff, time.Hour
		o.Logger = newTestLogger(testutil.LogOnFailure(t, "worker "+string(rune('A'+i))))
		go func() { done <- Run(ctx, o) }()
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		for range workers {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("worker: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("a worker did not stop")
			}
		}
	}
	defer stop()

	beating := func(from time.Time, n int) func() bool {
		return func() bool {
			ok := 0
			for dev, hs := range f.seen("Heartbeat", from) {
				if dev != "" && slices.ContainsFunc(hs, func(h frontHit) bool { return h.status == http.StatusOK }) {
					ok++
				}
			}
			return ok >= n
		}
	}
	waitFor(t, 30*time.Second, "every worker enrolled, proved and heartbeated", beating(time.Time{}, workers))

	// 503 without Retry-After: exponential backoff with jitter.
	f.set(&frontAction{status: http.StatusServiceUnavailable})
	t0 := time.Now()
	time.Sleep(4500 * time.Millisecond)
	failed := f.seen("Heartbeat", t0)
	if len(failed) != workers {
		t.Fatalf("%d workers retried during the 503s, want %d", len(failed), workers)
	}
	var byDev [][]time.Duration
	for dev, hs := range failed {
		gs := gaps(hs)
		t.Logf("device %s: pauses between attempts %v", dev[:8], gs)
		if len(gs) < 4 {
			t.Fatalf("device %s: %d attempts in 4.5 s of 503s: %v", dev, len(hs), gs)
		}
		// Delay(k) is drawn from [Initial·2^k/2, Initial·2^k]: the fourth pause is at least
		// twice the first, whatever the draws.
		if gs[3] < 2*gs[0] {
			t.Fatalf("device %s: pauses do not grow: %v", dev, gs)
		}
		for _, d := range gs {
			if d > backoff.Max+time.Second { // generous: the machine may be loaded
				t.Fatalf("device %s: a pause of %v beyond Backoff.Max %v: %v", dev, d, backoff.Max, gs)
			}
		}
		byDev = append(byDev, gs)
	}
	// Jitter: the workers' k-th pauses differ (without it they would agree to the millisecond
	// and hit a recovering gateway together).
	spread := time.Duration(0)
	for k := 1; k < 4; k++ {
		lo, hi := byDev[0][k], byDev[0][k]
		for _, gs := range byDev[1:] {
			lo, hi = min(lo, gs[k]), max(hi, gs[k])
		}
		spread = max(spread, hi-lo)
	}
	if spread < 20*time.Millisecond {
		t.Fatalf("the workers retry in lockstep (largest spread of a k-th pause %v): %v", spread, byDev)
	}

	// 503 with Retry-After: 1: no worker comes back sooner, although its backoff is shorter.
	f.set(&frontAction{status: http.StatusServiceUnavailable, retryAfter: "1"})
	t1 := time.Now() // after set: every hit from t1 on gets the Retry-After
	time.Sleep(4 * time.Second)
	for dev, hs := range f.seen("Heartbeat", t1) {
		gs := gaps(hs)
		t.Logf("device %s: pauses after Retry-After: 1: %v", dev[:8], gs)
		if len(gs) < 1 {
			t.Fatalf("device %s: %d attempts in 4 s", dev, len(hs))
		}
		for _, d := range gs {
			if d < time.Second {
				t.Fatalf("device %s retried %v after a Retry-After of 1 s: %v", dev, d, gs)
			}
			if d > max(1500*time.Millisecond, backoff.Max)+time.Second {
				t.Fatalf("device %s: a pause of %v after Retry-After: 1 (at most max(1.5 s, Backoff.Max) plus scheduling)", dev, d)
			}
		}
	}

	// Connections dropped without an answer, then 502s from the front.
	f.set(&frontAction{drop: true})
	time.Sleep(1500 * time.Millisecond)
	f.set(&frontAction{status: http.StatusBadGateway})
	time.Sleep(1500 * time.Millisecond)

	// The front closed entirely (connection refused), then back.
	f.set(nil)
	f.stop()
	time.Sleep(1500 * time.Millisecond)
	back := time.Now()
	f.start()
	// Catch-up bound: a worker's pending pause is at most Backoff.Max (no Retry-After in
	// play: the last answers were refusals to connect); then its heartbeat goes through.
	bound := backoff.Max + 2*time.Second
	waitFor(t, bound, "every worker heartbeats again after the front is back", beating(back, workers))
	t.Logf("all %d workers heartbeating again %v after the front came back", workers, time.Since(back).Round(time.Millisecond))
	var recent int
	if err := g.x.Get(&recent, `SELECT count(*) FROM devices WHERE last_seen_at >= $1`, back.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if recent != workers {
		t.Fatalf("%d devices seen by the gateway since the front came back, want %d", recent, workers)
	}
	stop()
	// One proof per worker, none twice.
	assertOneVerdictPerChallenge(t, g)
}

// assertOneVerdictPerChallenge: the gateway stored at most one verdict per challenge, and none
// is FLAGGED (a resent or late proof would be CHALLENGE_REPLAYED or CHALLENGE_EXPIRED).
func assertOneVerdictPerChallenge(t *testing.T, g *testGateway) {
	t.Helper()
	var rows []struct {
		Challenge string `db:"challenge_id"`
		N         int    `db:"n"`
		Flagged   int    `db:"flagged"`
	}
	if err := g.x.Select(&rows, `SELECT challenge_id, count(*) AS n, count(*) FILTER (WHERE verdict <> 'PASSED') AS flagged
		FROM attestations WHERE challenge_id IS NOT NULL GROUP BY challenge_id`); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.N != 1 || r.Flagged != 0 {
			t.Fatalf("challenge %s: %d verdicts, %d not PASSED", r.Challenge, r.N, r.Flagged)
		}
	}
}

// The gateway judges the proof but its answer is lost (the front hangs up after forwarding),
// then the front answers 502 and 503 with Retry-After: the worker resends the same proof for the
// same challenge and gets the verdict the gateway stored: one challenge, one proof of work, one
// verdict.
func TestLostProofAnswerIsResentForItsVerdict(t *testing.T) {
	t.Parallel()
	cfg := devConfig()
	cfg.Difficulty = 8
	g := startGateway(t, cfg, nil)
	f := newFaultFront(t, g.url)
	f.plan("SubmitProof", frontAction{lose: true}, frontAction{status: http.StatusBadGateway},
		frontAction{status: http.StatusServiceUnavailable, retryAfter: "1"})
	path := keyPath(t, "k.json")
	o := g.options(t, "dgxh100", path, g.token(t, "alice"))
	o.Server = f.url()
	start := time.Now()
	if err := Run(context.Background(), o); err != nil {
		t.Fatalf("run: %v", err)
	}
	id := deviceOf(t, path)
	proofs, challenges := f.seen("SubmitProof", start)[id], f.seen("RequestChallenge", start)[id]
	if len(challenges) != 1 || len(proofs) != 4 {
		t.Fatalf("%d challenges requested, %d proof submissions (want 1 and 4: lost, 502, 503, answered)", len(challenges), len(proofs))
	}
	if !proofs[0].forwarded || proofs[3].status != http.StatusOK {
		t.Fatalf("submissions: %+v", proofs)
	}
	if d := proofs[3].at.Sub(proofs[2].at); d < time.Second {
		t.Fatalf("resent %v after Retry-After: 1", d)
	}
	rows := g.attestations(t, id)
	if len(rows) != 1 || rows[0].Verdict != "PASSED" {
		t.Fatalf("attestations: %+v", rows)
	}
	var n int
	if err := g.x.Get(&n, `SELECT count(*) FROM challenges WHERE device_id = $1`, id); err != nil || n != 1 {
		t.Fatalf("%d challenges issued (%v)", n, err)
	}
	assertOneVerdictPerChallenge(t, g)
}

// The proof never reaches the gateway until its challenge has expired: the worker stops
// resending before the expiry (a late proof would be flagged CHALLENGE_EXPIRED), takes a new
// challenge once the gateway answers again, and that proof passes. The first challenge expires
// unused.
// dropSubmissionsFor makes the front drop up to n submitProof requests, then pass them again
// after d.
func dropSubmissionsFor(f *faultFront, n int, d time.Duration) {
	drops := make([]frontAction, n)
	for i := range drops {
		drops[i] = frontAction{drop: true}
	}
	f.plan("SubmitProof", drops...)
	go func() {
		time.Sleep(d)
		f.mu.Lock()
		f.script["SubmitProof"] = nil
		f.mu.Unlock()
	}()
}

func TestProofIsNotResentPastItsChallenge(t *testing.T) {
	t.Parallel()
	cfg := devConfig()
	cfg.Difficulty, cfg.ChallengeTTL = 8, 3*time.Second
	g := startGateway(t, cfg, nil)
	f := newFaultFront(t, g.url)
	dropSubmissionsFor(f, 40, 5*time.Second) // until after the first challenge expired
	path := keyPath(t, "k.json")
	o := g.options(t, "dgxh100", path, g.token(t, "alice"))
	o.Server, o.GiveUpAfter = f.url(), 30*time.Second
	o.Backoff = Backoff{Initial: 100 * time.Millisecond, Max: 400 * time.Millisecond}
	start := time.Now()
	if err := Run(context.Background(), o); err != nil {
		t.Fatalf("run: %v", err)
	}
	id := deviceOf(t, path)
	if challenges := f.seen("RequestChallenge", start)[id]; len(challenges) < 2 {
		t.Fatalf("%d challenges requested", len(challenges))
	}
	rows := g.attestations(t, id)
	if len(rows) != 1 || rows[0].Verdict != "PASSED" {
		t.Fatalf("attestations: %+v", rows)
	}
	assertOneVerdictPerChallenge(t, g)
}

// A gateway (or a hostile front) that claims a challenge lasts an hour and keeps failing the
// submission cannot keep the worker resending one proof: it stops at MaxChallengeTTL after the
// challenge arrived, as the proof-of-work search does, and takes a new challenge.
func TestProofResendIsBoundedByMaxChallengeTTL(t *testing.T) {
	t.Parallel()
	cfg := devConfig()
	cfg.Difficulty, cfg.ChallengeTTL = 8, time.Hour
	g := startGateway(t, cfg, nil)
	f := newFaultFront(t, g.url)
	dropSubmissionsFor(f, 60, 5*time.Second) // until well after MaxChallengeTTL
	path := keyPath(t, "k.json")
	o := g.options(t, "dgxh100", path, g.token(t, "alice"))
	o.Server, o.GiveUpAfter, o.MaxChallengeTTL = f.url(), 30*time.Second, 2*time.Second
	o.Backoff = Backoff{Initial: 100 * time.Millisecond, Max: 400 * time.Millisecond}
	start := time.Now()
	if err := Run(context.Background(), o); err != nil {
		t.Fatalf("run: %v", err)
	}
	id := deviceOf(t, path)
	if challenges := f.seen("RequestChallenge", start)[id]; len(challenges) < 2 {
		t.Fatalf("%d challenge(s) requested: the worker kept resending one proof past MaxChallengeTTL", len(challenges))
	}
	assertOneVerdictPerChallenge(t, g)
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tt := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"7", 7 * time.Second, true},
		{" 0 ", 0, true},
		{"-3", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		{"99999999999999999999", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
	} {
		got, ok := parseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
	b := Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond}
	seen := map[time.Duration]bool{}
	for range 200 {
		d := b.DelayAfter(0, 2*time.Second)
		if d < 2*time.Second || d > 3*time.Second {
			t.Fatalf("DelayAfter(0, 2s) = %v, want within [2s, 3s]", d)
		}
		seen[d] = true
		if d := b.DelayAfter(0, time.Hour); d < MaxRetryAfter || d > MaxRetryAfter*3/2 {
			t.Fatalf("DelayAfter(0, 1h) = %v: Retry-After is capped at %v", d, MaxRetryAfter)
		}
		if d := b.DelayAfter(3, 0); d < 40*time.Millisecond || d > 80*time.Millisecond {
			t.Fatalf("DelayAfter(3, 0) = %v", d)
		}
	}
	if len(seen) < 50 {
		t.Fatal("no jitter on Retry-After")
	}
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gpugate/gpugate/bench/internal/benchkit"
)

// The kinds of request, in report order.
const (
	kHeartbeat = "worker.heartbeat"
	kChallenge = "worker.challenge"
	kProof     = "worker.proof"
	kDevices   = "explorer.devices"
	kDevice    = "explorer.device"
	kSearch    = "explorer.search"
	kStats     = "explorer.stats"
	kRename    = "owner.rename"
	kStatus    = "owner.status"
)

var kinds = []string{kHeartbeat, kChallenge, kProof, kDevices, kDevice, kSearch, kStats, kRename, kStatus}

// readMix is the share of each explorer read, in percent (docs/soak.md, "The mix"): every visit
// of the explorer's front page loads networkStats and a page of devices; browsing adds pages,
// device pages and searches.
var readMix = []struct {
	kind string
	pct  int
}{{kDevices, 40}, {kDevice, 30}, {kSearch, 15}, {kStats, 15}}

// config is run's flags.
type config struct {
	server, fleetPath, out, csv, metricsURL, dsn, note string
	duration, interval, warmup                         time.Duration
	heartbeatEvery, proveEvery                         time.Duration
	readRate, writeRate                                float64
	writeSet, concurrency, gatewayPID                  int
}

func runMain(ctx context.Context, args []string) error {
	var c config
	fs := flag.NewFlagSet("soak run", flag.ContinueOnError)
	fs.StringVar(&c.server, "server", "http://127.0.0.1:8080", "dev-mode gateway")
	fs.StringVar(&c.fleetPath, "fleet", "fleet.json", "the fleet written by soak enroll")
	fs.DurationVar(&c.duration, "duration", 10*time.Minute, "how long the load runs")
	fs.DurationVar(&c.interval, "interval", 10*time.Second, "how often to report and sample")
	fs.DurationVar(&c.warmup, "warmup", 0, "the start of the run left out of the memory verdict (0: a fifth of --duration, at least 2m: the replay window fills for 2 minutes)")
	fs.DurationVar(&c.heartbeatEvery, "heartbeat-every", 30*time.Second, "each worker's heartbeat interval (the gateway's --heartbeat-interval)")
	fs.DurationVar(&c.proveEvery, "prove-every", 6*time.Hour, "each worker's proof interval (gpugate worker --reprove-every)")
	fs.Float64Var(&c.readRate, "read-rate", 50, "explorer reads per second, all anonymous")
	fs.Float64Var(&c.writeRate, "write-rate", 0.5, "owner writes per second, shared by the fleet's owners (0: none)")
	fs.IntVar(&c.writeSet, "write-set", 200, "devices each owner writes to (its working set)")
	fs.IntVar(&c.concurrency, "concurrency", 256, "requests in flight at most (connections to the gateway)")
	fs.IntVar(&c.gatewayPID, "gateway-pid", 0, "the gateway's process id: sample its RSS and CPU time from /proc")
	fs.StringVar(&c.metricsURL, "metrics-url", "", "the gateway's /metrics (default: <server>/metrics)")
	fs.StringVar(&c.dsn, "pg-dsn", "", "PostgreSQL, to count its client connections (empty: not sampled)")
	fs.StringVar(&c.out, "out", "", "also write the report (markdown) to this file")
	fs.StringVar(&c.csv, "csv", "", "also write every sample and interval (CSV) to this file")
	fs.StringVar(&c.note, "note", "", "a line for the report's header (e.g. how the gateway was started)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.duration <= 0 || c.interval <= 0 || c.heartbeatEvery <= 0 || c.proveEvery <= 0 || c.readRate < 0 || c.writeRate < 0 ||
		c.concurrency < 1 || c.writeSet < 1 || c.warmup < 0 {
		return errors.New("durations, --concurrency and --write-set must be positive; rates must not be negative")
	}
	if c.warmup == 0 {
		c.warmup = max(c.duration/5, 2*time.Minute)
	}
	if c.metricsURL == "" {
		c.metricsURL = c.server + "/metrics"
	}
	f, err := loadFleet(c.fleetPath)
	if err != nil {
		return err
	}
	return newSoak(c, f).run(ctx)
}

type soak struct {
	cfg    config
	fleet  *fleet
	client *benchkit.Client
	rec    *recorder

	// What explorer reads pick from, collected before the clock starts.
	ids, names []string

	// Owner writes: per owner, its token and working set; the pause state of each device.
	mu     sync.Mutex
	owners []*owner
	paused map[string]bool
	nextW  int
}

type owner struct {
	name    string
	token   string
	fetched time.Time
	devices []string
}

func newSoak(c config, f *fleet) *soak {
	return &soak{cfg: c, fleet: f, client: benchkit.NewClient(c.server, c.concurrency), rec: newRecorder(kinds),
		paused: map[string]bool{}}
}

// job is one scheduled request: fn runs it, at is when it was due.
type job struct {
	at time.Time
	fn func(at time.Time)
}

// stream offers requests open loop: the k-th is due at start + phase + k × every.
type stream struct {
	name         string
	every, phase time.Duration
	fn           func(k int, at time.Time)
}

func (s *soak) run(ctx context.Context) error {
	c := s.cfg
	if err := s.prepare(ctx); err != nil {
		return err
	}
	smp, err := newSampler(c.gatewayPID, c.metricsURL, c.dsn)
	if err != nil {
		return err
	}
	n := len(s.fleet.Devices)
	perm := shuffled(n)
	streams := []stream{{name: "heartbeats", every: c.heartbeatEvery / time.Duration(n), fn: func(k int, at time.Time) {
		s.heartbeat(ctx, s.fleet.Devices[k%n], at)
	}}, {name: "proofs", every: c.proveEvery / time.Duration(n), fn: func(k int, at time.Time) {
		s.proof(ctx, s.fleet.Devices[perm[k%n]], at)
	}}}
	streams[1].phase = streams[1].every / 2
	if c.readRate > 0 {
		streams = append(streams, stream{name: "reads", every: time.Duration(float64(time.Second) / c.readRate), fn: func(k int, at time.Time) {
			s.read(ctx, k, at)
		}})
	}
	if c.writeRate > 0 {
		streams = append(streams, stream{name: "writes", every: time.Duration(float64(time.Second) / c.writeRate), phase: time.Second,
			fn: func(k int, at time.Time) { s.write(ctx, at) }})
	}

	w := io.Writer(os.Stdout)
	fmt.Fprintln(w, s.describe())
	before := loadavg()
	var selfBefore syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &selfBefore)

	// The first sample is the gateway at rest, taken before the clock starts (the first scrape
	// and connection may take a moment).
	rest := smp.take(ctx, 0)
	start := time.Now()
	end := start.Add(c.duration)
	steadyTimer := time.AfterFunc(c.warmup, s.rec.markSteady)
	defer steadyTimer.Stop()
	jobs := make(chan job, 1<<16)
	// pending counts, per stream, the requests due but not finished: the ones still queued or in
	// flight when the drain below gives up are reported as unfinished.
	pending := map[string]*atomic.Int64{}
	for _, st := range streams {
		pending[st.name] = &atomic.Int64{}
	}
	var gen, work sync.WaitGroup
	for _, st := range streams {
		gen.Add(1)
		go func() {
			defer gen.Done()
			for k := 0; ; k++ {
				at := start.Add(st.phase + time.Duration(k)*st.every)
				if !at.Before(end) {
					return
				}
				select {
				case <-time.After(time.Until(at)):
				case <-ctx.Done():
					return
				}
				pending[st.name].Add(1)
				select {
				case jobs <- job{at: at, fn: func(at time.Time) { st.fn(k, at); pending[st.name].Add(-1) }}:
				case <-ctx.Done():
					pending[st.name].Add(-1)
					return
				}
			}
		}()
	}
	for range c.concurrency {
		work.Add(1)
		go func() {
			defer work.Done()
			for j := range jobs {
				j.fn(j.at)
			}
		}()
	}

	samples := []sample{rest}
	var intervals [][]summary
	fmt.Fprintln(w, intervalHeader)
	tick := time.NewTicker(c.interval)
	last := start
	for done := false; !done; {
		select {
		case now := <-tick.C:
			// The interval that passes the end offered load only until the end.
			upto := now
			if upto.After(end) {
				upto = end
			}
			sums := s.rec.flush(max(upto.Sub(last), time.Millisecond))
			last = now
			m := smp.take(ctx, now.Sub(start))
			fmt.Fprintln(w, intervalLine(sums, m, samples[len(samples)-1]))
			samples = append(samples, m)
			intervals = append(intervals, sums)
			done = !now.Before(end)
		case <-ctx.Done():
			done = true
		}
	}
	tick.Stop()
	gen.Wait()
	close(jobs)
	drained := make(chan struct{})
	go func() { work.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(35 * time.Second): // the client's timeout is 30 s: every request has ended by then
	}
	unfinished := map[string]int64{}
	for name, p := range pending {
		if n := p.Load(); n > 0 {
			unfinished[name] = n
		}
	}
	elapsed := time.Since(start)
	var selfAfter syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &selfAfter)
	totals, windows := s.rec.totals(min(elapsed, c.duration))
	steady := s.rec.steadySummaries(min(elapsed, c.duration) - c.warmup)
	clients := smp.clientsByApplication(context.WithoutCancel(ctx))
	r := report{cfg: c, devices: n, started: start, elapsed: elapsed, totals: totals, steady: steady, windows: windows, samples: samples,
		intervals: intervals, loadBefore: before, loadAfter: loadavg(), interrupted: ctx.Err() != nil,
		selfCPU: cpuOf(selfAfter) - cpuOf(selfBefore), mix: s.describe(), clients: clients, unfinished: unfinished}
	text, pass := r.markdown()
	fmt.Fprintln(w)
	fmt.Fprint(w, text)
	if c.out != "" {
		if err := os.WriteFile(c.out, []byte(text), 0o644); err != nil { // #nosec G306 -- a report, no secret
			return err
		}
	}
	if c.csv != "" {
		if err := os.WriteFile(c.csv, []byte(r.csvText()), 0o644); err != nil { // #nosec G306 -- a report, no secret
			return err
		}
	}
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	if !pass {
		return errors.New("the soak failed its verdict (see above)")
	}
	return nil
}

func cpuOf(r syscall.Rusage) time.Duration {
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}

// loadavg returns /proc/loadavg's three averages, or "?".
func loadavg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// describe states the offered mix.
func (s *soak) describe() string {
	c, n := s.cfg, len(s.fleet.Devices)
	var mix []string
	for _, m := range readMix {
		mix = append(mix, fmt.Sprintf("%s %d%%", strings.TrimPrefix(m.kind, "explorer."), m.pct))
	}
	return fmt.Sprintf("offered: %d workers, each a heartbeat every %s (%.1f/s) and a proof every %s (%.3f/s, challenge + proof); "+
		"explorer reads %.1f/s anonymous (%s); owner writes %.2f/s by %d owners (rename 50%%, pause/resume 50%%) over %d devices each; "+
		"%s, warm-up %s, samples every %s",
		n, c.heartbeatEvery, float64(n)/c.heartbeatEvery.Seconds(), c.proveEvery, float64(n)/c.proveEvery.Seconds(),
		c.readRate, strings.Join(mix, ", "), c.writeRate, len(s.owners), min(c.writeSet, s.maxOwned()), c.duration, c.warmup, c.interval)
}

func (s *soak) maxOwned() int {
	m := 0
	for _, o := range s.owners {
		m = max(m, len(o.devices))
	}
	return m
}

// prepare signs the owners in and collects what explorer reads ask for: device ids and names
// from a walk of the public list, besides the fleet's own.
func (s *soak) prepare(ctx context.Context) error {
	byOwner := map[string]*owner{}
	for _, d := range s.fleet.Devices {
		o := byOwner[d.Owner]
		if o == nil {
			o = &owner{name: d.Owner}
			byOwner[d.Owner] = o
			s.owners = append(s.owners, o)
		}
		if len(o.devices) < s.cfg.writeSet {
			o.devices = append(o.devices, d.ID)
		}
		s.ids = append(s.ids, d.ID)
	}
	for _, o := range s.owners {
		if _, err := o.bearer(ctx, s.cfg.server); err != nil {
			return err
		}
	}
	var after any
	for range 20 {
		var page struct {
			Devices struct {
				Edges []struct {
					Node struct{ ID, Name string }
				}
				PageInfo struct {
					HasNextPage bool
					EndCursor   string
				}
			}
		}
		err := s.client.Do(ctx, "", nil, "", `query($after: String) { devices(first: 100, after: $after) { edges { node { id name } } pageInfo { hasNextPage endCursor } } }`,
			map[string]any{"after": after}, &page)
		if err != nil {
			return fmt.Errorf("walking the device list: %w", err)
		}
		for _, e := range page.Devices.Edges {
			s.ids = append(s.ids, e.Node.ID)
			s.names = append(s.names, e.Node.Name)
		}
		if !page.Devices.PageInfo.HasNextPage {
			break
		}
		after = page.Devices.PageInfo.EndCursor
	}
	if len(s.names) == 0 {
		return errors.New("the device list is empty")
	}
	return nil
}

// ownerTokenAge is how long an owner's token is used before signing in again: the dev
// issuer's tokens last an hour.
const ownerTokenAge = 30 * time.Minute

// bearer returns the owner's access token, signing in again when it is older than
// ownerTokenAge; the error is the sign-in's.
func (o *owner) bearer(ctx context.Context, server string) (string, error) {
	if o.token != "" && time.Since(o.fetched) < ownerTokenAge {
		return o.token, nil
	}
	t, err := benchkit.DevToken(ctx, server, o.name)
	if err != nil {
		return "", fmt.Errorf("sign in as %s: %w", o.name, err)
	}
	o.token, o.fetched = t, time.Now()
	return t, nil
}

// done records the outcome of one request of kind, due at at (open loop: the latency includes
// any wait for a free connection).
func (s *soak) done(kind string, at time.Time, err error) {
	if err != nil {
		s.rec.record(kind, 0, benchkit.Kind(err), err.Error())
		return
	}
	s.rec.record(kind, time.Since(at), "", "")
}

func (s *soak) heartbeat(ctx context.Context, dv *fleetDevice, at time.Time) {
	s.done(kHeartbeat, at, s.client.Do(ctx, "", dv.PrivateKey(), dv.ID, benchkit.HeartbeatQuery, benchkit.HeartbeatVars(&dv.Device), nil))
}

// proof runs a worker's proof: a challenge, the proof of work (on the load generator, not
// timed), the submission. A verdict other than PASSED counts as an error of worker.proof.
func (s *soak) proof(ctx context.Context, dv *fleetDevice, at time.Time) {
	id, nonce, difficulty, err := s.client.Challenge(ctx, &dv.Device)
	s.done(kChallenge, at, err)
	if err != nil {
		return
	}
	vars, err := benchkit.Prepare(ctx, &dv.Device, id, nonce, difficulty)
	if err != nil {
		s.rec.record(kProof, 0, "solving", err.Error())
		return
	}
	t0 := time.Now()
	var res benchkit.ProofResult
	err = s.client.Do(ctx, "", dv.PrivateKey(), dv.ID, benchkit.SubmitProofQuery, vars, &res)
	if err == nil && res.SubmitProof.Verdict != "PASSED" {
		s.rec.record(kProof, 0, "verdict "+res.SubmitProof.Verdict, strings.Join(res.SubmitProof.Reasons, ", "))
		return
	}
	s.done(kProof, t0, err)
}

// The explorer's own operations (web/static/explorer.js), with its page size.
const (
	explorerPage = 25
	explorerRow  = "id name status region verificationLevel gpuModel gpuCount lastSeenAt createdAt"
	statsQuery   = `query Stats { networkStats { devices gpus computedAt
  byStatus { status devices gpus } byGpuModel { model devices gpus } byRegion { region devices gpus }
  byVerificationLevel { level devices gpus } } }`
	listQuery = `query Devices($first: Int!, $after: String, $filter: DeviceFilter, $orderBy: DeviceOrder) {
  devices(first: $first, after: $after, filter: $filter, orderBy: $orderBy) { edges { node { ` + explorerRow + ` } } pageInfo { hasNextPage endCursor } } }`
	searchQuery = `query Search($query: String!, $first: Int!, $after: String) {
  searchDevices(query: $query, first: $first, after: $after) { edges { node { ` + explorerRow + ` } } pageInfo { hasNextPage endCursor } } }`
	deviceQuery = `query Device($id: ID!) { device(id: $id) { ` + explorerRow + `
  gpus { index uuid model pciDeviceId memoryMiB architecture computeCapability verificationLevel } } }`
)

// listViews are the table views a visitor picks: filter and order.
var listViews = []map[string]any{
	{},
	{"filter": map[string]any{"status": "UP"}},
	{"filter": map[string]any{"region": "eu-west"}},
	{"orderBy": map[string]any{"field": "NAME", "direction": "ASC"}},
	{"filter": map[string]any{"status": "UP"}, "orderBy": map[string]any{"field": "VERIFICATION_LEVEL", "direction": "DESC"}},
}

// cursors holds, per list view, where a visitor browsing it is: half the list reads go on to
// the next page of a view, half start one again at its first page.
var (
	cursorMu sync.Mutex
	cursors  = map[int]string{}
)

func (s *soak) read(ctx context.Context, k int, at time.Time) {
	roll := pick(100)
	kind := readMix[len(readMix)-1].kind
	for _, m := range readMix {
		if roll < m.pct {
			kind = m.kind
			break
		}
		roll -= m.pct
	}
	var err error
	switch kind {
	case kStats:
		err = s.client.Do(ctx, "", nil, "", statsQuery, nil, nil)
	case kDevice:
		err = s.client.Do(ctx, "", nil, "", deviceQuery, map[string]any{"id": s.ids[pick(len(s.ids))]}, nil)
	case kSearch:
		err = s.client.Do(ctx, "", nil, "", searchQuery, map[string]any{"query": s.searchTerm(), "first": explorerPage}, nil)
	case kDevices:
		v := pick(len(listViews))
		vars := map[string]any{"first": explorerPage}
		for key, val := range listViews[v] {
			vars[key] = val
		}
		cursorMu.Lock()
		if c := cursors[v]; c != "" && pick(2) == 0 {
			vars["after"] = c
		}
		cursorMu.Unlock()
		var page struct {
			Devices struct {
				PageInfo struct {
					HasNextPage bool
					EndCursor   string
				}
			}
		}
		err = s.client.Do(ctx, "", nil, "", listQuery, vars, &page)
		if err == nil {
			cursorMu.Lock()
			cursors[v] = ""
			if page.Devices.PageInfo.HasNextPage {
				cursors[v] = page.Devices.PageInfo.EndCursor
			}
			cursorMu.Unlock()
		}
	}
	s.done(kind, at, err)
}

// searchTerm returns what a visitor types: 4 to 8 hexadecimal digits of a device ID, or 3 to
// 6 characters of a device's name.
func (s *soak) searchTerm() string {
	if pick(2) == 0 {
		id := strings.ReplaceAll(s.ids[pick(len(s.ids))], "-", "")
		return id[:4+pick(5)]
	}
	name := []rune(s.names[pick(len(s.names))])
	l := min(3+pick(4), len(name))
	i := pick(len(name) - l + 1)
	return string(name[i : i+l])
}

// write sends one owner write: the owners take turns; half rename a device of their working
// set, half pause it (or resume it when paused).
func (s *soak) write(ctx context.Context, at time.Time) {
	s.mu.Lock()
	o := s.owners[s.nextW%len(s.owners)]
	s.nextW++
	id := o.devices[pick(len(o.devices))]
	kind, query, vars := kRename, `mutation($id: ID!, $in: UpdateDeviceInput!) { updateDevice(id: $id, input: $in) { id name } }`,
		map[string]any{"id": id, "in": map[string]any{"name": fmt.Sprintf("soak-%s-%d", o.name, pick(1e6))}}
	if pick(2) == 0 {
		kind, vars = kStatus, map[string]any{"id": id}
		if s.paused[id] {
			query = `mutation($id: ID!) { resumeDevice(id: $id) { id status } }`
		} else {
			query = `mutation($id: ID!) { pauseDevice(id: $id) { id status } }`
		}
		s.paused[id] = !s.paused[id]
	}
	token, err := o.bearer(ctx, s.cfg.server)
	s.mu.Unlock()
	if err == nil {
		err = s.client.Do(ctx, token, nil, "", query, vars, nil)
	}
	s.done(kind, at, err)
}

// pick returns a pseudo-random number in [0, n): the load's choices (which view, device, search
// term) need spread, not secrecy.
func pick(n int) int {
	return rand.IntN(n) // #nosec G404 -- load generation, nothing to predict or protect
}

// shuffled returns a pseudo-random permutation of [0, n).
func shuffled(n int) []int {
	p := make([]int, n)
	for i := range p {
		j := pick(i + 1)
		p[i], p[j] = p[j], i
	}
	return p
}

package main

// Database and shutdown faults with a bounded load running through the real gateway binary
// (docs/resilience.md, "Database and shutdown faults"): PostgreSQL restarted, killed (crash
// recovery) and slow, and SIGTERM under load. Each test starts its own cluster (pglocal) or
// database, its own gateway, and checks what clients saw and what the database holds after.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db/dbtest"
	"github.com/gpugate/gpugate/db/pglocal"
	"github.com/gpugate/gpugate/internal/testutil"
	"github.com/gpugate/gpugate/worker"
)

// faultWALWriterDelay is PostgreSQL's default wal_writer_delay: a commit made with
// synchronous_commit off reaches the WAL within 3× it (docs/resilience.md).
const faultWALWriterDelay = 200 * time.Millisecond

// faultAnswer is one response as a client saw it.
type faultAnswer struct {
	op     string
	sent   time.Time
	at     time.Time // when the answer (or the transport error) arrived
	status int
	data   json.RawMessage
	errs   []testutil.GQLError
	raw    string
	header http.Header
	err    error // transport error: the client got no HTTP answer
}

func (a faultAnswer) ok() bool { return a.err == nil && a.status == http.StatusOK && len(a.errs) == 0 }

func (a faultAnswer) codes() []string {
	var out []string
	for _, e := range a.errs {
		out = append(out, e.Code())
	}
	return out
}

// faultDriverText matches what must never reach a client: driver, SQL and socket details.
var faultDriverText = regexp.MustCompile(`(?i)pq:|sqlstate|dial (unix|tcp)|connection refused|broken pipe|` +
	`\bEOF\b|bad connection|sql: |database/sql|postgres|syntax error|relation "|the database system is`)

// faultClient is an HTTP client that never reuses a connection across tests.
func faultClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
}

// faultPost sends one operation (signed by key as device when key is set, with bearer token
// when set) and returns what came back; it never fails the test.
func faultPost(ctx context.Context, hc *http.Client, base, op, token string, key ed25519.PrivateKey, device, query string, vars map[string]any) faultAnswer {
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	a := faultAnswer{op: op, sent: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/graphql", bytes.NewReader(body))
	if err != nil {
		a.err = err
		return a
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if key != nil {
		req.Header.Set(attest.SignatureHeader, attest.SignRequest(key, device, http.MethodPost, "/graphql", time.Now(), body))
	}
	resp, err := hc.Do(req)
	if err != nil {
		a.err, a.at = err, time.Now()
		return a
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	a.at, a.status, a.raw, a.header = time.Now(), resp.StatusCode, string(b), resp.Header
	if err != nil {
		a.err = err
		return a
	}
	var out struct {
		Data   json.RawMessage     `json:"data"`
		Errors []testutil.GQLError `json:"errors"`
	}
	if json.Unmarshal(b, &out) == nil {
		a.data, a.errs = out.Data, out.Errors
	}
	return a
}

// faultRecorder keeps every answer of a load.
type faultRecorder struct {
	mu      sync.Mutex
	answers []faultAnswer
}

func (r *faultRecorder) add(a faultAnswer) {
	r.mu.Lock()
	r.answers = append(r.answers, a)
	r.mu.Unlock()
}

func (r *faultRecorder) all() []faultAnswer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.answers)
}

// check fails t for every answer a client must never see: a transport error (unless
// allowTransport accepts it), an HTTP status other than 200 and 503, an error without a code
// or with a code outside allowed, or driver text. It logs a summary of the codes.
func (r *faultRecorder) check(t *testing.T, allowed []string, allowTransport func(faultAnswer) bool) {
	t.Helper()
	hist := map[string]int{}
	bad := 0
	report := func(a faultAnswer, why string) {
		bad++
		if bad <= 10 {
			t.Errorf("%s: %s (HTTP %d, err %v): %.400s", a.op, why, a.status, a.err, a.raw)
		}
	}
	for _, a := range r.all() {
		switch {
		case a.err != nil:
			hist["transport error"]++
			if allowTransport == nil || !allowTransport(a) {
				report(a, "transport error")
			}
			continue
		case a.ok():
			hist["ok"]++
			continue
		}
		if a.status != http.StatusOK && a.status != http.StatusServiceUnavailable {
			report(a, "unexpected HTTP status")
		}
		if len(a.errs) == 0 {
			report(a, "no GraphQL error in a failed answer")
		}
		for _, e := range a.errs {
			hist[e.Code()]++
			if !slices.Contains(allowed, e.Code()) {
				report(a, "error code "+e.Code())
			}
			if faultDriverText.MatchString(e.Message) {
				report(a, "driver text in the message")
			}
		}
	}
	t.Logf("answers by outcome: %v", hist)
}

// faultEnv is a gateway on a PostgreSQL cluster of the test's own, with an owner (alice), an
// admin, enrolled workers and seeded devices for the admin to act on.
type faultEnv struct {
	t       *testing.T
	dataDir string
	opts    pglocal.Options
	pg      *pglocal.Server
	dsn     string
	check   *sql.DB // the test's own connections, for assertions
	g       *process
	base    string
	hc      *http.Client
	alice   string // access tokens
	admin   string
	workers []*faultWorker
	seeded  []string // devices of the demo owners, for the admin's quarantines
}

// faultWorker is an enrolled device key.
type faultWorker struct {
	key      ed25519.PrivateKey
	deviceID string
	snap     attest.Snapshot
}

// faultSnapshot is a one-GPU host whose GPU identity derives from n.
func faultSnapshot(n int) attest.Snapshot {
	return attest.Snapshot{DriverVersion: "550.54.15", NVMLVersion: "12.550.54.15", CUDADriverVersion: 12040,
		GPUs: []attest.GPU{{
			UUID: fmt.Sprintf("GPU-fa17%04x-1111-4222-8333-%012x", n, n), Name: "NVIDIA H100 80GB HBM3",
			PCIDeviceID: 0x2330, PCIVendorID: attest.VendorNVIDIA, BusID: "00000000:18:00.0",
			MemoryTotalBytes: 81559 << 20, Architecture: "Hopper", ComputeMajor: 9, Serial: fmt.Sprintf("1653%09d", n),
		}}}
}

// faultCluster starts a PostgreSQL cluster in a fresh data directory and creates the gateway's
// database. The cluster is pglocal's Fast one (no fsync, no full-page writes, commits not
// waiting for the WAL); with durable, the database commits synchronously again
// (synchronous_commit on for every session), as a production cluster does. That is durable
// against SIGKILL, the fault these tests inject: the WAL a commit waited for is in the OS page
// cache, which a killed PostgreSQL does not lose (only a power cut would need the fsync). The
// data directory sits right under the temp dir, where the unprivileged user PostgreSQL runs as
// (when the tests run as root) can reach it.
func faultCluster(t *testing.T, durable bool) *faultEnv {
	t.Helper()
	dir, err := os.MkdirTemp("", "gpugate-fault-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	e := &faultEnv{t: t, dataDir: dir, hc: faultClient(),
		opts: pglocal.Options{DataDir: dir, BinDir: os.Getenv(dbtest.BinDirEnv), Fast: true,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if e.pg, err = pglocal.Start(ctx, e.opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = e.pg.Stop(ctx)
	})
	if err := e.pg.EnsureDatabase(ctx, "gpugate"); err != nil {
		t.Fatal(err)
	}
	e.dsn = e.pg.DSN("gpugate")
	if durable {
		admin, err := sql.Open("postgres", e.pg.DSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = admin.Exec(`ALTER DATABASE gpugate SET synchronous_commit = on`)
		admin.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if e.check, err = sql.Open("postgres", e.dsn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.check.Close() })
	return e
}

// faultGatewayArgs are the flags of every gateway here: dev mode for its token issuer, no
// public cache (every read reaches the database), a trivial proof of work, and no per-device or
// per-user write limits (the load would trip them; they are tested elsewhere).
func faultGatewayArgs(extra ...string) []string {
	return append([]string{"--dev", "--seed", "20", "--public-cache-ttl", "0", "--pow-difficulty", "4",
		"--heartbeat-rate", "off", "--challenge-rate", "off", "--proof-rate", "off", "--enrollment-token-rate", "off",
		"--device-write-rate", "100000/1s", "--user-write-rate", "100000/1s", "--log-level", "warn"}, extra...)
}

// startGateway starts the gateway on e's database, signs alice and the admin in and enrolls
// workers devices of alice's.
func (e *faultEnv) startGateway(workers int, extra ...string) {
	t := e.t
	t.Helper()
	e.g = start(t, []string{"DATABASE_URL=" + e.dsn}, faultGatewayArgs(extra...)...)
	e.base = "http://" + e.g.addr
	e.alice, e.admin = faultToken(t, e.base, "alice"), faultToken(t, e.base, "admin")
	for i := range workers {
		e.workers = append(e.workers, e.enroll(t, i))
	}
	rows, err := e.check.Query(`SELECT d.id FROM devices d JOIN users u ON u.id = d.owner_id
		WHERE u.email <> 'alice@example.com' ORDER BY d.id LIMIT 12`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		e.seeded = append(e.seeded, id)
	}
	if len(e.seeded) == 0 {
		t.Fatal("no seeded devices")
	}
}

// faultToken returns an access token of the dev issuer for user.
func faultToken(t *testing.T, base, user string) string {
	t.Helper()
	out, err := exec.Command(binary(t), "dev", "token", "--server", base, user).Output()
	if err != nil {
		t.Fatalf("dev token %s: %v", user, err)
	}
	return strings.TrimSpace(string(out))
}

func (e *faultEnv) enroll(t *testing.T, n int) *faultWorker {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	w := &faultWorker{key: key, snap: faultSnapshot(n)}
	a := e.enrollWith(w, e.enrollmentToken(t, e.alice))
	var enrolled struct{ EnrollDevice struct{ DeviceID string } }
	if !a.ok() || json.Unmarshal(a.data, &enrolled) != nil {
		t.Fatalf("enrollDevice: %v %s", a.err, a.raw)
	}
	w.deviceID = enrolled.EnrollDevice.DeviceID
	return w
}

// enrollmentToken returns a new enrollment token of the owner of access token owner.
func (e *faultEnv) enrollmentToken(t *testing.T, owner string) string {
	t.Helper()
	a := faultPost(context.Background(), e.hc, e.base, "createEnrollmentToken", owner, nil, "", `mutation { createEnrollmentToken { token } }`, nil)
	var tok struct{ CreateEnrollmentToken struct{ Token string } }
	if !a.ok() || json.Unmarshal(a.data, &tok) != nil {
		t.Fatalf("createEnrollmentToken: %v %s", a.err, a.raw)
	}
	return tok.CreateEnrollmentToken.Token
}

// enrollWith sends w's enrollment with token, signed by w's key.
func (e *faultEnv) enrollWith(w *faultWorker, token string) faultAnswer {
	snap, _ := json.Marshal(w.snap)
	return faultPost(context.Background(), e.hc, e.base, "enrollDevice", "", w.key, "",
		`mutation($in: EnrollDeviceInput!) { enrollDevice(input: $in) { deviceId credentialId } }`,
		map[string]any{"in": map[string]any{"token": token, "region": "eu-west", "snapshot": string(snap),
			"publicKey": base64.StdEncoding.EncodeToString(w.key.Public().(ed25519.PublicKey))}})
}

// faultRegister follows the values a client wrote to one place (a device's name, its
// quarantine): after the run the database must hold the last acknowledged value, or the value
// of a later write whose answer was lost or an error (it may have committed).
type faultRegister struct {
	writes []faultWrite
}

type faultWrite struct {
	value string
	acked bool
	at    time.Time
}

// allowed returns the values the database may hold, or nil when nothing was acknowledged.
func (r *faultRegister) allowed() []string {
	last := -1
	for i, w := range r.writes {
		if w.acked {
			last = i
		}
	}
	if last < 0 {
		return nil
	}
	out := []string{r.writes[last].value}
	for _, w := range r.writes[last+1:] {
		out = append(out, w.value)
	}
	return out
}

// faultLoad is the bounded mixed load: explorer reads, owner renames and enrollment tokens,
// admin quarantines and releases, worker heartbeats and proofs.
type faultLoad struct {
	rec      faultRecorder
	mu       sync.Mutex
	names    map[string]*faultRegister // device id -> its renames
	quar     map[string]*faultRegister // device id -> quarantine "q:<reason>" / release "released"
	tokens   struct{ attempts, acked int }
	proofs   []faultProof // acknowledged proofs
	stop     context.CancelFunc
	wg       sync.WaitGroup
	lastOK   sync.Map // op -> time.Time of its latest success
	inflight atomic.Int64
}

type faultProof struct {
	challengeID, deviceID, verdict string
	at                             time.Time
}

func (l *faultLoad) record(a faultAnswer) {
	l.rec.add(a)
	if a.ok() {
		l.lastOK.Store(a.op, a.at)
	}
}

// lastSuccess returns when op last succeeded (zero when never).
func (l *faultLoad) lastSuccess(op string) time.Time {
	v, _ := l.lastOK.Load(op)
	at, _ := v.(time.Time)
	return at
}

// startLoad runs the load until stopLoad: two explorer readers, one owner, one admin and every
// worker, each paced so the whole stays light on two cores.
func (e *faultEnv) startLoad() *faultLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &faultLoad{stop: cancel, names: map[string]*faultRegister{}, quar: map[string]*faultRegister{}}
	loop := func(pause time.Duration, step func(i int)) {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				l.inflight.Add(1)
				step(i)
				l.inflight.Add(-1)
				select {
				case <-ctx.Done():
				case <-time.After(pause):
				}
			}
		}()
	}
	post := func(op, token string, key ed25519.PrivateKey, device, q string, vars map[string]any) faultAnswer {
		// Requests already sent finish even when the load stops: their outcome counts.
		a := faultPost(context.Background(), e.hc, e.base, op, token, key, device, q, vars)
		l.record(a)
		return a
	}
	for range 2 {
		loop(20*time.Millisecond, func(i int) {
			post("explorer", "", nil, "", `query($n: Int!) { devices(first: $n) { edges { node { id name status } } } }`,
				map[string]any{"n": 1 + i%10})
		})
	}
	loop(30*time.Millisecond, func(i int) {
		if i%5 == 4 {
			l.mu.Lock()
			l.tokens.attempts++
			l.mu.Unlock()
			if post("createEnrollmentToken", e.alice, nil, "", `mutation { createEnrollmentToken { token } }`, nil).ok() {
				l.mu.Lock()
				l.tokens.acked++
				l.mu.Unlock()
			}
			return
		}
		w := e.workers[i%len(e.workers)]
		name := fmt.Sprintf("fault-%d", i)
		a := post("updateDevice", e.alice, nil, "", `mutation($id: ID!, $n: String!) { updateDevice(id: $id, input: {name: $n}) { name } }`,
			map[string]any{"id": w.deviceID, "n": name})
		l.mu.Lock()
		r := l.names[w.deviceID]
		if r == nil {
			r = &faultRegister{}
			l.names[w.deviceID] = r
		}
		r.writes = append(r.writes, faultWrite{value: name, acked: a.ok(), at: a.at})
		l.mu.Unlock()
	})
	loop(60*time.Millisecond, func(i int) {
		id := e.seeded[i%len(e.seeded)]
		var a faultAnswer
		value := "released"
		if (i/len(e.seeded))%2 == 0 {
			value = fmt.Sprintf("q:fault drill %d", i)
			a = post("quarantineDevice", e.admin, nil, "", `mutation($id: ID!, $r: String!) { quarantineDevice(id: $id, reason: $r) { id } }`,
				map[string]any{"id": id, "r": strings.TrimPrefix(value, "q:")})
		} else {
			a = post("releaseDevice", e.admin, nil, "", `mutation($id: ID!) { releaseDevice(id: $id) { id } }`, map[string]any{"id": id})
		}
		l.mu.Lock()
		r := l.quar[id]
		if r == nil {
			r = &faultRegister{}
			l.quar[id] = r
		}
		r.writes = append(r.writes, faultWrite{value: value, acked: a.ok(), at: a.at})
		l.mu.Unlock()
	})
	for _, w := range e.workers {
		loop(50*time.Millisecond, func(i int) {
			post("heartbeat", "", w.key, w.deviceID, `mutation($d: ID!) { heartbeat(deviceId: $d, input: {gpus: []}) { status } }`,
				map[string]any{"d": w.deviceID})
			if i%4 != 0 {
				return
			}
			ch := post("requestChallenge", "", w.key, w.deviceID, `mutation($d: ID!) { requestChallenge(deviceId: $d) { id nonce difficulty } }`,
				map[string]any{"d": w.deviceID})
			var c struct {
				RequestChallenge struct {
					ID, Nonce  string
					Difficulty int
				}
			}
			if !ch.ok() || json.Unmarshal(ch.data, &c) != nil {
				return
			}
			nonce, _ := base64.StdEncoding.DecodeString(c.RequestChallenge.Nonce)
			proof, err := attest.Prove(context.Background(), w.key, c.RequestChallenge.ID, nonce, c.RequestChallenge.Difficulty, w.snap)
			if err != nil {
				return
			}
			in, err := worker.ProofInput(proof, nil)
			if err != nil {
				return
			}
			a := post("submitProof", "", w.key, w.deviceID, `mutation($d: ID!, $in: ProofInput!) { submitProof(deviceId: $d, input: $in) { verdict } }`,
				map[string]any{"d": w.deviceID, "in": in})
			var res struct{ SubmitProof struct{ Verdict string } }
			if a.ok() && json.Unmarshal(a.data, &res) == nil {
				l.mu.Lock()
				l.proofs = append(l.proofs, faultProof{challengeID: c.RequestChallenge.ID, deviceID: w.deviceID, verdict: res.SubmitProof.Verdict, at: a.at})
				l.mu.Unlock()
			}
		})
	}
	return l
}

func (l *faultLoad) stopLoad() {
	l.stop()
	l.wg.Wait()
}

// checkWrites verifies the database against the load: every acknowledged owner and admin write
// is there (names, quarantines, enrollment tokens; none doubled), every acknowledged proof
// acknowledged before proofsBefore has its consumed challenge and one verdict, and no challenge
// is consumed without a verdict or has a verdict without being consumed.
func (e *faultEnv) checkWrites(l *faultLoad, proofsBefore time.Time) {
	t := e.t
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	checked := 0
	for id, r := range l.names {
		allowed := r.allowed()
		if allowed == nil {
			continue
		}
		var name string
		if err := e.check.QueryRow(`SELECT name FROM devices WHERE id = $1`, id).Scan(&name); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(allowed, name) {
			t.Errorf("device %s is named %q; the last acknowledged rename was %q (later unacknowledged: %v)", id, name, allowed[0], allowed[1:])
		}
		checked++
	}
	for id, r := range l.quar {
		allowed := r.allowed()
		if allowed == nil {
			continue
		}
		var reason sql.NullString
		if err := e.check.QueryRow(`SELECT quarantine_reason FROM devices WHERE id = $1 AND quarantined_at IS NOT NULL`, id).Scan(&reason); err != nil && !errors.Is(err, sql.ErrNoRows) {
			t.Fatal(err)
		}
		got := "released"
		if reason.Valid {
			got = "q:" + reason.String
		}
		if !slices.Contains(allowed, got) {
			t.Errorf("device %s: quarantine state %q; the last acknowledged was %q (later unacknowledged: %v)", id, got, allowed[0], allowed[1:])
		}
		checked++
	}
	if checked == 0 {
		t.Error("no acknowledged owner or admin write to check")
	}
	var tokens int
	if err := e.check.QueryRow(`SELECT count(*) FROM enrollment_tokens t JOIN users u ON u.id = t.owner_id
		WHERE u.email = 'alice@example.com' AND t.used_at IS NULL`).Scan(&tokens); err != nil {
		t.Fatal(err)
	}
	if tokens < l.tokens.acked || tokens > l.tokens.attempts {
		t.Errorf("%d unused enrollment tokens of alice; %d acknowledged of %d attempts", tokens, l.tokens.acked, l.tokens.attempts)
	}
	kept, lost := 0, 0
	for _, p := range l.proofs {
		var verdicts int
		var consumed bool
		if err := e.check.QueryRow(`SELECT (SELECT count(*) FROM attestations WHERE challenge_id = $1 AND device_id = $2),
				(SELECT consumed_at IS NOT NULL FROM challenges WHERE id = $1)`, p.challengeID, p.deviceID).Scan(&verdicts, &consumed); err != nil && !errors.Is(err, sql.ErrNoRows) {
			t.Fatal(err)
		}
		switch {
		case verdicts == 1 && consumed:
			kept++
		case verdicts > 1:
			t.Errorf("challenge %s has %d verdicts", p.challengeID, verdicts)
		case p.at.Before(proofsBefore):
			t.Errorf("the proof for challenge %s, acknowledged %v before the fault, is lost (verdicts %d, consumed %v)",
				p.challengeID, proofsBefore.Sub(p.at), verdicts, consumed)
		default:
			lost++
		}
	}
	t.Logf("checked %d names and quarantines, %d of %d enrollment tokens acknowledged; proofs acknowledged: %d, kept %d, lost (allowed) %d",
		checked, l.tokens.acked, l.tokens.attempts, len(l.proofs), kept, lost)
	if len(l.proofs) == 0 {
		t.Error("no proof was acknowledged")
	}
	var orphans, unconsumed int
	if err := e.check.QueryRow(`SELECT
			(SELECT count(*) FROM challenges c WHERE c.consumed_at IS NOT NULL
				AND NOT EXISTS (SELECT 1 FROM attestations a WHERE a.challenge_id = c.id)),
			(SELECT count(*) FROM attestations a JOIN challenges c ON c.id = a.challenge_id WHERE c.consumed_at IS NULL)`).Scan(&orphans, &unconsumed); err != nil {
		t.Fatal(err)
	}
	if orphans != 0 || unconsumed != 0 {
		t.Errorf("challenges and verdicts disagree: %d consumed challenges without a verdict, %d verdicts of unconsumed challenges", orphans, unconsumed)
	}
}

// faultReadiness polls /readyz every 50 ms until stopped.
type faultReadiness struct {
	mu     sync.Mutex
	probes []faultProbe
	stop   chan struct{}
	done   chan struct{}
}

type faultProbe struct {
	sent, at time.Time
	ready    bool
	body     string
}

func (e *faultEnv) watchReadiness() *faultReadiness {
	r := &faultReadiness{stop: make(chan struct{}), done: make(chan struct{})}
	hc := &http.Client{Timeout: 5 * time.Second}
	go func() {
		defer close(r.done)
		for {
			p := faultProbe{sent: time.Now()}
			if resp, err := hc.Get(e.base + "/readyz"); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				p.ready, p.body = resp.StatusCode == http.StatusOK, string(b)
			}
			p.at = time.Now()
			r.mu.Lock()
			r.probes = append(r.probes, p)
			r.mu.Unlock()
			select {
			case <-r.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return r
}

func (r *faultReadiness) finish() []faultProbe {
	close(r.stop)
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.probes
}

// checkOutage asserts that /readyz said not ready (with a reason) for every probe made entirely
// while the database was down (from downFrom until it was started again at downUntil), and that
// it was ready again within 10 s of the database accepting connections at back; it returns how
// long that took (0 when a probe saw it ready before the start returned).
func (e *faultEnv) checkOutage(probes []faultProbe, downFrom, downUntil, back time.Time) time.Duration {
	t := e.t
	t.Helper()
	sawDown := false
	for _, p := range probes {
		if p.sent.After(downFrom) && p.at.Before(downUntil) {
			if p.ready {
				t.Errorf("/readyz said ready at %v while the database was down", p.at.Sub(downFrom))
			} else {
				sawDown = true
				if !strings.Contains(p.body, "database unreachable") {
					t.Errorf("/readyz while the database was down: %s", p.body)
				}
			}
		}
	}
	if !sawDown {
		t.Error("no /readyz probe while the database was down")
	}
	for _, p := range probes {
		if p.sent.After(downUntil) && p.ready {
			took := max(0, p.at.Sub(back))
			if took > 10*time.Second {
				t.Errorf("ready again %v after the database returned; want within 10s", took)
			}
			return took
		}
	}
	t.Error("/readyz never said ready again after the database returned")
	return 0
}

// checkRecovered asserts that every kind of request succeeded again after the database
// returned at back.
func (l *faultLoad) checkRecovered(t *testing.T, back time.Time) {
	t.Helper()
	for _, op := range []string{"explorer", "updateDevice", "quarantineDevice", "heartbeat", "submitProof"} {
		if !l.lastSuccess(op).After(back) {
			t.Errorf("no %s succeeded after the database returned", op)
		}
	}
}

// faultDatabaseDownCodes are the error codes a client may see while the database is down or
// restarting: UNAVAILABLE (retry later), TIMEOUT (the request's deadline passed while it
// waited) and OVERLOADED (too many waiting; HTTP 503).
var faultDatabaseDownCodes = []string{"UNAVAILABLE", "TIMEOUT", "OVERLOADED"}

// PostgreSQL restarted twice under load, once at once (fast shutdown and start) and once with a
// few seconds between: /readyz follows the database, the gateway recovers by itself, clients see
// only clear codes, and every acknowledged write is in the database, none doubled.
func TestFaultPostgresRestartedUnderLoad(t *testing.T) {
	t.Parallel()
	e := faultCluster(t, false)
	e.startGateway(4, "--request-timeout", "5s")
	ready := e.watchReadiness()
	l := e.startLoad()
	time.Sleep(2 * time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var outages [][3]time.Time // stopped, starting again, accepting connections
	for _, down := range []time.Duration{0, 3 * time.Second} {
		if err := e.pg.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		stopped := time.Now()
		time.Sleep(down + 500*time.Millisecond) // the load runs against a gateway without database
		starting := time.Now()
		pg, err := pglocal.Start(ctx, e.opts)
		if err != nil {
			t.Fatal(err)
		}
		e.pg = pg
		outages = append(outages, [3]time.Time{stopped, starting, time.Now()})
		time.Sleep(4 * time.Second)
	}
	l.stopLoad()
	probes := ready.finish()
	for i, o := range outages {
		took := e.checkOutage(probes, o[0], o[1], o[2])
		t.Logf("outage %d: database down %v, started in %v, gateway ready %v after that", i+1, o[1].Sub(o[0]).Round(time.Millisecond),
			o[2].Sub(o[1]).Round(time.Millisecond), took.Round(time.Millisecond))
	}
	l.checkRecovered(t, outages[len(outages)-1][2])
	l.rec.check(t, faultDatabaseDownCodes, nil)
	e.checkWrites(l, time.Now())
}

// PostgreSQL killed (SIGKILL: no shutdown checkpoint, crash recovery at the next start) on a
// cluster with durable commits: every acknowledged owner and admin write survives; proofs
// (committed without waiting for the WAL flush) acknowledged more than 3 × wal_writer_delay
// before the kill survive too, and no challenge is left without its verdict or the reverse.
func TestFaultPostgresKilledUnderLoad(t *testing.T) {
	t.Parallel()
	e := faultCluster(t, true)
	var syncCommit string
	if err := e.check.QueryRow(`SHOW synchronous_commit`).Scan(&syncCommit); err != nil || syncCommit != "on" {
		t.Fatalf("synchronous_commit = %q (%v), want on", syncCommit, err)
	}
	e.startGateway(4, "--request-timeout", "5s")
	ready := e.watchReadiness()
	l := e.startLoad()
	time.Sleep(3 * time.Second)

	killed := time.Now()
	if err := e.pg.Kill(); err != nil {
		t.Fatal(err)
	}
	dead := time.Now() // every PostgreSQL process is gone
	time.Sleep(2 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	starting := time.Now()
	pg, err := pglocal.Start(ctx, e.opts)
	if err != nil {
		t.Fatal(err)
	}
	e.pg = pg
	back := time.Now()
	time.Sleep(4 * time.Second)
	l.stopLoad()
	took := e.checkOutage(ready.finish(), dead, starting, back)
	t.Logf("database killed, started again after 2s in %v (crash recovery included); gateway ready %v later",
		back.Sub(starting).Round(time.Millisecond), took.Round(time.Millisecond))
	l.checkRecovered(t, back)
	l.rec.check(t, faultDatabaseDownCodes, nil)
	// The bound docs/resilience.md gives, plus slack for a loaded machine's scheduling of the
	// WAL writer.
	e.checkWrites(l, killed.Add(-3*faultWALWriterDelay-400*time.Millisecond))
}

// faultBackends counts the gateway's connections to database dbname (all, and those running a
// query) as pg_stat_activity shows them, leaving out the caller's own.
func faultBackends(t *testing.T, x *sql.DB, dbname string) (total, active int) {
	t.Helper()
	if err := x.QueryRow(`SELECT count(*), count(*) FILTER (WHERE state = 'active') FROM pg_stat_activity
		WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'`, dbname).Scan(&total, &active); err != nil {
		t.Fatal(err)
	}
	return total, active
}

// PostgreSQL slow (a table locked by an administrator's transaction): requests end at their
// deadline with TIMEOUT (or OVERLOADED while the queue is full), PostgreSQL cancels their
// queries, the pool does not grow past its size or leak, and a cheap request answers once the
// lock is gone.
func TestFaultPostgresSlowRequestsEndAtTheirDeadline(t *testing.T) {
	t.Parallel()
	x, dsn := dbtest.NewWithDSN(t)
	var dbname string
	if err := x.Get(&dbname, `SELECT current_database()`); err != nil {
		t.Fatal(err)
	}
	const timeout = 2 * time.Second
	e := &faultEnv{t: t, dsn: dsn, check: x.DB, hc: faultClient()}
	e.startGateway(3, "--request-timeout", timeout.String())

	tx, err := x.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`LOCK TABLE devices IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	locked := time.Now()
	l := e.startLoad()
	// Well past the deadline: no query of the gateway still waits for the lock.
	time.Sleep(timeout + 3*time.Second)
	var waiting int
	if err := x.Get(&waiting, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()
		AND wait_event_type = 'Lock' AND now() - query_start > $2 * interval '1 second'`, dbname, (timeout + 2*time.Second).Seconds()); err != nil {
		t.Fatal(err)
	}
	if waiting != 0 {
		t.Errorf("%d queries still wait for the lock more than 2 s past the request deadline: not cancelled", waiting)
	}
	var cancelled int
	if err := x.Get(&cancelled, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()
		AND wait_event_type = 'Lock'`, dbname); err != nil {
		t.Fatal(err)
	}
	totalDuring, _ := faultBackends(t, x.DB, dbname)
	time.Sleep(2 * time.Second)
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	unlocked := time.Now()
	// A cheap request answers at once: the pool is not exhausted.
	a := faultPost(context.Background(), e.hc, e.base, "cheap", "", nil, "", `{ devices(first: 1) { edges { node { id } } } }`, nil)
	if !a.ok() || time.Since(unlocked) > timeout {
		t.Errorf("a cheap request after the lock: %v HTTP %d %s (after %v)", a.err, a.status, a.raw, time.Since(unlocked))
	}
	time.Sleep(time.Second)
	l.stopLoad()
	l.checkRecovered(t, unlocked)
	timeouts := 0
	for _, a := range l.rec.all() {
		if slices.Contains(a.codes(), "TIMEOUT") {
			timeouts++
			// The deadline plus slack for a shared CI machine's scheduling: an answer that waited
			// for the lock to go (6 s) would be far later.
			if d := a.at.Sub(a.sent); d > timeout+2*time.Second {
				t.Errorf("%s answered TIMEOUT after %v; the deadline is %v", a.op, d, timeout)
			}
		}
	}
	if timeouts == 0 {
		t.Error("no request timed out while the table was locked")
	}
	l.rec.check(t, []string{"TIMEOUT", "OVERLOADED"}, nil)
	time.Sleep(500 * time.Millisecond)
	total, active := faultBackends(t, x.DB, dbname)
	t.Logf("locked %v: %d TIMEOUT answers; backends during %d, after %d (%d running a query); waiting for the lock at the end: %d",
		unlocked.Sub(locked).Round(time.Millisecond), timeouts, totalDuring, total, active, cancelled)
	// The pools' sizes: 20 app connections, the explorer's, and the kill switches' listener.
	if totalDuring > 41 || total > 41 || active != 0 {
		t.Errorf("connections: %d during, %d after with %d running a query; want at most the pools' 41 and none running", totalDuring, total, active)
	}
}

// SIGTERM under load: requests in flight when the signal arrives, slow ones held near their
// deadline by a lock among them, all complete with their normal answer; no client sees a reset
// or an EOF; connections are refused only once the drain began; the process exits 0.
func TestFaultSIGTERMUnderLoadDrainsEveryRequest(t *testing.T) {
	t.Parallel()
	x, dsn := dbtest.NewWithDSN(t)
	e := &faultEnv{t: t, dsn: dsn, check: x.DB, hc: faultClient()}
	e.startGateway(4, "--request-timeout", "8s")
	l := e.startLoad()
	// Cheap keep-alive clients that never pause: their connections are idle only between one
	// answer and the next request, the moment a careless shutdown closes them.
	var cheap sync.WaitGroup
	cheapCtx, stopCheap := context.WithCancel(context.Background())
	for range 6 {
		cheap.Add(1)
		go func() {
			defer cheap.Done()
			for cheapCtx.Err() == nil {
				a := faultPost(context.Background(), e.hc, e.base, "cheap", "", nil, "", `{ __typename }`, nil)
				l.record(a)
				if a.err != nil {
					time.Sleep(50 * time.Millisecond) // refused: the gateway is going away
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	tx, err := x.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`LOCK TABLE devices IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		var n int
		_ = x.Get(&n, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()`)
		return n >= 3
	})
	term := time.Now()
	if err := e.g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // the held requests wait for the lock across the whole drain
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	var exitErr error
	select {
	case exitErr = <-e.g.done:
	case <-time.After(30 * time.Second):
		t.Fatal("no exit within 30s of SIGTERM")
	}
	exited := time.Now()
	stopCheap()
	cheap.Wait()
	l.stopLoad()
	if exitErr != nil {
		t.Errorf("exit after SIGTERM: %v", exitErr)
	}
	e.g.done <- exitErr // for the cleanup of start
	answeredAfter := 0
	for _, a := range l.rec.all() {
		if a.sent.Before(term) && a.at.After(term) && a.ok() {
			answeredAfter++
		}
	}
	if answeredAfter == 0 {
		t.Error("no request was in flight across the SIGTERM")
	}
	// A request sent after the drain began may find the listener closed (connection refused);
	// nothing else may fail, and nothing sent before the signal may fail at all.
	l.rec.check(t, nil, func(a faultAnswer) bool {
		var op *net.OpError
		return a.sent.After(term) && errors.As(a.err, &op) && op.Op == "dial" && errors.Is(a.err, syscall.ECONNREFUSED)
	})
	t.Logf("SIGTERM to exit %v; %d requests sent before it were answered after it", exited.Sub(term).Round(time.Millisecond), answeredAfter)
}

// The mutations a client retries after losing the answer (docs/resilience.md, "Which mutations
// are safe to retry"): a retried enrollment (same token, same key) and a retried addDeviceKey
// answer what the first did and write nothing twice; a retried proof returns the stored verdict.
// Everyone else still gets the refusal: another key with a used token, another owner adding
// the key, the owner re-adding a revoked key.
func TestFaultRetriedMutationsAreIdempotent(t *testing.T) {
	t.Parallel()
	x, dsn := dbtest.NewWithDSN(t)
	e := &faultEnv{t: t, dsn: dsn, check: x.DB, hc: faultClient()}
	e.startGateway(0)
	bob := faultToken(t, e.base, "bob")
	ctx := context.Background()

	token := e.enrollmentToken(t, e.alice)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	w := &faultWorker{key: key, snap: faultSnapshot(900)}
	first, retry := e.enrollWith(w, token), e.enrollWith(w, token)
	if !first.ok() || !retry.ok() || string(first.data) != string(retry.data) {
		t.Fatalf("enrollment and its retry:\n%s\n%s", first.raw, retry.raw)
	}
	var enrolled struct {
		EnrollDevice struct{ DeviceID, CredentialID string }
	}
	_ = json.Unmarshal(first.data, &enrolled)
	w.deviceID = enrolled.EnrollDevice.DeviceID
	var devices, creds int
	if err := x.Get(&devices, `SELECT count(*) FROM devices d JOIN device_credentials c ON c.device_id = d.id WHERE c.fingerprint = (
		SELECT fingerprint FROM device_credentials WHERE id = $1)`, enrolled.EnrollDevice.CredentialID); err != nil || devices != 1 {
		t.Fatalf("devices enrolled with the key: %d %v", devices, err)
	}
	// Another key with the used token: refused, as before.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	if a := e.enrollWith(&faultWorker{key: other, snap: faultSnapshot(901)}, token); len(a.errs) != 1 || a.errs[0].Code() != "BAD_USER_INPUT" {
		t.Fatalf("another key with a used token: %s", a.raw)
	}

	const addKey = `mutation($id: ID!, $k: String!) { addDeviceKey(id: $id, publicKey: $k) { id } }`
	_, next, _ := ed25519.GenerateKey(rand.Reader)
	nextPub := base64.StdEncoding.EncodeToString(next.Public().(ed25519.PublicKey))
	vars := map[string]any{"id": w.deviceID, "k": nextPub}
	added, again := faultPost(ctx, e.hc, e.base, "addDeviceKey", e.alice, nil, "", addKey, vars), faultPost(ctx, e.hc, e.base, "addDeviceKey", e.alice, nil, "", addKey, vars)
	if !added.ok() || !again.ok() || string(added.data) != string(again.data) {
		t.Fatalf("addDeviceKey and its retry:\n%s\n%s", added.raw, again.raw)
	}
	if err := x.Get(&creds, `SELECT count(*) FROM device_credentials WHERE device_id = $1`, w.deviceID); err != nil || creds != 2 {
		t.Fatalf("credentials of the device after a retried addDeviceKey: %d %v", creds, err)
	}
	// bob adds alice's new key to his own device: still a conflict.
	bobs := &faultWorker{snap: faultSnapshot(902)}
	_, bobs.key, _ = ed25519.GenerateKey(rand.Reader)
	var bobEnrolled struct{ EnrollDevice struct{ DeviceID string } }
	if a := e.enrollWith(bobs, e.enrollmentToken(t, bob)); !a.ok() || json.Unmarshal(a.data, &bobEnrolled) != nil {
		t.Fatalf("bob's enrollment: %s", a.raw)
	}
	if a := faultPost(ctx, e.hc, e.base, "addDeviceKey", bob, nil, "", addKey, map[string]any{"id": bobEnrolled.EnrollDevice.DeviceID, "k": nextPub}); len(a.errs) != 1 || a.errs[0].Code() != "CONFLICT" {
		t.Fatalf("bob adding alice's key: %s", a.raw)
	}
	// bob adds it to alice's device: forbidden, as before.
	if a := faultPost(ctx, e.hc, e.base, "addDeviceKey", bob, nil, "", addKey, vars); len(a.errs) != 1 || a.errs[0].Code() != "FORBIDDEN" {
		t.Fatalf("bob adding a key to alice's device: %s", a.raw)
	}
	// alice revokes the key and adds it again: a revoked key stays retired.
	var addedKey struct{ AddDeviceKey struct{ ID string } }
	_ = json.Unmarshal(added.data, &addedKey)
	if a := faultPost(ctx, e.hc, e.base, "revokeDeviceKey", e.alice, nil, "", `mutation($id: ID!, $c: ID!) { revokeDeviceKey(id: $id, credentialId: $c) { id } }`,
		map[string]any{"id": w.deviceID, "c": addedKey.AddDeviceKey.ID}); !a.ok() {
		t.Fatalf("revokeDeviceKey: %s", a.raw)
	}
	if a := faultPost(ctx, e.hc, e.base, "addDeviceKey", e.alice, nil, "", addKey, vars); len(a.errs) != 1 || a.errs[0].Code() != "CONFLICT" {
		t.Fatalf("re-adding a revoked key: %s", a.raw)
	}

	// A proof submitted twice (the worker never does, but a proxy may): one verdict, returned twice.
	ch := faultPost(ctx, e.hc, e.base, "requestChallenge", "", w.key, w.deviceID, `mutation($d: ID!) { requestChallenge(deviceId: $d) { id nonce difficulty } }`,
		map[string]any{"d": w.deviceID})
	var c struct {
		RequestChallenge struct {
			ID, Nonce  string
			Difficulty int
		}
	}
	if !ch.ok() || json.Unmarshal(ch.data, &c) != nil {
		t.Fatalf("requestChallenge: %s", ch.raw)
	}
	nonce, _ := base64.StdEncoding.DecodeString(c.RequestChallenge.Nonce)
	proof, err := attest.Prove(ctx, w.key, c.RequestChallenge.ID, nonce, c.RequestChallenge.Difficulty, w.snap)
	if err != nil {
		t.Fatal(err)
	}
	in, _ := worker.ProofInput(proof, nil)
	const submit = `mutation($d: ID!, $in: ProofInput!) { submitProof(deviceId: $d, input: $in) { verdict reasons } }`
	p1 := faultPost(ctx, e.hc, e.base, "submitProof", "", w.key, w.deviceID, submit, map[string]any{"d": w.deviceID, "in": in})
	p2 := faultPost(ctx, e.hc, e.base, "submitProof", "", w.key, w.deviceID, submit, map[string]any{"d": w.deviceID, "in": in})
	if !p1.ok() || !p2.ok() || string(p1.data) != string(p2.data) {
		t.Fatalf("submitProof and its retry:\n%s\n%s", p1.raw, p2.raw)
	}
	var verdicts int
	if err := x.Get(&verdicts, `SELECT count(*) FROM attestations WHERE challenge_id = $1`, c.RequestChallenge.ID); err != nil || verdicts != 1 {
		t.Fatalf("verdicts of the challenge after a retried proof: %d %v", verdicts, err)
	}

	// Once the device is removed, its enrollment cannot be replayed back to life.
	if a := faultPost(ctx, e.hc, e.base, "removeDevice", e.alice, nil, "", `mutation($id: ID!) { removeDevice(id: $id) { id } }`,
		map[string]any{"id": w.deviceID}); !a.ok() {
		t.Fatalf("removeDevice: %s", a.raw)
	}
	if a := e.enrollWith(w, token); len(a.errs) != 1 || a.errs[0].Code() != "BAD_USER_INPUT" {
		t.Fatalf("the enrollment of a removed device retried: %s", a.raw)
	}
}

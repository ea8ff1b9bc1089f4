package gateway_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/guard"
	"github.com/gpugate/gpugate/metrics"
	"github.com/gpugate/gpugate/metrics/alert"
	"github.com/gpugate/gpugate/resolvers"
)

// scrape GETs base+"/metrics" and returns its status and series (name{labels} -> value).
func scrape(t *testing.T, base string) (int, map[string]float64) {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	series := map[string]float64{}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, series
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		series[line[:i]] = v
	}
	return resp.StatusCode, series
}

// sum adds the series whose name{labels} matches re.
func sum(series map[string]float64, re string) float64 {
	r := regexp.MustCompile(re)
	var n float64
	for k, v := range series {
		if r.MatchString(k) {
			n += v
		}
	}
	return n
}

// In dev mode /metrics is served on the gateway's port, and counts what happened: requests by
// operation and code, their latency, writes and denials from the guard, judged proofs, cache
// hits, the admission lanes, the database pool and the Go runtime.
func TestMetricsOnTheGatewayPortInDevMode(t *testing.T) {
	t.Parallel()
	p := newIDP(t)
	o := newOwnersWith(t, p, gateway.Config{Dev: true, Verifier: p.verifier, RoleNames: map[model.Role]string{model.RoleAdmin: "ADMIN"},
		Workers: resolvers.WorkerConfig{Difficulty: 8}, PublicCacheTTL: time.Minute, Metrics: metrics.New()})
	rename := `mutation($id: ID!) { updateDevice(id: $id, input: {name: "renamed"}) { id } }`
	if r := o.as(bearer(o.idp.sign(o.idp.claims("alice"))), rename, map[string]any{"id": o.aliceDevice}); len(r.Errors) != 0 {
		t.Fatalf("alice's rename: %s", r.RawBody)
	}
	if r := o.as(bearer(o.idp.sign(o.idp.claims("bob"))), rename, map[string]any{"id": o.aliceDevice}); len(r.Errors) != 1 || r.Errors[0].Code() != "FORBIDDEN" {
		t.Fatalf("bob's rename: %s", r.RawBody)
	}
	stats := `{ networkStats { devices } }`
	o.post(stats, nil)
	if r := o.post(stats, nil); r.Header.Get("X-Cache") != "hit" {
		t.Fatal("the second anonymous query should be a cache hit")
	}
	w := o.enrolledWorker(t, "alice", h100Host(9))
	var ch struct{ RequestChallenge struct{ ID, Nonce string } }
	w.call(`mutation($d: ID!) { requestChallenge(deviceId: $d) { id nonce } }`, map[string]any{"d": w.deviceID}).Decode(t, &ch)
	nonce, _ := base64.StdEncoding.DecodeString(ch.RequestChallenge.Nonce)
	proof, err := attest.Prove(context.Background(), w.priv, ch.RequestChallenge.ID, nonce, 8, h100Host(9))
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := json.Marshal(proof.Snapshot)
	var res struct{ SubmitProof struct{ Verdict string } }
	w.call(`mutation($d: ID!, $in: ProofInput!) { submitProof(deviceId: $d, input: $in) { verdict } }`,
		map[string]any{"d": w.deviceID, "in": map[string]any{"challengeId": proof.ChallengeID,
			"counter": strconv.FormatUint(proof.Counter, 10), "snapshot": string(snap),
			"signature": base64.StdEncoding.EncodeToString(proof.Signature)}}).Decode(t, &res)
	if res.SubmitProof.Verdict != "PASSED" {
		t.Fatalf("proof: %+v", res)
	}

	status, s := scrape(t, o.url)
	if status != http.StatusOK {
		t.Fatalf("/metrics answered %d", status)
	}
	for series, want := range map[string]float64{
		`gpugate_requests_total{code="OK",operation="updateDevice",type="mutation"}`:        1,
		`gpugate_requests_total{code="FORBIDDEN",operation="updateDevice",type="mutation"}`: 1,
		`gpugate_requests_total{code="OK",operation="networkStats",type="query"}`:           2, // the hit too
		`gpugate_requests_total{code="OK",operation="submitProof",type="mutation"}`:         1,
		`gpugate_request_duration_seconds_count{operation="updateDevice"}`:                  2,
		`gpugate_writes_total{class="DEVICE_METADATA",outcome="SUCCEEDED"}`:                 1,
		`gpugate_writes_total{class="DEVICE_METADATA",outcome="DENIED"}`:                    1,
		`gpugate_writes_total{class="PROOFS",outcome="SUCCEEDED"}`:                          2,
		`gpugate_writes_total{class="ENROLLMENT",outcome="SUCCEEDED"}`:                      2,
		`gpugate_writes_total{class="HEARTBEATS",outcome="SUCCEEDED"}`:                      0,
		`gpugate_denials_total{class="DEVICE_METADATA",reason="FORBIDDEN"}`:                 1,
		`gpugate_rate_limited_total{class="DEVICE_METADATA"}`:                               0,
		`gpugate_public_cache_requests_total{result="hit"}`:                                 1,
		`gpugate_admission_slots{lane="general"}`:                                           8,
		`gpugate_admission_slots{lane="workers"}`:                                           64,
		`gpugate_admission_in_flight{lane="heavy"}`:                                         0,
		`go_sql_max_open_connections{db_name="gpugate"}`:                                    s[`go_sql_max_open_connections{db_name="gpugate"}`],
	} {
		got, ok := s[series]
		if !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	if n := sum(s, `^gpugate_proofs_total\{.*verdict="PASSED"`); n != 1 {
		t.Errorf("proofs PASSED: %v", n)
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "go_sql_open_connections{db_name=\"gpugate\"}"} {
		if _, ok := s[name]; !ok {
			t.Errorf("%s missing", name)
		}
	}
}

// Outside dev mode /metrics is not on the public port (404) unless asked for; the registry's
// handler, which `gpugate serve --metrics-listen` serves apart, has it.
func TestMetricsNotOnThePublicPortInProduction(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	e := newEnv(t, 0, gateway.Config{Metrics: m})
	if r := e.post(`{ networkStats { devices } }`, nil); len(r.Errors) != 0 {
		t.Fatal(r.RawBody)
	}
	if status, _ := scrape(t, e.url); status != http.StatusNotFound {
		t.Fatalf("production /metrics on the public port answered %d, want 404", status)
	}
	apart := newServer(t, m.Handler())
	status, s := scrape(t, apart)
	if status != http.StatusOK || s[`gpugate_requests_total{code="OK",operation="networkStats",type="query"}`] != 1 {
		t.Fatalf("the separate handler: %d %v", status, s)
	}
	asked := newEnv(t, 0, gateway.Config{Metrics: metrics.New(), PublicMetrics: true})
	if status, _ := scrape(t, asked.url); status != http.StatusOK {
		t.Fatalf("--metrics-public: /metrics answered %d", status)
	}
	if status, _ := scrape(t, newEnv(t, 0, gateway.Config{Dev: true}).url); status != http.StatusNotFound {
		t.Fatalf("without a registry /metrics answered %d", status)
	}
}

// Nothing a client chooses becomes a label value: operation names, aliases, unknown fields and
// malformed bodies fold into the schema's root fields and a few fixed values, so a client
// cannot create series.
func TestMetricsLabelsAreBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0, gateway.Config{Dev: true, Metrics: metrics.New()})
	send := func(i int) {
		e.post(fmt.Sprintf(`query evilName%d { evilAlias%d: networkStats { devices } }`, i, i), nil)
		two, _ := json.Marshal(map[string]any{"operationName": fmt.Sprintf("evilB%d", i),
			"query": fmt.Sprintf(`query evilA%d { networkStats { devices } } query evilB%d { devices(first: 1) { pageInfo { hasNextPage } } }`, i, i)})
		e.raw(http.MethodPost, "/graphql", "application/json", two, nil)
		e.post(fmt.Sprintf(`{ evilField%d }`, i), nil)
		e.post(fmt.Sprintf(`{ networkStats { devices } evil%d: devices(first: 1) { pageInfo { hasNextPage } } }`, i), nil)
		e.raw(http.MethodPost, "/graphql", "application/json", []byte(fmt.Sprintf(`{"query": "evil%d`, i)), nil)
		e.raw(http.MethodGet, "/graphql?operationName=evil"+strconv.Itoa(i)+"&query="+url.QueryEscape(`query evilGet { networkStats { devices } }`), "", nil, nil)
	}
	requestSeries := func() (map[string]float64, int) {
		_, s := scrape(t, e.url)
		n := 0
		for k := range s {
			if strings.HasPrefix(k, "gpugate_request") {
				n++
			}
		}
		return s, n
	}
	send(0)
	_, before := requestSeries()
	for i := 1; i < 30; i++ {
		send(i)
	}
	s, after := requestSeries()
	if after != before {
		t.Fatalf("client-chosen names created series: %d before, %d after", before, after)
	}
	allowed := map[string]bool{"_none": true, "_multiple": true, "_introspection": true, "_cached": true}
	body, _ := io.ReadAll(strings.NewReader(fmt.Sprint(s)))
	if strings.Contains(strings.ToLower(string(body)), "evil") {
		t.Fatalf("a client-chosen name reached the metrics: %s", body)
	}
	op := regexp.MustCompile(`operation="([^"]*)"`)
	for k := range s {
		if m := op.FindStringSubmatch(k); m != nil && !allowed[m[1]] && m[1] != "networkStats" && m[1] != "devices" {
			t.Errorf("unexpected operation label in %s", k)
		}
	}
	for _, want := range []string{
		`gpugate_requests_total{code="OK",operation="networkStats",type="query"}`,
		`gpugate_requests_total{code="OK",operation="devices",type="query"}`,
		`gpugate_requests_total{code="OK",operation="_multiple",type="query"}`,
		`gpugate_requests_total{code="GRAPHQL_VALIDATION_FAILED",operation="_none",type=""}`,
	} {
		if s[want] == 0 {
			t.Errorf("%s missing", want)
		}
	}
}

func newServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// BenchmarkDeviceByIDWithMetrics is BenchmarkDeviceByID with the metrics on, to compare:
//
//	go test -run XXX -bench 'DeviceByID' -benchmem -count 5 ./gateway/
func BenchmarkDeviceByIDWithMetrics(b *testing.B) {
	x := dbtest.New(b)
	store := db.New(x, db.Options{})
	if _, err := store.Seed(context.Background(), 3000); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(gateway.New(gateway.Config{Metrics: metrics.New()}, store,
		slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	b.Cleanup(srv.Close)
	body := `{"query":"{ device(id: \"6a88570e-be5f-459a-82fa-d6b0f936cafd\") { id name status region verification gpuModel gpuCount lastSeenAt createdAt } }"}`
	b.ReportAllocs()
	for b.Loop() {
		resp, err := http.Post(srv.URL+"/graphql", "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// killSwitchCalls stands in for the kill switch (tested in its own package) and records calls.
type killSwitchCalls struct {
	mu    sync.Mutex
	calls []string
}

func (k *killSwitchCalls) Disable(_ context.Context, class guard.Class, _, by string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls = append(k.calls, string(class)+" "+by)
	return nil
}

// The detector, subscribed through the gateway's config, sees the guard's writes of real
// requests: an owner renaming more distinct devices than allowed raises identity_targets and
// trips the configured switch; nothing a refused caller tries counts.
func TestDetectorSeesTheGatewaysWrites(t *testing.T) {
	t.Parallel()
	sw := &killSwitchCalls{}
	m := metrics.New()
	det, err := alert.New(alert.Config{MaxTargets: 3, Switch: sw, TripClasses: map[guard.Class]bool{guard.ClassDeviceMetadata: true},
		Registerer: m.Registry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	p := newIDP(t)
	o := newOwnersWith(t, p, gateway.Config{Verifier: p.verifier, Metrics: m, PublicMetrics: true, GuardObservers: []func(guard.Event){det.Observe}})
	var ids []string
	if err := o.x.Select(&ids, `SELECT id FROM devices WHERE owner_id = $1 ORDER BY id LIMIT 4`, o.alice); err != nil || len(ids) < 4 {
		t.Fatalf("alice's devices: %v %v", ids, err)
	}
	rename := `mutation($id: ID!) { updateDevice(id: $id, input: {name: "renamed"}) { id } }`
	for _, id := range ids { // bob is refused on all of them: that counts for nothing
		o.as(bearer(o.idp.sign(o.idp.claims("bob"))), rename, map[string]any{"id": id})
	}
	if fired := det.Evaluate(context.Background()); len(fired) != 0 {
		t.Fatalf("refused writes alerted: %+v", fired)
	}
	for _, id := range ids[:3] {
		o.as(bearer(o.idp.sign(o.idp.claims("alice"))), rename, map[string]any{"id": id})
	}
	if fired := det.Evaluate(context.Background()); len(fired) != 0 {
		t.Fatalf("three renames alerted: %+v", fired)
	}
	o.as(bearer(o.idp.sign(o.idp.claims("alice"))), rename, map[string]any{"id": ids[3]})
	fired := det.Evaluate(context.Background())
	if len(fired) != 1 || fired[0].Rule != alert.RuleIdentityTargets || fired[0].Actor != "user:"+o.alice || fired[0].KillSwitch != "tripped" {
		t.Fatalf("fourth distinct device: %+v", fired)
	}
	if len(sw.calls) != 1 || sw.calls[0] != "DEVICE_METADATA alert:identity_targets" {
		t.Fatalf("switch calls: %q", sw.calls)
	}
	if _, s := scrape(t, o.url); s[`gpugate_alerts_total{class="DEVICE_METADATA",rule="identity_targets"}`] != 1 {
		t.Fatal("gpugate_alerts_total does not show the alert")
	}
}

// Package metrics holds gpugate's Prometheus series (docs/operations.md, "Metrics"): requests by
// operation and code, their latency, writes by class and outcome and denials by reason (both from
// the guard's events), proofs by verdict and level, public cache use, admission lanes, the
// database pool, background job runs, and the Go runtime and process.
//
// Every label value is chosen by the gateway, never by a client: operations are the schema's root
// fields (anything else is folded into a few fixed values), reasons and codes are normalised to
// machine codes and capped in number. A client can therefore not create series.
//
// A nil *Metrics is valid and records nothing, so the gateway can run without it.
package metrics

import (
	"database/sql"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gpugate/gpugate/guard"
)

// Fixed operation label values for requests that do not name one schema root field.
const (
	OpNone          = "_none"          // no operation ran: unparsable, invalid or refused before execution
	OpMultiple      = "_multiple"      // several distinct root fields
	OpIntrospection = "_introspection" // only __schema / __type / __typename
	OpOther         = "_other"         // a name outside the allowed set (never expected)
	OpCached        = "_cached"        // a public cache hit whose operation was not recorded
)

// CodeOK is the code label of a request answered without errors.
const CodeOK = "OK"

// OtherLabel replaces a reason or code beyond maxLabelValues distinct ones, or one that is not a
// machine code.
const OtherLabel = "OTHER"

// maxLabelValues caps the distinct values of a normalised label (reasons, codes), so that even a
// bug that put varying text into one cannot grow the series without bound.
const maxLabelValues = 128

// latencyBuckets span a cached explorer answer (~1 ms) to the request deadline (10 s).
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Metrics is gpugate's registry and series. Create it with New.
type Metrics struct {
	reg *prometheus.Registry

	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	writes      *prometheus.CounterVec
	denials     *prometheus.CounterVec
	rateLimited *prometheus.CounterVec
	proofs      *prometheus.CounterVec
	cache       *prometheus.CounterVec
	jobs        *prometheus.CounterVec
	lanes       *laneCollector
	switches    *switchCollector
	replicas    *replicaCollector

	mu      sync.Mutex
	ops     map[string]bool // allowed operation label values (the schema's root fields)
	reasons labelSet
	codes   labelSet
	dbOnce  sync.Once
}

// New returns a registry holding gpugate's series and the Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpugate_requests_total",
			Help: "GraphQL requests by operation (the schema root field; _none, _multiple, _introspection, _cached otherwise), type (query, mutation) and code (OK or the first error's extensions.code).",
		}, []string{"operation", "type", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gpugate_request_duration_seconds",
			Help:    "Time from reading a GraphQL request to its last byte written, by operation, queueing included.",
			Buckets: latencyBuckets,
		}, []string{"operation"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpugate_writes_total",
			Help: "Write attempts the guard recorded, by write class (NONE: admin moderation) and outcome (SUCCEEDED, DENIED, FLAGGED, FAILED).",
		}, []string{"class", "outcome"}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpugate_denials_total",
			Help: "Write attempts refused before they ran, by write class and reason code.",
		}, []string{"class", "reason"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpugate_rate_limited_total",
			Help: "Write attempts refused as RATE_LIMITED, by write class.",
		}, []string{"class"}),
		proofs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpugate_proofs_total",
			Help: "Proofs judged (submitProof answered with a verdict), by verdict and the device's verification level after it.",
		}, []string{"verdict", "level"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpugate_public_cache_requests_total",
			Help: "Anonymous queries looked up in the public micro-cache, by result (hit, miss).",
		}, []string{"result"}),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpugate_job_runs_total",
			Help: "Background job runs by job (mark_down, purge) and result (ok, error).",
		}, []string{"job", "result"}),
		lanes:    &laneCollector{lanes: map[string]Lane{}},
		switches: &switchCollector{},
		replicas: &replicaCollector{},
		reasons:  newLabelSet(),
		codes:    newLabelSet(),
	}
	m.reg.MustRegister(m.requests, m.latency, m.writes, m.denials, m.rateLimited, m.proofs, m.cache, m.jobs, m.lanes, m.switches, m.replicas,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every class and outcome starts at zero, so rate() and the alert rules see a series before
	// the first write of a class (an absent series is not a zero rate).
	for _, c := range guard.Classes() {
		for _, o := range []guard.Outcome{guard.Succeeded, guard.Denied, guard.Flagged, guard.Failed} {
			m.writes.WithLabelValues(string(c), string(o))
		}
		m.rateLimited.WithLabelValues(string(c))
	}
	for _, r := range []string{"hit", "miss"} {
		m.cache.WithLabelValues(r)
	}
	return m
}

// Registry returns the registry, for collectors registered elsewhere (the write-rate detector's);
// nil for a nil m.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Handler serves the registry in the Prometheus exposition format; a nil m serves 404.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// AllowOperations sets the operation label values allowed besides the fixed ones: the schema's
// root field names. Any other name is counted as _other.
func (m *Metrics) AllowOperations(names []string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ops == nil {
		m.ops = map[string]bool{}
	}
	for _, n := range names {
		m.ops[n] = true
	}
}

func (m *Metrics) operation(op string) string {
	switch op {
	case OpNone, OpMultiple, OpIntrospection, OpOther, OpCached:
		return op
	}
	m.mu.Lock()
	ok := m.ops[op]
	m.mu.Unlock()
	if !ok {
		return OpOther
	}
	return op
}

// ObserveRequest counts one GraphQL request: its operation (a root field name allowed by
// AllowOperations or one of the Op* values), type (query, mutation, or "" when none ran), code
// (CodeOK or an error code) and duration.
func (m *Metrics) ObserveRequest(op, typ, code string, d time.Duration) {
	if m == nil {
		return
	}
	op = m.operation(op)
	switch typ {
	case "query", "mutation", "subscription":
	default:
		typ = ""
	}
	if code == "" {
		code = CodeOK
	}
	m.requests.WithLabelValues(op, typ, m.codes.get(code)).Inc()
	m.latency.WithLabelValues(op).Observe(d.Seconds())
}

// ObserveGuard counts one guard event: every write by class and outcome, denials by reason,
// rate-limit refusals by class. Subscribe it to the guard.
func (m *Metrics) ObserveGuard(ev guard.Event) {
	if m == nil {
		return
	}
	class := string(ev.Class)
	if class == "" {
		class = "NONE"
	}
	outcome := m.codes.get(string(ev.Outcome))
	m.writes.WithLabelValues(class, outcome).Inc()
	if ev.Outcome != guard.Denied {
		return
	}
	reason := m.reasons.get(ReasonCode(ev.Reason))
	m.denials.WithLabelValues(class, reason).Inc()
	if reason == "RATE_LIMITED" {
		m.rateLimited.WithLabelValues(class).Inc()
	}
}

// ObserveProof counts one judged proof by its verdict (PASSED, FLAGGED) and the device's level
// ("" is counted as UNKNOWN).
func (m *Metrics) ObserveProof(verdict, level string) {
	if m == nil {
		return
	}
	if level == "" {
		level = "UNKNOWN"
	}
	m.proofs.WithLabelValues(m.codes.get(verdict), m.codes.get(level)).Inc()
}

// ObserveCache counts one public cache lookup.
func (m *Metrics) ObserveCache(hit bool) {
	if m == nil {
		return
	}
	if hit {
		m.cache.WithLabelValues("hit").Inc()
	} else {
		m.cache.WithLabelValues("miss").Inc()
	}
}

// ObserveJob counts one run of a background job; err is its failure, nil on success.
func (m *Metrics) ObserveJob(job string, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	if !jobPattern.MatchString(job) {
		job = "other"
	}
	m.jobs.WithLabelValues(job, result).Inc()
}

// WatchDB exports the pool statistics of db (go_sql_* with db_name="gpugate"): open, in use and
// idle connections, waits for a connection and the time waited. Only the first database is
// watched (one gateway process, one pool).
func (m *Metrics) WatchDB(db *sql.DB) {
	if m == nil || db == nil {
		return
	}
	m.dbOnce.Do(func() {
		m.reg.MustRegister(collectors.NewDBStatsCollector(db, "gpugate"))
	})
}

// Lane is one admission lane as the gateway reports it.
type Lane struct {
	InFlight, Queued func() int // executing now, waiting now
	Slots, Queue     int        // capacities
}

// WatchLane exports an admission lane as gpugate_admission_in_flight, _queued, _slots and
// _queue_capacity with lane=name; a second lane of the same name replaces the first.
func (m *Metrics) WatchLane(name string, l Lane) {
	if m == nil {
		return
	}
	m.lanes.mu.Lock()
	m.lanes.lanes[name] = l
	m.lanes.mu.Unlock()
}

var (
	laneInFlight = prometheus.NewDesc("gpugate_admission_in_flight", "Operations executing in an admission lane (general, workers, heavy).", []string{"lane"}, nil)
	laneQueued   = prometheus.NewDesc("gpugate_admission_queued", "Operations waiting for a slot of an admission lane.", []string{"lane"}, nil)
	laneSlots    = prometheus.NewDesc("gpugate_admission_slots", "Execution slots of an admission lane (its capacity).", []string{"lane"}, nil)
	laneQueue    = prometheus.NewDesc("gpugate_admission_queue_capacity", "Waiting places of an admission lane.", []string{"lane"}, nil)
)

// laneCollector reads the lanes at scrape time: the request path pays nothing for them.
type laneCollector struct {
	mu    sync.Mutex
	lanes map[string]Lane
}

func (c *laneCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- laneInFlight
	ch <- laneQueued
	ch <- laneSlots
	ch <- laneQueue
}

func (c *laneCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, l := range c.lanes {
		ch <- prometheus.MustNewConstMetric(laneInFlight, prometheus.GaugeValue, float64(l.InFlight()), name)
		ch <- prometheus.MustNewConstMetric(laneQueued, prometheus.GaugeValue, float64(l.Queued()), name)
		ch <- prometheus.MustNewConstMetric(laneSlots, prometheus.GaugeValue, float64(l.Slots), name)
		ch <- prometheus.MustNewConstMetric(laneQueue, prometheus.GaugeValue, float64(l.Queue), name)
	}
}

// jobPattern is a job name as the gateway's jobs are named.
var jobPattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// WatchSwitches exports the kill switches as gpugate_writes_disabled{class} (1: the class's writes
// are refused), read from disabled when scraped; disabled returns the classes switched off.
func (m *Metrics) WatchSwitches(disabled func() []guard.Class) {
	if m == nil {
		return
	}
	m.switches.mu.Lock()
	m.switches.disabled = disabled
	m.switches.mu.Unlock()
}

var switchDesc = prometheus.NewDesc("gpugate_writes_disabled", "1 while the kill switch of a write class is engaged (its writes are refused as DISABLED), else 0.", []string{"class"}, nil)

type switchCollector struct {
	mu       sync.Mutex
	disabled func() []guard.Class
}

func (c *switchCollector) Describe(ch chan<- *prometheus.Desc) { ch <- switchDesc }

func (c *switchCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	fn := c.disabled
	c.mu.Unlock()
	if fn == nil {
		return
	}
	off := map[guard.Class]bool{}
	for _, cl := range fn() {
		off[cl] = true
	}
	for _, cl := range guard.Classes() {
		v := 0.0
		if off[cl] {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(switchDesc, prometheus.GaugeValue, v, string(cl))
	}
}

// Replica is one read replica as the store last checked it (db.ReplicaState).
type Replica struct {
	Name     string  // its position in --database-replica-urls: "0", "1", ...
	Up       bool    // anonymous reads use it
	Lag      float64 // seconds of staleness; negative: unknown
	LagBytes float64 // WAL bytes not yet replayed; negative: unknown
}

// WatchReplicas exports the read replicas as gpugate_db_replica_up{replica} (1: anonymous reads
// use it), gpugate_db_replica_lag_seconds and gpugate_db_replica_lag_bytes (absent while
// unknown), read from replicas when scraped.
func (m *Metrics) WatchReplicas(replicas func() []Replica) {
	if m == nil {
		return
	}
	m.replicas.mu.Lock()
	m.replicas.list = replicas
	m.replicas.mu.Unlock()
}

var (
	replicaUpDesc   = prometheus.NewDesc("gpugate_db_replica_up", "1 while anonymous reads use a read replica (reachable, a standby, within --replica-max-lag), else 0.", []string{"replica"}, nil)
	replicaLagDesc  = prometheus.NewDesc("gpugate_db_replica_lag_seconds", "How stale a read replica is: writes the primary committed longer ago are visible on it.", []string{"replica"}, nil)
	replicaByteDesc = prometheus.NewDesc("gpugate_db_replica_lag_bytes", "WAL bytes a read replica has yet to replay.", []string{"replica"}, nil)
)

type replicaCollector struct {
	mu   sync.Mutex
	list func() []Replica
}

func (c *replicaCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- replicaUpDesc
	ch <- replicaLagDesc
	ch <- replicaByteDesc
}

func (c *replicaCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	fn := c.list
	c.mu.Unlock()
	if fn == nil {
		return
	}
	for _, r := range fn() {
		up := 0.0
		if r.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(replicaUpDesc, prometheus.GaugeValue, up, r.Name)
		if r.Lag >= 0 {
			ch <- prometheus.MustNewConstMetric(replicaLagDesc, prometheus.GaugeValue, r.Lag, r.Name)
		}
		if r.LagBytes >= 0 {
			ch <- prometheus.MustNewConstMetric(replicaByteDesc, prometheus.GaugeValue, r.LagBytes, r.Name)
		}
	}
}

// codePattern is a machine code: what reasons and error codes look like.
var codePattern = regexp.MustCompile(`^[A-Z][A-Z0-9_]{0,47}$`)

// leadingCode is a machine code opening a longer reason ("ADDRESS_CHURN: 7 distinct ...").
var leadingCode = regexp.MustCompile(`^([A-Z][A-Z0-9_]{2,47}):`)

// ReasonCode maps a guard reason to a machine code: codes stay as they are, the short words the
// directives and the worker protocol record map to the code the client was given, and anything
// else is OTHER.
func ReasonCode(reason string) string {
	reason = strings.TrimSpace(reason)
	if codePattern.MatchString(reason) {
		return reason
	}
	r := strings.ToLower(reason)
	if strings.Contains(r, "identity conflict") {
		return "IDENTITY_CONFLICT"
	}
	if m := leadingCode.FindStringSubmatch(reason); m != nil {
		return m[1]
	}
	switch {
	case strings.Contains(r, "rate limit"):
		return "RATE_LIMITED"
	case strings.Contains(r, "disabled"):
		return "DISABLED"
	case r == "unauthenticated", strings.Contains(r, "no device signature"), strings.Contains(r, "signature"):
		return "UNAUTHENTICATED"
	case strings.Contains(r, "not the owner"), strings.Contains(r, "missing role"), strings.Contains(r, "another device"),
		strings.Contains(r, "forbidden"):
		return "FORBIDDEN"
	case strings.Contains(r, "no such"), strings.Contains(r, "not found"):
		return "NOT_FOUND"
	}
	return OtherLabel
}

// labelSet admits at most maxLabelValues distinct machine codes as label values.
type labelSet struct {
	mu   *sync.Mutex
	seen map[string]bool
}

func newLabelSet() labelSet { return labelSet{mu: &sync.Mutex{}, seen: map[string]bool{}} }

func (s labelSet) get(v string) string {
	if !codePattern.MatchString(v) {
		return OtherLabel
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen[v] {
		return v
	}
	if len(s.seen) >= maxLabelValues {
		return OtherLabel
	}
	s.seen[v] = true
	return v
}

package main

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	_ "github.com/lib/pq" // PostgreSQL's own view of the connections

	"github.com/gpugate/gpugate/bench/internal/benchkit"
)

// sample is the gateway's state at one moment. A value that could not be read is -1.
type sample struct {
	At         time.Duration // since the load started
	RSS        float64       // bytes, VmRSS of the gateway process
	HeapInuse  float64       // bytes, go_memstats_heap_inuse_bytes
	HeapGoal   float64       // bytes, go_memstats_next_gc_bytes: the live heap at the last GC × (1 + GOGC/100)
	Goroutines float64       // go_goroutines
	PoolOpen   float64       // go_sql_open_connections{db_name="gpugate"}: the gateway's pool
	PoolInUse  float64       // go_sql_in_use_connections{db_name="gpugate"}
	PGClients  float64       // client backends connected to the cluster (pg_stat_activity), the sampler's own excluded
	PGActive   float64       // of which running a statement now
	CPU        benchkit.CPUTimes
}

// sampler reads the gateway's memory from /proc and /metrics and PostgreSQL's connections.
type sampler struct {
	pid     int
	metrics string  // the gateway's /metrics URL ("" skips)
	db      *sql.DB // nil skips
	http    *http.Client
}

func newSampler(pid int, metricsURL, dsn string) (*sampler, error) {
	s := &sampler{pid: pid, metrics: metricsURL, http: &http.Client{Timeout: 5 * time.Second}}
	if dsn != "" {
		db, err := sql.Open("postgres", dsn)
		if err != nil {
			return nil, fmt.Errorf("--pg-dsn: %w", err)
		}
		db.SetMaxOpenConns(1)
		s.db = db
	}
	return s, nil
}

func (s *sampler) take(ctx context.Context, at time.Duration) sample {
	m := sample{At: at, RSS: -1, HeapInuse: -1, HeapGoal: -1, Goroutines: -1, PoolOpen: -1, PoolInUse: -1, PGClients: -1, PGActive: -1}
	if s.pid != 0 {
		if kb, err := procStatusKB(s.pid, "VmRSS"); err == nil {
			m.RSS = kb * 1024
		}
		m.CPU = benchkit.CPUNow(s.pid)
	}
	if s.metrics != "" {
		if v, err := s.scrape(ctx); err == nil {
			m.HeapInuse = v["go_memstats_heap_inuse_bytes"]
			m.HeapGoal = v["go_memstats_next_gc_bytes"]
			m.Goroutines = v["go_goroutines"]
			m.PoolOpen = v[`go_sql_open_connections{db_name="gpugate"}`]
			m.PoolInUse = v[`go_sql_in_use_connections{db_name="gpugate"}`]
		}
	}
	if s.db != nil {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var clients, active int
		err := s.db.QueryRowContext(qctx, `SELECT count(*), count(*) FILTER (WHERE state = 'active')
			FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`).Scan(&clients, &active)
		if err == nil {
			m.PGClients, m.PGActive = float64(clients), float64(active)
		}
	}
	return m
}

// scrape returns the samples of the text exposition at s.metrics by series ("name" or
// "name{labels}" as written), or the error of fetching it. Only the series sample() reads
// need to parse; others may hold anything.
func (s *sampler) scrape(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.metrics, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d", s.metrics, resp.StatusCode)
	}
	return parseExposition(resp.Body)
}

// parseExposition reads Prometheus text exposition lines "series value [timestamp]"; comments
// and lines it cannot parse are skipped. It returns the error of reading r.
func parseExposition(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		// The series is the name and, when present, its labels up to the closing brace (label
		// values may hold spaces); the value follows, then maybe a timestamp.
		var series, rest string
		if i := strings.LastIndexByte(line, '}'); i >= 0 {
			series, rest = line[:i+1], line[i+1:]
		} else if i := strings.IndexByte(line, ' '); i >= 0 {
			series, rest = line[:i], line[i:]
		} else {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		out[series] = v
	}
	return out, sc.Err()
}

// procStatusKB returns the field (e.g. VmRSS, VmHWM) of /proc/pid/status in kB, or the error
// of reading it or its absence.
func procStatusKB(pid int, field string) (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)) // #nosec G304 -- /proc of the --gateway-pid
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.ParseFloat(f[0], 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// clientsByApplication returns PostgreSQL's client connections by application_name and state
// ("gpugate idle 12, ..."), or "" without --pg-dsn or when the query fails.
func (s *sampler) clientsByApplication(ctx context.Context) string {
	if s.db == nil {
		return ""
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rows, err := s.db.QueryContext(qctx, `SELECT coalesce(nullif(application_name, ''), '(none)'), coalesce(state, '?'), count(*)
		FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2`)
	if err != nil {
		return ""
	}
	defer rows.Close()
	var parts []string
	for rows.Next() {
		var app, state string
		var n int
		if err := rows.Scan(&app, &state, &n); err != nil {
			return ""
		}
		parts = append(parts, fmt.Sprintf("%s %s %d", app, state, n))
	}
	if rows.Err() != nil {
		return ""
	}
	return strings.Join(parts, ", ")
}

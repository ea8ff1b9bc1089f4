package main

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Memory verdict thresholds (docs/soak.md, "The verdict"): a series is flat when the
// least-squares line over the samples after warm-up rises by at most flatFraction of the
// series' mean across that window, or by at most its floor (small series move by a few units
// between two garbage collections without growing).
const (
	flatFraction    = 0.10
	heapFloorBytes  = 4 << 20
	rssFloorBytes   = 8 << 20
	goroutinesFloor = 20
)

// families group the kinds for the one-line interval report; the final tables list every kind.
var families = []struct {
	name  string
	kinds []string
}{
	{"heartbeat", []string{kHeartbeat}},
	{"proof", []string{kChallenge, kProof}},
	{"read", []string{kDevices, kDevice, kSearch, kStats}},
	{"write", []string{kRename, kStatus}},
}

const intervalHeader = "elapsed | per family: req/s p50/p99 ms | errors | heap goal/in-use MiB | RSS MiB | goroutines | gateway pool open/in use | PostgreSQL clients (active) | CPU gateway+PostgreSQL"

func mib(b float64) string {
	if b < 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f", b/(1<<20))
}

func num(v float64) string {
	if v < 0 {
		return "?"
	}
	return fmt.Sprintf("%.0f", v)
}

func msec(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

// merge sums the summaries of kinds into one: counts add; the percentiles are the largest of
// the parts' (an upper bound, good enough for a progress line).
func merge(sums []summary, want []string) summary {
	var m summary
	for _, s := range sums {
		if !slices.Contains(want, s.Kind) {
			continue
		}
		m.OK += s.OK
		m.Errors += s.Errors
		m.PerSecond += s.PerSecond
		m.P50, m.P99 = max(m.P50, s.P50), max(m.P99, s.P99)
	}
	return m
}

// cpuShare returns the CPU the gateway and its PostgreSQL used between two samples, in cores
// ("0.42+0.31"), or "?".
func cpuShare(prev, cur sample) string {
	d := (cur.At - prev.At).Seconds()
	if d <= 0 || (cur.CPU.Gateway == 0 && cur.CPU.Postgres == 0) {
		return "?"
	}
	return fmt.Sprintf("%.2f+%.2f", (cur.CPU.Gateway-prev.CPU.Gateway).Seconds()/d, (cur.CPU.Postgres-prev.CPU.Postgres).Seconds()/d)
}

func intervalLine(sums []summary, m, prev sample) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%7s |", m.At.Round(time.Second))
	errs := 0
	for _, f := range families {
		s := merge(sums, f.kinds)
		errs += s.Errors
		fmt.Fprintf(&b, " %s %.1f/s %s/%s", f.name, s.PerSecond, msec(s.P50), msec(s.P99))
	}
	fmt.Fprintf(&b, " | %d | %s/%s | %s | %s | %s/%s | %s (%s) | %s", errs, mib(m.HeapGoal), mib(m.HeapInuse), mib(m.RSS), num(m.Goroutines),
		num(m.PoolOpen), num(m.PoolInUse), num(m.PGClients), num(m.PGActive), cpuShare(prev, m))
	return b.String()
}

// report is the end of a run.
type report struct {
	cfg                   config
	devices               int
	started               time.Time
	elapsed               time.Duration
	totals                []summary
	steady                []summary          // after warm-up; nil for a run not longer than it
	windows               map[string]*window // the whole run's, by kind
	samples               []sample
	intervals             [][]summary
	loadBefore, loadAfter string
	interrupted           bool
	selfCPU               time.Duration
	mix                   string
	clients               string           // PostgreSQL's client connections at the end, by application and state
	unfinished            map[string]int64 // requests due but not finished when the drain after the run gave up, by stream
}

// judged returns the samples after warm-up.
func (r *report) judged() []sample {
	var out []sample
	for _, s := range r.samples {
		if s.At >= r.cfg.warmup {
			out = append(out, s)
		}
	}
	return out
}

func series(ss []sample, get func(sample) float64) ([]time.Duration, []float64) {
	var ts []time.Duration
	var ys []float64
	for _, s := range ss {
		if v := get(s); v >= 0 {
			ts, ys = append(ts, s.At), append(ys, v)
		}
	}
	return ts, ys
}

// markdown returns the report and whether the run passed: no errors and every memory series
// flat. A run too short to judge memory does not pass (its verdict says so).
func (r *report) markdown() (string, bool) {
	var b strings.Builder
	c := r.cfg
	fmt.Fprintf(&b, "### Soak run, %s UTC, %s\n\n", r.started.UTC().Format("2006-01-02 15:04"), c.duration)
	fmt.Fprintf(&b, "- machine: %d cores; load average before %s, after %s; the load generator used %.1f s of CPU (%.2f cores)\n",
		runtime.NumCPU(), r.loadBefore, r.loadAfter, r.selfCPU.Seconds(), r.selfCPU.Seconds()/r.elapsed.Seconds())
	if c.note != "" {
		fmt.Fprintf(&b, "- %s\n", c.note)
	}
	fmt.Fprintf(&b, "- %s\n", r.mix)
	if r.interrupted {
		fmt.Fprintf(&b, "- **interrupted** after %s\n", r.elapsed.Round(time.Second))
	}
	b.WriteString("\n| kind | requests | per second | p50 ms | p99 ms | max ms | p50 / p99 ms after warm-up | errors | error rate |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	var all summary
	var allLat []time.Duration
	for i, s := range r.totals {
		steady := "—"
		if r.steady != nil && r.steady[i].OK > 0 {
			steady = msec(r.steady[i].P50) + " / " + msec(r.steady[i].P99)
		}
		fmt.Fprintf(&b, "| %s | %d | %.2f | %s | %s | %s | %s | %d | %.4f%% |\n", s.Kind, s.OK+s.Errors, s.PerSecond, msec(s.P50), msec(s.P99), msec(s.Max),
			steady, s.Errors, 100*s.ErrorRate)
		all.OK += s.OK
		all.Errors += s.Errors
		all.PerSecond += s.PerSecond
		allLat = append(allLat, r.windows[s.Kind].lat...)
	}
	slices.Sort(allLat)
	rate := 0.0
	if n := all.OK + all.Errors; n > 0 {
		rate = float64(all.Errors) / float64(n)
	}
	fmt.Fprintf(&b, "| **all** | %d | %.2f | %s | %s | %s | | %d | %.4f%% |\n", all.OK+all.Errors, all.PerSecond,
		msec(percentile(allLat, 0.5)), msec(percentile(allLat, 0.99)), msec(percentile(allLat, 1)), all.Errors, 100*rate)
	var unfinished int64
	if len(r.unfinished) > 0 {
		var parts []string
		for _, name := range slices.Sorted(maps.Keys(r.unfinished)) {
			unfinished += r.unfinished[name]
			parts = append(parts, fmt.Sprintf("%s %d", name, r.unfinished[name]))
		}
		fmt.Fprintf(&b, "| **unfinished** (queued or in flight 35 s after the end; counted as errors) | %d | | | | | | %d | |\n", unfinished, unfinished)
		fmt.Fprintf(&b, "\nUnfinished requests by stream: %s.\n", strings.Join(parts, ", "))
	}
	b.WriteString("\nLatency counts from when the request was due (open loop): a gateway falling behind shows as latency, not as fewer requests.\n")

	if all.Errors > 0 {
		b.WriteString("\n| kind | cause | count | first message |\n|---|---|---:|---|\n")
		for _, k := range kinds {
			w := r.windows[k]
			causes := make([]string, 0, len(w.errs))
			for cause := range w.errs {
				causes = append(causes, cause)
			}
			slices.Sort(causes)
			for _, cause := range causes {
				fmt.Fprintf(&b, "| %s | %s | %d | %s |\n", k, cause, w.errs[cause], strings.ReplaceAll(w.sample[cause], "|", "\\|"))
			}
		}
	}

	b.WriteString("\nThe gateway over time (heap goal: `go_memstats_next_gc_bytes` and heap in-use: `go_memstats_heap_inuse_bytes` of its /metrics; RSS: VmRSS of /proc/PID/status; " +
		"pool: `go_sql_open_connections`/`go_sql_in_use_connections`; PostgreSQL clients: client backends in `pg_stat_activity`; " +
		"CPU: cores used since the previous row by the gateway + its PostgreSQL):\n\n")
	b.WriteString("| elapsed | heap goal MiB | heap in-use MiB | RSS MiB | goroutines | pool open/in use | PostgreSQL clients (active) | CPU gateway+PostgreSQL | requests/s | errors |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	// At most about 30 rows: every k-th sample, and always the last.
	step := max(1, (len(r.samples)+29)/30)
	for i := 0; i < len(r.samples); i++ {
		if i%step != 0 && i != len(r.samples)-1 {
			continue
		}
		s := r.samples[i]
		prev := r.samples[max(0, i-step)]
		reqs, errs := "", ""
		if i > 0 {
			// intervals[i-1] ended at sample i.
			var n, e, secs float64
			for j := max(0, i-step); j < i; j++ {
				for _, sm := range r.intervals[j] {
					n += sm.PerSecond
					e += float64(sm.Errors)
				}
				secs++
			}
			reqs, errs = fmt.Sprintf("%.1f", n/secs), fmt.Sprintf("%.0f", e)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s/%s | %s (%s) | %s | %s | %s |\n", s.At.Round(time.Second), mib(s.HeapGoal), mib(s.HeapInuse), mib(s.RSS),
			num(s.Goroutines), num(s.PoolOpen), num(s.PoolInUse), num(s.PGClients), num(s.PGActive), cpuShare(prev, s), reqs, errs)
	}
	if last := r.samples[len(r.samples)-1]; last.CPU.Gateway > 0 && r.elapsed > 0 {
		first := r.samples[0]
		fmt.Fprintf(&b, "\nCPU over the whole run: gateway %.2f cores, its PostgreSQL %.2f cores.\n",
			(last.CPU.Gateway-first.CPU.Gateway).Seconds()/last.At.Seconds(), (last.CPU.Postgres-first.CPU.Postgres).Seconds()/last.At.Seconds())
	}

	if r.clients != "" {
		fmt.Fprintf(&b, "PostgreSQL client connections at the end (application, state, count): %s.\n", r.clients)
	}

	judged := r.judged()
	fmt.Fprintf(&b, "\n#### Verdict\n\nMemory is judged on the %d samples after the warm-up (the first %s: caches and the 2-minute replay window fill), "+
		"by the least-squares line through them: a series is flat when that line rises across the window by at most %.0f%% of the series' mean "+
		"(or by at most %s MiB of heap, %s MiB of RSS, %d goroutines). The heap goal (`go_memstats_next_gc_bytes`) is the live heap the last "+
		"garbage collection left, times 1 + GOGC/100: it grows when live memory does. Heap in-use is shown but not judged: sampled anywhere "+
		"in a GC cycle it saw-tooths between the live heap and the goal, and that noise swamps any slope.\n\n",
		len(judged), c.warmup, 100*flatFraction, mib(heapFloorBytes), mib(rssFloorBytes), goroutinesFloor)
	b.WriteString("| series | mean | min | max | max/min | slope per minute | rise over the window | flat |\n|---|---:|---:|---:|---:|---:|---:|---|\n")
	pass := true
	judgedOK := true
	for _, sr := range []struct {
		name   string
		get    func(sample) float64
		floor  float64
		unit   float64
		fmt    string
		judged bool // heap in-use is shown, not judged: sampled anywhere in a GC cycle, its saw-tooth drowns a slope
	}{
		{"heap goal (MiB)", func(s sample) float64 { return s.HeapGoal }, heapFloorBytes, 1 << 20, "%.1f", true},
		{"heap in-use (MiB)", func(s sample) float64 { return s.HeapInuse }, heapFloorBytes, 1 << 20, "%.1f", false},
		{"RSS (MiB)", func(s sample) float64 { return s.RSS }, rssFloorBytes, 1 << 20, "%.1f", true},
		{"goroutines", func(s sample) float64 { return s.Goroutines }, goroutinesFloor, 1, "%.0f", true},
	} {
		t := trendOf(series(judged, sr.get))
		if !t.ok {
			fmt.Fprintf(&b, "| %s | not judged: %d samples after warm-up, %d needed | | | | | | no |\n", sr.name, t.Samples, minTrendSamples)
			if sr.judged {
				pass, judgedOK = false, false
			}
			continue
		}
		flat := t.flat(flatFraction, sr.floor)
		verdict := map[bool]string{true: "yes", false: "**no**"}[flat]
		if sr.judged {
			pass = pass && flat
		} else {
			verdict = "(not judged: saw-tooth)"
		}
		u := func(v float64) string { return fmt.Sprintf(sr.fmt, v/sr.unit) }
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.2f | %s | %s (%+.1f%% of mean) | %s |\n", sr.name, u(t.Mean), u(t.Min), u(t.Max), t.MaxOverMin,
			u(t.PerMinute), u(t.Growth), 100*t.GrowthOfMean, verdict)
	}
	// Errors after the warm-up: all but those of the intervals that ended within it (requests
	// that finished after the last interval, while draining, count as late).
	early := 0
	for i, sums := range r.intervals {
		if i+1 < len(r.samples) && r.samples[i+1].At <= c.warmup {
			for _, sm := range sums {
				early += sm.Errors
			}
		}
	}
	late := all.Errors - early
	// Errors are judged after the warm-up: a gateway (re)started under a full fleet sheds some of
	// the first seconds' requests while its key cache and pool fill (HTTP 503 OVERLOADED, which
	// workers retry); they stay in the tables above and in the line below.
	pass = pass && late == 0 && unfinished == 0 && !r.interrupted
	fmt.Fprintf(&b, "\n- errors: %d of %d requests (%d in the intervals ending after the warm-up); unfinished: %d\n", all.Errors, all.OK+all.Errors, late, unfinished)
	switch {
	case pass:
		fmt.Fprintf(&b, "- **PASS**: memory flat after warm-up, no errors after warm-up (%d during it)\n", early)
	case !judgedOK && late == 0 && unfinished == 0 && !r.interrupted:
		fmt.Fprintf(&b, "- **NOT JUDGED**: no errors, but the run is too short to judge memory (run at least warm-up + %d × %s)\n", minTrendSamples, c.interval)
	default:
		b.WriteString("- **FAIL**: see the rows above marked **no**, and the errors\n")
	}
	return b.String(), pass
}

// csvText returns every sample with the interval that ended at it, one row each.
func (r *report) csvText() string {
	var b strings.Builder
	b.WriteString("elapsed_s,heap_goal_bytes,heap_inuse_bytes,rss_bytes,goroutines,pool_open,pool_in_use,pg_clients,pg_active,gateway_cpu_s,postgres_cpu_s")
	for _, k := range kinds {
		fmt.Fprintf(&b, ",%s_per_s,%s_p50_ms,%s_p99_ms,%s_errors", k, k, k, k)
	}
	b.WriteString("\n")
	for i, s := range r.samples {
		fmt.Fprintf(&b, "%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.2f,%.2f", s.At.Seconds(), s.HeapGoal, s.HeapInuse, s.RSS, s.Goroutines, s.PoolOpen, s.PoolInUse,
			s.PGClients, s.PGActive, s.CPU.Gateway.Seconds(), s.CPU.Postgres.Seconds())
		for j := range kinds {
			if i == 0 || i-1 >= len(r.intervals) {
				b.WriteString(",,,,")
				continue
			}
			sm := r.intervals[i-1][j]
			fmt.Fprintf(&b, ",%.2f,%s,%s,%d", sm.PerSecond, msec(sm.P50), msec(sm.P99), sm.Errors)
		}
		b.WriteString("\n")
	}
	return b.String()
}

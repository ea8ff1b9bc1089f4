package main

import (
	"maps"
	"math"
	"slices"
	"sync"
	"time"
)

// percentile returns the nearest-rank p-quantile (0 < p ≤ 1) of sorted: the smallest value
// with at least p of the values at or below it; 0 for no values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// slope returns the least-squares slope of ys over xs (units of y per unit of x), and false
// when there are fewer than two points or all xs are equal.
func slope(xs, ys []float64) (float64, bool) {
	n := float64(len(xs))
	if len(xs) < 2 || len(xs) != len(ys) {
		return 0, false
	}
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	mx /= n
	my /= n
	var sxy, sxx float64
	for i := range xs {
		sxy += (xs[i] - mx) * (ys[i] - my)
		sxx += (xs[i] - mx) * (xs[i] - mx)
	}
	if sxx == 0 {
		return 0, false
	}
	return sxy / sxx, true
}

// trend summarises a series sampled after warm-up: its least-squares slope per minute, the
// growth that slope makes over the series' own span as a fraction of its mean, and max/min.
type trend struct {
	Samples        int
	Mean, Min, Max float64
	PerMinute      float64 // least-squares slope, units per minute
	Growth         float64 // PerMinute × span, the rise the fit makes over the window
	GrowthOfMean   float64 // Growth / Mean
	MaxOverMin     float64
	Span           time.Duration
	ok             bool
}

// minTrendSamples is how many samples after warm-up a trend needs to be judged at all.
const minTrendSamples = 6

// trendOf returns the trend of ys sampled at ts (elapsed times); ok is false with fewer than
// minTrendSamples samples.
func trendOf(ts []time.Duration, ys []float64) trend {
	t := trend{Samples: len(ys)}
	if len(ys) < minTrendSamples || len(ts) != len(ys) {
		return t
	}
	xs := make([]float64, len(ts))
	for i, d := range ts {
		xs[i] = d.Minutes()
	}
	s, ok := slope(xs, ys)
	if !ok {
		return t
	}
	t.Min, t.Max = slices.Min(ys), slices.Max(ys)
	for _, y := range ys {
		t.Mean += y
	}
	t.Mean /= float64(len(ys))
	t.PerMinute = s
	t.Span = ts[len(ts)-1] - ts[0]
	t.Growth = s * t.Span.Minutes()
	if t.Mean > 0 {
		t.GrowthOfMean = t.Growth / t.Mean
	}
	if t.Min > 0 {
		t.MaxOverMin = t.Max / t.Min
	}
	t.ok = true
	return t
}

// flat reports whether the trend shows no growth worth the name: the fitted rise over the
// window is at most frac of the mean or at most floor in absolute terms (small series are
// noisy: a few goroutines, a few MiB of heap between two GC cycles).
func (t trend) flat(frac, floor float64) bool {
	return t.ok && (t.Growth <= frac*t.Mean || t.Growth <= floor)
}

// window is one kind's results over a period: latencies of the successes, errors by cause.
type window struct {
	lat    []time.Duration
	errs   map[string]int
	sample map[string]string // one message per cause
}

func (w *window) add(d time.Duration, cause, msg string) {
	if cause == "" {
		w.lat = append(w.lat, d)
		return
	}
	if w.errs == nil {
		w.errs, w.sample = map[string]int{}, map[string]string{}
	}
	w.errs[cause]++
	if _, ok := w.sample[cause]; !ok {
		w.sample[cause] = msg
	}
}

func (w *window) nerr() int {
	n := 0
	for _, c := range w.errs {
		n += c
	}
	return n
}

// summary is what the report prints of a window.
type summary struct {
	Kind          string
	OK, Errors    int
	PerSecond     float64 // all requests, successes and errors
	P50, P99, Max time.Duration
	ErrorRate     float64
}

func (w *window) summarize(kind string, elapsed time.Duration) summary {
	lat := slices.Clone(w.lat)
	slices.Sort(lat)
	s := summary{Kind: kind, OK: len(lat), Errors: w.nerr(), P50: percentile(lat, 0.50), P99: percentile(lat, 0.99)}
	if len(lat) > 0 {
		s.Max = lat[len(lat)-1]
	}
	if n := s.OK + s.Errors; n > 0 {
		s.ErrorRate = float64(s.Errors) / float64(n)
		if elapsed > 0 {
			s.PerSecond = float64(n) / elapsed.Seconds()
		}
	}
	return s
}

// recorder collects results by kind, for the current interval and for the whole run.
type recorder struct {
	mu       sync.Mutex
	kinds    []string // in report order
	interval map[string]*window
	total    map[string]*window
	steady   map[string]*window // since markSteady (the end of the warm-up); nil before
}

func newRecorder(kinds []string) *recorder {
	r := &recorder{kinds: kinds, interval: map[string]*window{}, total: map[string]*window{}}
	for _, k := range kinds {
		r.interval[k], r.total[k] = &window{}, &window{}
	}
	return r
}

// record adds one request of kind: its latency when cause is "", else an error of that cause.
func (r *recorder) record(kind string, d time.Duration, cause, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.interval[kind].add(d, cause, msg)
	r.total[kind].add(d, cause, msg)
	if r.steady != nil {
		r.steady[kind].add(d, cause, msg)
	}
}

// markSteady starts the after-warm-up window: latencies from cold caches and connections do
// not weigh on its percentiles.
func (r *recorder) markSteady() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.steady = map[string]*window{}
	for _, k := range r.kinds {
		r.steady[k] = &window{}
	}
}

// steadySummaries returns the summaries since markSteady (length elapsed), or nil before it.
func (r *recorder) steadySummaries(elapsed time.Duration) []summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.steady == nil {
		return nil
	}
	out := make([]summary, 0, len(r.kinds))
	for _, k := range r.kinds {
		out = append(out, r.steady[k].summarize(k, elapsed))
	}
	return out
}

// flush returns the summaries of the interval that just ended (length elapsed) and starts the
// next one.
func (r *recorder) flush(elapsed time.Duration) []summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]summary, 0, len(r.kinds))
	for _, k := range r.kinds {
		out = append(out, r.interval[k].summarize(k, elapsed))
		r.interval[k] = &window{}
	}
	return out
}

// totals returns the summaries of the whole run (length elapsed) and a copy of its windows
// by kind.
func (r *recorder) totals(elapsed time.Duration) ([]summary, map[string]*window) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]summary, 0, len(r.kinds))
	windows := map[string]*window{}
	for _, k := range r.kinds {
		w := r.total[k]
		out = append(out, w.summarize(k, elapsed))
		windows[k] = &window{lat: slices.Clone(w.lat), errs: maps.Clone(w.errs), sample: maps.Clone(w.sample)}
	}
	return out, windows
}

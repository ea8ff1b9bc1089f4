package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	for _, c := range []struct {
		vals []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 0.5, 0},
		{ms(7), 0.99, 7 * time.Millisecond},
		{ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},    // ceil(0.5·4) = 2nd
		{ms(1, 2, 3, 4, 5), 0.5, 3 * time.Millisecond}, // ceil(2.5) = 3rd
		{ms(hundred...), 0.99, 99 * time.Millisecond},
		// Nearest rank, not the interpolating index p·(n-1) rounded down (which gives the 9th):
		// with few samples, p99 is the worst one.
		{ms(hundred[:10]...), 0.99, 10 * time.Millisecond},
		{ms(hundred...), 1, 100 * time.Millisecond},
		{ms(hundred...), 0.001, time.Millisecond},
	} {
		if got := percentile(c.vals, c.p); got != c.want {
			t.Errorf("percentile(%d values, %v) = %v, want %v", len(c.vals), c.p, got, c.want)
		}
	}
}

func TestSlope(t *testing.T) {
	if s, ok := slope([]float64{0, 1, 2, 3}, []float64{1, 3, 5, 7}); !ok || math.Abs(s-2) > 1e-12 {
		t.Errorf("slope of y = 2x+1: %v %v, want 2", s, ok)
	}
	// A sawtooth around a flat level: slope close to 0.
	xs, ys := []float64{}, []float64{}
	for i := range 60 {
		xs, ys = append(xs, float64(i)), append(ys, 100+float64(i%6)*10)
	}
	if s, ok := slope(xs, ys); !ok || math.Abs(s) > 0.5 {
		t.Errorf("slope of a flat sawtooth = %v %v", s, ok)
	}
	if _, ok := slope([]float64{1}, []float64{1}); ok {
		t.Error("slope of one point must not be ok")
	}
	if _, ok := slope([]float64{2, 2, 2}, []float64{1, 2, 3}); ok {
		t.Error("slope over equal xs must not be ok")
	}
}

func TestTrend(t *testing.T) {
	at := func(n int) []time.Duration {
		out := make([]time.Duration, n)
		for i := range out {
			out[i] = 2*time.Minute + time.Duration(i)*10*time.Second
		}
		return out
	}
	// 48 samples over 7m50s growing 1 MiB per minute from 20 MiB: a leak of ~7.8 MiB, 33% of its mean.
	ts := at(48)
	ys := make([]float64, len(ts))
	for i, d := range ts {
		ys[i] = 20<<20 + (d-ts[0]).Minutes()*(1<<20)
	}
	tr := trendOf(ts, ys)
	if !tr.ok || math.Abs(tr.PerMinute-(1<<20)) > 1 || math.Abs(tr.Growth-7.8333*(1<<20)) > 1e4 {
		t.Fatalf("trend of a 1 MiB/min leak: %+v", tr)
	}
	if tr.flat(0.10, 4<<20) {
		t.Errorf("a 1 MiB/min leak over 8 minutes judged flat: %+v", tr)
	}
	if math.Abs(tr.MaxOverMin-(20+7.8333)/20) > 1e-3 {
		t.Errorf("max/min = %v", tr.MaxOverMin)
	}
	// The same samples as a sawtooth between 20 and 30 MiB (GC cycles): flat.
	for i := range ys {
		ys[i] = float64(20<<20 + (i%5)*(10<<20)/4)
	}
	if tr := trendOf(ts, ys); !tr.flat(0.10, 4<<20) {
		t.Errorf("a flat sawtooth judged growing: %+v", tr)
	}
	// A small series rising by less than its floor is flat even when that is > 10% of it.
	for i := range ys {
		ys[i] = 40 + float64(i)/8 // goroutines: 40 → 46
	}
	if tr := trendOf(ts, ys); !tr.flat(0.10, 20) || tr.flat(0.10, 1) {
		t.Errorf("goroutines 40 → 46 against floors 20 and 1: %+v", tr)
	}
	if tr := trendOf(ts[:minTrendSamples-1], ys[:minTrendSamples-1]); tr.ok || tr.flat(0.10, 1e9) {
		t.Errorf("too few samples judged: %+v", tr)
	}
}

func TestParseExposition(t *testing.T) {
	in := `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 42
go_memstats_heap_inuse_bytes 1.2345e+07
go_sql_open_connections{db_name="gpugate"} 9
gpugate_requests_total{op="a b",status="ok"} 17 1700000000000
broken_line
bad_value{x="y"} NaNx
`
	got, err := parseExposition(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"go_goroutines":                                42,
		"go_memstats_heap_inuse_bytes":                 12345000,
		`go_sql_open_connections{db_name="gpugate"}`:   9,
		`gpugate_requests_total{op="a b",status="ok"}`: 17,
	}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

func TestRecorderIntervalsAndTotals(t *testing.T) {
	r := newRecorder([]string{"a", "b"})
	for i := 1; i <= 10; i++ {
		r.record("a", time.Duration(i)*time.Millisecond, "", "")
	}
	r.record("a", 0, "HTTP 503 OVERLOADED", "overloaded")
	first := r.flush(10 * time.Second)
	if s := first[0]; s.OK != 10 || s.Errors != 1 || s.P50 != 5*time.Millisecond || s.Max != 10*time.Millisecond ||
		math.Abs(s.PerSecond-1.1) > 1e-9 || math.Abs(s.ErrorRate-1.0/11) > 1e-9 {
		t.Errorf("first interval of a: %+v", s)
	}
	if s := first[1]; s.OK != 0 || s.Errors != 0 || s.PerSecond != 0 {
		t.Errorf("first interval of b: %+v", s)
	}
	r.record("b", time.Millisecond, "", "")
	second := r.flush(10 * time.Second)
	if second[0].OK != 0 || second[1].OK != 1 {
		t.Errorf("the second interval carries the first's results: %+v", second)
	}
	if r.steadySummaries(time.Second) != nil {
		t.Error("steady summaries before markSteady")
	}
	r.markSteady()
	r.record("a", 50*time.Millisecond, "", "")
	if st := r.steadySummaries(10 * time.Second); st[0].OK != 1 || st[0].P99 != 50*time.Millisecond || st[0].Errors != 0 {
		t.Errorf("after warm-up, a: %+v (the warm-up's results must not count)", st[0])
	}
	totals, windows := r.totals(20 * time.Second)
	if totals[0].OK != 11 || totals[0].Errors != 1 || totals[1].OK != 1 {
		t.Errorf("totals: %+v", totals)
	}
	if w := windows["a"]; w.errs["HTTP 503 OVERLOADED"] != 1 || w.sample["HTTP 503 OVERLOADED"] != "overloaded" {
		t.Errorf("errors of a: %+v", w)
	}
}

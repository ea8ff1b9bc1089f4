package userimport

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gpugate/gpugate/db/dbtest"
)

var (
	benchChunkSize = flag.Int("userimport.chunk", DefaultChunkSize, "BenchmarkImportMillion: Options.ChunkSize")
	benchParallel  = flag.Int("userimport.parallel", DefaultParallel, "BenchmarkImportMillion: Options.Parallel")
)

// BenchmarkImportMillion links one million legacy accounts from CSV to 960,000 identities (see
// population: 82% linked, 14% unmatched, 4% sharing an email), each iteration into a fresh
// database; then it runs the same import again (everything already done) and reports that
// time too. Benchmarks run only with -bench:
//
//	go test -run XXX -bench ImportMillion -benchtime 1x ./userimport/
func BenchmarkImportMillion(b *testing.B) {
	const n = 1_000_000
	legacy, idents := population(n)
	opts := func() Options {
		return Options{
			Issuer:        issuer,
			LegacyCSV:     strings.NewReader(legacy),
			IdentitiesCSV: strings.NewReader(idents),
			ChunkSize:     *benchChunkSize,
			Parallel:      *benchParallel,
		}
	}
	phases := map[string]time.Duration{}
	var order []string
	traceHook = func(phase string, d time.Duration) {
		if _, ok := phases[phase]; !ok {
			order = append(order, phase)
		}
		phases[phase] += d
	}
	defer func() { traceHook = nil }()
	var first, again time.Duration
	for b.Loop() {
		b.StopTimer()
		x := dbtest.New(b)
		b.StartTimer()

		s, err := Run(context.Background(), x, opts())
		if err != nil {
			b.Fatal(err)
		}
		first += s.Elapsed
		if s.UsersCreated != n || s.Linked != 820_000 || s.Unmatched != 140_000 || s.Conflicts != 40_000 {
			b.Fatalf("first run: %+v", s)
		}
		b.Logf("first run:\n%s", s)

		b.StopTimer()
		traceHook = nil
		s, err = Run(context.Background(), x, opts())
		if err != nil {
			b.Fatal(err)
		}
		again += s.Elapsed
		if s.UsersCreated != 0 || s.Linked != 0 || s.AlreadyLinked != 820_000 {
			b.Fatalf("second run: %+v", s)
		}
		b.Logf("second run (nothing to do): %s", s.Elapsed.Round(time.Millisecond))
		x.Close()
		b.StartTimer()
	}
	b.ReportMetric(first.Seconds()/float64(b.N), "s/import")
	b.ReportMetric(again.Seconds()/float64(b.N), "s/rerun")
	fmt.Fprintln(os.Stderr, "first run, by phase:")
	for _, p := range order {
		fmt.Fprintf(os.Stderr, "  %-30s %s\n", p, (phases[p] / time.Duration(b.N)).Round(time.Millisecond))
	}
}

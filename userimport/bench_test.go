package userimport

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gpugate/gpugate/db/dbtest"
)

// BenchmarkImportMillion links one million legacy accounts from CSV to one million identities
// (see population: 96% have an identity, 10% of those unverified, 4% share an email), each
// iteration into a fresh database. Benchmarks run only with -bench:
//
//	go test -run XXX -bench ImportMillion -benchtime 1x ./userimport/
func BenchmarkImportMillion(b *testing.B) {
	const n = 1_000_000
	legacy, idents := population(n)
	b.ReportAllocs()
	phases := map[string]time.Duration{}
	var order []string
	traceHook = func(phase string, d time.Duration) {
		if _, ok := phases[phase]; !ok {
			order = append(order, phase)
		}
		phases[phase] += d
	}
	defer func() { traceHook = nil }()
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		x := dbtest.New(b)
		b.StartTimer()
		start := time.Now()
		s, err := Run(context.Background(), x, Options{
			Issuer:        issuer,
			LegacyCSV:     strings.NewReader(legacy),
			IdentitiesCSV: strings.NewReader(idents),
			ChunkSize:     benchChunkSize,
		})
		elapsed := time.Since(start)
		total += elapsed
		if err != nil {
			b.Fatal(err)
		}
		if s.UsersCreated != n || s.Linked+s.Unmatched+s.Conflicts != n {
			b.Fatalf("summary: %+v", s)
		}
		b.Logf("%s: %d legacy accounts linked in %s\n%s", b.Name(), n, elapsed.Round(time.Millisecond), s)
		b.StopTimer()
		x.Close()
		b.StartTimer()
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/import")
	for _, p := range order {
		fmt.Fprintf(os.Stderr, "  %-22s %s\n", p, (phases[p] / time.Duration(b.N)).Round(time.Millisecond))
	}
}

// benchChunkSize lets a local experiment compare chunk sizes; the default is what ships.
var benchChunkSize = DefaultChunkSize

package db_test

import (
	"context"
	"net/url"
	"testing"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
)

// BenchmarkPoolPooler measures what --database-pooler=transaction costs the reads
// (docs/postgresql.md, "PgBouncer"): "prepared" is the store as it runs on a direct connection
// (the hot reads prepared), "pooler" the store with Options.TransactionPooler (nothing
// prepared; the app pool's lone statements in a transaction of their own), both straight to
// PostgreSQL so only the protocol differs. cpu-us/op is this process's CPU per read, pg-us/op
// the database backends'.
//
//	go test -run '^$' -bench BenchmarkPoolPooler -benchmem -benchtime 3000x ./db/
func BenchmarkPoolPooler(b *testing.B) {
	super := dbtest.New(b)
	ctx := context.Background()
	if _, err := db.New(super, db.Options{}).Seed(ctx, 20000); err != nil {
		b.Fatal(err)
	}
	var all []string
	if err := super.Select(&all, `SELECT id FROM devices WHERE removed_at IS NULL ORDER BY id LIMIT 10000`); err != nil {
		b.Fatal(err)
	}
	dsn := func(role string) string {
		u, err := url.Parse(dbtest.DSN(b, super))
		if err != nil {
			b.Fatal(err)
		}
		u.User = url.User(role)
		return u.String()
	}
	up := db.StatusUp
	for _, mode := range []struct {
		name   string
		pooler bool
	}{{"prepared", false}, {"pooler", true}} {
		s, err := db.Open(ctx, dsn(db.RoleApp), db.Options{StatsTTL: -1, TransactionPooler: mode.pooler})
		if err != nil {
			b.Fatal(err)
		}
		x, _, err := s.OpenExplorer(ctx, dsn(db.RoleExplorer), 10)
		if err != nil {
			b.Fatal(err)
		}
		s.SetExplorer(x)
		for _, who := range []struct {
			name string
			ctx  context.Context
		}{{"anonymous", db.Anonymous(ctx)}, {"signed-in", ctx}} {
			c := who.ctx
			reads := []struct {
				name string
				fn   func(i int) error
			}{
				{"device", func(i int) error { _, err := s.Device(c, all[i%len(all)]); return err }},
				{"devices50-up", func(int) error {
					_, err := s.ListDevices(c, db.ListParams{First: 50, Filter: db.DeviceFilter{Status: &up}})
					return err
				}},
			}
			for _, r := range reads {
				b.Run(r.name+"/"+who.name+"/"+mode.name, func(b *testing.B) {
					for i := range 20 {
						if err := r.fn(i); err != nil {
							b.Fatal(err)
						}
					}
					pg0 := backendCPU(b, super)
					me0 := selfCPU()
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						if err := r.fn(i); err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					b.ReportMetric(float64(selfCPU()-me0)/1e3/float64(b.N), "cpu-us/op")
					var pg int64
					for pid, ns := range backendCPU(b, super) {
						pg += ns - pg0[pid]
					}
					b.ReportMetric(float64(pg)/1e3/float64(b.N), "pg-us/op")
				})
			}
		}
		_ = s.Close()
	}
}

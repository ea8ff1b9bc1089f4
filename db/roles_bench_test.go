package db_test

import (
	"context"
	"testing"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
)

// BenchmarkPublicReads compares the public reads on the app pool (the tables) with the explorer
// pool (the explorer views) on 20,000 demo devices: the views must cost nothing measurable.
//
//	go test -run '^$' -bench BenchmarkPublicReads -benchtime 2000x ./db/
func BenchmarkPublicReads(b *testing.B) {
	x := dbtest.New(b)
	ctx := context.Background()
	if _, err := db.New(x, db.Options{}).Seed(ctx, 20000); err != nil {
		b.Fatal(err)
	}
	s := dbtest.Store(b, x, db.Options{StatsTTL: -1})
	first, err := s.ListDevices(ctx, db.ListParams{First: 100})
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]string, len(first.Devices))
	for i, d := range first.Devices {
		ids[i] = d.ID
	}
	for _, pool := range []struct {
		name string
		ctx  context.Context
	}{{"app", ctx}, {"explorer", db.Anonymous(ctx)}} {
		reads := []struct {
			name string
			fn   func() error
		}{
			{"devices100", func() error { _, err := s.ListDevices(pool.ctx, db.ListParams{First: 100}); return err }},
			{"devices100-after", func() error {
				_, err := s.ListDevices(pool.ctx, db.ListParams{First: 100, After: first.Cursor(99)})
				return err
			}},
			{"device", func() error { _, err := s.Device(pool.ctx, ids[0]); return err }},
			{"gpus100", func() error { _, err := s.GPUsByDevice(pool.ctx, ids); return err }},
			{"search", func() error { _, err := s.SearchDevices(pool.ctx, first.Devices[0].Name[:5], 20, ""); return err }},
			{"stats", func() error { _, err := s.NetworkStats(pool.ctx); return err }},
		}
		for _, r := range reads {
			b.Run(r.name+"/"+pool.name, func(b *testing.B) {
				for b.Loop() {
					if err := r.fn(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

package db_test

import (
	"context"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
)

// BenchmarkDeviceReads measures the explorer's reads on 20,000 demo devices, anonymous (the
// explorer pool and views) and signed in (the app pool and tables), with -benchmem: ns/op and
// allocations are the gateway's side; cpu-us/op is this process's CPU per read (user+system,
// getrusage) and pg-us/op the CPU of the database's backends per read (/proc), both less
// sensitive than wall time to the other work on a shared machine. docs/benchmark.md has the
// numbers.
//
//	go test -run '^$' -bench BenchmarkDeviceReads -benchmem -benchtime 3000x ./db/
func BenchmarkDeviceReads(b *testing.B) {
	super := dbtest.New(b)
	ctx := context.Background()
	if _, err := db.New(super, db.Options{}).Seed(ctx, 20000); err != nil {
		b.Fatal(err)
	}
	s := dbtest.Store(b, super, db.Options{StatsTTL: -1})
	if os.Getenv("GPUGATE_BENCH_BINARY_PARAMETERS") != "" {
		// lib/pq's binary_parameters: unprepared statements in one round trip instead of two.
		dsn := func(role string) string {
			u, err := url.Parse(dbtest.DSN(b, super))
			if err != nil {
				b.Fatal(err)
			}
			u.User = url.User(role)
			return u.String() + "&binary_parameters=yes"
		}
		app, err := sqlx.Open("postgres", dsn(db.RoleApp))
		if err != nil {
			b.Fatal(err)
		}
		x, _, err := db.OpenExplorer(ctx, dsn(db.RoleExplorer), 4)
		if err != nil {
			b.Fatal(err)
		}
		s = db.New(app, db.Options{StatsTTL: -1})
		s.SetExplorer(x)
		b.Cleanup(func() { _ = s.Close() })
	}
	first, err := s.ListDevices(ctx, db.ListParams{First: 100})
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]string, len(first.Devices))
	for i, d := range first.Devices {
		ids[i] = d.ID
	}
	var all []string
	if err := super.Select(&all, `SELECT id FROM devices WHERE removed_at IS NULL ORDER BY id LIMIT 10000`); err != nil {
		b.Fatal(err)
	}
	up, region := db.StatusUp, db.DemoRegions[0]
	for _, who := range []struct {
		name string
		ctx  context.Context
	}{{"anonymous", db.Anonymous(ctx)}, {"signed-in", ctx}} {
		c := who.ctx
		reads := []struct {
			name string
			fn   func(i int) error
		}{
			{"devices50-up", func(int) error {
				_, err := s.ListDevices(c, db.ListParams{First: 50, Filter: db.DeviceFilter{Status: &up}})
				return err
			}},
			{"devices50-up-region", func(int) error { // two filters: the unprepared statement
				_, err := s.ListDevices(c, db.ListParams{First: 50, Filter: db.DeviceFilter{Status: &up, Region: &region}})
				return err
			}},
			{"devices100", func(int) error { _, err := s.ListDevices(c, db.ListParams{First: 100}); return err }},
			{"devices100-gpus", func(int) error {
				p, err := s.ListDevices(c, db.ListParams{First: 100})
				if err != nil {
					return err
				}
				page := make([]string, len(p.Devices))
				for i := range p.Devices {
					page[i] = p.Devices[i].ID
				}
				_, err = s.GPUsByDevice(c, page)
				return err
			}},
			{"device", func(i int) error { _, err := s.Device(c, all[i%len(all)]); return err }},
			{"gpus100", func(int) error { _, err := s.GPUsByDevice(c, ids); return err }},
		}
		for _, r := range reads {
			b.Run(r.name+"/"+who.name, func(b *testing.B) {
				for i := range 20 { // warm every pooled connection (and its statements)
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
					pg += ns - pg0[pid] // a backend that ended since is left out
				}
				b.ReportMetric(float64(pg)/1e3/float64(b.N), "pg-us/op")
			})
		}
	}
}

// selfCPU returns this process's user+system CPU time in nanoseconds.
func selfCPU() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// backendCPU returns the CPU time in nanoseconds (clock-tick resolution) of each backend
// connected to super's database, by process ID, read from /proc (missing where it cannot say).
func backendCPU(b *testing.B, super *sqlx.DB) map[int]int64 {
	var pids []int
	if err := super.Select(&pids, `SELECT pid FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()`); err != nil {
		b.Fatal(err)
	}
	total := map[int]int64{}
	for _, pid := range pids {
		raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		// Fields after the command (which may hold spaces): state is field 3, utime 14, stime 15.
		f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total[pid] = (ut + st) * 1e7 // 100 ticks a second
	}
	return total
}

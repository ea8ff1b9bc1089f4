package gateway_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
	"github.com/gpugate/gpugate/gateway"
)

// The explorer's hot reads through the real handler and a real Postgres (HTTP client, network
// and JSON included), each with the compiled executor (fast) and with gqlgen's executor
// (gqlgen, Config.DisableFastExec):
//
//	go test -run XXX -bench 'ListDevicesPage|DeviceByID|DevicesWithGPUs' -benchmem ./gateway/
//
// cpu-µs/op is the CPU time of the whole test process (gateway and HTTP client; PostgreSQL runs
// in its own processes) per request, from getrusage: steadier than ns/op on a shared machine.

// BenchmarkListDevicesPage measures one devices(first: 50, filter: {status: UP}) page of the 9
// public fields of the table.
func BenchmarkListDevicesPage(b *testing.B) {
	benchBoth(b, gateway.Config{}, func(string) string {
		return `{"query":"{ devices(first: 50, filter: {status: UP}) { edges { cursor node { id name status region verification gpuModel gpuCount lastSeenAt createdAt } } pageInfo { hasNextPage endCursor } } }"}`
	})
}

// BenchmarkDeviceByID measures device(id) of an existing device, the same 9 fields.
func BenchmarkDeviceByID(b *testing.B) {
	benchBoth(b, gateway.Config{}, func(id string) string {
		return `{"query":"{ device(id: \"` + id + `\") { id name status region verification gpuModel gpuCount lastSeenAt createdAt } }"}`
	})
}

// BenchmarkDevicesWithGPUs100 measures the explorer's table: 100 devices with their GPUs. The
// cost model prices Device.gpus at 64 GPUs a device, so this page costs 26,705 and needs a
// MaxCost above the default 5,000.
func BenchmarkDevicesWithGPUs100(b *testing.B) {
	benchBoth(b, gateway.Config{MaxCost: 30000, HeavyCost: 30000}, func(string) string {
		return `{"query":"{ devices(first: 100) { edges { node { id name status region verificationLevel gpuModel gpuCount lastSeenAt createdAt gpus { index uuid model memoryMiB } } } pageInfo { hasNextPage endCursor } } }"}`
	})
}

// benchBoth runs the request body(id) (id: an existing device) against a gateway with the
// compiled executor and one without, over one database of 3,000 seeded devices.
func benchBoth(b *testing.B, cfg gateway.Config, body func(id string) string) {
	x := dbtest.New(b)
	if _, err := db.New(x, db.Options{}).Seed(context.Background(), 3000); err != nil {
		b.Fatal(err)
	}
	var id string
	if err := x.Get(&id, `SELECT id FROM devices ORDER BY id LIMIT 1`); err != nil {
		b.Fatal(err)
	}
	store := dbtest.Store(b, x, db.Options{}) // the app and explorer roles, as served
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for _, v := range []struct {
		name    string
		disable bool
	}{{"fast", false}, {"gqlgen", true}} {
		c := cfg
		c.DisableFastExec = v.disable
		srv := httptest.NewServer(gateway.New(c, store, log))
		b.Run(v.name, func(b *testing.B) { benchQuery(b, srv.URL, body(id)) })
		srv.Close()
	}
}

func benchQuery(b *testing.B, url, body string) {
	client := &http.Client{}
	post := func() {
		resp, err := client.Post(url+"/graphql", "application/json", bytes.NewBufferString(body))
		if err != nil {
			b.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || bytes.Contains(got, []byte(`"errors"`)) {
			b.Fatalf("HTTP %d: %.300s", resp.StatusCode, got)
		}
	}
	post() // warm the connection and the query cache
	b.ReportAllocs()
	cpu0 := processCPU()
	b.ResetTimer()
	for b.Loop() {
		post()
	}
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

package gateway_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/gpugate/gpugate/gateway"
)

// BenchmarkListDevicesPage measures one devices(first: 50, filter: {status: UP}) page through the
// real handler and a real Postgres (network and JSON included):
//
//	go test -run XXX -bench ListDevicesPage -benchmem ./gateway/
func BenchmarkListDevicesPage(b *testing.B) {
	benchQuery(b, `{"query":"{ devices(first: 50, filter: {status: UP}) { edges { cursor node { id name status region verification gpuModel gpuCount lastSeenAt createdAt } } pageInfo { hasNextPage endCursor } } }"}`)
}

// BenchmarkDeviceByID measures device(id) the same way.
func BenchmarkDeviceByID(b *testing.B) {
	benchQuery(b, `{"query":"{ device(id: \"6a88570e-be5f-459a-82fa-d6b0f936cafd\") { id name status region verification gpuModel gpuCount lastSeenAt createdAt } }"}`)
}

func benchQuery(b *testing.B, body string) {
	e := newBenchEnv(b, 3000)
	client := &http.Client{}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, err := client.Post(e+"/graphql", "application/json", bytes.NewBufferString(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("HTTP %d", resp.StatusCode)
		}
	}
}

var _ = gateway.Defaults

package metrics_test

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gpugate/gpugate/metrics"
)

// Each replica is a series labelled by its position; an unknown lag is absent, not zero.
func TestPoolReplicaGauges(t *testing.T) {
	m := metrics.New()
	m.WatchReplicas(func() []metrics.Replica {
		return []metrics.Replica{{Name: "0", Up: true, Lag: 0.5, LagBytes: 128}, {Name: "1", Up: false, Lag: -1, LagBytes: -1}}
	})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	out := string(body)
	for _, want := range []string{
		`gpugate_db_replica_up{replica="0"} 1`, `gpugate_db_replica_up{replica="1"} 0`,
		`gpugate_db_replica_lag_seconds{replica="0"} 0.5`, `gpugate_db_replica_lag_bytes{replica="0"} 128`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %s in:\n%s", want, out)
		}
	}
	for _, absent := range []string{`gpugate_db_replica_lag_seconds{replica="1"}`, `gpugate_db_replica_lag_bytes{replica="1"}`} {
		if strings.Contains(out, absent) {
			t.Errorf("%s present while unknown", absent)
		}
	}
}

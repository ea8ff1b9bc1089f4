package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gpugate/gpugate/db/dbtest"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// In dev mode /metrics is on the gateway's port; in production it is not, and --metrics-listen
// serves it on a separate address (and nothing else there).
func TestServeMetricsWhereConfigured(t *testing.T) {
	t.Parallel()
	_, dsn := dbtest.NewWithDSN(t)
	dev := start(t, []string{"DATABASE_URL=" + dsn}, "--dev")
	dev.query(t, `{ networkStats { devices } }`)
	if code, body := get(t, "http://"+dev.addr+"/metrics"); code != http.StatusOK ||
		!strings.Contains(body, `gpugate_requests_total{code="OK",operation="networkStats",type="query"} 1`) ||
		!strings.Contains(body, `gpugate_writes_total{class="DEVICE_METADATA",outcome="SUCCEEDED"} 0`) {
		t.Fatalf("dev mode /metrics: HTTP %d\n%s", code, body)
	}

	apart := freeAddr(t)
	prod := start(t, []string{"DATABASE_URL=" + dsn}, "--metrics-listen", apart)
	prod.query(t, `{ networkStats { devices } }`)
	if code, _ := get(t, "http://"+prod.addr+"/metrics"); code != http.StatusNotFound {
		t.Fatalf("production /metrics on the public port: HTTP %d, want 404", code)
	}
	code, body := get(t, "http://"+apart+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, `gpugate_requests_total{code="OK",operation="networkStats",type="query"} 1`) ||
		!strings.Contains(body, "gpugate_alerts_total") || !strings.Contains(body, `go_sql_open_connections{db_name="gpugate"}`) {
		t.Fatalf("--metrics-listen: HTTP %d\n%s", code, body)
	}
	if code, _ := get(t, "http://"+apart+"/graphql"); code != http.StatusNotFound {
		t.Fatalf("the metrics listener serves more than /metrics: HTTP %d", code)
	}
}

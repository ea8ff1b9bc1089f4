package metrics_test

import (
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gpugate/gpugate/guard"
	"github.com/gpugate/gpugate/metrics"
)

// The guard's reasons become the codes clients were given; free text never becomes a label.
func TestReasonCode(t *testing.T) {
	for in, want := range map[string]string{
		"RATE_LIMITED":             "RATE_LIMITED",
		"DISABLED":                 "DISABLED",
		"rate limited":             "RATE_LIMITED",
		"unauthenticated":          "UNAUTHENTICATED",
		"no device signature":      "UNAUTHENTICATED",
		"signed by another device": "FORBIDDEN",
		"not the owner":            "FORBIDDEN",
		"missing role ADMIN":       "FORBIDDEN",
		"no such device":           "NOT_FOUND",
		"ADDRESS_CHURN: 7 distinct source networks within 1h0m0s (limit 6); review, not blocked": "ADDRESS_CHURN",
		"GPU identity conflict (UUID_ON_ANOTHER_DEVICE): review both devices":                    "IDENTITY_CONFLICT",
		"something new with user text 123":                                                       "OTHER",
		"":                                                                                       "OTHER",
	} {
		if got := metrics.ReasonCode(in); got != want {
			t.Errorf("ReasonCode(%q) = %q, want %q", in, got, want)
		}
	}
}

func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

// However many distinct codes arrive, a label holds at most a fixed number of values.
func TestLabelValuesAreCapped(t *testing.T) {
	m := metrics.New()
	for i := range 1000 {
		m.ObserveGuard(guard.Event{Write: guard.Write{Op: "updateDevice"}, Class: guard.ClassDeviceMetadata,
			Outcome: guard.Denied, Reason: fmt.Sprintf("CODE_%d", i)})
		m.ObserveRequest("notAField", "query", fmt.Sprintf("CODE_%d", i), time.Millisecond)
	}
	out := scrape(t, m)
	if n := strings.Count(out, "gpugate_denials_total{"); n > 200 {
		t.Fatalf("%d denial series", n)
	}
	if n := strings.Count(out, "gpugate_requests_total{"); n > 200 {
		t.Fatalf("%d request series", n)
	}
	if !strings.Contains(out, `gpugate_requests_total{code="OTHER",operation="_other",type="query"}`) {
		t.Fatal("values beyond the cap and unknown operations should fold into OTHER and _other")
	}
}

// A nil registry records nothing and serves 404.
func TestNilMetrics(t *testing.T) {
	var m *metrics.Metrics
	m.ObserveGuard(guard.Event{})
	m.ObserveRequest("x", "query", "OK", 0)
	m.ObserveCache(true)
	m.ObserveProof("PASSED", "")
	m.ObserveJob("purge", nil)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 404 {
		t.Fatal(rec.Code)
	}
}

// The kill switches' state is read when scraped, every class reported.
func TestWatchSwitches(t *testing.T) {
	m := metrics.New()
	if strings.Contains(scrape(t, m), "gpugate_writes_disabled{") {
		t.Fatal("switch series without a switch to watch")
	}
	off := []guard.Class{guard.ClassDeviceMetadata}
	m.WatchSwitches(func() []guard.Class { return off })
	out := scrape(t, m)
	if !strings.Contains(out, `gpugate_writes_disabled{class="DEVICE_METADATA"} 1`) || !strings.Contains(out, `gpugate_writes_disabled{class="PROOFS"} 0`) {
		t.Fatal(out)
	}
}

// BenchmarkObserveGuard is the metrics' cost per write on the request path.
func BenchmarkObserveGuard(b *testing.B) {
	m := metrics.New()
	ev := guard.Event{Write: guard.Write{Op: "updateDevice"}, Class: guard.ClassDeviceMetadata, Outcome: guard.Denied, Reason: "not the owner"}
	b.ReportAllocs()
	for b.Loop() {
		m.ObserveGuard(ev)
	}
}

// BenchmarkObserveRequest is the metrics' cost per GraphQL request.
func BenchmarkObserveRequest(b *testing.B) {
	m := metrics.New()
	m.AllowOperations([]string{"devices"})
	b.ReportAllocs()
	for b.Loop() {
		m.ObserveRequest("devices", "query", "OK", 3*time.Millisecond)
	}
}

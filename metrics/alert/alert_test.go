package alert_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpugate/gpugate/guard"
	"github.com/gpugate/gpugate/internal/testutil"
	"github.com/gpugate/gpugate/metrics/alert"
)

// recordingSwitch stands in for the kill switch (tested in its own package): it records calls.
type recordingSwitch struct {
	mu    sync.Mutex
	calls []string
	err   error
}

func (s *recordingSwitch) Disable(_ context.Context, class guard.Class, reason, by string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, fmt.Sprintf("%s by %s: %s", class, by, reason))
	return s.err
}

func (s *recordingSwitch) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

// sim drives a detector through simulated time: events are stamped within each 10 s step and
// the detector is evaluated at the end of every step, as Run's ticker would.
type sim struct {
	t      *testing.T
	d      *alert.Detector
	now    time.Time
	alerts []alert.Alert
	reg    *prometheus.Registry
	logs   *testutil.SyncBuffer
	rng    *rand.Rand
}

func newSim(t *testing.T, cfg alert.Config) *sim {
	t.Helper()
	s := &sim{t: t, now: time.Date(2026, 4, 25, 8, 0, 0, 0, time.UTC), reg: prometheus.NewRegistry(),
		logs: &testutil.SyncBuffer{}, rng: rand.New(rand.NewPCG(1, 2))}
	cfg.Now = func() time.Time { return s.now }
	cfg.Registerer = s.reg
	cfg.Log = slog.New(slog.NewJSONHandler(s.logs, nil))
	d, err := alert.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.d = d
	return s
}

const step = 10 * time.Second

// minute feeds one minute of events: evs[i] happens in step i*6/len(evs); evaluated per step.
func (s *sim) minute(evs []guard.Event) {
	s.t.Helper()
	for k := range 6 {
		start := s.now
		for i, ev := range evs {
			if i*6/max(1, len(evs)) == k {
				ev.At = start.Add(time.Duration(i%97) * step / 100)
				s.d.Observe(ev)
			}
		}
		s.now = start.Add(step)
		s.alerts = append(s.alerts, s.d.Evaluate(context.Background())...)
	}
}

func write(class guard.Class, op, actor, target string) guard.Event {
	return guard.Event{Write: guard.Write{Op: op, Actor: actor, Target: target}, Class: class, Outcome: guard.Succeeded}
}

// steady is one minute of everyday metadata writes: about perMinute (±50%) renames by owners of
// their own few devices.
func (s *sim) steady(perMinute int) []guard.Event {
	n := perMinute/2 + s.rng.IntN(perMinute+1)
	evs := make([]guard.Event, n)
	for i := range evs {
		u := s.rng.IntN(300)
		evs[i] = write(guard.ClassDeviceMetadata, "updateDevice", fmt.Sprintf("user-%d", u), fmt.Sprintf("dev-%d-%d", u, s.rng.IntN(4)))
	}
	return evs
}

func (s *sim) heartbeats(devices int) []guard.Event {
	evs := make([]guard.Event, 0, devices*2)
	for i := range devices * 2 { // one per 30 s
		d := fmt.Sprintf("dev-%d", i%devices)
		evs = append(evs, write(guard.ClassHeartbeats, "heartbeat", "device:"+d, d))
	}
	return evs
}

func (s *sim) count(rule string, class guard.Class) float64 {
	s.t.Helper()
	return counter(s.t, s.reg, "gpugate_alerts_total", map[string]string{"rule": rule, "class": string(class)})
}

// counter returns the value of the counter name with labels in reg (0 when absent).
func counter(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// warmUp runs 40 minutes of everyday traffic: metadata writes and a fleet's heartbeats.
func (s *sim) warmUp() {
	for range 40 {
		s.minute(append(s.steady(5), s.heartbeats(200)...))
	}
	if len(s.alerts) != 0 {
		s.t.Fatalf("everyday traffic alerted: %+v", s.alerts)
	}
}

// The incident: a steady trickle of renames, then hundreds of renames of distinct devices within
// a minute by one identity. Both rules fire, the switch is tripped once, and the alert is logged
// and counted.
func TestIncidentBurstByOneIdentityFires(t *testing.T) {
	sw := &recordingSwitch{}
	s := newSim(t, alert.Config{Switch: sw, TripClasses: map[guard.Class]bool{guard.ClassDeviceMetadata: true}})
	s.warmUp()
	burst := s.steady(5)
	for i := range 400 {
		burst = append(burst, write(guard.ClassDeviceMetadata, "updateDevice", "user-7", fmt.Sprintf("victim-%d", i)))
	}
	s.minute(burst)

	rules := map[string]bool{}
	for _, a := range s.alerts {
		if a.Class != guard.ClassDeviceMetadata {
			t.Fatalf("alert for another class: %+v", a)
		}
		rules[a.Rule] = true
	}
	if !rules[alert.RuleWriteRate] || !rules[alert.RuleIdentityTargets] || len(s.alerts) != 2 {
		t.Fatalf("want one write_rate and one identity_targets alert, got %+v", s.alerts)
	}
	if calls := sw.Calls(); len(calls) != 1 || !strings.HasPrefix(calls[0], "DEVICE_METADATA by alert:") {
		t.Fatalf("the kill switch should be tripped once for DEVICE_METADATA, got %q", calls)
	}
	for _, a := range s.alerts {
		if a.Rule == alert.RuleIdentityTargets && a.Actor != "user-7" {
			t.Fatalf("identity alert names %q", a.Actor)
		}
	}
	if s.count(alert.RuleWriteRate, guard.ClassDeviceMetadata) != 1 || s.count(alert.RuleIdentityTargets, guard.ClassDeviceMetadata) != 1 {
		t.Fatal("gpugate_alerts_total does not count the alerts")
	}
	var logged struct {
		Msg        string
		Class      string
		KillSwitch string `json:"kill_switch"`
	}
	for _, line := range strings.Split(s.logs.String(), "\n") {
		if strings.Contains(line, `"alert":"gpugate_write_rate"`) {
			if err := json.Unmarshal([]byte(line), &logged); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !strings.HasPrefix(logged.Msg, "ALERT ") || logged.Class != "DEVICE_METADATA" || logged.KillSwitch != "tripped" {
		t.Fatalf("no structured alert log line: %s", s.logs.String())
	}
	// Continuing the attack does not alert again, nor trip the switch again.
	for range 3 {
		s.minute(burst)
	}
	if len(s.alerts) != 2 || len(sw.Calls()) != 1 {
		t.Fatalf("a continuing burst alerted again: %d alerts, %d switch calls", len(s.alerts), len(sw.Calls()))
	}
	// Ten minutes of attack did not become the baseline: after a pause, the next burst fires.
	for range 6 {
		s.minute(burst)
	}
	for range 5 {
		s.minute(s.steady(5))
	}
	s.minute(burst)
	if n := s.count(alert.RuleWriteRate, guard.ClassDeviceMetadata); n != 2 {
		t.Fatalf("the burst after a pause raised %v write_rate alerts in all, want 2", n)
	}
}

// The IP-hopping attacker with harvested ids: many identities, each renaming a few devices.
// The class's rate fires; no single identity is over its limit.
func TestBurstByManyIdentitiesFires(t *testing.T) {
	sw := &recordingSwitch{}
	s := newSim(t, alert.Config{Switch: sw, TripAll: true})
	s.warmUp()
	var burst []guard.Event
	for i := range 300 {
		burst = append(burst, write(guard.ClassDeviceMetadata, "updateDevice", fmt.Sprintf("victim-owner-%d", i/3), fmt.Sprintf("victim-dev-%d", i)))
	}
	s.minute(burst)
	if len(s.alerts) != 1 || s.alerts[0].Rule != alert.RuleWriteRate || s.alerts[0].KillSwitch != "tripped" {
		t.Fatalf("want one write_rate alert that tripped the switch, got %+v", s.alerts)
	}
	if calls := sw.Calls(); len(calls) != 1 || !strings.HasPrefix(calls[0], "DEVICE_METADATA by alert:write_rate:") {
		t.Fatalf("switch calls: %q", calls)
	}
}

// Without the kill switch configured for the class, an alert never trips it.
func TestAlertTripsOnlyConfiguredClasses(t *testing.T) {
	sw := &recordingSwitch{}
	s := newSim(t, alert.Config{Switch: sw, TripClasses: map[guard.Class]bool{guard.ClassEnrollment: true}})
	s.warmUp()
	var burst []guard.Event
	for i := range 400 {
		burst = append(burst, write(guard.ClassDeviceMetadata, "updateDevice", "user-1", fmt.Sprintf("d-%d", i)))
	}
	s.minute(burst)
	if len(s.alerts) == 0 || len(sw.Calls()) != 0 || s.alerts[0].KillSwitch != "off" {
		t.Fatalf("alerts %+v, switch calls %q", s.alerts, sw.Calls())
	}
}

// Everyday shapes stay quiet: a steady load with noise, a slow ramp to ten times the load over
// hours, and an owner renaming their own 50-device fleet at once.
func TestSteadyLoadRampAndFleetRenameStayQuiet(t *testing.T) {
	sw := &recordingSwitch{}
	s := newSim(t, alert.Config{Switch: sw, TripAll: true})
	s.warmUp()
	// The daily fleet rename: one owner, 50 devices, within a minute.
	fleet := s.steady(5)
	for i := range 50 {
		fleet = append(fleet, write(guard.ClassDeviceMetadata, "updateDevice", "fleet-owner", fmt.Sprintf("fleet-%d", i)))
	}
	s.minute(fleet)
	for range 5 {
		s.minute(s.steady(5))
	}
	// A slow ramp: from 5 to 500 writes a minute (well above the floor) over three hours.
	for m := range 180 {
		s.minute(append(s.steady(5+495*m/180), s.heartbeats(200)...))
	}
	if len(s.alerts) != 0 || len(sw.Calls()) != 0 {
		t.Fatalf("everyday traffic alerted: %+v", s.alerts)
	}
	// The same detector still fires on a burst over the ramped baseline.
	var burst []guard.Event
	for i := range 6000 {
		burst = append(burst, write(guard.ClassDeviceMetadata, "updateDevice", fmt.Sprintf("o-%d", i/4), fmt.Sprintf("x-%d", i)))
	}
	s.minute(burst)
	if len(s.alerts) != 1 {
		t.Fatalf("burst over a high baseline: %+v", s.alerts)
	}
}

// Until the baseline has WarmUp of history the rate rule is silent (a fleet's heartbeats right
// after a restart are no burst); the identity rule is not.
func TestWarmUp(t *testing.T) {
	s := newSim(t, alert.Config{})
	for range 3 {
		s.minute(s.heartbeats(5000))
	}
	if len(s.alerts) != 0 {
		t.Fatalf("alerted during warm-up: %+v", s.alerts)
	}
	var burst []guard.Event
	for i := range 150 {
		burst = append(burst, write(guard.ClassDeviceMetadata, "updateDevice", "user-1", fmt.Sprintf("d-%d", i)))
	}
	s.minute(burst)
	if len(s.alerts) != 1 || s.alerts[0].Rule != alert.RuleIdentityTargets {
		t.Fatalf("identity rule during warm-up: %+v", s.alerts)
	}
}

// Denied and failed attempts change nothing and do not count (anyone can make them for free:
// an anonymous flood of updateDevice on made-up ids must not trip anyone's kill switch);
// neither do the devices' own writes toward the identity rule.
func TestDeniedAndSelfWritesDoNotCount(t *testing.T) {
	for _, outcome := range []guard.Outcome{guard.Denied, guard.Failed} {
		s := newSim(t, alert.Config{})
		s.warmUp()
		var evs []guard.Event
		for i := range 1000 {
			ev := write(guard.ClassDeviceMetadata, "updateDevice", "bob", fmt.Sprintf("alice-dev-%d", i))
			ev.Outcome, ev.Reason = outcome, "FORBIDDEN"
			if outcome == guard.Failed {
				ev.Actor, ev.Reason = "", "BAD_USER_INPUT"
			}
			evs = append(evs, ev)
		}
		s.minute(evs)
		if len(s.alerts) != 0 {
			t.Fatalf("%s attempts alerted: %+v", outcome, s.alerts)
		}
	}
}

// The webhook receives the alert's JSON; a webhook that hangs or is down never blocks the
// evaluation (nor, therefore, a request), and undeliverable alerts are counted.
func TestWebhook(t *testing.T) {
	got := make(chan alert.Alert, 10)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a alert.Alert
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &a); err != nil || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("webhook body %s: %v", b, err)
		}
		got <- a
	}))
	defer hook.Close()
	s := newSim(t, alert.Config{Webhook: hook.URL, Instance: "gw-1"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.d.Run(ctx) // delivers the webhooks; evaluation stays in the test's hands
	s.warmUp()
	var burst []guard.Event
	for i := range 400 {
		burst = append(burst, write(guard.ClassDeviceMetadata, "updateDevice", "user-7", fmt.Sprintf("v-%d", i)))
	}
	s.minute(burst)
	seen := map[string]alert.Alert{}
	for range 2 {
		a := <-got
		seen[a.Rule] = a
	}
	w := seen[alert.RuleWriteRate]
	if w.Alert != "gpugate_write_rate" || w.Class != guard.ClassDeviceMetadata || w.Instance != "gw-1" || w.Observed <= 100 ||
		w.Threshold != 100 || w.Baseline == nil || w.Window != "1m0s" || w.KillSwitch != "off" || w.Summary == "" {
		t.Fatalf("write_rate payload: %+v", w)
	}
	if i := seen[alert.RuleIdentityTargets]; i.Actor != "user-7" || i.Observed != 101 || i.Threshold != 100 {
		t.Fatalf("identity_targets payload: %+v", i)
	}
}

func TestWebhookDownDoesNotBlock(t *testing.T) {
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hung.Close()
	defer close(release)
	s := newSim(t, alert.Config{Webhook: hung.URL, WebhookTimeout: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.d.Run(ctx)
	// 100 identities over their limit: 100 alerts against a webhook that never answers.
	done := make(chan struct{})
	go func() {
		defer close(done)
		var burst []guard.Event
		for u := range 100 {
			for i := range 101 {
				burst = append(burst, write(guard.ClassDeviceKeys, "addDeviceKey", fmt.Sprintf("u-%d", u), fmt.Sprintf("d-%d-%d", u, i)))
			}
		}
		s.minute(burst)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute): // a guard against a hang, not a timing assertion
		t.Fatal("evaluation blocked on the webhook")
	}
	if len(s.alerts) != 100 {
		t.Fatalf("%d alerts", len(s.alerts))
	}
	// The queue holds 32 and the sender holds at most one: the rest are dropped, not waited for.
	if dropped := counter(t, s.reg, "gpugate_alert_webhooks_total", map[string]string{"result": "dropped"}); dropped < 100-33 {
		t.Fatalf("dropped %v alerts, want the ones beyond the queue", dropped)
	}
}

// A webhook that is down (connection refused) fails at once, is posted once (no retries) and is
// counted.
func TestWebhookDownIsCounted(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	url := down.URL
	down.Close()
	attempts := make(chan error, 10)
	client := &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		attempts <- err
		return resp, err
	})}
	s := newSim(t, alert.Config{Webhook: url, Client: client})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.d.Run(ctx)
	var burst []guard.Event
	for u := range 2 {
		for i := range 101 {
			burst = append(burst, write(guard.ClassDeviceKeys, "addDeviceKey", fmt.Sprintf("u-%d", u), fmt.Sprintf("d-%d", i)))
		}
	}
	s.minute(burst)
	if len(s.alerts) != 2 {
		t.Fatalf("%d alerts", len(s.alerts))
	}
	for range 2 {
		if err := <-attempts; err == nil {
			t.Fatal("posting to a closed port succeeded")
		}
	}
	// Deliveries are sequential: the second attempt began after the first was counted.
	if failed := counter(t, s.reg, "gpugate_alert_webhooks_total", map[string]string{"result": "failed"}); failed < 1 {
		t.Fatalf("failed deliveries counted: %v", failed)
	}
	if len(attempts) != 0 {
		t.Fatal("a failed delivery was retried")
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// BenchmarkObserve is the detector's cost per write on the request path:
//
//	go test -run XXX -bench Observe -benchmem ./metrics/...
func BenchmarkObserve(b *testing.B) {
	d, err := alert.New(alert.Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	evs := make([]guard.Event, 1024)
	for i := range evs {
		evs[i] = write(guard.ClassDeviceMetadata, "updateDevice", fmt.Sprintf("user-%d", i%50), fmt.Sprintf("dev-%d", i))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		d.Observe(evs[i%len(evs)])
		i++
	}
}

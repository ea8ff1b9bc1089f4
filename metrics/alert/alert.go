// Package alert is the gateway's write-rate detector (docs/operations.md, "Alerts"). It watches
// the guard's events and raises an alert when
//
//   - write_rate: a write class's writes in the last Window exceed Factor times the class's own
//     baseline (an exponentially weighted moving average of its earlier windows, over about
//     Baseline) and the class's Floor, so a quiet network does not alert on a handful of writes;
//   - identity_targets: one identity (a user, a device key) wrote to more than MaxTargets
//     distinct targets of one class within TargetWindow (the incident: one identity renaming
//     many devices).
//
// An alert is logged, counted in gpugate_alerts_total, posted to an optional webhook (in the
// background, one attempt with a timeout, dropped when the queue is full: it never blocks a
// request), and, for the classes configured, trips the kill switch once.
//
// Only writes that got past authorization count (denied attempts change nothing; their spikes
// are the denial alerts of deploy/prometheus). The detector's state is per process: each replica
// judges its own share of the traffic, and the Prometheus rules judge the sum.
package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpugate/gpugate/guard"
)

// Switch stops the writes of a class (the kill switch, docs/operations.md). Disable returns the
// error of recording the switch.
type Switch interface {
	Disable(ctx context.Context, class guard.Class, reason, by string) error
}

// Rule names, as they appear in logs, the webhook payload and gpugate_alerts_total.
const (
	RuleWriteRate       = "write_rate"
	RuleIdentityTargets = "identity_targets"
)

// Config tunes the detector. Zero values take the defaults of Defaults().
type Config struct {
	// Step is the evaluation period and the granularity of the counts.
	Step time.Duration
	// Window is the recent period whose writes are compared with the baseline.
	Window time.Duration
	// Baseline is the time constant of the baseline's moving average.
	Baseline time.Duration
	// WarmUp is how much history the baseline needs before write_rate can fire.
	WarmUp time.Duration
	// Factor: write_rate fires when the recent writes exceed Factor × baseline ...
	Factor float64
	// ... and the class's floor (writes per Window); DefaultFloor for classes not listed.
	Floor        map[guard.Class]float64
	DefaultFloor float64
	// MaxTargets distinct targets per identity and class within TargetWindow; more fires
	// identity_targets.
	MaxTargets   int
	TargetWindow time.Duration
	// MaxTracked bounds the (identity, target) pairs kept, so a flood of identities cannot grow
	// the detector's memory without bound; pairs beyond it are not tracked (the rate rule still
	// sees their writes).
	MaxTracked int

	// Webhook, when set, receives each alert as a JSON POST.
	Webhook string
	// WebhookTimeout bounds one POST.
	WebhookTimeout time.Duration
	// TripClasses lists the classes whose alerts trip the kill switch; All trips every class.
	TripClasses map[guard.Class]bool
	TripAll     bool
	// Switch is the kill switch; nil means alerts never trip it.
	Switch Switch

	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Log receives the alerts (slog.Default when nil).
	Log *slog.Logger
	// Registerer receives gpugate_alerts_total and the webhook counters (none when nil).
	Registerer prometheus.Registerer
	// Client posts to the webhook (a client with WebhookTimeout when nil).
	Client *http.Client
	// Instance names this gateway in the webhook payload (the host name, say).
	Instance string
}

// Defaults returns the detector's default settings (docs/operations.md, "Alerts").
func Defaults() Config {
	return Config{
		Step:     10 * time.Second,
		Window:   time.Minute,
		Baseline: 30 * time.Minute,
		WarmUp:   10 * time.Minute,
		Factor:   10,
		// Writes per minute below which no class alerts, whatever its baseline: an owner
		// renaming a 50-device fleet at once stays quiet; the incident's hundreds do not.
		// Workers' classes scale with the fleet, their baselines do the work.
		Floor: map[guard.Class]float64{
			guard.ClassDeviceMetadata: 100,
			guard.ClassEnrollment:     100,
			guard.ClassDeviceKeys:     100,
			guard.ClassProofs:         300,
			guard.ClassHeartbeats:     1000,
		},
		DefaultFloor:   100,
		MaxTargets:     100,
		TargetWindow:   10 * time.Minute,
		MaxTracked:     100_000,
		WebhookTimeout: 5 * time.Second,
	}
}

func (c Config) withDefaults() Config {
	d := Defaults()
	if c.Step <= 0 {
		c.Step = d.Step
	}
	if c.Window <= 0 {
		c.Window = d.Window
	}
	if c.Window < c.Step {
		c.Window = c.Step
	}
	if c.Baseline <= 0 {
		c.Baseline = d.Baseline
	}
	if c.WarmUp < 0 {
		c.WarmUp = 0
	} else if c.WarmUp == 0 {
		c.WarmUp = d.WarmUp
	}
	if c.Factor <= 0 {
		c.Factor = d.Factor
	}
	floor := map[guard.Class]float64{}
	for k, v := range d.Floor {
		floor[k] = v
	}
	for k, v := range c.Floor {
		floor[k] = v
	}
	c.Floor = floor
	if c.DefaultFloor <= 0 {
		c.DefaultFloor = d.DefaultFloor
	}
	if c.MaxTargets <= 0 {
		c.MaxTargets = d.MaxTargets
	}
	if c.TargetWindow <= 0 {
		c.TargetWindow = d.TargetWindow
	}
	if c.MaxTracked <= 0 {
		c.MaxTracked = d.MaxTracked
	}
	if c.WebhookTimeout <= 0 {
		c.WebhookTimeout = d.WebhookTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Client == nil {
		c.Client = &http.Client{Timeout: c.WebhookTimeout}
	}
	return c
}

// Alert is one alert as logged and posted to the webhook.
type Alert struct {
	Alert     string      `json:"alert"` // "gpugate_" + rule
	Rule      string      `json:"rule"`
	Class     guard.Class `json:"class"`
	Severity  string      `json:"severity"`
	Summary   string      `json:"summary"`
	At        time.Time   `json:"at"`
	Instance  string      `json:"instance,omitempty"`
	Window    string      `json:"window"`
	Observed  float64     `json:"observed"`           // writes in the window, or distinct targets
	Threshold float64     `json:"threshold"`          // what it had to exceed
	Baseline  *float64    `json:"baseline,omitempty"` // write_rate: the class's baseline per window
	Actor     string      `json:"actor,omitempty"`    // identity_targets: the identity
	// KillSwitch is what became of the class's kill switch: "tripped", "failed", "already"
	// (tripped by an earlier alert of this episode) or "off" (not configured for the class).
	KillSwitch string `json:"killSwitch"`
}

// Detector is the write-rate detector. Create it with New, feed it with Observe (subscribe it to
// the guard), and run Run (or call Evaluate).
type Detector struct {
	cfg        Config
	n          int64   // buckets per Window
	alpha      float64 // the moving average's weight of one bucket
	warmBucket int64   // buckets the baseline needs before write_rate fires

	mu      sync.Mutex
	classes map[guard.Class]*classState
	tracked int
	tripped map[guard.Class]bool

	alerts   *prometheus.CounterVec
	webhooks *prometheus.CounterVec
	outbox   chan Alert
}

type classState struct {
	counts map[int64]float64 // bucket number -> writes
	next   int64             // the oldest bucket not yet fed to the baseline
	began  bool
	ewma   float64 // writes per Window
	fed    int64   // buckets fed to the baseline
	firing bool
	since  time.Time
	actors map[string]*actorState
}

type actorState struct {
	targets map[string]time.Time // target -> last write
	firing  bool
}

// webhookQueue bounds the alerts waiting to be posted; more are dropped (and counted).
const webhookQueue = 32

// New returns a detector for cfg. Register its counters with cfg.Registerer; it returns the
// registration's error.
func New(cfg Config) (*Detector, error) {
	cfg = cfg.withDefaults()
	d := &Detector{
		cfg:     cfg,
		n:       int64(max(1, cfg.Window/cfg.Step)),
		alpha:   1 - math.Exp(-float64(cfg.Step)/float64(cfg.Baseline)),
		classes: map[guard.Class]*classState{},
		tripped: map[guard.Class]bool{},
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpugate_alerts_total",
			Help: "Alerts the gateway's write-rate detector raised, by rule (write_rate, identity_targets) and write class.",
		}, []string{"rule", "class"}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpugate_alert_webhooks_total",
			Help: "Alert webhook deliveries by result (sent, failed, dropped: the queue was full).",
		}, []string{"result"}),
	}
	d.warmBucket = int64(cfg.WarmUp / cfg.Step)
	for _, c := range guard.Classes() {
		for _, r := range []string{RuleWriteRate, RuleIdentityTargets} {
			d.alerts.WithLabelValues(r, string(c))
		}
	}
	for _, r := range []string{"sent", "failed", "dropped"} {
		d.webhooks.WithLabelValues(r)
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{d.alerts, d.webhooks} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("alert: registering metrics: %w", err)
			}
		}
	}
	if cfg.Webhook != "" {
		d.outbox = make(chan Alert, webhookQueue)
	}
	return d, nil
}

func (d *Detector) bucket(t time.Time) int64 { return t.UnixNano() / int64(d.cfg.Step) }

// Observe records one guard event. It takes a lock and updates a few counters: it never blocks
// on I/O.
func (d *Detector) Observe(ev guard.Event) {
	// Only writes that were carried out (or judged) count: a refused or failed attempt (bad
	// input, an unknown device id, a forged token) costs an attacker nothing, so counting it
	// would let anyone set off the detector, and with --alert-kill-switch stop everyone's writes.
	// Refusals have their own series and Prometheus rule (denial spikes).
	if ev.Class == "" || (ev.Outcome != guard.Succeeded && ev.Outcome != guard.Flagged) {
		return
	}
	at := ev.At
	if at.IsZero() {
		at = d.cfg.Now()
	}
	b := d.bucket(at)
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.class(ev.Class, b)
	if b >= st.next {
		st.counts[b]++
	}
	if ev.Target == "" || ev.Actor == "" || ev.Actor == "anonymous" || "device:"+ev.Target == ev.Actor {
		return // a device writing to itself touches one target
	}
	a := st.actors[ev.Actor]
	if a == nil {
		if d.tracked >= d.cfg.MaxTracked {
			return
		}
		a = &actorState{targets: map[string]time.Time{}}
		st.actors[ev.Actor] = a
	}
	if _, ok := a.targets[ev.Target]; ok {
		a.targets[ev.Target] = at
		return
	}
	// One past the threshold is enough to fire; more would only cost memory.
	if len(a.targets) > d.cfg.MaxTargets || d.tracked >= d.cfg.MaxTracked {
		return
	}
	a.targets[ev.Target] = at
	d.tracked++
}

func (d *Detector) class(c guard.Class, b int64) *classState {
	st := d.classes[c]
	if st == nil {
		st = &classState{counts: map[int64]float64{}, actors: map[string]*actorState{}}
		d.classes[c] = st
	}
	if !st.began {
		st.began, st.next = true, b-d.n+1
	}
	return st
}

// Run evaluates every Step until ctx ends, and posts webhooks. It returns when ctx is done.
func (d *Detector) Run(ctx context.Context) {
	if d.outbox != nil {
		go d.deliver(ctx)
	}
	tick := time.NewTicker(d.cfg.Step)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			d.Evaluate(ctx)
		}
	}
}

// Evaluate judges every class at the clock's time and acts on the alerts that begin; it returns
// them.
func (d *Detector) Evaluate(ctx context.Context) []Alert {
	now := d.cfg.Now()
	d.mu.Lock()
	fired := d.evaluate(now)
	d.mu.Unlock()
	for i := range fired {
		d.act(ctx, &fired[i])
	}
	return fired
}

func (d *Detector) evaluate(now time.Time) []Alert {
	var fired []Alert
	// The newest bucket that has begun before now: evaluated on a step boundary (as Run's
	// ticker roughly is), that is the step just completed, so the window is the last Window.
	cur := d.bucket(now.Add(-1))
	classes := make([]guard.Class, 0, len(d.classes))
	for c := range d.classes {
		classes = append(classes, c)
	}
	sort.Slice(classes, func(i, j int) bool { return classes[i] < classes[j] })
	for _, c := range classes {
		st := d.class(c, cur)
		d.feedBaseline(st, cur)
		var recent float64
		for b := cur - d.n + 1; b <= cur; b++ {
			recent += st.counts[b]
		}
		floor := d.cfg.DefaultFloor
		if f, ok := d.cfg.Floor[c]; ok {
			floor = f
		}
		threshold := math.Max(d.cfg.Factor*st.ewma, floor)
		over := st.fed >= d.warmBucket && recent > threshold
		switch {
		case over && !st.firing:
			st.firing, st.since = true, now
			base := st.ewma
			fired = append(fired, Alert{Rule: RuleWriteRate, Class: c, Severity: "critical", At: now,
				Window: d.cfg.Window.String(), Observed: recent, Threshold: threshold, Baseline: &base,
				Summary: fmt.Sprintf("%s writes: %.0f in the last %s, baseline %.1f, threshold %.0f", c, recent, d.cfg.Window, base, threshold)})
		case !over && st.firing && now.Sub(st.since) >= d.cfg.Window:
			// Resolved once a full window has passed under the threshold, so a burst at the
			// edge of the window does not fire twice.
			st.firing = false
			d.cfg.Log.Info("write-rate alert resolved", "rule", RuleWriteRate, "class", string(c), "writes", recent, "threshold", threshold)
		}
		fired = append(fired, d.judgeActors(c, st, now)...)
		if !st.firing && !d.anyActorFiring(st) {
			d.tripped[c] = false // the episode is over: a later one may trip the switch again
		}
	}
	return fired
}

// feedBaseline moves the buckets that left the recent window into the moving average. While the
// class is firing they are left out, so an attack does not become the baseline it is judged by.
func (d *Detector) feedBaseline(st *classState, cur int64) {
	last := cur - d.n // the newest bucket outside the window
	if last < st.next {
		return
	}
	// After a long gap only the last few time constants matter; decay for the rest at once.
	limit := int64(5*float64(d.cfg.Baseline)/float64(d.cfg.Step)) + 1
	if skip := last - st.next + 1 - limit; skip > 0 {
		for b := st.next; b < st.next+skip; b++ {
			delete(st.counts, b)
		}
		if !st.firing {
			st.ewma *= math.Pow(1-d.alpha, float64(skip))
			st.fed += skip
		}
		st.next += skip
	}
	for b := st.next; b <= last; b++ {
		if !st.firing {
			x := st.counts[b] * float64(d.n) // this bucket's writes as a rate per Window
			st.ewma += d.alpha * (x - st.ewma)
			st.fed++
		}
		delete(st.counts, b)
	}
	st.next = last + 1
	for b := range st.counts { // late events for buckets already judged
		if b < st.next {
			delete(st.counts, b)
		}
	}
}

// judgeActors forgets targets older than TargetWindow and fires for identities over MaxTargets.
func (d *Detector) judgeActors(c guard.Class, st *classState, now time.Time) []Alert {
	var fired []Alert
	cutoff := now.Add(-d.cfg.TargetWindow)
	actors := make([]string, 0, len(st.actors))
	for id := range st.actors {
		actors = append(actors, id)
	}
	sort.Strings(actors)
	for _, id := range actors {
		a := st.actors[id]
		for t, at := range a.targets {
			if at.Before(cutoff) {
				delete(a.targets, t)
				d.tracked--
			}
		}
		n := len(a.targets)
		switch {
		case n > d.cfg.MaxTargets && !a.firing:
			a.firing = true
			fired = append(fired, Alert{Rule: RuleIdentityTargets, Class: c, Severity: "critical", At: now,
				Window: d.cfg.TargetWindow.String(), Observed: float64(n), Threshold: float64(d.cfg.MaxTargets), Actor: id,
				Summary: fmt.Sprintf("%s: %s wrote to more than %d distinct targets within %s", c, id, d.cfg.MaxTargets, d.cfg.TargetWindow)})
		case n <= d.cfg.MaxTargets && a.firing:
			a.firing = false
			d.cfg.Log.Info("write-rate alert resolved", "rule", RuleIdentityTargets, "class", string(c), "actor", id)
		}
		if n == 0 && !a.firing {
			delete(st.actors, id)
		}
	}
	return fired
}

func (d *Detector) anyActorFiring(st *classState) bool {
	for _, a := range st.actors {
		if a.firing {
			return true
		}
	}
	return false
}

// act logs, counts and posts an alert that began, and trips the class's kill switch when
// configured (once per episode).
func (d *Detector) act(ctx context.Context, a *Alert) {
	a.Alert, a.Instance = "gpugate_"+a.Rule, d.cfg.Instance
	a.KillSwitch = "off"
	if d.cfg.Switch != nil && (d.cfg.TripAll || d.cfg.TripClasses[a.Class]) {
		d.mu.Lock()
		already := d.tripped[a.Class]
		d.tripped[a.Class] = true
		d.mu.Unlock()
		if already {
			a.KillSwitch = "already"
		} else {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			// The reason is shown to every refused caller: it names the rule and class, never the
			// identity that set it off (that is in the alert, the log and the audit log).
			err := d.cfg.Switch.Disable(sctx, a.Class, fmt.Sprintf("write-rate alert %s on %s writes", a.Rule, a.Class), "alert:"+a.Rule)
			cancel()
			if err != nil {
				a.KillSwitch = "failed"
				d.mu.Lock()
				d.tripped[a.Class] = false // the next alert may try again
				d.mu.Unlock()
				d.cfg.Log.Error("write-rate alert could not trip the kill switch", "class", string(a.Class), "rule", a.Rule, "err", err)
			} else {
				a.KillSwitch = "tripped"
			}
		}
	}
	d.alerts.WithLabelValues(a.Rule, string(a.Class)).Inc()
	attrs := []any{"alert", a.Alert, "rule", a.Rule, "class", string(a.Class), "severity", a.Severity,
		"observed", a.Observed, "threshold", a.Threshold, "window", a.Window, "kill_switch", a.KillSwitch}
	if a.Baseline != nil {
		attrs = append(attrs, "baseline", *a.Baseline)
	}
	if a.Actor != "" {
		attrs = append(attrs, "actor", a.Actor)
	}
	d.cfg.Log.Error("ALERT "+a.Summary, attrs...)
	if d.outbox != nil {
		select {
		case d.outbox <- *a:
		default:
			d.webhooks.WithLabelValues("dropped").Inc()
			d.cfg.Log.Warn("alert webhook queue full: alert not posted", "alert", a.Alert, "class", string(a.Class))
		}
	}
}

// deliver posts queued alerts to the webhook, one at a time, each once.
func (d *Detector) deliver(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-d.outbox:
			if err := d.post(ctx, a); err != nil {
				d.webhooks.WithLabelValues("failed").Inc()
				d.cfg.Log.Warn("alert webhook failed", "alert", a.Alert, "class", string(a.Class), "err", err)
			} else {
				d.webhooks.WithLabelValues("sent").Inc()
			}
		}
	}
}

// post sends one alert; it returns the request's error or the status of a non-2xx answer.
func (d *Detector) post(ctx context.Context, a Alert) error {
	body, err := json.Marshal(a)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.WebhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.cfg.Webhook, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "gpugate-alert")
	resp, err := d.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", strings.TrimSpace(resp.Status))
	}
	return nil
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gpugate/gpugate/guard"
	"github.com/gpugate/gpugate/metrics"
	"github.com/gpugate/gpugate/metrics/alert"
)

// metricsFlags are where /metrics is served and the write-rate detector's knobs
// (docs/operations.md, "Metrics" and "Alerts").
type metricsFlags struct {
	listen, floor, webhook, killSwitch           *string
	public, alerts                               *bool
	step, window, baseline, warmUp, targetWindow *time.Duration
	webhookTimeout                               *time.Duration
	factor                                       *float64
	maxTargets                                   *int
}

func addMetricsFlags(f *envFlags) metricsFlags {
	d := alert.Defaults()
	factor := f.FlagSet.Float64("alert-factor", d.Factor, "write_rate fires when a class's writes in --alert-window exceed this many times its baseline (and its floor)")
	f.bind("alert-factor", "GPUGATE_ALERT_FACTOR")
	return metricsFlags{
		listen: f.String("metrics-listen", "GPUGATE_METRICS_LISTEN", "",
			"serve /metrics on this separate address, e.g. 127.0.0.1:9090 (empty: none; dev mode serves it on --listen too)"),
		public: f.Bool("metrics-public", "GPUGATE_METRICS_PUBLIC", false,
			"also serve /metrics on --listen outside dev mode (it shows traffic and write rates: keep it off a public port)"),
		alerts: f.Bool("alerts", "GPUGATE_ALERTS", true, "run the write-rate detector"),
		step:   f.Duration("alert-interval", "GPUGATE_ALERT_INTERVAL", d.Step, "how often the detector evaluates, and the granularity of its counts"),
		window: f.Duration("alert-window", "GPUGATE_ALERT_WINDOW", d.Window, "the recent period whose writes are compared with the baseline"),
		baseline: f.Duration("alert-baseline", "GPUGATE_ALERT_BASELINE", d.Baseline,
			"time constant of each class's baseline (a moving average of its earlier windows)"),
		warmUp: f.Duration("alert-warm-up", "GPUGATE_ALERT_WARM_UP", d.WarmUp, "history the baseline needs after a start before write_rate can fire"),
		factor: factor,
		floor: f.String("alert-floor", "GPUGATE_ALERT_FLOOR", "",
			"writes per --alert-window below which a class never fires write_rate, as CLASS=N,... (default: DEVICE_METADATA, ENROLLMENT, DEVICE_KEYS 100, PROOFS 300, HEARTBEATS 1000)"),
		maxTargets: f.Int("alert-max-targets", "GPUGATE_ALERT_MAX_TARGETS", d.MaxTargets,
			"identity_targets fires when one identity writes to more distinct targets of one class within --alert-target-window"),
		targetWindow: f.Duration("alert-target-window", "GPUGATE_ALERT_TARGET_WINDOW", d.TargetWindow, "the window of --alert-max-targets"),
		webhook: f.String("alert-webhook", "GPUGATE_ALERT_WEBHOOK", "",
			"POST each alert as JSON to this http(s) URL (one attempt, in the background)"),
		webhookTimeout: f.Duration("alert-webhook-timeout", "GPUGATE_ALERT_WEBHOOK_TIMEOUT", d.WebhookTimeout, "how long one webhook POST may take"),
		killSwitch: f.String("alert-kill-switch", "GPUGATE_ALERT_KILL_SWITCH", "",
			"write classes whose alerts also disable their writes (kill switch), comma-separated, or all (default: none)"),
	}
}

// config returns the detector's settings; it fails on a malformed floor, class or webhook.
func (mf metricsFlags) config() (alert.Config, error) {
	cfg := alert.Config{Step: *mf.step, Window: *mf.window, Baseline: *mf.baseline, WarmUp: *mf.warmUp,
		Factor: *mf.factor, MaxTargets: *mf.maxTargets, TargetWindow: *mf.targetWindow,
		Webhook: *mf.webhook, WebhookTimeout: *mf.webhookTimeout, Floor: map[guard.Class]float64{}}
	if *mf.step <= 0 || *mf.window < *mf.step || *mf.baseline < *mf.window || *mf.warmUp < 0 || *mf.factor <= 1 ||
		*mf.maxTargets < 1 || *mf.targetWindow <= 0 || *mf.webhookTimeout <= 0 {
		return cfg, errors.New("alert settings: want --alert-interval > 0, --alert-window >= --alert-interval, --alert-baseline >= --alert-window, " +
			"--alert-factor > 1, --alert-max-targets >= 1 and positive windows and timeout")
	}
	for _, kv := range splitList(*mf.floor) {
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.ParseFloat(v, 64)
		c, cerr := parseClass(k)
		if !ok || err != nil || n < 1 || cerr != nil {
			return cfg, fmt.Errorf("--alert-floor: want CLASS=N with N >= 1 and CLASS one of %s, got %q", classNames(), kv)
		}
		cfg.Floor[c] = n
	}
	if *mf.webhook != "" {
		u, err := url.Parse(*mf.webhook)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return cfg, fmt.Errorf("--alert-webhook must be an http(s) URL, got %q", *mf.webhook)
		}
	}
	switch ks := strings.TrimSpace(*mf.killSwitch); ks {
	case "", "none":
	case "all":
		cfg.TripAll = true
	default:
		cfg.TripClasses = map[guard.Class]bool{}
		for _, name := range splitList(ks) {
			c, err := parseClass(name)
			if err != nil {
				return cfg, fmt.Errorf("--alert-kill-switch: %w", err)
			}
			cfg.TripClasses[c] = true
		}
	}
	return cfg, nil
}

func parseClass(s string) (guard.Class, error) {
	for _, c := range guard.Classes() {
		if strings.EqualFold(strings.TrimSpace(s), string(c)) {
			return c, nil
		}
	}
	return "", fmt.Errorf("unknown write class %q (want one of %s)", s, classNames())
}

func classNames() string {
	var names []string
	for _, c := range guard.Classes() {
		names = append(names, string(c))
	}
	return strings.Join(names, ", ")
}

// observability is serve's registry, write-rate detector and separate metrics listener.
type observability struct {
	reg    *metrics.Metrics
	det    *alert.Detector
	srv    *http.Server
	cancel context.CancelFunc
}

// startObservability creates the registry, starts the detector (tripping sw, which may be nil
// when no class is configured to trip) and the separate listener. It returns the error of a
// setting, of a kill switch asked for without one, or of listening.
func (mf metricsFlags) start(sw alert.Switch, log *slog.Logger) (*observability, error) {
	o := &observability{reg: metrics.New()}
	if *mf.alerts {
		cfg, err := mf.config()
		if err != nil {
			return nil, err
		}
		if (cfg.TripAll || len(cfg.TripClasses) > 0) && sw == nil {
			return nil, errors.New("--alert-kill-switch: this gateway has no kill switch to trip")
		}
		cfg.Switch, cfg.Log, cfg.Registerer = sw, log, o.reg.Registry()
		cfg.Instance, _ = os.Hostname()
		if o.det, err = alert.New(cfg); err != nil {
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		o.cancel = cancel
		go o.det.Run(ctx)
	}
	if *mf.listen != "" {
		ln, err := net.Listen("tcp", *mf.listen)
		if err != nil {
			o.close()
			return nil, fmt.Errorf("--metrics-listen: %w", err)
		}
		o.srv = metricsServer(o.reg, log)
		go func() { _ = o.srv.Serve(ln) }()
		log.Info("metrics listening", "url", "http://"+ln.Addr().String()+"/metrics")
	}
	return o, nil
}

// metricsServer serves /metrics alone (everything else 404), with the main listener's timeouts.
func metricsServer(m *metrics.Metrics, log *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// observers returns what the guard's events go to besides the metrics: the detector.
func (o *observability) observers() []func(guard.Event) {
	if o == nil || o.det == nil {
		return nil
	}
	return []func(guard.Event){o.det.Observe}
}

func (o *observability) close() {
	if o == nil {
		return
	}
	if o.cancel != nil {
		o.cancel()
	}
	if o.srv != nil {
		_ = o.srv.Close()
	}
}

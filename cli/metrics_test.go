package cli

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/gpugate/gpugate/guard"
)

func parseMetricsFlags(t *testing.T, args ...string) metricsFlags {
	t.Helper()
	f := newFlags("serve", "")
	mf := addMetricsFlags(f)
	if err := f.parse(args); err != nil {
		t.Fatal(err)
	}
	return mf
}

func TestAlertFlags(t *testing.T) {
	cfg, err := parseMetricsFlags(t, "--alert-floor", "DEVICE_METADATA=50, heartbeats=5000", "--alert-kill-switch", "device_metadata,ENROLLMENT",
		"--alert-webhook", "https://hooks.example.com/gpugate").config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Floor[guard.ClassDeviceMetadata] != 50 || cfg.Floor[guard.ClassHeartbeats] != 5000 ||
		!cfg.TripClasses[guard.ClassDeviceMetadata] || !cfg.TripClasses[guard.ClassEnrollment] || cfg.TripAll || len(cfg.TripClasses) != 2 {
		t.Fatalf("%+v", cfg)
	}
	if cfg, err := parseMetricsFlags(t, "--alert-kill-switch", "all").config(); err != nil || !cfg.TripAll {
		t.Fatalf("all: %+v %v", cfg, err)
	}
	for _, args := range [][]string{
		{"--alert-floor", "DEVICE_METADATA"},
		{"--alert-floor", "NOT_A_CLASS=5"},
		{"--alert-floor", "PROOFS=0"},
		{"--alert-kill-switch", "metadata"},
		{"--alert-webhook", "ftp://example.com"},
		{"--alert-webhook", "hooks.example.com/x"},
		{"--alert-factor", "1"},
		{"--alert-window", "5s", "--alert-interval", "10s"},
		{"--alert-max-targets", "0"},
	} {
		if _, err := parseMetricsFlags(t, args...).config(); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}

// A kill switch asked for without one to trip is an error at start, not a silent no-op.
func TestAlertKillSwitchNeedsASwitch(t *testing.T) {
	_, err := parseMetricsFlags(t, "--alert-kill-switch", "all").start(nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "no kill switch") {
		t.Fatalf("start: %v", err)
	}
	o, err := parseMetricsFlags(t, "--alert-kill-switch", "all", "--alerts=false").start(nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	o.close()
}

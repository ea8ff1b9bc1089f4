package cli

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpugate/gpugate/attest/nvidia"
	"github.com/gpugate/gpugate/verify"
)

// The simulation CA is trusted by default in zero-config mode only; a gateway given a database
// URL trusts it only when --cc-trust-simulation says so (and an explicit false wins in
// zero-config mode too).
func TestCCTrustSimulationDefaults(t *testing.T) {
	gpu, err := nvidia.NewSimulatedGPU(nvidia.SimulationOptions{Seed: []byte("GPU-ccflags")})
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 32)
	ev, err := gpu.Evidence(nonce)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, c := range []struct {
		name     string
		args     []string
		embedded bool
		trusted  bool
	}{
		{"zero-config", nil, true, true},
		{"database URL", nil, false, false},
		{"database URL, --cc-trust-simulation", []string{"--cc-trust-simulation"}, false, true},
		{"zero-config, --cc-trust-simulation=false", []string{"--cc-trust-simulation=false"}, true, false},
	} {
		f := newFlags("serve", "")
		cc := addCCFlags(f)
		if err := f.parse(c.args); err != nil {
			t.Fatal(err)
		}
		if err := cc.load(); err != nil {
			t.Fatal(err)
		}
		var w verify.Config
		if err := cc.apply(&w, f.explicit, c.embedded, quiet); err != nil {
			t.Fatal(err)
		}
		res := w.CC.Verify(context.Background(), ev, nonce)
		if res.OK() != c.trusted || c.trusted && res.Root != nvidia.RootSimulation {
			t.Fatalf("%s: simulated evidence verified %v (%+v), want %v", c.name, res.OK(), res.Reasons, c.trusted)
		}
	}
}

// A bad value fails startup with a message naming the flag.
func TestCCFlagsRefuseBadValues(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.pem")
	key := filepath.Join(dir, "key.pem")
	_ = os.WriteFile(empty, []byte("no PEM here\n"), 0o600)
	_ = os.WriteFile(key, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600)
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--cc-extra-roots", filepath.Join(dir, "missing.pem")}, nil, "--cc-extra-roots"},
		{[]string{"--cc-extra-roots", empty}, nil, "holds no PEM certificate"},
		{[]string{"--cc-extra-roots", key}, nil, "only CERTIFICATE blocks"},
		{[]string{"--cc-rim-bundle", filepath.Join(dir, "missing")}, nil, "--cc-rim-bundle"},
		{[]string{"--cc-ocsp-url", "ftp://ocsp.example"}, nil, "--cc-ocsp-url must be an absolute http(s) URL"},
		{nil, map[string]string{"GPUGATE_CC_OCSP_URL": "ocsp.example"}, "--cc-ocsp-url must be an absolute http(s) URL"},
		{[]string{"--cc-ocsp-url", "http://ocsp.example", "--cc-ocsp-timeout", "0s"}, nil, "--cc-ocsp-timeout must be positive"},
		{[]string{"--cc-require-rims"}, nil, "--cc-require-rims needs --cc-rim-bundle"},
		{[]string{"--cc-require-revocation"}, nil, "--cc-require-revocation needs --cc-ocsp-url"},
	} {
		for k, v := range c.env {
			t.Setenv(k, v)
		}
		f := newFlags("serve", "")
		cc := addCCFlags(f)
		err := f.parse(c.args)
		if err == nil {
			err = cc.load()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%v %v: got %v, want an error containing %q", c.args, c.env, err, c.want)
		}
		for k := range c.env {
			_ = os.Unsetenv(k)
		}
	}
	// Good values load: NVIDIA's roots as extra roots, an OCSP responder.
	f := newFlags("serve", "")
	cc := addCCFlags(f)
	if err := f.parse([]string{"--cc-extra-roots", "../attest/nvidia/testdata/nvidia-device-identity-root.pem",
		"--cc-ocsp-url", "http://ocsp.example", "--cc-require-revocation"}); err != nil {
		t.Fatal(err)
	}
	if err := cc.load(); err != nil || len(cc.roots) != 1 {
		t.Fatalf("good values: %v, %d roots", err, len(cc.roots))
	}
	var w verify.Config
	if err := cc.apply(&w, f.explicit, false, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil || !w.RequireRevocation || w.RequireRIMs {
		t.Fatalf("apply: %v %+v", err, w)
	}
}

package cli

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpugate/gpugate/attest/nvidia"
)

const (
	fixtureReport = "../attest/nvidia/testdata/hopper-attestation-report.hex"
	fixtureChain  = "../attest/nvidia/testdata/hopper-cert-chain.pem"
)

// runAttest runs `gpugate attest verify args...` in process and returns its output and error.
func runAttest(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	m := &AttestMain{out: &out}
	if err := m.ParseFlags(append([]string{"verify"}, args...)); err != nil {
		return "", err
	}
	err := m.Run(context.Background())
	return out.String(), err
}

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAttestVerifyFixture(t *testing.T) {
	// The acceptance interface: the fixture exits 0 through Main...
	if code := Main([]string{"attest", "verify", "--report", fixtureReport, "--chain", fixtureChain}); code != 0 {
		t.Fatalf("fixture: exit %d", code)
	}
	out, err := runAttest(t, "--report", fixtureReport, "--chain", fixtureChain)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"nonce:          931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb (taken from the report itself",
		"verdict:        VERIFIED (root NVIDIA)", "gpu identity:   ", "serial 41431D480FE5E87274", "CN=GH100 A01 GSP BROM",
		"driver:         550.90.07", "vbios:          96.00.9f.00.01", "measurements:   not checked (no --rim-bundle)",
		"revocation:     not checked (no --ocsp-url)",
		"rim ids:        NV_GPU_DRIVER_GH100_550.90.07 NV_GPU_VBIOS_1010_0200_882_96009F0001",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// ...also as binary, and with the nonce given.
	hx, _ := os.ReadFile(fixtureReport)
	bin, _ := hex.DecodeString(strings.TrimSpace(string(hx)))
	if out, err := runAttest(t, "--report", writeFile(t, "r.bin", bin), "--chain", fixtureChain,
		"--nonce", "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"); err != nil || !strings.Contains(out, "(expected, from --nonce)") {
		t.Fatalf("binary report with nonce: %v\n%s", err, out)
	}
}

func TestAttestVerifyRejects(t *testing.T) {
	hx, _ := os.ReadFile(fixtureReport)
	// One byte of the report changed (a hex digit pair in the middle): exit 1 through Main.
	bad := bytes.Clone(hx)
	i := len(bad) / 2 &^ 1
	bad[i] = map[bool]byte{true: '1', false: '0'}[bad[i] == '0']
	if code := Main([]string{"attest", "verify", "--report", writeFile(t, "bad.hex", bad), "--chain", fixtureChain}); code != 1 {
		t.Fatalf("changed report: exit %d", code)
	}
	out, err := runAttest(t, "--report", writeFile(t, "bad.hex", bad), "--chain", fixtureChain)
	if err == nil || !strings.Contains(out, "NOT VERIFIED") || !strings.Contains(out, "CC_SIGNATURE_INVALID") {
		t.Fatalf("changed report: %v\n%s", err, out)
	}
	// Another nonce.
	out, err = runAttest(t, "--report", fixtureReport, "--chain", fixtureChain, "--nonce", strings.Repeat("00", 32))
	if err == nil || !strings.Contains(out, "CC_NONCE_MISMATCH") {
		t.Fatalf("other nonce: %v\n%s", err, out)
	}
	// Bad flags and files: errors, not verdicts.
	for _, args := range [][]string{
		{"--report", fixtureReport},
		{"--report", fixtureReport, "--chain", fixtureChain, "--nonce", "abcd"},
		{"--report", filepath.Join(t.TempDir(), "missing"), "--chain", fixtureChain},
		{"--report", fixtureReport, "--chain", fixtureChain, "--rim-bundle", t.TempDir()},
		{"--report", fixtureReport, "--chain", fixtureChain, "--ocsp-url", "not a url"},
	} {
		if _, err := runAttest(t, args...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
	if code := Main([]string{"attest"}); code == 0 {
		t.Error("attest without verify: exit 0")
	}
}

func TestAttestVerifySimulation(t *testing.T) {
	g, err := nvidia.NewSimulatedGPU(nvidia.SimulationOptions{Seed: []byte("cli test")})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := g.Evidence(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	rep := writeFile(t, "r.hex", []byte(hex.EncodeToString(ev.Report)))
	chain := writeFile(t, "c.pem", ev.Chain)
	if out, err := runAttest(t, "--report", rep, "--chain", chain); err == nil || !strings.Contains(out, "CC_CHAIN_UNTRUSTED") {
		t.Fatalf("simulation untrusted: %v\n%s", err, out)
	}
	if out, err := runAttest(t, "--report", rep, "--chain", chain, "--trust-simulation"); err != nil || !strings.Contains(out, "VERIFIED (root SIMULATION)") {
		t.Fatalf("simulation trusted: %v\n%s", err, out)
	}
}

package worker

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"

	"github.com/gpugate/gpugate/attest"
)

func reasonsOf(fs []attest.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, string(f.Reason))
	}
	return out
}

func TestSimulatedProfilesAgainstTheRules(t *testing.T) {
	t.Parallel()
	for _, p := range Profiles {
		t.Run(p.Name, func(t *testing.T) {
			t.Parallel()
			lib, err := Simulate(p.Name, []byte("seed-"+p.Name), nil)
			if err != nil {
				t.Fatal(err)
			}
			snap, err := Collect(lib)
			if err != nil {
				t.Fatalf("collect: %v", err)
			}
			if err := snap.Validate(); err != nil {
				t.Fatalf("the snapshot is malformed: %v", err)
			}
			// Dev mode's policy: the go-nvml DGX H200 and B200 report PCI ids of no real GPU.
			findings := attest.CheckSnapshotWith(snap, attest.Policy{AllowSimulated: true})
			if !p.Counterfeit || p.CC { // a CC counterfeit's snapshot is genuine: its fault is in the evidence
				if len(findings) != 0 {
					t.Fatalf("a genuine simulated host has findings: %v", findings)
				}
				return
			}
			if got := reasonsOf(findings); !sameSet(got, p.Expect) {
				t.Fatalf("reasons %v, want %v (%v)", got, p.Expect, findings)
			}
		})
	}
}

func TestCollectFillsEverySnapshotField(t *testing.T) {
	t.Parallel()
	lib, _ := Simulate("dgxh100", []byte("k"), nil)
	s, err := Collect(lib)
	if err != nil {
		t.Fatal(err)
	}
	if s.DriverVersion != "550.54.15" || s.NVMLVersion != "12.550.54.15" || s.CUDADriverVersion != 12040 {
		t.Fatalf("host versions: %q %q %d", s.DriverVersion, s.NVMLVersion, s.CUDADriverVersion)
	}
	if len(s.GPUs) != 8 {
		t.Fatalf("%d GPUs", len(s.GPUs))
	}
	buses := map[string]bool{}
	for i, g := range s.GPUs {
		if !strings.HasPrefix(g.UUID, "GPU-") || len(g.UUID) != 40 || g.Name != "NVIDIA H100 80GB HBM3" ||
			g.PCIDeviceID != 0x2330 || g.PCIVendorID != attest.VendorNVIDIA || g.PCISubsystemID == 0 ||
			g.MemoryTotalBytes != 80<<30 || g.Architecture != "Hopper" || g.ComputeMajor != 9 || g.ComputeMinor != 0 ||
			len(g.Serial) != 13 || g.BoardPartNumber == "" || g.VBIOSVersion == "" || g.MaxSMClockMHz == 0 ||
			g.MaxMemClockMHz == 0 || g.PowerLimitMilliwatts != 700_000 || g.ECCEnabled == nil || !*g.ECCEnabled ||
			g.MIGEnabled == nil || *g.MIGEnabled {
			t.Fatalf("GPU %d: %+v", i, g)
		}
		buses[g.BusID] = true
	}
	if len(buses) != 8 || !buses["00000000:18:00.0"] {
		t.Fatalf("bus ids %v", buses)
	}
}

func TestSimulatedIdentitiesAreStable(t *testing.T) {
	t.Parallel()
	snap := func(seed string, clone []byte) attest.Snapshot {
		lib, err := Simulate("dgxh100", []byte(seed), clone)
		if err != nil {
			t.Fatal(err)
		}
		s, err := Collect(lib)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a1, a2, b := snap("a", nil), snap("a", nil), snap("b", nil)
	if a1.Hash() != a2.Hash() {
		t.Fatal("the same seed gave two different hosts: a restart would look like new GPUs")
	}
	if a1.GPUs[0].UUID == b.GPUs[0].UUID || a1.GPUs[0].Serial == b.GPUs[0].Serial {
		t.Fatal("two seeds gave the same GPU identities")
	}
	clone := snap("b", []byte("a"))
	for i := range clone.GPUs {
		if clone.GPUs[i].UUID != a1.GPUs[i].UUID || clone.GPUs[i].Serial == a1.GPUs[i].Serial {
			t.Fatalf("GPU %d: a clone takes the UUIDs (only) of the other host", i)
		}
	}
	if _, err := Simulate("dgx-nope", nil, nil); err == nil || !strings.Contains(err.Error(), "dgxh100") {
		t.Fatalf("unknown profile: %v", err)
	}
}

// noDriver is what nvml.New() gives on a host without libnvidia-ml.so.1.
func noDriver() *mock.Interface {
	return &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }}
}

func TestNoDriverSaysSoClearly(t *testing.T) {
	t.Parallel()
	for name, lib := range map[string]nvml.Interface{"library not found": noDriver(), "no library": nil} {
		_, err := Collect(lib)
		if !errors.Is(err, ErrNoDriver) || err.Error() != "NVIDIA driver (libnvidia-ml.so.1) not found: install the NVIDIA driver, or try --simulate dgxh100" {
			t.Fatalf("%s: %v", name, err)
		}
	}
	m := &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_DRIVER_NOT_LOADED }}
	if _, err := Collect(m); !errors.Is(err, ErrNoDriver) || !strings.Contains(err.Error(), "kernel driver not loaded") {
		t.Fatalf("driver not loaded: %v", err)
	}
}

// The real library on this machine: without an NVIDIA driver, nvml.New() cannot load.
func TestRealNVMLWithoutDriver(t *testing.T) {
	t.Parallel()
	lib := nvml.New()
	if lib.Init() == nvml.SUCCESS {
		lib.Shutdown()
		t.Skip("this machine has an NVIDIA driver")
	}
	if _, err := Collect(lib); !errors.Is(err, ErrNoDriver) {
		t.Fatalf("collect without a driver: %v", err)
	}
}

func TestMainWithoutDriverExitsNonZero(t *testing.T) {
	t.Parallel()
	key := filepath.Join(t.TempDir(), "key.json")
	var stdout, stderr bytes.Buffer
	code := mainContext(context.Background(), []string{"--server", "http://127.0.0.1:1", "--key-file", key, "--once"},
		func(o *Options) { o.NVML = noDriver() }, &stdout, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "NVIDIA driver (libnvidia-ml.so.1) not found: install the NVIDIA driver, or try --simulate dgxh100") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
	}
	if _, err := os.Stat(key); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a host without a driver got a key file: %v", err)
	}
}

// gpuMock is one GPU whose functions are set by the test; the rest panic like go-nvml's mocks.
func gpuMock(dev *mock.Device) *mock.Interface {
	return &mock.Interface{
		InitFunc:                       func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:                   func() nvml.Return { return nvml.SUCCESS },
		SystemGetDriverVersionFunc:     func() (string, nvml.Return) { return "550.54.15", nvml.SUCCESS },
		SystemGetNVMLVersionFunc:       func() (string, nvml.Return) { return "12.550.54.15", nvml.SUCCESS },
		SystemGetCudaDriverVersionFunc: func() (int, nvml.Return) { return 12040, nvml.SUCCESS },
		DeviceGetCountFunc:             func() (int, nvml.Return) { return 1, nvml.SUCCESS },
		DeviceGetHandleByIndexFunc:     func(int) (nvml.Device, nvml.Return) { return dev, nvml.SUCCESS },
	}
}

func TestNotSupportedIsAnAbsentField(t *testing.T) {
	t.Parallel()
	notSupported := func() (string, nvml.Return) { return "", nvml.ERROR_NOT_SUPPORTED }
	dev := &mock.Device{
		GetUUIDFunc: func() (string, nvml.Return) { return "GPU-2b7d6f2e-8c1a-4e52-9a77-0c3f5e1d9b10", nvml.SUCCESS },
		GetNameFunc: func() (string, nvml.Return) { return "NVIDIA GeForce RTX 4090", nvml.SUCCESS },
		GetPciInfoFunc: func() (nvml.PciInfo, nvml.Return) {
			return nvml.PciInfo{PciDeviceId: 0x268410DE}, nvml.SUCCESS
		},
		GetMemoryInfoFunc:   func() (nvml.Memory, nvml.Return) { return nvml.Memory{Total: 24564 << 20}, nvml.SUCCESS },
		GetSerialFunc:       notSupported,
		GetEccModeFunc:      func() (nvml.EnableState, nvml.EnableState, nvml.Return) { return 0, 0, nvml.ERROR_NOT_SUPPORTED },
		GetMigModeFunc:      func() (int, int, nvml.Return) { return 0, 0, nvml.ERROR_NOT_SUPPORTED },
		GetVbiosVersionFunc: func() (string, nvml.Return) { return "", nvml.ERROR_FUNCTION_NOT_FOUND },
		// Architecture, compute capability, part number, clocks and power are left unset: the
		// mock panics, which Collect reads as "not supported".
	}
	lib := gpuMock(dev)
	s, err := Collect(lib)
	if err != nil {
		t.Fatal(err)
	}
	g := s.GPUs[0]
	if g.Serial != "" || g.ECCEnabled != nil || g.MIGEnabled != nil || g.VBIOSVersion != "" || g.Architecture != "" ||
		g.ComputeMajor != 0 || g.BoardPartNumber != "" || g.MaxSMClockMHz != 0 || g.PowerLimitMilliwatts != 0 {
		t.Fatalf("absent fields should be zero: %+v", g)
	}
	if g.PCIDeviceID != 0x2684 || g.PCIVendorID != attest.VendorNVIDIA || g.MemoryTotalBytes != 24564<<20 {
		t.Fatalf("present fields: %+v", g)
	}
	if len(lib.InitCalls()) != 1 || len(lib.ShutdownCalls()) != 1 {
		t.Fatalf("Init called %d times, Shutdown %d: they must be paired", len(lib.InitCalls()), len(lib.ShutdownCalls()))
	}
}

func TestOtherNVMLErrorsFailTheCollection(t *testing.T) {
	t.Parallel()
	dev := &mock.Device{
		GetUUIDFunc:       func() (string, nvml.Return) { return "GPU-2b7d6f2e-8c1a-4e52-9a77-0c3f5e1d9b10", nvml.SUCCESS },
		GetNameFunc:       func() (string, nvml.Return) { return "NVIDIA H100 80GB HBM3", nvml.SUCCESS },
		GetPciInfoFunc:    func() (nvml.PciInfo, nvml.Return) { return nvml.PciInfo{PciDeviceId: 0x233010DE}, nvml.SUCCESS },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_GPU_IS_LOST },
	}
	lib := gpuMock(dev)
	_, err := Collect(lib)
	if err == nil || !strings.Contains(err.Error(), "GPU 0 GetMemoryInfo") || errors.Is(err, ErrNoDriver) {
		t.Fatalf("a lost GPU: %v", err)
	}
	if len(lib.ShutdownCalls()) != 1 {
		t.Fatal("Shutdown must follow a successful Init even when the collection fails")
	}
	lib = gpuMock(dev)
	lib.ShutdownFunc = func() nvml.Return { return nvml.ERROR_UNKNOWN }
	dev.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{Total: 80 << 30}, nvml.SUCCESS }
	if _, err := Collect(lib); err == nil || !strings.Contains(err.Error(), "Shutdown") {
		t.Fatalf("a failed Shutdown is reported: %v", err)
	}
}

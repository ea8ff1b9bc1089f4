package attest

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	mrand "math/rand/v2"
	"testing"
)

// mockGPU mirrors a github.com/NVIDIA/go-nvml v0.13.4-1 pkg/nvml/mock/gpus.Config: what its
// simulated devices answer to GetName, GetArchitecture, GetMemoryInfo, GetCudaComputeCapability
// and GetPciInfo. go-nvml is not a dependency of this package, so the values are copied here
// (and the worker's tests exercise the real mock).
type mockGPU struct {
	name     string
	nvmlArch uint32 // nvml.DeviceArchitecture
	memoryMB uint64
	ccMajor  int
	ccMinor  int
	pciID    uint32 // nvmlPciInfo_t.pciDeviceId, device<<16 | vendor
}

var (
	mockA100SXM4_40GB = mockGPU{"Mock NVIDIA A100-SXM4-40GB", 7, 40960, 8, 0, 0x20B010DE}
	mockA100SXM4_80GB = mockGPU{"NVIDIA A100-SXM4-80GB", 7, 81920, 8, 0, 0x20B210DE}
	mockA100PCIe40GB  = mockGPU{"NVIDIA A100-PCIE-40GB", 7, 40960, 8, 0, 0x20F110DE}
	mockA100PCIe80GB  = mockGPU{"NVIDIA A100-PCIE-80GB", 7, 81920, 8, 0, 0x20B510DE}
	mockA30PCIe24GB   = mockGPU{"NVIDIA A30-PCIE-24GB", 7, 24576, 8, 0, 0x20B710DE}
	mockH100SXM5_80GB = mockGPU{"NVIDIA H100 80GB HBM3", 9, 81920, 9, 0, 0x233010DE}
	mockH200SXM5      = mockGPU{"NVIDIA H200 141GB HBM3e", 9, 144384, 9, 0, 0x233310DE}
	mockB200SXM5      = mockGPU{"NVIDIA B200 180GB HBM3e", 10, 184320, 10, 0, 0x2B0010DE}
)

// busStyle is how GPU.BusID is filled. go-nvml's mock leaves nvmlPciInfo_t's location fields
// zero and names its devices "0000:%02x:00.0"; the worker's simulator (worker/simulate.go)
// fills them as NVML formats them on a real DGX, which is the only style that passes.
type busStyle int

const (
	busNVML     busStyle = iota // "00000000:%02X:00.0" on the DGX bus numbers, as the simulator and NVML give
	busAbsent                   // BusId string empty
	busFromInfo                 // formatted from the mock's zero Domain/Bus/Device fields
	busFromMock                 // the mock's server.Device.PciBusID, "0000:%02x:00.0"
)

// dgxBuses are the PCI bus numbers of a DGX's eight GPUs (as the worker's simulator uses them).
var dgxBuses = []int{0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb}

// mockHost builds the snapshot a worker collects from server.New(WithGPUs(gpus...),
// WithDriverVersion(driver), WithNVMLVersion(nvmlV), WithCUDADriverVersion(cuda)) after the
// worker's simulator has personalised it: random UUIDs as the mock makes them, MIG mode 0,
// 13-digit serials and bus ids (the mock leaves both unset; real boards always report them),
// and the other functions the mock leaves unset (board part number, vBIOS, clocks, power,
// ECC, subsystem) treated as not supported.
func mockHost(t testing.TB, driver, nvmlV string, cuda int, bus busStyle, gpus ...mockGPU) Snapshot {
	t.Helper()
	s := Snapshot{DriverVersion: driver, NVMLVersion: nvmlV, CUDADriverVersion: cuda}
	for i, m := range gpus {
		dev, ven := SplitPCIID(m.pciID)
		mig := false
		g := GPU{
			UUID:             randomUUID(t),
			Name:             m.name,
			PCIDeviceID:      uint32(dev),
			PCIVendorID:      ven,
			MemoryTotalBytes: m.memoryMB * 1024 * 1024,
			Architecture:     ArchitectureName(m.nvmlArch),
			ComputeMajor:     m.ccMajor,
			ComputeMinor:     m.ccMinor,
			MIGEnabled:       &mig,
			Serial:           fmt.Sprintf("16%011d", mrand.Int64N(1e11)),
		}
		switch bus {
		case busNVML:
			g.BusID = fmt.Sprintf("00000000:%02X:00.0", dgxBuses[i%len(dgxBuses)]+i/len(dgxBuses))
		case busFromInfo:
			g.BusID = "00000000:00:00.0"
		case busFromMock:
			g.BusID = fmt.Sprintf("0000:%02x:00.0", i)
		}
		s.GPUs = append(s.GPUs, g)
	}
	return s
}

func eight(m mockGPU) []mockGPU {
	return []mockGPU{m, m, m, m, m, m, m, m}
}

// The four DGX constructors of go-nvml's mock package, with their driver versions.
func dgxA100(t testing.TB, bus busStyle) Snapshot {
	return mockHost(t, "550.54.15", "12.550.54.15", 12040, bus, eight(mockA100SXM4_40GB)...)
}

func dgxH100(t testing.TB, bus busStyle) Snapshot {
	return mockHost(t, "550.54.15", "12.550.54.15", 12040, bus, eight(mockH100SXM5_80GB)...)
}

func dgxH200(t testing.TB, bus busStyle) Snapshot {
	return mockHost(t, "550.54.15", "12.550.54.15", 12040, bus, eight(mockH200SXM5)...)
}

func dgxB200(t testing.TB, bus busStyle) Snapshot {
	return mockHost(t, "560.28.03", "12.560.28.03", 12060, bus, eight(mockB200SXM5)...)
}

func randomUUID(t testing.TB) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("GPU-%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// seededUUID is a valid, deterministic GPU UUID.
func seededUUID(seed string) string {
	b := sha256.Sum256([]byte(seed))
	return fmt.Sprintf("GPU-%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func ptr[T any](v T) *T { return &v }

// realH100 is an 8-GPU HGX H100 as real hardware reports it: every optional field present,
// NVML's reserved-memory total, real bus ids, serials and the 32-bit subsystem id.
func realH100() Snapshot {
	s := Snapshot{DriverVersion: "550.90.07", NVMLVersion: "12.550.90.07", CUDADriverVersion: 12040}
	buses := []string{"1B", "43", "52", "61", "9D", "C3", "D1", "DF"}
	for i, bus := range buses {
		s.GPUs = append(s.GPUs, GPU{
			UUID:                 seededUUID(fmt.Sprintf("h100-%d", i)),
			Name:                 "NVIDIA H100 80GB HBM3",
			PCIDeviceID:          0x2330,
			PCIVendorID:          0x10DE,
			PCISubsystemID:       0x16C110DE,
			BusID:                "00000000:" + bus + ":00.0",
			MemoryTotalBytes:     81559 << 20,
			Architecture:         "Hopper",
			ComputeMajor:         9,
			ComputeMinor:         0,
			Serial:               fmt.Sprintf("165322301%04d", 1234+i),
			BoardPartNumber:      "692-2G520-0200-000",
			VBIOSVersion:         "96.00.89.00.01",
			MaxSMClockMHz:        1980,
			MaxMemClockMHz:       2619,
			PowerLimitMilliwatts: 700000,
			ECCEnabled:           ptr(true),
			MIGEnabled:           ptr(false),
		})
	}
	return s
}

// one returns a single-GPU host built from realH100's first GPU after edit.
func one(edit func(*GPU)) Snapshot {
	s := realH100()
	s.GPUs = s.GPUs[:1]
	if edit != nil {
		edit(&s.GPUs[0])
	}
	return s
}

func testKey(seed byte) (ed25519.PublicKey, ed25519.PrivateKey) {
	priv := ed25519.NewKeyFromSeed(bytes32(seed))
	return priv.Public().(ed25519.PublicKey), priv
}

func bytes32(v byte) []byte {
	b := make([]byte, 32)
	for i := range b {
		b[i] = v + byte(i)
	}
	return b
}

func reasonsOf(fs []Finding) map[Reason]bool {
	m := map[Reason]bool{}
	for _, f := range fs {
		m[f.Reason] = true
	}
	return m
}

// hostOf returns a host of n GPUs like realH100's first after edit, each with its own UUID,
// serial and bus id (the edit may change the model; it runs before the identities are set
// only if it does not set them itself).
func hostOf(n int, edit func(*GPU)) Snapshot {
	s := realH100()
	tmpl := s.GPUs[0]
	s.GPUs = nil
	for i := range n {
		g := tmpl
		g.UUID = seededUUID(fmt.Sprint("host-", i))
		g.Serial = fmt.Sprintf("165322302%04d", i)
		g.BusID = fmt.Sprintf("%08X:%02X:00.0", i/8, dgxBuses[i%8])
		if edit != nil {
			edit(&g)
		}
		s.GPUs = append(s.GPUs, g)
	}
	return s
}

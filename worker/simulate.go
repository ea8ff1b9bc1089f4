package worker

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxb200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// Profile is one simulated host for --simulate.
type Profile struct {
	Name        string
	Description string
	// Counterfeit profiles are built to be flagged; Expect lists the reason codes the gateway
	// should return for them (documentation and tests).
	Counterfeit bool
	Expect      []string
	// CC: confidential computing is on, and each GPU sends evidence with the proof. A CC
	// counterfeit's snapshot is genuine; its Expect codes come from the evidence.
	CC    bool
	build func(seed []byte) *server.Server
}

// board is what the go-nvml mocks leave unset (they panic on it) and a real board reports:
// the values are plausible test data, not a reference.
type board struct {
	subsystem       uint32
	partNumber      string
	vbios           string
	maxSM, maxMem   uint32 // MHz
	powerLimitMW    uint32
	busIDs          []uint32 // PCI bus numbers of the GPUs, as on the real system
	noSerial, noECC bool     // GeForce boards answer ERROR_NOT_SUPPORTED
	noMIG           bool
	idlePowerMW     uint32
}

var (
	dgxBus     = []uint32{0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb}
	a100Board  = board{0x134f10de, "692-2G506-0200-002", "92.00.45.00.03", 1410, 1215, 400_000, []uint32{0x07, 0x0f, 0x47, 0x4e, 0x87, 0x90, 0xb7, 0xbd}, false, false, false, 55_000}
	h100Board  = board{0x16c110de, "692-2G520-0200-000", "96.00.99.00.01", 1980, 2619, 700_000, dgxBus, false, false, false, 70_000}
	h200Board  = board{0x18be10de, "692-2G520-0280-001", "96.00.A5.00.01", 1980, 3201, 700_000, dgxBus, false, false, false, 75_000}
	b200Board  = board{0x199910de, "692-2G525-0220-000", "97.00.6B.00.02", 1965, 3996, 1_000_000, dgxBus, false, false, false, 120_000}
	rtx4090Brd = board{0x16f310de, "", "95.02.3C.40.87", 3120, 10501, 450_000, []uint32{0x01, 0x21, 0x41, 0x61}, true, true, true, 20_000}
)

// rtx4090AsH100 is an RTX 4090 whose name was rewritten to claim an H100: the PCI id, the
// architecture and the compute capability still say Ada Lovelace.
var rtx4090AsH100 = gpus.Config{
	Name:         "NVIDIA H100 PCIe",
	Architecture: nvml.DEVICE_ARCH_ADA,
	Brand:        nvml.BRAND_GEFORCE_RTX,
	MemoryMB:     24564,
	CudaMajor:    8,
	CudaMinor:    9,
	PciDeviceId:  0x268410DE,
}

// Profiles lists every --simulate profile: the four genuine go-nvml DGX servers, then one
// counterfeit per scenario of docs/attestation.md that a single host can show. (A UUID cloned
// from another host is --clone-uuids-from on top of any profile.)
var Profiles = []Profile{
	{Name: "dgxa100", Description: "genuine DGX A100: 8x A100-SXM4-40GB (go-nvml mock)",
		build: func(seed []byte) *server.Server { return personalize(dgxa100.New(), seed, a100Board) }},
	{Name: "dgxh100", Description: "genuine DGX H100: 8x H100-SXM5-80GB (go-nvml mock)",
		build: func(seed []byte) *server.Server { return personalize(dgxh100.New(), seed, h100Board) }},
	{Name: "dgxh200", Description: "genuine DGX H200: 8x H200 141GB (go-nvml mock)",
		build: func(seed []byte) *server.Server { return personalize(dgxh200.New(), seed, h200Board) }},
	{Name: "dgxb200", Description: "genuine DGX B200: 8x B200 180GB (go-nvml mock)",
		build: func(seed []byte) *server.Server { return personalize(dgxb200.New(), seed, b200Board) }},
	{Name: "dgxh100-cc", CC: true, Description: "genuine DGX H100 in confidential-computing mode: each GPU signs its attestation report under gpugate's simulation CA",
		build: func(seed []byte) *server.Server {
			return withConfCompute(personalize(dgxh100.New(), seed, h100Board), seed, h100Board, ccGenuine)
		}},
	{Name: "dgxh200-cc", CC: true, Description: "genuine DGX H200 in confidential-computing mode: each GPU signs its attestation report under gpugate's simulation CA",
		build: func(seed []byte) *server.Server {
			return withConfCompute(personalize(dgxh200.New(), seed, h200Board), seed, h200Board, ccGenuine)
		}},
	{Name: "dgxb200-cc", CC: true, Description: "genuine DGX B200 in confidential-computing mode: each GPU signs its attestation report under gpugate's simulation CA",
		build: func(seed []byte) *server.Server {
			return withConfCompute(personalize(dgxb200.New(), seed, b200Board), seed, b200Board, ccGenuine)
		}},
	{Name: "fake-h100-24g", Counterfeit: true, Expect: []string{"MEMORY_OUT_OF_BAND"},
		Description: `counterfeit: a DGX H100 whose 8 "H100 80GB" GPUs report 24 GiB`,
		build: func(seed []byte) *server.Server {
			s := personalize(dgxh100.New(), seed, h100Board)
			for _, d := range s.Devices {
				d.(*server.Device).MemoryInfo.Total = 24 << 30
			}
			return s
		}},
	{Name: "h100-rtx4090", Counterfeit: true, Expect: []string{"PCI_ID_NAME_MISMATCH", "ARCH_MISMATCH", "COMPUTE_CAPABILITY_MISMATCH"},
		Description: `counterfeit: 4x RTX 4090 (PCI id 0x2684, Ada, 8.9) renamed "NVIDIA H100 PCIe"`,
		build: func(seed []byte) *server.Server {
			s := server.NewServerWithGPUs("550.54.15", "12.550.54.15", 12040, gpus.Multiple(4, rtx4090AsH100)...)
			return personalize(s, seed, rtx4090Brd)
		}},
	{Name: "dup-uuid", Counterfeit: true, Expect: []string{"DUPLICATE_UUID_IN_HOST"},
		Description: "counterfeit: a DGX H100 whose GPU 1 reports GPU 0's UUID",
		build: func(seed []byte) *server.Server {
			s := personalize(dgxh100.New(), seed, h100Board)
			s.Devices[1].(*server.Device).UUID = s.Devices[0].(*server.Device).UUID
			return s
		}},
	{Name: "dgxh100-cc-cloned", Counterfeit: true, CC: true, Expect: []string{"CC_HARDWARE_REUSED"},
		Description: "counterfeit: a DGX H100 in CC mode where one GPU's (simulated) hardware identity signs the reports of all 8",
		build: func(seed []byte) *server.Server {
			return withConfCompute(personalize(dgxh100.New(), seed, h100Board), seed, h100Board, ccCloned)
		}},
	{Name: "dgxh100-cc-forged", Counterfeit: true, CC: true, Expect: []string{"CC_CHAIN_UNTRUSTED"},
		Description: "counterfeit: a DGX H100 in CC mode whose reports are signed under a certificate authority the worker made itself",
		build: func(seed []byte) *server.Server {
			return withConfCompute(personalize(dgxh100.New(), seed, h100Board), seed, h100Board, ccForged)
		}},
}

// ProfileNames returns the names of Profiles in order.
func ProfileNames() []string {
	names := make([]string, len(Profiles))
	for i, p := range Profiles {
		names[i] = p.Name
	}
	return names
}

// LookupProfile returns the profile with this name, or false.
func LookupProfile(name string) (Profile, bool) {
	i := slices.IndexFunc(Profiles, func(p Profile) bool { return p.Name == name })
	if i < 0 {
		return Profile{}, false
	}
	return Profiles[i], true
}

// Simulate returns a simulated NVML for the named profile. seed (the device's public key)
// fixes the GPU identities (UUIDs, serials), so a restarted worker shows the same GPUs. With
// cloneSeed non-empty, every GPU takes the UUID the host with that seed would report: a clone
// of another host's GPUs, which the gateway flags as UUID_ON_ANOTHER_DEVICE on this device, the
// later claimant (the device that enrolled the UUIDs first keeps its verdict).
// It returns an error naming the valid profiles for an unknown name.
func Simulate(profile string, seed, cloneSeed []byte) (nvml.Interface, error) {
	p, ok := LookupProfile(profile)
	if !ok {
		return nil, fmt.Errorf("unknown --simulate profile %q; choose one of %s", profile, strings.Join(ProfileNames(), ", "))
	}
	s := p.build(seed)
	if len(cloneSeed) > 0 {
		for i, d := range s.Devices {
			d.(*server.Device).UUID = simUUID(cloneSeed, i)
		}
	}
	return s, nil
}

// simHash derives per-host, per-GPU identity bytes from the seed.
func simHash(seed []byte, what string, i int) [32]byte {
	h := sha256.New()
	h.Write([]byte("gpugate/simulate/v1\x00" + what + "\x00"))
	h.Write(seed)
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(i))) // #nosec G115 -- a GPU index of a simulated host (its profile has at most 8)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// simUUID is a version-4-shaped UUID in NVML's GPU-... form.
func simUUID(seed []byte, i int) string {
	b := simHash(seed, "uuid", i)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("GPU-%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// simSerial is a 13-digit board serial like NVIDIA's.
func simSerial(seed []byte, i int) string {
	b := simHash(seed, "serial", i)
	return fmt.Sprintf("16%011d", binary.BigEndian.Uint64(b[:8])%100_000_000_000)
}

// personalize gives every GPU of s its seed-derived identity and sets the NVML functions the
// go-nvml mock leaves unset (they would panic): serial, part number, vBIOS, clocks, power,
// ECC, PCI bus and subsystem ids, telemetry.
func personalize(s *server.Server, seed []byte, b board) *server.Server {
	start := time.Now()
	for i, nd := range s.Devices {
		d := nd.(*server.Device)
		d.UUID = simUUID(seed, i)
		bus := uint32(i + 1)
		if i < len(b.busIDs) {
			bus = b.busIDs[i]
		}
		d.PciBusID = fmt.Sprintf("00000000:%02X:00.0", bus)
		serial := simSerial(seed, i)
		d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
			p := nvml.PciInfo{Domain: 0, Bus: bus, Device: 0, PciDeviceId: d.Config.PciDeviceId, PciSubSystemId: b.subsystem}
			putCString(p.BusId[:], d.PciBusID)
			putCString(p.BusIdLegacy[:], d.PciBusID[4:])
			return p, nvml.SUCCESS
		}
		d.GetSerialFunc = func() (string, nvml.Return) {
			if b.noSerial {
				return "", nvml.ERROR_NOT_SUPPORTED
			}
			return serial, nvml.SUCCESS
		}
		d.GetBoardPartNumberFunc = func() (string, nvml.Return) {
			if b.partNumber == "" {
				return "", nvml.ERROR_NOT_SUPPORTED
			}
			return b.partNumber, nvml.SUCCESS
		}
		d.GetVbiosVersionFunc = func() (string, nvml.Return) { return b.vbios, nvml.SUCCESS }
		d.GetMaxClockInfoFunc = func(t nvml.ClockType) (uint32, nvml.Return) {
			switch t {
			case nvml.CLOCK_SM, nvml.CLOCK_GRAPHICS:
				return b.maxSM, nvml.SUCCESS
			case nvml.CLOCK_MEM:
				return b.maxMem, nvml.SUCCESS
			}
			return 0, nvml.ERROR_NOT_SUPPORTED
		}
		d.GetPowerManagementLimitFunc = func() (uint32, nvml.Return) { return b.powerLimitMW, nvml.SUCCESS }
		d.GetEccModeFunc = func() (nvml.EnableState, nvml.EnableState, nvml.Return) {
			if b.noECC {
				return 0, 0, nvml.ERROR_NOT_SUPPORTED
			}
			return nvml.FEATURE_ENABLED, nvml.FEATURE_ENABLED, nvml.SUCCESS
		}
		if b.noMIG {
			d.GetMigModeFunc = func() (int, int, nvml.Return) { return 0, 0, nvml.ERROR_NOT_SUPPORTED }
		}
		// Telemetry: an idle GPU, drifting a little so heartbeats are not all identical.
		idx := i
		d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: uint32(time.Since(start).Seconds()+float64(idx)) % 5}, nvml.SUCCESS
		}
		d.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return uint32(31 + idx%4), nvml.SUCCESS }
		// #nosec G115 -- idx is a GPU index of a simulated host (its profile has at most 8)
		d.GetPowerUsageFunc = func() (uint32, nvml.Return) { return b.idlePowerMW + uint32(idx)*500, nvml.SUCCESS }
	}
	return s
}

func putCString(dst []int8, s string) {
	for i := 0; i < len(s) && i < len(dst)-1; i++ {
		dst[i] = int8(s[i]) // #nosec G115 -- C's char: the byte's bits as NVML's int8 arrays hold them
	}
}

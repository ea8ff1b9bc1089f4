package attest

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
)

var simulatedHosts = map[string]func(testing.TB, busStyle) Snapshot{
	"dgxa100": dgxA100, "dgxh100": dgxH100, "dgxh200": dgxH200, "dgxb200": dgxB200,
	"custom A100 PCIe/SXM and A30": func(t testing.TB, bus busStyle) Snapshot {
		return mockHost(t, "550.54.15", "12.550.54.15", 12040, bus,
			mockA100PCIe40GB, mockA100PCIe80GB, mockA100SXM4_80GB, mockA30PCIe24GB)
	},
}

// The go-nvml hosts as the worker's simulator completes them pass where simulated GPUs are
// allowed (dev mode).
func TestGenuineSimulatedHostsHaveNoFindings(t *testing.T) {
	for name, build := range simulatedHosts {
		t.Run(name, func(t *testing.T) {
			s := build(t, busNVML)
			if fs := CheckSnapshotWith(s, Policy{AllowSimulated: true}); len(fs) != 0 {
				t.Fatalf("findings on a genuine simulated host: %v", fs)
			}
			if err := s.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// In production (the zero Policy, which CheckSnapshot uses) the ids only go-nvml's mock
// reports are SIMULATED_GPU on every GPU, and nothing else changes; ids of real silicon that
// the mock also reports (DGX A100, H100) still pass.
func TestSimulatedPCIIDsAreAFindingInProduction(t *testing.T) {
	for name, build := range simulatedHosts {
		t.Run(name, func(t *testing.T) {
			s := build(t, busNVML)
			fs := CheckSnapshot(s)
			simulated := name == "dgxh200" || name == "dgxb200"
			if !simulated {
				if fs != nil {
					t.Fatalf("findings: %v", fs)
				}
				return
			}
			if len(fs) != len(s.GPUs) || !Flagged(fs) {
				t.Fatalf("want one SIMULATED_GPU per GPU, got %v", fs)
			}
			for _, f := range fs {
				if f.Reason != ReasonSimulatedGPU || f.GPU == "" {
					t.Fatalf("unexpected finding %v", f)
				}
			}
			if !slices.Equal(CheckSnapshotWith(s, Policy{}), fs) {
				t.Fatal("CheckSnapshot is not CheckSnapshotWith the zero Policy")
			}
		})
	}
}

// What go-nvml's mock itself reports for the identifiers it leaves unset or fills loosely is
// malformed for real hardware; the worker's simulator replaces it, and the rules say so.
func TestRawGoNVMLMockIdentifiersAreFlagged(t *testing.T) {
	for _, bus := range []busStyle{busAbsent, busFromInfo, busFromMock} {
		s := dgxH100(t, bus)
		fs := CheckSnapshot(s)
		if r := reasonsOf(fs); len(r) != 1 || !r[ReasonMalformedBusID] || len(fs) != len(s.GPUs) {
			t.Errorf("bus style %d: %v", bus, fs)
		}
	}
	s := dgxH100(t, busNVML)
	for i := range s.GPUs {
		s.GPUs[i].Serial = "" // the mock's GetSerial is unset
	}
	fs := CheckSnapshot(s)
	if r := reasonsOf(fs); len(r) != 1 || !r[ReasonSerialMissing] || len(fs) != len(s.GPUs) {
		t.Errorf("serials absent: %v", fs)
	}
}

// Hosts as real hardware reports them (NVML totals with reserved memory, ECC on GDDR boards).
func TestGenuineRealHostsHaveNoFindings(t *testing.T) {
	gpu := func(name string, id uint32, memMiB uint64, arch string, maj, min int, mig *bool) Snapshot {
		return one(func(g *GPU) {
			g.Name, g.PCIDeviceID, g.MemoryTotalBytes, g.Architecture = name, id, memMiB<<20, arch
			g.ComputeMajor, g.ComputeMinor, g.MIGEnabled = maj, min, mig
		})
	}
	hosts := map[string]Snapshot{
		"HGX H100":       realH100(),
		"H100 PCIe":      gpu("NVIDIA H100 PCIe", 0x2331, 81559, "Hopper", 9, 0, ptr(false)),
		"H100 NVL":       gpu("NVIDIA H100 NVL", 0x2321, 95830, "Hopper", 9, 0, ptr(true)),
		"H200":           gpu("NVIDIA H200", 0x2335, 143771, "Hopper", 9, 0, ptr(false)),
		"A100 40GB":      gpu("NVIDIA A100-SXM4-40GB", 0x20B0, 40536, "Ampere", 8, 0, ptr(false)),
		"A100 80GB PCIe": gpu("NVIDIA A100 80GB PCIe", 0x20B5, 81920, "Ampere", 8, 0, ptr(false)),
		"A30":            gpu("NVIDIA A30", 0x20B7, 24576, "Ampere", 8, 0, ptr(false)),
		"L40S, ECC on":   gpu("NVIDIA L40S", 0x26B9, 46068, "Ada Lovelace", 8, 9, nil),
		"L40S, ECC off":  gpu("NVIDIA L40S", 0x26B9, 49140, "Ada Lovelace", 8, 9, nil),
		"L4":             gpu("NVIDIA L4", 0x27B8, 23034, "Ada Lovelace", 8, 9, nil),
		"RTX 4090":       gpu("NVIDIA GeForce RTX 4090", 0x2684, 24564, "Ada Lovelace", 8, 9, nil),
		"RTX 3090":       gpu("NVIDIA GeForce RTX 3090", 0x2204, 24576, "Ampere", 8, 6, nil),
		"T4, ECC on":     gpu("Tesla T4", 0x1EB8, 15360, "Turing", 7, 5, nil),
		"T4, ECC off":    gpu("Tesla T4", 0x1EB8, 16384, "Turing", 7, 5, nil),
		"B200 on R570": func() Snapshot {
			s := gpu("NVIDIA B200", 0x2901, 183359, "Blackwell", 10, 0, ptr(false))
			s.CUDADriverVersion = 12080
			s.DriverVersion, s.NVMLVersion = "570.86.15", "12.570.86.15"
			return s
		}(),
		"older driver names": gpu("A100-SXM4-40GB", 0x20B0, 40960, "Ampere", 8, 0, ptr(false)),
		"HGX H100 4-GPU":     hostOf(4, nil),
		"VM with 2 H100 SXM": hostOf(2, nil),
		"16x A100 SXM4 40GB (two HGX A100 8-GPU boards)": hostOf(16, func(g *GPU) {
			g.Name, g.PCIDeviceID, g.MemoryTotalBytes, g.Architecture, g.ComputeMajor = "NVIDIA A100-SXM4-40GB", 0x20B0, 40536<<20, "Ampere", 8
		}),
		"10x H100 PCIe": hostOf(10, func(g *GPU) { g.Name, g.PCIDeviceID = "NVIDIA H100 PCIe", 0x2331 }),
		"20x L4": hostOf(20, func(g *GPU) {
			g.Name, g.PCIDeviceID, g.MemoryTotalBytes, g.Architecture, g.ComputeMajor, g.ComputeMinor, g.MIGEnabled =
				"NVIDIA L4", 0x27B8, 23034<<20, "Ada Lovelace", 8, 9, nil
		}),
		"RTX 4090 and RTX 3090, no serials": func() Snapshot {
			s := hostOf(2, func(g *GPU) {
				g.Name, g.PCIDeviceID, g.MemoryTotalBytes, g.Architecture, g.ComputeMajor, g.ComputeMinor, g.MIGEnabled =
					"NVIDIA GeForce RTX 4090", 0x2684, 24564<<20, "Ada Lovelace", 8, 9, nil
				g.Serial, g.BoardPartNumber, g.ECCEnabled = "", "", nil
			})
			s.GPUs[1].Name, s.GPUs[1].PCIDeviceID, s.GPUs[1].Architecture, s.GPUs[1].ComputeMinor = "NVIDIA GeForce RTX 3090", 0x2204, "Ampere", 6
			return s
		}(),
		"HGX H100 and a PCIe L4": func() Snapshot {
			s := realH100()
			s.GPUs = append(s.GPUs, hostOf(1, func(g *GPU) {
				g.UUID, g.BusID, g.Serial = seededUUID("l4"), "00000000:E1:00.0", "1322923010001"
				g.Name, g.PCIDeviceID, g.MemoryTotalBytes, g.Architecture, g.ComputeMajor, g.ComputeMinor, g.MIGEnabled =
					"NVIDIA L4", 0x27B8, 23034<<20, "Ada Lovelace", 8, 9, nil
			}).GPUs...)
			return s
		}(),
		"Hyper-V domain, QEMU bus 0": func() Snapshot {
			s := hostOf(2, nil)
			s.GPUs[0].BusID, s.GPUs[1].BusID = "0000BE9C:00:00.0", "00000000:00:05.0"
			return s
		}(),
	}
	for name, s := range hosts {
		t.Run(name, func(t *testing.T) {
			if fs := CheckSnapshot(s); len(fs) != 0 {
				t.Fatalf("findings on genuine hardware: %v", fs)
			}
		})
	}
}

// Each rule with cases that must fire it (and nothing unexpected) and cases that must not.
func TestCounterfeitRules(t *testing.T) {
	type R = Reason
	host := func(edit func(*Snapshot)) Snapshot { s := realH100(); edit(&s); return s }
	h100s := func(n int) Snapshot { return hostOf(n, nil) }
	sxm := func(s Snapshot, i int, id uint32, name string, memMiB uint64, arch string, cc ComputeCapability) Snapshot {
		g := &s.GPUs[i]
		g.PCIDeviceID, g.Name, g.MemoryTotalBytes, g.Architecture, g.ComputeMajor, g.ComputeMinor = id, name, memMiB<<20, arch, cc.Major, cc.Minor
		return s
	}
	a100 := func(s Snapshot, i int) Snapshot {
		return sxm(s, i, 0x20B0, "NVIDIA A100-SXM4-40GB", 40536, "Ampere", ComputeCapability{8, 0})
	}
	pcie := func(n int, id uint32, name string, memMiB uint64, arch string, cc ComputeCapability) Snapshot {
		return hostOf(n, func(g *GPU) {
			g.PCIDeviceID, g.Name, g.MemoryTotalBytes, g.Architecture, g.ComputeMajor, g.ComputeMinor, g.MIGEnabled =
				id, name, memMiB<<20, arch, cc.Major, cc.Minor, nil
		})
	}
	l40s := func(n int) Snapshot {
		return pcie(n, 0x26B9, "NVIDIA L40S", 46068, "Ada Lovelace", ComputeCapability{8, 9})
	}
	l4 := func(n int) Snapshot {
		return pcie(n, 0x27B8, "NVIDIA L4", 23034, "Ada Lovelace", ComputeCapability{8, 9})
	}
	join := func(a, b Snapshot) Snapshot {
		for i, g := range b.GPUs {
			g.UUID, g.Serial, g.BusID = seededUUID(fmt.Sprint("join-", i)), fmt.Sprintf("17%011d", i), fmt.Sprintf("00000002:%02X:00.0", i)
			a.GPUs = append(a.GPUs, g)
		}
		return a
	}
	tests := []struct {
		name string
		snap Snapshot
		want []R
	}{
		// VENDOR_NOT_NVIDIA
		{"vendor AMD", one(func(g *GPU) { g.PCIVendorID = 0x1002 }), []R{ReasonVendorNotNVIDIA}},
		{"vendor absent", one(func(g *GPU) { g.PCIVendorID = 0 }), []R{ReasonVendorNotNVIDIA}},

		// PCI_ID_NAME_MISMATCH
		{"name claims nothing known", one(func(g *GPU) { g.Name = "NVIDIA Graphics Device" }), []R{ReasonPCIIDNameMismatch}},
		{"name claims another model of the same architecture", one(func(g *GPU) { g.Name = "NVIDIA H200" }), []R{ReasonPCIIDNameMismatch}},
		{"name claims a second family", one(func(g *GPU) { g.Name = "NVIDIA H100 A100" }), []R{ReasonPCIIDNameMismatch}},
		{"name capacity contradicts the id", one(func(g *GPU) { g.Name = "NVIDIA H100 24GB" }), []R{ReasonPCIIDNameMismatch}},
		{"L4 id named L40S", one(func(g *GPU) {
			g.Name, g.PCIDeviceID, g.MemoryTotalBytes, g.Architecture, g.ComputeMajor, g.ComputeMinor, g.MIGEnabled =
				"NVIDIA L40S", 0x27B8, 23034<<20, "Ada Lovelace", 8, 9, nil
		}), []R{ReasonPCIIDNameMismatch}},
		{"name spelled differently", one(func(g *GPU) { g.Name = "h100-sxm5-80gb" }), nil},
		{"name of a sibling board", one(func(g *GPU) { g.Name = "NVIDIA H100 PCIe" }), nil},
		{"empty name", one(func(g *GPU) { g.Name = "" }), []R{ReasonPCIIDNameMismatch}},

		// MEMORY_OUT_OF_BAND
		{"H100 with 24 GiB", one(func(g *GPU) { g.MemoryTotalBytes = 24 << 30 }), []R{ReasonMemoryOutOfBand}},
		{"H100 with 96 GiB", one(func(g *GPU) { g.MemoryTotalBytes = 96 << 30 }), []R{ReasonMemoryOutOfBand}},
		{"memory absent", one(func(g *GPU) { g.MemoryTotalBytes = 0 }), []R{ReasonMemoryOutOfBand}},
		{"memory at the lower edge", one(func(g *GPU) { g.MemoryTotalBytes = 76 << 30 }), nil},
		{"memory at the nominal size", one(func(g *GPU) { g.MemoryTotalBytes = 80 << 30 }), nil},

		// ARCH_MISMATCH
		{"arch unknown to the table", one(func(g *GPU) { g.Architecture = "Rubin" }), []R{ReasonArchMismatch}},
		{"arch of another generation", one(func(g *GPU) { g.Architecture = "Ampere" }), []R{ReasonArchMismatch, ReasonComputeCapabilityMismatch}},
		{"arch absent", one(func(g *GPU) { g.Architecture = "" }), nil},
		{"arch in other case", one(func(g *GPU) { g.Architecture = "HOPPER" }), nil},

		// COMPUTE_CAPABILITY_MISMATCH
		{"compute capability 9.1", one(func(g *GPU) { g.ComputeMinor = 1 }), []R{ReasonComputeCapabilityMismatch}},
		{"compute capability 8.9 on Hopper", one(func(g *GPU) { g.ComputeMajor, g.ComputeMinor = 8, 9 }), []R{ReasonComputeCapabilityMismatch}},
		{"compute capability absent", one(func(g *GPU) { g.ComputeMajor, g.ComputeMinor = 0, 0 }), nil},

		// FEATURE_MISMATCH
		{"MIG on an RTX 4090", one(func(g *GPU) {
			g.Name, g.PCIDeviceID, g.MemoryTotalBytes, g.Architecture, g.ComputeMajor, g.ComputeMinor, g.MIGEnabled =
				"NVIDIA GeForce RTX 4090", 0x2684, 24564<<20, "Ada Lovelace", 8, 9, ptr(true)
		}), []R{ReasonFeatureMismatch}},
		{"MIG off reported on an RTX 4090", one(func(g *GPU) {
			g.Name, g.PCIDeviceID, g.MemoryTotalBytes, g.Architecture, g.ComputeMajor, g.ComputeMinor, g.MIGEnabled =
				"NVIDIA GeForce RTX 4090", 0x2684, 24564<<20, "Ada Lovelace", 8, 9, ptr(false)
		}), nil},
		{"MIG on an H100", one(func(g *GPU) { g.MIGEnabled = ptr(true) }), nil},

		// NVML_DRIVER_MISMATCH
		{"NVML of another driver", host(func(s *Snapshot) { s.NVMLVersion = "12.550.54.14" }), []R{ReasonNVMLDriverMismatch}},
		{"NVML without CUDA major", host(func(s *Snapshot) { s.NVMLVersion = s.DriverVersion }), []R{ReasonNVMLDriverMismatch}},
		{"NVML with a non-numeric major", host(func(s *Snapshot) { s.NVMLVersion = "x." + s.DriverVersion }), []R{ReasonNVMLDriverMismatch}},
		{"driver not a version", host(func(s *Snapshot) { s.DriverVersion, s.NVMLVersion = "550..1", "12.550..1" }), []R{ReasonNVMLDriverMismatch}},
		{"driver absent", host(func(s *Snapshot) { s.DriverVersion = "" }), []R{ReasonNVMLDriverMismatch}},
		{"Windows-style driver", host(func(s *Snapshot) { s.DriverVersion, s.NVMLVersion = "551.61", "12.551.61" }), nil},

		// CUDA_TOO_OLD
		{"CUDA 11.7 with Hopper", host(func(s *Snapshot) { s.CUDADriverVersion = 11070 }), []R{ReasonCUDATooOld}},
		{"CUDA absent", host(func(s *Snapshot) { s.CUDADriverVersion = 0 }), []R{ReasonCUDATooOld}},
		{"CUDA 11.8 with Hopper", host(func(s *Snapshot) { s.CUDADriverVersion = 11080 }), nil},
		{"real B200 id on CUDA 12.6", one(func(g *GPU) {
			g.Name, g.PCIDeviceID, g.MemoryTotalBytes, g.Architecture, g.ComputeMajor, g.ComputeMinor = "NVIDIA B200", 0x2901, 183359<<20, "Blackwell", 10, 0
		}), []R{ReasonCUDATooOld}},
		{"RTX 3090 on CUDA 11.0", func() Snapshot {
			s := one(func(g *GPU) {
				g.Name, g.PCIDeviceID, g.MemoryTotalBytes, g.Architecture, g.ComputeMajor, g.ComputeMinor, g.MIGEnabled =
					"NVIDIA GeForce RTX 3090", 0x2204, 24576<<20, "Ampere", 8, 6, nil
			})
			s.CUDADriverVersion = 11000
			return s
		}(), []R{ReasonCUDATooOld}},

		// DUPLICATE_*_IN_HOST
		{"duplicate UUID", host(func(s *Snapshot) { s.GPUs[5].UUID = s.GPUs[2].UUID }), []R{ReasonDuplicateUUIDInHost}},
		{"duplicate bus id", host(func(s *Snapshot) { s.GPUs[1].BusID = s.GPUs[0].BusID }), []R{ReasonDuplicateBusIDInHost}},
		{"duplicate bus id in another spelling", host(func(s *Snapshot) { s.GPUs[1].BusID = "0000:1b:00.0" }),
			[]R{ReasonDuplicateBusIDInHost, ReasonMalformedBusID}},
		{"duplicate serial", host(func(s *Snapshot) { s.GPUs[3].Serial = s.GPUs[0].Serial }), []R{ReasonDuplicateSerialInHost}},
		{"duplicate serial with other spacing and case", host(func(s *Snapshot) {
			s.GPUs[0].Serial, s.GPUs[3].Serial = "ab1234567", " AB 1234567 "
		}), []R{ReasonDuplicateSerialInHost, ReasonMalformedSerial}},

		// IMPLAUSIBLE_GPU_COUNT
		{"no GPUs", host(func(s *Snapshot) { s.GPUs = nil }), []R{ReasonImplausibleGPUCount}},
		{"21 single-width GPUs", l4(21), []R{ReasonImplausibleGPUCount, ReasonImplausibleTopology}},
		{"21 GPUs of an unknown model", hostOf(21, func(g *GPU) { g.Name, g.PCIDeviceID = "NVIDIA Thing", 0x2399 }),
			[]R{ReasonImplausibleGPUCount, ReasonUnknownModel}},

		// IMPLAUSIBLE_TOPOLOGY: SXM counts a baseboard (or a VM's slice of one) has
		{"16 H100 SXM", h100s(16), []R{ReasonImplausibleTopology}},
		{"12 H100 SXM", h100s(12), []R{ReasonImplausibleTopology}},
		{"6 H100 SXM", h100s(6), []R{ReasonImplausibleTopology}},
		{"3 H100 SXM", h100s(3), []R{ReasonImplausibleTopology}},
		{"9 H100 SXM, the ninth with a duplicate UUID", host(func(s *Snapshot) {
			s.GPUs = append(s.GPUs, s.GPUs[0])
			s.GPUs[8].BusID, s.GPUs[8].Serial = "00000000:E0:00.0", "1653223019999"
		}), []R{ReasonImplausibleTopology, ReasonDuplicateUUIDInHost}},
		{"4 H100 SXM", h100s(4), nil},
		{"1 H100 SXM", h100s(1), nil},
		{"16 A100 SXM4 80GB", func() Snapshot {
			s := h100s(16)
			for i := range s.GPUs {
				s = sxm(s, i, 0x20B2, "NVIDIA A100-SXM4-80GB", 81920, "Ampere", ComputeCapability{8, 0})
			}
			return s
		}(), []R{ReasonImplausibleTopology}},
		// IMPLAUSIBLE_TOPOLOGY: one SXM model per host
		{"4 H100 SXM and 4 A100 SXM4", func() Snapshot {
			s := h100s(8)
			for i := 4; i < 8; i++ {
				s = a100(s, i)
			}
			return s
		}(), []R{ReasonImplausibleTopology}},
		{"8 H100 SXM and 8 A100 SXM4", func() Snapshot {
			s := h100s(16)
			for i := 8; i < 16; i++ {
				s = a100(s, i)
			}
			return s
		}(), []R{ReasonImplausibleTopology}},
		{"7 H100 SXM and 1 H200 SXM", sxm(h100s(8), 7, 0x2335, "NVIDIA H200", 143771, "Hopper", ComputeCapability{9, 0}),
			[]R{ReasonImplausibleTopology}},
		// IMPLAUSIBLE_TOPOLOGY: PCIe chassis (10 double-width or 20 single-width)
		{"11 H100 PCIe", pcie(11, 0x2331, "NVIDIA H100 PCIe", 81559, "Hopper", ComputeCapability{9, 0}), []R{ReasonImplausibleTopology}},
		{"11 L40S", l40s(11), []R{ReasonImplausibleTopology}},
		{"6 L40S and 8 L4", join(l40s(6), l4(8)), nil},
		{"6 L40S and 9 L4", join(l40s(6), l4(9)), []R{ReasonImplausibleTopology}},

		// MALFORMED_BUS_ID
		{"bus id in lower case", one(func(g *GPU) { g.BusID = "00000000:1b:00.0" }), []R{ReasonMalformedBusID}},
		{"bus id with a 4-digit domain", one(func(g *GPU) { g.BusID = "0000:1B:00.0" }), []R{ReasonMalformedBusID}},
		{"bus id without a domain", one(func(g *GPU) { g.BusID = "1B:00.0" }), []R{ReasonMalformedBusID}},
		{"bus id with device 0x20", one(func(g *GPU) { g.BusID = "00000000:1B:20.0" }), []R{ReasonMalformedBusID}},
		{"bus id with function 8", one(func(g *GPU) { g.BusID = "00000000:1B:00.8" }), []R{ReasonMalformedBusID}},
		{"bus id of the host bridge", one(func(g *GPU) { g.BusID = "00000000:00:00.0" }), []R{ReasonMalformedBusID}},
		{"bus id not hex", one(func(g *GPU) { g.BusID = "0000000G:1B:00.0" }), []R{ReasonMalformedBusID}},
		{"bus id with trailing space", one(func(g *GPU) { g.BusID = "00000000:1B:00.0 " }), []R{ReasonMalformedBusID}},
		{"bus id absent", one(func(g *GPU) { g.BusID = "" }), []R{ReasonMalformedBusID}},
		{"bus id of another vendor's GPU", one(func(g *GPU) { g.PCIVendorID, g.BusID = 0x1002, "weird" }),
			[]R{ReasonVendorNotNVIDIA, ReasonMalformedBusID}},
		{"bus id function 1", one(func(g *GPU) { g.BusID = "00000000:1B:00.1" }), nil},
		{"bus id on a high domain", one(func(g *GPU) { g.BusID = "0001A2B3:00:00.0" }), nil},

		// SERIAL_MISSING and MALFORMED_SERIAL
		{"serial absent", one(func(g *GPU) { g.Serial = "" }), []R{ReasonSerialMissing}},
		{"placeholder serials", host(func(s *Snapshot) {
			for i := range s.GPUs {
				s.GPUs[i].Serial = []string{"0000000000000", "N/A", "[N/A]", "", " ", "Not Supported", "[Not Supported]", "0"}[i]
			}
		}), []R{ReasonSerialMissing}},
		{"serial of 12 digits", one(func(g *GPU) { g.Serial = "165322301123" }), []R{ReasonMalformedSerial}},
		{"serial of 14 digits", one(func(g *GPU) { g.Serial = "16532230112345" }), []R{ReasonMalformedSerial}},
		{"serial with a letter", one(func(g *GPU) { g.Serial = "1653223O11234" }), []R{ReasonMalformedSerial}},
		{"serial with spaces", one(func(g *GPU) { g.Serial = " 1653223011234" }), []R{ReasonMalformedSerial}},
		{"serial absent on an L4", pcie(1, 0x27B8, "NVIDIA L4", 23034, "Ada Lovelace", ComputeCapability{8, 9}), nil},
		{"no serial on a GeForce", pcie(1, 0x2684, "NVIDIA GeForce RTX 4090", 24564, "Ada Lovelace", ComputeCapability{8, 9}), nil},

		// MALFORMED_BOARD_PART_NUMBER
		{"part number too short", one(func(g *GPU) { g.BoardPartNumber = "692-2G520-0200" }), []R{ReasonMalformedBoardPartNumber}},
		{"part number without hyphens", one(func(g *GPU) { g.BoardPartNumber = "692 2G520 0200 000" }), []R{ReasonMalformedBoardPartNumber}},
		{"part number in lower case", one(func(g *GPU) { g.BoardPartNumber = "692-2g520-0200-000" }), []R{ReasonMalformedBoardPartNumber}},
		{"part number with a letter prefix", one(func(g *GPU) { g.BoardPartNumber = "A92-2G520-0200-000" }), []R{ReasonMalformedBoardPartNumber}},
		{"part number absent", one(func(g *GPU) { g.BoardPartNumber = "" }), nil},
		{"part number N/A", one(func(g *GPU) { g.BoardPartNumber = "N/A" }), nil},
		{"PCIe product part number", one(func(g *GPU) { g.BoardPartNumber = "900-2G183-0000-001" }), nil},

		// MALFORMED_VBIOS_VERSION
		{"vBIOS of four bytes", one(func(g *GPU) { g.VBIOSVersion = "96.00.89.00" }), []R{ReasonMalformedVBIOSVersion}},
		{"vBIOS of six bytes", one(func(g *GPU) { g.VBIOSVersion = "96.00.89.00.01.02" }), []R{ReasonMalformedVBIOSVersion}},
		{"vBIOS with a short byte", one(func(g *GPU) { g.VBIOSVersion = "96.00.89.00.1" }), []R{ReasonMalformedVBIOSVersion}},
		{"vBIOS not hex", one(func(g *GPU) { g.VBIOSVersion = "96.00.8G.00.01" }), []R{ReasonMalformedVBIOSVersion}},
		{"vBIOS without dots", one(func(g *GPU) { g.VBIOSVersion = "9600890001" }), []R{ReasonMalformedVBIOSVersion}},
		{"vBIOS with hex letters", one(func(g *GPU) { g.VBIOSVersion = "96.00.A5.00.01" }), nil},
		{"vBIOS absent", one(func(g *GPU) { g.VBIOSVersion = "" }), nil},

		// SIMULATED_GPU
		{"go-nvml's H200 id in production", one(func(g *GPU) {
			g.PCIDeviceID, g.Name, g.MemoryTotalBytes = 0x2333, "NVIDIA H200 141GB HBM3e", 144384<<20
		}), []R{ReasonSimulatedGPU}},
		{"go-nvml's B200 id in production", func() Snapshot {
			s := one(func(g *GPU) {
				g.PCIDeviceID, g.Name, g.MemoryTotalBytes, g.Architecture, g.ComputeMajor = 0x2B00, "NVIDIA B200 180GB HBM3e", 184320<<20, "Blackwell", 10
			})
			s.CUDADriverVersion = 12060
			return s
		}(), []R{ReasonSimulatedGPU}},

		// MALFORMED_UUID
		{"UUID upper case", one(func(g *GPU) { g.UUID = strings.ToUpper(g.UUID[:4]) + strings.ToUpper(g.UUID[4:]) }), []R{ReasonMalformedUUID}},
		{"UUID without prefix", one(func(g *GPU) { g.UUID = g.UUID[4:] }), []R{ReasonMalformedUUID}},
		{"MIG UUID", one(func(g *GPU) { g.UUID = "MIG" + g.UUID[3:] }), []R{ReasonMalformedUUID}},
		{"UUID too short", one(func(g *GPU) { g.UUID = g.UUID[:len(g.UUID)-1] }), []R{ReasonMalformedUUID}},
		{"UUID with a misplaced hyphen", one(func(g *GPU) { g.UUID = g.UUID[:11] + "-a" + g.UUID[13:] }), []R{ReasonMalformedUUID}},
		{"UUID empty", one(func(g *GPU) { g.UUID = "" }), []R{ReasonMalformedUUID}},

		// UNKNOWN_MODEL (does not flag by itself; what the name claims is still checked)
		{"unknown id, honest name", func() Snapshot {
			s := one(func(g *GPU) {
				g.Name, g.PCIDeviceID, g.MemoryTotalBytes, g.Architecture, g.ComputeMajor, g.ComputeMinor, g.MIGEnabled =
					"NVIDIA GeForce RTX 5090", 0x2B85, 32607<<20, "Blackwell", 12, 0, nil
			})
			s.CUDADriverVersion = 12080
			return s
		}(), []R{ReasonUnknownModel}},
		{"unknown id claiming H100 with 24 GiB", one(func(g *GPU) { g.PCIDeviceID, g.MemoryTotalBytes = 0x2399, 24<<30 }),
			[]R{ReasonUnknownModel, ReasonMemoryOutOfBand}},
		{"unknown id claiming H100 on Ada", one(func(g *GPU) {
			g.PCIDeviceID, g.Architecture, g.ComputeMajor, g.ComputeMinor = 0x2399, "Ada Lovelace", 8, 9
		}),
			[]R{ReasonUnknownModel, ReasonArchMismatch, ReasonComputeCapabilityMismatch}},
		{"unknown id, arch and compute capability disagree", one(func(g *GPU) { g.Name, g.PCIDeviceID, g.ComputeMajor = "NVIDIA Thing", 0x2399, 8 }),
			[]R{ReasonUnknownModel, ReasonComputeCapabilityMismatch}},
		{"unknown Blackwell on CUDA 12.4", one(func(g *GPU) {
			g.Name, g.PCIDeviceID, g.Architecture, g.ComputeMajor, g.ComputeMinor = "NVIDIA Thing", 0x2999, "Blackwell", 10, 0
		}), []R{ReasonUnknownModel, ReasonCUDATooOld}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.snap.Validate(); err != nil {
				t.Fatal(err)
			}
			fs := CheckSnapshot(tc.snap)
			got := slices.Sorted(maps.Keys(reasonsOf(fs)))
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("reasons = %v, want %v\nfindings: %v", got, want, fs)
			}
			wantFlag := slices.ContainsFunc(want, func(r Reason) bool { return r.Flags() })
			if Flagged(fs) != wantFlag {
				t.Fatalf("Flagged = %v, want %v", Flagged(fs), wantFlag)
			}
			for _, f := range fs {
				if f.Detail == "" {
					t.Errorf("finding without detail: %v", f)
				}
			}
		})
	}
}

func moreH100(n, from int) []GPU {
	var out []GPU
	for i := range n {
		g := realH100().GPUs[0]
		g.UUID = seededUUID(fmt.Sprintf("more-%d", from+i))
		g.BusID = fmt.Sprintf("00000001:%02X:00.0", from+i)
		g.Serial = fmt.Sprintf("99%011d", from+i)
		out = append(out, g)
	}
	return out
}

// The host-level scenarios of docs/attestation.md.
func TestAttestationScenarios(t *testing.T) {
	t.Run("genuine DGX H100 passes", func(t *testing.T) {
		if fs := CheckSnapshot(dgxH100(t, busNVML)); fs != nil {
			t.Fatal(fs)
		}
	})
	t.Run(`"H100" with 24 GiB`, func(t *testing.T) {
		s := dgxH100(t, busNVML)
		s.GPUs[3].MemoryTotalBytes = 24 << 30
		fs := CheckSnapshot(s)
		if len(fs) != 1 || fs[0].Reason != ReasonMemoryOutOfBand || fs[0].GPU != s.GPUs[3].UUID {
			t.Fatalf("findings = %v", fs)
		}
	})
	t.Run("H100 name with an RTX 4090 PCI id and Ada arch", func(t *testing.T) {
		s := dgxH100(t, busNVML)
		g := &s.GPUs[0]
		g.PCIDeviceID, g.Architecture, g.ComputeMajor, g.ComputeMinor, g.MemoryTotalBytes, g.MIGEnabled =
			0x2684, "Ada Lovelace", 8, 9, 24564<<20, nil
		r := reasonsOf(CheckSnapshot(s))
		if !r[ReasonPCIIDNameMismatch] || !r[ReasonArchMismatch] || !Flagged(CheckSnapshot(s)) {
			t.Fatalf("reasons = %v", r)
		}
		// Even a spoofer who also fakes the architecture is caught by the id.
		g.Architecture, g.ComputeMajor, g.ComputeMinor = "Hopper", 9, 0
		r = reasonsOf(CheckSnapshot(s))
		if !r[ReasonPCIIDNameMismatch] || !r[ReasonArchMismatch] || !r[ReasonComputeCapabilityMismatch] {
			t.Fatalf("reasons = %v", r)
		}
	})
	t.Run("duplicate UUID inside one host", func(t *testing.T) {
		s := dgxH100(t, busNVML)
		s.GPUs[6].UUID = s.GPUs[1].UUID
		fs := CheckSnapshot(s)
		if len(fs) != 1 || fs[0].Reason != ReasonDuplicateUUIDInHost || fs[0].GPU != s.GPUs[1].UUID {
			t.Fatalf("findings = %v", fs)
		}
	})
	// "snapshot edited after hashing" is TestVerifyProofRefuses; the cross-device scenarios
	// (a UUID cloned onto a later device, which flags that later claimant only, replayed proof,
	// expired challenge, another device's key, token reuse) need the server's state and are
	// tested there, with the codes defined here.
}

func TestCheckSnapshotIsDeterministic(t *testing.T) {
	s := realH100()
	for i := range s.GPUs {
		s.GPUs[i].MemoryTotalBytes = 1 << 30
	}
	s.NVMLVersion = "bad"
	want := CheckSnapshot(s)
	slices.Reverse(s.GPUs)
	if got := CheckSnapshot(s); !slices.Equal(got, want) {
		t.Fatalf("findings depend on GPU order:\n%v\n%v", got, want)
	}
	if want[0].GPU != "" {
		t.Fatalf("host finding not first: %v", want)
	}
}

func TestCompareEnrollment(t *testing.T) {
	enrolled := realH100()
	tests := []struct {
		name string
		edit func(*Snapshot)
		want int // IMMUTABLE_FIELD_CHANGED findings
	}{
		{"unchanged", func(s *Snapshot) {}, 0},
		{"driver upgraded", func(s *Snapshot) {
			s.DriverVersion, s.NVMLVersion, s.CUDADriverVersion = "570.86.15", "12.570.86.15", 12080
		}, 0},
		{"GPUs reordered", func(s *Snapshot) { slices.Reverse(s.GPUs) }, 0},
		{"mutable fields changed", func(s *Snapshot) {
			g := &s.GPUs[0]
			g.Name, g.BusID, g.VBIOSVersion = "H100-SXM5-80GB", "00000000:99:00.0", "96.00.99.00.01"
			g.MaxSMClockMHz, g.MaxMemClockMHz, g.PowerLimitMilliwatts = 1800, 2600, 500000
			g.MIGEnabled, g.Architecture = ptr(true), ""
		}, 0},
		{"memory reservation drifts 1%", func(s *Snapshot) { s.GPUs[0].MemoryTotalBytes -= s.GPUs[0].MemoryTotalBytes / 100 }, 0},
		{"ECC turned off reveals 1/16 more", func(s *Snapshot) {
			s.GPUs[0].ECCEnabled = ptr(false)
			s.GPUs[0].MemoryTotalBytes += s.GPUs[0].MemoryTotalBytes / 16
		}, 0},
		{"GPU removed", func(s *Snapshot) { s.GPUs = s.GPUs[1:] }, 1},
		{"GPU added", func(s *Snapshot) { s.GPUs = append(s.GPUs, moreH100(1, 20)...) }, 1},
		{"GPU swapped", func(s *Snapshot) { s.GPUs[0].UUID = seededUUID("swapped") }, 2},
		{"PCI device id", func(s *Snapshot) { s.GPUs[0].PCIDeviceID = 0x2331 }, 1},
		{"PCI vendor id", func(s *Snapshot) { s.GPUs[0].PCIVendorID = 0x1002 }, 1},
		{"PCI subsystem id", func(s *Snapshot) { s.GPUs[0].PCISubsystemID = 0x16C210DE }, 1},
		{"PCI subsystem id disappears", func(s *Snapshot) { s.GPUs[0].PCISubsystemID = 0 }, 1},
		{"memory shrinks 10%", func(s *Snapshot) { s.GPUs[0].MemoryTotalBytes -= s.GPUs[0].MemoryTotalBytes / 10 }, 1},
		{"memory grows 5% with ECC unchanged", func(s *Snapshot) { s.GPUs[0].MemoryTotalBytes += s.GPUs[0].MemoryTotalBytes / 20 }, 1},
		{"serial changed", func(s *Snapshot) { s.GPUs[0].Serial = "1653223019999" }, 1},
		{"serial respelled", func(s *Snapshot) { s.GPUs[0].Serial = " " + s.GPUs[0].Serial + " " }, 0},
		{"serial disappears", func(s *Snapshot) { s.GPUs[0].Serial = "" }, 1},
		{"serial becomes a placeholder", func(s *Snapshot) { s.GPUs[0].Serial = "N/A" }, 1},
		{"board part number disappears", func(s *Snapshot) { s.GPUs[0].BoardPartNumber = "" }, 1},
		{"board part number", func(s *Snapshot) { s.GPUs[0].BoardPartNumber = "699-2G520-0200-000" }, 1},
		{"several fields of one GPU", func(s *Snapshot) { s.GPUs[0].Serial, s.GPUs[0].BoardPartNumber = "x1", "y" }, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cur := cloneSnapshot(enrolled)
			tc.edit(&cur)
			fs := CompareEnrollment(enrolled, cur)
			if len(fs) != tc.want {
				t.Fatalf("findings = %v, want %d", fs, tc.want)
			}
			for _, f := range fs {
				if f.Reason != ReasonImmutableFieldChanged || f.GPU == "" {
					t.Fatalf("unexpected finding %v", f)
				}
			}
		})
	}

}

// An identifier absent at enrollment and present later, or the reverse, is a change: a board
// does not gain or lose its identity, and "absent" must not be a wildcard that lets a host
// enroll without identities and claim any later. Absent and placeholder are the same.
func TestCompareEnrollmentIdentifierPresenceIsImmutable(t *testing.T) {
	enrolled := realH100()
	for _, tc := range []struct {
		name  string
		strip func(*GPU)
	}{
		{"serial", func(g *GPU) { g.Serial = "" }},
		{"serial as a placeholder", func(g *GPU) { g.Serial = "[N/A]" }},
		{"board part number", func(g *GPU) { g.BoardPartNumber = "" }},
		{"board part number as a placeholder", func(g *GPU) { g.BoardPartNumber = "N/A" }},
		{"PCI subsystem id", func(g *GPU) { g.PCISubsystemID = 0 }},
		{"bus id", func(g *GPU) { g.BusID = "" }},
		{"vBIOS version", func(g *GPU) { g.VBIOSVersion = "N/A" }},
	} {
		bare := cloneSnapshot(enrolled)
		tc.strip(&bare.GPUs[2])
		for dir, pair := range map[string][2]Snapshot{"appears": {bare, enrolled}, "disappears": {enrolled, bare}} {
			t.Run(tc.name+" "+dir, func(t *testing.T) {
				fs := CompareEnrollment(pair[0], pair[1])
				if len(fs) != 1 || fs[0].Reason != ReasonImmutableFieldChanged || fs[0].GPU != enrolled.GPUs[2].UUID {
					t.Fatalf("findings = %v, want one IMMUTABLE_FIELD_CHANGED on GPU 2", fs)
				}
			})
		}
	}
	// Absent and placeholder spellings of "not reported" are the same value.
	a, b := cloneSnapshot(enrolled), cloneSnapshot(enrolled)
	a.GPUs[0].Serial, b.GPUs[0].Serial = "", "N/A"
	a.GPUs[0].BoardPartNumber, b.GPUs[0].BoardPartNumber = "[N/A]", " "
	if fs := CompareEnrollment(a, b); fs != nil {
		t.Fatalf("absent versus placeholder: %v", fs)
	}
}

func TestSerialKey(t *testing.T) {
	for in, want := range map[string]string{
		"1653223011234": "1653223011234", " ab 12 ": "AB12", "N/A": "", "[N/A]": "", "0000000000000": "",
		"": "", "  ": "", "[Not Supported]": "", "Unknown": "", "1111": "", "0": "", "[]": "",
	} {
		got, ok := SerialKey(in)
		if got != want || ok != (want != "") {
			t.Errorf("SerialKey(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestBusKey(t *testing.T) {
	for in, want := range map[string]string{
		"00000000:3B:00.0": "0000:3b:00.0", "0000:3b:00.0": "0000:3b:00.0", "3b:00.0": "0000:3b:00.0",
		"00000001:3B:00.1": "0001:3b:00.1", "0000:00:00.0": "", "00000000:00:00.0": "", "": "", "weird": "weird",
	} {
		got, ok := busKey(in)
		if got != want || ok != (want != "") {
			t.Errorf("busKey(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestIdentityKeys(t *testing.T) {
	s := realH100()
	s.GPUs[1].Serial = "N/A"
	s.GPUs[2].Serial = strings.ToLower(" " + s.GPUs[3].Serial)
	s.GPUs[4].UUID = s.GPUs[5].UUID
	uuids, serials := s.IdentityKeys()
	if len(uuids) != 7 || !slices.IsSorted(uuids) {
		t.Fatalf("uuids = %v", uuids)
	}
	if len(serials) != 6 || !slices.IsSorted(serials) {
		t.Fatalf("serials = %v", serials)
	}
}

func TestReasons(t *testing.T) {
	seen := map[Reason]bool{}
	for _, r := range Reasons() {
		if seen[r] {
			t.Errorf("%s listed twice", r)
		}
		seen[r] = true
		if r.Description() == "" {
			t.Errorf("%s has no description", r)
		}
		if r != Reason(strings.ToUpper(string(r))) || strings.ContainsAny(string(r), " -") {
			t.Errorf("%s is not an UPPER_SNAKE code", r)
		}
		if r.Flags() != (r != ReasonUnknownModel) {
			t.Errorf("%s.Flags() = %v", r, r.Flags())
		}
	}
	if len(seen) != len(reasonText) {
		t.Errorf("Reasons() has %d codes, descriptions %d", len(seen), len(reasonText))
	}
}

func TestReasonForError(t *testing.T) {
	for err, want := range map[error]Reason{
		nil:                                      "",
		errors.New("other"):                      "",
		fmt.Errorf("x: %w", ErrSnapshotMismatch): ReasonSnapshotHashMismatch,
		fmt.Errorf("x: %w", ErrInsufficientWork): ReasonInsufficientWork,
		fmt.Errorf("x: %w", ErrBadSignature):     ReasonBadSignature,
		fmt.Errorf("x: %w", ErrMalformed):        ReasonMalformedProof,
		fmt.Errorf("a: %w", fmt.Errorf("b: %w", ErrBadSignature)): ReasonBadSignature,
	} {
		if got := ReasonForError(err); got != want {
			t.Errorf("ReasonForError(%v) = %q, want %q", err, got, want)
		}
	}
}

func TestSplitPCIIDAndArchitectureName(t *testing.T) {
	if d, v := SplitPCIID(0x233010DE); d != 0x2330 || v != VendorNVIDIA {
		t.Errorf("SplitPCIID = %#x, %#x", d, v)
	}
	for arch, want := range map[uint32]string{0: "", 6: "Turing", 7: "Ampere", 8: "Ada Lovelace", 9: "Hopper", 10: "Blackwell", 11: "", 0xffffffff: ""} {
		if got := ArchitectureName(arch); got != want {
			t.Errorf("ArchitectureName(%d) = %q, want %q", arch, got, want)
		}
		if want != "" {
			if _, ok := LookupArchitecture(want); !ok {
				t.Errorf("LookupArchitecture(%q) failed", want)
			}
		}
	}
	if a, ok := LookupArchitecture("ada"); !ok || a.Name != "Ada Lovelace" {
		t.Errorf("LookupArchitecture(ada) = %v, %v", a, ok)
	}
}

func TestModelsTable(t *testing.T) {
	ids := map[uint16]bool{}
	for _, m := range Models {
		if ids[m.PCIDeviceID] {
			t.Errorf("%#04x listed twice", m.PCIDeviceID)
		}
		ids[m.PCIDeviceID] = true
		a, ok := LookupArchitecture(m.Architecture)
		if !ok || a.Name != m.Architecture {
			t.Errorf("%s: architecture %q not in Architectures", m.Name, m.Architecture)
		}
		if !slices.Contains(a.Compute, m.Compute) {
			t.Errorf("%s: compute capability %v not on %s", m.Name, m.Compute, a.Name)
		}
		if !(0 < m.MemMinGiB && m.MemMinGiB < m.MemMaxGiB) || len(m.NamePatterns) == 0 {
			t.Errorf("%s: bad band or patterns", m.Name)
		}
		for _, p := range m.NamePatterns {
			if strings.TrimSpace(normName(p)) != p {
				t.Errorf("%s: pattern %q is not lowercase tokens", m.Name, p)
			}
		}
	}
	// Every reference row of docs/attestation.md, by id: nominal GiB, architecture, compute capability.
	for _, r := range []struct {
		id    uint16
		gib   float64
		arch  string
		major int
		minor int
	}{
		{0x20B0, 40, "Ampere", 8, 0}, {0x20B2, 80, "Ampere", 8, 0}, {0x20B7, 24, "Ampere", 8, 0},
		{0x2330, 80, "Hopper", 9, 0}, {0x2331, 80, "Hopper", 9, 0}, {0x2335, 141, "Hopper", 9, 0},
		{0x26B9, 48, "Ada Lovelace", 8, 9}, {0x27B8, 24, "Ada Lovelace", 8, 9}, {0x2684, 24, "Ada Lovelace", 8, 9},
		{0x2204, 24, "Ampere", 8, 6}, {0x1EB8, 16, "Turing", 7, 5}, {0x2901, 180, "Blackwell", 10, 0},
		// go-nvml mock ids
		{0x2333, 141, "Hopper", 9, 0}, {0x2B00, 180, "Blackwell", 10, 0}, {0x20F1, 40, "Ampere", 8, 0}, {0x20B5, 80, "Ampere", 8, 0},
	} {
		m, ok := LookupModel(r.id)
		if !ok {
			t.Errorf("%#04x missing", r.id)
			continue
		}
		if m.Architecture != r.arch || m.Compute != (ComputeCapability{r.major, r.minor}) || r.gib < m.MemMinGiB || r.gib > m.MemMaxGiB {
			t.Errorf("%#04x = %+v, want %v GiB %s %d.%d", r.id, m, r.gib, r.arch, r.major, r.minor)
		}
		if m.Simulated != (r.id == 0x2333 || r.id == 0x2B00) {
			t.Errorf("%#04x Simulated = %v", r.id, m.Simulated)
		}
	}
	// Topology and identity columns: every row has a form; SXM rows list the counts one host
	// shows, always including a whole 8-GPU board; only GeForce rows lack a board serial.
	for _, m := range Models {
		switch m.Form {
		case FormSXM:
			if !slices.Contains(m.HostCounts, 8) || slices.ContainsFunc(m.HostCounts, func(n int) bool { return n < 1 || n > MaxGPUsPerHost }) {
				t.Errorf("%s: SXM host counts %v", m.Name, m.HostCounts)
			}
		case FormPCIe1, FormPCIe2:
			if m.HostCounts != nil {
				t.Errorf("%s: a PCIe card's count is the chassis's, not %v", m.Name, m.HostCounts)
			}
		default:
			t.Errorf("%s: no form", m.Name)
		}
		if m.Serial == strings.HasPrefix(m.Name, "GeForce") {
			t.Errorf("%s: Serial = %v", m.Name, m.Serial)
		}
	}
	if _, ok := Identify(GPU{PCIDeviceID: 0x2330, PCIVendorID: 0x1002}); ok {
		t.Error("Identify accepted another vendor's id")
	}
	if m, ok := Identify(GPU{PCIDeviceID: 0x2330, PCIVendorID: VendorNVIDIA}); !ok || m.Name != "H100 SXM5 80GB" {
		t.Errorf("Identify(0x2330) = %v, %v", m, ok)
	}
}

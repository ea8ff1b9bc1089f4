package attest

import (
	"strings"
)

// VendorNVIDIA is NVIDIA's PCI vendor id.
const VendorNVIDIA uint16 = 0x10DE

// SplitPCIID splits NVML's 32-bit nvmlPciInfo_t.pciDeviceId (device id << 16 | vendor id, e.g.
// 0x233010DE) into the 16-bit device id (0x2330) that GPU.PCIDeviceID holds and the vendor id
// (0x10DE) that GPU.PCIVendorID holds. It cannot fail.
func SplitPCIID(nvmlID uint32) (device uint16, vendor uint16) {
	return uint16(nvmlID >> 16), uint16(nvmlID) // #nosec G115 -- truncation is the point: the low and high 16 bits
}

// ComputeCapability is a CUDA compute capability, e.g. {9, 0} for Hopper.
type ComputeCapability struct {
	Major, Minor int
}

// Architecture is one NVIDIA GPU architecture as the counterfeit rules know it.
type Architecture struct {
	Name    string              // as ArchitectureName returns it
	Compute []ComputeCapability // every compute capability a GPU of this architecture reports
	// MinCUDADriver is the oldest CUDA driver version (nvmlSystemGetCudaDriverVersion, 12040 =
	// 12.4) that supports the architecture at all; a host reporting less is inconsistent.
	MinCUDADriver int
}

// Architectures lists the architectures, oldest first. Names are what [ArchitectureName]
// returns for NVML's nvmlDeviceArchitecture_t.
var Architectures = []Architecture{
	{"Kepler", []ComputeCapability{{3, 0}, {3, 2}, {3, 5}, {3, 7}}, 5000},
	{"Maxwell", []ComputeCapability{{5, 0}, {5, 2}, {5, 3}}, 6050},
	{"Pascal", []ComputeCapability{{6, 0}, {6, 1}, {6, 2}}, 8000},
	{"Volta", []ComputeCapability{{7, 0}, {7, 2}}, 9000},
	{"Turing", []ComputeCapability{{7, 5}}, 10000},
	{"Ampere", []ComputeCapability{{8, 0}, {8, 6}, {8, 7}}, 11000},
	{"Ada Lovelace", []ComputeCapability{{8, 9}}, 11080},
	{"Hopper", []ComputeCapability{{9, 0}}, 11080},
	// sm_100 shipped in CUDA 12.8 (driver R570). The go-nvml DGX B200 mock reports 12.6 with
	// driver 560; its row in Models overrides the minimum (see MinCUDADriver there).
	{"Blackwell", []ComputeCapability{{10, 0}, {10, 1}, {10, 3}, {11, 0}, {12, 0}, {12, 1}}, 12080},
}

// ArchitectureName maps NVML's nvmlDeviceArchitecture_t (nvml.DeviceArchitecture: 2 Kepler ...
// 10 Blackwell) to the name the worker should put in GPU.Architecture. It returns "" for values
// it does not know (NVML_DEVICE_ARCH_UNKNOWN, DLA, newer architectures): send "" then, which the
// rules treat as absent.
func ArchitectureName(nvmlArch uint32) string {
	switch nvmlArch {
	case 2:
		return "Kepler"
	case 3:
		return "Maxwell"
	case 4:
		return "Pascal"
	case 5:
		return "Volta"
	case 6:
		return "Turing"
	case 7:
		return "Ampere"
	case 8:
		return "Ada Lovelace"
	case 9:
		return "Hopper"
	case 10:
		return "Blackwell"
	}
	return ""
}

// LookupArchitecture finds an architecture by name, ignoring case and accepting "Ada" for "Ada
// Lovelace". It returns false for an empty or unknown name.
func LookupArchitecture(name string) (Architecture, bool) {
	n := strings.TrimSpace(name)
	if strings.EqualFold(n, "ada") {
		n = "Ada Lovelace"
	}
	for _, a := range Architectures {
		if strings.EqualFold(a.Name, n) {
			return a, true
		}
	}
	return Architecture{}, false
}

// Model is one row of the reference table: what a GPU with this PCI device id must look like.
type Model struct {
	PCIDeviceID uint16 // 16-bit device id, vendor NVIDIA
	Name        string // display name, e.g. "H100 SXM5 80GB"
	// NamePatterns are lowercase token sequences, one of which the NVML name must contain as
	// whole tokens after lowercasing and splitting at non-alphanumerics: "h100" matches "NVIDIA
	// H100 80GB HBM3", "l4" matches "NVIDIA L4" but not "NVIDIA L40S". Rows sharing a pattern
	// form a family, which is what a name "claims".
	NamePatterns []string
	Architecture string // an Architectures name
	Compute      ComputeCapability
	// MemMinGiB and MemMaxGiB bound nvmlDeviceGetMemoryInfo's total. The lower bound allows for
	// memory the driver reserves and for ECC on GDDR boards (which hides 1/16 of the memory).
	MemMinGiB, MemMaxGiB float64
	// MinCUDADriver overrides the architecture's minimum CUDA driver version when non-zero.
	MinCUDADriver int
	MIG           bool // supports Multi-Instance GPU, so NVML may report MIG mode enabled
	// Form is how the board attaches to its host; it bounds how many fit in one (see
	// HostCounts, MaxPCIeSlotWidths and docs/attestation.md, "Host topology").
	Form Form
	// HostCounts lists, for an SXM module, every number of GPUs of this model one host can
	// show: a whole baseboard (HGX 4- or 8-GPU, an A100 16-GPU pair) or a cloud VM's
	// power-of-two slice of one. Unused for PCIe cards, which the chassis bounds instead.
	HostCounts []int
	// Serial marks a datacenter board with an InfoROM: NVML reports its 13-digit board serial
	// (the number on the board's label) and an NVIDIA board part number. GeForce boards answer
	// ERROR_NOT_SUPPORTED, so their rows leave it false.
	Serial bool
	// Simulated marks ids that only go-nvml's mock servers report (not real silicon). They
	// pass only under a Policy with AllowSimulated (the gateway's dev mode or
	// --allow-simulated-gpus); otherwise they are a SIMULATED_GPU finding.
	Simulated bool
}

// Form is how a GPU board attaches to its host.
type Form uint8

const (
	// FormSXM is a module on a baseboard (HGX): one model per board, a fixed number per board.
	FormSXM Form = iota + 1
	// FormPCIe2 is a double-width PCIe card.
	FormPCIe2
	// FormPCIe1 is a single-width PCIe card.
	FormPCIe1
)

// String names the form as the documentation does.
func (f Form) String() string {
	switch f {
	case FormSXM:
		return "SXM"
	case FormPCIe2:
		return "PCIe double-width"
	case FormPCIe1:
		return "PCIe single-width"
	}
	return "unknown form"
}

// slotWidths is how many single-width slots a card of this form takes.
func (f Form) slotWidths() int {
	switch f {
	case FormPCIe2:
		return 2
	case FormPCIe1:
		return 1
	}
	return 0
}

// MaxPCIeSlotWidths is the most PCIe GPU slot widths one host offers: 10 double-width cards
// (4U GPU servers such as Supermicro's SYS-420GP-TNR or Gigabyte's G492) or 20 single-width
// ones (Supermicro SYS-6049GP-TRT with T4s). A double-width card counts 2.
const MaxPCIeSlotWidths = 20

// sxmCounts are the GPU counts of one model an SXM host can show: an HGX 4- or 8-GPU
// baseboard, or a cloud VM's 1-, 2- or 4-GPU slice of one (e.g. GCP a2-highgpu-1g, a3-highgpu-2g).
var sxmCounts = []int{1, 2, 4, 8}

// Models is the reference table. PCI ids and capacities come from the PCI id database and
// NVIDIA's datasheets (not from the mock); the Simulated rows and the mock's exact names are
// taken from github.com/NVIDIA/go-nvml v0.13.4-1 pkg/nvml/mock/gpus so its DGX A100, H100,
// H200 and B200 servers pass. Add a row before accepting a new model, with its form, per-host
// counts and sources in docs/attestation.md: an id missing here is UNKNOWN_MODEL.
var Models = []Model{
	{PCIDeviceID: 0x1EB8, Name: "T4", NamePatterns: []string{"t4"}, Architecture: "Turing", Compute: ComputeCapability{7, 5},
		MemMinGiB: 14.5, MemMaxGiB: 16.1, Form: FormPCIe1, Serial: true},
	{PCIDeviceID: 0x20B0, Name: "A100 SXM4 40GB", NamePatterns: []string{"a100"}, Architecture: "Ampere", Compute: ComputeCapability{8, 0},
		MemMinGiB: 38, MemMaxGiB: 40.1, MIG: true, Form: FormSXM, HostCounts: []int{1, 2, 4, 8, 16}, Serial: true},
	{PCIDeviceID: 0x20B2, Name: "A100 SXM4 80GB", NamePatterns: []string{"a100"}, Architecture: "Ampere", Compute: ComputeCapability{8, 0},
		MemMinGiB: 76, MemMaxGiB: 80.1, MIG: true, Form: FormSXM, HostCounts: sxmCounts, Serial: true},
	{PCIDeviceID: 0x20B5, Name: "A100 PCIe 80GB", NamePatterns: []string{"a100"}, Architecture: "Ampere", Compute: ComputeCapability{8, 0},
		MemMinGiB: 76, MemMaxGiB: 80.1, MIG: true, Form: FormPCIe2, Serial: true},
	{PCIDeviceID: 0x20F1, Name: "A100 PCIe 40GB", NamePatterns: []string{"a100"}, Architecture: "Ampere", Compute: ComputeCapability{8, 0},
		MemMinGiB: 38, MemMaxGiB: 40.1, MIG: true, Form: FormPCIe2, Serial: true},
	{PCIDeviceID: 0x20B7, Name: "A30", NamePatterns: []string{"a30"}, Architecture: "Ampere", Compute: ComputeCapability{8, 0},
		MemMinGiB: 22.5, MemMaxGiB: 24.1, MIG: true, Form: FormPCIe2, Serial: true},
	{PCIDeviceID: 0x2204, Name: "GeForce RTX 3090", NamePatterns: []string{"rtx 3090"}, Architecture: "Ampere", Compute: ComputeCapability{8, 6},
		MemMinGiB: 22.5, MemMaxGiB: 24.1, MinCUDADriver: 11010, Form: FormPCIe2},
	{PCIDeviceID: 0x2321, Name: "H100 NVL", NamePatterns: []string{"h100"}, Architecture: "Hopper", Compute: ComputeCapability{9, 0},
		MemMinGiB: 88, MemMaxGiB: 94.1, MIG: true, Form: FormPCIe2, Serial: true},
	{PCIDeviceID: 0x2330, Name: "H100 SXM5 80GB", NamePatterns: []string{"h100"}, Architecture: "Hopper", Compute: ComputeCapability{9, 0},
		MemMinGiB: 76, MemMaxGiB: 80.1, MIG: true, Form: FormSXM, HostCounts: sxmCounts, Serial: true},
	{PCIDeviceID: 0x2331, Name: "H100 PCIe", NamePatterns: []string{"h100"}, Architecture: "Hopper", Compute: ComputeCapability{9, 0},
		MemMinGiB: 76, MemMaxGiB: 80.1, MIG: true, Form: FormPCIe2, Serial: true},
	{PCIDeviceID: 0x2335, Name: "H200 SXM 141GB", NamePatterns: []string{"h200"}, Architecture: "Hopper", Compute: ComputeCapability{9, 0},
		MemMinGiB: 132, MemMaxGiB: 141.1, MIG: true, Form: FormSXM, HostCounts: sxmCounts, Serial: true},
	{PCIDeviceID: 0x233B, Name: "H200 NVL", NamePatterns: []string{"h200"}, Architecture: "Hopper", Compute: ComputeCapability{9, 0},
		MemMinGiB: 132, MemMaxGiB: 141.1, MIG: true, Form: FormPCIe2, Serial: true},
	{PCIDeviceID: 0x2333, Name: "H200 141GB (go-nvml mock)", NamePatterns: []string{"h200"}, Architecture: "Hopper", Compute: ComputeCapability{9, 0},
		MemMinGiB: 132, MemMaxGiB: 141.1, MIG: true, Simulated: true, Form: FormSXM, HostCounts: sxmCounts, Serial: true},
	{PCIDeviceID: 0x2684, Name: "GeForce RTX 4090", NamePatterns: []string{"rtx 4090"}, Architecture: "Ada Lovelace", Compute: ComputeCapability{8, 9},
		MemMinGiB: 22.5, MemMaxGiB: 24.1, Form: FormPCIe2},
	{PCIDeviceID: 0x26B9, Name: "L40S", NamePatterns: []string{"l40s"}, Architecture: "Ada Lovelace", Compute: ComputeCapability{8, 9},
		MemMinGiB: 44, MemMaxGiB: 48.1, Form: FormPCIe2, Serial: true},
	{PCIDeviceID: 0x27B8, Name: "L4", NamePatterns: []string{"l4"}, Architecture: "Ada Lovelace", Compute: ComputeCapability{8, 9},
		MemMinGiB: 21.5, MemMaxGiB: 24.1, Form: FormPCIe1, Serial: true},
	{PCIDeviceID: 0x2901, Name: "B200", NamePatterns: []string{"b200"}, Architecture: "Blackwell", Compute: ComputeCapability{10, 0},
		MemMinGiB: 170, MemMaxGiB: 192.1, MIG: true, Form: FormSXM, HostCounts: sxmCounts, Serial: true},
	// The mock's B200 host reports driver 560.28.03 / CUDA 12.6, older than real B200 support.
	{PCIDeviceID: 0x2B00, Name: "B200 180GB (go-nvml mock)", NamePatterns: []string{"b200"}, Architecture: "Blackwell", Compute: ComputeCapability{10, 0},
		MemMinGiB: 170, MemMaxGiB: 192.1, MinCUDADriver: 12060, MIG: true, Simulated: true, Form: FormSXM, HostCounts: sxmCounts, Serial: true},
}

// LookupModel returns the reference row for a 16-bit NVIDIA PCI device id, or false if the
// table has none.
func LookupModel(pciDeviceID uint16) (Model, bool) {
	if m := lookupModel(pciDeviceID); m != nil {
		return *m, true
	}
	return Model{}, false
}

func lookupModel(pciDeviceID uint16) *Model {
	for i := range Models {
		if Models[i].PCIDeviceID == pciDeviceID {
			return &Models[i]
		}
	}
	return nil
}

// Identify returns the reference row a GPU's PCI ids select, or false when the vendor is not
// NVIDIA, the id is out of range or not in Models. The server should name a device's GPUs from
// this row, never from the NVML name, which the worker can set to anything.
func Identify(g GPU) (Model, bool) {
	if g.PCIVendorID != VendorNVIDIA || g.PCIDeviceID > 0xFFFF {
		return Model{}, false
	}
	return LookupModel(uint16(g.PCIDeviceID))
}

// minCUDA is the CUDA driver version a GPU of row m needs.
func (m *Model) minCUDA() int {
	if m.MinCUDADriver != 0 {
		return m.MinCUDADriver
	}
	a, _ := LookupArchitecture(m.Architecture)
	return a.MinCUDADriver
}

// normName lowercases s, turns every run of bytes that are not ASCII letters or digits into one
// space and surrounds the result with spaces: "NVIDIA H100-SXM5" → " nvidia h100 sxm5 ". Token
// sequences can then be found by substring search with a space on each side, without
// allocating per pattern.
func normName(s string) string {
	b := make([]byte, 1, len(s)+2)
	b[0] = ' '
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		default:
			if b[len(b)-1] != ' ' {
				b = append(b, ' ')
			}
			continue
		}
		b = append(b, c)
	}
	if b[len(b)-1] != ' ' {
		b = append(b, ' ')
	}
	return string(b)
}

// hasTokens reports whether pattern (lowercase tokens separated by single spaces) occurs in
// the normName form name as whole tokens.
func hasTokens(name, pattern string) bool {
	if pattern == "" {
		return false
	}
	for i := 0; ; {
		j := strings.Index(name[i:], pattern)
		if j < 0 {
			return false
		}
		j += i
		if name[j-1] == ' ' && j+len(pattern) < len(name) && name[j+len(pattern)] == ' ' {
			return true
		}
		i = j + 1
	}
}

func (m *Model) nameMatches(name string) bool {
	for _, p := range m.NamePatterns {
		if hasTokens(name, p) {
			return true
		}
	}
	return false
}

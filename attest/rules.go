package attest

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Reason is a stable, machine-readable code for why a snapshot or proof is suspect. The codes
// are stored with each verdict and shown to owners; never rename one.
type Reason string

// Host- and GPU-level reasons produced by CheckSnapshot.
const (
	ReasonVendorNotNVIDIA           Reason = "VENDOR_NOT_NVIDIA"
	ReasonPCIIDNameMismatch         Reason = "PCI_ID_NAME_MISMATCH"
	ReasonMemoryOutOfBand           Reason = "MEMORY_OUT_OF_BAND"
	ReasonArchMismatch              Reason = "ARCH_MISMATCH"
	ReasonComputeCapabilityMismatch Reason = "COMPUTE_CAPABILITY_MISMATCH"
	ReasonFeatureMismatch           Reason = "FEATURE_MISMATCH"
	ReasonNVMLDriverMismatch        Reason = "NVML_DRIVER_MISMATCH"
	ReasonCUDATooOld                Reason = "CUDA_TOO_OLD"
	ReasonDuplicateUUIDInHost       Reason = "DUPLICATE_UUID_IN_HOST"
	ReasonDuplicateBusIDInHost      Reason = "DUPLICATE_BUS_ID_IN_HOST"
	ReasonDuplicateSerialInHost     Reason = "DUPLICATE_SERIAL_IN_HOST"
	ReasonImplausibleGPUCount       Reason = "IMPLAUSIBLE_GPU_COUNT"
	ReasonMalformedUUID             Reason = "MALFORMED_UUID"
	ReasonUnknownModel              Reason = "UNKNOWN_MODEL"
	// ReasonImplausibleTopology: the GPUs of a model on this host do not fit any real server
	// of that model (an SXM count no baseboard has, SXM modules of two models on one host, more
	// PCIe cards than a chassis holds).
	ReasonImplausibleTopology Reason = "IMPLAUSIBLE_TOPOLOGY"
	// ReasonMalformedBusID: the PCI bus id is absent or not NVML's DDDDDDDD:BB:DD.F form.
	ReasonMalformedBusID Reason = "MALFORMED_BUS_ID"
	// ReasonSerialMissing: a model whose boards carry a serial reports none (or a placeholder).
	ReasonSerialMissing Reason = "SERIAL_MISSING"
	// ReasonMalformedSerial: the serial is not the 13 decimal digits of an NVIDIA board serial.
	ReasonMalformedSerial Reason = "MALFORMED_SERIAL"
	// ReasonMalformedBoardPartNumber: the board part number is not NVIDIA's NNN-XXXXX-XXXX-XXX.
	ReasonMalformedBoardPartNumber Reason = "MALFORMED_BOARD_PART_NUMBER"
	// ReasonMalformedVBIOSVersion: the vBIOS version is not five dot-separated hex bytes.
	ReasonMalformedVBIOSVersion Reason = "MALFORMED_VBIOS_VERSION"
	// ReasonSimulatedGPU: the PCI device id is one only go-nvml's mock servers report, on a
	// gateway that does not allow simulated GPUs (see Policy).
	ReasonSimulatedGPU Reason = "SIMULATED_GPU"
)

// Reasons produced by CompareEnrollment and by the server's cross-device rules.
const (
	ReasonImmutableFieldChanged Reason = "IMMUTABLE_FIELD_CHANGED"
	// ReasonUUIDOnAnotherDevice: a GPU UUID of this snapshot belongs to another device. The
	// server decides it (see Snapshot.IdentityKeys); the earlier enrollment keeps its claim.
	ReasonUUIDOnAnotherDevice Reason = "UUID_ON_ANOTHER_DEVICE"
	// ReasonSerialOnAnotherDevice: as above for a board serial (normalised with SerialKey).
	ReasonSerialOnAnotherDevice Reason = "SERIAL_ON_ANOTHER_DEVICE"
	// ReasonGPUQuarantined: a GPU identity (UUID or serial) of this snapshot is held by a device an
	// admin quarantined. Quarantine follows the identity, so removing the device and enrolling
	// its GPUs again does not lift it. The server decides it.
	ReasonGPUQuarantined Reason = "GPU_QUARANTINED"
)

// Reasons for a refused proof or challenge, for the server to store with the verdict.
const (
	ReasonSnapshotHashMismatch Reason = "SNAPSHOT_HASH_MISMATCH"
	ReasonBadSignature         Reason = "BAD_SIGNATURE"
	ReasonInsufficientWork     Reason = "INSUFFICIENT_WORK"
	ReasonMalformedProof       Reason = "MALFORMED_PROOF"
	ReasonChallengeReplayed    Reason = "CHALLENGE_REPLAYED"
	ReasonChallengeExpired     Reason = "CHALLENGE_EXPIRED"
	ReasonChallengeForeign     Reason = "CHALLENGE_FOREIGN"
)

var reasonText = map[Reason]string{
	ReasonVendorNotNVIDIA:           "the GPU's PCI vendor id is not NVIDIA's (0x10DE)",
	ReasonPCIIDNameMismatch:         "the GPU's name does not match the model its PCI device id identifies",
	ReasonMemoryOutOfBand:           "the GPU's memory total is absent or outside the band of its model",
	ReasonArchMismatch:              "the reported architecture contradicts the PCI device id or the claimed model",
	ReasonComputeCapabilityMismatch: "the compute capability contradicts the architecture, the PCI device id or the claimed model",
	ReasonFeatureMismatch:           "the GPU reports a feature (MIG) its model does not have",
	ReasonNVMLDriverMismatch:        "the NVML version does not embed the driver version, or either is absent",
	ReasonCUDATooOld:                "the CUDA driver version is absent or too old for the GPU's architecture",
	ReasonDuplicateUUIDInHost:       "two GPUs of the host report the same UUID",
	ReasonDuplicateBusIDInHost:      "two GPUs of the host report the same PCI bus id",
	ReasonDuplicateSerialInHost:     "two GPUs of the host report the same board serial",
	ReasonImplausibleGPUCount:       "the host reports no GPU or more than a server can hold",
	ReasonMalformedUUID:             "the GPU UUID is not NVML's GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx form",
	ReasonUnknownModel:              "the PCI device id is not in the reference table, so the model is unverified",
	ReasonImplausibleTopology:       "the number or mix of GPU models on the host fits no real server of those models",
	ReasonMalformedBusID:            "the PCI bus id is absent or not NVML's DDDDDDDD:BB:DD.F form",
	ReasonSerialMissing:             "the GPU's model has a board serial but the GPU reports none",
	ReasonMalformedSerial:           "the board serial is not the 13 decimal digits of an NVIDIA board serial",
	ReasonMalformedBoardPartNumber:  "the board part number is not NVIDIA's NNN-XXXXX-XXXX-XXX form",
	ReasonMalformedVBIOSVersion:     "the vBIOS version is not five dot-separated hexadecimal bytes (e.g. 96.00.89.00.01)",
	ReasonSimulatedGPU:              "the PCI device id exists only in go-nvml's simulated GPUs, which this gateway does not accept",
	ReasonImmutableFieldChanged:     "a GPU or an immutable GPU field changed since enrollment",
	ReasonUUIDOnAnotherDevice:       "a GPU UUID is already claimed by another device",
	ReasonSerialOnAnotherDevice:     "a board serial is already claimed by another device",
	ReasonGPUQuarantined:            "a GPU identity is held by a device an admin quarantined",
	ReasonSnapshotHashMismatch:      "the snapshot was edited after it was hashed",
	ReasonBadSignature:              "the proof is not signed by the device key",
	ReasonInsufficientWork:          "the proof of work is below the required difficulty",
	ReasonMalformedProof:            "the proof cannot be parsed or breaks a size limit",
	ReasonChallengeReplayed:         "the challenge was already used",
	ReasonChallengeExpired:          "the challenge expired before the proof arrived",
	ReasonChallengeForeign:          "the challenge was issued to another device",
}

// Reasons returns every reason code this package defines, in declaration order.
func Reasons() []Reason {
	return []Reason{
		ReasonVendorNotNVIDIA, ReasonPCIIDNameMismatch, ReasonMemoryOutOfBand, ReasonArchMismatch,
		ReasonComputeCapabilityMismatch, ReasonFeatureMismatch, ReasonNVMLDriverMismatch, ReasonCUDATooOld,
		ReasonDuplicateUUIDInHost, ReasonDuplicateBusIDInHost, ReasonDuplicateSerialInHost,
		ReasonImplausibleGPUCount, ReasonMalformedUUID, ReasonUnknownModel,
		ReasonImplausibleTopology, ReasonMalformedBusID, ReasonSerialMissing, ReasonMalformedSerial,
		ReasonMalformedBoardPartNumber, ReasonMalformedVBIOSVersion, ReasonSimulatedGPU,
		ReasonImmutableFieldChanged, ReasonUUIDOnAnotherDevice, ReasonSerialOnAnotherDevice, ReasonGPUQuarantined,
		ReasonSnapshotHashMismatch, ReasonBadSignature, ReasonInsufficientWork, ReasonMalformedProof,
		ReasonChallengeReplayed, ReasonChallengeExpired, ReasonChallengeForeign,
		ReasonCCEvidenceMalformed, ReasonCCNonceMismatch, ReasonCCSignatureInvalid, ReasonCCChainUntrusted,
		ReasonCCCertExpired, ReasonCCCertNotYetValid, ReasonCCCertRevoked, ReasonCCIdentityMismatch,
		ReasonCCMeasurementMismatch, ReasonCCHardwareReused, ReasonCCHardwareChanged,
	}
}

// Description returns one sentence for owners explaining r, or "" for an unknown code.
func (r Reason) Description() string { return reasonText[r] }

// Flags reports whether r makes a verdict FLAGGED. Every reason does except UNKNOWN_MODEL: a
// GPU missing from the reference table (new silicon, a rare board) is not evidence of a
// counterfeit, so it is recorded but leaves the verdict alone; the device simply cannot show a
// verified model for it (Identify returns false). Every consistency rule that needs no table row
// still runs on such a GPU, and a name claiming a known model is checked against that model.
func (r Reason) Flags() bool { return r != ReasonUnknownModel }

// ReasonForError maps an error from VerifyProof to the reason to store, or "" for nil or an
// error that is not one of this package's proof failures.
func ReasonForError(err error) Reason {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrSnapshotMismatch):
		return ReasonSnapshotHashMismatch
	case errors.Is(err, ErrInsufficientWork):
		return ReasonInsufficientWork
	case errors.Is(err, ErrBadSignature):
		return ReasonBadSignature
	case errors.Is(err, ErrMalformed):
		return ReasonMalformedProof
	}
	return ""
}

// Finding is one rule violation. GPU is the UUID of the GPU concerned (as reported, possibly
// malformed), or "" for a host-level finding.
type Finding struct {
	Reason Reason `json:"reason"`
	GPU    string `json:"gpu,omitempty"`
	Detail string `json:"detail"`
}

// String formats f for logs: "REASON gpu: detail".
func (f Finding) String() string {
	if f.GPU == "" {
		return string(f.Reason) + ": " + f.Detail
	}
	return string(f.Reason) + " " + f.GPU + ": " + f.Detail
}

// Flagged reports whether any finding flags (see Reason.Flags).
func Flagged(fs []Finding) bool {
	return slices.ContainsFunc(fs, func(f Finding) bool { return f.Reason.Flags() })
}

// MaxGPUsPerHost is the most GPUs one host plausibly has: 20 single-width PCIe cards (see
// MaxPCIeSlotWidths); SXM hosts carry at most 16 (two HGX A100 8-GPU boards).
const MaxGPUsPerHost = 20

// Policy is what a gateway accepts beyond real hardware. The zero value is production's.
type Policy struct {
	// AllowSimulated accepts the PCI ids only go-nvml's mock servers report (Model.Simulated):
	// on in dev mode, so simulated workers verify; off in production, where such an id is a
	// SIMULATED_GPU finding (nothing but a simulator reports it).
	AllowSimulated bool
}

const gib = 1 << 30

// CheckSnapshot is CheckSnapshotWith under the production Policy (no simulated GPUs).
func CheckSnapshot(s Snapshot) []Finding { return CheckSnapshotWith(s, Policy{}) }

// CheckSnapshotWith runs every host-level counterfeit rule on s under policy p and returns the
// findings, host findings first, then per GPU in UUID order, each reason at most once per GPU
// (details joined). It returns nil when nothing is wrong. Cross-device rules (UUID or serial
// on another device) need the database and are the server's; changes since enrollment are
// CompareEnrollment's. It assumes s passed Validate; on a snapshot that did not, it still
// returns findings and does not panic.
func CheckSnapshotWith(s Snapshot, p Policy) []Finding {
	var out []Finding
	host := func(r Reason, format string, args ...any) {
		out = append(out, Finding{Reason: r, Detail: fmt.Sprintf(format, args...)})
	}

	if n := len(s.GPUs); n == 0 || n > MaxGPUsPerHost {
		host(ReasonImplausibleGPUCount, "%d GPUs (want 1..%d)", n, MaxGPUsPerHost)
	}
	switch {
	case s.DriverVersion == "" || s.NVMLVersion == "":
		host(ReasonNVMLDriverMismatch, "driver version %q, NVML version %q: both are always available", s.DriverVersion, s.NVMLVersion)
	case !nvmlEmbedsDriver(s.NVMLVersion, s.DriverVersion):
		host(ReasonNVMLDriverMismatch, "NVML %q does not embed driver %q (want <cuda-major>.%s)", s.NVMLVersion, s.DriverVersion, s.DriverVersion)
	}
	if s.CUDADriverVersion <= 0 {
		host(ReasonCUDATooOld, "CUDA driver version absent")
	}
	for _, d := range topology(s.GPUs) {
		host(ReasonImplausibleTopology, "%s", d)
	}

	order := make([]int, len(s.GPUs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(i, j int) int { return strings.Compare(s.GPUs[i].UUID, s.GPUs[j].UUID) })

	// Duplicates inside the host, keyed so that formatting differences cannot hide them.
	uuids := make(map[string]int, len(s.GPUs))
	buses := make(map[string][]string, len(s.GPUs))
	serials := make(map[string][]string, len(s.GPUs))
	busKeys := make([]string, len(s.GPUs))
	serialKeys := make([]string, len(s.GPUs))
	for _, i := range order {
		g := &s.GPUs[i]
		if g.UUID != "" {
			uuids[g.UUID]++
		}
		if k, ok := busKey(g.BusID); ok {
			busKeys[i] = k
			buses[k] = append(buses[k], g.UUID)
		}
		if k, ok := SerialKey(g.Serial); ok {
			serialKeys[i] = k
			serials[k] = append(serials[k], g.UUID)
		}
	}

	for n, i := range order {
		g := &s.GPUs[i]
		fs := findings{gpu: g.UUID}
		if n == 0 || g.UUID != s.GPUs[order[n-1]].UUID {
			if c := uuids[g.UUID]; c > 1 {
				fs.add(ReasonDuplicateUUIDInHost, "reported by %d GPUs", c)
			}
		}
		if k := busKeys[i]; k != "" && len(buses[k]) > 1 && buses[k][0] == g.UUID {
			fs.add(ReasonDuplicateBusIDInHost, "bus %s reported by %d GPUs: %s", k, len(buses[k]), strings.Join(buses[k], ", "))
			buses[k] = nil // once per bus
		}
		if k := serialKeys[i]; k != "" && len(serials[k]) > 1 && serials[k][0] == g.UUID {
			fs.add(ReasonDuplicateSerialInHost, "serial %s reported by %d GPUs: %s", k, len(serials[k]), strings.Join(serials[k], ", "))
			serials[k] = nil
		}
		checkGPU(&fs, g, s.CUDADriverVersion, p)
		out = append(out, fs.list...)
	}
	return out
}

// findings collects one GPU's findings, merging repeated reasons.
type findings struct {
	gpu  string
	list []Finding
}

func (f *findings) add(r Reason, format string, args ...any) {
	d := fmt.Sprintf(format, args...)
	for i := range f.list {
		if f.list[i].Reason == r {
			f.list[i].Detail += "; " + d
			return
		}
	}
	f.list = append(f.list, Finding{Reason: r, GPU: f.gpu, Detail: d})
}

func checkGPU(fs *findings, g *GPU, cuda int, p Policy) {
	if !validUUID(g.UUID) {
		fs.add(ReasonMalformedUUID, "%q", trunc(g.UUID))
	}
	if why := busIDProblem(g.BusID); why != "" {
		fs.add(ReasonMalformedBusID, "%q: %s", trunc(g.BusID), why)
	}
	if g.PCIVendorID != VendorNVIDIA {
		fs.add(ReasonVendorNotNVIDIA, "PCI vendor id %#06x", g.PCIVendorID)
		return // an NVIDIA table says nothing about another vendor's ids
	}
	if v := g.VBIOSVersion; !placeholder(v) && !validVBIOS(v) {
		fs.add(ReasonMalformedVBIOSVersion, "%q (want five dot-separated hex bytes, e.g. 96.00.89.00.01)", trunc(v))
	}

	name := normName(g.Name)
	var buf [8]*Model
	claimed := buf[:0] // the rows the name claims
	for i := range Models {
		if Models[i].nameMatches(name) {
			claimed = append(claimed, &Models[i])
		}
	}
	cc := ComputeCapability{g.ComputeMajor, g.ComputeMinor}
	ccPresent := cc != ComputeCapability{}
	arch, archKnown := LookupArchitecture(g.Architecture)
	mem := float64(g.MemoryTotalBytes) / gib

	var row *Model
	if g.PCIDeviceID <= 0xFFFF {
		row = lookupModel(uint16(g.PCIDeviceID))
	}
	known := row != nil
	nameMatchesRow := known && row.nameMatches(name)

	if known {
		if !nameMatchesRow {
			fs.add(ReasonPCIIDNameMismatch, "PCI id %#06x is %s, name %q%s", g.PCIDeviceID, row.Name, trunc(g.Name), claimText(claimed))
		} else if other := otherFamilies(row, claimed); other != "" {
			fs.add(ReasonPCIIDNameMismatch, "PCI id %#06x is %s, name %q also claims %s", g.PCIDeviceID, row.Name, trunc(g.Name), other)
		}
		if n, ok := nameCapacityGB(name); ok && (float64(n) < 0.9*row.MemMinGiB || float64(n) > 1.1*row.MemMaxGiB) {
			fs.add(ReasonPCIIDNameMismatch, "name says %dGB, %s has %s", n, row.Name, band(row))
		}
		if mem < row.MemMinGiB || mem > row.MemMaxGiB {
			fs.add(ReasonMemoryOutOfBand, "%s, %s has %s", memText(g.MemoryTotalBytes), row.Name, band(row))
		}
		if g.Architecture != "" && !strings.EqualFold(arch.Name, row.Architecture) {
			fs.add(ReasonArchMismatch, "%q, PCI id %#06x (%s) is %s", trunc(g.Architecture), g.PCIDeviceID, row.Name, row.Architecture)
		}
		if ccPresent && cc != row.Compute {
			fs.add(ReasonComputeCapabilityMismatch, "%s, PCI id %#06x (%s) is %s", ccText(cc), g.PCIDeviceID, row.Name, ccText(row.Compute))
		}
		if g.MIGEnabled != nil && *g.MIGEnabled && !row.MIG {
			fs.add(ReasonFeatureMismatch, "MIG enabled, %s has no MIG", row.Name)
		}
		if cuda > 0 && cuda < row.minCUDA() {
			fs.add(ReasonCUDATooOld, "CUDA %s, %s needs %s", cudaText(cuda), row.Name, cudaText(row.minCUDA()))
		}
		if row.Simulated && !p.AllowSimulated {
			fs.add(ReasonSimulatedGPU, "PCI id %#06x (%s) is reported only by go-nvml's mock servers, never by real hardware", g.PCIDeviceID, row.Name)
		}
		if row.Serial {
			switch _, usable := SerialKey(g.Serial); {
			case !usable:
				fs.add(ReasonSerialMissing, "serial %q: every %s board reports its 13-digit serial", trunc(g.Serial), row.Name)
			case !validNVIDIASerial(g.Serial):
				fs.add(ReasonMalformedSerial, "%q (want 13 decimal digits)", trunc(g.Serial))
			}
			if pn := g.BoardPartNumber; !placeholder(pn) && !validPartNumber(pn) {
				fs.add(ReasonMalformedBoardPartNumber, "%q (want NNN-XXXXX-XXXX-XXX, e.g. 692-2G520-0200-000)", trunc(pn))
			}
		}
	} else {
		fs.add(ReasonUnknownModel, "PCI id %#06x is not in the reference table%s", g.PCIDeviceID, claimText(claimed))
		if len(claimed) > 0 && !slices.ContainsFunc(claimed, func(m *Model) bool { return mem >= m.MemMinGiB && mem <= m.MemMaxGiB }) {
			fs.add(ReasonMemoryOutOfBand, "%s, the claimed %s has %s", memText(g.MemoryTotalBytes), claimed[0].Name, band(claimed[0]))
		}
		if archKnown && cuda > 0 && cuda < arch.MinCUDADriver {
			fs.add(ReasonCUDATooOld, "CUDA %s, %s needs %s", cudaText(cuda), arch.Name, cudaText(arch.MinCUDADriver))
		}
	}

	// What the name claims must agree with what NVML measures (an RTX 4090 renamed "H100"
	// still reports Ada Lovelace and 8.9). Skipped when the name matches the id's own row:
	// the row checks above already cover it.
	if len(claimed) > 0 && !nameMatchesRow {
		if g.Architecture != "" && !slices.ContainsFunc(claimed, func(m *Model) bool { return strings.EqualFold(m.Architecture, arch.Name) }) {
			fs.add(ReasonArchMismatch, "%q, the name claims %s (%s)", trunc(g.Architecture), claimed[0].Name, claimed[0].Architecture)
		}
		if ccPresent && !slices.ContainsFunc(claimed, func(m *Model) bool { return m.Compute == cc }) {
			fs.add(ReasonComputeCapabilityMismatch, "%s, the name claims %s (%s)", ccText(cc), claimed[0].Name, ccText(claimed[0].Compute))
		}
	}
	// Architecture and compute capability must agree with each other, table row or not.
	if archKnown && ccPresent && !slices.Contains(arch.Compute, cc) {
		fs.add(ReasonComputeCapabilityMismatch, "%s does not exist on %s", ccText(cc), arch.Name)
	}
}

func claimText(claimed []*Model) string {
	if len(claimed) == 0 {
		return ""
	}
	return " claims " + claimed[0].NamePatterns[0]
}

// otherFamilies names a family the name claims besides row's own ("NVIDIA H100 A100").
func otherFamilies(row *Model, claimed []*Model) string {
	for _, m := range claimed {
		if !slices.ContainsFunc(m.NamePatterns, func(p string) bool { return slices.Contains(row.NamePatterns, p) }) {
			return m.NamePatterns[0]
		}
	}
	return ""
}

// nameCapacityGB finds a capacity token like "80gb" in the name.
func nameCapacityGB(name string) (int, bool) {
	for t := range strings.FieldsSeq(name) {
		if n, ok := strings.CutSuffix(t, "gb"); ok && len(n) <= 4 && isDigits(n) {
			v, _ := strconv.Atoi(n)
			return v, true
		}
	}
	return 0, false
}

func band(m *Model) string { return fmt.Sprintf("%g–%g GiB", m.MemMinGiB, m.MemMaxGiB) }

func memText(b uint64) string {
	if b == 0 {
		return "memory total absent"
	}
	return fmt.Sprintf("%.1f GiB", math.Floor(float64(b)/gib*10)/10)
}

func ccText(c ComputeCapability) string { return fmt.Sprintf("%d.%d", c.Major, c.Minor) }

func cudaText(v int) string { return fmt.Sprintf("%d.%d", v/1000, v%1000/10) }

// nvmlEmbedsDriver reports whether nvml is "<digits>." + driver, as NVML builds its version
// string (driver 550.54.15 ships NVML 12.550.54.15), with driver a dotted number.
func nvmlEmbedsDriver(nvml, driver string) bool {
	major, rest, ok := strings.Cut(nvml, ".")
	return ok && isDigits(major) && rest == driver && isDottedNumber(driver)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func isDottedNumber(s string) bool {
	for p := range strings.SplitSeq(s, ".") {
		if !isDigits(p) {
			return false
		}
	}
	return true
}

// validUUID reports whether u has NVML's GPU UUID form, GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx
// in lowercase hex. Upper case is refused rather than folded: NVML never emits it, and the
// cross-device UUID rule compares strings.
func validUUID(u string) bool {
	const prefix = "GPU-"
	if len(u) != len(prefix)+36 || !strings.HasPrefix(u, prefix) {
		return false
	}
	for i, c := range []byte(u[len(prefix):]) {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// busKey normalises a PCI bus id ("00000000:3B:00.0", "0000:3b:00.0", "3b:00.0") to
// "dddd:bb:dd.f". It returns false for an absent id and for 0000:00:00.0, which is what a
// collector produces from an nvmlPciInfo_t whose location fields were never filled (go-nvml's
// mock) and is the host bridge, never a GPU, on real machines.
func busKey(id string) (string, bool) {
	id = strings.TrimSpace(id)
	if id == "" {
		return "", false
	}
	a, rest, ok := strings.Cut(id, ":")
	if !ok {
		return strings.ToLower(id), true
	}
	dom, bus, devfn := "0", a, rest
	if b, c, ok := strings.Cut(rest, ":"); ok {
		dom, bus, devfn = a, b, c
	}
	dev, fn, ok := strings.Cut(devfn, ".")
	if !ok {
		return strings.ToLower(id), true
	}
	var v [4]uint64
	for i, p := range [4]string{dom, bus, dev, fn} {
		n, err := strconv.ParseUint(p, 16, 32)
		if err != nil {
			return strings.ToLower(id), true
		}
		v[i] = n
	}
	if v == [4]uint64{} {
		return "", false
	}
	b := make([]byte, 0, 16)
	b = appendHex(b, v[0], 4)
	b = append(b, ':')
	b = appendHex(b, v[1], 2)
	b = append(b, ':')
	b = appendHex(b, v[2], 2)
	b = append(b, '.')
	return string(appendHex(b, v[3], 1)), true
}

func appendHex(b []byte, v uint64, width int) []byte {
	n := 1
	for x := v >> 4; x != 0; x >>= 4 {
		n++
	}
	for ; n < width; n++ {
		b = append(b, '0')
	}
	return strconv.AppendUint(b, v, 16)
}

// SerialKey normalises a board serial for identity comparisons (trimmed, spaces removed, upper
// case). It returns false when the serial cannot identify a board: empty, a placeholder such as
// "N/A" or "[Not Supported]", or one character repeated ("0000000000000"), which several
// boards report and which would otherwise collide across unrelated devices.
func SerialKey(serial string) (string, bool) {
	k := serial
	if strings.ContainsFunc(k, func(r rune) bool { return r == ' ' || r == '\t' || 'a' <= r && r <= 'z' || r >= 0x80 }) {
		k = strings.ToUpper(strings.Join(strings.Fields(k), ""))
	}
	if placeholderKey(k) || strings.Count(k, k[:1]) == len(k) {
		return "", false
	}
	return k, true
}

// UUIDKey is the identity of a GPU UUID: trimmed, and a "GPU-" id (prefix in any case) in
// NVML's spelling, "GPU-" + lower-case. The identity rules compare UUIDs as strings, so a
// respelled UUID (still a MALFORMED_UUID finding) must name the same GPU, or respelling would
// take a removed host's GPUs or escape a quarantine.
func UUIDKey(uuid string) string {
	k := strings.TrimSpace(uuid)
	if len(k) >= 4 && strings.EqualFold(k[:4], "GPU-") {
		return "GPU-" + strings.ToLower(k[4:])
	}
	return k
}

// placeholderKey reports whether k (upper case, no spaces) is empty or a placeholder that
// NVML, nvidia-smi or an OEM writes where a value is missing.
func placeholderKey(k string) bool {
	switch strings.TrimLeft(strings.TrimRight(k, "])"), "[(") {
	case "", "NA", "N/A", "NONE", "NULL", "UNKNOWN", "NOTSUPPORTED", "NOTAVAILABLE", "DEFAULT", "TOBEFILLEDBYO.E.M.":
		return true
	}
	return false
}

// placeholder reports whether an identifier string is absent: empty, blank or a placeholder
// such as "N/A" or "[Not Supported]". Such a value is "not reported", never "malformed".
func placeholder(v string) bool {
	return placeholderKey(strings.ToUpper(strings.Join(strings.Fields(v), "")))
}

// IdentityKeys returns the values that must be unique across devices, for the server's
// UUID_ON_ANOTHER_DEVICE and SERIAL_ON_ANOTHER_DEVICE queries: the GPU UUIDs as reported and the
// usable serials normalised with SerialKey, each sorted and without duplicates.
func (s Snapshot) IdentityKeys() (uuids, serials []string) {
	for _, g := range s.GPUs {
		if k := UUIDKey(g.UUID); k != "" {
			uuids = append(uuids, k)
		}
		if k, ok := SerialKey(g.Serial); ok {
			serials = append(serials, k)
		}
	}
	slices.Sort(uuids)
	slices.Sort(serials)
	return slices.Compact(uuids), slices.Compact(serials)
}

// CompareEnrollment returns IMMUTABLE_FIELD_CHANGED findings for every difference between the
// snapshot stored at enrollment and the current one that a genuine host cannot produce: a GPU
// added or removed (by UUID), or a changed PCI device, vendor or subsystem id, memory total,
// serial or board part number. Host versions, clocks, power limit, vBIOS, bus ids and ECC/MIG
// modes may change (the vBIOS and bus id in value, not in presence). The memory total may
// drift by 2% (drivers change how much they reserve) or by 7% when the ECC mode changed (ECC
// hides 1/16 of GDDR memory). An identifier absent at enrollment and present now, or the
// reverse, is a change like any other: a board's InfoROM does not gain or lose its identity,
// and accepting "absent" as a wildcard would let a host enroll without identities and claim
// any later. Placeholders ("N/A", a repeated digit) count as absent. It returns nil when
// nothing changed; findings are in UUID order.
func CompareEnrollment(enrolled, current Snapshot) []Finding {
	was, now := byUUID(enrolled), byUUID(current)
	keys := make([]string, 0, len(was)+len(now))
	for u := range was {
		keys = append(keys, u)
	}
	for u := range now {
		if _, ok := was[u]; !ok {
			keys = append(keys, u)
		}
	}
	slices.Sort(keys)

	var out []Finding
	for _, u := range keys {
		e, inE := was[u]
		c, inC := now[u]
		fs := findings{gpu: u}
		switch {
		case !inC:
			fs.add(ReasonImmutableFieldChanged, "GPU enrolled but no longer reported")
		case !inE:
			fs.add(ReasonImmutableFieldChanged, "GPU not present at enrollment")
		default:
			if e.PCIDeviceID != c.PCIDeviceID {
				fs.add(ReasonImmutableFieldChanged, "pciDeviceId %#06x → %#06x", e.PCIDeviceID, c.PCIDeviceID)
			}
			if e.PCIVendorID != c.PCIVendorID {
				fs.add(ReasonImmutableFieldChanged, "pciVendorId %#06x → %#06x", e.PCIVendorID, c.PCIVendorID)
			}
			if e.PCISubsystemID != c.PCISubsystemID {
				fs.add(ReasonImmutableFieldChanged, "pciSubsystemId 0x%08x → 0x%08x", e.PCISubsystemID, c.PCISubsystemID)
			}
			if !memoryCompatible(e, c) {
				fs.add(ReasonImmutableFieldChanged, "memoryTotalBytes %d → %d", e.MemoryTotalBytes, c.MemoryTotalBytes)
			}
			ek, _ := SerialKey(e.Serial)
			if ck, _ := SerialKey(c.Serial); ck != ek {
				fs.add(ReasonImmutableFieldChanged, "serial %q → %q", trunc(e.Serial), trunc(c.Serial))
			}
			if partKey(e.BoardPartNumber) != partKey(c.BoardPartNumber) {
				fs.add(ReasonImmutableFieldChanged, "boardPartNumber %q → %q", trunc(e.BoardPartNumber), trunc(c.BoardPartNumber))
			}
			// The bus id and the vBIOS may change value (another slot, a firmware update) but
			// not presence: NVML reports both for every GPU.
			if placeholder(e.BusID) != placeholder(c.BusID) {
				fs.add(ReasonImmutableFieldChanged, "busId %q → %q", trunc(e.BusID), trunc(c.BusID))
			}
			if placeholder(e.VBIOSVersion) != placeholder(c.VBIOSVersion) {
				fs.add(ReasonImmutableFieldChanged, "vbiosVersion %q → %q", trunc(e.VBIOSVersion), trunc(c.VBIOSVersion))
			}
		}
		out = append(out, fs.list...)
	}
	return out
}

// partKey is a board part number for comparison: trimmed, or "" for a placeholder.
func partKey(pn string) string {
	if placeholder(pn) {
		return ""
	}
	return strings.TrimSpace(pn)
}

func byUUID(s Snapshot) map[string]GPU {
	m := make(map[string]GPU, len(s.GPUs))
	for _, g := range s.GPUs {
		if _, dup := m[g.UUID]; !dup {
			m[g.UUID] = g
		}
	}
	return m
}

func memoryCompatible(e, c GPU) bool {
	tol := 0.02
	if (e.ECCEnabled == nil) != (c.ECCEnabled == nil) || e.ECCEnabled != nil && *e.ECCEnabled != *c.ECCEnabled {
		tol = 0.07
	}
	d := math.Abs(float64(e.MemoryTotalBytes) - float64(c.MemoryTotalBytes))
	return d <= tol*float64(e.MemoryTotalBytes)
}

// topology returns one sentence per way the host's GPUs fit no real server (see
// docs/attestation.md, "Host topology"), in reference-table order, or nil. Only GPUs whose
// vendor and PCI id select a table row count: an unknown model's form is unknown.
func topology(gpus []GPU) []string {
	counts := make(map[*Model]int, 2)
	for i := range gpus {
		g := &gpus[i]
		if g.PCIVendorID != VendorNVIDIA || g.PCIDeviceID > 0xFFFF {
			continue
		}
		if row := lookupModel(uint16(g.PCIDeviceID)); row != nil {
			counts[row]++
		}
	}
	var out, sxm []string
	widths, cards := 0, 0
	for i := range Models {
		m := &Models[i]
		n := counts[m]
		if n == 0 {
			continue
		}
		switch m.Form {
		case FormSXM:
			sxm = append(sxm, m.Name)
			if !slices.Contains(m.HostCounts, n) {
				out = append(out, fmt.Sprintf("%d × %s: an SXM host shows %s of them (a 4- or 8-GPU baseboard or a VM's slice of one)",
					n, m.Name, countsText(m.HostCounts)))
			}
		default:
			widths += n * m.Form.slotWidths()
			cards += n
		}
	}
	if len(sxm) > 1 {
		out = append(out, fmt.Sprintf("SXM modules of %d models (%s) on one host: a baseboard carries one model", len(sxm), strings.Join(sxm, ", ")))
	}
	if widths > MaxPCIeSlotWidths {
		out = append(out, fmt.Sprintf("%d PCIe GPUs take %d slot widths: a chassis holds at most %d double-width or %d single-width cards",
			cards, widths, MaxPCIeSlotWidths/2, MaxPCIeSlotWidths))
	}
	return out
}

func countsText(c []int) string {
	parts := make([]string, len(c))
	for i, n := range c {
		parts[i] = strconv.Itoa(n)
	}
	if len(parts) < 2 {
		return strings.Join(parts, "")
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " or " + parts[len(parts)-1]
}

// busIDProblem returns why id is not a GPU's bus id as NVML formats it in nvmlPciInfo_t.busId
// (NVML_DEVICE_PCI_BUS_ID_FMT, "%08X:%02X:%02X.0": an 8-hex-digit domain, a 2-digit bus, a
// 2-digit device below 0x20 and a function 0-7, upper-case hex), or "" when it is. An absent
// id is a problem too: NVML reports it with the PCI ids, and without it the host-level
// duplicate check has nothing to compare. 00000000:00:00.x is the host bridge, never a GPU
// (go-nvml's mock leaves the location fields zero; the worker's simulator fills them).
func busIDProblem(id string) string {
	if id == "" {
		return "absent (NVML always reports it)"
	}
	const form = "want DDDDDDDD:BB:DD.F in upper-case hex"
	if len(id) != 16 || id[8] != ':' || id[11] != ':' || id[14] != '.' {
		return form
	}
	for i := 0; i < len(id); i++ {
		if i == 8 || i == 11 || i == 14 {
			continue
		}
		if c := id[i]; !('0' <= c && c <= '9' || 'A' <= c && c <= 'F') {
			return form
		}
	}
	dev, _ := strconv.ParseUint(id[12:14], 16, 8)
	switch {
	case dev > 0x1f:
		return fmt.Sprintf("device %#x is above 0x1f (PCI has 32 devices per bus)", dev)
	case id[15] > '7':
		return "function above 7 (PCI has 8 functions per device)"
	case id[:14] == "00000000:00:00":
		return "0000:00:00 is the host bridge, never a GPU"
	}
	return ""
}

// validVBIOS reports whether v is a vBIOS version as NVML reports it: five dot-separated
// pairs of hex digits ("96.00.89.00.01", "95.02.3C.40.87").
func validVBIOS(v string) bool {
	if len(v) != 14 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if i%3 == 2 {
			if c != '.' {
				return false
			}
		} else if !('0' <= c && c <= '9' || 'A' <= c && c <= 'F' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// validNVIDIASerial reports whether s is an NVIDIA board serial as NVML reports it: exactly
// 13 decimal digits (the number on the board's label, e.g. 1653223011234).
func validNVIDIASerial(s string) bool { return len(s) == 13 && isDigits(s) }

// validPartNumber reports whether pn is an NVIDIA board part number as the InfoROM holds it:
// NNN-XXXXX-XXXX-XXX with digits and upper-case letters ("692-2G520-0200-000",
// "900-2G183-0000-001").
func validPartNumber(pn string) bool {
	if len(pn) != 18 || pn[3] != '-' || pn[9] != '-' || pn[14] != '-' || !isDigits(pn[:3]) {
		return false
	}
	for i := 4; i < len(pn); i++ {
		if i == 9 || i == 14 {
			continue
		}
		if c := pn[i]; !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

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
		ReasonImmutableFieldChanged, ReasonUUIDOnAnotherDevice, ReasonSerialOnAnotherDevice, ReasonGPUQuarantined,
		ReasonSnapshotHashMismatch, ReasonBadSignature, ReasonInsufficientWork, ReasonMalformedProof,
		ReasonChallengeReplayed, ReasonChallengeExpired, ReasonChallengeForeign,
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

// MaxGPUsPerHost is the most GPUs one host plausibly has (HGX/DGX boards carry 8, the largest
// single-system designs 16).
const MaxGPUsPerHost = 16

const gib = 1 << 30

// CheckSnapshot runs every host-level counterfeit rule on s and returns the findings, host
// findings first, then per GPU in UUID order, each reason at most once per GPU (details
// joined). It returns nil when nothing is wrong. Cross-device rules (UUID or serial on another
// device) need the database and are the server's; changes since enrollment are
// CompareEnrollment's. It assumes s passed Validate; on a snapshot that did not, it still
// returns findings and does not panic.
func CheckSnapshot(s Snapshot) []Finding {
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
		checkGPU(&fs, g, s.CUDADriverVersion)
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

func checkGPU(fs *findings, g *GPU, cuda int) {
	if !validUUID(g.UUID) {
		fs.add(ReasonMalformedUUID, "%q", trunc(g.UUID))
	}
	if g.PCIVendorID != VendorNVIDIA {
		fs.add(ReasonVendorNotNVIDIA, "PCI vendor id %#06x", g.PCIVendorID)
		return // an NVIDIA table says nothing about another vendor's ids
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
	switch strings.TrimLeft(strings.TrimRight(k, "])"), "[(") {
	case "", "NA", "N/A", "NONE", "NULL", "UNKNOWN", "NOTSUPPORTED", "NOTAVAILABLE", "DEFAULT", "TOBEFILLEDBYO.E.M.":
		return "", false
	}
	if strings.Count(k, k[:1]) == len(k) {
		return "", false
	}
	return k, true
}

// IdentityKeys returns the values that must be unique across devices, for the server's
// UUID_ON_ANOTHER_DEVICE and SERIAL_ON_ANOTHER_DEVICE queries: the GPU UUIDs as reported and the
// usable serials normalised with SerialKey, each sorted and without duplicates.
func (s Snapshot) IdentityKeys() (uuids, serials []string) {
	for _, g := range s.GPUs {
		if g.UUID != "" {
			uuids = append(uuids, g.UUID)
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
// modes may change. The memory total may drift by 2% (drivers change how much they reserve)
// or by 7% when the ECC mode changed (ECC hides 1/16 of GDDR memory). A serial, part number or
// subsystem id enrolled as absent may appear later; one enrolled as present may not disappear.
// It returns nil when nothing changed; findings are in UUID order.
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
			if e.PCISubsystemID != 0 && e.PCISubsystemID != c.PCISubsystemID {
				fs.add(ReasonImmutableFieldChanged, "pciSubsystemId %#010x → %#010x", e.PCISubsystemID, c.PCISubsystemID)
			}
			if !memoryCompatible(e, c) {
				fs.add(ReasonImmutableFieldChanged, "memoryTotalBytes %d → %d", e.MemoryTotalBytes, c.MemoryTotalBytes)
			}
			if ek, ok := SerialKey(e.Serial); ok {
				if ck, _ := SerialKey(c.Serial); ck != ek {
					fs.add(ReasonImmutableFieldChanged, "serial %q → %q", trunc(e.Serial), trunc(c.Serial))
				}
			}
			if ep := strings.TrimSpace(e.BoardPartNumber); ep != "" && ep != strings.TrimSpace(c.BoardPartNumber) {
				fs.add(ReasonImmutableFieldChanged, "boardPartNumber %q → %q", trunc(e.BoardPartNumber), trunc(c.BoardPartNumber))
			}
		}
		out = append(out, fs.list...)
	}
	return out
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

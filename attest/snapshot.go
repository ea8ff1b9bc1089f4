package attest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"
)

// SnapshotVersion is the tag that opens every canonical snapshot encoding.
const SnapshotVersion = "gpugate/snapshot/v1"

// Structural limits enforced by [Snapshot.Validate]. They bound the work and memory the server
// spends on one snapshot; the plausibility limits (e.g. [MaxGPUsPerHost]) are counterfeit rules.
const (
	MaxSnapshotBytes = 1 << 20 // JSON accepted by ParseSnapshot
	MaxSnapshotGPUs  = 64      // GPUs per snapshot
	MaxFieldBytes    = 256     // any string field
)

// GPU is what NVML says about one GPU. A field NVML answered with ERROR_NOT_SUPPORTED is left
// at its zero value (nil for the *bool fields); that is "absent", never a failure by itself.
//
// PCIDeviceID holds the 16-bit PCI device id (0x2330 for an H100 SXM5), not NVML's 32-bit
// nvmlPciInfo_t.pciDeviceId (0x233010DE, device<<16 | vendor): split that with [SplitPCIID]
// and store the halves in PCIDeviceID and PCIVendorID. A value above 0xFFFF is refused by
// [Snapshot.Validate]. PCISubsystemID is NVML's 32-bit pciSubSystemId as reported.
type GPU struct {
	UUID                 string `json:"uuid"`
	Name                 string `json:"name"`
	PCIDeviceID          uint32 `json:"pciDeviceId"`
	PCIVendorID          uint16 `json:"pciVendorId"`
	PCISubsystemID       uint32 `json:"pciSubsystemId,omitempty"`
	BusID                string `json:"busId,omitempty"`
	MemoryTotalBytes     uint64 `json:"memoryTotalBytes"`
	Architecture         string `json:"architecture,omitempty"` // see ArchitectureName
	ComputeMajor         int    `json:"computeMajor"`
	ComputeMinor         int    `json:"computeMinor"`
	Serial               string `json:"serial,omitempty"`
	BoardPartNumber      string `json:"boardPartNumber,omitempty"`
	VBIOSVersion         string `json:"vbiosVersion,omitempty"`
	MaxSMClockMHz        uint32 `json:"maxSmClockMhz,omitempty"`
	MaxMemClockMHz       uint32 `json:"maxMemClockMhz,omitempty"`
	PowerLimitMilliwatts uint32 `json:"powerLimitMilliwatts,omitempty"`
	ECCEnabled           *bool  `json:"eccEnabled,omitempty"`
	MIGEnabled           *bool  `json:"migEnabled,omitempty"`
}

// Snapshot is one host's GPUs plus the host-level versions, as collected by the worker for
// enrollment and for every proof.
//
// It carries no confidential-computing evidence: that travels beside it, in the proof's
// evidence (ProofInput.evidence), each GPU's report bound to the challenge by [CCNonce]. The
// snapshot is stored with every judged proof, raw evidence is about 9 KB per GPU, and the
// server keeps only the facts it verified from it (docs/attestation.md).
type Snapshot struct {
	DriverVersion     string `json:"driverVersion"`     // "550.54.15"
	NVMLVersion       string `json:"nvmlVersion"`       // "12.550.54.15"
	CUDADriverVersion int    `json:"cudaDriverVersion"` // 12040 for CUDA 12.4
	GPUs              []GPU  `json:"gpus"`
}

// ParseSnapshot decodes the snapshot JSON a worker sent. It refuses unknown fields, trailing
// data, more than MaxSnapshotBytes and anything [Snapshot.Validate] refuses; every error wraps
// ErrMalformed. A snapshot with the former "attestation" field (workers before CC evidence
// moved to the proof's evidence) is refused with a message saying so.
func ParseSnapshot(data []byte) (Snapshot, error) {
	if len(data) > MaxSnapshotBytes {
		return Snapshot{}, fmt.Errorf("%w: snapshot is %d bytes, limit %d", ErrMalformed, len(data), MaxSnapshotBytes)
	}
	var in struct {
		Snapshot
		// Attestation is only recognised to be refused clearly: an older worker's hash covers
		// it, so ignoring it would fail the proof with a less useful SNAPSHOT_HASH_MISMATCH.
		Attestation json.RawMessage `json:"attestation"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return Snapshot{}, fmt.Errorf("%w: snapshot JSON: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Snapshot{}, fmt.Errorf("%w: snapshot JSON: trailing data", ErrMalformed)
	}
	if len(in.Attestation) > 0 && string(in.Attestation) != "null" {
		return Snapshot{}, fmt.Errorf("%w: snapshot.attestation is no longer accepted: confidential-computing "+
			"evidence travels in the proof's evidence (upgrade the worker)", ErrMalformed)
	}
	if err := in.Snapshot.Validate(); err != nil {
		return Snapshot{}, err
	}
	return in.Snapshot, nil
}

// Validate checks the structural limits (GPU count, field lengths, no NUL in a string, 16-bit PCI device ids,
// compute capability range). It returns nil or an error wrapping
// ErrMalformed naming the first offending field. Plausibility is not checked here: that is
// [CheckSnapshot], whose findings are verdicts rather than refusals.
func (s Snapshot) Validate() error {
	if len(s.GPUs) > MaxSnapshotGPUs {
		return fmt.Errorf("%w: %d GPUs, limit %d", ErrMalformed, len(s.GPUs), MaxSnapshotGPUs)
	}
	if err := checkLen("driverVersion", s.DriverVersion); err != nil {
		return err
	}
	if err := checkLen("nvmlVersion", s.NVMLVersion); err != nil {
		return err
	}
	if s.CUDADriverVersion < 0 || s.CUDADriverVersion > 1_000_000 {
		return fmt.Errorf("%w: cudaDriverVersion %d out of range", ErrMalformed, s.CUDADriverVersion)
	}
	for i := range s.GPUs {
		g := &s.GPUs[i]
		for _, f := range [...]struct{ name, v string }{
			{"uuid", g.UUID}, {"name", g.Name}, {"busId", g.BusID}, {"architecture", g.Architecture},
			{"serial", g.Serial}, {"boardPartNumber", g.BoardPartNumber}, {"vbiosVersion", g.VBIOSVersion},
		} {
			if len(f.v) > MaxFieldBytes || strings.IndexByte(f.v, 0) >= 0 {
				return checkLen(fmt.Sprintf("gpus[%d].%s", i, f.name), f.v)
			}
		}
		if g.PCIDeviceID > 0xFFFF {
			return fmt.Errorf("%w: gpus[%d].pciDeviceId %#x is NVML's 32-bit form; send the 16-bit device id (SplitPCIID)",
				ErrMalformed, i, g.PCIDeviceID)
		}
		if g.ComputeMajor < 0 || g.ComputeMajor > 255 || g.ComputeMinor < 0 || g.ComputeMinor > 255 {
			return fmt.Errorf("%w: gpus[%d] compute capability %d.%d out of range", ErrMalformed, i, g.ComputeMajor, g.ComputeMinor)
		}
	}
	return nil
}

// checkLen refuses a string field longer than MaxFieldBytes, or holding a NUL character: no
// NVML string has one, and PostgreSQL's jsonb, where the snapshot is stored with its verdict,
// cannot hold it (a proof carrying one would be judged but its verdict never stored).
func checkLen(field, v string) error {
	if len(v) > MaxFieldBytes {
		return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrMalformed, field, len(v), MaxFieldBytes)
	}
	if strings.IndexByte(v, 0) >= 0 {
		return fmt.Errorf("%w: %s holds a NUL character", ErrMalformed, field)
	}
	return nil
}

// Canonical returns the deterministic "gpugate/snapshot/v1" encoding described in the package
// documentation. It does not depend on the order of GPUs, on JSON field order, or on nil versus
// empty slices; it depends on every other field. It never fails: an
// invalid snapshot still has an encoding (Validate separately).
func (s Snapshot) Canonical() []byte {
	size := 64 + len(s.DriverVersion) + len(s.NVMLVersion)
	for i := range s.GPUs {
		size += gpuSize(&s.GPUs[i])
	}
	b := make([]byte, 0, size)
	b = appendStr(b, SnapshotVersion)
	b = appendStr(b, s.DriverVersion)
	b = appendStr(b, s.NVMLVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(int64(s.CUDADriverVersion))) // #nosec G115 -- the i64 field: two's complement bits, negatives encode distinctly

	order := gpuOrder(s.GPUs)
	b = appendLen(b, len(order))
	for _, i := range order {
		b = appendGPU(b, &s.GPUs[i])
	}

	// The trailing 0 was "no attestation" when v1 could carry CC evidence; it stays so that
	// every snapshot hashes as it always did (see the package documentation).
	return append(b, 0)
}

// gpuOrder returns the indices of gpus in canonical order: by UUID, and GPUs sharing a UUID (a
// counterfeit host) by their encoding, so that they too encode the same way in any order.
func gpuOrder(gpus []GPU) []int {
	order := make([]int, len(gpus))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(i, j int) int {
		if c := strings.Compare(gpus[i].UUID, gpus[j].UUID); c != 0 {
			return c
		}
		return bytes.Compare(appendGPU(nil, &gpus[i]), appendGPU(nil, &gpus[j]))
	})
	return order
}

// Sorted returns a copy of s with its GPUs in the order Canonical encodes them, for storage
// and display. It has the same Hash as s.
func (s Snapshot) Sorted() Snapshot {
	out := s
	out.GPUs = make([]GPU, 0, len(s.GPUs))
	for _, i := range gpuOrder(s.GPUs) {
		out.GPUs = append(out.GPUs, s.GPUs[i])
	}
	return out
}

// Hash returns SHA-256(Canonical()), the snapHash bound into the proof of work.
func (s Snapshot) Hash() [32]byte {
	return sha256.Sum256(s.Canonical())
}

func gpuSize(g *GPU) int {
	return 120 + len(g.UUID) + len(g.Name) + len(g.BusID) + len(g.Architecture) + len(g.Serial) +
		len(g.BoardPartNumber) + len(g.VBIOSVersion)
}

func appendGPU(b []byte, g *GPU) []byte {
	b = appendStr(b, g.UUID)
	b = appendStr(b, g.Name)
	b = binary.BigEndian.AppendUint32(b, g.PCIDeviceID)
	b = binary.BigEndian.AppendUint32(b, uint32(g.PCIVendorID))
	b = binary.BigEndian.AppendUint32(b, g.PCISubsystemID)
	b = appendStr(b, g.BusID)
	b = binary.BigEndian.AppendUint64(b, g.MemoryTotalBytes)
	b = appendStr(b, g.Architecture)
	// #nosec G115 -- i64 fields: two's complement bits, negatives encode distinctly
	b = binary.BigEndian.AppendUint64(b, uint64(int64(g.ComputeMajor)))
	b = binary.BigEndian.AppendUint64(b, uint64(int64(g.ComputeMinor))) // #nosec G115 -- as above
	b = appendStr(b, g.Serial)
	b = appendStr(b, g.BoardPartNumber)
	b = appendStr(b, g.VBIOSVersion)
	b = binary.BigEndian.AppendUint32(b, g.MaxSMClockMHz)
	b = binary.BigEndian.AppendUint32(b, g.MaxMemClockMHz)
	b = binary.BigEndian.AppendUint32(b, g.PowerLimitMilliwatts)
	b = appendOptBool(b, g.ECCEnabled)
	return appendOptBool(b, g.MIGEnabled)
}

// appendStr appends a u32 length and the string as encoding/json transmits it: each byte that
// is not part of valid UTF-8 becomes U+FFFD, exactly as json.Marshal replaces it.
func appendStr(b []byte, s string) []byte {
	if utf8.ValidString(s) {
		b = appendLen(b, len(s))
		return append(b, s...)
	}
	var t []byte
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			t = utf8.AppendRune(t, utf8.RuneError)
		} else {
			t = append(t, s[i:i+size]...)
		}
		i += size
	}
	b = appendLen(b, len(t))
	return append(b, t...)
}

func appendBytes(b, v []byte) []byte {
	b = appendLen(b, len(v))
	return append(b, v...)
}

// appendLen appends n, a length, as the u32 that prefixes every variable-size field of the
// encodings.
func appendLen(b []byte, n int) []byte {
	// #nosec G115 -- n is the length of a field of a request the gateway read under its body
	// limit (a few MiB), or of a value a worker read from NVML: never near 2^32.
	return binary.BigEndian.AppendUint32(b, uint32(n))
}

func appendOptBool(b []byte, v *bool) []byte {
	switch {
	case v == nil:
		return append(b, 0)
	case !*v:
		return append(b, 1)
	default:
		return append(b, 2)
	}
}

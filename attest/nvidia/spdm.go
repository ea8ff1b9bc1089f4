package nvidia

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// The SPDM 1.1 GET_MEASUREMENTS exchange an NVIDIA GPU in CC mode returns as its "attestation
// report": the requester's GET_MEASUREMENTS request followed by the GPU's MEASUREMENTS response,
// the response ending in an ECDSA P-384 signature (r‖s) over everything before it (request
// included), per DMTF DSP0274 1.1 and NVIDIA's nvtrust local verifier. See docs/attestation.md.
const (
	spdmVersion11        = 0x11
	spdmGetMeasurements  = 0xE0
	spdmMeasurements     = 0x60
	spdmRequestLen       = 37 // version, code, param1, param2, nonce[32], slot
	spdmNonceLen         = 32
	spdmSignatureLen     = 96 // P-384 r‖s
	dmtfMeasurementSpec  = 1  // MeasurementSpecification bit 0: DMTF
	maxReportBytes       = 16 << 10
	spdmSignatureRequest = 0x01 // param1 bit 0 of the request: a signature is requested
)

// NVIDIA's opaque-data field types (nvtrust OpaqueData). Only those gpugate reads are named.
const (
	opaqueDriverVersion = 3
	opaqueVBIOSVersion  = 6
	opaqueChipSKU       = 15
	opaqueProject       = 17
	opaqueProjectSKU    = 18
	opaqueFWID          = 20
)

// errMalformed is wrapped by every parse failure; Verify maps it to CC_EVIDENCE_MALFORMED.
var errMalformed = errors.New("nvidia: malformed evidence")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errMalformed, fmt.Sprintf(format, args...))
}

// Measurement is one DMTF measurement block of the report.
type Measurement struct {
	Index     int    // the block's index (1-based in NVIDIA's reports)
	ValueType byte   // DMTFSpecMeasurementValueType
	Value     []byte // the digest (48 bytes, SHA-384, on Hopper)
}

// Report is a parsed SPDM GET_MEASUREMENTS request+response.
type Report struct {
	RequestNonce  []byte            // the requester's nonce the GPU signed over (32 bytes)
	ResponseNonce []byte            // the responder's own nonce
	Measurements  []Measurement     // in the order of the record
	Opaque        map[uint16][]byte // NVIDIA's opaque fields by type
	Signed        []byte            // the signed region: everything before the signature
	Signature     []byte            // r‖s, 96 bytes
}

// ParseReport parses an SPDM 1.1 GET_MEASUREMENTS request followed by its signed MEASUREMENTS
// response. It returns an error wrapping errMalformed for anything that is not exactly that
// (wrong version or codes, lengths that do not add up, trailing bytes, more than 16 KiB); it
// never panics.
func ParseReport(b []byte) (*Report, error) {
	if len(b) > maxReportBytes {
		return nil, malformed("report is %d bytes, the limit is %d", len(b), maxReportBytes)
	}
	if len(b) < spdmRequestLen+8+spdmNonceLen+2+spdmSignatureLen {
		return nil, malformed("report is too short (%d bytes)", len(b))
	}
	req := b[:spdmRequestLen]
	if req[0] != spdmVersion11 || req[1] != spdmGetMeasurements {
		return nil, malformed("request is not SPDM 1.1 GET_MEASUREMENTS (%#02x %#02x)", req[0], req[1])
	}
	if req[2]&spdmSignatureRequest == 0 {
		return nil, malformed("request did not ask for a signature")
	}
	r := &Report{RequestNonce: req[4:36], Opaque: map[uint16][]byte{}}
	resp := b[spdmRequestLen:]
	if resp[0] != spdmVersion11 || resp[1] != spdmMeasurements {
		return nil, malformed("response is not SPDM 1.1 MEASUREMENTS (%#02x %#02x)", resp[0], resp[1])
	}
	nblocks := int(resp[4])
	recLen := int(resp[5]) | int(resp[6])<<8 | int(resp[7])<<16
	p := 8
	if recLen > len(resp)-p {
		return nil, malformed("measurement record length %d exceeds the response", recLen)
	}
	ms, err := parseRecord(resp[p:p+recLen], nblocks)
	if err != nil {
		return nil, err
	}
	r.Measurements = ms
	p += recLen
	if len(resp)-p < spdmNonceLen+2 {
		return nil, malformed("response ends before its nonce")
	}
	r.ResponseNonce = resp[p : p+spdmNonceLen]
	p += spdmNonceLen
	opLen := int(binary.LittleEndian.Uint16(resp[p:]))
	p += 2
	if opLen > len(resp)-p {
		return nil, malformed("opaque length %d exceeds the response", opLen)
	}
	if err := parseOpaque(resp[p:p+opLen], r.Opaque); err != nil {
		return nil, err
	}
	p += opLen
	if len(resp)-p != spdmSignatureLen {
		return nil, malformed("response has %d bytes after its opaque data, want a %d-byte signature", len(resp)-p, spdmSignatureLen)
	}
	r.Signed = b[:len(b)-spdmSignatureLen]
	r.Signature = b[len(b)-spdmSignatureLen:]
	return r, nil
}

// parseRecord parses n DMTF measurement blocks filling rec exactly; indices must be unique.
func parseRecord(rec []byte, n int) ([]Measurement, error) {
	if n == 0 {
		return nil, malformed("report has no measurement blocks")
	}
	ms := make([]Measurement, 0, n)
	seen := map[int]bool{}
	for p := 0; p < len(rec); {
		if len(rec)-p < 4 {
			return nil, malformed("measurement block header truncated")
		}
		idx, spec, size := int(rec[p]), rec[p+1], int(binary.LittleEndian.Uint16(rec[p+2:]))
		p += 4
		if spec != dmtfMeasurementSpec {
			return nil, malformed("measurement block %d is not DMTF (%#02x)", idx, spec)
		}
		if size > len(rec)-p || size < 3 {
			return nil, malformed("measurement block %d size %d does not fit", idx, size)
		}
		blk := rec[p : p+size]
		p += size
		vsize := int(binary.LittleEndian.Uint16(blk[1:]))
		if vsize != size-3 {
			return nil, malformed("measurement block %d value size %d does not match its block size %d", idx, vsize, size)
		}
		if seen[idx] {
			return nil, malformed("measurement block %d repeated", idx)
		}
		seen[idx] = true
		ms = append(ms, Measurement{Index: idx, ValueType: blk[0], Value: blk[3:]})
	}
	if len(ms) != n {
		return nil, malformed("report announces %d measurement blocks and holds %d", n, len(ms))
	}
	return ms, nil
}

// parseOpaque parses NVIDIA's opaque data: type(u16 LE) size(u16 LE) value, repeated, filling
// the data exactly; a type may appear once.
func parseOpaque(b []byte, into map[uint16][]byte) error {
	for p := 0; p < len(b); {
		if len(b)-p < 4 {
			return malformed("opaque field header truncated")
		}
		t, size := binary.LittleEndian.Uint16(b[p:]), int(binary.LittleEndian.Uint16(b[p+2:]))
		p += 4
		if size > len(b)-p {
			return malformed("opaque field %d size %d does not fit", t, size)
		}
		if _, dup := into[t]; dup {
			return malformed("opaque field %d repeated", t)
		}
		into[t] = b[p : p+size]
		p += size
	}
	return nil
}

// DriverVersion returns the driver version the report carries ("" when absent).
func (r *Report) DriverVersion() string { return cString(r.Opaque[opaqueDriverVersion]) }

// VBIOSVersion returns the VBIOS version the report carries in NVIDIA's notation
// ("96.00.9f.00.01"), "" when absent.
func (r *Report) VBIOSVersion() string { return formatVBIOS(r.Opaque[opaqueVBIOSVersion]) }

// Project returns the board project the report carries ("" when absent).
func (r *Report) Project() string { return cString(r.Opaque[opaqueProject]) }

// RIMIDs returns the identifiers of the driver and VBIOS RIMs that describe this report's
// firmware in NVIDIA's RIM service (https://rim.attestation.nvidia.com/v1/rim/<id>), for a GPU of
// chip ("GH100" for Hopper): NV_GPU_DRIVER_<chip>_<driver> and
// NV_GPU_VBIOS_<project>_<projectSKU>_<chipSKU>_<VBIOS without dots, upper case>. An ID is ""
// when the report lacks a field it needs.
func (r *Report) RIMIDs(chip string) (driver, vbios string) {
	if d := r.DriverVersion(); d != "" {
		driver = "NV_GPU_DRIVER_" + chip + "_" + d
	}
	p, ps, cs, v := r.Project(), cString(r.Opaque[opaqueProjectSKU]), cString(r.Opaque[opaqueChipSKU]), r.VBIOSVersion()
	if p != "" && ps != "" && cs != "" && v != "" {
		vbios = "NV_GPU_VBIOS_" + p + "_" + ps + "_" + cs + "_" + strings.ToUpper(strings.ReplaceAll(v, ".", ""))
	}
	return driver, vbios
}

// FWID returns the firmware identity digest the report carries (nil when absent).
func (r *Report) FWID() []byte { return r.Opaque[opaqueFWID] }

func cString(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	return strings.ToValidUTF8(string(b), "?")
}

// formatVBIOS renders NVIDIA's 8-byte little-endian VBIOS field the way nvtrust does: of the
// big-endian hex "000000EE AABBCCDD" it prints "aa.bb.cc.dd.ee". Other sizes print as hex.
func formatVBIOS(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) != 8 {
		return hex.EncodeToString(b)
	}
	be := make([]byte, 8)
	for i := range b {
		be[7-i] = b[i]
	}
	parts := []byte{be[4], be[5], be[6], be[7], be[3]}
	s := make([]string, len(parts))
	for i, x := range parts {
		s[i] = hex.EncodeToString([]byte{x})
	}
	return strings.Join(s, ".")
}

// encodeVBIOS is formatVBIOS's inverse for "aa.bb.cc.dd.ee" (hex octets); it returns an error
// for anything else.
func encodeVBIOS(v string) ([]byte, error) {
	parts := strings.Split(v, ".")
	if len(parts) != 5 {
		return nil, fmt.Errorf("nvidia: VBIOS version %q is not aa.bb.cc.dd.ee", v)
	}
	var x [5]byte
	for i, p := range parts {
		d, err := hex.DecodeString(p)
		if err != nil || len(d) != 1 {
			return nil, fmt.Errorf("nvidia: VBIOS version %q is not aa.bb.cc.dd.ee", v)
		}
		x[i] = d[0]
	}
	be := []byte{0, 0, 0, x[4], x[0], x[1], x[2], x[3]}
	le := make([]byte, 8)
	for i := range be {
		le[7-i] = be[i]
	}
	return le, nil
}

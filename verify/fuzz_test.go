package verify

// Fuzz target for the decoding of a proof's confidential-computing evidence (docs/security.md,
// "Fuzzing"); the gateway's FuzzWorkerRequest sends whole proofs through the handler.

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/gpugate/gpugate/attest/nvidia"
	"github.com/gpugate/gpugate/db"
)

// FuzzParseEvidence: parseEvidence never panics, refuses with a client-safe db.ErrInvalid only,
// and what it accepts respects the limits (entries, indices within the snapshot and unique,
// reports and chains non-empty and at most MaxEvidenceBytes) and survives a round trip.
func FuzzParseEvidence(f *testing.F) {
	g, err := nvidia.NewSimulatedGPU(nvidia.SimulationOptions{Seed: []byte("fuzz"), DriverVersion: "550.54.15", VBIOSVersion: "96.00.74.00.1c"})
	if err != nil {
		f.Fatal(err)
	}
	ev, err := g.Evidence(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		f.Fatal(err)
	}
	report := base64.StdEncoding.EncodeToString(ev.Report)
	f.Add(0, report, string(ev.Chain), 1, report, uint8(8))
	f.Add(0, base64.RawURLEncoding.EncodeToString(ev.Report), base64.StdEncoding.EncodeToString(ev.Chain), 0, report, uint8(8))
	f.Add(7, "", "-----BEGIN", -1, "====", uint8(8))
	f.Add(0, strings.Repeat("A", base64.StdEncoding.EncodedLen(MaxEvidenceBytes)+4), "  \n", 1, "AA", uint8(1))
	f.Fuzz(func(t *testing.T, i0 int, r0, c0 string, i1 int, r1 string, gpus uint8) {
		in := []GPUEvidence{{Index: i0, Report: r0, CertificateChain: c0}, {Index: i1, Report: r1, CertificateChain: c0}}
		out, err := parseEvidence(in, int(gpus))
		if err != nil {
			var e *db.Error
			if !errors.As(err, &e) || !errors.Is(err, db.ErrInvalid) {
				t.Fatalf("parseEvidence: %v is not a client error", err)
			}
			return
		}
		if len(out) != 2 || i0 == i1 {
			t.Fatalf("accepted %d entries for indices %d, %d", len(out), i0, i1)
		}
		for idx, e := range out {
			if idx < 0 || idx >= int(gpus) {
				t.Fatalf("accepted index %d of a %d-GPU snapshot", idx, gpus)
			}
			if len(e.Report) == 0 || len(e.Report) > MaxEvidenceBytes || len(e.Chain) == 0 || len(e.Chain) > MaxEvidenceBytes {
				t.Fatalf("entry %d: report %d bytes, chain %d bytes", idx, len(e.Report), len(e.Chain))
			}
		}
		// Round trip: the standard encoding of what was decoded decodes to the same bytes. (Other
		// spellings of those bytes, in another alphabet, with slack bits or line breaks, are
		// accepted on purpose: the bytes are what is verified and kept, never the text.)
		again, err := parseEvidence([]GPUEvidence{{Index: 0, Report: base64.StdEncoding.EncodeToString(out[i0].Report),
			CertificateChain: base64.StdEncoding.EncodeToString(out[i0].Chain)}}, 1)
		if err != nil || !bytes.Equal(again[0].Report, out[i0].Report) || !bytes.Equal(again[0].Chain, out[i0].Chain) {
			t.Fatalf("re-encoding entry %d: %v", i0, err)
		}
	})
}

package nvidia

// Fuzz targets for the two parsers of a GPU's evidence as a worker sends it (docs/security.md,
// "Fuzzing"): the SPDM measurement report and the certificate chain. FuzzVerify
// (verify_test.go) drives both through the whole verification.

import (
	"bytes"
	"encoding/pem"
	"errors"
	"testing"
)

// fuzzSeeds are real reports and chains: the Hopper fixture and a simulated GPU's.
func fuzzSeeds(f *testing.F) []Evidence {
	f.Helper()
	ev, _ := loadFixture(f)
	g, err := NewSimulatedGPU(SimulationOptions{Seed: []byte("fuzz"), DriverVersion: "550.54.15", VBIOSVersion: "96.00.74.00.1c"})
	if err != nil {
		f.Fatal(err)
	}
	sim, err := g.Evidence(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		f.Fatal(err)
	}
	return []Evidence{ev, sim}
}

// FuzzParseReport: ParseReport never panics, refuses with errMalformed only, and what it
// accepts is within the size limit, carries a 32-byte request nonce and a 96-byte signature, and
// is exactly its signed region followed by that signature (no byte of the input is ignored).
func FuzzParseReport(f *testing.F) {
	for _, ev := range fuzzSeeds(f) {
		f.Add(ev.Report)
		f.Add(ev.Report[:len(ev.Report)-1])
		f.Add(append(bytes.Clone(ev.Report), 0))
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseReport(b)
		if err != nil {
			if r != nil || !errors.Is(err, errMalformed) {
				t.Fatalf("ParseReport: %v, %v", r, err)
			}
			return
		}
		if len(b) > maxReportBytes || len(r.RequestNonce) != spdmNonceLen || len(r.Signature) != spdmSignatureLen {
			t.Fatalf("accepted a %d-byte report, nonce %d bytes, signature %d bytes", len(b), len(r.RequestNonce), len(r.Signature))
		}
		if !bytes.Equal(append(bytes.Clone(r.Signed), r.Signature...), b) {
			t.Fatal("the report is not its signed region followed by its signature")
		}
	})
}

// FuzzParseChain: ParseChain never panics, refuses with errMalformed only, and what it accepts
// has 2..8 certificates and parses to the same certificates from PEM and from concatenated DER
// (the two forms a worker may send).
func FuzzParseChain(f *testing.F) {
	for _, ev := range fuzzSeeds(f) {
		f.Add(ev.Chain)
		certs, err := ParseChain(ev.Chain)
		if err != nil {
			f.Fatal(err)
		}
		var der []byte
		for _, c := range certs {
			der = append(der, c.Raw...)
		}
		f.Add(der)
		f.Add(der[:len(der)-1])
	}
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := ParseChain(b)
		if err != nil {
			if certs != nil || !errors.Is(err, errMalformed) {
				t.Fatalf("ParseChain: %v, %v", certs, err)
			}
			return
		}
		if len(certs) < minChainCerts || len(certs) > maxChainCerts || len(b) > maxChainBytes {
			t.Fatalf("accepted %d certificates in %d bytes", len(certs), len(b))
		}
		var der, pemChain []byte
		for _, c := range certs {
			der = append(der, c.Raw...)
			pemChain = append(pemChain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		for _, form := range [][]byte{der, pemChain} {
			again, err := ParseChain(form)
			if err != nil && len(form) <= maxChainBytes {
				t.Fatalf("re-parsing the accepted chain: %v", err)
			}
			for i := range again {
				if !again[i].Equal(certs[i]) {
					t.Fatalf("certificate %d differs after re-encoding", i)
				}
			}
		}
	})
}

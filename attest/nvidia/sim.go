package nvidia

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"
)

// The simulation CA. Its private keys are derived from the public constant below, so ANYONE can
// forge evidence under it: that is the point of a simulation root, and the reason a production
// gateway never trusts it (Options.TrustSimulation; docs/attestation.md).
const simulationCASeed = "gpugate simulation CA v1 - PUBLIC, NOT A SECRET, NEVER TRUST IN PRODUCTION"

var (
	simValidFrom = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	simValidTo   = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// deriveKey returns the P-384 key HKDF-SHA-512(seed, label) reduces to (mod n-1, plus 1). Go's
// ecdsa.GenerateKey ignores caller randomness, so deterministic keys are built from the scalar.
func deriveKey(seed []byte, label string) (*ecdsa.PrivateKey, error) {
	okm, err := hkdf.Key(sha512.New, seed, []byte("gpugate/sim-key/v1"), label, 64)
	if err != nil {
		return nil, err
	}
	n := elliptic.P384().Params().N
	k := new(big.Int).SetBytes(okm)
	k.Mod(k, new(big.Int).Sub(n, big.NewInt(1)))
	k.Add(k, big.NewInt(1))
	return ecdsa.ParseRawPrivateKey(elliptic.P384(), k.FillBytes(make([]byte, 48)))
}

// derivedSerial returns a positive 16-byte serial number from seed and label.
func derivedSerial(seed []byte, label string) *big.Int {
	h := sha256.Sum256(append(append([]byte("gpugate/sim-serial/v1/"), label...), seed...))
	h[0] &= 0x7f
	h[0] |= 0x40 // no leading zero byte: always 16 bytes
	return new(big.Int).SetBytes(h[:16])
}

type simNode struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

// simCA is the simulation root, identity and provisioner certificates (the same shape as
// NVIDIA's: root → "GH100 Identity" → "Provisioner ICA 1" → per-GPU BROM → FMC leaf).
type simCA struct{ root, identity, ica simNode }

var simulationCA = sync.OnceValues(func() (*simCA, error) {
	seed := []byte(simulationCASeed)
	var ca simCA
	var err error
	mk := func(label string, tmpl *x509.Certificate, parent *simNode) (simNode, error) {
		k, err := deriveKey(seed, label)
		if err != nil {
			return simNode{}, err
		}
		return issue(tmpl, k, parent, seed, label)
	}
	if ca.root, err = mk("root", caTemplate(pkix.Name{CommonName: "gpugate Simulation Device Identity CA", Organization: []string{"gpugate SIMULATION"}}), nil); err != nil {
		return nil, err
	}
	if ca.identity, err = mk("identity", caTemplate(pkix.Name{CommonName: "gpugate SIMULATION GH100 Identity", Organization: []string{"gpugate SIMULATION"}}), &ca.root); err != nil {
		return nil, err
	}
	if ca.ica, err = mk("ica", caTemplate(pkix.Name{CommonName: "gpugate SIMULATION GH100 Provisioner ICA 1", Organization: []string{"gpugate SIMULATION"}}), &ca.identity); err != nil {
		return nil, err
	}
	return &ca, nil
})

// SimulationRoot returns gpugate's simulation CA certificate (trusted only with
// Options.TrustSimulation). It returns an error only if the CA cannot be built (never in
// practice).
func SimulationRoot() (*x509.Certificate, error) {
	ca, err := simulationCA()
	if err != nil {
		return nil, err
	}
	return ca.root.cert, nil
}

func caTemplate(name pkix.Name) *x509.Certificate {
	return &x509.Certificate{
		Subject: name, NotBefore: simValidFrom, NotAfter: simValidTo,
		BasicConstraintsValid: true, IsCA: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
}

// issue signs tmpl for key under parent (self-signed when parent is nil).
func issue(tmpl *x509.Certificate, key *ecdsa.PrivateKey, parent *simNode, seed []byte, label string) (simNode, error) {
	tmpl.SerialNumber = derivedSerial(seed, label)
	tmpl.SignatureAlgorithm = x509.ECDSAWithSHA384
	pc, pk := tmpl, key
	if parent != nil {
		pc, pk = parent.cert, parent.key
	}
	// A nil random source makes the signatures deterministic (RFC 6979), so the simulation CA's
	// certificates are byte-identical in every process: a worker's chain ends in exactly the
	// root certificate the gateway pins.
	der, err := x509.CreateCertificate(nil, tmpl, pc, &key.PublicKey, pk)
	if err != nil {
		return simNode{}, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return simNode{}, err
	}
	return simNode{key: key, cert: c}, nil
}

// SimulatedGPU makes evidence for one simulated GPU under the simulation CA: a per-GPU device
// ("BROM") certificate and key derived from the seed alone, and an FMC leaf derived from the
// seed and the firmware, like NVIDIA's.
type SimulatedGPU struct {
	leafKey *ecdsa.PrivateKey
	chain   []byte // PEM, leaf first, root last
	driver  string
	vbios   []byte
	fwid    []byte
	// measurements are the simulated firmware's block values (index 1..n).
	measurements [][]byte
}

// SimulationOptions describe a simulated GPU: Seed (e.g. its UUID and the host's key) derives its
// key and certificates, so the same GPU keeps its identity across restarts. DriverVersion
// defaults to "550.90.07", VBIOSVersion (aa.bb.cc.dd.ee) to "96.00.9f.00.01".
type SimulationOptions struct {
	Seed          []byte
	DriverVersion string
	VBIOSVersion  string
}

// simMeasurementBlocks is how many measurement blocks a simulated report has (as an H100's).
const simMeasurementBlocks = 64

// SimulatedMeasurements returns the measurement block values (index 1..n at [0..n-1]) a
// simulated GPU with these driver and VBIOS versions reports: they depend on the firmware only,
// so reference manifests can be made for them. The VBIOS version is compared without case.
func SimulatedMeasurements(driver, vbios string) [][]byte {
	vbios = strings.ToLower(vbios)
	ms := make([][]byte, simMeasurementBlocks)
	for i := range ms {
		h := sha512.New384()
		fmt.Fprintf(h, "gpugate/sim-measurement/v1\x00%s\x00%s\x00%d", driver, vbios, i+1)
		ms[i] = h.Sum(nil)
	}
	return ms
}

// NewSimulatedGPU returns the simulated GPU for opts. It returns an error for an empty seed or a
// VBIOS version not in NVIDIA's aa.bb.cc.dd.ee notation.
func NewSimulatedGPU(opts SimulationOptions) (*SimulatedGPU, error) {
	if len(opts.Seed) == 0 {
		return nil, errors.New("nvidia: a simulated GPU needs a seed")
	}
	if opts.DriverVersion == "" {
		opts.DriverVersion = "550.90.07"
	}
	if opts.VBIOSVersion == "" {
		opts.VBIOSVersion = "96.00.9f.00.01"
	}
	vb, err := encodeVBIOS(opts.VBIOSVersion)
	if err != nil {
		return nil, err
	}
	vbiosText := formatVBIOS(vb)
	ca, err := simulationCA()
	if err != nil {
		return nil, err
	}
	seed := append([]byte("gpugate/sim-gpu/v1\x00"), opts.Seed...)
	devKey, err := deriveKey(seed, "device")
	if err != nil {
		return nil, err
	}
	devSerial := derivedSerial(seed, "device-name")
	dev, err := issue(&x509.Certificate{
		Subject: pkix.Name{
			CommonName: "GH100 A01 GSP BROM (gpugate SIMULATION)", Organization: []string{"gpugate SIMULATION"},
			SerialNumber: fmt.Sprintf("%X", devSerial.Bytes()[:9]),
		},
		NotBefore: simValidFrom, NotAfter: simValidTo,
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign,
	}, devKey, &ca.ica, seed, "device")
	if err != nil {
		return nil, err
	}
	// The firmware identity: the FMC's digest, here a function of the VBIOS it ships with.
	fh := sha512.New384()
	fmt.Fprintf(fh, "gpugate/sim-fmc/v1\x00%s", vbiosText)
	fwid := fh.Sum(nil)
	leafKey, err := deriveKey(append(seed, fwid...), "leaf")
	if err != nil {
		return nil, err
	}
	ext, err := diceExtension(&leafKey.PublicKey, fwid)
	if err != nil {
		return nil, err
	}
	leaf, err := issue(&x509.Certificate{
		Subject: pkix.Name{
			CommonName: "GH100 A01 GSP FMC LF (gpugate SIMULATION)", Organization: []string{"gpugate SIMULATION"},
			SerialNumber: fmt.Sprintf("%X", derivedSerial(append(seed, fwid...), "leaf-name").Bytes()),
		},
		NotBefore: simValidFrom, NotAfter: simValidTo,
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtraExtensions: []pkix.Extension{ext},
	}, leafKey, &dev, append(seed, fwid...), "leaf")
	if err != nil {
		return nil, err
	}
	var chain bytes.Buffer
	for _, c := range []*x509.Certificate{leaf.cert, dev.cert, ca.ica.cert, ca.identity.cert, ca.root.cert} {
		_ = pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return &SimulatedGPU{
		leafKey: leafKey, chain: chain.Bytes(), driver: opts.DriverVersion, vbios: vb, fwid: fwid,
		measurements: SimulatedMeasurements(opts.DriverVersion, vbiosText),
	}, nil
}

// diceExtension builds the leaf's DICE extension in NVIDIA's shape (version, key, FWID).
func diceExtension(pub *ecdsa.PublicKey, fwid []byte) (pkix.Extension, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return pkix.Extension{}, err
	}
	var d diceFWID
	d.Version = 1
	d.Key = asn1.RawValue{FullBytes: spki}
	d.FWID.HashAlg = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2} // SHA-384
	d.FWID.Digest = fwid
	v, err := asn1.Marshal(d)
	if err != nil {
		return pkix.Extension{}, err
	}
	return pkix.Extension{Id: oidDiceTcbInfo, Value: v}, nil
}

// Evidence returns a report signed over nonce (32 bytes) and the GPU's chain (PEM). It returns
// an error for a nonce of another size.
func (g *SimulatedGPU) Evidence(nonce []byte) (Evidence, error) {
	if len(nonce) != spdmNonceLen {
		return Evidence{}, fmt.Errorf("nvidia: nonce is %d bytes, want %d", len(nonce), spdmNonceLen)
	}
	var b []byte
	b = append(b, spdmVersion11, spdmGetMeasurements, spdmSignatureRequest, 0xFF)
	b = append(b, nonce...)
	b = append(b, 0) // slot 0
	// The simulator's sizes are fixed and small: simMeasurementBlocks (64) blocks of a SHA-384
	// digest (48 bytes), so the u8 count, u16 sizes and the u24 record length cannot overflow.
	var rec []byte
	for i, m := range g.measurements {
		rec = append(rec, byte(i+1), dmtfMeasurementSpec)
		// #nosec G115 -- 51, see above
		rec = binary.LittleEndian.AppendUint16(rec, uint16(3+len(m)))
		rec = append(rec, 1) // DMTFSpecMeasurementValueType: mutable firmware, digest
		// #nosec G115 -- 48, see above
		rec = binary.LittleEndian.AppendUint16(rec, uint16(len(m)))
		rec = append(rec, m...)
	}
	b = append(b, spdmVersion11, spdmMeasurements, 0, 0, byte(len(g.measurements))) // #nosec G115 -- 64, see above
	// #nosec G115 -- the u24 little-endian record length (3,520 bytes): truncation is the point
	b = append(b, byte(len(rec)), byte(len(rec)>>8), byte(len(rec)>>16))
	b = append(b, rec...)
	respNonce := make([]byte, spdmNonceLen)
	_, _ = rand.Read(respNonce)
	b = append(b, respNonce...)
	// The opaque fields are the VBIOS version (5 bytes), "SIM\0", the driver version (a dotted
	// version such as 550.54.15, from the simulator's options) and the 48-byte FWID: a few dozen
	// bytes, far from the u16 limit of each field and of their total.
	var op []byte
	field := func(t uint16, v []byte) {
		op = binary.LittleEndian.AppendUint16(op, t)
		op = binary.LittleEndian.AppendUint16(op, uint16(len(v))) // #nosec G115 -- see above
		op = append(op, v...)
	}
	field(opaqueVBIOSVersion, g.vbios)
	field(opaqueProject, []byte("SIM\x00"))
	field(opaqueDriverVersion, append([]byte(g.driver), 0))
	field(opaqueFWID, g.fwid)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(op))) // #nosec G115 -- see above
	b = append(b, op...)
	sig, err := signP384(g.leafKey, b)
	if err != nil {
		return Evidence{}, err
	}
	b = append(b, sig...)
	return Evidence{Report: b, Chain: append([]byte(nil), g.chain...)}, nil
}

// signP384 returns the r‖s ECDSA signature of SHA-384(msg), 48 bytes each.
func signP384(k *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	h := sha512.Sum384(msg)
	r, s, err := ecdsa.Sign(rand.Reader, k, h[:])
	if err != nil {
		return nil, err
	}
	out := make([]byte, spdmSignatureLen)
	r.FillBytes(out[:48])
	s.FillBytes(out[48:])
	return out, nil
}

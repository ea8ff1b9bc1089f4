package worker

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/gpugate/gpugate/attest/nvidia"
)

// ccMode is how a simulated confidential-computing host produces its GPUs' evidence.
type ccMode int

const (
	// ccGenuine: every GPU signs with its own simulated identity under gpugate's simulation CA.
	ccGenuine ccMode = iota
	// ccCloned: GPU 0's identity signs the reports of every GPU (each over its own index's
	// nonce): one GPU's hardware presented for eight.
	ccCloned
	// ccForged: each GPU's report is signed by a key whose chain the worker issued under a
	// certificate authority it made itself, copying the genuine chain's shape and names.
	ccForged
)

// spdmSignatureBytes is the ECDSA P-384 signature (r ‖ s) that ends an SPDM GET_MEASUREMENTS
// response; it covers everything before it, the request included.
const spdmSignatureBytes = 96

// withConfCompute turns on confidential computing on a simulated host: the system reports CC
// enabled, and every GPU answers GetConfComputeGpuCertificate and
// GetConfComputeGpuAttestationReport, so the worker runs exactly the NVML code path of a real
// CC host. The evidence comes from nvidia.SimulatedGPU: its identity derives from the host's
// seed (the device key) and the GPU's UUID, so it survives restarts. See docs/worker.md for
// what this proves (nothing about hardware: the simulation CA's key is public).
func withConfCompute(s *server.Server, seed []byte, b board, mode ccMode) *server.Server {
	s.SystemGetConfComputeStateFunc = func() (nvml.ConfComputeSystemState, nvml.Return) {
		return nvml.ConfComputeSystemState{Environment: nvml.CC_SYSTEM_ENVIRONMENT_PROD,
			CcFeature: nvml.CC_SYSTEM_FEATURE_ENABLED, DevToolsMode: nvml.CC_SYSTEM_DEVTOOLS_MODE_OFF}, nvml.SUCCESS
	}
	h := &ccHost{seed: seed, driver: s.DriverVersion, vbios: b.vbios, mode: mode, gpus: map[string]*ccGPU{}}
	devices := make([]*server.Device, len(s.Devices))
	for i, nd := range s.Devices {
		devices[i] = nd.(*server.Device)
	}
	for _, d := range devices {
		// The identity that signs for d: its own, or GPU 0's on a cloned host. UUIDs are read
		// at call time (--clone-uuids-from replaces them after the build).
		signer := func() string {
			if mode == ccCloned {
				return devices[0].UUID
			}
			return d.UUID
		}
		d.GetConfComputeGpuCertificateFunc = func() (nvml.ConfComputeGpuCertificate, nvml.Return) {
			var c nvml.ConfComputeGpuCertificate
			g, err := h.gpu(signer())
			if err != nil {
				return c, nvml.ERROR_UNKNOWN
			}
			chain := g.chain
			att, ok := encodeChain(chain, len(c.AttestationCertChain))
			if !ok {
				return c, nvml.ERROR_INSUFFICIENT_SIZE
			}
			c.AttestationCertChainSize = uint32(copy(c.AttestationCertChain[:], att)) // #nosec G115 -- at most the fixed array's size (KiB)
			// CertChain is the GPU's identity chain without the attestation leaf.
			if len(chain) > 1 {
				if dev, ok := encodeChain(chain[1:], len(c.CertChain)); ok {
					c.CertChainSize = uint32(copy(c.CertChain[:], dev)) // #nosec G115 -- at most the fixed array's size (KiB)
				}
			}
			return c, nvml.SUCCESS
		}
		d.GetConfComputeGpuAttestationReportFunc = func(r *nvml.ConfComputeGpuAttestationReport) nvml.Return {
			if r == nil {
				return nvml.ERROR_INVALID_ARGUMENT
			}
			g, err := h.gpu(signer())
			if err != nil {
				return nvml.ERROR_UNKNOWN
			}
			report, err := g.report(r.Nonce[:])
			if err != nil {
				return nvml.ERROR_UNKNOWN
			}
			if len(report) > len(r.AttestationReport) {
				return nvml.ERROR_INSUFFICIENT_SIZE
			}
			r.AttestationReportSize = uint32(copy(r.AttestationReport[:], report)) // #nosec G115 -- at most the fixed array's size (KiB)
			r.IsCecAttestationReportPresent, r.CecAttestationReportSize = 0, 0
			return nvml.SUCCESS
		}
	}
	return s
}

// ccHost holds a simulated host's GPU identities, made on first use (key generation is not
// free) and kept for the life of the process.
type ccHost struct {
	seed          []byte
	driver, vbios string
	mode          ccMode

	mu     sync.Mutex
	gpus   map[string]*ccGPU // by the UUID whose identity signs
	forger *forger
}

// ccGPU is one simulated identity: its chain (leaf first) and how it signs a report.
type ccGPU struct {
	chain  []*x509.Certificate
	report func(nonce []byte) ([]byte, error)
}

// simCCSeed is the seed of the simulated GPU with this UUID on the host with this seed.
func simCCSeed(seed []byte, uuid string) []byte {
	h := sha256.New()
	h.Write([]byte("gpugate/simulate/v1\x00cc\x00"))
	h.Write(seed)
	h.Write([]byte{0})
	h.Write([]byte(uuid))
	return h.Sum(nil)
}

// gpu returns the identity of the GPU with this UUID, making it on first use. It fails only if
// the simulated GPU cannot be made.
func (h *ccHost) gpu(uuid string) (*ccGPU, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if g := h.gpus[uuid]; g != nil {
		return g, nil
	}
	sim, err := nvidia.NewSimulatedGPU(nvidia.SimulationOptions{Seed: simCCSeed(h.seed, uuid), DriverVersion: h.driver, VBIOSVersion: h.vbios})
	if err != nil {
		return nil, err
	}
	probe, err := sim.Evidence(make([]byte, 32))
	if err != nil {
		return nil, err
	}
	chain, err := nvidia.ParseChain(probe.Chain)
	if err != nil {
		return nil, err
	}
	g := &ccGPU{chain: chain, report: func(nonce []byte) ([]byte, error) {
		ev, err := sim.Evidence(nonce)
		return ev.Report, err
	}}
	if h.mode == ccForged {
		if h.forger == nil {
			if h.forger, err = newForger(); err != nil {
				return nil, err
			}
		}
		if g, err = h.forger.forge(chain, g.report); err != nil {
			return nil, err
		}
	}
	h.gpus[uuid] = g
	return g, nil
}

// forger is the counterfeiter of dgxh100-cc-forged: a root CA of its own, under which it
// reissues each simulated GPU's chain (same subjects, serials, validity and extensions, new
// keys) and re-signs the GPU's reports with the reissued leaf's key. Only the root differs
// from genuine evidence; a gateway that checks the chain to its trusted roots flags it.
type forger struct {
	key  *ecdsa.PrivateKey
	root *x509.Certificate
}

func newForger() (*forger, error) {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "NVIDIA Device Identity CA", Organization: []string{"NVIDIA Corporation"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(20, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &forger{key: key, root: root}, nil
}

var (
	oidSubjectKeyID   = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidAuthorityKeyID = asn1.ObjectIdentifier{2, 5, 29, 35}
)

// forge reissues chain (leaf first) under f's root and returns the identity that signs with
// the reissued leaf. It fails only if a certificate cannot be reissued (not ECDSA P-384).
func (f *forger) forge(chain []*x509.Certificate, genuine func([]byte) ([]byte, error)) (*ccGPU, error) {
	out := make([]*x509.Certificate, len(chain))
	parent, parentKey := f.root, f.key
	for j := len(chain) - 1; j >= 0; j-- {
		orig := chain[j]
		key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := *orig
		tmpl.SubjectKeyId, tmpl.AuthorityKeyId = nil, nil // recomputed for the new keys
		tmpl.ExtraExtensions = nil
		for _, e := range orig.Extensions {
			if !e.Id.Equal(oidSubjectKeyID) && !e.Id.Equal(oidAuthorityKeyID) {
				tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, e)
			}
		}
		tmpl.SignatureAlgorithm = x509.ECDSAWithSHA384
		tmpl.PublicKey = &key.PublicKey // a self-signed template is its own parent
		signer, signerKey := parent, parentKey
		if bytes.Equal(orig.RawSubject, orig.RawIssuer) && j == len(chain)-1 {
			signer, signerKey = &tmpl, key // the chain carries its root: self-signed again
		}
		der, err := x509.CreateCertificate(rand.Reader, &tmpl, signer, &key.PublicKey, signerKey)
		if err != nil {
			return nil, fmt.Errorf("forging certificate %d of the chain: %w", j, err)
		}
		if out[j], err = x509.ParseCertificate(der); err != nil {
			return nil, err
		}
		parent, parentKey = out[j], key
	}
	leafKey := parentKey
	return &ccGPU{chain: out, report: func(nonce []byte) ([]byte, error) {
		rep, err := genuine(nonce)
		if err != nil {
			return nil, err
		}
		return resign(rep, leafKey)
	}}, nil
}

// resign replaces the signature that ends an SPDM measurement report with key's signature
// over the same signed region (SHA-384, r ‖ s, 48 bytes each).
func resign(report []byte, key *ecdsa.PrivateKey) ([]byte, error) {
	if len(report) <= spdmSignatureBytes {
		return nil, errors.New("report too short to carry a signature")
	}
	signed := report[:len(report)-spdmSignatureBytes]
	digest := sha512.Sum384(signed)
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(report))
	copy(out, signed)
	r.FillBytes(out[len(signed) : len(signed)+48])
	s.FillBytes(out[len(signed)+48:])
	return out, nil
}

// encodeChain encodes certs as PEM (as NVML returns chains) when that fits in limit bytes, else
// as concatenated DER; ok is false when neither fits.
func encodeChain(certs []*x509.Certificate, limit int) (b []byte, ok bool) {
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if len(b) <= limit {
		return b, true
	}
	b = nil
	for _, c := range certs {
		b = append(b, c.Raw...)
	}
	return b, len(b) <= limit
}

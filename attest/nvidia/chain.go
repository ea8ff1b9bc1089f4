package nvidia

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	_ "embed"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/gpugate/gpugate/attest"
)

// Pinned roots. The device root is NVIDIA's Device Identity CA (SHA-256 fingerprint
// 10:2B:F6:59:…:0B:16:7B:48) as published in nvtrust; the RIM root signs NVIDIA's reference
// integrity manifests. They are compiled in so no configuration can silently replace them.
var (
	//go:embed roots/nvidia-device-identity-root.pem
	nvidiaDeviceRootPEM []byte
	//go:embed roots/nvidia-rim-root.pem
	nvidiaRIMRootPEM []byte

	nvidiaDeviceRoot = mustCert(nvidiaDeviceRootPEM)
	nvidiaRIMRoot    = mustCert(nvidiaRIMRootPEM)
)

// NVIDIADeviceRoot returns the pinned NVIDIA Device Identity CA certificate.
func NVIDIADeviceRoot() *x509.Certificate { return nvidiaDeviceRoot }

// NVIDIARIMRoot returns the pinned root of NVIDIA's RIM signing certificates.
func NVIDIARIMRoot() *x509.Certificate { return nvidiaRIMRoot }

func mustCert(p []byte) *x509.Certificate {
	b, _ := pem.Decode(p)
	if b == nil {
		panic("nvidia: embedded root is not PEM")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		panic("nvidia: embedded root: " + err.Error())
	}
	return c
}

const (
	maxChainBytes = 16 << 10
	maxChainCerts = 8
	minChainCerts = 2 // a leaf and the per-device certificate that issued it
)

// oidDiceTcbInfo is the TCG DICE extension NVIDIA's GSP FMC leaf carries; its value ends in the
// FWID (hash algorithm, digest) of the firmware the leaf key was derived for.
var oidDiceTcbInfo = asn1.ObjectIdentifier{2, 23, 133, 5, 4, 1}

// ParseChain parses a certificate chain given as PEM blocks or as concatenated DER, leaf first.
// It returns an error wrapping errMalformed for more than 16 KiB, fewer than 2 or more than 8
// certificates, a non-certificate PEM block, trailing bytes or an unparsable certificate.
func ParseChain(b []byte) ([]*x509.Certificate, error) {
	if len(b) > maxChainBytes {
		return nil, malformed("chain is %d bytes, the limit is %d", len(b), maxChainBytes)
	}
	var ders [][]byte
	if t := bytes.TrimSpace(b); bytes.HasPrefix(t, []byte("-----BEGIN")) {
		rest := t
		for len(rest) > 0 {
			blk, r := pem.Decode(rest)
			if blk == nil {
				return nil, malformed("chain has bytes that are not PEM")
			}
			if blk.Type != "CERTIFICATE" {
				return nil, malformed("chain has a %q PEM block", blk.Type)
			}
			if len(ders) == maxChainCerts {
				return nil, malformed("chain has more than %d certificates", maxChainCerts)
			}
			ders = append(ders, blk.Bytes)
			rest = bytes.TrimSpace(r)
		}
	} else {
		// Concatenated DER: split on the outer SEQUENCE lengths ourselves so the count limit
		// holds before anything is parsed.
		rest := b
		for len(rest) > 0 {
			var raw asn1.RawValue
			r, err := asn1.Unmarshal(rest, &raw)
			if err != nil {
				return nil, malformed("chain is neither PEM nor DER certificates")
			}
			if len(ders) == maxChainCerts {
				return nil, malformed("chain has more than %d certificates", maxChainCerts)
			}
			ders = append(ders, rest[:len(rest)-len(r)])
			rest = r
		}
	}
	if len(ders) < minChainCerts {
		return nil, malformed("chain has %d certificates, at least %d are needed", len(ders), minChainCerts)
	}
	certs := make([]*x509.Certificate, len(ders))
	for i, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, malformed("certificate %d: %v", i, err)
		}
		certs[i] = c
	}
	return certs, nil
}

// chainFacts is what a verified chain established; it is cached by the chain's hash.
type chainFacts struct {
	root        Root
	hardwareID  string
	serials     []string
	subjects    []string
	leafKey     *ecdsa.PublicKey
	fwid        []byte // from the leaf's DICE extension; nil if it carries none
	notBefore   time.Time
	notAfter    time.Time // the earliest NotAfter of the verified path: the facts expire then
	ocspTargets []ocspTarget
	path        []*x509.Certificate // leaf first, root last
}

// ocspTarget is one non-root certificate of the verified path and its issuer.
type ocspTarget struct{ cert, issuer *x509.Certificate }

// trustAnchor is one root the verifier trusts and the name it reports.
type trustAnchor struct {
	cert *x509.Certificate
	root Root
}

// verifyChain checks validity periods against now, then the path leaf-first to one of anchors.
// It returns the facts, or the reason the chain fails (CC_CERT_EXPIRED, CC_CERT_NOT_YET_VALID,
// CC_CHAIN_UNTRUSTED, CC_EVIDENCE_MALFORMED for a leaf key that is not ECDSA P-384).
func verifyChain(certs []*x509.Certificate, anchors []trustAnchor, now time.Time) (*chainFacts, attest.Reason) {
	for _, c := range certs {
		if now.Before(c.NotBefore) {
			return nil, attest.ReasonCCCertNotYetValid
		}
		if now.After(c.NotAfter) {
			return nil, attest.ReasonCCCertExpired
		}
	}
	roots := x509.NewCertPool()
	for _, a := range anchors {
		roots.AddCert(a.cert)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	// x509.Verify checks names, signatures, CA constraints, key usages and validity against the
	// pinned roots; NVIDIA's leaf has no extended key usage, hence ExtKeyUsageAny. The presented
	// order must then be the verified path itself (as nvtrust requires), checked below.
	chains, err := certs[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		var inv x509.CertificateInvalidError
		if asCertInvalid(err, &inv) && inv.Reason == x509.Expired {
			// A root from the pool outside its validity.
			if now.Before(inv.Cert.NotBefore) {
				return nil, attest.ReasonCCCertNotYetValid
			}
			return nil, attest.ReasonCCCertExpired
		}
		return nil, attest.ReasonCCChainUntrusted
	}
	// Use the verified path that is the presented chain: every presented certificate must be in
	// it, in order, so a chain whose copy of the root differs from the pinned one (even only in
	// bytes the path does not depend on) fails, as it does in nvtrust.
	var path []*x509.Certificate
	for _, ch := range chains {
		if len(ch) < len(certs) {
			continue
		}
		same := true
		for i, c := range certs {
			same = same && ch[i].Equal(c)
		}
		if same {
			path = ch
			break
		}
	}
	if path == nil {
		return nil, attest.ReasonCCChainUntrusted
	}
	f := &chainFacts{notAfter: path[0].NotAfter, notBefore: path[0].NotBefore, path: path}
	top := path[len(path)-1]
	for _, a := range anchors {
		if bytes.Equal(a.cert.RawSubjectPublicKeyInfo, top.RawSubjectPublicKeyInfo) && bytes.Equal(a.cert.RawSubject, top.RawSubject) {
			f.root = a.root
			break
		}
	}
	if f.root == "" {
		return nil, attest.ReasonCCChainUntrusted
	}
	for i, c := range path {
		f.serials = append(f.serials, fmt.Sprintf("%X", c.SerialNumber))
		f.subjects = append(f.subjects, c.Subject.String())
		if c.NotAfter.Before(f.notAfter) {
			f.notAfter = c.NotAfter
		}
		if c.NotBefore.After(f.notBefore) {
			f.notBefore = c.NotBefore
		}
		if i+1 < len(path) {
			f.ocspTargets = append(f.ocspTargets, ocspTarget{cert: c, issuer: path[i+1]})
		}
	}
	k, ok := path[0].PublicKey.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P384() {
		return nil, attest.ReasonCCEvidenceMalformed
	}
	f.leafKey = k
	f.fwid = leafFWID(path[0])
	// The hardware identity is the key of the per-device certificate that issued the leaf
	// (NVIDIA's "GSP BROM" certificate): it is provisioned once per chip from fused secrets,
	// whereas the leaf is re-derived whenever the firmware (FWID) changes. See docs/attestation.md.
	sum := sha256.Sum256(path[1].RawSubjectPublicKeyInfo)
	f.hardwareID = hex.EncodeToString(sum[:])
	return f, ""
}

func asCertInvalid(err error, into *x509.CertificateInvalidError) bool {
	e, ok := err.(x509.CertificateInvalidError)
	if ok {
		*into = e
	}
	return ok
}

// diceFWID is the shape of the DICE extension NVIDIA's leaf carries: a version, a public key
// and the firmware identity (hash algorithm and digest) the leaf was derived for.
type diceFWID struct {
	Version int
	Key     asn1.RawValue
	FWID    struct {
		HashAlg asn1.ObjectIdentifier
		Digest  []byte
	}
}

// leafFWID returns the FWID digest of the leaf's DICE extension, nil when the leaf has none or
// it does not parse.
func leafFWID(c *x509.Certificate) []byte {
	for _, e := range c.Extensions {
		if !e.Id.Equal(oidDiceTcbInfo) {
			continue
		}
		var d diceFWID
		rest, err := asn1.Unmarshal(e.Value, &d)
		if err != nil || len(rest) != 0 || len(d.FWID.Digest) == 0 {
			return nil
		}
		return d.FWID.Digest
	}
	return nil
}

package nvidia

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/beevik/etree"
	"github.com/jonboulle/clockwork"
	dsig "github.com/russellhaering/goxmldsig"
)

// NVIDIA's reference integrity manifests (RIMs) are ISO/IEC 19770-2 SWID tags whose Payload
// lists, per measurement index (0-based; report block index-1), whether the index is checked
// ("active") and its alternative SHA-384 values (Hash0..HashN-1), signed with an enveloped
// XML-DSig signature (C14N 1.1, ECDSA-SHA384 with r‖s, the signer's chain in KeyInfo) that chains
// to NVIDIA's RIM root. One RIM covers the driver (Meta colloquialVersion "550.90.07"), another
// the VBIOS ("96.00.9F.00.01"); the report must match both. See docs/attestation.md.

const (
	maxRIMFileBytes  = 1 << 20
	maxRIMFiles      = 4096
	maxRIMIndex      = 255 // the SPDM block index is a byte
	maxRIMChainCerts = 8
)

// ErrRIM wraps every reason LoadRIMBundle rejects a directory or one of its files.
var ErrRIM = errors.New("nvidia: RIM bundle")

// RIMBundle holds reference measurements loaded from a local directory of NVIDIA RIMs.
type RIMBundle struct {
	driver map[string][]*rim // by lower-case driver version
	vbios  map[string][]*rim // by lower-case VBIOS version
	files  []string
}

// rim is one verified manifest.
type rim struct {
	file      string
	version   string
	notBefore time.Time // of the signing chain: the RIM counts only inside it
	notAfter  time.Time
	refs      map[int][][]byte // active measurement index (0-based) → alternative values
}

// Files returns the names of the RIM files the bundle holds, sorted.
func (b *RIMBundle) Files() []string { return append([]string(nil), b.files...) }

// LoadRIMBundle reads every *.swidtag and *.xml file in dir (not its subdirectories) and
// verifies each one's XML signature to NVIDIA's pinned RIM root at now() (nil: time.Now). It
// returns an error wrapping ErrRIM naming the first file that is unreadable, unsigned, signed
// by anything else, outside its signing chain's validity or not a measurement RIM, and for a
// directory without RIMs: an operator should notice a bad bundle rather than have the gateway
// silently check less.
func LoadRIMBundle(dir string, now func() time.Time) (*RIMBundle, error) {
	return LoadRIMBundleWithRoots(dir, now, []*x509.Certificate{nvidiaRIMRoot})
}

// LoadRIMBundleWithRoots is LoadRIMBundle trusting roots instead of NVIDIA's RIM root (tests,
// and RIMs an operator signs for its own hardware).
func LoadRIMBundleWithRoots(dir string, now func() time.Time, roots []*x509.Certificate) (*RIMBundle, error) {
	if now == nil {
		now = time.Now
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRIM, err)
	}
	b := &RIMBundle{driver: map[string][]*rim{}, vbios: map[string][]*rim{}}
	t := now()
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !(strings.HasSuffix(name, ".swidtag") || strings.HasSuffix(name, ".xml")) {
			continue
		}
		if len(b.files) == maxRIMFiles {
			return nil, fmt.Errorf("%w: more than %d RIM files in %s", ErrRIM, maxRIMFiles, dir)
		}
		data, err := readLimited(filepath.Join(dir, name), maxRIMFileBytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrRIM, name, err)
		}
		r, err := parseRIM(data, t, roots)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrRIM, name, err)
		}
		r.file = name
		key := strings.ToLower(r.version)
		if _, err := encodeVBIOS(key); err == nil {
			b.vbios[key] = append(b.vbios[key], r)
		} else {
			b.driver[key] = append(b.driver[key], r)
		}
		b.files = append(b.files, name)
	}
	if len(b.files) == 0 {
		return nil, fmt.Errorf("%w: no *.swidtag or *.xml RIM files in %s", ErrRIM, dir)
	}
	sort.Strings(b.files)
	return b, nil
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path) // #nosec G304 -- a file in the operator's RIM directory (a flag), read as such
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	buf := make([]byte, st.Size())
	if _, err := f.Read(buf); err != nil && st.Size() > 0 {
		return nil, err
	}
	return buf, nil
}

// parseRIM verifies data's enveloped signature and returns the manifest it signs. Only the
// element the signature verified is read (no signature wrapping).
func parseRIM(data []byte, now time.Time, roots []*x509.Certificate) (*rim, error) {
	doc := etree.NewDocument()
	doc.ReadSettings.PreserveCData = true
	if err := doc.ReadFromBytes(data); err != nil {
		return nil, fmt.Errorf("not XML: %v", err)
	}
	root := doc.Root()
	if root == nil || root.Tag != "SoftwareIdentity" {
		return nil, errors.New("not a SWID tag (no SoftwareIdentity root)")
	}
	sig := childNamed(root, "Signature")
	if sig == nil {
		return nil, errors.New("unsigned")
	}
	// The signer's chain from KeyInfo, verified to the given roots.
	var certs []*x509.Certificate
	if ki := childNamed(sig, "KeyInfo"); ki != nil {
		if xd := childNamed(ki, "X509Data"); xd != nil {
			for _, c := range xd.ChildElements() {
				if c.Tag != "X509Certificate" {
					continue
				}
				if len(certs) == maxRIMChainCerts {
					return nil, errors.New("too many certificates in KeyInfo")
				}
				der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(c.Text()), ""))
				if err != nil {
					return nil, errors.New("KeyInfo certificate is not base64")
				}
				cert, err := x509.ParseCertificate(der)
				if err != nil {
					return nil, fmt.Errorf("KeyInfo certificate: %v", err)
				}
				certs = append(certs, cert)
			}
		}
	}
	if len(certs) == 0 {
		return nil, errors.New("no signing certificate in KeyInfo")
	}
	pool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return nil, fmt.Errorf("signing certificate: %v", err)
	}
	r := &rim{notBefore: certs[0].NotBefore, notAfter: certs[0].NotAfter, refs: map[int][][]byte{}}
	for _, c := range chains[0] {
		r.notAfter = minTime(r.notAfter, c.NotAfter)
		if c.NotBefore.After(r.notBefore) {
			r.notBefore = c.NotBefore
		}
	}
	// XML-DSig ECDSA signature values are r‖s (RFC 6931); goxmldsig checks ASN.1 DER. The value
	// is outside SignedInfo and removed by the enveloped transform, so re-encoding it in place
	// changes nothing that is signed.
	if sv := childNamed(sig, "SignatureValue"); sv != nil {
		raw, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(sv.Text()), ""))
		if err != nil {
			return nil, errors.New("SignatureValue is not base64")
		}
		if len(raw) == spdmSignatureLen {
			der, err := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(raw[:48]), new(big.Int).SetBytes(raw[48:])})
			if err != nil {
				return nil, err
			}
			sv.SetText(base64.StdEncoding.EncodeToString(der))
		}
	}
	vctx := dsig.NewDefaultValidationContext(&dsig.MemoryX509CertificateStore{Roots: []*x509.Certificate{certs[0]}})
	vctx.Clock = dsig.NewFakeClock(clockwork.NewFakeClockAt(now))
	signed, err := vctx.Validate(root)
	if err != nil {
		return nil, fmt.Errorf("signature: %v", err)
	}
	meta := childNamed(signed, "Meta")
	if meta == nil {
		return nil, errors.New("no Meta element")
	}
	r.version = strings.TrimSpace(meta.SelectAttrValue("colloquialVersion", ""))
	if r.version == "" {
		return nil, errors.New("no colloquialVersion")
	}
	payload := childNamed(signed, "Payload")
	if payload == nil {
		return nil, errors.New("no Payload element")
	}
	for _, res := range payload.ChildElements() {
		if res.Tag != "Resource" || res.SelectAttrValue("type", "") != "Measurement" {
			continue
		}
		idx, err := strconv.Atoi(res.SelectAttrValue("index", ""))
		if err != nil || idx < 0 || idx >= maxRIMIndex {
			return nil, fmt.Errorf("measurement index %q", res.SelectAttrValue("index", ""))
		}
		if !strings.EqualFold(res.SelectAttrValue("active", ""), "true") {
			continue
		}
		n, err := strconv.Atoi(res.SelectAttrValue("alternatives", ""))
		if err != nil || n < 1 || n > 64 {
			return nil, fmt.Errorf("measurement %d: alternatives %q", idx, res.SelectAttrValue("alternatives", ""))
		}
		if _, dup := r.refs[idx]; dup {
			return nil, fmt.Errorf("measurement %d repeated", idx)
		}
		var alts [][]byte
		for i := range n {
			v := attrLocal(res, "Hash"+strconv.Itoa(i))
			h, err := hex.DecodeString(v)
			if err != nil || len(h) == 0 {
				return nil, fmt.Errorf("measurement %d: Hash%d", idx, i)
			}
			alts = append(alts, h)
		}
		r.refs[idx] = alts
	}
	if len(r.refs) == 0 {
		return nil, errors.New("no active measurements")
	}
	return r, nil
}

// childNamed returns el's first child element with local name tag, nil if none.
func childNamed(el *etree.Element, tag string) *etree.Element {
	for _, c := range el.ChildElements() {
		if c.Tag == tag {
			return c
		}
	}
	return nil
}

// attrLocal returns the value of el's attribute with local name key, whatever its prefix
// (NVIDIA writes ns2:Hash0 with ns2 bound to the SHA-384 URI).
func attrLocal(el *etree.Element, key string) string {
	for _, a := range el.Attr {
		if a.Key == key {
			return a.Value
		}
	}
	return ""
}

// check compares rep's measurement blocks with the bundle's RIMs for its driver and VBIOS
// versions, valid at now. checked is true when a driver and a VBIOS RIM were found (or one of
// them already proves a mismatch); mismatch is true when no matching pair accepts the report.
func (b *RIMBundle) check(rep *Report, now time.Time) (checked, mismatch bool) {
	if b == nil {
		return false, false
	}
	valid := func(rs []*rim) []*rim {
		var out []*rim
		for _, r := range rs {
			if !now.Before(r.notBefore) && !now.After(r.notAfter) {
				out = append(out, r)
			}
		}
		return out
	}
	drivers := valid(b.driver[strings.ToLower(rep.DriverVersion())])
	vbioses := valid(b.vbios[strings.ToLower(rep.VBIOSVersion())])
	blocks := map[int][]byte{}
	for _, m := range rep.Measurements {
		blocks[m.Index] = m.Value
	}
	matches := func(refs ...map[int][][]byte) bool {
		for _, ref := range refs {
			for idx, alts := range ref {
				v, ok := blocks[idx+1]
				if !ok {
					return false
				}
				found := false
				for _, a := range alts {
					found = found || bytes.Equal(a, v)
				}
				if !found {
					return false
				}
			}
		}
		return true
	}
	anyMatches := func(rs []*rim) bool {
		for _, r := range rs {
			if matches(r.refs) {
				return true
			}
		}
		return false
	}
	switch {
	case len(drivers) == 0 && len(vbioses) == 0:
		return false, false
	case len(drivers) == 0:
		// Only one side known: a mismatch there is certain; a match proves only half.
		return !anyMatches(vbioses), !anyMatches(vbioses)
	case len(vbioses) == 0:
		return !anyMatches(drivers), !anyMatches(drivers)
	}
	for _, d := range drivers {
		for _, v := range vbioses {
			if overlap(d.refs, v.refs) {
				continue // NVIDIA never lists an index in both; such a pair checks nothing
			}
			if matches(d.refs, v.refs) {
				return true, false
			}
		}
	}
	return true, true
}

func overlap(a, b map[int][][]byte) bool {
	for k := range a {
		if _, ok := b[k]; ok {
			return true
		}
	}
	return false
}

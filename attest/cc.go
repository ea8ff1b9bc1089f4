package attest

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
)

// ccNonceTag versions the confidential-computing nonce derivation.
const ccNonceTag = "gpugate/cc-nonce/v1"

// CCNonceBytes is the size of the nonce a GPU signs its SPDM measurement report over.
const CCNonceBytes = 32

// CCNonce returns the 32-byte nonce the GPU at NVML index must sign its confidential-computing
// measurement report over for a challenge:
//
//	SHA-256("gpugate/cc-nonce/v1" ‖ str(challengeID) ‖ bytes(nonce) ‖ bytes(publicKey) ‖ u32(index))
//
// It binds the report to the server's fresh challenge (no report made for another challenge
// verifies), to the device key that answers it (a report cannot be moved to another device) and
// to one GPU position (one GPU's report cannot stand in for its neighbour's). It cannot fail.
func CCNonce(challengeID string, nonce []byte, publicKey ed25519.PublicKey, index int) [CCNonceBytes]byte {
	b := make([]byte, 0, len(ccNonceTag)+len(challengeID)+len(nonce)+len(publicKey)+16)
	b = append(b, ccNonceTag...)
	b = appendStr(b, challengeID)
	b = appendBytes(b, nonce)
	b = appendBytes(b, publicKey)
	b = binary.BigEndian.AppendUint32(b, uint32(index)) // #nosec G115 -- a GPU position, 0..MaxGPUsPerHost-1 once verify checked it against the snapshot
	return sha256.Sum256(b)
}

// Reasons of confidential-computing evidence (attest/nvidia verifies it; the server applies the
// cross-GPU and cross-device rules). Each is shown to the owner on the GPU it concerns.
const (
	// ReasonCCEvidenceMalformed: the report or the certificate chain cannot be parsed, or breaks a
	// size limit.
	ReasonCCEvidenceMalformed Reason = "CC_EVIDENCE_MALFORMED"
	// ReasonCCNonceMismatch: the report was requested for another nonce (another challenge,
	// device key or GPU index).
	ReasonCCNonceMismatch Reason = "CC_NONCE_MISMATCH"
	// ReasonCCSignatureInvalid: the report's signature does not verify with the leaf key.
	ReasonCCSignatureInvalid Reason = "CC_SIGNATURE_INVALID"
	// ReasonCCChainUntrusted: the certificate chain does not verify to a trusted root.
	ReasonCCChainUntrusted Reason = "CC_CHAIN_UNTRUSTED"
	// ReasonCCCertExpired: a certificate of the chain expired.
	ReasonCCCertExpired Reason = "CC_CERT_EXPIRED"
	// ReasonCCCertNotYetValid: a certificate of the chain is not valid yet.
	ReasonCCCertNotYetValid Reason = "CC_CERT_NOT_YET_VALID"
	// ReasonCCCertRevoked: the revocation responder says a certificate of the chain is revoked.
	ReasonCCCertRevoked Reason = "CC_CERT_REVOKED"
	// ReasonCCIdentityMismatch: the chain belongs to another GPU than the report.
	ReasonCCIdentityMismatch Reason = "CC_IDENTITY_MISMATCH"
	// ReasonCCMeasurementMismatch: a measurement differs from the reference values.
	ReasonCCMeasurementMismatch Reason = "CC_MEASUREMENT_MISMATCH"
	// ReasonCCHardwareReused: one GPU's hardware identity was presented for two GPUs (of this
	// host or of two devices).
	ReasonCCHardwareReused Reason = "CC_HARDWARE_REUSED"
	// ReasonCCHardwareChanged: a GPU UUID that attested with one hardware identity now presents
	// another.
	ReasonCCHardwareChanged Reason = "CC_HARDWARE_CHANGED"
)

func init() {
	for r, text := range map[Reason]string{
		ReasonCCEvidenceMalformed:   "the GPU's confidential-computing evidence cannot be parsed or breaks a size limit",
		ReasonCCNonceMismatch:       "the GPU's attestation report was not made for this challenge, device key and GPU",
		ReasonCCSignatureInvalid:    "the GPU's attestation report is not signed by its certificate's key",
		ReasonCCChainUntrusted:      "the GPU's certificate chain does not end in a trusted root",
		ReasonCCCertExpired:         "a certificate of the GPU's chain has expired",
		ReasonCCCertNotYetValid:     "a certificate of the GPU's chain is not valid yet",
		ReasonCCCertRevoked:         "a certificate of the GPU's chain is revoked",
		ReasonCCIdentityMismatch:    "the GPU's certificate chain belongs to another GPU than its report",
		ReasonCCMeasurementMismatch: "the GPU's firmware measurements differ from NVIDIA's reference values",
		ReasonCCHardwareReused:      "one GPU's hardware identity was presented for another GPU",
		ReasonCCHardwareChanged:     "the GPU attested earlier with another hardware identity",
	} {
		reasonText[r] = text
	}
}

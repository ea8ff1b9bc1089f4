// Package attest is gpugate's device-attestation protocol in pure Go: the GPU snapshot and its
// canonical hash, the proof of work bound to a challenge and a device key, the signatures on
// every worker request, and the counterfeit rules with their reference table of GPU models.
//
// It is shared by the server (resolvers and db call it) and by the bundled worker, so it imports
// nothing from gpugate and nothing outside the standard library. Everything here is a pure
// function of its arguments: challenge storage, single use, expiry, replay caches and the
// cross-device rules (UUID_ON_ANOTHER_DEVICE, SERIAL_ON_ANOTHER_DEVICE) belong to the server,
// which gets the reason codes and the normalised identity keys from here.
//
// # Wire formats (all versioned; a change of any byte layout means a new version string)
//
// Snapshot canonical encoding, "gpugate/snapshot/v1" (see [Snapshot.Canonical]):
//
//	str(tag) str(driverVersion) str(nvmlVersion) i64(cudaDriverVersion)
//	u32(len gpus) { gpu }*                      gpus sorted by UUID, ties by their encoding
//	u8(0)
//
// where str and bytes are a u32 big-endian length followed by the bytes, integers are
// big-endian and fixed width, an optional bool is one byte (0 absent, 1 false, 2 true), and a
// gpu is str(uuid) str(name) u32(pciDeviceId) u32(pciVendorId) u32(pciSubsystemId) str(busId)
// u64(memoryTotalBytes) str(architecture) i64(computeMajor) i64(computeMinor) str(serial)
// str(boardPartNumber) str(vbiosVersion) u32(maxSmClockMhz) u32(maxMemClockMhz)
// u32(powerLimitMilliwatts) optbool(eccEnabled) optbool(migEnabled). Strings are hashed as
// encoding/json would transmit them (invalid UTF-8 bytes become U+FFFD), so the worker's hash of
// the snapshot it collected equals the server's hash of the JSON it received.
//
// The closing u8(0) is a remnant: v1 once ended in u8(0) for "no confidential-computing
// report" or u8(1) followed by the reports. The evidence now travels beside the snapshot, in
// the proof's evidence, bound to the challenge by [CCNonce] rather than by the snapshot hash,
// so every snapshot ends in u8(0) and hashes exactly as a snapshot without a report always
// did; no new version was needed. (Snapshots that carried a report are refused by
// [ParseSnapshot].)
//
// Proof of work, "gpugate/pow/v1" (see [ProofHash]):
//
//	SHA-256("gpugate/pow/v1" ‖ str(challengeID) ‖ bytes(nonce) ‖ bytes(publicKey) ‖ snapHash ‖ u64(counter))
//
// Confidential-computing nonce, "gpugate/cc-nonce/v1" (see [CCNonce]): the 32 bytes the GPU at
// NVML index i signs its SPDM measurement report over,
//
//	SHA-256("gpugate/cc-nonce/v1" ‖ str(challengeID) ‖ bytes(nonce) ‖ bytes(publicKey) ‖ u32(i))
//
// Proof transcript signed by the device key, "gpugate/proof/v1" (see [Transcript]): the same
// fields under its own tag. Request signatures, "gpugate/req/v1" (see [SignRequest]): a
// newline-separated message over the device id, the method, the request URI (escaped path and
// query string, as url.URL.RequestURI() gives them), the time, a nonce and the body hash:
//
//	gpugate/req/v1 \n device \n METHOD \n request-URI \n unix-seconds \n nonce-b64url \n hex(SHA-256(body))
//
// The tags keep every signature and every derived nonce usable in one place only.
package attest

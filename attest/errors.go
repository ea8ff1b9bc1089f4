package attest

import "errors"

// Sentinel errors. Every error returned by this package wraps exactly one of them (check with
// errors.Is), except the context errors Solve and Prove return when cancelled; the wrapping
// message says which field or check failed and is safe to show to the worker that sent the data.
var (
	// ErrMalformed: the input cannot be parsed or breaks a structural limit (size, length, range).
	ErrMalformed = errors.New("attest: malformed")
	// ErrBadSignature: an Ed25519 signature does not verify for the message and key given.
	ErrBadSignature = errors.New("attest: bad signature")
	// ErrInsufficientWork: the proof hash has fewer leading zero bits than the difficulty.
	ErrInsufficientWork = errors.New("attest: insufficient work")
	// ErrSnapshotMismatch: the snapshot hash a proof declares differs from the hash of the
	// snapshot it carries (the snapshot was edited after hashing).
	ErrSnapshotMismatch = errors.New("attest: snapshot does not match its hash")
	// ErrStale: a request timestamp lies outside the allowed clock window.
	ErrStale = errors.New("attest: stale request")
)

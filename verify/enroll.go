package verify

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/deviceauth"
	"github.com/gpugate/gpugate/guard"
)

// EnrollmentToken is a single-use token that enrolls one device for its owner.
type EnrollmentToken struct {
	Token     string // shown once; only its hash is stored
	ExpiresAt time.Time
}

// CreateEnrollmentToken issues an enrollment token for the user userID. It returns a
// *db.RateLimitError when the user is over EnrollmentTokenRate (nothing is written then), or
// the store's error.
func (s *Service) CreateEnrollmentToken(ctx context.Context, userID string) (*EnrollmentToken, error) {
	var out EnrollmentToken
	w := guard.Write{Op: "createEnrollmentToken", Actor: userID}
	if err := s.limits.allow(w.Op, "user:"+userID, s.cfg.rate(w.Op)); err != nil {
		s.guard.Refused(ctx, w, err)
		return nil, err
	}
	err := s.guard.Do(ctx, w, func(ctx context.Context) error {
		var err error
		out.Token, out.ExpiresAt, err = s.db.CreateEnrollmentToken(ctx, userID)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// EnrollRequest is an enrollment as the worker sends it (the fields of the enrollDevice input).
type EnrollRequest struct {
	Token     string
	PublicKey string  // base64 (standard or URL) Ed25519 public key
	Name      *string // nil: a random public name
	Region    string
	Hostname  *string
	Snapshot  string // the GPU snapshot as JSON (attest.Snapshot)
}

// Enrolled names the device and credential an enrollment created.
type Enrolled struct {
	DeviceID     string
	CredentialID string
}

// Enroll enrolls the device whose key signed the request (deviceauth.EnrollmentFrom(ctx)). It
// returns deviceauth.ErrUnauthenticated for an unsigned request or a bad signature, a
// db.ErrInvalid error for a malformed key or snapshot or one over the evidence budget, or the
// store's error (a bad or used token among them).
func (s *Service) Enroll(ctx context.Context, in EnrollRequest) (*Enrolled, error) {
	e, ok := deviceauth.EnrollmentFrom(ctx)
	if !ok {
		s.guard.Denied(ctx, guard.Write{Op: "enrollDevice", Actor: "anonymous"}, guard.ReasonUnauthenticated)
		return nil, fmt.Errorf("sign the enrollment request with the key being enrolled: %w", deviceauth.ErrUnauthenticated)
	}
	pub, err := db.ParsePublicKey(in.PublicKey)
	if err != nil {
		return nil, err
	}
	if err := e.VerifyEnrollment(pub); err != nil {
		s.guard.Refused(ctx, guard.Write{Op: "enrollDevice", Actor: "anonymous", Target: "key:" + db.Fingerprint(pub)[:16]}, err)
		return nil, err
	}
	snap, err := attest.ParseSnapshot([]byte(in.Snapshot))
	if err != nil {
		return nil, db.Invalidf("snapshot: %v", err)
	}
	if err := db.CheckSnapshotSize(len(in.Snapshot), len(snap.GPUs)); err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(e.RemoteAddr())
	var out Enrolled
	err = s.guard.Do(ctx, guard.Write{Op: "enrollDevice", Actor: "key:" + db.Fingerprint(pub)[:16]}, func(ctx context.Context) error {
		id, cred, err := s.db.Enroll(ctx, db.Enrollment{Token: in.Token, PublicKey: pub, Name: str(in.Name),
			Region: in.Region, Hostname: str(in.Hostname), IP: host, Snapshot: snap})
		out = Enrolled{DeviceID: id, CredentialID: cred}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// str returns *p, or "" for nil.
func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

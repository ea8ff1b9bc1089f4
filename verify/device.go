package verify

import (
	"context"
	"fmt"
	"net"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/deviceauth"
	"github.com/gpugate/gpugate/guard"
)

// deviceWrite runs one worker operation through the guard, as the device that signed the
// request. It returns deviceauth.ErrUnauthenticated for an unsigned request, a
// *db.RateLimitError when the device is over op's limit (nothing is written then), or the
// error of the address write or of fn.
func (s *Service) deviceWrite(ctx context.Context, op string, fn func(ctx context.Context, p deviceauth.Principal) error) error {
	p, ok := deviceauth.PrincipalFrom(ctx)
	if !ok { // the @device directive guarantees it; stay closed if a field forgot the directive
		return fmt.Errorf("sign the request with the device key: %w", deviceauth.ErrUnauthenticated)
	}
	w := guard.Write{Op: op, Actor: "device:" + p.DeviceID, Target: p.DeviceID}
	// The limit comes first: a limited request writes nothing, not even its address. It is kept
	// per device, not per key: an owner may add keys to a device (rotation), and each key must
	// not bring its own allowance.
	if err := s.limits.allow(op, p.DeviceID, s.cfg.rate(op)); err != nil {
		s.guard.Refused(ctx, w, err)
		return err
	}
	if err := s.recordAddress(ctx, p, w); err != nil {
		return err
	}
	return s.guard.Do(ctx, w, func(ctx context.Context) error { return fn(ctx, p) })
}

// recordAddress stores the request's source address for the device when it is new or was last
// written more than AddressRefresh ago, so the hot heartbeat path writes only on a change. A
// churn finding goes to the audit log for review; the request is never refused for it. It
// returns only the store's error.
func (s *Service) recordAddress(ctx context.Context, p deviceauth.Principal, w guard.Write) error {
	host, _, err := net.SplitHostPort(p.RemoteAddr)
	if err != nil || net.ParseIP(host) == nil {
		return nil
	}
	key := p.DeviceID + "|" + host
	if s.addresses.Contains(key) {
		return nil
	}
	f, err := s.db.RecordAddress(ctx, p.DeviceID, host, s.cfg.AddressChurn)
	if err != nil {
		return err
	}
	s.addresses.Add(key, struct{}{})
	if f != nil {
		// Recorded for review, not refused; the detail stays in the review finding.
		s.guard.Flagged(ctx, w, db.ReasonAddressChurn)
	}
	return nil
}

package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/Khan/genqlient/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/worker/client"
)

// ErrInsecureServer: --server is http:// on a host that is not loopback, without --insecure.
var ErrInsecureServer = errors.New("the gateway URL is not TLS")

// ErrChallengeRefused: the gateway asked for more proof of work than the worker's bounds allow
// (Options.MaxDifficulty, Options.MaxChallengeTTL). Not retried: the same gateway would ask again.
var ErrChallengeRefused = errors.New("challenge refused")

// FlaggedError is Run's error with Once when the gateway flagged the proof.
type FlaggedError struct {
	Reasons      []string // reason codes, see attest.Reason
	Verification string   // the device's public verification state now (deprecated by Level)
	Level        string   // the device's verification level now (FLAGGED)
}

func (e *FlaggedError) Error() string {
	parts := make([]string, len(e.Reasons))
	for i, r := range e.Reasons {
		parts[i] = r
		if d := attest.Reason(r).Description(); d != "" {
			parts[i] += " (" + d + ")"
		}
	}
	return "the gateway flagged the proof: " + strings.Join(parts, "; ")
}

// GatewayError is a refusal by the gateway that retrying will not change: a GraphQL error
// (UNAUTHENTICATED, FORBIDDEN, BAD_USER_INPUT, NOT_FOUND...) or an HTTP 4xx.
type GatewayError struct {
	Op      string // the operation, e.g. "enrollDevice"
	Status  int    // HTTP status, 200 for a GraphQL error in a normal response
	Code    string // extensions.code, if any
	Message string
	Hint    string // what the operator can do about it
}

func (e *GatewayError) Error() string {
	s := "gateway refused " + e.Op
	if e.Code != "" {
		s += " (" + e.Code + ")"
	} else if e.Status != 0 && e.Status != 200 {
		s += fmt.Sprintf(" (HTTP %d)", e.Status)
	}
	s += ": " + e.Message
	if e.Hint != "" {
		s += ": " + e.Hint
	}
	return s
}

// transientCodes are GraphQL error codes that describe the gateway's state, not the request:
// retrying later may succeed.
var transientCodes = map[string]bool{"INTERNAL": true, "TIMEOUT": true, "RATE_LIMITED": true, "UNAVAILABLE": true}

// gqlErrorOf extracts the HTTP status and first GraphQL error of a genqlient error.
func gqlErrorOf(err error) (status int, code, msg string, ok bool) {
	var list gqlerror.List
	var he *graphql.HTTPError
	switch {
	case errors.As(err, &he):
		status, list = he.StatusCode, he.Response.Errors
	case errors.As(err, &list):
		status = 200
	default:
		var one *gqlerror.Error
		if !errors.As(err, &one) {
			return 0, "", "", false
		}
		status, list = 200, gqlerror.List{one}
	}
	if len(list) > 0 && list[0] != nil {
		msg = list[0].Message
		code, _ = list[0].Extensions["code"].(string)
	}
	return status, code, msg, true
}

// retryable reports whether err is worth retrying after a pause: the gateway could not be
// reached (a redirect is not retried), answered 5xx or 429, reported a transient GraphQL error, the proof missed its
// challenge, or an NVML call failed (not a missing driver). ctx's own end is never retryable.
func retryable(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	if errors.Is(err, client.ErrRedirect) {
		return false // the gateway would redirect again
	}
	var missed *missedChallenge
	var nerr *nvmlError
	if errors.As(err, &missed) || errors.As(err, &nerr) {
		return true
	}
	if status, code, _, ok := gqlErrorOf(err); ok {
		return status >= 500 || status == 429 || transientCodes[code]
	}
	var ue *url.Error
	return errors.As(err, &ue)
}

// fatal turns a non-retryable gateway error into a GatewayError for op, with a hint; other
// errors are returned as they are.
func fatal(op string, err error) error {
	status, code, msg, ok := gqlErrorOf(err)
	if !ok {
		return err
	}
	ge := &GatewayError{Op: op, Status: status, Code: code, Message: msg}
	switch {
	case op == "enrollDevice" && code == "BAD_USER_INPUT" && strings.Contains(msg, "token"):
		ge.Hint = "ask the device's owner for a new enrollment token (createEnrollmentToken; valid 15 minutes, one use)"
	case code == "UNAUTHENTICATED" && op != "enrollDevice":
		ge.Hint = "the gateway does not accept this device key: it was revoked, the device was removed, or this " +
			"host's clock is more than a minute off; to enroll again, move the key file away and run with --enroll TOKEN"
	case code == "FORBIDDEN":
		ge.Hint = "the key file's deviceId does not belong to this key"
	}
	return ge
}

// missedChallenge: the proof of work outlasted the challenge; a new one is needed.
type missedChallenge struct{ id string }

func (e *missedChallenge) Error() string {
	return "challenge " + e.id + " expired before the proof could be submitted (slow proof of work, or this host's clock is off)"
}

// Backoff is the retry schedule when the gateway is unreachable: exponential from Initial,
// capped at Max, each delay drawn uniformly from [d/2, d] (jitter, so a fleet restarted
// together does not retry in lockstep).
type Backoff struct {
	Initial, Max time.Duration
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = time.Second
	}
	if b.Max <= 0 {
		b.Max = 2 * time.Minute
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	return b
}

// MaxRetryAfter is the longest Retry-After the worker honours: a longer one (or a date further
// away) counts as this long, so that a broken or hostile gateway cannot park its workers for
// days. With the jitter added to it the pause is at most 1.5 times this.
const MaxRetryAfter = 5 * time.Minute

// DelayAfter is the pause before retry number attempt when the gateway's last answer asked for
// retryAfter (0: it did not): the larger of Delay(attempt) and retryAfter (capped at
// MaxRetryAfter) plus a jitter drawn uniformly from [0, retryAfter/2]. The jitter keeps the
// workers that received one Retry-After together (an overloaded gateway tells them all the same
// number) from coming back in the same instant; they never come back before it.
func (b Backoff) DelayAfter(attempt int, retryAfter time.Duration) time.Duration {
	d := b.Delay(attempt)
	if retryAfter <= 0 {
		return d
	}
	retryAfter = min(retryAfter, MaxRetryAfter)
	return max(d, retryAfter+rand.N(retryAfter/2+1)) // #nosec G404 -- jitter, as in Delay
}

// Delay returns the pause before retry number attempt (0 for the first retry).
func (b Backoff) Delay(attempt int) time.Duration {
	b = b.withDefaults()
	d := b.Initial
	for i := 0; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	half := d / 2
	return half + rand.N(d-half+1) // #nosec G404 -- retry jitter spreads workers apart; nothing to predict or protect
}

// sleep waits d or until ctx ends; it reports whether the full pause elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// retryHint carries the Retry-After of the last answer to one attempt's requests from the
// transport (retryAfterTransport) back to the retry loop, through the request context.
type retryHint struct{ after atomic.Int64 } // nanoseconds; 0: no Retry-After seen

type retryHintKey struct{}

// withRetryHint returns ctx carrying a fresh hint for one attempt.
func withRetryHint(ctx context.Context) (context.Context, *retryHint) {
	h := &retryHint{}
	return context.WithValue(ctx, retryHintKey{}, h), h
}

// RetryAfter returns the pause the gateway's last answer asked for, 0 if none.
func (h *retryHint) RetryAfter() time.Duration { return time.Duration(h.after.Load()) }

// retryAfterTransport records the Retry-After header of the gateway's answers (a 503 from an
// overloaded gateway or a proxy in front of it, a 429) in the request context's retryHint.
type retryAfterTransport struct{ base http.RoundTripper }

func (t retryAfterTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(r)
	if err != nil || resp.StatusCode < 400 {
		return resp, err
	}
	if h, ok := r.Context().Value(retryHintKey{}).(*retryHint); ok {
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			h.after.Store(int64(d))
		}
	}
	return resp, err
}

// parseRetryAfter reads a Retry-After value (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.
// ok is false for an absent or unreadable value; a date in the past is a pause of 0. The
// result is not capped (DelayAfter caps it).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

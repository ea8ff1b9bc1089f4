package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/deviceauth"
	"github.com/gpugate/gpugate/guard"
	"github.com/gpugate/gpugate/oidc"
)

// Error codes in extensions.code.
const (
	CodeBadUserInput    = "BAD_USER_INPUT"
	CodeUnauthenticated = "UNAUTHENTICATED"
	CodeForbidden       = "FORBIDDEN"
	CodeNotFound        = "NOT_FOUND"
	CodeConflict        = "CONFLICT"
	CodeTimeout         = "TIMEOUT"
	CodeInternal        = "INTERNAL"
	CodeLimit           = "QUERY_LIMIT"
	CodeRateLimited     = "RATE_LIMITED" // extensions.retryAfterSeconds (and HTTP Retry-After) say when to retry
	CodeDisabled        = "DISABLED"     // an operator switched the write's class off; the message carries the reason

	CodeIntrospectionDisabled = "INTROSPECTION_DISABLED"
	CodeOverloaded            = "OVERLOADED"         // HTTP 503 + Retry-After: too many operations executing
	CodeResponseTooLarge      = "RESPONSE_TOO_LARGE" // the response exceeds the response size cap
	// CodeUnavailable: the database could not be reached or dropped the connection (a restart, a
	// crash, a failover); extensions.retryAfterSeconds (and HTTP Retry-After) say when to retry.
	// docs/resilience.md lists which mutations are safe to retry.
	CodeUnavailable = "UNAVAILABLE"
)

// unavailableRetryAfter is the retry hint of UNAVAILABLE: a restarted PostgreSQL takes a few
// seconds, and the gateway reconnects at the first request after it is back.
const unavailableRetryAfter = 1

// presenter is the one place errors become what clients see: known sentinels keep their
// client-safe message and get a code; everything else is masked ("internal error" + request id)
// and logged in full for the operator.
type presenter struct {
	log         *slog.Logger
	suggestions bool
}

var didYouMean = regexp.MustCompile(`\s*Did you mean .*$`)

func (p presenter) present(ctx context.Context, err error) *gqlerror.Error {
	gerr := graphql.DefaultErrorPresenter(ctx, err)
	if gerr == nil { // never nil (gqlgen #2735)
		gerr = gqlerror.Errorf("internal error")
	}
	if gerr.Err == nil {
		return p.protocol(gerr)
	}
	cause := gerr.Err
	var clientErr *db.Error
	var limited *db.RateLimitError
	var disabled *guard.DisabledError
	switch {
	case errors.As(cause, &limited):
		out := withCode(gerr, CodeRateLimited, limited.Msg)
		out.Extensions["retryAfterSeconds"] = limited.RetryAfterSeconds()
		noteRetryAfter(ctx, limited.RetryAfterSeconds())
		return out
	case errors.As(cause, &disabled):
		return withCode(gerr, CodeDisabled, disabled.Error())
	case errors.As(cause, &clientErr) && clientErr.Kind != nil:
		return withCode(gerr, codeOf(clientErr.Kind), clientErr.Msg)
	case errors.Is(cause, db.ErrInvalid):
		return withCode(gerr, CodeBadUserInput, "invalid input")
	case errors.Is(cause, db.ErrNotFound):
		return withCode(gerr, CodeNotFound, "not found")
	case errors.Is(cause, db.ErrConflict):
		return withCode(gerr, CodeConflict, "conflict")
	case errors.Is(cause, db.ErrForbidden):
		return withCode(gerr, CodeForbidden, "forbidden")
	case errors.Is(cause, oidc.ErrUnauthenticated):
		return withCode(gerr, CodeUnauthenticated, "sign in with a valid access token")
	case errors.Is(cause, deviceauth.ErrUnauthenticated):
		msg := "sign the request with the device key"
		var refusal interface{ Unwrap() error }
		if errors.As(cause, &refusal) && refusal.Unwrap() == deviceauth.ErrUnauthenticated {
			msg = cause.Error()
		}
		return withCode(gerr, CodeUnauthenticated, msg)
	case errors.Is(cause, errStopped) || errors.Is(cause, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return withCode(gerr, CodeTimeout, "the request exceeded its time limit")
	case db.DatabaseUnavailable(cause):
		p.log.LogAttrs(ctx, slog.LevelWarn, "database unavailable", slog.String("path", gerr.Path.String()), slog.String("err", cause.Error()))
		out := withCode(gerr, CodeUnavailable, db.ErrDatabaseUnavailable.Error())
		out.Extensions["retryAfterSeconds"] = unavailableRetryAfter
		noteRetryAfter(ctx, unavailableRetryAfter)
		return out
	}
	id := RequestID(ctx)
	p.log.LogAttrs(ctx, slog.LevelError, "internal error", slog.String("path", gerr.Path.String()), slog.String("err", cause.Error()))
	return withCode(gerr, CodeInternal, fmt.Sprintf("internal error (request id %s)", id))
}

// protocol handles parse, validation and limit errors: their messages are about the document,
// so they pass through, minus suggestions outside dev mode.
func (p presenter) protocol(gerr *gqlerror.Error) *gqlerror.Error {
	if !p.suggestions {
		gerr.Message = didYouMean.ReplaceAllString(gerr.Message, "")
	}
	if gerr.Rule == "ValuesOfCorrectType" || isVariableError(gerr) {
		errcode.Set(gerr, CodeBadUserInput)
	}
	if gerr.Extensions == nil || gerr.Extensions["code"] == nil {
		errcode.Set(gerr, errcode.ValidationFailed)
	}
	return gerr
}

// isVariableError says whether gqlparser rejected a variable's value (its path starts at
// "variable").
func isVariableError(gerr *gqlerror.Error) bool {
	if len(gerr.Path) == 0 {
		return false
	}
	name, ok := gerr.Path[0].(ast.PathName)
	return ok && name == "variable"
}

func codeOf(kind error) string {
	switch {
	case errors.Is(kind, db.ErrInvalid):
		return CodeBadUserInput
	case errors.Is(kind, db.ErrNotFound):
		return CodeNotFound
	case errors.Is(kind, db.ErrConflict):
		return CodeConflict
	case errors.Is(kind, db.ErrForbidden):
		return CodeForbidden
	}
	return CodeInternal
}

func withCode(gerr *gqlerror.Error, code, msg string) *gqlerror.Error {
	out := &gqlerror.Error{Message: msg, Path: gerr.Path, Locations: gerr.Locations, Err: gerr.Err}
	errcode.Set(out, code)
	return out
}

func (p presenter) recover(ctx context.Context, v any) error {
	p.log.LogAttrs(ctx, slog.LevelError, "resolver panic", slog.String("panic", fmt.Sprint(v)))
	return errors.New("panic in resolver") // masked as internal by present
}

// retryHint carries the longest retry-after of a request's RATE_LIMITED errors to its HTTP
// response (Retry-After), so clients and proxies that read only headers back off too.
type retryHint struct {
	mu   sync.Mutex
	secs int
}

type retryHintKey struct{}

func noteRetryAfter(ctx context.Context, secs int) {
	if h, ok := ctx.Value(retryHintKey{}).(*retryHint); ok {
		h.mu.Lock()
		h.secs = max(h.secs, secs)
		h.mu.Unlock()
	}
}

// retryAfterHeader sets Retry-After on a response whose operation was rate limited.
func retryAfterHeader(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := &retryHint{}
		next.ServeHTTP(&retryWriter{ResponseWriter: w, hint: h}, r.WithContext(context.WithValue(r.Context(), retryHintKey{}, h)))
	})
}

type retryWriter struct {
	http.ResponseWriter
	hint  *retryHint
	wrote bool
}

func (w *retryWriter) WriteHeader(code int) {
	if !w.wrote {
		w.wrote = true
		w.hint.mu.Lock()
		if w.hint.secs > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(w.hint.secs))
		}
		w.hint.mu.Unlock()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *retryWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *retryWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

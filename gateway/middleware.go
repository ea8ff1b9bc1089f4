package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/deviceauth"
	"github.com/gpugate/gpugate/guard"
	"github.com/gpugate/gpugate/oidc"
)

type requestIDKey struct{}

// bodyKey holds the request body graphqlOnly read, for the middleware after it.
type bodyKey struct{}

// RequestID returns the id of the request ctx belongs to, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._-]{8,64}$`)

// requestID tags every request with an id: the caller's X-Request-Id when it is a plausible
// token (so a trace can cross a proxy), else a random one. It is echoed in the response, and
// the audit log records it with the peer's address and user agent (guard.WithRequest).
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !validRequestID.MatchString(id) {
			var b [12]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-Id", id)
		ctx := context.WithValue(r.Context(), requestIDKey{}, id)
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		ctx = guard.WithRequest(ctx, guard.RequestInfo{ID: id, ClientAddress: host, UserAgent: r.UserAgent()})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += n
	return n, err
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// accessLog writes one structured line per request.
func accessLog(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", rec.status), slog.Int("bytes", rec.bytes),
			slog.Duration("duration", time.Since(start)), slog.String("remote", r.RemoteAddr))
	})
}

// recoverPanics turns a panic outside gqlgen's own recovery into a masked 500 and a log line.
func recoverPanics(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.ErrorContext(r.Context(), "panic", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				writeError(w, r, http.StatusInternalServerError, "INTERNAL", "internal error")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// deadline bounds every request; the context reaches every SQL statement, which PostgreSQL
// cancels when it expires.
func deadline(d time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// graphqlOnly reads a POST body up to max bytes before gqlgen sees it (gqlgen reads bodies
// uncapped) and refuses batched operations, each with a GraphQL-shaped error.
func graphqlOnly(max int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodOptions:
			r.Body = http.MaxBytesReader(w, r.Body, 0) // these carry no body
			next.ServeHTTP(w, r)
			return
		case http.MethodPost:
		default:
			w.Header().Set("Allow", "GET, POST, OPTIONS")
			writeError(w, r, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "use POST (or GET for queries)")
			return
		}
		if r.ContentLength > max {
			writeError(w, r, http.StatusRequestEntityTooLarge, "REQUEST_TOO_LARGE",
				fmt.Sprintf("request body exceeds %d bytes", max))
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				writeError(w, r, http.StatusRequestEntityTooLarge, "REQUEST_TOO_LARGE",
					fmt.Sprintf("request body exceeds %d bytes", max))
				return
			}
			writeError(w, r, http.StatusBadRequest, "BAD_REQUEST", "could not read request body")
			return
		}
		if trimmed := bytes.TrimLeft(body, " \t\r\n"); len(trimmed) > 0 && trimmed[0] == '[' {
			writeError(w, r, http.StatusBadRequest, "BATCHING_NOT_SUPPORTED",
				"batched operations are not supported: send one operation per request")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), bodyKey{}, body)))
	})
}

func writeError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	noteErrorCode(r.Context(), code) // the request metrics' code (observe.go)
	writeJSON(w, status, map[string]any{"errors": []map[string]any{{
		"message":    msg,
		"extensions": map[string]any{"code": code, "requestId": RequestID(r.Context())},
	}}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func readyReason(err error) string {
	if errors.Is(err, db.ErrMigrationsPending) {
		return "database migrations pending"
	}
	return "database unreachable"
}

// requestIDHandler adds the request id to every record logged with a request's context.
type requestIDHandler struct{ slog.Handler }

func (h requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if id := RequestID(ctx); id != "" {
		r.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, r)
}

func (h requestIDHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return requestIDHandler{h.Handler.WithAttrs(attrs)}
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	return requestIDHandler{h.Handler.WithGroup(name)}
}

// rejectToken returns the handler answering a request whose Authorization header is present but
// not a valid token: it is an error, never an anonymous request. Lookup failures go to log.
func rejectToken(log *slog.Logger) func(w http.ResponseWriter, r *http.Request, err error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		rejectTokenWith(log, w, r, err)
	}
}

func rejectTokenWith(log *slog.Logger, w http.ResponseWriter, r *http.Request, err error) {
	w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	msg := "invalid access token"
	switch {
	case errors.Is(err, oidc.ErrProviderUnavailable):
		// The issuer's keys could not be fetched: not the token's fault, and the client must not
		// throw a valid token away.
		log.WarnContext(r.Context(), "identity provider unavailable", "err", err)
		w.Header().Set("Retry-After", "5")
		writeError(w, r, http.StatusServiceUnavailable, CodeInternal, "the identity provider is unavailable, retry later")
		return
	case errors.Is(err, oidc.ErrUnauthenticated), errors.Is(err, deviceauth.ErrUnauthenticated):
		msg = err.Error() // these packages' messages are written for clients
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(r.Context().Err(), context.DeadlineExceeded):
		// The key lookup waited past the request's deadline (a slow or locked database).
		log.WarnContext(r.Context(), "authentication timed out", "err", err)
		w.Header().Set("Retry-After", strconv.Itoa(unavailableRetryAfter))
		writeError(w, r, http.StatusServiceUnavailable, CodeTimeout, "the request exceeded its time limit")
		return
	case db.DatabaseUnavailable(err): // the key lookup could not reach the database
		log.WarnContext(r.Context(), "authentication failed: database unavailable", "err", err)
		w.Header().Set("Retry-After", strconv.Itoa(unavailableRetryAfter))
		writeError(w, r, http.StatusServiceUnavailable, CodeUnavailable, "authentication is unavailable, retry later")
		return
	default: // a lookup failed: not the caller's fault
		log.ErrorContext(r.Context(), "authentication failed", "err", err)
		writeError(w, r, http.StatusServiceUnavailable, CodeInternal, "authentication is unavailable, retry later")
		return
	}
	writeError(w, r, http.StatusUnauthorized, CodeUnauthenticated, msg)
}

package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"net/http"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/gpugate/gpugate/attest"
)

// publicCache is a micro-cache for the anonymous explorer: the response to an identical
// anonymous query (same bytes) is reused for at most ttl. Explorer traffic is anonymous, read
// only and bursty, and its answers are public to everyone alike, so a second-long cache trades a
// second of staleness for not repeating the same work thousands of times. Only responses the
// executor marked cacheable are stored: a query (never a mutation), by an anonymous caller, that
// completed without errors.
type publicCache struct {
	ttl     time.Duration
	entries *expirable.LRU[[32]byte, []byte]
}

const maxCachedBody = 256 << 10

func newPublicCache(ttl time.Duration) *publicCache {
	if ttl <= 0 {
		return nil
	}
	return &publicCache{ttl: ttl, entries: expirable.NewLRU[[32]byte, []byte](4096, nil, ttl)}
}

type cacheMarkKey struct{}

// cacheMark is set by the executor when the operation may be cached.
type cacheMark struct {
	mu        sync.Mutex
	cacheable bool
}

// anonymous reports whether a request carries no credential of any kind.
func anonymous(r *http.Request) bool {
	return r.Header.Get("Authorization") == "" && r.Header.Get(attest.SignatureHeader) == ""
}

// middleware serves hits and records cacheable misses. body is the request body already read by
// graphqlOnly (nil for GET, whose URL is the key).
func (c *publicCache) middleware(next http.Handler) http.Handler {
	if c == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := r.Context().Value(bodyKey{}).([]byte)
		if !anonymous(r) || (r.Method != http.MethodPost && r.Method != http.MethodGet) {
			next.ServeHTTP(w, r)
			return
		}
		h := sha256.New()
		h.Write([]byte(r.Method))
		h.Write([]byte{0})
		h.Write([]byte(r.URL.RawQuery))
		h.Write([]byte{0})
		h.Write(body)
		var key [32]byte
		h.Sum(key[:0])
		if hit, ok := c.entries.Get(key); ok {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Cache", "hit")
			_, _ = w.Write(hit)
			return
		}
		mark := &cacheMark{}
		rec := &captureWriter{statusRecorder: statusRecorder{ResponseWriter: w}}
		next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), cacheMarkKey{}, mark)))
		mark.mu.Lock()
		ok := mark.cacheable
		mark.mu.Unlock()
		if ok && rec.status == http.StatusOK && !rec.overflow {
			c.entries.Add(key, bytes.Clone(rec.buf.Bytes()))
		}
	})
}

// markCacheable is an operation middleware: a query without errors, run for a request that
// reached the cache middleware (anonymous), is marked cacheable.
func markCacheable(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	mark, _ := ctx.Value(cacheMarkKey{}).(*cacheMark)
	oc := graphql.GetOperationContext(ctx)
	if mark == nil || oc.Operation == nil || oc.Operation.Operation != ast.Query {
		return next(ctx)
	}
	handler := next(ctx)
	first := true
	return func(ctx context.Context) *graphql.Response {
		resp := handler(ctx)
		if first && resp != nil {
			first = false
			mark.mu.Lock()
			defer mark.mu.Unlock()
			mark.cacheable = len(resp.Errors) == 0
		}
		return resp
	}
}

// captureWriter records the status (statusRecorder) and keeps a copy of the body, up to
// maxCachedBody.
type captureWriter struct {
	statusRecorder
	buf      bytes.Buffer
	overflow bool
}

func (c *captureWriter) Write(b []byte) (int, error) {
	if c.buf.Len()+len(b) > maxCachedBody {
		c.overflow = true
	} else if !c.overflow {
		c.buf.Write(b)
	}
	return c.statusRecorder.Write(b)
}

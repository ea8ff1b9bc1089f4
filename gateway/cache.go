package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/lexer"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/metrics"
)

// publicCache is a micro-cache for the anonymous explorer: the response to an identical
// anonymous query is reused for at most ttl. Explorer traffic is anonymous, read only and bursty,
// and its answers are public to everyone alike, so a second-long cache trades a second of
// staleness for not repeating the same work thousands of times. Only responses the executor
// marked cacheable are stored: a query (never a mutation), by an anonymous caller, that completed
// without errors.
//
// The cache is bounded by the total bytes it holds (not by entries: 4,096 entries of up to
// 256 KiB would be 1 GiB against the process's 80 MiB soft memory limit), and its key is the
// document's token stream (whitespace, commas and comments dropped), the canonical JSON of the
// variables and the operation name, so formatting variants of one query share one entry instead
// of each costing an execution and a slot.
type publicCache struct {
	ttl      time.Duration
	maxBytes int64
	now      func() time.Time

	mu      sync.Mutex
	entries *simplelru.LRU[[32]byte, cachedResponse]
	bytes   int64

	metrics *metrics.Metrics // counts hits and misses; nil counts nothing
}

type cachedResponse struct {
	body    []byte
	expires time.Time
	op      string // the operation's metrics label, so a hit is counted as the operation it answers
}

// maxCachedBody is the largest response kept (further capped at a quarter of the byte budget).
const maxCachedBody = 256 << 10

// newPublicCache returns a cache keeping responses for ttl within maxBytes, or nil (no cache,
// which middleware accepts) when either is not positive.
func newPublicCache(ttl time.Duration, maxBytes int64) *publicCache {
	if ttl <= 0 || maxBytes <= 0 {
		return nil
	}
	c := &publicCache{ttl: ttl, maxBytes: maxBytes, now: time.Now}
	// The entry count is not the bound (bytes are); simplelru needs one, so use one it never reaches.
	c.entries, _ = simplelru.NewLRU[[32]byte, cachedResponse](1<<20, func(_ [32]byte, v cachedResponse) {
		c.bytes -= int64(len(v.body))
	})
	return c
}

func (c *publicCache) get(key [32]byte) (cachedResponse, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.entries.Get(key)
	if !ok {
		return cachedResponse{}, false
	}
	if !c.now().Before(v.expires) {
		c.entries.Remove(key)
		return cachedResponse{}, false
	}
	return v, true
}

func (c *publicCache) add(key [32]byte, body []byte, op string) {
	if int64(len(body)) > c.entryLimit() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries.Remove(key)
	c.entries.Add(key, cachedResponse{body: body, expires: c.now().Add(c.ttl), op: op})
	c.bytes += int64(len(body))
	for c.bytes > c.maxBytes {
		if _, _, ok := c.entries.RemoveOldest(); !ok {
			break
		}
	}
}

func (c *publicCache) entryLimit() int64 { return min(maxCachedBody, c.maxBytes/4) }

// cacheKey returns the normalised key of a GraphQL request, or false when the request cannot be
// keyed (malformed JSON or document: gqlgen answers those, uncached).
func cacheKey(r *http.Request, body []byte) ([32]byte, bool) {
	var p struct {
		Query         string          `json:"query"`
		OperationName string          `json:"operationName"`
		Variables     json.RawMessage `json:"variables"`
		Extensions    json.RawMessage `json:"extensions"`
	}
	if r.Method == http.MethodGet {
		q := r.URL.Query()
		p.Query, p.OperationName = q.Get("query"), q.Get("operationName")
		p.Variables, p.Extensions = json.RawMessage(q.Get("variables")), json.RawMessage(q.Get("extensions"))
	} else if err := json.Unmarshal(body, &p); err != nil {
		return [32]byte{}, false
	}
	h := sha256.New()
	field := func(kind byte, v string) {
		var n [9]byte
		n[0] = kind
		binary.BigEndian.PutUint64(n[1:], uint64(len(v)))
		h.Write(n[:])
		h.Write([]byte(v))
	}
	lex := lexer.New(&ast.Source{Input: p.Query})
	for {
		tok, err := lex.ReadToken()
		if err != nil {
			return [32]byte{}, false
		}
		if tok.Kind == lexer.EOF {
			break
		}
		if tok.Kind != lexer.Comment {
			field(byte(tok.Kind), tok.Value) // #nosec G115 -- gqlparser's token kinds are a small enum (under 30), far below 0xff
		}
	}
	field(0xff, p.OperationName)
	for _, raw := range []json.RawMessage{p.Variables, p.Extensions} {
		canon, ok := canonicalJSON(raw)
		if !ok {
			return [32]byte{}, false
		}
		field(0xfe, canon)
	}
	var key [32]byte
	h.Sum(key[:0])
	return key, true
}

// canonicalJSON re-encodes a JSON value with sorted object keys and no insignificant whitespace
// (numbers keep their text); absent and null are the same.
func canonicalJSON(raw json.RawMessage) (string, bool) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return "null", true
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil || d.More() {
		return "", false
	}
	out, err := json.Marshal(v)
	return string(out), err == nil
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
		key, ok := cacheKey(r, body)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		hit, ok := c.get(key)
		c.metrics.ObserveCache(ok)
		if ok {
			if info := infoFrom(r.Context()); info != nil {
				info.set(hit.op, string(ast.Query))
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Cache", "hit")
			_, _ = w.Write(hit.body)
			return
		}
		mark := &cacheMark{}
		rec := &captureWriter{statusRecorder: statusRecorder{ResponseWriter: w}, limit: int(c.entryLimit())}
		next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), cacheMarkKey{}, mark)))
		mark.mu.Lock()
		ok = mark.cacheable
		mark.mu.Unlock()
		if ok && rec.status == http.StatusOK && !rec.overflow {
			op := metrics.OpCached
			if info := infoFrom(r.Context()); info != nil {
				info.mu.Lock()
				op = info.op
				info.mu.Unlock()
			}
			c.add(key, bytes.Clone(rec.buf.Bytes()), op)
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

// captureWriter records the status (statusRecorder) and keeps a copy of the body, up to limit
// bytes.
type captureWriter struct {
	statusRecorder
	buf      bytes.Buffer
	limit    int
	overflow bool
}

func (c *captureWriter) Write(b []byte) (int, error) {
	if c.buf.Len()+len(b) > c.limit {
		c.overflow = true
	} else if !c.overflow {
		c.buf.Write(b)
	}
	return c.statusRecorder.Write(b)
}

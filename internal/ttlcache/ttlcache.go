// Package ttlcache is a size-bounded LRU whose entries expire after a fixed lifetime, without a
// background goroutine: an expired entry is dropped when it is next looked up (or evicted by
// newer entries). hashicorp's expirable.LRU starts a goroutine per cache that lives as long as
// the process, so every gateway.New leaked several; this cache leaks nothing.
package ttlcache

import (
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

type entry[V any] struct {
	value   V
	expires time.Time
}

// LRU holds at most size entries, each for at most ttl. It is safe for concurrent use.
type LRU[K comparable, V any] struct {
	ttl   time.Duration
	now   func() time.Time
	cache *lru.Cache[K, entry[V]]
}

// New returns a cache of at most size entries (size < 1 is treated as 1), each kept at most ttl.
func New[K comparable, V any](size int, ttl time.Duration) *LRU[K, V] {
	c, err := lru.New[K, entry[V]](max(size, 1))
	if err != nil { // only for size < 1, excluded above
		panic(err)
	}
	return &LRU[K, V]{ttl: ttl, now: time.Now, cache: c}
}

// Add stores value under key for the cache's lifetime, evicting the least recently used entry
// when the cache is full.
func (c *LRU[K, V]) Add(key K, value V) {
	c.cache.Add(key, entry[V]{value: value, expires: c.now().Add(c.ttl)})
}

// Get returns the value of key and true, or the zero value and false when the key is absent or
// expired (an expired entry is removed).
func (c *LRU[K, V]) Get(key K) (V, bool) {
	e, ok := c.cache.Get(key)
	if !ok {
		var zero V
		return zero, false
	}
	if !c.now().Before(e.expires) {
		c.cache.Remove(key)
		var zero V
		return zero, false
	}
	return e.value, true
}

// Contains reports whether key holds an unexpired value, without updating its recency.
func (c *LRU[K, V]) Contains(key K) bool {
	e, ok := c.cache.Peek(key)
	return ok && c.now().Before(e.expires)
}

// Remove drops key, if present.
func (c *LRU[K, V]) Remove(key K) { c.cache.Remove(key) }

// Len returns the number of entries held, expired ones not yet dropped included.
func (c *LRU[K, V]) Len() int { return c.cache.Len() }

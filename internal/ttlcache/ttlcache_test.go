package ttlcache

import (
	"runtime"
	"testing"
	"time"
)

func TestExpiryIsLazyAndExact(t *testing.T) {
	now := time.Unix(1000, 0)
	c := New[string, int](2, time.Second)
	c.now = func() time.Time { return now }
	c.Add("a", 1)
	if v, ok := c.Get("a"); !ok || v != 1 {
		t.Fatalf("fresh entry: %v %v", v, ok)
	}
	now = now.Add(999 * time.Millisecond)
	if !c.Contains("a") {
		t.Fatal("entry expired early")
	}
	now = now.Add(time.Millisecond)
	if c.Contains("a") {
		t.Fatal("Contains reports an expired entry")
	}
	if _, ok := c.Get("a"); ok {
		t.Fatal("Get returned an expired entry")
	}
	if c.Len() != 0 {
		t.Fatalf("the expired entry was not dropped: len %d", c.Len())
	}
	c.Add("a", 1)
	c.Add("b", 2)
	c.Add("c", 3)
	if c.Contains("a") || !c.Contains("c") || c.Len() != 2 {
		t.Fatalf("size bound: len %d", c.Len())
	}
	c.Remove("c")
	if c.Contains("c") {
		t.Fatal("Remove")
	}
}

func TestNoGoroutinePerCache(t *testing.T) {
	before := runtime.NumGoroutine()
	caches := make([]*LRU[int, int], 200)
	for i := range caches {
		caches[i] = New[int, int](10, time.Minute)
		caches[i].Add(i, i)
	}
	if after := runtime.NumGoroutine(); after > before+5 {
		t.Fatalf("%d caches started %d goroutines", len(caches), after-before)
	}
	runtime.KeepAlive(caches)
}

package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/gpugate/gpugate/db/dbtest"
)

// Both listeners are http.Servers with a header cap (Go's default is 1 MB) and timeouts; the
// header cap is what a test can observe quickly.
func TestListenersCapRequestHeaders(t *testing.T) {
	t.Parallel()
	_, dsn := dbtest.NewWithDSN(t)
	debug := freeAddr(t)
	g := start(t, []string{"DATABASE_URL=" + dsn}, "--debug-listen", debug)
	for _, url := range []string{"http://" + g.addr + "/healthz", "http://" + debug + "/debug/pprof/"} {
		get := func(header int) int {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("X-Padding", strings.Repeat("x", header))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("GET %s: %v", url, err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if code := get(1 << 10); code != http.StatusOK {
			t.Fatalf("%s with a small header: HTTP %d", url, code)
		}
		if code := get(128 << 10); code != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("%s with a 128 KiB header: HTTP %d, want 431", url, code)
		}
	}
}

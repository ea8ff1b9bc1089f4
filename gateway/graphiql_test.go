package gateway_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"html"
	"io"
	"net/http"
	"os"
	"path"
	"regexp"
	"strings"
	"testing"

	"github.com/gpugate/gpugate/gateway"
)

var (
	tagRe    = regexp.MustCompile(`(?is)<(script|link|style|img|iframe|object|embed|base|form)\b([^>]*)>`)
	attrRe   = regexp.MustCompile(`(?is)\b(src|href|integrity)="([^"]*)"`)
	inlineRe = regexp.MustCompile(`(?is)<script\b[^>]*>\s*[^<\s]`)
)

// get fetches path from the gateway with the given request headers, returning status, headers
// and the body exactly as sent (no transparent gzip decoding).
func get(t *testing.T, base, p string, header map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+p, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if _, ok := header["Accept-Encoding"]; !ok {
		req.Header.Set("Accept-Encoding", "identity")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", p, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", p, err)
	}
	return resp.StatusCode, resp.Header, b
}

// cspDirectives parses a Content-Security-Policy header into directive -> sources.
func cspDirectives(h string) map[string][]string {
	out := map[string][]string{}
	for _, d := range strings.Split(h, ";") {
		f := strings.Fields(d)
		if len(f) > 0 {
			out[f[0]] = f[1:]
		}
	}
	return out
}

// TestGraphiQLServedFromEmbed loads the dev-mode page over real HTTP and checks that it works
// without the internet: a CSP that admits no remote origin and no inline script, every file the
// page references served by the gateway itself, byte for byte the vendored npm file, with its
// content type, integrity and caching headers.
func TestGraphiQLServedFromEmbed(t *testing.T) {
	e := newEnv(t, 0, gateway.Config{Dev: true})

	status, h, page := get(t, e.url, "/", nil)
	if status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: HTTP %d %q", status, h.Get("Content-Type"))
	}
	csp := h.Get("Content-Security-Policy")
	if csp == "" {
		t.Fatalf("GET /: no Content-Security-Policy; headers %v", h)
	}
	dirs := cspDirectives(csp)
	want := map[string]string{
		"default-src": "'none'", "script-src": "'self'", "connect-src": "'self'",
		"base-uri": "'none'", "form-action": "'none'", "frame-ancestors": "'none'", "font-src": "data:",
	}
	for d, v := range want {
		if got := strings.Join(dirs[d], " "); got != v {
			t.Errorf("CSP %s = %q, want %q (policy %q)", d, got, v, csp)
		}
	}
	for d, srcs := range dirs {
		for _, s := range srcs {
			if s == "'unsafe-inline'" || s == "'unsafe-eval'" || s == "*" || strings.Contains(s, ":/") || strings.HasSuffix(s, ":") && s != "data:" {
				t.Errorf("CSP %s admits %s", d, s)
			}
		}
	}
	if style := dirs["style-src"]; len(style) != 2 || style[0] != "'self'" || !strings.HasPrefix(style[1], "'nonce-") {
		t.Errorf("CSP style-src = %q, want 'self' and a nonce", style)
	}
	if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Cache-Control") != "no-store" {
		t.Errorf("GET /: X-Content-Type-Options %q, Cache-Control %q", h.Get("X-Content-Type-Options"), h.Get("Cache-Control"))
	}
	if _, h2, _ := get(t, e.url, "/", nil); h2.Get("Content-Security-Policy") == csp {
		t.Error("two responses carry the same style nonce")
	}
	if m := inlineRe.Find(page); m != nil {
		t.Errorf("inline script in the page: %s", m)
	}
	if bytes.Contains(page, []byte("http://")) || bytes.Contains(page, []byte("https://")) || bytes.Contains(page, []byte(" style=")) {
		t.Errorf("the page names an absolute URL or carries a style attribute:\n%s", page)
	}

	scripts, sheets := 0, 0
	for _, tag := range tagRe.FindAllSubmatch(page, -1) {
		name := strings.ToLower(string(tag[1]))
		attrs := map[string]string{}
		for _, a := range attrRe.FindAllSubmatch(tag[2], -1) {
			attrs[string(a[1])] = html.UnescapeString(string(a[2]))
		}
		ref := attrs["src"] + attrs["href"]
		switch name {
		case "script":
			scripts++
		case "link":
			sheets++
		default:
			t.Errorf("unexpected <%s> in the page", name)
			continue
		}
		if !strings.HasPrefix(ref, "/graphiql/") {
			t.Errorf("<%s> refers to %q, not to the gateway's embedded files", name, ref)
			continue
		}
		checkAsset(t, e.url, ref, attrs["integrity"])
	}
	if scripts != 4 || sheets != 2 {
		t.Errorf("page loads %d scripts and %d style sheets, want 4 and 2:\n%s", scripts, sheets, page)
	}

	// The license links in the footer are served too, as text.
	for _, m := range regexp.MustCompile(`<a href="(/graphiql/[^"]+)"`).FindAllSubmatch(page, -1) {
		status, h, body := get(t, e.url, string(m[1]), nil)
		if status != http.StatusOK || h.Get("Content-Type") != "text/plain; charset=utf-8" || len(body) == 0 {
			t.Errorf("GET %s: HTTP %d %q, %d bytes", m[1], status, h.Get("Content-Type"), len(body))
		}
	}

	// A file's URL names its content: another hash, or a file that is not there, is not found.
	for _, p := range []string{"/graphiql/0000000000000000/graphiql.min.js", "/graphiql/x/../../go.mod", "/graphiql/", "/graphiql.min.js"} {
		if status, _, _ := get(t, e.url, p, nil); status != http.StatusNotFound {
			t.Errorf("GET %s: HTTP %d, want 404", p, status)
		}
	}

	// Without dev mode there is no GraphiQL at all.
	off := newEnv(t, 0, gateway.Config{})
	if status, _, _ := get(t, off.url, "/", nil); status != http.StatusNotFound {
		t.Errorf("GET / without dev mode: HTTP %d, want 404", status)
	}
}

// checkAsset fetches one file the page refers to and checks it against the vendored file.
func checkAsset(t *testing.T, base, ref, integrity string) {
	t.Helper()
	name := path.Base(ref)
	local := "graphiql/vendor/" + name
	if _, err := os.Stat(local); err != nil {
		local = "graphiql/static/" + name
	}
	want, err := os.ReadFile(local)
	if err != nil {
		t.Fatalf("%s: no such embedded file: %v", ref, err)
	}
	status, h, body := get(t, base, ref, nil)
	if status != http.StatusOK || !bytes.Equal(body, want) {
		t.Fatalf("GET %s: HTTP %d, %d bytes, want the %d bytes of %s", ref, status, len(body), len(want), local)
	}
	wantType := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}[path.Ext(name)]
	if got := h.Get("Content-Type"); got != wantType {
		t.Errorf("GET %s: Content-Type %q, want %q", ref, got, wantType)
	}
	if got := h.Get("Cache-Control"); got != "public, max-age=31536000, immutable" {
		t.Errorf("GET %s: Cache-Control %q", ref, got)
	}
	if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("ETag") == "" {
		t.Errorf("GET %s: X-Content-Type-Options %q, ETag %q", ref, h.Get("X-Content-Type-Options"), h.Get("ETag"))
	}
	sum := sha256.Sum256(want)
	if !strings.Contains(ref, "/"+hex.EncodeToString(sum[:8])+"/") {
		t.Errorf("%s does not carry its content's hash %x", ref, sum[:8])
	}
	sri := sha512.Sum384(want)
	if integrity != "sha384-"+base64.StdEncoding.EncodeToString(sri[:]) {
		t.Errorf("%s: integrity %q does not match the file", ref, integrity)
	}
	if path.Ext(name) == ".css" {
		// Nothing a style sheet pulls in may leave the page: fonts and images are data: URLs.
		for _, m := range regexp.MustCompile(`url\(\s*["']?([^"')]{0,16})`).FindAllSubmatch(want, -1) {
			if !bytes.HasPrefix(m[1], []byte("data:")) {
				t.Errorf("%s: url(%s…) is not a data: URL", name, m[1])
			}
		}
		if bytes.Contains(want, []byte("@import")) {
			t.Errorf("%s imports another style sheet", name)
		}
	}

	// Compressed for clients that take gzip; a revalidation is a 304.
	status, h, zbody := get(t, base, ref, map[string]string{"Accept-Encoding": "gzip"})
	if status != http.StatusOK || h.Get("Content-Encoding") != "gzip" || !strings.Contains(h.Get("Vary"), "Accept-Encoding") {
		t.Fatalf("GET %s with gzip: HTTP %d, Content-Encoding %q, Vary %q", ref, status, h.Get("Content-Encoding"), h.Get("Vary"))
	}
	zr, err := gzip.NewReader(bytes.NewReader(zbody))
	if err != nil {
		t.Fatalf("GET %s with gzip: %v", ref, err)
	}
	if unz, err := io.ReadAll(zr); err != nil || !bytes.Equal(unz, want) {
		t.Errorf("GET %s with gzip: decompresses to %d bytes (%v), want %d", ref, len(unz), err, len(want))
	}
	if status, _, _ := get(t, base, ref, map[string]string{"If-None-Match": h.Get("ETag")}); status != http.StatusNotModified {
		t.Errorf("GET %s If-None-Match: HTTP %d, want 304", ref, status)
	}
}

// TestGraphiQLVendorSources checks that the vendored files are the ones vendor/SOURCES records
// (scripts/vendor-graphiql writes both), so a hand edit of a third-party file does not pass.
func TestGraphiQLVendorSources(t *testing.T) {
	f, err := os.Open("graphiql/vendor/SOURCES")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for sc := bufio.NewScanner(f); sc.Scan(); {
		fields := strings.Fields(sc.Text())
		if len(fields) != 2 || len(fields[0]) != 64 {
			continue
		}
		b, err := os.ReadFile("graphiql/vendor/" + fields[1])
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != fields[0] {
			t.Errorf("vendor/%s differs from what scripts/vendor-graphiql fetched", fields[1])
		}
		n++
	}
	if n != 4 {
		t.Errorf("SOURCES lists %d files, want 4", n)
	}
	for _, l := range []string{"LICENSE.graphiql", "LICENSE.react", "LICENSE.react-dom", "THIRD_PARTY_NOTICES"} {
		if b, err := os.ReadFile("graphiql/vendor/" + l); err != nil || !bytes.Contains(b, []byte("MIT")) {
			t.Errorf("vendor/%s: missing or not the MIT license text (%v)", l, err)
		}
	}
}

package web_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/gpugate/gpugate/web"
)

func serve(t *testing.T, o web.Options) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	web.Mount(mux, o)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func fetch(t *testing.T, url string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestPagesAndPolicy checks what each path serves and the headers of the pages: the exact CSP
// (the issuer's origin only, never its path; no inline script or style admitted), no inline
// scripts, styles or style attributes in the pages, every referenced file served with its type.
func TestPagesAndPolicy(t *testing.T) {
	const issuer = "http://127.0.0.1:5556/dex"
	srv := serve(t, web.Options{Issuer: issuer, ClientID: "console", RolesClaim: "groups", AdminRole: "ADMIN"})
	want := "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' http://127.0.0.1:5556; " +
		"frame-ancestors 'none'; base-uri 'none'; form-action 'self' http://127.0.0.1:5556"
	inline := regexp.MustCompile(`(?is)<script\b[^>]*>\s*[^<\s]|<style\b|\sstyle=|\son[a-z]+=`)
	ref := regexp.MustCompile(`(?:src|href)="(/assets/[^"]+)"`)
	for path, script := range map[string]string{"/": "explorer.js", "/devices/0b7c1f9e-1111-4222-8333-444455556666": "explorer.js", "/console/": "console.js"} {
		resp, body := fetch(t, srv.URL+path, nil)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("GET %s: HTTP %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if got := resp.Header.Get("Content-Security-Policy"); got != want {
			t.Errorf("GET %s: CSP\n%s\nwant\n%s", path, got, want)
		}
		for h, v := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
			if resp.Header.Get(h) != v {
				t.Errorf("GET %s: %s = %q, want %q", path, h, resp.Header.Get(h), v)
			}
		}
		if m := inline.FindString(body); m != "" {
			t.Errorf("GET %s: inline script or style %q", path, m)
		}
		if !strings.Contains(body, `src="/assets/`+script+`"`) {
			t.Errorf("GET %s does not load %s", path, script)
		}
		for _, m := range ref.FindAllStringSubmatch(body, -1) {
			r, _ := fetch(t, srv.URL+m[1], nil)
			if r.StatusCode != http.StatusOK || r.Header.Get("X-Content-Type-Options") != "nosniff" || r.Header.Get("ETag") == "" {
				t.Errorf("GET %s: HTTP %d, headers %v", m[1], r.StatusCode, r.Header)
			}
			if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/javascript") && !strings.HasPrefix(ct, "text/css") {
				t.Errorf("GET %s: Content-Type %q", m[1], ct)
			}
			if r2, _ := fetch(t, srv.URL+m[1], map[string]string{"If-None-Match": r.Header.Get("ETag")}); r2.StatusCode != http.StatusNotModified {
				t.Errorf("GET %s with its ETag: HTTP %d, want 304", m[1], r2.StatusCode)
			}
		}
	}
	_, console := fetch(t, srv.URL+"/console/", nil)
	for _, m := range []string{`name="gpugate-issuer" content="` + issuer + `"`, `name="gpugate-client-id" content="console"`, `name="gpugate-roles-claim" content="groups"`} {
		if !strings.Contains(console, m) {
			t.Errorf("the console page lacks %s", m)
		}
	}
	// Modules import each other by relative path: every import names a served file.
	_, js := fetch(t, srv.URL+"/assets/explorer.js", nil)
	for _, m := range regexp.MustCompile(`from '\./([a-z]+\.js)'`).FindAllStringSubmatch(js, -1) {
		if r, _ := fetch(t, srv.URL+"/assets/"+m[1], nil); r.StatusCode != http.StatusOK {
			t.Errorf("explorer.js imports %s: HTTP %d", m[1], r.StatusCode)
		}
	}
	for _, p := range []string{"/assets/nope.js", "/assets/explorer.html", "/assets/", "/assets/../web.go", "/devices/", "/console/x", "/favicon.ico"} {
		if r, _ := fetch(t, srv.URL+p, nil); r.StatusCode != http.StatusNotFound && r.StatusCode != http.StatusMovedPermanently {
			t.Errorf("GET %s: HTTP %d, want 404", p, r.StatusCode)
		}
	}
}

// TestPolicyIssuer: only an http(s) origin ever enters the policy; anything else (a value that
// could add sources or directives) leaves the console without an extra source.
func TestPolicyIssuer(t *testing.T) {
	base := "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
	for issuer, want := range map[string]string{
		"":                                      base,
		"javascript:alert(1)":                   base,
		"https://idp.example.com; script-src *": base,
		"https://idp.example.com x":             base,
		"data:text/html,x":                      base,
		"https://idp.example.com/realms/gpu": strings.ReplaceAll(strings.ReplaceAll(base, "connect-src 'self'", "connect-src 'self' https://idp.example.com"),
			"form-action 'self'", "form-action 'self' https://idp.example.com"),
	} {
		if got := web.Policy(issuer); got != want {
			t.Errorf("Policy(%q) =\n%s\nwant\n%s", issuer, got, want)
		}
	}
}

// Package web serves gpugate's browser UI from files embedded in the binary: the public
// explorer at / (network totals, the device table, a device's page at /devices/{id}) and the
// owner console at /console/. Both are plain JavaScript modules and hand-written CSS under
// static/ (no build step, nothing fetched from another origin at run time); they are clients of
// the gateway's own GraphQL API and get exactly what any other client gets. docs/web.md says
// what is served where, how the console signs in, and the Content-Security-Policy.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
)

//go:embed static
var files embed.FS

// Options configures Mount.
type Options struct {
	// Endpoint is the GraphQL path the pages call, on the same origin. Default "/graphql".
	Endpoint string
	// Issuer is the OpenID provider the console signs in with (authorization code + PKCE);
	// empty: the console says sign-in is not configured and the explorer works as ever.
	Issuer string
	// ClientID is the console's public client at Issuer (no secret). Its redirect URI is
	// <origin>/console/ (ConsolePath), which the provider must have registered.
	ClientID string
	// Scopes requested at sign-in. Default "openid profile email".
	Scopes string
	// Audience, when set, is sent as the audience parameter of the authorization request, for
	// providers that choose the access token's audience from it (Auth0).
	Audience string
	// RolesClaim and AdminRole tell the console which claim of a JWT access token holds roles
	// and which role is the admin's, only to decide whether to show the admin tools (the API
	// decides what the caller may do). Empty: the tools are offered behind a button.
	RolesClaim, AdminRole string
}

// ConsolePath is the console's page and its OAuth redirect URI's path.
const ConsolePath = "/console/"

// AssetPrefix is where the pages' scripts and styles are served.
const AssetPrefix = "/assets/"

var contentTypes = map[string]string{
	".js":  "text/javascript; charset=utf-8",
	".css": "text/css; charset=utf-8",
	".svg": "image/svg+xml",
}

type asset struct {
	body        []byte
	contentType string
	etag        string
}

type server struct {
	opts   Options
	csp    string
	assets map[string]*asset
	pages  map[string][]byte // explorer.html, console.html rendered once
}

// Mount registers the explorer and the console on mux: GET / and GET /devices/{id} (the
// explorer's page; its script routes), GET /console/ and the files under AssetPrefix. It
// panics if the embedded files are unreadable or a page template is broken, which only a
// broken build can cause (every test that starts a gateway would catch it).
func Mount(mux *http.ServeMux, o Options) {
	s := newServer(o)
	mux.HandleFunc("GET /{$}", s.page("explorer.html"))
	mux.HandleFunc("GET /devices/{id}", s.page("explorer.html"))
	mux.HandleFunc("GET "+ConsolePath+"{$}", s.page("console.html"))
	mux.HandleFunc("GET "+AssetPrefix+"{name}", s.serveAsset)
}

func newServer(o Options) *server {
	if o.Endpoint == "" {
		o.Endpoint = "/graphql"
	}
	if o.Scopes == "" {
		o.Scopes = "openid profile email"
	}
	s := &server{opts: o, csp: Policy(o.Issuer), assets: map[string]*asset{}, pages: map[string][]byte{}}
	entries, err := fs.ReadDir(files, "static")
	if err != nil {
		panic("web: embedded files: " + err.Error())
	}
	var tmpls []string
	for _, e := range entries {
		body, err := fs.ReadFile(files, "static/"+e.Name())
		if err != nil {
			panic("web: embedded files: " + err.Error())
		}
		if path.Ext(e.Name()) == ".html" {
			tmpls = append(tmpls, e.Name())
			continue
		}
		ct, ok := contentTypes[path.Ext(e.Name())]
		if !ok {
			continue // not served
		}
		sum := sha256.Sum256(body)
		s.assets[e.Name()] = &asset{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	data := map[string]string{
		"Endpoint": o.Endpoint, "Issuer": o.Issuer, "ClientID": o.ClientID,
		"Scopes": o.Scopes, "Audience": o.Audience, "Assets": AssetPrefix,
		"RolesClaim": o.RolesClaim, "AdminRole": o.AdminRole,
	}
	for _, name := range tmpls {
		t := template.Must(template.ParseFS(files, "static/"+name))
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			panic("web: " + name + ": " + err.Error())
		}
		s.pages[name] = buf.Bytes()
	}
	return s
}

// Policy returns the pages' Content-Security-Policy: everything from this origin only, no
// inline script or style, and the issuer's origin (when set) for the console's discovery and
// token requests and its sign-in redirect.
func Policy(issuer string) string {
	extra := ""
	if origin := originOf(issuer); origin != "" {
		extra = " " + origin
	}
	return "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'" + extra + "; frame-ancestors 'none'; base-uri 'none'; form-action 'self'" + extra
}

// originOf returns scheme://host[:port] of an absolute http(s) URL, or "" for anything else
// (a value that could widen the policy beyond one origin is never copied into it).
func originOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.ContainsAny(u.Host, " ;,'*") {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

func (s *server) page(name string) http.HandlerFunc {
	body, ok := s.pages[name]
	if !ok {
		panic("web: no page " + name)
	}
	return func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", s.csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		// The console's URL carries an authorization code after sign-in: never send it on.
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	}
}

// serveAsset serves an embedded script or style. The URLs carry no version, so browsers
// revalidate (no-cache) and get 304 while the ETag (the content's hash) matches.
func (s *server) serveAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := s.assets[r.PathValue("name")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	if inm := r.Header.Get("If-None-Match"); inm != "" && strings.Contains(inm, a.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", a.contentType)
	h.Set("Content-Length", strconv.Itoa(len(a.body)))
	_, _ = w.Write(a.body)
}

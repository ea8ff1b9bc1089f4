// Package graphiql serves the GraphiQL explorer page with its scripts and styles embedded in the
// binary, so that it works on a machine without internet, under a Content-Security-Policy that
// lets the page load nothing but those files and talk to nothing but its own origin.
//
// third_party/ holds the files exactly as published on npm (graphiql's UMD bundle and CSS, React
// and ReactDOM), fetched by scripts/vendor-graphiql, with their licenses; third_party/SOURCES
// records the package versions and each file's sha256. static/ holds gpugate's own page script
// and style.
package graphiql

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
)

//go:embed third_party static index.html
var files embed.FS

// PagePath is where the GraphiQL page is served.
const PagePath = "/graphiql"

// AssetPrefix is the path under which the page's files are served: AssetPrefix + hash + "/" + name.
const AssetPrefix = "/graphiql/"

// Content types are fixed here rather than taken from the system's MIME tables, which differ
// between machines (a wrong type for a script is a refused script under nosniff).
var contentTypes = map[string]string{
	".js":  "text/javascript; charset=utf-8",
	".css": "text/css; charset=utf-8",
	"":     "text/plain; charset=utf-8", // LICENSE.*, SOURCES, THIRD_PARTY_NOTICES
}

// asset is one embedded file. Its URL carries a prefix of its sha256, so a browser may cache it
// for a year: a changed file gets a new URL.
type asset struct {
	name        string
	contentType string
	body        []byte
	hash        string // first 16 hex digits of the sha256
	integrity   string // subresource integrity, for the page's <script> and <link> tags
	gzipped     func() []byte
}

func (a *asset) URL() string { return AssetPrefix + a.hash + "/" + a.name }

// Integrity returns the asset's subresource-integrity value.
func (a *asset) Integrity() string { return a.integrity }

type server struct {
	endpoint string
	assets   map[string]*asset // by name
	page     *template.Template
}

// Mount registers GraphiQL on mux: the page at GET /graphiql (the explorer UI owns /; see
// docs/web.md) and its files under AssetPrefix. The page
// sends GraphQL requests to endpoint (a path on the same origin, such as "/graphql").
// It panics if the embedded files are unreadable or the page names a file that is not embedded,
// which only a broken build can cause (and every test that starts a dev gateway would catch).
func Mount(mux *http.ServeMux, endpoint string) {
	s := newServer(endpoint)
	mux.HandleFunc("GET "+PagePath, s.servePage)
	mux.HandleFunc("GET "+AssetPrefix+"{hash}/{name}", s.serveAsset)
}

func newServer(endpoint string) *server {
	s := &server{endpoint: endpoint, assets: map[string]*asset{}}
	for _, dir := range []string{"third_party", "static"} {
		entries, err := fs.ReadDir(files, dir)
		if err != nil {
			panic("graphiql: embedded files: " + err.Error())
		}
		for _, e := range entries {
			body, err := fs.ReadFile(files, dir+"/"+e.Name())
			if err != nil {
				panic("graphiql: embedded files: " + err.Error())
			}
			ct, ok := contentTypes[path.Ext(e.Name())]
			if !ok {
				ct = contentTypes[""]
			}
			sum := sha256.Sum256(body)
			sri := sha512.Sum384(body)
			a := &asset{
				name: e.Name(), contentType: ct, body: body,
				hash:      hex.EncodeToString(sum[:8]),
				integrity: "sha384-" + base64.StdEncoding.EncodeToString(sri[:]),
			}
			a.gzipped = sync.OnceValue(func() []byte { return compress(a.body) })
			s.assets[a.name] = a
		}
	}
	page, err := fs.ReadFile(files, "index.html")
	if err != nil {
		panic("graphiql: embedded files: " + err.Error())
	}
	s.page = template.Must(template.New("index.html").Funcs(template.FuncMap{
		"asset": func(name string) (*asset, error) {
			if a, ok := s.assets[name]; ok {
				return a, nil
			}
			return nil, fs.ErrNotExist
		},
	}).Parse(string(page)))
	if err := s.page.Execute(io.Discard, map[string]string{"Endpoint": endpoint, "Nonce": ""}); err != nil {
		panic("graphiql: index.html: " + err.Error()) // it names a file that is not embedded
	}
	return s
}

// policy is the page's Content-Security-Policy: scripts only from this origin (the embedded
// files; no inline script, no eval), styles from this origin plus the one <style> element
// GraphiQL's dialogs insert (react-remove-scroll), admitted by a per-response nonce; fonts and
// images only as data: URLs inside graphiql's CSS; requests only to this origin.
func policy(nonce string) string {
	return "default-src 'none'; script-src 'self'; style-src 'self' 'nonce-" + nonce + "'; " +
		"img-src 'self' data:; font-src data:; connect-src 'self'; " +
		"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

func (s *server) servePage(w http.ResponseWriter, r *http.Request) {
	var b [18]byte
	_, _ = rand.Read(b[:])
	nonce := base64.StdEncoding.EncodeToString(b[:])
	var buf bytes.Buffer
	if err := s.page.Execute(&buf, map[string]string{"Endpoint": s.endpoint, "Nonce": nonce}); err != nil {
		// Unreachable: newServer rendered the same template with the same files.
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", policy(nonce))
	h.Set("Cache-Control", "no-store") // a new nonce every time
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	_, _ = w.Write(buf.Bytes())
}

func (s *server) serveAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := s.assets[r.PathValue("name")]
	if !ok || r.PathValue("hash") != a.hash {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	etag := `W/"` + a.hash + `"` // weak: the gzip and identity bodies differ
	h.Set("ETag", etag)
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	h.Set("Vary", "Accept-Encoding")
	h.Set("X-Content-Type-Options", "nosniff")
	// If-None-Match compares weakly: W/"h" and "h" both match.
	if inm := r.Header.Get("If-None-Match"); inm == "*" || strings.Contains(inm, `"`+a.hash+`"`) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := a.body
	if acceptsGzip(r.Header.Get("Accept-Encoding")) {
		body = a.gzipped()
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("Content-Type", a.contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// acceptsGzip reports whether an Accept-Encoding header admits gzip (q=0 refuses it).
func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}

// compress gzips b once, on first request, so that startup and binaries not serving GraphiQL pay
// nothing (graphiql's files shrink from 1.6 MB to 0.7 MB).
func compress(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

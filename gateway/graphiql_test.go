package gateway_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/graph/model"
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

	status, h, page := get(t, e.url, "/graphiql", nil)
	if status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /graphiql: HTTP %d %q", status, h.Get("Content-Type"))
	}
	csp := h.Get("Content-Security-Policy")
	if csp == "" {
		t.Fatalf("GET /graphiql: no Content-Security-Policy; headers %v", h)
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
		t.Errorf("GET /graphiql: X-Content-Type-Options %q, Cache-Control %q", h.Get("X-Content-Type-Options"), h.Get("Cache-Control"))
	}
	if _, h2, _ := get(t, e.url, "/graphiql", nil); h2.Get("Content-Security-Policy") == csp {
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
		if name == "link" && ref == "data:," {
			continue // the empty favicon, which spares the browser a request for /favicon.ico
		}
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

	// The explorer owns / in dev mode too (docs/web.md).
	if status, _, body := get(t, e.url, "/", nil); status != http.StatusOK || !bytes.Contains(body, []byte("explorer.js")) || bytes.Contains(body, []byte("graphiql")) {
		t.Errorf("GET / in dev mode: HTTP %d, want the explorer:\n%s", status, body)
	}

	// Without dev mode there is no GraphiQL at all; / is the explorer.
	off := newEnv(t, 0, gateway.Config{})
	for _, p := range []string{"/graphiql", "/graphiql/"} {
		if status, _, _ := get(t, off.url, p, nil); status != http.StatusNotFound {
			t.Errorf("GET %s without dev mode: HTTP %d, want 404", p, status)
		}
	}
	if status, _, body := get(t, off.url, "/", nil); status != http.StatusOK || !bytes.Contains(body, []byte("explorer.js")) {
		t.Errorf("GET / without dev mode: HTTP %d, want the explorer", status)
	}
}

// checkAsset fetches one file the page refers to and checks it against the vendored file.
func checkAsset(t *testing.T, base, ref, integrity string) {
	t.Helper()
	name := path.Base(ref)
	local := "graphiql/third_party/" + name
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

// TestGraphiQLVendorSources checks that the vendored files are the ones third_party/SOURCES records
// (scripts/vendor-graphiql writes both), so a hand edit of a third-party file does not pass.
func TestGraphiQLVendorSources(t *testing.T) {
	f, err := os.Open("graphiql/third_party/SOURCES")
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
		b, err := os.ReadFile("graphiql/third_party/" + fields[1])
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != fields[0] {
			t.Errorf("third_party/%s differs from what scripts/vendor-graphiql fetched", fields[1])
		}
		n++
	}
	if n != 4 {
		t.Errorf("SOURCES lists %d files, want 4", n)
	}
	for _, l := range []string{"LICENSE.graphiql", "LICENSE.react", "LICENSE.react-dom", "THIRD_PARTY_NOTICES"} {
		if b, err := os.ReadFile("graphiql/third_party/" + l); err != nil || !bytes.Contains(b, []byte("MIT")) {
			t.Errorf("third_party/%s: missing or not the MIT license text (%v)", l, err)
		}
	}
}

// TestGraphiQLInChromium opens the dev-mode page in headless Chromium with every host name
// unresolvable (the internet cut off), waits for GraphiQL to render and load the schema by
// introspection (on, as `serve` sets it in dev mode), runs the default query,
// then, with a bearer token typed into the Headers tab, a query only a signed-in user can answer.
// Every request the page makes must go to the gateway, and the page must raise no CSP violation
// and no script error. Skipped where Chromium is not installed (.ci/run installs it).
func TestGraphiQLInChromium(t *testing.T) {
	bin := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		if os.Getenv("GPUGATE_CI") != "" { // .ci/run installs it: there, a missing browser is a failure
			t.Fatal("no chromium on PATH, although CI installs it")
		}
		t.Skip("no chromium on PATH (apt-get install chromium)")
	}
	p := newIDP(t)
	o := newOwnersWith(t, p, gateway.Config{Dev: true, Introspection: true, Verifier: p.verifier, RoleNames: map[model.Role]string{model.RoleAdmin: "ADMIN"}})
	token := p.sign(p.claims("alice"))

	b := startChromium(t, bin)
	var target struct{ TargetID string }
	b.call(t, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var attached struct{ SessionID string }
	b.call(t, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached)
	s := attached.SessionID
	for _, m := range []string{"Network.enable", "Runtime.enable", "Log.enable", "Page.enable"} {
		b.call(t, s, m, map[string]any{}, nil)
	}
	// Scripts added over the debugging protocol are exempt from the page's CSP: this one records
	// the page's violations for the test to read.
	b.call(t, s, "Page.addScriptToEvaluateOnNewDocument", map[string]any{"source": `window.__violations = [];
		document.addEventListener('securitypolicyviolation', e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));`}, nil)
	b.call(t, s, "Page.navigate", map[string]any{"url": o.url + "/graphiql"}, nil)

	const (
		query    = `document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror`
		headers  = `document.querySelector('.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror').CodeMirror`
		response = `document.querySelector('.graphiql-response .CodeMirror').CodeMirror`
		run      = `document.querySelector('.graphiql-execute-button').click()`
	)
	b.waitFor(t, s, "GraphiQL's query editor", `!!document.querySelector('.graphiql-query-editor .CodeMirror') && !!document.querySelector('.graphiql-response .CodeMirror')`)
	if q := b.eval(t, s, query+`.getValue()`); !strings.Contains(q.(string), "devices(first: 5") {
		t.Fatalf("default query is %q", q)
	}
	if tab := b.eval(t, s, `(document.querySelector('.graphiql-editor-tools button.active') || {}).textContent`); tab != "Headers" {
		t.Errorf("open editor tool is %v, want the Headers tab", tab)
	}

	// The schema arrived by introspection: the documentation explorer lists the root types.
	b.eval(t, s, `document.querySelector('[aria-label="Show Documentation Explorer"]').click()`)
	b.waitFor(t, s, "the schema in the documentation explorer", `document.querySelector('.graphiql-doc-explorer').textContent.includes('Mutation')`)

	b.eval(t, s, run)
	out := b.waitFor(t, s, "the default query's answer", response+`.getValue().includes('networkStats') && `+response+`.getValue()`).(string)
	if strings.Contains(out, `"errors"`) || !strings.Contains(out, `"devices": 40`) {
		t.Fatalf("default query answered:\n%s", out)
	}

	b.eval(t, s, headers+`.setValue(JSON.stringify({Authorization: "Bearer `+token+`"}))`)
	b.eval(t, s, query+`.setValue('{ viewer { email } }')`)
	b.eval(t, s, run)
	out = b.waitFor(t, s, "the viewer query's answer", response+`.getValue().includes('viewer') && `+response+`.getValue()`).(string)
	if !strings.Contains(out, "alice@example.com") {
		t.Fatalf("with alice's token in the Headers tab, viewer answered:\n%s", out)
	}

	// The settings dialog inserts GraphiQL's one <style> element, which the CSP admits by nonce.
	b.eval(t, s, `document.querySelector('[aria-label="Open settings dialog"]').click()`)
	b.waitFor(t, s, "the settings dialog", `!!document.querySelector('.graphiql-dialog')`)
	if n := b.eval(t, s, `document.querySelectorAll('head style').length`); n != float64(1) {
		t.Errorf("%v <style> elements with the dialog open, want GraphiQL's one", n)
	}

	if v := b.eval(t, s, `window.__violations.join('\n')`); v != "" {
		t.Errorf("CSP violations:\n%s", v)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	seen := strings.Join(b.requests, "\n")
	for _, want := range []string{o.url + "/graphiql\n", "/graphiql.min.js\n", o.url + "/graphql\n"} {
		if !strings.Contains(seen+"\n", want) {
			t.Errorf("no request for %q among the page's requests:\n%s", strings.TrimSpace(want), seen)
		}
	}
	for _, u := range b.requests {
		if !strings.HasPrefix(u, o.url+"/") && !strings.HasPrefix(u, "data:") {
			t.Errorf("the page requested %s, outside the gateway", u)
		}
	}
	if len(b.problems) > 0 {
		t.Errorf("console errors:\n%s", strings.Join(b.problems, "\n"))
	}
	for _, w := range b.warnings {
		t.Log(w)
	}
}

// browser is headless Chromium driven over the DevTools protocol on a pipe
// (--remote-debugging-pipe: NUL-terminated JSON on file descriptors 3 and 4), so the test
// needs nothing beyond the standard library.
type browser struct {
	w        io.Writer
	mu       sync.Mutex
	next     int
	pending  map[int]chan cdpMessage
	requests []string // every URL the page asked for
	problems []string // console errors, exceptions, error-level and security log entries
	warnings []string // console warnings
}

type cdpMessage struct {
	ID        int             `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *struct {
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

func startChromium(t *testing.T, bin string) *browser {
	t.Helper()
	toChrome, ourEnd, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fromChrome, chromeEnd, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--disable-extensions", "--user-data-dir="+t.TempDir(),
		"--remote-debugging-pipe",
		// The internet is not there: no host name resolves (the gateway is at 127.0.0.1).
		"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
		"about:blank")
	cmd.ExtraFiles = []*os.File{toChrome, chromeEnd}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	toChrome.Close()
	chromeEnd.Close()
	b := &browser{w: ourEnd, pending: map[int]chan cdpMessage{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := bufio.NewReader(fromChrome)
		for {
			line, err := r.ReadBytes(0)
			if err != nil {
				return
			}
			var m cdpMessage
			if json.Unmarshal(line[:len(line)-1], &m) == nil {
				b.receive(m)
			}
		}
	}()
	t.Cleanup(func() {
		_, _ = ourEnd.Write([]byte(`{"id":999999,"method":"Browser.close"}` + "\x00"))
		ourEnd.Close()
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		fromChrome.Close()
		<-done
		if t.Failed() {
			t.Logf("chromium stderr:\n%s", stderr.String())
		}
	})
	return b
}

func (b *browser) receive(m cdpMessage) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if m.ID != 0 {
		if ch, ok := b.pending[m.ID]; ok {
			ch <- m
			delete(b.pending, m.ID)
		}
		return
	}
	switch m.Method {
	case "Network.requestWillBeSent":
		var p struct{ Request struct{ URL string } }
		_ = json.Unmarshal(m.Params, &p)
		b.requests = append(b.requests, p.Request.URL)
	case "Runtime.consoleAPICalled":
		var p struct {
			Type string
			Args []struct {
				Value       any
				Description string
			}
		}
		_ = json.Unmarshal(m.Params, &p)
		switch p.Type {
		case "error":
			b.problems = append(b.problems, fmt.Sprintf("console.error %v", p.Args))
		case "warning": // GraphiQL's own (e.g. Radix on its dialogs' descriptions): logged only
			b.warnings = append(b.warnings, fmt.Sprintf("console.warn %v", p.Args))
		}
	case "Runtime.exceptionThrown":
		b.problems = append(b.problems, "exception: "+string(m.Params))
	case "Log.entryAdded":
		var p struct {
			Entry struct{ Level, Source, Text, URL string }
		}
		_ = json.Unmarshal(m.Params, &p)
		if p.Entry.Level == "error" || p.Entry.Source == "security" {
			b.problems = append(b.problems, fmt.Sprintf("%s %s: %s %s", p.Entry.Level, p.Entry.Source, p.Entry.Text, p.Entry.URL))
		}
	}
}

// call sends one protocol command and decodes its result into result (if not nil).
func (b *browser) call(t *testing.T, session, method string, params, result any) {
	t.Helper()
	raw, _ := json.Marshal(params)
	ch := make(chan cdpMessage, 1)
	b.mu.Lock()
	b.next++
	id := b.next
	b.pending[id] = ch
	msg, _ := json.Marshal(cdpMessage{ID: id, Method: method, SessionID: session, Params: raw})
	_, err := b.w.Write(append(msg, 0))
	b.mu.Unlock()
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			t.Fatalf("%s: %s", method, m.Error.Message)
		}
		if result != nil {
			if err := json.Unmarshal(m.Result, result); err != nil {
				t.Fatalf("%s: %v", method, err)
			}
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no answer from chromium", method)
	}
}

// eval evaluates a JavaScript expression in the page and returns its value.
func (b *browser) eval(t *testing.T, session, expr string) any {
	t.Helper()
	var r struct {
		Result           struct{ Value any }
		ExceptionDetails *struct {
			Text      string
			Exception struct{ Description string }
		}
	}
	b.call(t, session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r)
	if r.ExceptionDetails != nil {
		t.Fatalf("%s: %s %s", expr, r.ExceptionDetails.Text, r.ExceptionDetails.Exception.Description)
	}
	return r.Result.Value
}

// waitFor evaluates expr until it is truthy and returns its value; it gives up after a minute
// (a bound on a hung page, not a performance assertion).
func (b *browser) waitFor(t *testing.T, session, what, expr string) any {
	t.Helper()
	guarded := `(() => { try { return ` + expr + ` } catch (e) { return false } })()`
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		v := b.eval(t, session, guarded)
		if v != nil && v != false && v != "" {
			return v
		}
	}
	html := b.eval(t, session, `document.body ? document.body.outerHTML.slice(0, 4000) : ''`)
	t.Fatalf("waiting for %s: not there after a minute; the page:\n%v", what, html)
	return nil
}

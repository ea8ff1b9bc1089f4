package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/jmoiron/sqlx"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/internal/testutil"
	"github.com/gpugate/gpugate/oidc"
	"github.com/gpugate/gpugate/oidc/devissuer"
	"github.com/gpugate/gpugate/web"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

// exchange is one /graphql request the page made and the gateway's answer.
type exchange struct {
	status int
	auth   bool
	req    string
	body   string
}

// recorder wraps the gateway and keeps every /graphql exchange, so a test can check what the
// page received (no user identifier; nothing refused by the gateway's limits).
type recorder struct {
	next http.Handler
	mu   sync.Mutex
	log  []exchange
}

type teeWriter struct {
	http.ResponseWriter
	status int
	buf    bytes.Buffer
}

func (w *teeWriter) WriteHeader(code int) { w.status = code; w.ResponseWriter.WriteHeader(code) }
func (w *teeWriter) Write(b []byte) (int, error) {
	w.buf.Write(b)
	return w.ResponseWriter.Write(b)
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/graphql" || r.Method == http.MethodOptions {
		rec.next.ServeHTTP(w, r)
		return
	}
	var reqBody bytes.Buffer
	if r.Body != nil {
		_, _ = reqBody.ReadFrom(r.Body)
		r.Body = http.NoBody
		r.Body = readCloser{bytes.NewReader(reqBody.Bytes())}
	}
	tw := &teeWriter{ResponseWriter: w, status: http.StatusOK}
	rec.next.ServeHTTP(tw, r)
	rec.mu.Lock()
	rec.log = append(rec.log, exchange{status: tw.status, auth: r.Header.Get("Authorization") != "", req: reqBody.String(), body: tw.buf.String()})
	rec.mu.Unlock()
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

func (rec *recorder) exchanges() []exchange {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]exchange(nil), rec.log...)
}

// site is a real gateway (gateway.New) on a real, seeded PostgreSQL, optionally with the dev
// OIDC issuer, served over HTTP on loopback behind the recorder.
type site struct {
	t      *testing.T
	x      *sqlx.DB
	store  *db.DB
	url    string
	rec    *recorder
	srv    *httptest.Server
	issuer string
	// secrets are the user identifiers no explorer page and no anonymous response may carry:
	// every user's ID and email, and the demo users' subjects at the issuer.
	secrets []string
}

var demoUsers = []string{"alice", "bob", "admin"}

func newSite(t *testing.T, devices int, withIssuer bool, tune ...func(*gateway.Config)) *site {
	t.Helper()
	ctx := context.Background()
	x := dbtest.New(t)
	if _, err := db.New(x, db.Options{}).Seed(ctx, devices); err != nil {
		t.Fatalf("seed: %v", err)
	}
	store := dbtest.Store(t, x, db.Options{StatsTTL: -1})
	s := &site{t: t, x: x, store: store}
	cfg := gateway.Config{RoleNames: map[model.Role]string{model.RoleAdmin: "ADMIN"}}
	if withIssuer {
		var users []devissuer.User
		for _, name := range demoUsers {
			u := devissuer.User{Username: name, Subject: "dev|" + name, Email: name + "@example.com", Name: strings.ToUpper(name[:1]) + name[1:]}
			if name == "admin" {
				u.Roles = []string{"ADMIN"}
			}
			users = append(users, u)
		}
		iss, err := devissuer.Start(ctx, devissuer.Options{
			Addr: "127.0.0.1:0", Users: users, Audience: "gpugate-api", ClientID: "gpugate-dev",
			RedirectURIs: []string{"http://127.0.0.1" + web.ConsolePath}, RolesClaim: "groups",
		})
		if err != nil {
			t.Fatalf("dev issuer: %v", err)
		}
		t.Cleanup(func() { _ = iss.Close(context.Background()) })
		s.issuer = iss.Issuer()
		for _, u := range users {
			if err := store.LinkIdentity(ctx, db.Identity{Issuer: iss.Issuer(), Subject: u.Subject}, u.Email, "dev"); err != nil {
				t.Fatalf("link %s: %v", u.Username, err)
			}
			s.secrets = append(s.secrets, u.Subject)
		}
		v, err := oidc.New(ctx, oidc.Config{Issuers: []oidc.IssuerConfig{{URL: iss.Issuer(), Audience: "gpugate-api", RolesClaim: "groups", TokenType: oidc.TokenTypeATJWT}}})
		if err != nil {
			t.Fatalf("verifier: %v", err)
		}
		cfg.Verifier = v
		cfg.Web = web.Options{Issuer: iss.Issuer(), ClientID: "gpugate-dev", RolesClaim: "groups", AdminRole: "ADMIN"}
	}
	for _, f := range tune {
		f(&cfg)
	}
	var ids []struct{ ID, Email string }
	if err := x.Select(&ids, `SELECT id::text AS id, email FROM users`); err != nil {
		t.Fatal(err)
	}
	for _, u := range ids {
		s.secrets = append(s.secrets, u.ID, u.Email)
	}
	s.secrets = append(s.secrets, "@example.com")
	logs := &testutil.SyncBuffer{}
	s.rec = &recorder{next: gateway.New(cfg, store, slog.New(slog.NewTextHandler(logs, nil)))}
	s.srv = httptest.NewServer(s.rec)
	t.Cleanup(s.srv.Close)
	s.url = s.srv.URL
	return s
}

// checkNoIdentifier fails when text carries any user identifier.
func (s *site) checkNoIdentifier(where, text string) {
	s.t.Helper()
	for _, secret := range s.secrets {
		if strings.Contains(strings.ToLower(text), strings.ToLower(secret)) {
			s.t.Errorf("%s carries the user identifier %q", where, secret)
		}
	}
}

// checkResponses checks every anonymous GraphQL response the pages received: none carries a
// user identifier, and none was refused by the gateway's own limits. It returns how many.
func (s *site) checkResponses() int {
	s.t.Helper()
	n := 0
	for _, ex := range s.rec.exchanges() {
		if ex.status == http.StatusTooManyRequests || ex.status == http.StatusServiceUnavailable {
			s.t.Errorf("the gateway refused a page's request with HTTP %d: %s", ex.status, ex.body)
		}
		for _, code := range []string{gateway.CodeRateLimited, gateway.CodeOverloaded, gateway.CodeLimit, gateway.CodeResponseTooLarge, gateway.CodeTimeout, gateway.CodeInternal} {
			if strings.Contains(ex.body, `"`+code+`"`) {
				s.t.Errorf("a page's request got %s: %s\nrequest: %s", code, ex.body, ex.req)
			}
		}
		if !ex.auth {
			n++
			s.checkNoIdentifier("an anonymous GraphQL response", ex.body)
		}
	}
	return n
}

// browser starts Debian's Chromium headless with a fresh profile. Without Chromium the test
// is skipped, except under CI (GPUGATE_CI=1, .ci/run installs it), where it fails.
func browser(t *testing.T) context.Context {
	t.Helper()
	bin := ""
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		if os.Getenv("GPUGATE_CI") == "1" {
			t.Fatal("no chromium on PATH, although CI installs it (.ci/run)")
		}
		t.Skip("no chromium on PATH: apt-get install -y chromium to run the browser tests")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.Flag("disable-extensions", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelA() })
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// step runs actions with a deadline, failing the test with what was being done.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(c, actions...); err != nil {
		html, _ := eval[string](ctx, `document.getElementById('main') ? document.getElementById('main').innerText : document.body.innerText`)
		t.Fatalf("%s: %v\npage text:\n%s", what, err, html)
	}
}

func eval[T any](ctx context.Context, expr string) (T, error) {
	c, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return chromedp.Run(c, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

func mustEval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := eval[T](ctx, expr)
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS waits until the expression is truthy.
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, err := eval[bool](ctx, "!!("+expr+")")
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			text, _ := eval[string](ctx, `document.body.innerText`)
			t.Fatalf("waiting for %s: %v\npage text:\n%s", what, err, text)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// screenshot saves the page as name.png in $GPUGATE_SCREENSHOTS, or in gpugate-screenshots
// under the system's temporary directory, so a test run leaves the checkout clean. The committed
// set in web/testdata/screenshots (docs/web.md shows what each one is) is refreshed with
// GPUGATE_SCREENSHOTS=testdata/screenshots go test ./web/.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	shot := chromedp.FullScreenshot(100)
	if strings.HasSuffix(name, "-phone") {
		shot = chromedp.CaptureScreenshot() // the first screen: a whole phone page is too long to look at
	}
	png, err := chromedp.Run(c, shot)
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	dir := os.Getenv("GPUGATE_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "gpugate-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	t.Logf("screenshot: %s", p)
}

// cspViolations lists the page's CSP violations, recorded by a script the test adds over the
// debugging protocol (exempt from the page's CSP).
const recordViolations = `window.__violations = [];
document.addEventListener('securitypolicyviolation', e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));`

func domText(t *testing.T, ctx context.Context) string {
	t.Helper()
	return mustEval[string](t, ctx, `document.documentElement.outerHTML + '\n' + location.href`)
}

// addScript runs source in every document the tab loads from now on, before the page's own
// scripts (scripts added over the debugging protocol are exempt from the page's CSP).
func addScript(source string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: source})
		return err
	})
}

// viewport sets the tab's size (a phone: 390×844 at scale 2, mobile).
func viewport(w, h int64, mobile bool) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		scale := 1.0
		if mobile {
			scale = 2
		}
		_, err := cdp.Call(ctx, t, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{Width: w, Height: h, DeviceScaleFactor: scale, Mobile: mobile})
		return err
	})
}

// apiIDs asks the API directly (anonymous, as the page does) for a page of device IDs.
func (s *site) apiIDs(query string, vars map[string]any, field string) []string {
	s.t.Helper()
	r := testutil.PostGraphQL(context.Background(), s.t, s.url, "", query, vars)
	if len(r.Errors) > 0 {
		s.t.Fatalf("API: %v", r.Errors)
	}
	var out map[string]struct {
		Edges []struct{ Node struct{ ID string } }
	}
	if err := json.Unmarshal(r.Data, &out); err != nil {
		s.t.Fatal(err)
	}
	var ids []string
	for _, e := range out[field].Edges {
		ids = append(ids, e.Node.ID)
	}
	return ids
}

const rowIDs = `[...document.querySelectorAll('#devices tbody tr')].map(r => r.dataset.id)`

func sameIDs(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%s: the table shows\n%v\nthe API answers\n%v", what, got, want)
	}
}

// TestExplorerInBrowser drives the public explorer in Chromium against a real gateway on the
// 3,000-device demo: totals and charts, filters, order, pages forward and back, search by name
// and by ID prefix, shareable URLs, a device's page; first paint is measured; no page and no
// GraphQL response carries a user identifier; no request is refused by the gateway's limits;
// the page violates no CSP directive.
func TestExplorerInBrowser(t *testing.T) {
	s := newSite(t, 3000, false)
	ctx := browser(t)
	step(t, ctx, "open the explorer", addScript(recordViolations), chromedp.Navigate(s.url+"/"))
	waitJS(t, ctx, "the device table and the totals", `document.querySelectorAll('#devices tbody tr').length === 25 && document.querySelector('.totals')`)

	// First paint, from Paint Timing and Navigation Timing; logged, asserted only generously.
	// The first load includes the fresh browser's start-up; the second is a returning visitor.
	for i, what := range []string{"first load (fresh browser)", "second load"} {
		if i > 0 {
			step(t, ctx, "reload the explorer", chromedp.Navigate("about:blank"), chromedp.Navigate(s.url+"/"))
			waitJS(t, ctx, "the device table and the totals", `document.querySelectorAll('#devices tbody tr').length === 25 && document.querySelector('.totals')`)
		}
		timing := mustEval[map[string]float64](t, ctx, `(() => {
		const nav = performance.getEntriesByType('navigation')[0];
		const p = Object.fromEntries(performance.getEntriesByType('paint').map(e => [e.name, e.startTime]));
		const m = n => (performance.getEntriesByName(n)[0] || {}).startTime || -1;
		return { fp: p['first-paint'] || -1, fcp: p['first-contentful-paint'] || -1, dcl: nav.domContentLoadedEventEnd,
			load: nav.loadEventEnd, stats: m('gpugate:stats'), devices: m('gpugate:devices') };
	})()`)
		t.Logf("explorer on 3,000 devices, %s (ms since navigation start): first paint %.0f, first contentful paint %.0f, DOMContentLoaded %.0f, load %.0f, totals shown %.0f, device table shown %.0f",
			what, timing["fp"], timing["fcp"], timing["dcl"], timing["load"], timing["stats"], timing["devices"])
		if timing["fcp"] <= 0 || timing["fcp"] > 5000 || timing["devices"] <= 0 || timing["devices"] > 10000 {
			t.Errorf("first contentful paint %.0f ms, device table %.0f ms: far beyond the 1 s goal", timing["fcp"], timing["devices"])
		}
	}

	if got := mustEval[string](t, ctx, `document.querySelector('.totals .n').textContent`); got != "3,000" {
		t.Errorf("device total shows %q, want 3,000", got)
	}
	if n := mustEval[int](t, ctx, `document.querySelectorAll('figure.chart svg rect.bar').length`); n < 8 {
		t.Errorf("%d bars in the charts, want the four breakdowns drawn", n)
	}
	const list = `query($first: Int!, $after: String, $filter: DeviceFilter, $orderBy: DeviceOrder) { devices(first: $first, after: $after, filter: $filter, orderBy: $orderBy) { edges { node { id } } pageInfo { endCursor } } }`
	page1 := s.apiIDs(list, map[string]any{"first": 25}, "devices")
	sameIDs(t, "first page", mustEval[[]string](t, ctx, rowIDs), page1)
	s.checkNoIdentifier("the explorer's DOM", domText(t, ctx))
	screenshot(t, ctx, "explorer")

	// Pages: Next, Next, Previous, Previous, each matching the API's keyset pages.
	cursor := func(ids []string, vars map[string]any) string {
		resp := testutil.PostGraphQL(context.Background(), t, s.url, "", list, vars)
		var out struct {
			Devices struct{ PageInfo struct{ EndCursor string } }
		}
		_ = json.Unmarshal(resp.Data, &out)
		return out.Devices.PageInfo.EndCursor
	}
	c1 := cursor(page1, map[string]any{"first": 25})
	page2 := s.apiIDs(list, map[string]any{"first": 25, "after": c1}, "devices")
	c2 := cursor(page2, map[string]any{"first": 25, "after": c1})
	page3 := s.apiIDs(list, map[string]any{"first": 25, "after": c2}, "devices")
	step(t, ctx, "next page", chromedp.Click(chromedp.ID("p-next")))
	waitJS(t, ctx, "page 2", `document.querySelector('.pager .where').textContent.startsWith('Page 2') && location.search.includes('after=')`)
	sameIDs(t, "second page", mustEval[[]string](t, ctx, rowIDs), page2)
	step(t, ctx, "next page", chromedp.Click(chromedp.ID("p-next")))
	waitJS(t, ctx, "page 3", `document.querySelector('.pager .where').textContent.startsWith('Page 3')`)
	sameIDs(t, "third page", mustEval[[]string](t, ctx, rowIDs), page3)
	page3URL := mustEval[string](t, ctx, `location.href`)
	step(t, ctx, "previous page", chromedp.Click(chromedp.ID("p-prev")))
	waitJS(t, ctx, "back on page 2", `document.querySelector('.pager .where').textContent.startsWith('Page 2')`)
	sameIDs(t, "second page again", mustEval[[]string](t, ctx, rowIDs), page2)
	step(t, ctx, "previous page", chromedp.Click(chromedp.ID("p-prev")))
	waitJS(t, ctx, "back on page 1", `document.querySelector('.pager .where').textContent.startsWith('Page 1') && document.getElementById('p-prev').disabled`)
	sameIDs(t, "first page again", mustEval[[]string](t, ctx, rowIDs), page1)
	// The browser's Back button walks the same pages.
	step(t, ctx, "history back", chromedp.NavigateBack())
	waitJS(t, ctx, "page 2 after Back", `document.querySelector('.pager .where').textContent.startsWith('Page 2')`)
	sameIDs(t, "page 2 after Back", mustEval[[]string](t, ctx, rowIDs), page2)
	// A shared page-3 URL opens on page 3, and Previous still works from it.
	step(t, ctx, "open a shared page-3 URL", chromedp.Navigate(page3URL))
	waitJS(t, ctx, "page 3 from its URL", `document.querySelectorAll('#devices tbody tr').length === 25 && document.querySelector('.pager .where').textContent.startsWith('Page 3')`)
	sameIDs(t, "page 3 from its URL", mustEval[[]string](t, ctx, rowIDs), page3)
	step(t, ctx, "previous page", chromedp.Click(chromedp.ID("p-prev")))
	waitJS(t, ctx, "page 2 from the shared URL", `document.querySelector('.pager .where').textContent.startsWith('Page 2')`)
	sameIDs(t, "page 2 from the shared URL", mustEval[[]string](t, ctx, rowIDs), page2)

	// Filters: status UP, then a GPU model from the chart's data, ordered by name.
	step(t, ctx, "back to the start", chromedp.Navigate(s.url+"/"))
	waitJS(t, ctx, "the table", `document.querySelectorAll('#devices tbody tr').length === 25 && document.getElementById('f-model').options.length > 1`)
	model := mustEval[string](t, ctx, `document.getElementById('f-model').options[1].value`)
	mustEval[bool](t, ctx, `(() => { const f = document.getElementById('f-status'); f.value = 'UP'; f.dispatchEvent(new Event('change', {bubbles: true})); return true })()`)
	waitJS(t, ctx, "the UP filter", `location.search.includes('status=UP') && [...document.querySelectorAll('#devices tbody tr td:nth-child(3)')].every(td => td.textContent === 'Up') && !document.getElementById('results').hasAttribute('aria-busy')`)
	sameIDs(t, "status UP", mustEval[[]string](t, ctx, rowIDs), s.apiIDs(list, map[string]any{"first": 25, "filter": map[string]any{"status": "UP"}}, "devices"))
	mustEval[bool](t, ctx, `(() => { const f = document.getElementById('f-model'); f.value = `+jsString(model)+`; f.dispatchEvent(new Event('change', {bubbles: true})); return true })()`)
	waitJS(t, ctx, "the model filter", `location.search.includes('model=') && !document.getElementById('results').hasAttribute('aria-busy') && [...document.querySelectorAll('#devices tbody tr td:nth-child(4)')].every(td => td.title === `+jsString(model)+`)`)
	step(t, ctx, "sort by name", chromedp.Click(chromedp.CSS(`button[data-order="NAME_ASC"]`)))
	waitJS(t, ctx, "name order", `location.search.includes('order=NAME_ASC') && !document.getElementById('results').hasAttribute('aria-busy') && document.querySelector('th[aria-sort="ascending"]')`)
	if o := mustEval[string](t, ctx, `document.getElementById('f-order').value`); o != "NAME_ASC" {
		t.Errorf("after sorting by the Name header the Order control shows %q", o)
	}
	filter := map[string]any{"status": "UP", "gpuModel": model}
	order := map[string]any{"field": "NAME", "direction": "ASC"}
	sameIDs(t, "UP, model, by name", mustEval[[]string](t, ctx, rowIDs), s.apiIDs(list, map[string]any{"first": 25, "filter": filter, "orderBy": order}, "devices"))
	screenshot(t, ctx, "explorer-filtered")
	// The URL holds the view: opened afresh, it shows the same filters and rows.
	shared := mustEval[string](t, ctx, `location.href`)
	step(t, ctx, "open the shared URL", chromedp.Navigate("about:blank"), chromedp.Navigate(shared))
	waitJS(t, ctx, "the shared view", `document.querySelector('#devices tbody tr') && document.getElementById('f-status').value === 'UP' && document.getElementById('f-order').value === 'NAME_ASC'`)
	sameIDs(t, "shared URL", mustEval[[]string](t, ctx, rowIDs), s.apiIDs(list, map[string]any{"first": 25, "filter": filter, "orderBy": order}, "devices"))

	// Search by name and by device ID prefix.
	const search = `query($q: String!) { searchDevices(query: $q, first: 25) { edges { node { id name } } } }`
	var first struct{ ID, Name string }
	if err := s.x.Get(&first, `SELECT id::text AS id, name FROM devices WHERE removed_at IS NULL ORDER BY created_at DESC LIMIT 1`); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{first.Name, first.ID[:8]} {
		step(t, ctx, "search "+q, chromedp.Navigate(s.url+"/"))
		waitJS(t, ctx, "the table", `document.querySelector('#devices tbody tr')`)
		step(t, ctx, "type the search", chromedp.SendKeys(chromedp.ID("f-q"), q), chromedp.Click(chromedp.CSS(`form.filters button[type=submit]`)))
		waitJS(t, ctx, "search results for "+q, `location.search.includes('q=') && !document.getElementById('results').hasAttribute('aria-busy') && document.querySelector('#devices tbody tr[data-id="`+first.ID+`"]')`)
		sameIDs(t, "search "+q, mustEval[[]string](t, ctx, rowIDs), s.apiIDs(search, map[string]any{"q": q}, "searchDevices"))
	}
	screenshot(t, ctx, "explorer-search")
	// Too short to search: the page explains instead of sending a request the API refuses.
	step(t, ctx, "a too-short search", chromedp.Navigate(s.url+"/?q=ab"))
	waitJS(t, ctx, "the hint", `document.querySelector('#results .notice.warn') && document.querySelector('#results .notice.warn').textContent.includes('at least 3 characters')`)

	// A device's page, reached by its link.
	step(t, ctx, "search again", chromedp.Navigate(s.url+"/?q="+first.ID[:8]))
	waitJS(t, ctx, "the result", `document.querySelector('#devices tbody tr a')`)
	step(t, ctx, "open the device", chromedp.Click(chromedp.CSS(`#devices tbody tr[data-id="`+first.ID+`"] a`)))
	waitJS(t, ctx, "the device page", `location.pathname === '/devices/`+first.ID+`' && document.getElementById('facts') && document.getElementById('gpus')`)
	var gpus int
	if err := s.x.Get(&gpus, `SELECT count(*) FROM gpus WHERE device_id = $1`, first.ID); err != nil {
		t.Fatal(err)
	}
	if n := mustEval[int](t, ctx, `document.querySelectorAll('#gpus tbody tr').length`); n != gpus {
		t.Errorf("device page lists %d GPUs, want %d", n, gpus)
	}
	if h := mustEval[string](t, ctx, `document.querySelector('h1').textContent`); h != first.Name {
		t.Errorf("device page title %q, want %q", h, first.Name)
	}
	s.checkNoIdentifier("the device page's DOM", domText(t, ctx))
	screenshot(t, ctx, "device")
	step(t, ctx, "an unknown device", chromedp.Navigate(s.url+"/devices/00000000-0000-4000-8000-000000000000"))
	waitJS(t, ctx, "not found", `document.querySelector('h1') && document.querySelector('h1').textContent === 'Device not found'`)

	// A phone-sized screen: the same page, readable (no horizontal scrolling of the page).
	step(t, ctx, "phone viewport", viewport(390, 844, true), chromedp.Navigate(s.url+"/"))
	waitJS(t, ctx, "the table on a phone", `document.querySelectorAll('#devices tbody tr').length === 25`)
	screenshot(t, ctx, "explorer-phone")
	mustEval[bool](t, ctx, `(document.getElementById('devices').scrollIntoView(), true)`)
	if w := mustEval[float64](t, ctx, `document.documentElement.scrollWidth - window.innerWidth`); w > 1 {
		t.Errorf("the page is %v px wider than a phone's screen", w)
	}
	screenshot(t, ctx, "explorer-table-phone")
	step(t, ctx, "desktop viewport", viewport(1280, 900, false))

	if v := mustEval[string](t, ctx, `window.__violations.join('\n')`); v != "" {
		t.Errorf("CSP violations:\n%s", v)
	}
	n := s.checkResponses()

	// The API goes down under an open page: the next request says so, with a Retry button.
	s.srv.Close()
	step(t, ctx, "next page with the API down", chromedp.Click(chromedp.ID("p-next")))
	waitJS(t, ctx, "the API-down notice", `document.querySelector('#results .notice.error') && document.querySelector('#results .notice.error').textContent.includes('could not be reached') && document.querySelector('#results .notice.error button')`)
	screenshot(t, ctx, "explorer-api-down")
	t.Logf("%d anonymous GraphQL responses checked", n)
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

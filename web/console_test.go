package web_test

import (
	"context"
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/guard"
	"github.com/gpugate/gpugate/internal/testutil"
	"github.com/gpugate/gpugate/oidc/devissuer"
	"github.com/gpugate/gpugate/web"
)

// signIn walks the console's sign-in in the browser: /console/, Sign in, the dev issuer's
// login page, the demo user's button, back to /console/ with a code the page exchanges.
func signIn(t *testing.T, ctx context.Context, s *site, user string) {
	t.Helper()
	step(t, ctx, "open the console", chromedp.Navigate(s.url+web.ConsolePath))
	waitJS(t, ctx, "the sign-in button", `document.getElementById('sign-in')`)
	step(t, ctx, "sign in", chromedp.Click(chromedp.ID("sign-in")))
	iss, _ := url.Parse(s.issuer)
	waitJS(t, ctx, "the dev issuer's login page", `location.host === '`+iss.Host+`' && document.querySelector('button[value="`+user+`"]')`)
	step(t, ctx, "pick "+user, chromedp.Click(chromedp.CSS(`button[value="`+user+`"]`)))
	waitJS(t, ctx, "the console signed in as "+user, `location.host !== '`+iss.Host+`' && document.getElementById('sign-out') && (document.getElementById('mine') || document.querySelector('#main .notice.empty'))`)
	if u := mustEval[string](t, ctx, `location.href`); strings.Contains(u, "code=") || strings.Contains(u, "state=") {
		t.Errorf("the authorization code stays in the URL after sign-in: %s", u)
	}
	if n := mustEval[int](t, ctx, `sessionStorage.length + localStorage.length`); n != 0 {
		t.Errorf("%d items left in web storage after sign-in; the token must live in memory only", n)
	}
}

// token signs user in at the dev issuer (code + PKCE, as the console does) for the test's own
// API calls.
func (s *site) token(user string) string {
	s.t.Helper()
	tok, err := devissuer.FetchToken(context.Background(), s.issuer, "gpugate-dev", "http://127.0.0.1"+web.ConsolePath, user)
	if err != nil {
		s.t.Fatalf("token for %s: %v", user, err)
	}
	return tok
}

type apiDevice struct {
	Name, Status string
	Private      struct{ Labels []string }
}

// device reads a device through the API with token ("" anonymous).
func (s *site) device(token, id string) apiDevice {
	s.t.Helper()
	r := testutil.PostGraphQL(context.Background(), s.t, s.url, token, `query($id: ID!) { device(id: $id) { name status private { labels } } }`, map[string]any{"id": id})
	var out struct{ Device apiDevice }
	r.Decode(s.t, &out)
	return out.Device
}

func ownedBy(t *testing.T, s *site, user string) []string {
	t.Helper()
	var ids []string
	if err := s.x.Select(&ids, `SELECT d.id::text FROM devices d JOIN users u ON u.id = d.owner_id
		WHERE u.email = $1 AND d.removed_at IS NULL ORDER BY d.created_at DESC, d.id DESC`, user+"@example.com"); err != nil {
		t.Fatal(err)
	}
	return ids
}

// activeOwnedBy returns user's newest device that is neither paused nor quarantined (the demo
// seed pauses some at random), so the console offers Pause for it.
func activeOwnedBy(t *testing.T, s *site, user string) string {
	t.Helper()
	var id string
	if err := s.x.Get(&id, `SELECT d.id::text FROM devices d JOIN users u ON u.id = d.owner_id
		WHERE u.email = $1 AND d.removed_at IS NULL AND NOT d.paused AND d.quarantined_at IS NULL
		ORDER BY d.created_at DESC, d.id DESC LIMIT 1`, user+"@example.com"); err != nil {
		t.Fatalf("an active device of %s: %v", user, err)
	}
	return id
}

// TestConsoleInBrowser: the owner signs in through the dev issuer (code + PKCE), sees exactly
// their devices, renames one and sees the new name in the public table, pauses and resumes it,
// creates an enrollment token with its worker command, reads keys and proofs, signs out.
// Another user does not see the device and a forged mutation with their token is refused. An
// admin sees the kill switches and the audit log; with device writes switched off the owner
// console shows the DISABLED state.
func TestConsoleInBrowser(t *testing.T) {
	s := newSite(t, 60, true)
	ctx := browser(t)
	step(t, ctx, "record CSP violations", addScript(recordViolations))

	mine := ownedBy(t, s, "alice")
	if len(mine) != db.DemoDevicesPerUser {
		t.Fatalf("alice owns %d devices", len(mine))
	}
	target := activeOwnedBy(t, s, "alice")
	// The device has a worker key (added through the API) and a flagged proof in its history.
	pub := make([]byte, 32)
	pub[0] = 7
	testutil.PostGraphQL(context.Background(), t, s.url, s.token("alice"), `mutation($id: ID!, $k: String!) { addDeviceKey(id: $id, publicKey: $k) { id } }`,
		map[string]any{"id": target, "k": base64.StdEncoding.EncodeToString(pub)}).Decode(t, &struct{}{})
	s.x.MustExec(`INSERT INTO attestations (device_id, verdict, reasons) VALUES ($1, 'FLAGGED', '{GPU_COUNT_MISMATCH,SIMULATED_GPU}')`, target)

	signIn(t, ctx, s, "alice")
	if mustEval[bool](t, ctx, `!!document.getElementById('switches') || !!document.getElementById('show-admin')`) {
		t.Errorf("alice, no admin, is offered the admin tools")
	}
	sameIDs(t, "alice's devices", mustEval[[]string](t, ctx, `[...document.querySelectorAll('#mine tbody tr')].map(r => r.dataset.id)`), mine)
	if who := mustEval[string](t, ctx, `document.getElementById('who-name').textContent`); who != "Signed in as Alice" {
		t.Errorf("header says %q", who)
	}
	step(t, ctx, "manage a device", chromedp.Click(chromedp.CSS(`#mine tr[data-id="`+target+`"] button.manage`)))
	waitJS(t, ctx, "the device's details", `document.getElementById('rename') && document.getElementById('keys') && document.getElementById('attestations')`)
	if h := mustEval[string](t, ctx, `document.getElementById('attestations').textContent`); !strings.Contains(h, "GPU_COUNT_MISMATCH") || !strings.Contains(h, "SIMULATED_GPU") || !strings.Contains(h, "Flagged") {
		t.Errorf("attestation history shows %q, want the flagged proof's reasons", h)
	}
	if n := mustEval[int](t, ctx, `document.querySelectorAll('#keys tbody tr').length`); n != 1 {
		t.Errorf("%d worker keys shown, want 1", n)
	}
	screenshot(t, ctx, "console")

	const newName = "alice-renamed-h100"
	step(t, ctx, "rename and relabel",
		chromedp.Clear(chromedp.ID("d-name")), chromedp.SendKeys(chromedp.ID("d-name"), newName),
		chromedp.Clear(chromedp.ID("d-labels")), chromedp.SendKeys(chromedp.ID("d-labels"), "rack-7, spare"),
		chromedp.Click(chromedp.CSS(`#rename button[type=submit]`)))
	waitJS(t, ctx, "the saved name", `document.querySelector('#flash .notice.ok') && document.getElementById('h-detail').textContent === '`+newName+`'`)
	aliceToken := s.token("alice")
	if got := s.device(aliceToken, target); got.Name != newName || strings.Join(got.Private.Labels, ",") != "rack-7,spare" {
		t.Errorf("after Save the device is %+v", got)
	}

	step(t, ctx, "pause", chromedp.Click(chromedp.ID("pause")))
	waitJS(t, ctx, "paused", `document.getElementById('resume') && document.querySelector('#mine tr[data-id="`+target+`"] .b-PAUSED')`)
	step(t, ctx, "resume", chromedp.Click(chromedp.ID("resume")))
	waitJS(t, ctx, "resumed", `document.getElementById('pause') && !document.querySelector('#mine tr[data-id="`+target+`"] .b-PAUSED')`)

	step(t, ctx, "create an enrollment token", chromedp.Click(chromedp.ID("create-token")))
	waitJS(t, ctx, "the worker command", `document.getElementById('worker-command')`)
	cmd := mustEval[string](t, ctx, `document.getElementById('worker-command').textContent`)
	if !strings.HasPrefix(cmd, "gpugate worker --server "+s.url+" --enroll ") || !strings.HasSuffix(cmd, " --key-file worker-key.json") {
		t.Errorf("worker command %q", cmd)
	}
	screenshot(t, ctx, "console-device")

	// The public table shows the new name (anonymous, as anyone sees it).
	step(t, ctx, "search the explorer", chromedp.Navigate(s.url+"/?q="+newName))
	waitJS(t, ctx, "the renamed device in the public table", `document.querySelector('#devices tr[data-id="`+target+`"] a') && document.querySelector('#devices tr[data-id="`+target+`"] a').textContent === '`+newName+`'`)
	s.checkNoIdentifier("the explorer's DOM after the owner's sign-in", domText(t, ctx))

	// A new page load holds no token: the console asks to sign in again.
	step(t, ctx, "reopen the console", chromedp.Navigate(s.url+web.ConsolePath))
	waitJS(t, ctx, "signed out after a reload", `document.getElementById('sign-in') && !document.getElementById('sign-out')`)

	// Bob: the device is not in his list, and a forged rename with his token is refused.
	signIn(t, ctx, s, "bob")
	if html := domText(t, ctx); strings.Contains(html, target) || strings.Contains(html, newName) {
		t.Errorf("bob's console shows alice's device")
	}
	r := testutil.PostGraphQL(context.Background(), t, s.url, s.token("bob"),
		`mutation($id: ID!) { updateDevice(id: $id, input: {name: "stolen"}) { id name } }`, map[string]any{"id": target})
	if len(r.Errors) != 1 || (r.Errors[0].Code() != gateway.CodeForbidden && r.Errors[0].Code() != gateway.CodeNotFound) {
		t.Errorf("bob's forged rename answered %s", r.RawBody)
	}
	if got := s.device(aliceToken, target); got.Name != newName {
		t.Errorf("after bob's forged rename the name is %q", got.Name)
	}
	step(t, ctx, "bob signs out", chromedp.Click(chromedp.ID("sign-out")))
	waitJS(t, ctx, "signed out", `document.getElementById('signed-out') && !document.getElementById('mine')`)

	// The admin: kill switches and the audit log; device writes switched off show DISABLED.
	signIn(t, ctx, s, "admin")
	waitJS(t, ctx, "the admin section", `document.getElementById('switches') && document.getElementById('audit-table')`)
	if !mustEval[bool](t, ctx, `[...document.querySelectorAll('#audit-table td')].some(td => td.textContent === 'updateDevice')`) {
		t.Errorf("the audit log does not show alice's updateDevice")
	}
	// Signing in probes nothing: no refused admin query of alice or bob is in the audit log.
	if mustEval[bool](t, ctx, `[...document.querySelectorAll('#audit-table td')].some(td => td.textContent === 'writeSwitches')`) {
		t.Errorf("the non-admins' sign-ins left refused admin queries in the audit log")
	}
	step(t, ctx, "disable device writes",
		chromedp.SendKeys(chromedp.ID("switch-reason"), "maintenance"),
		chromedp.Click(chromedp.CSS(`#switches tr[data-class="DEVICE_METADATA"] button`)))
	waitJS(t, ctx, "the switch off", `document.querySelector('#switches tr[data-class="DEVICE_METADATA"]') && document.querySelector('#switches tr[data-class="DEVICE_METADATA"]').textContent.includes('DISABLED')`)
	screenshot(t, ctx, "console-admin")
	adminDev := activeOwnedBy(t, s, "admin")
	step(t, ctx, "manage the admin's device", chromedp.Click(chromedp.CSS(`#mine tr[data-id="`+adminDev+`"] button.manage`)))
	waitJS(t, ctx, "the details", `document.getElementById('pause')`)
	step(t, ctx, "pause while disabled", chromedp.Click(chromedp.ID("pause")))
	waitJS(t, ctx, "the DISABLED notice", `document.querySelector('#flash .notice.warn') && document.querySelector('#flash').textContent.includes('switched off by an operator') && document.querySelector('#flash').textContent.includes('maintenance')`)
	screenshot(t, ctx, "console-disabled")
	step(t, ctx, "enable device writes", chromedp.Click(chromedp.CSS(`#switches tr[data-class="DEVICE_METADATA"] button`)))
	waitJS(t, ctx, "the switch on", `document.querySelector('#switches tr[data-class="DEVICE_METADATA"]') && document.querySelector('#switches tr[data-class="DEVICE_METADATA"]').textContent.includes('accepting writes')`)

	// Quarantine alice's device from the admin form; the public table shows it.
	step(t, ctx, "quarantine",
		chromedp.SendKeys(chromedp.ID("q-id"), target), chromedp.SendKeys(chromedp.ID("q-reason"), "counterfeit suspicion"),
		chromedp.Click(chromedp.CSS(`#quarantine button[value=quarantine]`)))
	waitJS(t, ctx, "quarantined", `document.querySelector('#flash .notice.ok') && document.querySelector('#flash').textContent.includes('Quarantined')`)
	if got := s.device("", target); got.Status != "QUARANTINED" {
		t.Errorf("after quarantine the device's status is %q", got.Status)
	}
	step(t, ctx, "release", chromedp.Click(chromedp.CSS(`#quarantine button[value=release]`)))
	waitJS(t, ctx, "released", `document.querySelector('#flash').textContent.includes('Released')`)

	if v := mustEval[string](t, ctx, `window.__violations.join('\n')`); v != "" {
		t.Errorf("CSP violations:\n%s", v)
	}
	s.checkResponses()
}

// TestConsoleRateLimitedInBrowser: when the gateway's write limits refuse a write
// (RATE_LIMITED, with Retry-After), the console says so and when to retry, and changes nothing.
func TestConsoleRateLimitedInBrowser(t *testing.T) {
	s := newSite(t, 20, true, func(c *gateway.Config) {
		c.WriteLimits = guard.LimitConfig{Target: guard.Rate{Burst: 1, Every: time.Hour}}
	})
	ctx := browser(t)
	target := activeOwnedBy(t, s, "alice")
	signIn(t, ctx, s, "alice")
	step(t, ctx, "manage a device", chromedp.Click(chromedp.CSS(`#mine tr[data-id="`+target+`"] button.manage`)))
	waitJS(t, ctx, "the details", `document.getElementById('pause')`)
	step(t, ctx, "pause", chromedp.Click(chromedp.ID("pause")))
	waitJS(t, ctx, "paused", `document.getElementById('resume')`)
	step(t, ctx, "resume at once", chromedp.Click(chromedp.ID("resume")))
	waitJS(t, ctx, "the rate-limited notice", `document.querySelector('#flash .notice.warn') && /rate-limited.*RATE_LIMITED.*Try again in \d+ s/.test(document.querySelector('#flash').textContent)`)
	screenshot(t, ctx, "console-rate-limited")
	if got := s.device("", target); got.Status != "PAUSED" {
		t.Errorf("after the refused resume the device is %q", got.Status)
	}
}

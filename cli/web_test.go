package cli

import (
	"testing"

	"github.com/gpugate/gpugate/web"
)

// TestWebOptions: the console signs in with the dev issuer's client in dev mode, with
// --console-client-id at the first trusted issuer otherwise, and offers no sign-in without a
// client; a malformed --console-issuer is refused at start.
func TestWebOptions(t *testing.T) {
	parse := func(args ...string) webFlags {
		f := newFlags("serve", "")
		w := addWebFlags(f)
		if err := f.parse(args); err != nil {
			t.Fatal(err)
		}
		return w
	}
	issuers := []string{"https://a.example/", "https://b.example/"}
	for _, c := range []struct {
		name      string
		args      []string
		issuers   []string
		devClient string
		want      web.Options
	}{
		{"dev issuer", nil, []string{"http://127.0.0.1:4444"}, devClientID, web.Options{Issuer: "http://127.0.0.1:4444", ClientID: devClientID}},
		{"production client", []string{"--console-client-id", "spa"}, issuers, "", web.Options{Issuer: "https://a.example/", ClientID: "spa"}},
		{"explicit issuer", []string{"--console-client-id", "spa", "--console-issuer", "https://b.example/"}, issuers, "", web.Options{Issuer: "https://b.example/", ClientID: "spa"}},
		{"no client", nil, issuers, "", web.Options{}},
	} {
		got := parse(c.args...).options(c.issuers, c.devClient, "groups", "ADMIN")
		if got.Issuer != c.want.Issuer || got.ClientID != c.want.ClientID || got.Scopes != "openid profile email" || got.RolesClaim != "groups" || got.AdminRole != "ADMIN" {
			t.Errorf("%s: %+v, want issuer %q client %q", c.name, got, c.want.Issuer, c.want.ClientID)
		}
	}
	for _, bad := range []string{"not a url", "ftp://x.example/", "/relative"} {
		if err := parse("--console-issuer", bad).check(); err == nil {
			t.Errorf("--console-issuer %q accepted", bad)
		}
	}
	if devConsoleRedirectURI != "http://127.0.0.1/console/" {
		t.Errorf("dev console redirect URI %q", devConsoleRedirectURI)
	}
}

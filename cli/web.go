package cli

import (
	"fmt"
	"net/url"

	"github.com/gpugate/gpugate/web"
)

// webFlags are serve's settings of the owner console's sign-in (docs/web.md). The explorer
// needs none.
type webFlags struct {
	issuer, clientID, scopes, audience *string
}

func addWebFlags(f *envFlags) webFlags {
	return webFlags{
		issuer: f.String("console-issuer", "GPUGATE_CONSOLE_ISSUER", "",
			"OIDC issuer the console at /console/ signs in with (default: the first --oidc-issuer, or the dev issuer)"),
		clientID: f.String("console-client-id", "GPUGATE_CONSOLE_CLIENT_ID", "",
			"the console's public OAuth client at the issuer (authorization code + PKCE, no secret, redirect URI <origin>/console/); "+
				"default in dev mode: the dev issuer's client; empty otherwise: the console offers no sign-in"),
		scopes: f.String("console-scopes", "GPUGATE_CONSOLE_SCOPES", "openid profile email", "scopes the console requests at sign-in"),
		audience: f.String("console-audience", "GPUGATE_CONSOLE_AUDIENCE", "",
			"audience parameter of the console's authorization request, for issuers that pick the access token's audience from it (Auth0: your API identifier)"),
	}
}

// check returns an error for a --console-issuer that is not an absolute http(s) URL.
func (w webFlags) check() error {
	if *w.issuer == "" {
		return nil
	}
	u, err := url.Parse(*w.issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("--console-issuer must be an absolute http(s) URL, got %q", *w.issuer)
	}
	return nil
}

// options returns the web UI's options: the console signs in with --console-issuer, or else
// the first trusted issuer; devClient (non-empty when the dev issuer runs) is the client ID
// unless --console-client-id names another.
// rolesClaim and adminRole are serve's --oidc-roles-claim and --admin-role.
func (w webFlags) options(issuers []string, devClient, rolesClaim, adminRole string) web.Options {
	o := web.Options{Issuer: *w.issuer, ClientID: *w.clientID, Scopes: *w.scopes, Audience: *w.audience,
		RolesClaim: rolesClaim, AdminRole: adminRole}
	if o.Issuer == "" && len(issuers) > 0 {
		o.Issuer = issuers[0]
	}
	if o.ClientID == "" {
		o.ClientID = devClient
	}
	if o.ClientID == "" {
		o.Issuer = "" // no client: no sign-in offered
	}
	return o
}

// devConsoleRedirectURI is the console's redirect URI at the dev issuer: a loopback URI, which
// matches the gateway's origin on any port and any loopback host (RFC 8252 §7.3).
const devConsoleRedirectURI = "http://127.0.0.1" + web.ConsolePath

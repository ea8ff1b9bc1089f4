package main

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/gpugate/gpugate/internal/testutil"
	"github.com/gpugate/gpugate/oidc/devissuer"
)

// consoleSignIn signs alice in at a dev-mode gateway's issuer exactly as the console does
// (authorization code + PKCE, public client, redirect URI <gateway origin>/console/, which the
// dev issuer must have registered) and checks the API accepts the token (docs/web.md).
func consoleSignIn(t *testing.T, addr string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/dev/oidc")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info struct{ Issuer, ClientID string }
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Fatal(err)
	}
	token, err := devissuer.FetchToken(context.Background(), info.Issuer, info.ClientID, "http://"+addr+"/console/", "alice")
	if err != nil {
		t.Fatalf("the console's sign-in at the dev issuer: %v", err)
	}
	r := testutil.PostGraphQL(context.Background(), t, "http://"+addr, token, `{ viewer { displayName } }`, nil)
	if len(r.Errors) > 0 {
		t.Fatalf("viewer with the console's token: %v", r.Errors)
	}
}

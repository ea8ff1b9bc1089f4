package devissuer

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// startFetchStop starts an issuer with o, fetches a token for alice, and stops the issuer; it
// returns the issuer URL and the token.
func startFetchStop(t *testing.T, o Options) (issuer, token string) {
	t.Helper()
	s, err := Start(t.Context(), o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	}()
	token, err = FetchToken(t.Context(), s.Issuer(), testClientID, testRedirect, "alice")
	if err != nil {
		t.Fatalf("FetchToken: %v", err)
	}
	return s.Issuer(), token
}

// verifyAfterRestart starts an issuer with o on the address of issuer and verifies token
// against it the way the gateway does (discovery + JWKS); it returns Verify's error.
func verifyAfterRestart(t *testing.T, o Options, issuer, token string) error {
	t.Helper()
	o.Addr = strings.TrimPrefix(issuer, "http://")
	s, err := Start(t.Context(), o)
	if err != nil {
		t.Fatalf("restart on %s: %v", o.Addr, err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	}()
	p, err := oidc.NewProvider(t.Context(), s.Issuer())
	if err != nil {
		t.Fatalf("NewProvider: %v", err)
	}
	_, err = p.Verifier(&oidc.Config{ClientID: testAudience, SupportedSigningAlgs: []string{"RS256"}}).Verify(t.Context(), token)
	return err
}

func TestKeyFileKeepsTokensValidAcrossRestarts(t *testing.T) {
	o := testOptions()
	o.KeyFile = filepath.Join(t.TempDir(), "dev-issuer.key")
	issuer, token := startFetchStop(t, o)
	fi, err := os.Stat(o.KeyFile)
	if err != nil {
		t.Fatalf("the key was not saved: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	saved, _ := os.ReadFile(o.KeyFile)
	if err := verifyAfterRestart(t, o, issuer, token); err != nil {
		t.Fatalf("a token from before the restart does not verify after it: %v", err)
	}
	if again, _ := os.ReadFile(o.KeyFile); string(again) != string(saved) {
		t.Fatal("the restart replaced the saved key")
	}
	entries, _ := os.ReadDir(filepath.Dir(o.KeyFile))
	if len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}

	// Without a key file every start has its own key: the old token fails (which is what the
	// key file is for).
	o.KeyFile = ""
	issuer, token = startFetchStop(t, o)
	if err := verifyAfterRestart(t, o, issuer, token); err == nil {
		t.Fatal("without KeyFile a token survived a restart; the test above proves nothing")
	}
}

func TestKeyFileThatIsNotAKeyIsRefused(t *testing.T) {
	o := testOptions()
	o.KeyFile = filepath.Join(t.TempDir(), "dev-issuer.key")
	if err := os.WriteFile(o.KeyFile, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Start(t.Context(), o)
	if err == nil {
		_ = s.Close(t.Context())
		t.Fatal("Start accepted a key file holding no key")
	}
	if !strings.Contains(err.Error(), o.KeyFile) || !strings.Contains(err.Error(), "delete the file") {
		t.Fatalf("the error does not name the file and the way out: %v", err)
	}
}

package devissuer

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	jose "github.com/go-jose/go-jose/v4"
)

// keyBits is the size of the RSA signing key.
const keyBits = 2048

// loadOrGenerateKey returns the signing key kept in path, creating it (mode 0600) when the
// file does not exist; with path empty it returns a fresh key that lives as long as the
// process. The key ID is the key's JWK thumbprint (RFC 7638), so a kept key keeps its ID.
// It fails when the file cannot be read or written, or holds no RSA private key.
func loadOrGenerateKey(path string) (signingKey, error) {
	if path == "" {
		return generateKey()
	}
	raw, err := os.ReadFile(path) // #nosec G304 -- Options.KeyFile, the operator's (in the dev state directory)
	if errors.Is(err, fs.ErrNotExist) {
		k, err := generateKey()
		if err != nil {
			return k, err
		}
		if err := writeKey(path, k.key); err != nil {
			return k, err
		}
		// Another process may have created the file first (O_EXCL lost): read what won.
		if raw, err = os.ReadFile(path); err != nil { // #nosec G304 -- as above
			return k, fmt.Errorf("devissuer: signing key %s: %w", path, err)
		}
	} else if err != nil {
		return signingKey{}, fmt.Errorf("devissuer: signing key %s: %w", path, err)
	}
	block, _ := pem.Decode(raw)
	if block == nil || block.Type != "PRIVATE KEY" {
		return signingKey{}, fmt.Errorf("devissuer: signing key %s: no PEM \"PRIVATE KEY\" block (delete the file to make a new key)", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return signingKey{}, fmt.Errorf("devissuer: signing key %s: %w (delete the file to make a new key)", path, err)
	}
	key, ok := parsed.(*rsa.PrivateKey)
	if !ok || key.N.BitLen() < keyBits {
		return signingKey{}, fmt.Errorf("devissuer: signing key %s: not an RSA key of at least %d bits (delete the file to make a new key)", path, keyBits)
	}
	return newSigningKey(key)
}

func generateKey() (signingKey, error) {
	key, err := rsa.GenerateKey(rand.Reader, keyBits)
	if err != nil {
		return signingKey{}, fmt.Errorf("devissuer: generate signing key: %w", err)
	}
	return newSigningKey(key)
}

func newSigningKey(key *rsa.PrivateKey) (signingKey, error) {
	thumb, err := (&jose.JSONWebKey{Key: &key.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		return signingKey{}, fmt.Errorf("devissuer: key ID: %w", err)
	}
	return signingKey{id: base64.RawURLEncoding.EncodeToString(thumb), key: key}, nil
}

// writeKey writes key to path, mode 0600 (the key signs tokens for every demo user, the
// admin included), atomically: a temporary file linked into place, so a concurrent reader
// never sees half a key. Losing the race to another process is not an error: the caller
// reads the file that won.
func writeKey(path string, key *rsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("devissuer: encode signing key: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".dev-issuer-key-*") // CreateTemp: mode 0600
	if err != nil {
		return fmt.Errorf("devissuer: save signing key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("devissuer: save signing key %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("devissuer: save signing key %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("devissuer: save signing key %s: %w", path, err)
	}
	return nil
}

package worker

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeyFile is the worker's state on disk: its Ed25519 device key and, once enrolled, the device
// it is. It is JSON, mode 0600, rewritten atomically.
type KeyFile struct {
	PrivateKey   string `json:"privateKey"`             // base64 (standard) of the 64-byte Ed25519 private key
	DeviceID     string `json:"deviceId,omitempty"`     // set by enrollment
	CredentialID string `json:"credentialId,omitempty"` // the key's credential on the gateway
	Server       string `json:"server,omitempty"`       // the gateway the device enrolled with
	// LastChallengeID is the last challenge a proof was submitted for: the worker never submits
	// twice for one challenge, across restarts too.
	LastChallengeID string `json:"lastChallengeId,omitempty"`

	path string
	key  ed25519.PrivateKey
}

// ErrKeyFileExposed is wrapped by the error for a key file that others can read or write.
var ErrKeyFileExposed = errors.New("key file is accessible to other users")

// Key returns the device's private key.
func (k *KeyFile) Key() ed25519.PrivateKey { return k.key }

// PublicKey returns the device's public key.
func (k *KeyFile) PublicKey() ed25519.PublicKey { return k.key.Public().(ed25519.PublicKey) }

// Path returns the file the key lives in.
func (k *KeyFile) Path() string { return k.path }

// LoadKeyFile reads the key file at path. It returns an error wrapping fs.ErrNotExist when
// there is none, ErrKeyFileExposed when its mode gives group or others any access (the key
// would be usable by them), and a descriptive error when it is not a regular file or cannot
// be parsed.
func LoadKeyFile(path string) (*KeyFile, error) {
	st, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("key file %s is not a regular file (%s)", path, st.Mode().Type())
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; the device key must be private: chmod 600 %s",
			ErrKeyFileExposed, path, perm, path)
	}
	return readKeyFile(path)
}

// readKeyFile parses a key file without the permission check.
func readKeyFile(path string) (*KeyFile, error) {
	data, err := os.ReadFile(path) // #nosec G304 -- the operator's --key-file, whose mode was checked
	if err != nil {
		return nil, err
	}
	var k KeyFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&k); err != nil {
		return nil, fmt.Errorf("key file %s: %v", path, err)
	}
	raw, err := base64.StdEncoding.DecodeString(k.PrivateKey)
	switch {
	case err != nil:
		return nil, fmt.Errorf("key file %s: privateKey is not base64", path)
	case len(raw) == ed25519.SeedSize:
		k.key = ed25519.NewKeyFromSeed(raw)
	case len(raw) == ed25519.PrivateKeySize:
		k.key = ed25519.PrivateKey(raw)
		if !bytes.Equal(ed25519.NewKeyFromSeed(raw[:32]), k.key) {
			return nil, fmt.Errorf("key file %s: privateKey is not a consistent Ed25519 key", path)
		}
	default:
		return nil, fmt.Errorf("key file %s: privateKey is %d bytes, want an Ed25519 key (32 or 64)", path, len(raw))
	}
	k.path = path
	return &k, nil
}

// PublicKeyOf returns the public key in another host's key file (for --clone-uuids-from): its
// permissions are not checked, as only the public half is used.
func PublicKeyOf(path string) (ed25519.PublicKey, error) {
	k, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	return k.PublicKey(), nil
}

// LoadOrCreateKeyFile loads the key file at path, or creates it with a new Ed25519 key (and
// its directory, mode 0700) when there is none. created reports which. Errors are
// LoadKeyFile's and Save's.
func LoadOrCreateKeyFile(path string) (k *KeyFile, created bool, err error) {
	k, err = LoadKeyFile(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("generating the device key: %w", err)
	}
	k = &KeyFile{PrivateKey: base64.StdEncoding.EncodeToString(priv), path: path, key: priv}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("creating the key file's directory: %w", err)
	}
	if err := k.Save(); err != nil {
		return nil, false, err
	}
	return k, true, nil
}

// Save writes the key file atomically: a 0600 temporary file in the same directory, synced,
// renamed over the old one, and the directory synced. It returns an error if any step fails,
// leaving the previous file intact.
func (k *KeyFile) Save() error {
	// #nosec G117 -- this is the key file: it holds the private key by design, written 0600 below
	// and refused by LoadKeyFile when group or others can read it
	data, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return fmt.Errorf("key file: %w", err)
	}
	data = append(data, '\n')
	dir := filepath.Dir(k.path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(k.path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("saving the key file: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // no-op once renamed
	// Close errors after a failed step are dropped: that step's error is reported and the
	// temporary file removed.
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("saving the key file: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("saving the key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("saving the key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("saving the key file: %w", err)
	}
	if err := os.Rename(tmp.Name(), k.path); err != nil {
		return fmt.Errorf("saving the key file: %w", err)
	}
	if d, err := os.Open(dir); err == nil { // #nosec G304 -- the key file's own directory
		_ = d.Sync() // best effort: not every file system supports syncing a directory
		_ = d.Close()
	}
	return nil
}

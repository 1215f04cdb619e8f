package cmk

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/credvault/credvault/internal/keyring"
)

// LocalFile is the name of the local CMK file inside the data directory.
const LocalFile = "cmk.json"

// Local is a CMK kept in a file of the data directory: a development stand-in
// for Key Vault with the same behaviour (RSA-OAEP-256, versions that can be
// rotated and disabled). Its private keys sit on disk, so it is refused in
// Azure (see config).
type Local struct {
	path string
	bits int

	unwraps atomic.Uint64

	mu   sync.Mutex
	file localFile
	keys map[string]*rsa.PrivateKey // by version
}

type localFile struct {
	Name     string         `json:"name"`
	Current  string         `json:"current"`
	Versions []localVersion `json:"versions"`
}

type localVersion struct {
	Version string    `json:"version"`
	Created time.Time `json:"created"`
	Enabled bool      `json:"enabled"`
	PKCS8   []byte    `json:"pkcs8"`
}

var _ keyring.Wrapper = (*Local)(nil)

// LocalOptions configure OpenLocal.
type LocalOptions struct {
	Bits int // RSA modulus size of new versions; default 3072, like the production CMK
}

// OpenLocal loads the key file in dir, creating it with a first version if it
// does not exist.
func OpenLocal(dir string, opt LocalOptions) (*Local, error) {
	if opt.Bits == 0 {
		opt.Bits = 3072
	}
	l := &Local{path: filepath.Join(dir, LocalFile), bits: opt.Bits}
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.load()
	if errors.Is(err, fs.ErrNotExist) {
		l.file = localFile{Name: "credvault-cmk"}
		if _, err = l.addVersion(); err == nil {
			err = l.save()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("local cmk %s: %w", l.path, err)
	}
	return l, nil
}

// Current returns the key id new wraps use.
func (l *Local) Current() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.keyID(l.file.Current)
}

// Wrap wraps key under the current version.
func (l *Local) Wrap(ctx context.Context, key, aad []byte) (keyring.Wrapped, error) {
	if err := ctx.Err(); err != nil {
		return keyring.Wrapped{}, fmt.Errorf("cmk wrap: %w: %w", keyring.ErrUnavailable, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	v := l.file.Current
	priv, err := l.key(v)
	if err != nil {
		return keyring.Wrapped{}, err
	}
	payload := bind(key, aad)
	defer clear(payload)
	b, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &priv.PublicKey, payload, nil)
	if err != nil {
		return keyring.Wrapped{}, fmt.Errorf("cmk wrap: %w", err)
	}
	return keyring.Wrapped{KeyID: l.keyID(v), Bytes: b}, nil
}

// Unwrap unwraps w with the version it names: ErrRevoked when that version
// is disabled or gone, ErrCorrupt when the bytes do not open.
func (l *Local) Unwrap(ctx context.Context, w keyring.Wrapped, aad []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("cmk unwrap: %w: %w", keyring.ErrUnavailable, err)
	}
	l.mu.Lock()
	v, ok := strings.CutPrefix(w.KeyID, l.keyID("")) // keyID reads l.file: under l.mu
	if !ok {
		l.mu.Unlock()
		return nil, fmt.Errorf("cmk unwrap: key id of another key: %w", keyring.ErrRevoked)
	}
	l.unwraps.Add(1)
	priv, err := l.key(v)
	l.mu.Unlock()
	if err != nil {
		return nil, err
	}
	payload, err := rsa.DecryptOAEP(sha256.New(), nil, priv, w.Bytes, nil)
	if err != nil {
		return nil, fmt.Errorf("cmk unwrap: %w", keyring.ErrCorrupt)
	}
	return unbind(payload, aad)
}

// Unwraps returns how many unwraps were asked of this key so far.
func (l *Local) Unwraps() uint64 { return l.unwraps.Load() }

// Rotate adds a new version and makes it current, like Key Vault's rotation
// policy does. It returns the new key id.
func (l *Local) Rotate() (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.load(); err != nil {
		return "", err
	}
	v, err := l.addVersion()
	if err != nil {
		return "", err
	}
	return l.keyID(v), l.save()
}

// SetEnabled enables or disables a version (by key id or bare version), as a
// customer revoking the key would.
func (l *Local) SetEnabled(id string, enabled bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.load(); err != nil {
		return err
	}
	v := strings.TrimPrefix(id, l.keyID(""))
	for i := range l.file.Versions {
		if l.file.Versions[i].Version == v {
			l.file.Versions[i].Enabled = enabled
			return l.save()
		}
	}
	return fmt.Errorf("cmk: no version %q", v)
}

func (l *Local) keyID(version string) string {
	return "local:" + l.file.Name + "/" + version
}

// key returns the private key of an enabled version, re-reading the file
// once when the version is unknown or disabled (another process may have
// rotated or re-enabled it); l.mu is held.
func (l *Local) key(v string) (*rsa.PrivateKey, error) {
	for attempt := 0; ; attempt++ {
		for _, lv := range l.file.Versions {
			if lv.Version != v || !lv.Enabled {
				continue
			}
			if k, ok := l.keys[v]; ok {
				return k, nil
			}
		}
		if attempt > 0 {
			return nil, fmt.Errorf("cmk version disabled or missing: %w", keyring.ErrRevoked)
		}
		if err := l.load(); err != nil {
			return nil, fmt.Errorf("cmk: %w: %w", keyring.ErrUnavailable, err)
		}
	}
}

func (l *Local) addVersion() (string, error) {
	priv, err := rsa.GenerateKey(rand.Reader, l.bits)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", err
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return "", err
	}
	v := hex.EncodeToString(id)
	l.file.Versions = append(l.file.Versions, localVersion{Version: v, Created: time.Now().UTC(), Enabled: true, PKCS8: der})
	l.file.Current = v
	if l.keys == nil {
		l.keys = map[string]*rsa.PrivateKey{}
	}
	l.keys[v] = priv
	return v, nil
}

func (l *Local) load() error {
	b, err := os.ReadFile(l.path)
	if err != nil {
		return err
	}
	var f localFile
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	keys := make(map[string]*rsa.PrivateKey, len(f.Versions))
	for _, v := range f.Versions {
		k, err := x509.ParsePKCS8PrivateKey(v.PKCS8)
		if err != nil {
			return fmt.Errorf("version %s: %w", v.Version, err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return fmt.Errorf("version %s: not an RSA key", v.Version)
		}
		keys[v.Version] = rk
	}
	l.file, l.keys = f, keys
	return nil
}

// save writes the file atomically: temp file, fsync, rename.
func (l *Local) save() error {
	b, err := json.MarshalIndent(l.file, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(l.path), ".cmk-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), l.path)
}

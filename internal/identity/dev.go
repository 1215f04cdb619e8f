package identity

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// Dev mode constants. Dev tokens look like Entra v2 access tokens from a
// fixed, fake tenant, so the HTTP layer and the verifier cannot tell them
// apart from Entra's except by issuer and key.
const (
	// DevTenant is the tid of every dev token. It is not a real tenant.
	DevTenant = "6c2d3e4f-0d3e-4c1a-9d3e-00000000c0de"
	// DevIssuer is the iss of every dev token.
	DevIssuer = "https://credvault.dev.local/" + DevTenant + "/v2.0"
	// DevAudience is the aud of every dev token.
	DevAudience = "api://credvault-dev"
	// DevKeyFile is the dev signing key's file name in the data dir: the
	// private RSA key as a JWK (JSON), mode 0600.
	DevKeyFile = "dev-signing-key.jwk"
	// MaxDevTokenTTL bounds the lifetime of a minted dev token.
	MaxDevTokenTTL = 24 * time.Hour
)

const devKeyBits = 2048

// DevKey is dev mode's local signing key. It mints tokens and builds the
// verifier for them over its public key only.
type DevKey struct {
	priv jwk.Key // private RSA key with kid; no alg, like Entra's keys
	pub  jwk.Set // its public half, the only thing the verifier sees
	kid  string
}

// LoadOrCreateDevKey loads the dev signing key from dir/DevKeyFile, or
// creates it there (RSA-2048, mode 0600) on first use. Creation is atomic:
// concurrent first starts end up with the same key. A key file readable by
// group or others is refused (except on Windows, which has no such bits).
func LoadOrCreateDevKey(dir string) (*DevKey, error) {
	if dir == "" {
		return nil, errors.New("identity: dev key: no data dir")
	}
	path := filepath.Join(dir, DevKeyFile)
	k, err := loadDevKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("identity: dev key: %w", err)
	}
	if err := createDevKey(dir, path); err != nil {
		return nil, err
	}
	return loadDevKey(path)
}

// createDevKey writes a new key to a temporary file and links it into
// place; if another process won the race, its key stays and this one is
// dropped.
func createDevKey(dir, path string) error {
	raw, err := rsa.GenerateKey(rand.Reader, devKeyBits)
	if err != nil {
		return fmt.Errorf("identity: dev key: generate: %w", err)
	}
	key, err := jwk.Import(raw)
	if err != nil {
		return fmt.Errorf("identity: dev key: import: %w", err)
	}
	kid, err := thumbprint(key)
	if err != nil {
		return err
	}
	if err := key.Set(jwk.KeyIDKey, kid); err != nil {
		return fmt.Errorf("identity: dev key: set kid: %w", err)
	}
	data, err := json.Marshal(key)
	if err != nil {
		return fmt.Errorf("identity: dev key: encode: %w", err)
	}

	f, err := os.CreateTemp(dir, ".dev-signing-key-*")
	if err != nil {
		return fmt.Errorf("identity: dev key: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		f.Close()
		return fmt.Errorf("identity: dev key: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("identity: dev key: write: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("identity: dev key: sync: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("identity: dev key: %w", err)
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("identity: dev key: %w", err)
	}
	return nil
}

func loadDevKey(path string) (*DevKey, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("identity: dev key: %w", err) // fs.ErrNotExist: create it
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("identity: dev key %s: not a regular file", path)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("identity: dev key %s: mode %04o, want 0600 (readable by group or others)", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: dev key: %w", err)
	}
	// Parse errors are not wrapped: their text may quote the file, which is
	// key material.
	bad := fmt.Errorf("identity: dev key %s: not an RSA private key JWK of at least %d bits with its thumbprint as kid", path, devKeyBits)
	key, err := jwk.ParseKey(data)
	if err != nil || key.KeyType() != jwa.RSA() {
		return nil, bad
	}
	var raw rsa.PrivateKey
	if err := jwk.Export(key, &raw); err != nil || raw.N.BitLen() < devKeyBits || raw.Validate() != nil {
		return nil, bad
	}
	kid, err := thumbprint(key)
	if err != nil {
		return nil, err
	}
	if got, ok := key.KeyID(); !ok || got != kid {
		return nil, bad
	}
	pub, err := key.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("identity: dev key: public key: %w", err)
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, fmt.Errorf("identity: dev key: key set: %w", err)
	}
	return &DevKey{priv: key, pub: set, kid: kid}, nil
}

// thumbprint is the key's RFC 7638 SHA-256 thumbprint, base64url: the kid.
func thumbprint(key jwk.Key) (string, error) {
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("identity: dev key: thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// KeyID returns the key's kid, its RFC 7638 thumbprint.
func (d *DevKey) KeyID() string { return d.kid }

// PublicKeys returns the public key set (one RSA key, no alg).
func (d *DevKey) PublicKeys() jwk.Set { return d.pub }

// VerifierOptions returns the options of the dev verifier: the public key
// set, DevIssuer, DevAudience and DevTenant, default skew and role map.
func (d *DevKey) VerifierOptions() VerifierOptions {
	return VerifierOptions{
		Keys:      StaticKeys(d.pub),
		Issuers:   []string{DevIssuer},
		Audiences: []string{DevAudience},
		Tenants:   []string{DevTenant},
	}
}

// Verifier returns a JWTVerifier for dev tokens: the same code path as
// Entra mode, over the dev key's public key set.
func (d *DevKey) Verifier() *JWTVerifier {
	v, err := NewJWTVerifier(d.VerifierOptions())
	if err != nil {
		panic("identity: dev verifier options are invalid: " + err.Error()) // constants only; cannot happen
	}
	return v
}

// DevObjectID returns the oid of dev user name: a GUID-formatted value
// derived from SHA-256 of the name (version 8, RFC 9562 variant), the same
// for the same name on every machine.
func DevObjectID(user string) string {
	sum := sha256.Sum256([]byte("credvault dev oid\x00" + user))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x80 // version 8: custom
	b[8] = b[8]&0x3f | 0x80 // variant 10
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Mint signs an RS256 dev token for user with roles, valid from now for
// ttl (at most MaxDevTokenTTL). The token carries kid, iss DevIssuer, aud
// DevAudience, tid DevTenant, oid = sub = DevObjectID(user), name = user,
// roles, iat/nbf/exp and ver "2.0".
func (d *DevKey) Mint(user string, roles []Role, ttl time.Duration, now time.Time) (string, error) {
	if err := checkDevUser(user); err != nil {
		return "", err
	}
	if ttl <= 0 || ttl > MaxDevTokenTTL {
		return "", fmt.Errorf("identity: mint: ttl %v outside (0, %v]", ttl, MaxDevTokenTTL)
	}
	names := make([]string, 0, len(roles))
	seen := make(map[Role]bool, len(roles))
	for _, r := range roles {
		if !r.valid() {
			return "", fmt.Errorf("identity: mint: role %q: %w", string(r), ErrUnknownRole)
		}
		if !seen[r] {
			seen[r] = true
			names = append(names, string(r))
		}
	}
	oid := DevObjectID(user)
	tok, err := jwt.NewBuilder().
		Issuer(DevIssuer).
		Audience([]string{DevAudience}).
		Subject(oid).
		IssuedAt(now).
		NotBefore(now).
		Expiration(now.Add(ttl)).
		Claim("tid", DevTenant).
		Claim("oid", oid).
		Claim("name", user).
		Claim("roles", names).
		Claim("idtyp", "user").
		Claim("ver", "2.0").
		Build()
	if err != nil {
		return "", fmt.Errorf("identity: mint: %w", err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.RS256(), d.priv))
	if err != nil {
		return "", fmt.Errorf("identity: mint: sign: %w", err)
	}
	return string(signed), nil
}

// checkDevUser accepts a printable, trimmed user name of 1 to 256 bytes.
func checkDevUser(user string) error {
	if user == "" || len(user) > 256 || strings.TrimSpace(user) != user || !utf8.ValidString(user) {
		return errors.New("identity: mint: user name must be 1 to 256 bytes of trimmed UTF-8")
	}
	for _, r := range user {
		if !unicode.IsPrint(r) {
			return errors.New("identity: mint: user name has a non-printable character")
		}
	}
	return nil
}

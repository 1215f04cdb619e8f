package identity

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
)

func TestDevKeyCreatedOnceAndReloaded(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	k1, err := LoadOrCreateDevKey(dir)
	if err != nil {
		t.Fatalf("first LoadOrCreateDevKey: %v", err)
	}
	path := filepath.Join(dir, DevKeyFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("dev key file: %v", err)
	}
	if runtime.GOOS != "windows" {
		if got, want := fi.Mode().Perm(), os.FileMode(0o600); got != want {
			t.Errorf("dev key file mode = %04o, want %04o", got, want)
		}
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	k2, err := LoadOrCreateDevKey(dir)
	if err != nil {
		t.Fatalf("second LoadOrCreateDevKey: %v", err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(before) != string(after) {
		t.Errorf("second LoadOrCreateDevKey rewrote the key file")
	}
	if k1.KeyID() != k2.KeyID() {
		t.Errorf("reloaded key id = %q, want %q", k2.KeyID(), k1.KeyID())
	}
	p1, _ := k1.PublicKeys().Key(0)
	p2, _ := k2.PublicKeys().Key(0)
	if !jwk.Equal(p1, p2) {
		t.Errorf("reloaded public key differs from the created one")
	}

	// A token minted before the reload verifies after it.
	tok, err := k1.Mint("alice", []Role{CredentialsRead}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k2.Verifier().Verify(context.Background(), tok); err != nil {
		t.Errorf("token minted before reload: Verify after reload: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("data dir holds %d entries after creation, want only %s", len(entries), DevKeyFile)
	}
}

func TestDevKeyConcurrentFirstUseAgrees(t *testing.T) {
	dir := t.TempDir()
	const n = 4
	kids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			k, err := LoadOrCreateDevKey(dir)
			if err == nil {
				kids[i] = k.KeyID()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("concurrent LoadOrCreateDevKey #%d: %v", i, errs[i])
		}
		if kids[i] != kids[0] {
			t.Errorf("concurrent LoadOrCreateDevKey #%d got key %q, #0 got %q", i, kids[i], kids[0])
		}
	}
}

func TestDevKeyRefusesLooseOrBadFiles(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no group/other permission bits on Windows")
	}
	dir := t.TempDir()
	if _, err := LoadOrCreateDevKey(dir); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, DevKeyFile)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateDevKey(dir); err == nil {
		t.Errorf("dev key file mode 0644: LoadOrCreateDevKey error = nil, want a refusal")
	}

	// A second key, to write its public half and its kid-less form.
	other, err := LoadOrCreateDevKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	marshal := func(k jwk.Key) string {
		b, err := json.Marshal(k)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	pub, _ := other.PublicKeys().Key(0)
	noKid, err := other.priv.Clone()
	if err != nil {
		t.Fatal(err)
	}
	_ = noKid.Remove(jwk.KeyIDKey)
	wrongKid, err := other.priv.Clone()
	if err != nil {
		t.Fatal(err)
	}
	_ = wrongKid.Set(jwk.KeyIDKey, "k1")

	tests := []struct{ name, content string }{
		{"nothing", ""},
		{"a PEM header", "-----BEGIN PRIVATE KEY-----"},
		{"a public key", marshal(pub)},
		{"a key without kid", marshal(noKid)},
		{"a key whose kid is not its thumbprint", marshal(wrongKid)},
		{"an EC key", `{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","d":"jpsQnnGQmL-YBIffH1136cLSvyTh2RgF3FOQmZi2a6c"}`},
	}
	for _, tt := range tests {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, DevKeyFile), []byte(tt.content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadOrCreateDevKey(d)
		if err == nil {
			t.Errorf("dev key file holding %s: LoadOrCreateDevKey error = nil, want a refusal", tt.name)
			continue
		}
		if len(tt.content) > 8 && strings.Contains(err.Error(), tt.content[:8]) {
			t.Errorf("dev key file holding %s: error %q quotes the file", tt.name, err)
		}
	}
}

func TestDevTokenVerifies(t *testing.T) {
	k, err := LoadOrCreateDevKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := k.Mint("alice", []Role{CredentialsRead, CredentialsWrite, CredentialsRead}, time.Hour, now)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	p, err := k.Verifier().Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("dev token: Verify: %v", err)
	}
	if got, want := p.Owner(), DevTenant+"/"+DevObjectID("alice"); got != want {
		t.Errorf("dev token: owner = %q, want %q", got, want)
	}
	if got, want := p.RoleList(), []Role{CredentialsRead, CredentialsWrite}; !slices.Equal(got, want) {
		t.Errorf("dev token: roles = %v, want %v", got, want)
	}
	if p.Name != "alice" || p.Kind != KindUser {
		t.Errorf("dev token: name, kind = %q, %q; want %q, %q", p.Name, p.Kind, "alice", KindUser)
	}

	// The dev verifier is the JWTVerifier with the same rules: a clock
	// past exp + skew rejects the same token.
	o := k.VerifierOptions()
	o.Now = func() time.Time { return now.Add(time.Hour + MaxSkew + time.Second) }
	if _, err := newTestVerifier(t, o).Verify(context.Background(), tok); !errors.Is(err, ErrExpired) {
		t.Errorf("dev token after exp + skew: error = %v, want ErrExpired", err)
	}
	// And an Entra-configured verifier refuses it.
	if _, err := newTestVerifier(t, testOptions(keys(t))).Verify(context.Background(), tok); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("dev token against the Entra test verifier: error = %v, want ErrUnknownKey", err)
	}
}

func TestDevTokenFromAnotherDataDirFails(t *testing.T) {
	a, err := LoadOrCreateDevKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateDevKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := b.Mint("alice", []Role{CredentialsAdmin}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Verifier().Verify(context.Background(), tok); !errors.Is(err, ErrSignature) {
		t.Errorf("token of another data dir's key: error = %v, want ErrSignature", err)
	}

	if _, err := a.Verifier().Verify(context.Background(), tok); errors.Is(err, ErrUnknownKey) == false {
		t.Errorf("token of another data dir's key: error = %v, want ErrUnknownKey (kids differ)", err)
	}

	// Signed by b's key under a's kid: the kid is known, the signature fails.
	var bKey rsa.PrivateKey
	if err := jwk.Export(b.priv, &bKey); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	oid := DevObjectID("alice")
	claims := map[string]any{
		"iss": DevIssuer, "aud": DevAudience, "tid": DevTenant, "oid": oid, "sub": oid,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"name": "alice", "roles": []string{"Credentials.Admin"}, "ver": "2.0",
	}
	forged := signRaw(t, map[string]any{"alg": "RS256", "kid": a.KeyID(), "typ": "JWT"}, claims, "RS256", &bKey)
	_, err = a.Verifier().Verify(context.Background(), forged)
	if !errors.Is(err, ErrSignature) || errors.Is(err, ErrUnknownKey) {
		t.Errorf("token signed by another key under this key's kid: error = %v, want ErrSignature (not ErrUnknownKey)", err)
	}
}

func TestDevMintRefusesBadInput(t *testing.T) {
	k, err := LoadOrCreateDevKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tests := []struct {
		name  string
		user  string
		roles []Role
		ttl   time.Duration
	}{
		{"empty user", "", nil, time.Hour},
		{"user with spaces around", " alice ", nil, time.Hour},
		{"user with a newline", "ali\nce", nil, time.Hour},
		{"user too long", strings.Repeat("a", 257), nil, time.Hour},
		{"zero ttl", "alice", nil, 0},
		{"ttl above the maximum", "alice", nil, MaxDevTokenTTL + time.Second},
		{"unknown role", "alice", []Role{"Credentials.Own"}, time.Hour},
	}
	for _, tt := range tests {
		if tok, err := k.Mint(tt.user, tt.roles, tt.ttl, now); err == nil {
			t.Errorf("Mint with %s = %q, want an error", tt.name, tok)
		}
	}
}

func TestDevObjectID(t *testing.T) {
	a, b := DevObjectID("alice"), DevObjectID("bob")
	if !isGUID(a) || !isGUID(b) {
		t.Fatalf("DevObjectID = %q, %q; want GUIDs", a, b)
	}
	if a == b {
		t.Errorf("DevObjectID(alice) == DevObjectID(bob) = %q", a)
	}
	if again := DevObjectID("alice"); again != a {
		t.Errorf("DevObjectID(alice) = %q, then %q", a, again)
	}
	if a != strings.ToLower(a) || a[14] != '8' {
		t.Errorf("DevObjectID(alice) = %q, want lower case, version 8", a)
	}
	if !isGUID(DevTenant) {
		t.Errorf("DevTenant %q is not a GUID", DevTenant)
	}
}

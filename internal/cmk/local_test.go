package cmk

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/credvault/credvault/internal/keyring"
)

// testBits keeps key generation fast; TestLocalDefaultIs3072Bits checks the
// default.
const testBits = 2048

func openLocal(t *testing.T, dir string) *Local {
	t.Helper()
	l, err := OpenLocal(dir, LocalOptions{Bits: testBits})
	if err != nil {
		t.Fatalf("OpenLocal(%s): %v", dir, err)
	}
	return l
}

func newKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, keyring.KeySize)
	rand.Read(k)
	return k
}

func mustWrap(t *testing.T, l *Local, key, aad []byte) keyring.Wrapped {
	t.Helper()
	w, err := l.Wrap(context.Background(), key, aad)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	return w
}

func mustUnwrap(t *testing.T, l *Local, w keyring.Wrapped, aad, want []byte) {
	t.Helper()
	got, err := l.Unwrap(context.Background(), w, aad)
	if err != nil {
		t.Fatalf("Unwrap under %s: %v", w.KeyID, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Unwrap under %s = %x, want %x", w.KeyID, got, want)
	}
}

func readKeyFile(t *testing.T, dir string) localFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, LocalFile))
	if err != nil {
		t.Fatal(err)
	}
	var f localFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("parse %s: %v", LocalFile, err)
	}
	return f
}

func TestLocalCreatedOnFirstOpenAndReloaded(t *testing.T) {
	dir := t.TempDir()
	first := openLocal(t, dir)
	fi, err := os.Stat(filepath.Join(dir, LocalFile))
	if err != nil {
		t.Fatalf("after the first OpenLocal: %v", err)
	}
	if got, want := fi.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Fatalf("key file mode = %v, want %v", got, want)
	}
	f := readKeyFile(t, dir)
	if len(f.Versions) != 1 || !f.Versions[0].Enabled || f.Current != f.Versions[0].Version {
		t.Fatalf("new key file: current %q, versions %+v; want one enabled current version", f.Current, f.Versions)
	}
	if got, want := first.Current(), "local:credvault-cmk/"+f.Current; got != want {
		t.Fatalf("Current() = %q, want %q", got, want)
	}

	key, aad := newKey(t), []byte("domain 0 v1")
	w := mustWrap(t, first, key, aad)
	second := openLocal(t, dir)
	if second.Current() != first.Current() {
		t.Fatalf("reopened: Current() = %q, want %q", second.Current(), first.Current())
	}
	mustUnwrap(t, second, w, aad, key)
	if got := readKeyFile(t, dir); len(got.Versions) != 1 {
		t.Fatalf("reopening added a version: %d versions", len(got.Versions))
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("data dir holds %d entries, want only %s (no temporary files left)", len(entries), LocalFile)
	}
}

func TestLocalWrapUnwrap(t *testing.T) {
	l := openLocal(t, t.TempDir())
	key, aad := newKey(t), []byte("credvault/v1 domain\x00\x00\x00\x00\x01\x00\x00\x00\x01")
	w := mustWrap(t, l, key, aad)
	if w.KeyID != l.Current() {
		t.Fatalf("Wrap named key %q, want the current version %q", w.KeyID, l.Current())
	}
	if got, want := len(w.Bytes), testBits/8; got != want {
		t.Fatalf("wrapped key is %d bytes, want %d (one RSA block)", got, want)
	}
	if bytes.Contains(w.Bytes, key) {
		t.Fatal("the wrapped bytes contain the key")
	}
	if again := mustWrap(t, l, key, aad); bytes.Equal(again.Bytes, w.Bytes) {
		t.Fatal("two wraps of one key are equal: OAEP is not randomized")
	}
	mustUnwrap(t, l, w, aad, key)
}

func TestLocalRotate(t *testing.T) {
	dir := t.TempDir()
	l := openLocal(t, dir)
	old := l.Current()
	key, aad := newKey(t), []byte("aad")
	wOld := mustWrap(t, l, key, aad)

	id, err := l.Rotate()
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if id == old || l.Current() != id {
		t.Fatalf("after Rotate: returned %q, Current() %q; want a new current version (old %q)", id, l.Current(), old)
	}
	if f := readKeyFile(t, dir); len(f.Versions) != 2 || "local:credvault-cmk/"+f.Current != id {
		t.Fatalf("key file after Rotate: current %q with %d versions; want %q with 2", f.Current, len(f.Versions), id)
	}
	wNew := mustWrap(t, l, key, aad)
	if wNew.KeyID != id {
		t.Fatalf("Wrap after Rotate named %q, want %q", wNew.KeyID, id)
	}
	mustUnwrap(t, l, wOld, aad, key)
	mustUnwrap(t, l, wNew, aad, key)

	// Another version's key id on these bytes: the wrong RSA key.
	swapped := keyring.Wrapped{KeyID: old, Bytes: wNew.Bytes}
	_, err = l.Unwrap(context.Background(), swapped, aad)
	if !errors.Is(err, keyring.ErrCorrupt) {
		t.Fatalf("Unwrap of a new-version wrap named as the old version: err = %v, want %v", err, keyring.ErrCorrupt)
	}
}

func TestLocalDisabledVersionIsRevoked(t *testing.T) {
	l := openLocal(t, t.TempDir())
	old := l.Current()
	key, aad := newKey(t), []byte("aad")
	wOld := mustWrap(t, l, key, aad)
	if _, err := l.Rotate(); err != nil {
		t.Fatal(err)
	}
	wNew := mustWrap(t, l, key, aad)

	if err := l.SetEnabled(old, false); err != nil {
		t.Fatalf("SetEnabled(%s, false): %v", old, err)
	}
	_, err := l.Unwrap(context.Background(), wOld, aad)
	if !errors.Is(err, keyring.ErrRevoked) {
		t.Fatalf("Unwrap under a disabled version: err = %v, want %v", err, keyring.ErrRevoked)
	}
	mustUnwrap(t, l, wNew, aad, key) // the other version is untouched

	if err := l.SetEnabled(strings.TrimPrefix(old, "local:credvault-cmk/"), true); err != nil {
		t.Fatalf("SetEnabled(bare version, true): %v", err)
	}
	mustUnwrap(t, l, wOld, aad, key)

	if err := l.SetEnabled(l.Current(), false); err != nil {
		t.Fatal(err)
	}
	_, err = l.Wrap(context.Background(), key, aad)
	if !errors.Is(err, keyring.ErrRevoked) {
		t.Fatalf("Wrap with the current version disabled: err = %v, want %v", err, keyring.ErrRevoked)
	}
	if err := l.SetEnabled("local:credvault-cmk/0123", false); err == nil {
		t.Fatal("SetEnabled of a version that does not exist succeeded")
	}
}

func TestLocalUnwrapRefuses(t *testing.T) {
	l := openLocal(t, t.TempDir())
	key, aad := newKey(t), []byte("credvault/v1 domain\x00\x00\x00\x00\x01\x00\x00\x00\x01")
	w := mustWrap(t, l, key, aad)
	flip := func(i int) keyring.Wrapped {
		b := bytes.Clone(w.Bytes)
		b[(i+len(b))%len(b)] ^= 0x01
		return keyring.Wrapped{KeyID: w.KeyID, Bytes: b}
	}
	named := func(id string) keyring.Wrapped { return keyring.Wrapped{KeyID: id, Bytes: w.Bytes} }
	tests := []struct {
		name    string
		w       keyring.Wrapped
		aad     []byte
		wantErr error
	}{
		{"unknown version", named("local:credvault-cmk/00000000000000000000000000000000"), aad, keyring.ErrRevoked},
		{"no version", named("local:credvault-cmk/"), aad, keyring.ErrRevoked},
		{"another key's id", named("https://vault.example/keys/cmk/0123"), aad, keyring.ErrRevoked},
		{"empty key id", named(""), aad, keyring.ErrRevoked},
		{"wrong aad", w, []byte("credvault/v1 domain\x00\x00\x00\x00\x02\x00\x00\x00\x01"), keyring.ErrCorrupt},
		{"no aad", w, nil, keyring.ErrCorrupt},
		{"first byte flipped", flip(0), aad, keyring.ErrCorrupt},
		{"middle byte flipped", flip(len(w.Bytes) / 2), aad, keyring.ErrCorrupt},
		{"last byte flipped", flip(-1), aad, keyring.ErrCorrupt},
		{"truncated", keyring.Wrapped{KeyID: w.KeyID, Bytes: w.Bytes[:len(w.Bytes)-1]}, aad, keyring.ErrCorrupt},
		{"empty", keyring.Wrapped{KeyID: w.KeyID}, aad, keyring.ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := l.Unwrap(context.Background(), tt.w, tt.aad)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Unwrap: err = %v, want %v", err, tt.wantErr)
			}
			if got != nil {
				t.Fatalf("a refused Unwrap returned %x", got)
			}
		})
	}
	mustUnwrap(t, l, w, aad, key) // refusals changed nothing
}

func TestLocalCanceledContext(t *testing.T) {
	l := openLocal(t, t.TempDir())
	key, aad := newKey(t), []byte("aad")
	w := mustWrap(t, l, key, aad)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Wrap(ctx, key, aad); !errors.Is(err, keyring.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Wrap with a canceled context: err = %v, want %v and %v", err, keyring.ErrUnavailable, context.Canceled)
	}
	if _, err := l.Unwrap(ctx, w, aad); !errors.Is(err, keyring.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Unwrap with a canceled context: err = %v, want %v and %v", err, keyring.ErrUnavailable, context.Canceled)
	}
}

func TestLocalSecondInstanceSeesRotation(t *testing.T) {
	dir := t.TempDir()
	a, b := openLocal(t, dir), openLocal(t, dir)
	id, err := a.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	key, aad := newKey(t), []byte("aad")
	w := mustWrap(t, a, key, aad)
	if w.KeyID != id {
		t.Fatalf("Wrap after Rotate named %q, want %q", w.KeyID, id)
	}
	mustUnwrap(t, b, w, aad, key) // b has never heard of the version: it reloads

	// b rotates in turn: a sees that version too.
	id2, err := b.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if id2 == id {
		t.Fatal("two rotations made one version")
	}
	w2 := mustWrap(t, b, key, aad)
	mustUnwrap(t, a, w2, aad, key)
	if f := readKeyFile(t, dir); len(f.Versions) != 3 {
		t.Fatalf("after a rotation on each instance: %d versions in the file, want 3 (none lost)", len(f.Versions))
	}
}

// TestLocalConcurrentUseWithRotation runs unwraps across rotations (which
// reload the key file): run with -race.
func TestLocalConcurrentUseWithRotation(t *testing.T) {
	l := openLocal(t, t.TempDir())
	key, aad := newKey(t), []byte("aad")
	w := mustWrap(t, l, key, aad)
	rotated := make(chan struct{})
	errs := make(chan error, 9)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for done := false; !done; {
				select {
				case <-rotated:
					done = true // one more after the rotation
				default:
				}
				got, err := l.Unwrap(context.Background(), w, aad)
				if err == nil && !bytes.Equal(got, key) {
					err = errors.New("Unwrap returned another key")
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		defer close(rotated)
		for range 3 {
			if _, err := l.Rotate(); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Unwrap during a rotation: %v", err)
	}
}

func TestLocalDefaultIs3072Bits(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenLocal(dir, LocalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := readKeyFile(t, dir)
	k, err := x509.ParsePKCS8PrivateKey(f.Versions[0].PKCS8)
	if err != nil {
		t.Fatal(err)
	}
	priv, ok := k.(*rsa.PrivateKey)
	if !ok {
		t.Fatalf("key file holds a %T, want an RSA key", k)
	}
	if got, want := priv.N.BitLen(), 3072; got != want {
		t.Fatalf("default CMK modulus = %d bits, want %d", got, want)
	}
	key, aad := newKey(t), []byte("aad")
	w := mustWrap(t, l, key, aad)
	if got, want := len(w.Bytes), 3072/8; got != want {
		t.Fatalf("wrapped key is %d bytes, want %d", got, want)
	}
	mustUnwrap(t, l, w, aad, key)
}

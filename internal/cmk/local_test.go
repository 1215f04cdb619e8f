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
	"testing"

	"github.com/credvault/credvault/internal/cmk/cmktest"
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

// TestLocalContract runs the contract every CMK adapter keeps.
func TestLocalContract(t *testing.T) {
	cmktest.TestWrapper(t, func(t *testing.T) cmktest.Harness {
		l := openLocal(t, t.TempDir())
		return cmktest.Harness{W: l, Rotate: l.Rotate, SetEnabled: l.SetEnabled}
	})
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
	if again := mustWrap(t, l, key, aad); bytes.Equal(again.Bytes, w.Bytes) {
		t.Fatal("two wraps of one key are equal: OAEP is not randomized")
	}
	mustUnwrap(t, l, w, aad, key)
}

// TestLocalRotate checks what a rotation does to the key file; what it does
// to wraps and unwraps is in the contract (cmktest).
func TestLocalRotate(t *testing.T) {
	dir := t.TempDir()
	l := openLocal(t, dir)
	old := l.Current()
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
	if w := mustWrap(t, l, newKey(t), []byte("aad")); w.KeyID != id {
		t.Fatalf("Wrap after Rotate named %q, want %q", w.KeyID, id)
	}
}

// TestLocalSetEnabled checks the local ways of naming a version; what a
// disabled version does is in the contract (cmktest).
func TestLocalSetEnabled(t *testing.T) {
	dir := t.TempDir()
	l := openLocal(t, dir)
	key, aad := newKey(t), []byte("aad")
	w := mustWrap(t, l, key, aad)
	if err := l.SetEnabled(w.KeyID, false); err != nil {
		t.Fatalf("SetEnabled(%s, false): %v", w.KeyID, err)
	}
	if f := readKeyFile(t, dir); f.Versions[0].Enabled {
		t.Fatal("SetEnabled(false) left the version enabled in the key file")
	}
	if _, err := l.Unwrap(context.Background(), w, aad); !errors.Is(err, keyring.ErrRevoked) {
		t.Fatalf("Unwrap under a disabled version: err = %v, want %v", err, keyring.ErrRevoked)
	}
	if err := l.SetEnabled(strings.TrimPrefix(w.KeyID, "local:credvault-cmk/"), true); err != nil {
		t.Fatalf("SetEnabled(bare version, true): %v", err)
	}
	mustUnwrap(t, l, w, aad, key)
	if err := l.SetEnabled("local:credvault-cmk/0123", false); err == nil {
		t.Fatal("SetEnabled of a version that does not exist succeeded")
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

package keyring_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/keyring"
)

// answer is what the CMK double says to the next calls.
type answer int

const (
	answerOK          answer = iota
	answerRevoked            // the version is disabled, deleted or forbidden: ErrRevoked
	answerUnreachable        // timeout, 5xx, 429: ErrUnavailable
	answerSlow               // Unwrap blocks until release, then answers ok
)

// cmkDouble stands in for the Key Vault CMK: one key version, AES-256-GCM
// with the aad bound into the tag, switchable answers, and a count of calls.
type cmkDouble struct {
	keyID string
	aead  cipher.AEAD

	mu       sync.Mutex
	answer   answer
	gate     chan struct{} // closed by release; answerSlow waits on it
	aads     [][]byte      // the aad of every Wrap, in order
	returned [][]byte      // every slice Unwrap handed out, in order

	wraps, unwraps atomic.Int64
}

var _ keyring.Wrapper = (*cmkDouble)(nil)

func newCMKDouble(t testing.TB) *cmkDouble {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	id := make([]byte, 8)
	rand.Read(id)
	return &cmkDouble{keyID: "https://double.vault.test/keys/cmk/" + hex.EncodeToString(id), aead: aead}
}

// set changes the answer of the calls that start from now on.
func (d *cmkDouble) set(a answer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if a == answerSlow {
		d.gate = make(chan struct{})
	}
	d.answer = a
}

// release lets the unwraps blocked by answerSlow go on, and answers ok from
// now on.
func (d *cmkDouble) release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	close(d.gate)
	d.answer = answerOK
}

func (d *cmkDouble) refusal(a answer, op string) error {
	switch a {
	case answerRevoked:
		return fmt.Errorf("cmk double %s: version %s is disabled: %w", op, d.keyID, keyring.ErrRevoked)
	case answerUnreachable:
		return fmt.Errorf("cmk double %s: 503 from the vault: %w", op, keyring.ErrUnavailable)
	}
	return nil
}

func (d *cmkDouble) Wrap(ctx context.Context, key, aad []byte) (keyring.Wrapped, error) {
	d.wraps.Add(1)
	d.mu.Lock()
	a := d.answer
	d.aads = append(d.aads, bytes.Clone(aad))
	d.mu.Unlock()
	if err := d.refusal(a, "wrap"); err != nil {
		return keyring.Wrapped{}, err
	}
	nonce := make([]byte, d.aead.NonceSize())
	rand.Read(nonce)
	return keyring.Wrapped{KeyID: d.keyID, Bytes: d.aead.Seal(nonce, nonce, key, aad)}, nil
}

func (d *cmkDouble) Unwrap(ctx context.Context, w keyring.Wrapped, aad []byte) ([]byte, error) {
	d.unwraps.Add(1)
	d.mu.Lock()
	a, gate := d.answer, d.gate
	d.mu.Unlock()
	if err := d.refusal(a, "unwrap"); err != nil {
		return nil, err
	}
	if a == answerSlow {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, fmt.Errorf("cmk double unwrap: %w: %w", keyring.ErrUnavailable, ctx.Err())
		}
	}
	if w.KeyID != d.keyID {
		return nil, fmt.Errorf("cmk double unwrap: unknown version %q: %w", w.KeyID, keyring.ErrRevoked)
	}
	n := d.aead.NonceSize()
	if len(w.Bytes) < n {
		return nil, fmt.Errorf("cmk double unwrap: %d bytes: %w", len(w.Bytes), keyring.ErrCorrupt)
	}
	key, err := d.aead.Open(nil, w.Bytes[:n], w.Bytes[n:], aad)
	if err != nil {
		return nil, fmt.Errorf("cmk double unwrap: %w", keyring.ErrCorrupt)
	}
	d.mu.Lock()
	d.returned = append(d.returned, key)
	d.mu.Unlock()
	return key, nil
}

// lastReturned is the slice the latest successful Unwrap handed out.
func (d *cmkDouble) lastReturned(t testing.TB) []byte {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.returned) == 0 {
		t.Fatal("the CMK double has not unwrapped anything yet")
	}
	return d.returned[len(d.returned)-1]
}

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu         sync.Mutex
	start, now time.Time
}

func newFakeClock() *fakeClock {
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	return &fakeClock{start: t0, now: t0}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Set moves the clock to d after its start.
func (c *fakeClock) Set(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.start.Add(d)
}

// testKey is a random 32-byte key wrapped by the CMK double, as a domain key
// is: what a cache entry holds.
type testKey struct {
	id      string
	plain   []byte
	wrapped keyring.Wrapped
	aad     []byte
}

func (d *cmkDouble) newKey(t testing.TB, id string) testKey {
	t.Helper()
	k := testKey{id: id, plain: make([]byte, keyring.KeySize), aad: []byte("test aad " + id)}
	rand.Read(k.plain)
	var err error
	if k.wrapped, err = d.Wrap(context.Background(), k.plain, k.aad); err != nil {
		t.Fatalf("wrap test key %s: %v", id, err)
	}
	return k
}

// unwrap is the unwrap function the cache calls for k.
func (k testKey) unwrap(d *cmkDouble) func(context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) { return d.Unwrap(ctx, k.wrapped, k.aad) }
}

// childKey is a key wrapped locally (AES-GCM) by a parent testKey, as an owner
// KEK is wrapped by a domain key. Its unwrap goes through the cache for the
// parent, as the hierarchy's does.
type childKey struct {
	id, parent string
	plain      []byte
	sealed     []byte
	unwraps    atomic.Int64

	mu       sync.Mutex
	returned []byte // the slice the latest unwrap handed out
}

func newChildKey(t testing.TB, id string, parent testKey) *childKey {
	t.Helper()
	c := &childKey{id: id, parent: parent.id, plain: make([]byte, keyring.KeySize)}
	rand.Read(c.plain)
	aead := gcm(t, parent.plain)
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	c.sealed = aead.Seal(nonce, nonce, c.plain, []byte(id))
	return c
}

func (c *childKey) unwrap(cache *keyring.Cache, parent testKey, d *cmkDouble) func(context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) {
		c.unwraps.Add(1)
		pk, err := cache.Get(ctx, parent.id, "", parent.unwrap(d))
		if err != nil {
			return nil, err
		}
		defer clear(pk)
		block, err := aes.NewCipher(pk)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		n := aead.NonceSize()
		key, err := aead.Open(nil, c.sealed[:n], c.sealed[n:], []byte(c.id))
		if err != nil {
			return nil, fmt.Errorf("child %s: %w", c.id, keyring.ErrCorrupt)
		}
		c.mu.Lock()
		c.returned = key
		c.mu.Unlock()
		return key, nil
	}
}

func (c *childKey) lastReturned(t testing.TB) []byte {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.returned == nil {
		t.Fatalf("child %s has not been unwrapped yet", c.id)
	}
	return c.returned
}

func gcm(t testing.TB, key []byte) cipher.AEAD {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return aead
}

// mustGet gets id from the cache and checks it is want.
func mustGet(t testing.TB, c *keyring.Cache, id, parent string, want []byte, unwrap func(context.Context) ([]byte, error)) []byte {
	t.Helper()
	got, err := c.Get(context.Background(), id, parent, unwrap)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%s) = %x, want the key that was wrapped, %x", id, got, want)
	}
	return got
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// wantErr checks that err is target, naming what was done.
func wantErr(t testing.TB, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: err = %v, want %v", what, err, target)
	}
}

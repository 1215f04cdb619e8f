// Package cmktest is the contract every CMK adapter (a keyring.Wrapper over a
// versioned key) keeps, written once and run by each adapter's own tests:
//
//	func TestContract(t *testing.T) { cmktest.TestWrapper(t, openLocal) }
package cmktest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/credvault/credvault/internal/keyring"
)

// Harness is one adapter over a key of its own, and the controls a key
// owner has over it.
type Harness struct {
	W keyring.Wrapper
	// Rotate makes a new version current, as Key Vault's rotation policy
	// does, and lets W see it (an adapter that caches the current version:
	// once its refresh period has passed). It returns the new key id.
	Rotate func() (keyID string, err error)
	// SetEnabled enables or disables the version a key id names, as a
	// customer revoking the key would.
	SetEnabled func(keyID string, enabled bool) error
}

// TestWrapper runs the contract. open is called once per subtest and must
// return an adapter over a fresh key. Key ids are expected to end in
// "/<version>", as Key Vault's do.
func TestWrapper(t *testing.T, open func(t *testing.T) Harness) {
	t.Run("RoundTrip", func(t *testing.T) {
		h := open(t)
		key, aad := newKey(), []byte("credvault/v1 domain\x00\x00\x00\x00\x01\x00\x00\x00\x01")
		w := mustWrap(t, h.W, key, aad)
		if w.KeyID == "" {
			t.Fatal("Wrap returned no key id")
		}
		if bytes.Contains(w.Bytes, key) {
			t.Fatal("the wrapped bytes contain the key")
		}
		mustUnwrap(t, h.W, w, aad, key)
		mustUnwrap(t, h.W, w, aad, key) // twice: nothing is used up
		var empty []byte
		mustUnwrap(t, h.W, mustWrap(t, h.W, key, empty), nil, key) // nil and empty aad are one context
	})

	t.Run("KeyIDNamesVersionUntilRotation", func(t *testing.T) {
		h := open(t)
		key, aad := newKey(), []byte("aad")
		first := mustWrap(t, h.W, key, aad)
		if again := mustWrap(t, h.W, key, aad); again.KeyID != first.KeyID {
			t.Fatalf("two wraps without a rotation named %q then %q, want one key id", first.KeyID, again.KeyID)
		}
		id := mustRotate(t, h)
		if id == first.KeyID {
			t.Fatalf("Rotate returned the old key id %q", id)
		}
		for range 2 {
			if w := mustWrap(t, h.W, key, aad); w.KeyID != id {
				t.Fatalf("Wrap after Rotate named %q, want the new version %q", w.KeyID, id)
			}
		}
	})

	t.Run("RotationKeepsOldVersions", func(t *testing.T) {
		h := open(t)
		key, aad := newKey(), []byte("aad")
		wOld := mustWrap(t, h.W, key, aad)
		mustRotate(t, h)
		wNew := mustWrap(t, h.W, key, aad)
		mustUnwrap(t, h.W, wOld, aad, key)
		mustUnwrap(t, h.W, wNew, aad, key)

		// Another version's key id on these bytes: the wrong key.
		swapped := keyring.Wrapped{KeyID: wOld.KeyID, Bytes: wNew.Bytes}
		mustRefuse(t, h.W, "a new-version wrap named as the old version", swapped, aad, keyring.ErrCorrupt)
	})

	t.Run("DisabledVersionIsRevoked", func(t *testing.T) {
		h := open(t)
		key, aad := newKey(), []byte("aad")
		wOld := mustWrap(t, h.W, key, aad)
		mustRotate(t, h)
		wNew := mustWrap(t, h.W, key, aad)

		mustSetEnabled(t, h, wOld.KeyID, false)
		mustRefuse(t, h.W, "a wrap under a disabled version", wOld, aad, keyring.ErrRevoked)
		mustUnwrap(t, h.W, wNew, aad, key) // the other version is untouched

		mustSetEnabled(t, h, wOld.KeyID, true)
		mustUnwrap(t, h.W, wOld, aad, key)

		mustSetEnabled(t, h, wNew.KeyID, false)
		if w, err := h.W.Wrap(context.Background(), key, aad); !errors.Is(err, keyring.ErrRevoked) {
			t.Fatalf("Wrap with the current version disabled: (%q, %v), want %v", w.KeyID, err, keyring.ErrRevoked)
		}
		mustRefuse(t, h.W, "a wrap under the disabled current version", wNew, aad, keyring.ErrRevoked)
	})

	t.Run("WrongContextIsCorrupt", func(t *testing.T) {
		h := open(t)
		key, aad := newKey(), []byte("credvault/v1 domain\x00\x00\x00\x00\x01\x00\x00\x00\x01")
		w := mustWrap(t, h.W, key, aad)
		for _, tc := range []struct {
			name string
			aad  []byte
		}{
			{"another domain", []byte("credvault/v1 domain\x00\x00\x00\x00\x02\x00\x00\x00\x01")},
			{"a byte more", append(bytes.Clone(aad), 0)},
			{"a byte less", aad[:len(aad)-1]},
			{"no aad", nil},
		} {
			mustRefuse(t, h.W, "under "+tc.name, w, tc.aad, keyring.ErrCorrupt)
		}
		mustUnwrap(t, h.W, w, aad, key) // refusals changed nothing
	})

	t.Run("TamperedBytesAreCorrupt", func(t *testing.T) {
		h := open(t)
		key, aad := newKey(), []byte("aad")
		w := mustWrap(t, h.W, key, aad)
		with := func(b []byte) keyring.Wrapped { return keyring.Wrapped{KeyID: w.KeyID, Bytes: b} }
		flip := func(i int) keyring.Wrapped {
			b := bytes.Clone(w.Bytes)
			b[(i+len(b))%len(b)] ^= 0x01
			return with(b)
		}
		for _, tc := range []struct {
			name string
			w    keyring.Wrapped
		}{
			{"first byte flipped", flip(0)},
			{"middle byte flipped", flip(len(w.Bytes) / 2)},
			{"last byte flipped", flip(-1)},
			{"truncated", with(w.Bytes[:len(w.Bytes)-1])},
			{"a byte appended", with(append(bytes.Clone(w.Bytes), 0))},
			{"empty", with(nil)},
		} {
			mustRefuse(t, h.W, tc.name, tc.w, aad, keyring.ErrCorrupt)
		}
		mustUnwrap(t, h.W, w, aad, key)
	})

	t.Run("UnknownKeyIDIsRevoked", func(t *testing.T) {
		h := open(t)
		key, aad := newKey(), []byte("aad")
		w := mustWrap(t, h.W, key, aad)
		cut := strings.LastIndex(w.KeyID, "/") + 1
		named := func(id string) keyring.Wrapped { return keyring.Wrapped{KeyID: id, Bytes: w.Bytes} }
		for _, tc := range []struct {
			name string
			w    keyring.Wrapped
		}{
			{"unknown version", named(w.KeyID + "00")},
			{"no version", named(w.KeyID[:cut])},
			{"another key's id", named("https://vault.example/keys/cmk/0123456789abcdef0123456789abcdef")},
			{"empty key id", named("")},
		} {
			mustRefuse(t, h.W, tc.name, tc.w, aad, keyring.ErrRevoked)
		}
		mustUnwrap(t, h.W, w, aad, key)
	})

	t.Run("CanceledContextIsUnavailable", func(t *testing.T) {
		h := open(t)
		key, aad := newKey(), []byte("aad")
		w := mustWrap(t, h.W, key, aad)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := h.W.Wrap(ctx, key, aad); !errors.Is(err, keyring.ErrUnavailable) || !errors.Is(err, context.Canceled) {
			t.Fatalf("Wrap with a canceled context: err = %v, want %v and %v", err, keyring.ErrUnavailable, context.Canceled)
		}
		if got, err := h.W.Unwrap(ctx, w, aad); got != nil || !errors.Is(err, keyring.ErrUnavailable) || !errors.Is(err, context.Canceled) {
			t.Fatalf("Unwrap with a canceled context: (%x, %v), want %v and %v", got, err, keyring.ErrUnavailable, context.Canceled)
		}
	})

	// Run with -race: wraps and unwraps on many goroutines across rotations.
	t.Run("ConcurrentUseAcrossRotations", func(t *testing.T) {
		h := open(t)
		key, aad := newKey(), []byte("aad")
		w0 := mustWrap(t, h.W, key, aad)
		const workers, rounds = 8, 3
		errs := make(chan error, workers+1)
		var wg sync.WaitGroup
		for g := range workers {
			wg.Go(func() {
				k, a := newKey(), fmt.Appendf(nil, "aad %d", g)
				for range rounds {
					w, err := h.W.Wrap(context.Background(), k, a)
					if err != nil {
						errs <- fmt.Errorf("Wrap: %w", err)
						return
					}
					for _, tc := range []struct {
						w      keyring.Wrapped
						aad, k []byte
					}{{w, a, k}, {w0, aad, key}} {
						got, err := h.W.Unwrap(context.Background(), tc.w, tc.aad)
						if err == nil && !bytes.Equal(got, tc.k) {
							err = errors.New("returned another key")
						}
						if err != nil {
							errs <- fmt.Errorf("Unwrap under %s: %w", tc.w.KeyID, err)
							return
						}
					}
				}
			})
		}
		wg.Go(func() {
			for range 2 {
				if _, err := h.Rotate(); err != nil {
					errs <- fmt.Errorf("Rotate: %w", err)
					return
				}
			}
		})
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

func newKey() []byte {
	k := make([]byte, keyring.KeySize)
	rand.Read(k)
	return k
}

func mustWrap(t *testing.T, w keyring.Wrapper, key, aad []byte) keyring.Wrapped {
	t.Helper()
	wr, err := w.Wrap(context.Background(), key, aad)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	return wr
}

func mustUnwrap(t *testing.T, w keyring.Wrapper, wr keyring.Wrapped, aad, want []byte) {
	t.Helper()
	got, err := w.Unwrap(context.Background(), wr, aad)
	if err != nil {
		t.Fatalf("Unwrap under %s: %v", wr.KeyID, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Unwrap under %s = %x, want %x", wr.KeyID, got, want)
	}
}

// mustRefuse checks that Unwrap fails with want and returns no key.
func mustRefuse(t *testing.T, w keyring.Wrapper, what string, wr keyring.Wrapped, aad []byte, want error) {
	t.Helper()
	got, err := w.Unwrap(context.Background(), wr, aad)
	if !errors.Is(err, want) {
		t.Fatalf("Unwrap of %s: err = %v, want %v", what, err, want)
	}
	if got != nil {
		t.Fatalf("Unwrap of %s failed but returned %x", what, got)
	}
}

func mustRotate(t *testing.T, h Harness) string {
	t.Helper()
	id, err := h.Rotate()
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	return id
}

func mustSetEnabled(t *testing.T, h Harness, id string, enabled bool) {
	t.Helper()
	if err := h.SetEnabled(id, enabled); err != nil {
		t.Fatalf("SetEnabled(%s, %t): %v", id, enabled, err)
	}
}

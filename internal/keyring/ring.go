package keyring

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"
)

// KeySize is the size of every key in the hierarchy below the CMK.
const KeySize = 32

// Ring is a versioned key, stored wrapped by its parent. It is the body of a
// domain document and of an owner's keyring document alike.
type Ring struct {
	Active   uint32    `json:"active"`
	Versions []Version `json:"versions"`
}

// Version is one version of a ring's key.
type Version struct {
	N       uint32    `json:"v"`
	Parent  string    `json:"parent"`  // the parent key version that wrapped it
	Wrapped []byte    `json:"wrapped"` // base64 in JSON
	Created time.Time `json:"created"`
	Retired bool      `json:"retired,omitempty"`
}

// AADFunc gives the context a version's key is bound to.
type AADFunc func(version uint32) []byte

// Version returns version n of the ring.
func (r *Ring) Version(n uint32) (Version, bool) {
	for _, v := range r.Versions {
		if v.N == n {
			return v, true
		}
	}
	return Version{}, false
}

// Current returns the active version.
func (r *Ring) Current() (Version, bool) { return r.Version(r.Active) }

// Add creates a new random key as the next version, wraps it under w, and
// makes it active. It returns the plaintext key; the caller clears it.
func (r *Ring) Add(ctx context.Context, w Wrapper, aad AADFunc, now time.Time) ([]byte, error) {
	n := uint32(1)
	for _, v := range r.Versions {
		n = max(n, v.N+1)
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("new key: %w", err)
	}
	wrapped, err := w.Wrap(ctx, key, aad(n))
	if err != nil {
		clear(key)
		return nil, fmt.Errorf("wrap key version %d: %w", n, err)
	}
	r.Versions = append(r.Versions, Version{N: n, Parent: wrapped.KeyID, Wrapped: wrapped.Bytes, Created: now.UTC()})
	r.Active = n
	return key, nil
}

// Unwrap returns the plaintext key of version v; the caller clears it.
func (v Version) Unwrap(ctx context.Context, w Wrapper, aad AADFunc) ([]byte, error) {
	return w.Unwrap(ctx, Wrapped{KeyID: v.Parent, Bytes: v.Wrapped}, aad(v.N))
}

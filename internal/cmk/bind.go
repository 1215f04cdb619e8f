// Package cmk holds the customer-managed key adapters: the local key file
// used on a developer's machine and (later) Azure Key Vault. Each one is a
// keyring.Wrapper over RSA-OAEP-256, always naming the key version it used.
package cmk

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"

	"github.com/credvault/credvault/internal/keyring"
)

// RSA-OAEP has no associated data that Key Vault exposes, so the context is
// bound inside the wrapped plaintext: key || SHA-256(label || 0x00 || aad).
// Unwrap checks the digest in constant time. See docs/keys.md.
const bindLabel = "credvault/v1 cmk"

func bind(key, aad []byte) []byte {
	d := digest(aad)
	return append(append(make([]byte, 0, len(key)+len(d)), key...), d...)
}

func unbind(payload, aad []byte) ([]byte, error) {
	if len(payload) != keyring.KeySize+sha256.Size {
		return nil, fmt.Errorf("cmk: unwrapped %d bytes: %w", len(payload), keyring.ErrCorrupt)
	}
	key, d := payload[:keyring.KeySize], payload[keyring.KeySize:]
	if subtle.ConstantTimeCompare(d, digest(aad)) != 1 {
		clear(payload)
		return nil, fmt.Errorf("cmk: context mismatch: %w", keyring.ErrCorrupt)
	}
	out := append([]byte(nil), key...)
	clear(payload)
	return out, nil
}

func digest(aad []byte) []byte {
	h := sha256.New()
	h.Write([]byte(bindLabel))
	h.Write([]byte{0})
	h.Write(aad)
	return h.Sum(nil)
}

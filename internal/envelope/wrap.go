package envelope

import (
	"fmt"
	"io"
)

const (
	// wrappedSize is the exact size of a version 1 wrapped key:
	// header(3) || nonce(12) || key ciphertext(32) || tag(16).
	wrappedSize = headerSize + nonceSize + KeySize + tagSize // 63

	keyContext = "credvault/v1 key"
)

var wrappedKeyHeader = [headerSize]byte{'c', 'k', formatVersion}

// WrappedKey is a parsed version 1 wrapped key.
type WrappedKey struct {
	Nonce  [12]byte // random per wrap
	Sealed []byte   // 32-byte key ciphertext || 16-byte tag
}

// ParseWrappedKey parses a version 1 wrapped key: exactly 63 bytes with the
// 'c' 'k' 0x01 header. Sealed is a copy: the result does not alias b.
func ParseWrappedKey(b []byte) (*WrappedKey, error) {
	if len(b) >= 2 && (b[0] != wrappedKeyHeader[0] || b[1] != wrappedKeyHeader[1]) {
		return nil, fmt.Errorf("%w: not a credvault wrapped key (bad magic)", ErrFormat)
	}
	if len(b) >= headerSize && b[2] != formatVersion {
		return nil, fmt.Errorf("%w: unsupported wrapped key version %d", ErrFormat, b[2])
	}
	if len(b) != wrappedSize {
		return nil, fmt.Errorf("%w: wrapped key is %d bytes, want %d", ErrFormat, len(b), wrappedSize)
	}
	w := new(WrappedKey)
	copy(w.Nonce[:], b[headerSize:headerSize+nonceSize])
	w.Sealed = append([]byte(nil), b[headerSize+nonceSize:]...)
	return w, nil
}

// Marshal returns the wire form of w. For any b that ParseWrappedKey accepts,
// Marshal of the result returns b.
func (w *WrappedKey) Marshal() []byte {
	out := make([]byte, 0, headerSize+nonceSize+len(w.Sealed))
	out = append(out, wrappedKeyHeader[:]...)
	out = append(out, w.Nonce[:]...)
	return append(out, w.Sealed...)
}

// WrapKey encrypts a 32-byte key under a 32-byte wrapping key with
// AES-256-GCM, a random 12-byte nonce read from rand, and aad (which may be
// empty) bound into the tag. The result is 63 bytes.
//
// Random 96-bit nonces bound the number of wraps under one wrapping key to
// about 2^32 (NIST SP 800-38D); credvault wraps a handful of keys per owner or
// domain, far below that.
func WrapKey(wrappingKey, key, aad []byte, rand io.Reader) ([]byte, error) {
	if len(wrappingKey) != KeySize {
		return nil, fmt.Errorf("%w: wrapping key is %d bytes, want %d", errKeySize, len(wrappingKey), KeySize)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("%w: key to wrap is %d bytes, want %d", errKeySize, len(key), KeySize)
	}
	aead, err := newGCM(wrappingKey)
	if err != nil {
		return nil, err
	}
	out := make([]byte, headerSize+nonceSize, wrappedSize)
	copy(out, wrappedKeyHeader[:])
	nonce := out[headerSize:]
	if _, err := io.ReadFull(rand, nonce); err != nil {
		return nil, fmt.Errorf("envelope: read nonce: %w", err)
	}
	return aead.Seal(out, nonce, key, keyAAD(aad)), nil
}

// UnwrapKey decrypts a key wrapped by WrapKey. It fails with ErrFormat when
// wrapped is not a version 1 wrapped key, and with ErrOpen when the tag does
// not verify: wrong wrapping key, wrong aad or tampered bytes.
func UnwrapKey(wrappingKey, wrapped, aad []byte) ([]byte, error) {
	if len(wrappingKey) != KeySize {
		return nil, fmt.Errorf("%w: wrapping key is %d bytes, want %d", errKeySize, len(wrappingKey), KeySize)
	}
	w, err := ParseWrappedKey(wrapped)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(wrappingKey)
	if err != nil {
		return nil, err
	}
	key, err := aead.Open(nil, w.Nonce[:], w.Sealed, keyAAD(aad))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOpen, errAuth)
	}
	return key, nil
}

// keyAAD encodes the additional data of a wrapped key:
//
//	header(3) || "credvault/v1 key" || 0x00 || callerAAD
func keyAAD(callerAAD []byte) []byte {
	aad := make([]byte, 0, headerSize+len(keyContext)+1+len(callerAAD))
	aad = append(aad, wrappedKeyHeader[:]...)
	aad = append(aad, keyContext...)
	aad = append(aad, 0x00)
	return append(aad, callerAAD...)
}

// Package envelope is credvault's ciphertext format: a per-secret-version data
// key and key commitment derived from the owner's KEK with HKDF-SHA256 and a
// fresh random salt, and AES-256-GCM with the secret's identity as additional
// data. It also wraps 32-byte keys under a 32-byte wrapping key.
//
// The package is pure: it does no I/O beyond reading the random source it is
// given, keeps no state and imports nothing of the project. The byte layouts
// are specified in docs/format.md and pinned by the vectors in testdata/.
package envelope

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// KeySize is the size in bytes of every key this package takes: KEKs,
// wrapping keys and wrapped keys.
const KeySize = 32

var (
	// ErrFormat reports bytes that are not a version 1 ciphertext or wrapped
	// key: wrong length, magic or version byte.
	ErrFormat = errors.New("envelope: malformed")
	// ErrOpen reports a well-formed ciphertext or wrapped key that does not
	// open: key commitment mismatch or AEAD failure (wrong key, wrong
	// identity or AAD, tampering). The two causes are not told apart to
	// callers beyond the error text.
	ErrOpen = errors.New("envelope: cannot open")
)

// Causes wrapped next to ErrOpen, so that tests (and logs) can tell which
// check refused a ciphertext.
var (
	errCommitment = errors.New("key commitment mismatch")
	errAuth       = errors.New("message authentication failed")
)

// Caller errors: wrong key sizes and identities that cannot be encoded. These
// are programming errors, not properties of a ciphertext, so they wrap neither
// sentinel.
var (
	errKeySize  = errors.New("envelope: wrong key size")
	errIdentity = errors.New("envelope: identity cannot be encoded")
	errTooLarge = errors.New("envelope: plaintext too large")
)

// Identity is what a ciphertext is bound to: all of it goes into the AAD and
// into the HKDF info, so a ciphertext opens only under the identity it was
// sealed for.
type Identity struct {
	Owner      string // at most 65535 bytes
	Name       string // at most 65535 bytes
	Version    uint64 // secret version
	KEKVersion uint32 // version of the owner KEK that sealed it
}

const (
	// formatVersion is the version byte of ciphertexts and wrapped keys.
	formatVersion = 0x01

	headerSize     = 3
	saltSize       = 32
	commitmentSize = 32
	tagSize        = 16
	nonceSize      = 12

	// overhead is the number of bytes a ciphertext adds to its plaintext:
	// header, salt, commitment and GCM tag.
	overhead = headerSize + saltSize + commitmentSize + tagSize // 83

	secretContext  = "credvault/v1 secret"
	dataKeyContext = "credvault/v1 data key"

	// maxPlaintext is the most AES-GCM can seal under one nonce.
	maxPlaintext = (1<<32 - 2) * aes.BlockSize
)

var ciphertextHeader = [headerSize]byte{'c', 'v', formatVersion}

// zeroNonce is the GCM nonce of every ciphertext: each data key seals exactly
// one message (see deriveKeys and docs/format.md).
var zeroNonce [nonceSize]byte

// Ciphertext is a parsed version 1 ciphertext.
type Ciphertext struct {
	Salt       [32]byte // HKDF salt, random per ciphertext
	Commitment [32]byte // key commitment, checked before decryption
	Sealed     []byte   // AES-256-GCM ciphertext || 16-byte tag
}

// ParseCiphertext parses a version 1 ciphertext. It checks the layout only;
// Open checks the commitment and the tag. Sealed is a copy: the result does
// not alias b.
func ParseCiphertext(b []byte) (*Ciphertext, error) {
	c, err := parseCiphertext(b)
	if err != nil {
		return nil, err
	}
	c.Sealed = bytes.Clone(c.Sealed)
	return c, nil
}

// parseCiphertext is ParseCiphertext with Sealed aliasing b, for Open.
func parseCiphertext(b []byte) (*Ciphertext, error) {
	if len(b) < headerSize {
		return nil, fmt.Errorf("%w: ciphertext is %d bytes, want at least %d", ErrFormat, len(b), overhead)
	}
	if b[0] != ciphertextHeader[0] || b[1] != ciphertextHeader[1] {
		return nil, fmt.Errorf("%w: not a credvault ciphertext (bad magic)", ErrFormat)
	}
	if b[2] != formatVersion {
		return nil, fmt.Errorf("%w: unsupported ciphertext version %d", ErrFormat, b[2])
	}
	if len(b) < overhead {
		return nil, fmt.Errorf("%w: ciphertext is %d bytes, want at least %d", ErrFormat, len(b), overhead)
	}
	c := new(Ciphertext)
	rest := b[headerSize:]
	copy(c.Salt[:], rest[:saltSize])
	rest = rest[saltSize:]
	copy(c.Commitment[:], rest[:commitmentSize])
	rest = rest[commitmentSize:]
	c.Sealed = rest
	return c, nil
}

// Marshal returns the wire form of c. For any b that ParseCiphertext accepts,
// Marshal of the result returns b.
func (c *Ciphertext) Marshal() []byte {
	out := make([]byte, 0, headerSize+saltSize+commitmentSize+len(c.Sealed))
	out = append(out, ciphertextHeader[:]...)
	out = append(out, c.Salt[:]...)
	out = append(out, c.Commitment[:]...)
	return append(out, c.Sealed...)
}

// Seal encrypts plaintext for id under kek, reading a fresh 32-byte salt from
// rand (normally crypto/rand.Reader). Empty plaintext is allowed. The result
// is len(plaintext)+83 bytes.
func Seal(kek []byte, id Identity, plaintext []byte, rand io.Reader) ([]byte, error) {
	if len(kek) != KeySize {
		return nil, fmt.Errorf("%w: kek is %d bytes, want %d", errKeySize, len(kek), KeySize)
	}
	aad, err := secretAAD(id)
	if err != nil {
		return nil, err
	}
	if uint64(len(plaintext)) > maxPlaintext {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", errTooLarge, len(plaintext), uint64(maxPlaintext))
	}

	out := make([]byte, headerSize+saltSize+commitmentSize, overhead+len(plaintext))
	copy(out, ciphertextHeader[:])
	salt := out[headerSize : headerSize+saltSize]
	if _, err := io.ReadFull(rand, salt); err != nil {
		return nil, fmt.Errorf("envelope: read salt: %w", err)
	}

	aead, commitment, err := deriveKeys(kek, salt, aad)
	if err != nil {
		return nil, err
	}
	copy(out[headerSize+saltSize:], commitment[:])
	return aead.Seal(out, zeroNonce[:], plaintext, aad), nil
}

// Open decrypts a ciphertext sealed for id under kek. It fails with ErrFormat
// when ciphertext is not a version 1 ciphertext, and with ErrOpen when the key
// commitment or the GCM tag does not verify: wrong KEK, wrong identity or
// tampered bytes. No plaintext is released on failure.
func Open(kek []byte, id Identity, ciphertext []byte) ([]byte, error) {
	if len(kek) != KeySize {
		return nil, fmt.Errorf("%w: kek is %d bytes, want %d", errKeySize, len(kek), KeySize)
	}
	aad, err := secretAAD(id)
	if err != nil {
		return nil, err
	}
	c, err := parseCiphertext(ciphertext)
	if err != nil {
		return nil, err
	}

	aead, commitment, err := deriveKeys(kek, c.Salt[:], aad)
	if err != nil {
		return nil, err
	}
	// The commitment is checked before any decryption: AES-GCM alone is not
	// key-committing, so without it one ciphertext could be crafted to open
	// under several keys (partitioning oracles).
	if subtle.ConstantTimeCompare(commitment[:], c.Commitment[:]) != 1 {
		return nil, fmt.Errorf("%w: %w", ErrOpen, errCommitment)
	}
	plaintext, err := aead.Open(nil, zeroNonce[:], c.Sealed, aad)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOpen, errAuth)
	}
	return plaintext, nil
}

// secretAAD encodes the additional data of a ciphertext:
//
//	header(3) || "credvault/v1 secret" || 0x00 ||
//	uint16be(len(owner)) || owner || uint16be(len(name)) || name ||
//	uint64be(version) || uint32be(kekVersion)
func secretAAD(id Identity) ([]byte, error) {
	if len(id.Owner) > math.MaxUint16 {
		return nil, fmt.Errorf("%w: owner is %d bytes, at most %d", errIdentity, len(id.Owner), math.MaxUint16)
	}
	if len(id.Name) > math.MaxUint16 {
		return nil, fmt.Errorf("%w: name is %d bytes, at most %d", errIdentity, len(id.Name), math.MaxUint16)
	}
	n := headerSize + len(secretContext) + 1 + 2 + len(id.Owner) + 2 + len(id.Name) + 8 + 4
	aad := make([]byte, 0, n)
	aad = append(aad, ciphertextHeader[:]...)
	aad = append(aad, secretContext...)
	aad = append(aad, 0x00)
	aad = binary.BigEndian.AppendUint16(aad, uint16(len(id.Owner)))
	aad = append(aad, id.Owner...)
	aad = binary.BigEndian.AppendUint16(aad, uint16(len(id.Name)))
	aad = append(aad, id.Name...)
	aad = binary.BigEndian.AppendUint64(aad, id.Version)
	aad = binary.BigEndian.AppendUint32(aad, id.KEKVersion)
	return aad, nil
}

// deriveKeys derives the data key and the key commitment of one ciphertext:
//
//	HKDF-SHA256(ikm = kek, salt = salt, info = "credvault/v1 data key" || 0x00 || aad, L = 64)
//
// The first 32 bytes are the AES-256-GCM data key, the last 32 the
// commitment. The raw derived bytes are zeroed before returning; the AES key
// schedule inside the returned AEAD cannot be zeroed from here and is left to
// the garbage collector.
func deriveKeys(kek, salt, aad []byte) (cipher.AEAD, [commitmentSize]byte, error) {
	var commitment [commitmentSize]byte
	info := make([]byte, 0, len(dataKeyContext)+1+len(aad))
	info = append(info, dataKeyContext...)
	info = append(info, 0x00)
	info = append(info, aad...)
	okm, err := hkdf.Key(sha256.New, kek, salt, string(info), KeySize+commitmentSize)
	if err != nil {
		return nil, commitment, fmt.Errorf("envelope: derive data key: %w", err)
	}
	defer clear(okm)
	copy(commitment[:], okm[KeySize:])
	aead, err := newGCM(okm[:KeySize])
	if err != nil {
		return nil, commitment, err
	}
	return aead, commitment, nil
}

// newGCM returns AES-256-GCM with 12-byte nonces and 16-byte tags.
func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("envelope: aes: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("envelope: gcm: %w", err)
	}
	return aead, nil
}

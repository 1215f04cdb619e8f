// Package keyring is credvault's key hierarchy: versioned keyrings, each
// version a key wrapped by its parent (the CMK under the domain keys, a domain
// key under the owner KEKs), and the one bounded cache of unwrapped keys.
package keyring

import (
	"context"
	"errors"
)

var (
	// ErrRevoked: the parent key (a CMK version) is disabled, deleted or
	// forbidden. Keys under it are dropped at once and requests fail closed.
	ErrRevoked = errors.New("keyring: key disabled or forbidden")
	// ErrUnavailable: the key service could not be reached (timeout, 5xx,
	// throttling). Cached keys keep serving for the grace period.
	ErrUnavailable = errors.New("keyring: key service unavailable")
	// ErrNoKeyring: the owner has no keyring (never wrote, or was erased).
	ErrNoKeyring = errors.New("keyring: no keyring")
	// ErrCorrupt: a stored key did not unwrap under its parent (tampered,
	// swapped or damaged metadata). Nothing is served from it.
	ErrCorrupt = errors.New("keyring: wrapped key does not open")
)

// Wrapper wraps and unwraps 32-byte keys under a parent key, binding each to
// a context (aad) so a wrapped key moved to another place does not open.
// Wrap uses the parent's current version and names it in the result.
type Wrapper interface {
	Wrap(ctx context.Context, key, aad []byte) (Wrapped, error)
	Unwrap(ctx context.Context, w Wrapped, aad []byte) ([]byte, error)
}

// Wrapped is a key wrapped by a parent key version.
type Wrapped struct {
	KeyID string // the parent key version that wrapped it, e.g. a Key Vault key id
	Bytes []byte
}

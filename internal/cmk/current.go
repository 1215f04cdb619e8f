package cmk

import (
	"context"

	"github.com/credvault/credvault/internal/keyring"
)

// Both adapters name the key version new wraps use, which the rotation job
// compares with the version each domain key is wrapped under.
var (
	_ keyring.CurrentKey = (*Local)(nil)
	_ keyring.CurrentKey = (*KeyVault)(nil)
)

// CurrentKeyID returns the key id new wraps use.
func (l *Local) CurrentKeyID(context.Context) (string, error) { return l.Current(), nil }

// CurrentKeyID returns the key id new wraps use (see Current).
func (k *KeyVault) CurrentKeyID(ctx context.Context) (string, error) { return k.Current(ctx) }

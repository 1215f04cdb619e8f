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

// CurrentKeyID re-reads the key's current version from Key Vault (one
// GetKey) and returns it: the rotation job asks once per run, so a version
// Key Vault's rotation policy just created is adopted at once rather than
// at the adapter's next hourly refresh.
func (k *KeyVault) CurrentKeyID(ctx context.Context) (string, error) {
	cached, _ := k.cached("")
	v, err := k.current(ctx, cached.version)
	return v.kid, err
}

package identity

import (
	"crypto/rsa"
	"crypto/sha256"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwt"
)

// maxVerified bounds the verified-token cache: a few thousand callers, each
// holding one token for its lifetime (about an hour with Entra).
const maxVerified = 4096

// verified remembers tokens whose signature has been verified, so that a
// caller sending the same token with every request costs one RSA
// verification, not one per request. It is keyed by the SHA-256 of the
// token's exact bytes. An entry is used only while its kid still names the
// same key in the current key set (a removed or replaced key makes it
// useless), and the claims (issuer, audience, exp, nbf, tenant, roles) are
// checked again at every use: the cache skips the signature, nothing else.
type verified struct {
	mu      sync.Mutex
	entries map[[sha256.Size]byte]verifiedToken
}

type verifiedToken struct {
	kid string
	key *rsa.PublicKey
	tok jwt.Token
	exp time.Time
}

func newVerified() *verified {
	return &verified{entries: make(map[[sha256.Size]byte]verifiedToken)}
}

func (c *verified) get(sum [sha256.Size]byte) (verifiedToken, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[sum]
	return e, ok
}

// put remembers a token that passed every check. When the cache is full it
// first drops the tokens that expired before now, then, if that is not
// enough, an arbitrary quarter of the rest.
func (c *verified) put(sum [sha256.Size]byte, e verifiedToken, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxVerified {
		for k, old := range c.entries {
			if old.exp.Before(now) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries {
			if len(c.entries) < maxVerified*3/4 {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[sum] = e
}

func (c *verified) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

package identity

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
)

// TestVerifiedTokens: the verified-token cache skips only the signature
// check. Each case verifies a good token once (one RSA verification), then
// changes the world and verifies a token again.
func TestVerifiedTokens(t *testing.T) {
	k := keys(t)
	// setWith is a key set holding pub under kidRSA.
	setWith := func(t *testing.T, pub *rsa.PublicKey) jwk.Set {
		key, err := jwk.Import(pub)
		if err != nil {
			t.Fatal(err)
		}
		key.Set(jwk.KeyIDKey, kidRSA)
		set := jwk.NewSet()
		set.AddKey(key)
		return set
	}
	tests := []struct {
		name string
		// change edits the clock or the key set after the first Verify and
		// returns the token to verify next.
		change  func(t *testing.T, now *time.Time, set *jwk.Set, token string) string
		want    error // nil: accepted
		reverif int   // RSA verifications after the first
	}{
		{"same token again", func(_ *testing.T, _ *time.Time, _ *jwk.Set, tok string) string { return tok }, nil, 0},
		{"same token after it expired", func(_ *testing.T, now *time.Time, _ *jwk.Set, tok string) string {
			*now = now.Add(time.Hour + MaxSkew + time.Second)
			return tok
		}, ErrExpired, 0},
		{"same token after its key left the set", func(t *testing.T, _ *time.Time, set *jwk.Set, tok string) string {
			*set = jwk.NewSet()
			return tok
		}, ErrUnknownKey, 0},
		{"same token after its kid names another key", func(t *testing.T, _ *time.Time, set *jwk.Set, tok string) string {
			*set = setWith(t, &k.other.PublicKey)
			return tok
		}, ErrSignature, 1},
		{"same token with its last byte changed", func(_ *testing.T, _ *time.Time, _ *jwk.Set, tok string) string {
			last := tok[len(tok)-1]
			return tok[:len(tok)-1] + map[bool]string{true: "A", false: "Q"}[last != 'A']
		}, ErrSignature, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := testNow
			set := setWith(t, &k.rsa.PublicKey)
			o := testOptions(k)
			o.Now = func() time.Time { return now }
			o.Keys = func(context.Context) (jwk.Set, error) { return set, nil }
			v := newTestVerifier(t, o)
			tok := goodToken(t)
			first, err := v.Verify(context.Background(), tok)
			if err != nil {
				t.Fatalf("first Verify: %v", err)
			}
			again := tc.change(t, &now, &set, tok)
			p, err := v.Verify(context.Background(), again)
			if !errors.Is(err, tc.want) {
				t.Fatalf("second Verify: %v, want %v", err, tc.want)
			}
			if err == nil && p.Object != first.Object {
				t.Fatalf("second Verify gave %+v, want %+v", p, first)
			}
			if got := v.signatures.Load() - 1; got != int64(tc.reverif) {
				t.Fatalf("%d RSA verifications after the first, want %d", got, tc.reverif)
			}
		})
	}
}

// TestVerifiedTokensBounded: the cache never holds more than maxVerified
// tokens, and makes room by dropping expired ones first.
func TestVerifiedTokensBounded(t *testing.T) {
	c := newVerified()
	now := testNow
	for i := range maxVerified {
		exp := now.Add(time.Hour)
		if i%2 == 0 {
			exp = now.Add(-time.Second)
		}
		c.put(sha256.Sum256(fmt.Append(nil, i)), verifiedToken{exp: exp}, now)
	}
	c.put(sha256.Sum256([]byte("one more")), verifiedToken{exp: now.Add(time.Hour)}, now)
	if got := c.len(); got != maxVerified/2+1 {
		t.Fatalf("%d tokens after the expired half was dropped, want %d", got, maxVerified/2+1)
	}
	for i := range 2 * maxVerified {
		c.put(sha256.Sum256(fmt.Append(nil, "live", i)), verifiedToken{exp: now.Add(time.Hour)}, now)
		if c.len() > maxVerified {
			t.Fatalf("%d tokens, more than %d", c.len(), maxVerified)
		}
	}
}

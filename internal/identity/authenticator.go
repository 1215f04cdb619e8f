// Package identity turns a request's bearer token into a Principal: the
// caller's owner id (tid/oid), kind, display name and roles.
//
// JWTVerifier is the one verification path: RS256 only, kid required,
// exact issuer, audience, tenant allow-list, exp/nbf/iat with a bounded
// skew. Dev mode (DevKey) mints tokens with a local key and verifies them
// through the same JWTVerifier that Entra mode uses over Entra's JWKS.
//
// Entra (entra mode) runs one JWTVerifier per allowed tenant over the keys
// that tenant publishes, fetched lazily into a jwk.Cache. EasyAuth
// (easyauth mode) reads the X-MS-CLIENT-PRINCIPAL header that App Service
// Authentication sets after validating the token itself.
package identity

import (
	"context"
	"fmt"
	"net/http"
	"strings"
)

// Authenticator turns request headers into a Principal. Errors wrap
// ErrNoCredentials, ErrInvalidToken (and one of its classes) or
// ErrKeysUnavailable.
type Authenticator interface {
	Authenticate(ctx context.Context, h http.Header) (Principal, error)
}

// MaxTokenSize bounds the bearer token, in bytes. Entra access tokens are
// a few KiB even with many group and role claims.
const MaxTokenSize = 16 << 10

var _ Authenticator = (*JWTVerifier)(nil)

// bearerToken returns the token of the request's single
// "Authorization: Bearer <token>" header. The scheme is case-insensitive.
func bearerToken(h http.Header) (string, error) {
	vals := h.Values("Authorization")
	switch {
	case len(vals) == 0:
		return "", ErrNoCredentials
	case len(vals) > 1:
		return "", fmt.Errorf("%w: more than one Authorization header", ErrMalformed)
	}
	v := vals[0]
	if len(v) > len("Bearer ")+MaxTokenSize {
		return "", fmt.Errorf("%w: token larger than %d bytes", ErrMalformed, MaxTokenSize)
	}
	scheme, rest, _ := strings.Cut(v, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", ErrNoCredentials
	}
	tok := strings.TrimLeft(rest, " ")
	if tok == "" {
		return "", fmt.Errorf("%w: empty bearer token", ErrMalformed)
	}
	return tok, nil
}

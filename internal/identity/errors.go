package identity

import (
	"errors"
	"fmt"
)

// Errors. Every verification failure wraps ErrInvalidToken and exactly one
// class below it, so the HTTP layer can answer 401 and name the class
// without echoing anything from the token. Error strings never carry the
// token, its claim values or key material.
var (
	// ErrNoCredentials: no Authorization header, or one whose scheme is not
	// Bearer. The caller did not try to authenticate.
	ErrNoCredentials = errors.New("identity: no bearer token")

	// ErrInvalidToken: a bearer token was presented and failed. Every class
	// below wraps it.
	ErrInvalidToken = errors.New("identity: invalid token")

	// ErrMalformed: not a compact JWS (segments, base64url, JSON), too large,
	// or more than one Authorization header.
	ErrMalformed = fmt.Errorf("%w: malformed", ErrInvalidToken)
	// ErrSignature: the signature was not verified: algorithm other than
	// RS256, missing kid, unknown kid, a key unfit for RS256, or a signature
	// that does not match.
	ErrSignature = fmt.Errorf("%w: signature not verified", ErrInvalidToken)
	// ErrUnknownKey: the kid names no key in the key set. It wraps
	// ErrSignature; an Entra key source may refresh its JWKS (rate-limited)
	// and retry once when it sees it.
	ErrUnknownKey = fmt.Errorf("%w: unknown key id", ErrSignature)
	// ErrExpired: now is later than exp + skew.
	ErrExpired = fmt.Errorf("%w: expired", ErrInvalidToken)
	// ErrNotYetValid: nbf or iat is later than now + skew.
	ErrNotYetValid = fmt.Errorf("%w: not yet valid", ErrInvalidToken)
	// ErrIssuer: iss is missing or not exactly one of the accepted issuers.
	ErrIssuer = fmt.Errorf("%w: issuer not accepted", ErrInvalidToken)
	// ErrAudience: aud is missing or names none of the accepted audiences.
	ErrAudience = fmt.Errorf("%w: audience not accepted", ErrInvalidToken)
	// ErrTenant: tid is well formed but not an allowed tenant.
	ErrTenant = fmt.Errorf("%w: tenant not allowed", ErrInvalidToken)
	// ErrClaims: a required claim (exp, tid, oid) is missing or malformed,
	// or a roles/scp claim has the wrong type.
	ErrClaims = fmt.Errorf("%w: claims missing or malformed", ErrInvalidToken)

	// ErrKeysUnavailable: the key source failed (JWKS not reachable). The
	// token was not judged; this is not ErrInvalidToken and maps to 503.
	ErrKeysUnavailable = errors.New("identity: signing keys unavailable")
)

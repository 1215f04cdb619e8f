package identity

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// MaxSkew is the largest clock skew a verifier accepts, and its default.
const MaxSkew = 5 * time.Minute

// minRSABits is the smallest RSA modulus a verification key may have.
const minRSABits = 2048

// KeySource returns the current verification key set. A static set, a
// jwk.Cache lookup or a jwk.CachedSet all fit. An error means the keys
// could not be obtained; the verifier reports it as ErrKeysUnavailable.
type KeySource func(ctx context.Context) (jwk.Set, error)

// StaticKeys is a KeySource that always returns set.
func StaticKeys(set jwk.Set) KeySource {
	return func(context.Context) (jwk.Set, error) { return set, nil }
}

// VerifierOptions configures a JWTVerifier.
type VerifierOptions struct {
	// Keys supplies the verification keys. Required. Keys need no "alg"
	// (Entra's carry none): only RSA keys are used, and only for RS256.
	Keys KeySource
	// Issuers lists the accepted iss values, compared exactly (v1
	// "https://sts.windows.net/<tid>/" and v2
	// "https://login.microsoftonline.com/<tid>/v2.0" are different
	// strings: list each one to accept). Empty refuses every token.
	Issuers []string
	// Audiences lists the accepted aud values; the token must name at
	// least one. Empty refuses every token.
	Audiences []string
	// Tenants lists the allowed tid values (GUIDs, any case). Empty refuses
	// every token.
	Tenants []string
	// Skew is the clock skew allowed on exp, nbf and iat. Zero means
	// MaxSkew; more than MaxSkew is refused.
	Skew time.Duration
	// RoleMap maps roles/scp claim values to roles. Nil means the identity
	// mapping of the six role names. When set it replaces the default.
	// Claim values it does not name are ignored.
	RoleMap map[string]Role
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// JWTVerifier verifies Entra-style access tokens (RS256 compact JWS) and
// turns them into Principals. It is safe for concurrent use.
type JWTVerifier struct {
	keys      KeySource
	issuers   map[string]bool
	audiences map[string]bool
	tenants   map[string]bool
	skew      time.Duration
	roleMap   map[string]Role
	now       func() time.Time
	verified  *verified
	// signatures counts RSA signature verifications (tests).
	signatures atomic.Int64
}

// NewJWTVerifier checks o and builds a verifier. It copies the slices and
// the map: later changes to o do not affect the verifier.
func NewJWTVerifier(o VerifierOptions) (*JWTVerifier, error) {
	if o.Keys == nil {
		return nil, errors.New("identity: verifier options: no key source")
	}
	skew := o.Skew
	switch {
	case skew == 0:
		skew = MaxSkew
	case skew < 0 || skew > MaxSkew:
		return nil, fmt.Errorf("identity: verifier options: skew %v outside (0, %v]", o.Skew, MaxSkew)
	}
	v := &JWTVerifier{
		keys:      o.Keys,
		issuers:   make(map[string]bool, len(o.Issuers)),
		audiences: make(map[string]bool, len(o.Audiences)),
		tenants:   make(map[string]bool, len(o.Tenants)),
		skew:      skew,
		now:       o.Now,
		verified:  newVerified(),
	}
	if v.now == nil {
		v.now = time.Now
	}
	for _, s := range o.Issuers {
		if s == "" {
			return nil, errors.New("identity: verifier options: empty issuer")
		}
		v.issuers[s] = true
	}
	for _, s := range o.Audiences {
		if s == "" {
			return nil, errors.New("identity: verifier options: empty audience")
		}
		v.audiences[s] = true
	}
	for _, s := range o.Tenants {
		if !isGUID(s) {
			return nil, fmt.Errorf("identity: verifier options: tenant %q is not a GUID", s)
		}
		v.tenants[strings.ToLower(s)] = true
	}
	if o.RoleMap == nil {
		v.roleMap = defaultRoleMap()
	} else {
		v.roleMap = make(map[string]Role, len(o.RoleMap))
		for claim, r := range o.RoleMap {
			if !r.valid() {
				return nil, fmt.Errorf("identity: verifier options: role map %q: %w", claim, ErrUnknownRole)
			}
			v.roleMap[claim] = r
		}
	}
	return v, nil
}

// Authenticate reads the single "Authorization: Bearer <jwt>" header and
// verifies the token.
func (v *JWTVerifier) Authenticate(ctx context.Context, h http.Header) (Principal, error) {
	tok, err := bearerToken(h)
	if err != nil {
		return Principal{}, err
	}
	return v.Verify(ctx, tok)
}

// jwsHeader is the part of the protected header the verifier reads before
// handing the token to jwx. Presence matters for kid, crit and b64.
type jwsHeader struct {
	Alg  string           `json:"alg"`
	Kid  *string          `json:"kid"`
	Crit *json.RawMessage `json:"crit"`
	B64  *json.RawMessage `json:"b64"`
}

// Verify verifies a compact JWS token and returns its principal. A token
// verified before under the key its kid still names skips the signature
// check (see verified); every other check runs each time.
func (v *JWTVerifier) Verify(ctx context.Context, token string) (Principal, error) {
	var sum [sha256.Size]byte
	if len(token) <= MaxTokenSize {
		sum = sha256.Sum256([]byte(token))
		if e, ok := v.verified.get(sum); ok {
			key, err := v.key(ctx, e.kid)
			if err != nil {
				return Principal{}, err
			}
			if key.Equal(e.key) {
				return v.principal(e.tok)
			}
		}
	}
	hdr, err := precheck(token)
	if err != nil {
		return Principal{}, err
	}
	key, err := v.key(ctx, *hdr.Kid)
	if err != nil {
		return Principal{}, err
	}
	// The algorithm is pinned by the verifier, not taken from the token or
	// the key: jwx checks that the header says RS256 too.
	v.signatures.Add(1)
	tok, err := jwt.Parse([]byte(token), jwt.WithKey(jwa.RS256(), key), jwt.WithValidate(false))
	if err != nil {
		if errors.Is(err, jws.VerifyError()) || errors.Is(err, jws.VerificationError()) {
			return Principal{}, fmt.Errorf("%w: signature does not match", ErrSignature)
		}
		return Principal{}, fmt.Errorf("%w: payload is not a JWT claims set", ErrMalformed)
	}
	p, err := v.principal(tok)
	if err != nil {
		return Principal{}, err
	}
	exp, _ := tok.Expiration() // principal requires exp
	v.verified.put(sum, verifiedToken{kid: *hdr.Kid, key: key, tok: tok, exp: exp.Add(v.skew)}, v.now())
	return p, nil
}

// precheck rejects what is not a compact RS256 JWS with a kid before any key
// is looked up: three canonical base64url segments, a JSON object header
// with alg RS256 and a non-empty kid, no crit or b64, a JSON object payload.
func precheck(token string) (jwsHeader, error) {
	var hdr jwsHeader
	if token == "" {
		return hdr, fmt.Errorf("%w: empty token", ErrMalformed)
	}
	if len(token) > MaxTokenSize {
		return hdr, fmt.Errorf("%w: token larger than %d bytes", ErrMalformed, MaxTokenSize)
	}
	segs := strings.Split(token, ".")
	if len(segs) != 3 {
		return hdr, fmt.Errorf("%w: want 3 segments, got %d", ErrMalformed, len(segs))
	}
	var raw [3][]byte
	for i, s := range segs {
		b, err := base64.RawURLEncoding.Strict().DecodeString(s)
		if err != nil {
			return hdr, fmt.Errorf("%w: segment %d is not canonical base64url", ErrMalformed, i+1)
		}
		raw[i] = b
	}
	if !isJSONObject(raw[0]) || json.Unmarshal(raw[0], &hdr) != nil {
		return hdr, fmt.Errorf("%w: header is not a well-formed JSON object", ErrMalformed)
	}
	if hdr.Alg != jwa.RS256().String() {
		return hdr, fmt.Errorf("%w: algorithm not allowed (RS256 only)", ErrSignature)
	}
	if hdr.Kid == nil || *hdr.Kid == "" {
		return hdr, fmt.Errorf("%w: header has no kid", ErrSignature)
	}
	if hdr.Crit != nil || hdr.B64 != nil {
		return hdr, fmt.Errorf("%w: unsupported header parameter (crit or b64)", ErrSignature)
	}
	if len(raw[2]) == 0 {
		return hdr, fmt.Errorf("%w: empty signature", ErrSignature)
	}
	if !isJSONObject(raw[1]) {
		return hdr, fmt.Errorf("%w: payload is not a JSON object", ErrMalformed)
	}
	return hdr, nil
}

func isJSONObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// key returns the RSA public key the kid names, if it is fit for RS256: kty
// RSA, no alg or alg RS256, no use or use "sig", at least 2048 bits.
func (v *JWTVerifier) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	set, err := v.keys(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
	}
	if set == nil {
		return nil, fmt.Errorf("%w: key source returned no set", ErrKeysUnavailable)
	}
	k, ok := set.LookupKeyID(kid)
	if !ok {
		return nil, ErrUnknownKey
	}
	unfit := fmt.Errorf("%w: key is not an RS256 signature key", ErrSignature)
	if k.KeyType() != jwa.RSA() {
		return nil, unfit
	}
	if alg, ok := k.Algorithm(); ok && alg.String() != jwa.RS256().String() {
		return nil, unfit
	}
	if use, ok := k.KeyUsage(); ok && use != "" && use != jwk.ForSignature.String() {
		return nil, unfit
	}
	var raw any
	if err := jwk.Export(k, &raw); err != nil {
		return nil, unfit
	}
	var pub *rsa.PublicKey
	switch r := raw.(type) {
	case *rsa.PublicKey:
		pub = r
	case *rsa.PrivateKey:
		pub = &r.PublicKey
	default:
		return nil, unfit
	}
	if pub.N == nil || pub.N.BitLen() < minRSABits {
		return nil, unfit
	}
	return pub, nil
}

// principal checks the verified token's claims and builds the Principal.
func (v *JWTVerifier) principal(tok jwt.Token) (Principal, error) {
	if iss, ok := tok.Issuer(); !ok || !v.issuers[iss] {
		return Principal{}, ErrIssuer
	}
	aud, _ := tok.Audience()
	if !v.anyAudience(aud) {
		return Principal{}, ErrAudience
	}
	err := jwt.Validate(tok,
		jwt.WithClock(jwt.ClockFunc(v.now)),
		jwt.WithAcceptableSkew(v.skew),
		jwt.WithRequiredClaim(jwt.ExpirationKey),
	)
	switch {
	case err == nil:
	case errors.Is(err, jwt.TokenExpiredError()):
		return Principal{}, ErrExpired
	case errors.Is(err, jwt.TokenNotYetValidError()), errors.Is(err, jwt.InvalidIssuedAtError()):
		return Principal{}, ErrNotYetValid
	default:
		return Principal{}, fmt.Errorf("%w: exp, nbf or iat", ErrClaims)
	}

	tid, ok := stringClaim(tok, "tid")
	if !ok || !isGUID(tid) {
		return Principal{}, fmt.Errorf("%w: tid", ErrClaims)
	}
	oid, ok := stringClaim(tok, "oid")
	if !ok || !isGUID(oid) {
		return Principal{}, fmt.Errorf("%w: oid", ErrClaims)
	}
	tid, oid = strings.ToLower(tid), strings.ToLower(oid)
	if !v.tenants[tid] {
		return Principal{}, ErrTenant
	}

	roles, err := v.roles(tok)
	if err != nil {
		return Principal{}, err
	}
	p := Principal{Tenant: tid, Object: oid, Kind: KindUser, Roles: roles}
	idtyp, _ := stringClaim(tok, "idtyp")
	sub, _ := tok.Subject()
	if appOnly(idtyp, sub, oid, tok.Has("scp")) {
		p.Kind = KindApp
	}
	for _, c := range []string{"name", "preferred_username", "appid", "azp"} {
		if s, ok := stringClaim(tok, c); ok && s != "" {
			p.Name = s
			break
		}
	}
	return p, nil
}

// appOnly reports whether a token is app-only: idtyp "app" (an optional
// claim in Entra), or, without idtyp, no delegated scopes and sub equal to
// oid, which is how Entra's app-only tokens differ from delegated ones.
func appOnly(idtyp, sub, oid string, hasScp bool) bool {
	if idtyp != "" {
		return idtyp == "app"
	}
	return !hasScp && strings.EqualFold(sub, oid)
}

func (v *JWTVerifier) anyAudience(aud []string) bool {
	for _, a := range aud {
		if v.audiences[a] {
			return true
		}
	}
	return false
}

// roles maps the roles claim (array of strings) and the scp claim
// (space-separated string) through the role map; unknown values are ignored.
func (v *JWTVerifier) roles(tok jwt.Token) (map[Role]bool, error) {
	out := make(map[Role]bool)
	if tok.Has("roles") {
		var raw any
		if err := tok.Get("roles", &raw); err != nil {
			return nil, fmt.Errorf("%w: roles", ErrClaims)
		}
		list, ok := raw.([]any)
		if !ok {
			return nil, fmt.Errorf("%w: roles is not an array", ErrClaims)
		}
		for _, e := range list {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%w: roles holds a non-string", ErrClaims)
			}
			if r, ok := v.roleMap[s]; ok {
				out[r] = true
			}
		}
	}
	if tok.Has("scp") {
		s, ok := stringClaim(tok, "scp")
		if !ok {
			return nil, fmt.Errorf("%w: scp is not a string", ErrClaims)
		}
		for _, f := range strings.Fields(s) {
			if r, ok := v.roleMap[f]; ok {
				out[r] = true
			}
		}
	}
	return out, nil
}

// stringClaim returns a private claim if it is present and a string.
func stringClaim(tok jwt.Token, name string) (string, bool) {
	var raw any
	if err := tok.Get(name, &raw); err != nil {
		return "", false
	}
	s, ok := raw.(string)
	return s, ok
}

// isGUID reports whether s has the 8-4-4-4-12 hex form of a GUID.
func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

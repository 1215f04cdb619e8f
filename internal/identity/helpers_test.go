package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
)

// The fixed clock of every verifier test: no test waits for time to pass.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	testTenant   = "3f1c2a9e-5b7d-4e21-9a0c-6d8e7f4b2c11"
	otherTenant  = "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d"
	testOID      = "9b2e4d6f-1a3c-4e5b-8d7f-0c2a4e6b8d0f"
	testIssuer   = "https://login.microsoftonline.com/" + testTenant + "/v2.0"
	testIssuerV1 = "https://sts.windows.net/" + testTenant + "/"
	testAudience = "api://credvault"
	testName     = "Ada Lovelace"
)

// Key ids in the test key set.
const (
	kidRSA    = "k1"   // the good RSA key, no alg, as Entra publishes them
	kidEC     = "ec1"  // a P-256 key: ES256 tokens verify against it
	kidRS384  = "k384" // the good RSA key again, but with alg RS384
	kidEncUse = "enc"  // the good RSA key again, but with use "enc"
)

type testKeys struct {
	rsa   *rsa.PrivateKey // signs good tokens as kidRSA
	other *rsa.PrivateKey // not in the set: signs with kidRSA to impersonate
	ec    *ecdsa.PrivateKey
	set   jwk.Set // public keys only
}

var keysOnce = sync.OnceValues(func() (*testKeys, error) {
	k := &testKeys{}
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	if k.other, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	k.set = jwk.NewSet()
	add := func(raw any, kid string, extra map[string]string) error {
		key, err := jwk.Import(raw)
		if err != nil {
			return err
		}
		if err := key.Set(jwk.KeyIDKey, kid); err != nil {
			return err
		}
		for n, v := range extra {
			if err := key.Set(n, v); err != nil {
				return err
			}
		}
		return k.set.AddKey(key)
	}
	for _, e := range []struct {
		raw   any
		kid   string
		extra map[string]string
	}{
		{&k.rsa.PublicKey, kidRSA, nil},
		{&k.ec.PublicKey, kidEC, nil},
		{&k.rsa.PublicKey, kidRS384, map[string]string{jwk.AlgorithmKey: "RS384"}},
		{&k.rsa.PublicKey, kidEncUse, map[string]string{jwk.KeyUsageKey: "enc"}},
	} {
		if err := add(e.raw, e.kid, e.extra); err != nil {
			return nil, err
		}
	}
	return k, nil
})

func keys(t testing.TB) *testKeys {
	t.Helper()
	k, err := keysOnce()
	if err != nil {
		t.Fatalf("generate test keys: %v", err)
	}
	return k
}

// testOptions are the options of the verifier under test: one v2 issuer,
// one audience, one tenant, the fixed clock.
func testOptions(k *testKeys) VerifierOptions {
	return VerifierOptions{
		Keys:      StaticKeys(k.set),
		Issuers:   []string{testIssuer},
		Audiences: []string{testAudience},
		Tenants:   []string{testTenant},
		Now:       func() time.Time { return testNow },
	}
}

func newTestVerifier(t testing.TB, o VerifierOptions) *JWTVerifier {
	t.Helper()
	v, err := NewJWTVerifier(o)
	if err != nil {
		t.Fatalf("NewJWTVerifier: %v", err)
	}
	return v
}

func goodHeader() map[string]any {
	return map[string]any{"alg": "RS256", "kid": kidRSA, "typ": "JWT"}
}

// goodClaims look like an Entra v2 delegated access token.
func goodClaims() map[string]any {
	return map[string]any{
		"iss":   testIssuer,
		"aud":   testAudience,
		"tid":   testTenant,
		"oid":   testOID,
		"sub":   "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
		"iat":   testNow.Add(-time.Minute).Unix(),
		"nbf":   testNow.Add(-time.Minute).Unix(),
		"exp":   testNow.Add(time.Hour).Unix(),
		"name":  testName,
		"roles": []string{"Credentials.Read"},
		"ver":   "2.0",
	}
}

func seg(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// signRaw signs header.payload by hand, so tests control every byte and
// jwx does not help the attacker or the test.
func signRaw(t testing.TB, h, c map[string]any, alg string, key any) string {
	t.Helper()
	input := seg(t, h) + "." + seg(t, c)
	sig, err := rawSignature(input, alg, key)
	if err != nil {
		t.Fatalf("sign %s: %v", alg, err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func rawSignature(input, alg string, key any) ([]byte, error) {
	switch alg {
	case "none":
		return nil, nil
	case "HS256":
		m := hmac.New(sha256.New, key.([]byte))
		m.Write([]byte(input))
		return m.Sum(nil), nil
	case "RS256":
		d := sha256.Sum256([]byte(input))
		return rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, d[:])
	case "RS384":
		d := sha512.Sum384([]byte(input))
		return rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA384, d[:])
	case "PS256":
		d := sha256.Sum256([]byte(input))
		return rsa.SignPSS(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, d[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case "ES256":
		d := sha256.Sum256([]byte(input))
		r, s, err := ecdsa.Sign(rand.Reader, key.(*ecdsa.PrivateKey), d[:])
		if err != nil {
			return nil, err
		}
		out := make([]byte, 64)
		r.FillBytes(out[:32])
		s.FillBytes(out[32:])
		return out, nil
	}
	return nil, errors.New("unknown alg " + alg)
}

// goodToken is a token the test verifier accepts.
func goodToken(t testing.TB) string {
	t.Helper()
	return signRaw(t, goodHeader(), goodClaims(), "RS256", keys(t).rsa)
}

// checkNoLeak fails when an error message repeats the token or a value
// taken from it.
func checkNoLeak(t testing.TB, what string, err error, token string) {
	t.Helper()
	msg := err.Error()
	for _, s := range []string{token, testTenant, testOID, testIssuer, testName, `"` + kidRSA + `"`} {
		if s != "" && strings.Contains(msg, s) {
			t.Errorf("%s: error %q repeats a value from the token", what, msg)
		}
	}
}

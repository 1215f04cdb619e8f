package identity

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
)

// FuzzAuthenticate feeds arbitrary Authorization header values to the
// verifier. It must never panic, never fail with anything but
// ErrNoCredentials or ErrInvalidToken, never echo the token in an error,
// and never succeed unless the token is, byte for byte, one the test key
// signed (the verifier accepts only canonical base64url, so a valid
// signature has exactly one spelling).
func FuzzAuthenticate(f *testing.F) {
	k := keys(f)
	v := newTestVerifier(f, testOptions(k))

	admin := goodClaims()
	admin["roles"] = []string{"Credentials.Admin"}
	admin["scp"] = "Credentials.Read Credentials.Write"
	valid := map[string]bool{
		goodToken(f): true,
		signRaw(f, goodHeader(), admin, "RS256", k.rsa): true,
	}
	for tok := range valid {
		f.Add("Bearer " + tok)
		f.Add("bearer " + tok)
		f.Add("Bearer " + tok[:len(tok)-1])
	}
	for _, vec := range readHeaderVectors(f) {
		f.Add(vec.value)
	}

	f.Fuzz(func(t *testing.T, value string) {
		h := http.Header{}
		h.Set("Authorization", value)
		p, err := v.Authenticate(context.Background(), h)
		if err != nil {
			if !errors.Is(err, ErrNoCredentials) && !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Authenticate(%q): error %v is neither ErrNoCredentials nor ErrInvalidToken", value, err)
			}
			// Our messages contain no dots; a token always does.
			if _, tok, ok := strings.Cut(value, " "); ok && strings.Contains(tok, ".") && strings.Contains(err.Error(), strings.TrimLeft(tok, " ")) {
				t.Fatalf("Authenticate(%q): error %q echoes the token", value, err)
			}
			return
		}
		_, tok, _ := strings.Cut(value, " ")
		if tok = strings.TrimLeft(tok, " "); !valid[tok] {
			t.Fatalf("Authenticate(%q) succeeded with a token the test key never signed: %v", value, p)
		}
		if got, want := p.Owner(), testTenant+"/"+testOID; got != want {
			t.Fatalf("Authenticate(%q): owner = %q, want %q", value, got, want)
		}
	})
}

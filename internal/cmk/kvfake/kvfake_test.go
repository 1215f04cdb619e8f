package kvfake

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKeyWrapVectors: RFC 3394 section 4.3 and 4.6 (256-bit KEK).
func TestKeyWrapVectors(t *testing.T) {
	kek := unhex(t, "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
	for _, tc := range []struct{ name, plain, wrapped string }{
		{"4.3 128-bit key", "00112233445566778899AABBCCDDEEFF",
			"64E8C3F9CE0F5BA2 63E9777905818A2A 93C8191E7D6E8AE7"},
		{"4.6 256-bit key", "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
			"28C9F404C4B810F4 CBCCB35CFB87F826 3F5786E2D80ED326 CBC7F0E71A99F43B FB988B9B7A02DD21"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plain, want := unhex(t, tc.plain), unhex(t, tc.wrapped)
			got, err := aesKeyWrap(kek, plain)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("wrap = %X, %v; want %X", got, err, want)
			}
			back, err := aesKeyUnwrap(kek, want)
			if err != nil || !bytes.Equal(back, plain) {
				t.Fatalf("unwrap = %X, %v; want %X", back, err, plain)
			}
			want[len(want)-1] ^= 1
			if back, err := aesKeyUnwrap(kek, want); err == nil {
				t.Fatalf("unwrap of a flipped byte = %X, want an integrity failure", back)
			}
		})
	}
}

// TestRawHTTP checks what the fake says to plain HTTP requests, without
// azkeys: the challenge, unknown routes, and a key bundle without private
// parts.
func TestRawHTTP(t *testing.T) {
	v := New(t, Options{Tenant: "tenant-1"})
	kid := v.CreateKey("cmk")
	tok, err := v.Credential().GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{Scope}, TenantID: "tenant-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Credential().GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"https://storage.azure.com/.default"}, TenantID: "tenant-1"}); err == nil {
		t.Fatal("the credential gave a token for another scope")
	}
	do := func(method, path, bearer string) (*http.Response, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, v.URL()+path, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := v.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var body map[string]any
		json.Unmarshal(b, &body)
		return resp, body
	}

	resp, _ := do("GET", "/keys/cmk?api-version=2025-07-01", "")
	if got, want := resp.Header.Get("WWW-Authenticate"), `Bearer authorization="https://login.microsoftonline.com/tenant-1", resource="https://vault.azure.net"`; resp.StatusCode != 401 || got != want {
		t.Fatalf("no bearer: %d %q, want 401 %q", resp.StatusCode, got, want)
	}
	if resp, _ := do("GET", "/keys/cmk?api-version=2025-07-01", "forged"); resp.StatusCode != 401 {
		t.Fatalf("forged bearer: %d, want 401", resp.StatusCode)
	}
	if resp, body := do("GET", "/secrets/cmk?api-version=2025-07-01", tok.Token); resp.StatusCode != 404 || body["error"] == nil {
		t.Fatalf("unknown route: %d %v, want 404 with an error body", resp.StatusCode, body)
	}
	resp, body := do("GET", "/keys/cmk?api-version=2025-07-01", tok.Token)
	key, _ := body["key"].(map[string]any)
	if resp.StatusCode != 200 || key["kid"] != kid || key["kty"] != "RSA" || key["n"] == nil {
		t.Fatalf("get key: %d %v, want 200 with kid %s", resp.StatusCode, body, kid)
	}
	for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "k"} {
		if _, ok := key[private]; ok {
			t.Fatalf("get key returned the private part %q", private)
		}
	}
	if resp, body := do("GET", "/keys/cmk/0000?api-version=2025-07-01", tok.Token); resp.StatusCode != 404 || body["error"].(map[string]any)["code"] != "KeyNotFound" {
		t.Fatalf("unknown version: %d %v, want 404 KeyNotFound", resp.StatusCode, body)
	}
	if got := v.Calls(OpGetKey); got != 2 {
		t.Fatalf("Calls(getKey) = %d, want 2", got)
	}
	if got := v.Calls(OpChallenge); got != 2 {
		t.Fatalf("Calls(challenge) = %d, want 2", got)
	}
}

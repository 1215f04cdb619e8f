package identity

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
)

func TestVerifyRejectsHostileTokens(t *testing.T) {
	k := keys(t)
	pubDER, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	// signed builds a token from the good header and claims after edit.
	signed := func(alg string, key any, edit func(h, c map[string]any)) func(t *testing.T) string {
		return func(t *testing.T) string {
			h, c := goodHeader(), goodClaims()
			h["alg"] = alg
			if edit != nil {
				edit(h, c)
			}
			return signRaw(t, h, c, alg, key)
		}
	}
	rs256 := func(edit func(h, c map[string]any)) func(t *testing.T) string {
		return signed("RS256", k.rsa, edit)
	}
	claim := func(name string, v any) func(h, c map[string]any) {
		return func(_, c map[string]any) { c[name] = v }
	}
	drop := func(name string) func(h, c map[string]any) {
		return func(h, c map[string]any) { delete(c, name); delete(h, name) }
	}
	header := func(name string, v any) func(h, c map[string]any) {
		return func(h, _ map[string]any) { h[name] = v }
	}

	tests := []struct {
		name  string
		token func(t *testing.T) string
		want  error
	}{
		// Algorithms other than RS256, even where the key set could verify them.
		{"alg none", signed("none", nil, nil), ErrSignature},
		{"alg none, upper case", signed("none", nil, header("alg", "NONE")), ErrSignature},
		{"HS256 keyed with the public key PEM", signed("HS256", pubPEM, nil), ErrSignature},
		{"HS256 keyed with the public key DER", signed("HS256", pubDER, nil), ErrSignature},
		{"ES256 with the EC key in the set", signed("ES256", k.ec, header("kid", kidEC)), ErrSignature},
		{"PS256 with the good RSA key", signed("PS256", k.rsa, nil), ErrSignature},
		{"RS384 with the good RSA key", signed("RS384", k.rsa, nil), ErrSignature},
		{"RS384 with a key whose alg is RS384", signed("RS384", k.rsa, header("kid", kidRS384)), ErrSignature},
		{"alg rs256 in lower case", rs256(header("alg", "rs256")), ErrSignature},

		// Keys.
		{"unknown kid", rs256(header("kid", "nope")), ErrUnknownKey},
		{"missing kid", rs256(drop("kid")), ErrSignature},
		{"empty kid", rs256(header("kid", "")), ErrSignature},
		{"kid not a string", rs256(header("kid", 1)), ErrMalformed},
		{"kid names the EC key", rs256(header("kid", kidEC)), ErrSignature},
		{"kid names a key with alg RS384", rs256(header("kid", kidRS384)), ErrSignature},
		{"kid names a key with use enc", rs256(header("kid", kidEncUse)), ErrSignature},
		{"different key, same kid", signed("RS256", k.other, nil), ErrSignature},
		{"crit header", rs256(header("crit", []string{"exp"})), ErrSignature},
		{"b64 header", rs256(header("b64", false)), ErrSignature},

		// Tampering after signing.
		{"signature byte flipped", func(t *testing.T) string {
			tok := goodToken(t)
			i := strings.LastIndexByte(tok, '.')
			sig, _ := base64.RawURLEncoding.DecodeString(tok[i+1:])
			sig[len(sig)/2] ^= 0x01
			return tok[:i+1] + base64.RawURLEncoding.EncodeToString(sig)
		}, ErrSignature},
		{"payload changed after signing", func(t *testing.T) string {
			parts := strings.Split(goodToken(t), ".")
			c := goodClaims()
			c["roles"] = []string{"Credentials.Admin"}
			return parts[0] + "." + seg(t, c) + "." + parts[2]
		}, ErrSignature},
		{"header changed after signing", func(t *testing.T) string {
			parts := strings.Split(goodToken(t), ".")
			h := goodHeader()
			h["typ"] = "at+jwt"
			return seg(t, h) + "." + parts[1] + "." + parts[2]
		}, ErrSignature},
		{"signature stripped", func(t *testing.T) string {
			tok := goodToken(t)
			return tok[:strings.LastIndexByte(tok, '.')+1]
		}, ErrSignature},

		// Issuer: exact match only.
		{"wrong issuer", rs256(claim("iss", "https://login.microsoftonline.com/"+otherTenant+"/v2.0")), ErrIssuer},
		{"issuer with trailing slash", rs256(claim("iss", testIssuer+"/")), ErrIssuer},
		{"v1 issuer when only v2 is accepted", rs256(claim("iss", testIssuerV1)), ErrIssuer},
		{"issuer in upper case", rs256(claim("iss", strings.ToUpper(testIssuer))), ErrIssuer},
		{"issuer missing", rs256(drop("iss")), ErrIssuer},

		// Audience.
		{"wrong audience", rs256(claim("aud", "api://someone-else")), ErrAudience},
		{"audience near miss", rs256(claim("aud", testAudience+"/")), ErrAudience},
		{"audience missing", rs256(drop("aud")), ErrAudience},

		// Time, with the default 5 minute skew.
		{"expired beyond skew", rs256(claim("exp", testNow.Add(-6*time.Minute).Unix())), ErrExpired},
		{"exp missing", rs256(drop("exp")), ErrClaims},
		{"nbf in the future beyond skew", rs256(claim("nbf", testNow.Add(6*time.Minute).Unix())), ErrNotYetValid},
		{"iat in the future beyond skew", rs256(claim("iat", testNow.Add(6*time.Minute).Unix())), ErrNotYetValid},
		{"exp not a number", rs256(claim("exp", "tomorrow")), ErrMalformed},

		// Owner claims and tenant.
		{"tid missing", rs256(drop("tid")), ErrClaims},
		{"oid missing", rs256(drop("oid")), ErrClaims},
		{"tid empty", rs256(claim("tid", "")), ErrClaims},
		{"oid not a GUID", rs256(claim("oid", "alice")), ErrClaims},
		{"oid with a path separator", rs256(claim("oid", testOID+"/x")), ErrClaims},
		{"tid not a string", rs256(claim("tid", 42)), ErrClaims},
		{"tenant not allowed", rs256(claim("tid", otherTenant)), ErrTenant},
		{"roles not an array", rs256(claim("roles", "Credentials.Admin")), ErrClaims},
		{"roles holds a number", rs256(claim("roles", []any{"Credentials.Read", 1})), ErrClaims},
		{"scp not a string", rs256(claim("scp", []string{"Credentials.Read"})), ErrClaims},

		// Not a compact JWS at all.
		{"empty", func(*testing.T) string { return "" }, ErrMalformed},
		{"two segments", func(t *testing.T) string {
			tok := goodToken(t)
			return tok[:strings.LastIndexByte(tok, '.')]
		}, ErrMalformed},
		{"four segments", func(t *testing.T) string { return goodToken(t) + ".e30" }, ErrMalformed},
		{"JWE-like five segments", func(*testing.T) string { return "a.b.c.d.e" }, ErrMalformed},
		{"huge", func(t *testing.T) string {
			return rs256(claim("pad", strings.Repeat("x", MaxTokenSize)))(t)
		}, ErrMalformed},
		{"padded base64", func(t *testing.T) string {
			parts := strings.Split(goodToken(t), ".")
			return parts[0] + "==." + parts[1] + "." + parts[2]
		}, ErrMalformed},
		{"standard base64 alphabet", func(t *testing.T) string {
			return strings.NewReplacer("-", "+", "_", "/").Replace(goodToken(t)) + "+/"
		}, ErrMalformed},
		{"signature with non-zero base64 padding bits", func(t *testing.T) string {
			// 256 signature bytes take 342 characters; the last one carries 4
			// unused bits. Setting one spells the same signature differently.
			tok := goodToken(t)
			const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
			last := strings.IndexByte(alphabet, tok[len(tok)-1])
			return tok[:len(tok)-1] + string(alphabet[last|1])
		}, ErrMalformed},
		{"header not JSON", func(*testing.T) string { return "bm90IGpzb24.e30.c2ln" }, ErrMalformed},
		{"header a JSON array", func(t *testing.T) string {
			return seg(t, []string{"RS256"}) + ".e30.c2ln"
		}, ErrMalformed},
		{"payload a JSON array, signed", func(t *testing.T) string {
			input := seg(t, goodHeader()) + "." + seg(t, []string{"x"})
			sig, err := rawSignature(input, "RS256", k.rsa)
			if err != nil {
				t.Fatal(err)
			}
			return input + "." + base64.RawURLEncoding.EncodeToString(sig)
		}, ErrMalformed},
		{"surrounding space", func(t *testing.T) string { return " " + goodToken(t) }, ErrMalformed},
	}
	v := newTestVerifier(t, testOptions(k))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := tt.token(t)
			p, err := v.Verify(context.Background(), tok)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify(%s) = %v, %v; want error %v", tt.name, p, err, tt.want)
			}
			if !errors.Is(err, ErrInvalidToken) {
				t.Errorf("Verify(%s) error %v does not wrap ErrInvalidToken", tt.name, err)
			}
			checkNoLeak(t, tt.name, err, tok)
			t.Logf("error: %v", err)
		})
	}
}

func TestVerifyAcceptsGoodTokens(t *testing.T) {
	k := keys(t)
	tests := []struct {
		name      string
		edit      func(c map[string]any)
		opts      func(o *VerifierOptions)
		wantRoles []Role
		wantKind  string
		wantName  string
	}{
		{name: "roles claim", wantRoles: []Role{CredentialsRead}},
		{
			name:      "scp claim, space separated",
			edit:      func(c map[string]any) { delete(c, "roles"); c["scp"] = "Credentials.Read  Credentials.Write User.Read" },
			wantRoles: []Role{CredentialsRead, CredentialsWrite},
		},
		{
			name: "roles and scp together, unknown values ignored",
			edit: func(c map[string]any) {
				c["roles"] = []string{"Keys.Rotate", "Global.Admin", ""}
				c["scp"] = "Audit.Read"
			},
			wantRoles: []Role{AuditRead, KeysRotate},
		},
		{
			name:      "role values are case-sensitive",
			edit:      func(c map[string]any) { c["roles"] = []string{"credentials.admin", "CREDENTIALS.READ"} },
			wantRoles: nil,
		},
		{
			name: "role map replaces the identity mapping",
			edit: func(c map[string]any) { c["roles"] = []string{"Vault.Reader", "Credentials.Admin"} },
			opts: func(o *VerifierOptions) {
				o.RoleMap = map[string]Role{"Vault.Reader": CredentialsRead, "Vault.Writer": CredentialsWrite}
			},
			wantRoles: []Role{CredentialsRead},
		},
		{name: "no roles at all", edit: func(c map[string]any) { delete(c, "roles") }},
		{
			name:      "app token",
			edit:      func(c map[string]any) { c["idtyp"] = "app"; delete(c, "name"); c["azp"] = "5e6f7a8b-client" },
			wantRoles: []Role{CredentialsRead},
			wantKind:  KindApp,
			wantName:  "5e6f7a8b-client",
		},
		{
			name:      "name falls back to preferred_username",
			edit:      func(c map[string]any) { delete(c, "name"); c["preferred_username"] = "ada@example.com" },
			wantRoles: []Role{CredentialsRead},
			wantName:  "ada@example.com",
		},
		{
			name:      "name falls back to appid (v1)",
			edit:      func(c map[string]any) { delete(c, "name"); c["appid"] = "app-1"; c["azp"] = "app-2" },
			wantRoles: []Role{CredentialsRead},
			wantName:  "app-1",
		},
		{
			name:      "expired within skew",
			edit:      func(c map[string]any) { c["exp"] = testNow.Add(-4 * time.Minute).Unix() },
			wantRoles: []Role{CredentialsRead},
		},
		{
			name:      "nbf within skew",
			edit:      func(c map[string]any) { c["nbf"] = testNow.Add(4 * time.Minute).Unix() },
			wantRoles: []Role{CredentialsRead},
		},
		{
			name:      "no nbf, no iat",
			edit:      func(c map[string]any) { delete(c, "nbf"); delete(c, "iat") },
			wantRoles: []Role{CredentialsRead},
		},
		{
			name:      "aud list with one accepted value",
			edit:      func(c map[string]any) { c["aud"] = []string{"api://other", testAudience} },
			wantRoles: []Role{CredentialsRead},
		},
		{
			name:      "v1 issuer when listed",
			edit:      func(c map[string]any) { c["iss"] = testIssuerV1 },
			opts:      func(o *VerifierOptions) { o.Issuers = []string{testIssuer, testIssuerV1} },
			wantRoles: []Role{CredentialsRead},
		},
		{
			name:      "upper-case GUIDs give the same owner",
			edit:      func(c map[string]any) { c["tid"] = strings.ToUpper(testTenant); c["oid"] = strings.ToUpper(testOID) },
			wantRoles: []Role{CredentialsRead},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := goodClaims()
			if tt.edit != nil {
				tt.edit(c)
			}
			o := testOptions(k)
			if tt.opts != nil {
				tt.opts(&o)
			}
			v := newTestVerifier(t, o)
			p, err := v.Verify(context.Background(), signRaw(t, goodHeader(), c, "RS256", k.rsa))
			if err != nil {
				t.Fatalf("Verify(%s): %v", tt.name, err)
			}
			if got, want := p.Owner(), testTenant+"/"+testOID; got != want {
				t.Errorf("%s: owner = %q, want %q", tt.name, got, want)
			}
			if got, want := p.RoleList(), tt.wantRoles; !slices.Equal(got, want) && len(got)+len(want) > 0 {
				t.Errorf("%s: roles = %v, want %v", tt.name, got, want)
			}
			wantKind := cmpOr(tt.wantKind, KindUser)
			if p.Kind != wantKind {
				t.Errorf("%s: kind = %q, want %q", tt.name, p.Kind, wantKind)
			}
			wantName := cmpOr(tt.wantName, testName)
			if p.Name != wantName {
				t.Errorf("%s: name = %q, want %q", tt.name, p.Name, wantName)
			}
			for _, r := range AllRoles() {
				if got, want := p.Has(r), slices.Contains(tt.wantRoles, r); got != want {
					t.Errorf("%s: Has(%s) = %v, want %v", tt.name, r, got, want)
				}
			}
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestVerifyRefusesEverythingWhenListsAreEmpty(t *testing.T) {
	k := keys(t)
	tok := goodToken(t)
	tests := []struct {
		name string
		edit func(o *VerifierOptions)
		want error
	}{
		{"no tenants", func(o *VerifierOptions) { o.Tenants = nil }, ErrTenant},
		{"no issuers", func(o *VerifierOptions) { o.Issuers = nil }, ErrIssuer},
		{"no audiences", func(o *VerifierOptions) { o.Audiences = nil }, ErrAudience},
		{"only another tenant", func(o *VerifierOptions) { o.Tenants = []string{otherTenant} }, ErrTenant},
	}
	for _, tt := range tests {
		o := testOptions(k)
		tt.edit(&o)
		_, err := newTestVerifier(t, o).Verify(context.Background(), tok)
		if !errors.Is(err, tt.want) {
			t.Errorf("good token with %s: error = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestVerifySkewOption(t *testing.T) {
	k := keys(t)
	c := goodClaims()
	c["exp"] = testNow.Add(-90 * time.Second).Unix()
	tok := signRaw(t, goodHeader(), c, "RS256", k.rsa)

	o := testOptions(k)
	o.Skew = time.Minute
	if _, err := newTestVerifier(t, o).Verify(context.Background(), tok); !errors.Is(err, ErrExpired) {
		t.Errorf("expired 90s ago with 1m skew: error = %v, want ErrExpired", err)
	}
	o.Skew = 2 * time.Minute
	if _, err := newTestVerifier(t, o).Verify(context.Background(), tok); err != nil {
		t.Errorf("expired 90s ago with 2m skew: error = %v, want nil", err)
	}
}

func TestVerifyUsesTheClock(t *testing.T) {
	k := keys(t)
	tok := goodToken(t) // exp = testNow + 1h
	now := testNow
	o := testOptions(k)
	o.Now = func() time.Time { return now }
	v := newTestVerifier(t, o)
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("at issue time: %v", err)
	}
	now = testNow.Add(time.Hour + MaxSkew + time.Second)
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrExpired) {
		t.Fatalf("after exp + skew: error = %v, want ErrExpired", err)
	}
}

func TestVerifyKeySourceFailure(t *testing.T) {
	k := keys(t)
	o := testOptions(k)
	o.Keys = func(context.Context) (jwk.Set, error) { return nil, errors.New("jwks: connection refused") }
	_, err := newTestVerifier(t, o).Verify(context.Background(), goodToken(t))
	if !errors.Is(err, ErrKeysUnavailable) || errors.Is(err, ErrInvalidToken) {
		t.Fatalf("key source down: error = %v, want ErrKeysUnavailable and not ErrInvalidToken", err)
	}

	// A token that fails before the keys are needed does not touch the source.
	_, err = newTestVerifier(t, o).Verify(context.Background(), signRaw(t, map[string]any{"alg": "none", "kid": kidRSA}, goodClaims(), "none", nil))
	if !errors.Is(err, ErrSignature) {
		t.Fatalf("alg none with key source down: error = %v, want ErrSignature", err)
	}
}

func TestVerifyGetsKeysPerToken(t *testing.T) {
	// A key source that rotates its set is read on every verification.
	k := keys(t)
	empty := jwk.NewSet()
	set := empty
	o := testOptions(k)
	o.Keys = func(context.Context) (jwk.Set, error) { return set, nil }
	v := newTestVerifier(t, o)
	tok := goodToken(t)
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("before rollover: error = %v, want ErrUnknownKey", err)
	}
	set = k.set
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("after rollover: %v", err)
	}
}

func TestNewJWTVerifierRefusesBadOptions(t *testing.T) {
	k := keys(t)
	tests := []struct {
		name string
		edit func(o *VerifierOptions)
	}{
		{"no key source", func(o *VerifierOptions) { o.Keys = nil }},
		{"skew above 5m", func(o *VerifierOptions) { o.Skew = MaxSkew + time.Second }},
		{"negative skew", func(o *VerifierOptions) { o.Skew = -time.Second }},
		{"tenant not a GUID", func(o *VerifierOptions) { o.Tenants = []string{"contoso.onmicrosoft.com"} }},
		{"empty issuer", func(o *VerifierOptions) { o.Issuers = []string{""} }},
		{"empty audience", func(o *VerifierOptions) { o.Audiences = []string{""} }},
		{"role map to an unknown role", func(o *VerifierOptions) { o.RoleMap = map[string]Role{"x": "Credentials.Own"} }},
	}
	for _, tt := range tests {
		o := testOptions(k)
		tt.edit(&o)
		if _, err := NewJWTVerifier(o); err == nil {
			t.Errorf("NewJWTVerifier with %s: error = nil, want an error", tt.name)
		}
	}
}

func TestNewJWTVerifierCopiesOptions(t *testing.T) {
	k := keys(t)
	o := testOptions(k)
	o.RoleMap = map[string]Role{"Credentials.Read": CredentialsRead}
	v := newTestVerifier(t, o)
	o.Issuers[0] = "https://evil.example/"
	o.Tenants[0] = otherTenant
	o.RoleMap["Credentials.Read"] = CredentialsAdmin
	p, err := v.Verify(context.Background(), goodToken(t))
	if err != nil {
		t.Fatalf("after editing the options: %v", err)
	}
	if p.Has(CredentialsAdmin) {
		t.Errorf("editing the caller's role map after construction granted Credentials.Admin")
	}
}

func TestAuthenticateHeader(t *testing.T) {
	v := newTestVerifier(t, testOptions(keys(t)))
	tok := goodToken(t)
	tests := []struct {
		name   string
		values []string // Authorization header values; nil: no header
		want   error    // nil: accepted
	}{
		{"Bearer", []string{"Bearer " + tok}, nil},
		{"bearer, lower case", []string{"bearer " + tok}, nil},
		{"BEARER, upper case", []string{"BEARER " + tok}, nil},
		{"two spaces", []string{"Bearer  " + tok}, nil},
		{"no header", nil, ErrNoCredentials},
		{"empty header", []string{""}, ErrNoCredentials},
		{"Basic", []string{"Basic dXNlcjpwYXNz"}, ErrNoCredentials},
		{"token without a scheme", []string{tok}, ErrNoCredentials},
		{"Bearer with a tab", []string{"Bearer\t" + tok}, ErrNoCredentials},
		{"Bearer alone", []string{"Bearer"}, ErrMalformed},
		{"Bearer and a space", []string{"Bearer "}, ErrMalformed},
		{"two headers", []string{"Bearer " + tok, "Bearer " + tok}, ErrMalformed},
		{"huge", []string{"Bearer " + strings.Repeat("A", 1<<20)}, ErrMalformed},
		{"trailing garbage", []string{"Bearer " + tok + " x"}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, s := range tt.values {
				h.Add("Authorization", s)
			}
			p, err := v.Authenticate(context.Background(), h)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Authenticate(%s): error = %v, want %v", tt.name, err, tt.want)
			}
			if err == nil && p.Owner() != testTenant+"/"+testOID {
				t.Errorf("Authenticate(%s): owner = %q", tt.name, p.Owner())
			}
			if err != nil {
				checkNoLeak(t, tt.name, err, tok)
			}
		})
	}
}

func TestErrorClasses(t *testing.T) {
	classes := []error{ErrMalformed, ErrSignature, ErrUnknownKey, ErrExpired, ErrNotYetValid, ErrIssuer, ErrAudience, ErrTenant, ErrClaims}
	for _, c := range classes {
		if !errors.Is(c, ErrInvalidToken) {
			t.Errorf("%v does not wrap ErrInvalidToken", c)
		}
	}
	if !errors.Is(ErrUnknownKey, ErrSignature) {
		t.Errorf("ErrUnknownKey does not wrap ErrSignature")
	}
	for _, c := range []error{ErrNoCredentials, ErrKeysUnavailable} {
		if errors.Is(c, ErrInvalidToken) {
			t.Errorf("%v wraps ErrInvalidToken; it must not (401 invalid_token vs plain 401 / 503)", c)
		}
	}
	// No sentinel's text contains a dot: FuzzAuthenticate relies on it to
	// tell a token echo from our own words.
	for _, c := range append(classes, ErrNoCredentials, ErrKeysUnavailable) {
		if strings.Contains(c.Error(), ".") {
			t.Errorf("%q contains a dot", c)
		}
	}
}

func TestRoles(t *testing.T) {
	all := AllRoles()
	if got, want := len(all), 6; got != want {
		t.Fatalf("AllRoles() has %d roles, want %d", got, want)
	}
	for _, r := range all {
		got, err := ParseRole(string(r))
		if err != nil || got != r {
			t.Errorf("ParseRole(%q) = %q, %v; want %q", r, got, err, r)
		}
	}
	for _, s := range []string{"", "credentials.read", "Credentials.Read ", "Credentials.Own"} {
		if _, err := ParseRole(s); !errors.Is(err, ErrUnknownRole) {
			t.Errorf("ParseRole(%q) error = %v, want ErrUnknownRole", s, err)
		}
	}
	all[0] = "changed"
	if AllRoles()[0] != CredentialsRead {
		t.Errorf("AllRoles returns a shared slice")
	}
	if got := slices.Collect(maps.Keys(defaultRoleMap())); len(got) != 6 {
		t.Errorf("default role map has %d entries, want 6", len(got))
	}
}

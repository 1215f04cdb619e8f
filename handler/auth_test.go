package main

import (
	"bufio"
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/config"
	"github.com/credvault/credvault/internal/identity"
	"github.com/credvault/credvault/internal/identity/entrafake"
)

// The callers of the Entra tests. Tenants A and B are allowed, X is not.
const (
	entraTenantA  = "3f1c2a9e-5b7d-4e21-9a0c-6d8e7f4b2c11"
	entraTenantB  = "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d"
	entraTenantX  = "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d"
	entraAudience = "api://credvault"
	entraClientID = "5e6f7a8b-0c1d-4e2f-8a9b-0c1d2e3f4a5b"
	entraUserOID  = "9b2e4d6f-1a3c-4e5b-8d7f-0c2a4e6b8d0f"
	entraUser2OID = "1c3e5a7b-9d0f-4b2d-8e4f-6a8c0e2a4c6e"
	entraAppOID   = "0d4b2f7e-9c1a-4e3b-8f5d-6a7b8c9d0e1f"
	entraUserName = "Ada Lovelace"
)

// entraSettings point credvault's entra mode at fa.
func entraSettings(fa *entrafake.Authority) []string {
	return []string{
		"CREDVAULT_AUTH_MODE", "entra",
		"CREDVAULT_ENTRA_AUTHORITY", fa.URL(),
		"CREDVAULT_ENTRA_TENANTS", entraTenantA + "," + entraTenantB,
		"CREDVAULT_ENTRA_AUDIENCES", entraAudience + "," + entraClientID,
	}
}

// startEntra starts credvault in entra mode against fa, through the usual
// harness. The first start has no way to reach fa (its certificate is not
// trusted): it proves that starting contacts nothing. The restart injects
// fa's TLS trust and clock (nil: time.Now).
func startEntra(t *testing.T, fa *entrafake.Authority, clock func() time.Time, settings ...string) *testEnv {
	t.Helper()
	e := startWith(t, azureMode(), append(entraSettings(fa), settings...)...)
	if n := fa.Fetches(); n != 0 {
		t.Fatalf("credvault contacted the authority %d times while starting, want 0", n)
	}
	if r := e.do("GET", "/api/health", "", nil); r.status != http.StatusOK {
		t.Fatalf("health before any token: %d", r.status)
	}
	e.deps.authorityClient = fa.Client()
	e.deps.authClock = clock
	e.restart()
	if n := fa.Fetches(); n != 0 {
		t.Fatalf("credvault, trusting the authority, contacted it %d times before the first token, want 0", n)
	}
	return e
}

// entraClaims are a v2.0 delegated access token of tid for entraUserOID,
// valid at now, with the read, write and delete app roles.
func entraClaims(fa *entrafake.Authority, tid string, now time.Time) map[string]any {
	return map[string]any{
		"aud":   entraAudience,
		"iss":   fa.IssuerV2(tid),
		"iat":   now.Add(-time.Minute).Unix(),
		"nbf":   now.Add(-time.Minute).Unix(),
		"exp":   now.Add(time.Hour).Unix(),
		"aio":   "AWQAm/8YAAAAt09OFmRb/7ydXrc4w9D2cFL85zyeHFy",
		"azp":   entraClientID,
		"name":  entraUserName,
		"oid":   entraUserOID,
		"sub":   "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
		"tid":   tid,
		"roles": []string{"Credentials.Read", "Credentials.Write", "Credentials.Delete"},
		"uti":   "Xf0fYsDe5k2oQ5u9H0MyAA",
		"ver":   "2.0",
	}
}

// signAs signs header.payload with alg under key, whatever the header says.
func signAs(t *testing.T, alg string, h, c map[string]any, key any) string {
	t.Helper()
	input := entrafake.Segment(t, h) + "." + entrafake.Segment(t, c)
	var sig []byte
	var err error
	switch alg {
	case "none":
	case "HS256":
		m := hmac.New(sha256.New, key.([]byte))
		m.Write([]byte(input))
		sig = m.Sum(nil)
	case "RS256":
		d := sha256.Sum256([]byte(input))
		sig, err = rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, d[:])
	case "RS384":
		d := sha512.Sum384([]byte(input))
		sig, err = rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA384, d[:])
	case "PS256":
		d := sha256.Sum256([]byte(input))
		sig, err = rsa.SignPSS(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, d[:], nil)
	default:
		t.Fatalf("signAs: unknown alg %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// attackerServer is a server the hostile tokens point jku and x5u at; it
// counts the requests it gets (credvault must send none).
func attackerServer(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var hits atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte(`{"keys":[]}`))
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// TestEntraHostileTokensThroughTheAPI: every hostile or broken token is
// answered 401 (or 403 for a valid caller without the role), never 200 and
// never 5xx, with problem+json that does not echo it; nothing of it reaches
// the logs.
func TestEntraHostileTokensThroughTheAPI(t *testing.T) {
	fa := entrafake.New(t)
	removed := fa.Rotate() // published once, withdrawn before credvault ever fetched
	e := startEntra(t, fa, nil)
	now := time.Now()
	cur := fa.Current()
	attacker := fa.NewKey() // a key the authority never published
	evil, evilHits := attackerServer(t)

	pubDER, err := x509.MarshalPKIXPublicKey(&cur.Private.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	curJWK := fa.JWK(cur, entraTenantA)
	attackerJWK := fa.JWK(attacker, entraTenantA)

	// tok builds a token from the good header and claims after edit, signed
	// with alg under key.
	tok := func(alg string, key any, edit func(h, c map[string]any)) string {
		h := map[string]any{"typ": "JWT", "alg": alg, "kid": cur.ID}
		c := entraClaims(fa, entraTenantA, now)
		if edit != nil {
			edit(h, c)
		}
		return signAs(t, alg, h, c, key)
	}
	good := func(edit func(h, c map[string]any)) string { return tok("RS256", cur.Private, edit) }
	claim := func(name string, v any) func(h, c map[string]any) {
		return func(_, c map[string]any) { c[name] = v }
	}
	drop := func(name string) func(h, c map[string]any) {
		return func(h, c map[string]any) { delete(c, name); delete(h, name) }
	}
	header := func(name string, v any) func(h, c map[string]any) {
		return func(h, _ map[string]any) { h[name] = v }
	}
	both := func(fs ...func(h, c map[string]any)) func(h, c map[string]any) {
		return func(h, c map[string]any) {
			for _, f := range fs {
				f(h, c)
			}
		}
	}
	valid := good(nil)
	parts := strings.Split(valid, ".")
	admin := entraClaims(fa, entraTenantA, now)
	admin["roles"] = []string{"Credentials.Admin", "Credentials.Read"}

	type hostile struct {
		name   string
		auth   string // the Authorization header
		method string // default GET /api/credentials
		want   int
	}
	bearer := func(name, token string) hostile {
		return hostile{name: name, auth: "Bearer " + token, want: http.StatusUnauthorized}
	}
	cases := []hostile{
		// Algorithms.
		bearer("alg none, no signature", tok("none", nil, nil)),
		bearer("alg none with a real signature", func() string {
			h := map[string]any{"typ": "JWT", "alg": "none", "kid": cur.ID}
			return entrafake.Segment(t, h) + "." + parts[1] + "." + parts[2]
		}()),
		bearer("alg None, mixed case", tok("none", nil, header("alg", "None"))),
		bearer("HS256 keyed with the authority's public key (PEM)", tok("HS256", pubPEM, nil)),
		bearer("HS256 keyed with the authority's public key (DER)", tok("HS256", pubDER, nil)),
		bearer("HS256 keyed with the JWK modulus", tok("HS256", []byte(curJWK["n"].(string)), nil)),
		bearer("RS384 signed by the authority's key", tok("RS384", cur.Private, nil)),
		bearer("PS256 signed by the authority's key", tok("PS256", cur.Private, nil)),
		bearer("alg rs256 in lower case", good(header("alg", "rs256"))),

		// Keys.
		bearer("untrusted key, the authority's kid", tok("RS256", attacker.Private, nil)),
		bearer("untrusted key, its own kid", tok("RS256", attacker.Private, header("kid", attacker.ID))),
		bearer("kid of a removed key", tok("RS256", removed.Private, header("kid", removed.ID))),
		bearer("no kid", good(drop("kid"))),
		bearer("empty kid", good(header("kid", ""))),
		bearer("kid not a string", good(header("kid", 42))),
		bearer("jku header pointing elsewhere", tok("RS256", attacker.Private, both(header("kid", attacker.ID), header("jku", evil.URL+"/keys")))),
		bearer("x5u header pointing elsewhere", tok("RS256", attacker.Private, both(header("kid", attacker.ID), header("x5u", evil.URL+"/cert.pem")))),
		bearer("jwk header embedding the attacker's key", tok("RS256", attacker.Private, both(header("kid", attacker.ID), header("jwk", attackerJWK)))),
		bearer("x5c header with the attacker's certificate", tok("RS256", attacker.Private, both(header("kid", attacker.ID), header("x5c", attackerJWK["x5c"])))),
		bearer("crit header", good(header("crit", []string{"exp"}))),
		bearer("b64 false", good(header("b64", false))),

		// Lifetime (5 minutes' skew at most).
		bearer("expired an hour ago", good(claim("exp", now.Add(-time.Hour).Unix()))),
		bearer("expired beyond the 5 minute skew", good(claim("exp", now.Add(-5*time.Minute-30*time.Second).Unix()))),
		bearer("not valid for 10 minutes", good(claim("nbf", now.Add(10*time.Minute).Unix()))),
		bearer("issued 10 minutes in the future", good(claim("iat", now.Add(10*time.Minute).Unix()))),
		bearer("no exp", good(drop("exp"))),
		bearer("exp a string", good(claim("exp", "tomorrow"))),

		// Issuer: exact, v1 or v2, of the token's own tenant.
		bearer("issuer elsewhere", good(claim("iss", "https://evil.example/"+entraTenantA+"/v2.0"))),
		bearer("v2 issuer of the public cloud, not the configured authority", good(claim("iss", "https://login.microsoftonline.com/"+entraTenantA+"/v2.0"))),
		bearer("v1 issuer with /v2.0 appended", good(claim("iss", entrafake.IssuerV1(entraTenantA)+"v2.0"))),
		bearer("v2 issuer without /v2.0", good(claim("iss", fa.URL()+"/"+entraTenantA+"/"))),
		bearer("v1 issuer without its trailing slash", good(claim("iss", strings.TrimSuffix(entrafake.IssuerV1(entraTenantA), "/")))),
		bearer("v2 issuer of the other allowed tenant", good(claim("iss", fa.IssuerV2(entraTenantB)))),
		bearer("v1 issuer of the other allowed tenant", good(claim("iss", entrafake.IssuerV1(entraTenantB)))),
		bearer("no issuer", good(drop("iss"))),

		// Audience.
		bearer("wrong audience", good(claim("aud", "api://another-api"))),
		bearer("Microsoft Graph's audience", good(claim("aud", "https://graph.microsoft.com"))),
		bearer("audience with a trailing slash", good(claim("aud", entraAudience+"/"))),
		bearer("no audience", good(drop("aud"))),

		// Tenant and owner.
		bearer("tenant not allowed", good(both(claim("tid", entraTenantX), claim("iss", fa.IssuerV2(entraTenantX))))),
		bearer("no tid", good(drop("tid"))),
		bearer("no oid", good(drop("oid"))),
		bearer("tid not a GUID", good(claim("tid", "contoso.onmicrosoft.com"))),
		bearer("oid a number", good(claim("oid", 12345))),
		bearer("tid an array of an allowed tenant", good(claim("tid", []string{entraTenantA}))),

		// Claim types.
		bearer("roles a string, not an array", good(claim("roles", "Credentials.Read"))),
		bearer("roles an object", good(claim("roles", map[string]any{"Credentials.Read": true}))),
		bearer("roles holding a number", good(claim("roles", []any{"Credentials.Read", 1}))),
		bearer("scp an array", good(claim("scp", []string{"Credentials.Read"}))),

		// Tampering and encoding.
		bearer("tampered payload (roles raised after signing)", parts[0]+"."+entrafake.Segment(t, admin)+"."+parts[2]),
		bearer("tampered header (typ changed after signing)", entrafake.Segment(t, map[string]any{"typ": "at+jwt", "alg": "RS256", "kid": cur.ID})+"."+parts[1]+"."+parts[2]),
		bearer("signature of another token", good(claim("oid", entraUser2OID))[:len(parts[0])+len(parts[1])+1]+"."+parts[2]),
		bearer("truncated", valid[:len(valid)-12]),
		bearer("signature removed (two dots only)", parts[0]+"."+parts[1]+"."),
		bearer("two dots only", ".."),
		bearer("header and payload only", parts[0]+"."+parts[1]),
		bearer("oversized (64 KiB)", good(claim("pad", strings.Repeat("A", 64<<10)))),
		bearer("non-base64 payload", parts[0]+".!!!*&^%$."+parts[2]),
		bearer("standard base64 alphabet and padding", strings.NewReplacer("-", "+", "_", "/").Replace(valid)+"=="),
		bearer("JWE instead of JWS", entrafake.Segment(t, map[string]any{"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": cur.ID})+".OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZKTyKOMTYUmKoTCVJRgckCL9kiMT03JGeipsEdY3mx_etLbbWSrFr05kLzcSr4qKAq7YN7e9jwQRb23nfa6c9d-StnImGyFDbSv04uVuxIp5Zms1gNxKKK2Da14B8S4rzVRltdYwam_lDp5XnZAYpQdb76FdIKLaVmqgfwX7XWRxv2322i-vDxRfqNzo_tETKzpVLzfiwQyeyPGLBIO56YJ7eObdv0je81860ppamavo35UgoRdbYaBcoh9QcfylQr66oc6vFWXRcZ_ZT2LawVCWTIy3brGPi6UklfCpIMfIjf7iGdXKHzg.48V1_ALb6US04U3b.5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6jiSdiwkIr3ajwQzaBtQD_A.XFBoMYUZodetZdvTiFvSkQ"),
		bearer("empty", ""),
		{name: "Basic scheme", auth: "Basic dXNlcjpwYXNz", want: http.StatusUnauthorized},
		{name: "token without a scheme", auth: valid, want: http.StatusUnauthorized},

		// Valid callers without the route's role: 403.
		{name: "valid token, no roles at all", auth: "Bearer " + good(drop("roles")), want: http.StatusForbidden},
		{name: "valid token, role names in lower case", auth: "Bearer " + good(claim("roles", []string{"credentials.read"})), want: http.StatusForbidden},
		{name: "valid token, another API's app role", auth: "Bearer " + good(claim("roles", []string{"Directory.Read.All"})), want: http.StatusForbidden},
		{name: "valid token, scope of another API", auth: "Bearer " + good(both(drop("roles"), claim("scp", "User.Read Mail.Read"))), want: http.StatusForbidden},
		{name: "valid read-only token writing", auth: "Bearer " + good(claim("roles", []string{"Credentials.Read"})), method: "PUT", want: http.StatusForbidden},
		{name: "valid token listing every owner without Credentials.Admin", auth: "Bearer " + valid, method: "ADMIN", want: http.StatusForbidden},
	}
	if len(cases) < 25 {
		t.Fatalf("only %d hostile cases", len(cases))
	}
	// The problem's detail names the class of failure (and nothing of the
	// token): one case of each class.
	wantDetail := map[string]string{
		"two dots only":                      "the token is malformed",
		"untrusted key, its own kid":         "the token's signing key is unknown",
		"untrusted key, the authority's kid": "the token's signature is not valid",
		"expired an hour ago":                "the token has expired",
		"not valid for 10 minutes":           "the token is not valid yet",
		"issuer elsewhere":                   "the token's issuer is not accepted",
		"wrong audience":                     "the token's audience is not accepted",
		"tenant not allowed":                 "the token's tenant is not allowed",
		"no oid":                             "the token lacks required claims",
		"Basic scheme":                       "a bearer token is required",
		"valid token, no roles at all":       "the caller lacks the role this operation needs",
	}
	names := map[string]bool{}
	for _, c := range cases {
		names[c.name] = true
	}
	for name := range wantDetail {
		if !names[name] {
			t.Fatalf("wantDetail names %q, which is not a case", name)
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			method, path, body := "GET", "/api/credentials", any(nil)
			switch c.method {
			case "PUT":
				method, path, body = "PUT", "/api/credentials/hostile", `{"value":"x"}`
			case "ADMIN":
				path = "/api/admin/credentials"
			}
			r := e.do(method, path, "", body, "Authorization", c.auth)
			if r.status == http.StatusOK || r.status == http.StatusCreated || r.status >= 500 {
				t.Fatalf("status %d: a hostile token got through or broke the server (body %s)", r.status, r.body)
			}
			wantProblem(t, c.name, r, c.want)
			detail, _ := r.json(t)["detail"].(string)
			t.Logf("%d: %s", r.status, detail)
			if want, ok := wantDetail[c.name]; ok && detail != want {
				t.Errorf("detail %q, want %q", detail, want)
			}
			if c.want == http.StatusUnauthorized && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
			}
			if tok, ok := strings.CutPrefix(c.auth, "Bearer "); ok && len(tok) > 8 {
				if c.want == http.StatusUnauthorized && r.header.Get("WWW-Authenticate") != `Bearer error="invalid_token"` {
					t.Errorf("WWW-Authenticate = %q, want Bearer error=\"invalid_token\"", r.header.Get("WWW-Authenticate"))
				}
				for _, seg := range strings.Split(tok, ".") {
					if len(seg) > 8 && strings.Contains(string(r.body), seg) {
						t.Errorf("the answer echoes the token: %s", r.body)
					}
				}
			}
			if strings.Contains(string(r.body), entraUserOID) || strings.Contains(string(r.body), entraUserName) {
				t.Errorf("the answer repeats a claim value: %s", r.body)
			}
		})
	}

	// Control: the same service accepts the untampered token.
	if r := e.do("GET", "/api/credentials", valid, nil); r.status != http.StatusOK {
		t.Fatalf("the valid token: %d %s", r.status, r.body)
	}
	if n := evilHits.Load(); n != 0 {
		t.Errorf("credvault fetched %d times from a URL a token named (jku/x5u)", n)
	}
	if got := fa.JWKSFetches(entraTenantA); got != 1 {
		t.Errorf("%d hostile tokens caused %d JWKS fetches, want 1 (unknown kids refresh at most once per 5 minutes, and the first fetch counts)", len(cases), got)
	}
	if got := fa.JWKSFetches(entraTenantB) + fa.DiscoveryFetches(entraTenantX) + fa.JWKSFetches(entraTenantX); got != 0 {
		t.Errorf("tokens of other tenants caused %d fetches, want 0", got)
	}

	// No token, claim value or key in the logs.
	logs := e.logs.String()
	secrets := []string{entraUserOID, entraUserName, entraTenantA, entraTenantB, entraTenantX, curJWK["n"].(string)[:40], attackerJWK["n"].(string)[:40], string(pubPEM[30:70])}
	for _, c := range cases {
		if tok, ok := strings.CutPrefix(c.auth, "Bearer "); ok {
			for _, seg := range strings.Split(tok, ".") {
				if len(seg) > 16 {
					secrets = append(secrets, seg)
				}
			}
		}
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the logs contain %q…", s[:min(len(s), 12)])
		}
	}
	if strings.Count(logs, `"status":401`) < 40 {
		t.Errorf("the logs hold %d requests answered 401, want one line per request", strings.Count(logs, `"status":401`))
	}
}

// TestEntraValidTokensThroughTheAPI: v1 and v2 tokens, delegated tokens
// with scp only, app-only tokens; the owner is tid/oid.
func TestEntraValidTokensThroughTheAPI(t *testing.T) {
	fa := entrafake.New(t)
	e := startEntra(t, fa, nil)
	now := time.Now()
	v2 := fa.Sign(entraClaims(fa, entraTenantA, now))

	v1 := entraClaims(fa, entraTenantA, now)
	v1["iss"], v1["ver"], v1["aud"], v1["appid"] = entrafake.IssuerV1(entraTenantA), "1.0", entraClientID, entraClientID
	delete(v1, "azp")
	v1tok := fa.Sign(v1)

	scp := entraClaims(fa, entraTenantA, now)
	delete(scp, "roles")
	scp["scp"] = "Credentials.Read Credentials.Write"
	scptok := fa.Sign(scp)

	app := entraClaims(fa, entraTenantA, now) // app-only: no scp, sub = oid, no name
	delete(app, "name")
	app["oid"], app["sub"], app["roles"] = entraAppOID, entraAppOID, []string{"Credentials.Read", "Credentials.Write"}
	apptok := fa.Sign(app)

	other := entraClaims(fa, entraTenantB, now) // the same oid in the other tenant is another owner
	othertok := fa.Sign(other)

	wantStatus(t, "v2 PUT", e.do("PUT", "/api/credentials/db-password", v2, `{"value":"v2 secret"}`), http.StatusCreated)
	got := e.do("GET", "/api/credentials/db-password", v1tok, nil)
	wantStatus(t, "v1 GET of the same owner's secret", got, http.StatusOK)
	if !strings.Contains(string(got.body), "v2 secret") || !strings.Contains(string(got.body), `"createdBy":"`+entraUserName+`"`) {
		t.Fatalf("v1 GET = %s", got.body)
	}
	wantStatus(t, "delegated token with scp only, PUT", e.do("PUT", "/api/credentials/db-password", scptok, `{"value":"scp secret"}`), http.StatusOK)
	wantStatus(t, "app-only PUT", e.do("PUT", "/api/credentials/db-password", apptok, `{"value":"app secret"}`), http.StatusCreated)
	if g := e.do("GET", "/api/credentials/db-password", apptok, nil); !strings.Contains(string(g.body), "app secret") || !strings.Contains(string(g.body), `"createdBy":"`+entraClientID+`"`) {
		t.Fatalf("app-only GET = %d %s", g.status, g.body)
	}
	wantStatus(t, "the same oid in tenant B", e.do("GET", "/api/credentials/db-password", othertok, nil), http.StatusNotFound)
	if g := e.do("GET", "/api/credentials/db-password", v2, nil); !strings.Contains(string(g.body), "scp secret") {
		t.Fatalf("v2 GET after the scp PUT = %s", g.body)
	}
	if d, k := fa.DiscoveryFetches(entraTenantA), fa.JWKSFetches(entraTenantA); d != 1 || k != 1 {
		t.Errorf("tenant A: %d configuration and %d JWKS fetches, want 1 and 1", d, k)
	}
}

// TestEntraKeyRolloverThroughTheAPI: the authority swaps its signing key;
// new tokens are accepted after one refresh, old tokens are refused, and
// unknown kids do not refresh more than once per 5 minutes.
func TestEntraKeyRolloverThroughTheAPI(t *testing.T) {
	fa := entrafake.New(t)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	e := startEntra(t, fa, clock)

	oldTok := fa.Sign(entraClaims(fa, entraTenantA, clock()))
	wantStatus(t, "before rollover", e.do("GET", "/api/credentials", oldTok, nil), http.StatusOK)

	fa.Rotate()
	newTok := fa.Sign(entraClaims(fa, entraTenantA, clock()))
	advance(identity.KeyRefreshInterval)
	wantStatus(t, "new key, after one refresh", e.do("GET", "/api/credentials", newTok, nil), http.StatusOK)
	if got := fa.JWKSFetches(entraTenantA); got != 2 {
		t.Fatalf("after the rollover: %d JWKS fetches, want 2", got)
	}
	wantProblem(t, "old key after the rollover", e.do("GET", "/api/credentials", oldTok, nil), http.StatusUnauthorized)
	stranger := fa.NewKey()
	for i := range 20 {
		h := map[string]any{"alg": "RS256", "kid": "unknown-" + randomName()}
		r := e.do("GET", "/api/credentials", signAs(t, "RS256", h, entraClaims(fa, entraTenantA, clock()), stranger.Private), nil)
		wantProblem(t, "unknown kid", r, http.StatusUnauthorized)
		if i == 9 {
			advance(identity.KeyRefreshInterval - time.Second)
		}
	}
	if got := fa.JWKSFetches(entraTenantA); got != 2 {
		t.Fatalf("21 unknown kids within 5 minutes of the last refresh: %d JWKS fetches, want still 2", got)
	}
	advance(time.Second)
	wantProblem(t, "old key in the next interval", e.do("GET", "/api/credentials", oldTok, nil), http.StatusUnauthorized)
	if got := fa.JWKSFetches(entraTenantA); got != 3 {
		t.Fatalf("an unknown kid in the next interval: %d JWKS fetches, want 3", got)
	}
	wantStatus(t, "new key at the end", e.do("GET", "/api/credentials", newTok, nil), http.StatusOK)
}

// TestEntraAuthorityDownIs503: with the authority unreachable, a token is
// answered 503 with Retry-After, never 401; the service still starts and
// answers health.
func TestEntraAuthorityDownIs503(t *testing.T) {
	fa := entrafake.New(t)
	fa.Down(true)
	e := startEntra(t, fa, nil)
	tok := fa.Sign(entraClaims(fa, entraTenantA, time.Now()))
	r := e.do("GET", "/api/credentials", tok, nil)
	wantProblem(t, "authority down", r, http.StatusServiceUnavailable)
	if r.header.Get("Retry-After") == "" || r.header.Get("WWW-Authenticate") != "" {
		t.Fatalf("authority down: Retry-After %q, WWW-Authenticate %q", r.header.Get("Retry-After"), r.header.Get("WWW-Authenticate"))
	}
	if strings.Contains(e.logs.String(), entraTenantA) {
		t.Errorf("the log of the outage names the tenant")
	}
	wantStatus(t, "health", e.do("GET", "/api/health", "", nil), http.StatusOK)
}

// TestEntraTrustsTheSystemCAStore builds the real handler binary and runs
// it against the fake authority over TLS: without SSL_CERT_FILE its
// certificate is not trusted (503); with SSL_CERT_FILE pointing at it, the
// system CA store path verifies tokens end to end.
func TestEntraTrustsTheSystemCAStore(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the handler binary")
	}
	if runtime.GOOS != "linux" && runtime.GOOS != "freebsd" {
		t.Skip("SSL_CERT_FILE is read by crypto/x509 on Unix systems other than macOS")
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Skip("no go command to build the handler with")
		}
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "handler")
	if out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	fa := entrafake.New(t)
	certFile := filepath.Join(dir, "authority.pem")
	if err := os.WriteFile(certFile, fa.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	for i := 0; i+1 < len(entraSettings(fa)); i += 2 {
		env = append(env, entraSettings(fa)[i]+"="+entraSettings(fa)[i+1])
	}
	tok := fa.Sign(entraClaims(fa, entraTenantA, time.Now()))

	untrusted, _ := runHandler(t, bin, env)
	if got := get(t, untrusted, tok); got != http.StatusServiceUnavailable {
		t.Fatalf("without SSL_CERT_FILE: status %d, want 503 (the fake authority's certificate is not in the system store)", got)
	}

	url, logs := runHandler(t, bin, append(env, "SSL_CERT_FILE="+certFile))
	if got := get(t, url, tok); got != http.StatusOK {
		t.Fatalf("with SSL_CERT_FILE: status %d, want 200", got)
	}
	if got := get(t, url, tok[:len(tok)-4]+"AAAA"); got != http.StatusUnauthorized {
		t.Fatalf("with SSL_CERT_FILE, a forged signature: status %d, want 401", got)
	}
	if s := logs.String(); strings.Contains(s, tok[len(tok)-40:]) || strings.Contains(s, entraUserOID) {
		t.Errorf("the handler's log contains the token or a claim value")
	}
}

// runHandler starts bin on a free port with env and returns its URL and its
// captured log; it is stopped when the test ends.
func runHandler(t *testing.T, bin string, env []string) (string, *syncBuffer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin)
	cmd.Env = append(env, "CREDVAULT_DATA_DIR="+t.TempDir(), "FUNCTIONS_CUSTOMHANDLER_PORT="+strconv.Itoa(port))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	ready := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		once := sync.Once{}
		for sc.Scan() {
			logs.Write(append(sc.Bytes(), '\n'))
			if strings.Contains(sc.Text(), "credvault listening") {
				once.Do(func() { close(ready) })
			}
		}
		io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		<-done
		cmd.Wait()
	})
	select {
	case <-ready:
	case <-done:
		t.Fatalf("the handler exited before listening: %s %s", stderr.String(), logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("the handler did not listen within 60 s: %s", stderr.String())
	}
	return "http://127.0.0.1:" + strconv.Itoa(port), logs
}

// get sends GET /api/credentials with tok and returns the status.
func get(t *testing.T, base, tok string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), "GET", base+"/api/credentials", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	c := &http.Client{Timeout: 60 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// easyAuthHeader is a real-shaped X-MS-CLIENT-PRINCIPAL from the identity
// package's vectors.
func easyAuthHeader(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "internal", "identity", "testdata", "easyauth", file))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(file, ".txt") {
		return strings.TrimSpace(string(b))
	}
	return base64.StdEncoding.EncodeToString(b)
}

func TestEasyAuthThroughTheAPI(t *testing.T) {
	e := startWith(t, azureMode(), "CREDVAULT_AUTH_MODE", "easyauth", "WEBSITE_AUTH_ENABLED", "True",
		"CREDVAULT_ENTRA_TENANTS", entraTenantA)
	user := easyAuthHeader(t, "ok-user-roles.json")
	r := e.do("PUT", "/api/credentials/ea", "", `{"value":"easy"}`, identity.PrincipalHeader, user)
	wantStatus(t, "real-shaped principal with roles, PUT", r, http.StatusCreated)
	r = e.do("GET", "/api/credentials/ea", "", nil, identity.PrincipalHeader, user)
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"createdBy":"Ada Lovelace"`) {
		t.Fatalf("GET = %d %s", r.status, r.body)
	}
	app := easyAuthHeader(t, "ok-app-role-typ.json") // roles as role_typ claims; no Credentials.Read
	wantProblem(t, "app principal without Credentials.Read", e.do("GET", "/api/credentials/ea", "", nil, identity.PrincipalHeader, app), http.StatusForbidden)
	scp := easyAuthHeader(t, "ok-user-scp.json")
	wantStatus(t, "delegated scp principal, same owner", e.do("GET", "/api/credentials/ea", "", nil, identity.PrincipalHeader, scp), http.StatusOK)

	for _, c := range []struct{ name, value string }{
		{"no principal header, a bearer token instead", ""},
		{"malformed base64", easyAuthHeader(t, "malformed-not-base64.txt")},
		{"base64 of text", easyAuthHeader(t, "malformed-base64-of-text.txt")},
		{"JSON claim value a number", easyAuthHeader(t, "malformed-claim-value-a-number.json")},
		{"truncated JSON", easyAuthHeader(t, "malformed-truncated.json")},
		{"another identity provider", easyAuthHeader(t, "issuer-google-with-entra-claims.json")},
		{"no oid", easyAuthHeader(t, "claims-no-oid.json")},
		{"tenant not allowed", easyAuthHeader(t, "tenant-not-allowed.json")},
	} {
		r := e.do("GET", "/api/credentials/ea", "eyJhbGciOiJub25lIn0.e30.", nil, identity.PrincipalHeader, c.value)
		wantProblem(t, c.name, r, http.StatusUnauthorized)
		if strings.Contains(string(r.body), entraTenantA) || (len(c.value) > 12 && strings.Contains(string(r.body), c.value[:12])) {
			t.Errorf("%s: the answer echoes the header: %s", c.name, r.body)
		}
	}
	if logs := e.logs.String(); strings.Contains(logs, "Ada Lovelace") || strings.Contains(logs, entraUserOID) || strings.Contains(logs, user[:40]) {
		t.Errorf("the logs contain the principal or a claim value")
	}
}

// TestAuthModesRefusedAtStart: easyauth without the platform's word that
// App Service Authentication is on does not start (so a forged principal
// header is never read), nor does dev in Azure, nor entra without its
// settings; each stops with one line.
func TestAuthModesRefusedAtStart(t *testing.T) {
	azure := map[string]string{"WEBSITE_INSTANCE_ID": "i", "CREDVAULT_KEYVAULT_URL": "https://v.vault.azure.net/", "CREDVAULT_KEY_NAME": "cmk",
		"CREDVAULT_BLOB_ACCOUNT_URL": "https://a.blob.core.windows.net/", "CREDVAULT_COSMOS_ENDPOINT": "https://c.documents.azure.com/"}
	for _, c := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"easyauth, platform flag unset", map[string]string{"CREDVAULT_AUTH_MODE": "easyauth", "CREDVAULT_ENTRA_TENANTS": entraTenantA}, "WEBSITE_AUTH_ENABLED"},
		{"easyauth, platform flag False", map[string]string{"CREDVAULT_AUTH_MODE": "easyauth", "WEBSITE_AUTH_ENABLED": "False", "CREDVAULT_ENTRA_TENANTS": entraTenantA}, "WEBSITE_AUTH_ENABLED"},
		{"dev in Azure", merge(azure, map[string]string{"CREDVAULT_AUTH_MODE": "dev"}), "dev tokens are refused"},
		{"entra (the Azure default) without tenants", merge(azure, map[string]string{"CREDVAULT_ENTRA_AUDIENCES": entraAudience}), "CREDVAULT_ENTRA_TENANTS"},
		{"entra without audiences", map[string]string{"CREDVAULT_AUTH_MODE": "entra", "CREDVAULT_ENTRA_TENANTS": entraTenantA}, "CREDVAULT_ENTRA_AUDIENCES"},
		{"entra with an http authority", map[string]string{"CREDVAULT_AUTH_MODE": "entra", "CREDVAULT_ENTRA_TENANTS": entraTenantA, "CREDVAULT_ENTRA_AUDIENCES": entraAudience, "CREDVAULT_ENTRA_AUTHORITY": "http://login.microsoftonline.com"}, "CREDVAULT_ENTRA_AUTHORITY"},
	} {
		c.env["CREDVAULT_DATA_DIR"] = t.TempDir()
		err := run(context.Background(), nil, func(k string) string { return c.env[k] }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: start error = %v, want one line naming %s", c.name, err, c.want)
		}
	}
	// The refusal comes before anything is written.
	if _, err := config.Load(func(k string) string {
		return map[string]string{"CREDVAULT_AUTH_MODE": "easyauth", "CREDVAULT_ENTRA_TENANTS": entraTenantA}[k]
	}); err == nil {
		t.Fatal("config accepted easyauth without WEBSITE_AUTH_ENABLED")
	}
}

func merge(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}

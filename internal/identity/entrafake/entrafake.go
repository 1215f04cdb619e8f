// Package entrafake is a fake Microsoft Entra authority for tests: per
// tenant, the v2.0 OpenID configuration and the JWKS it names, served over
// TLS on loopback by httptest, with signing keys that roll over and a count
// of every fetch. Its keys are test keys: tokens it signs are trusted only by
// a verifier pointed at it.
//
// It does not import the identity package, so that package's own tests can
// use it.
package entrafake

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Key is a signing key of the authority.
type Key struct {
	ID      string
	Private *rsa.PrivateKey
	cert    []byte // self-signed certificate, for x5c and x5t as Entra publishes them
}

// Authority is a running fake authority.
type Authority struct {
	t   testing.TB
	srv *httptest.Server

	mu        sync.Mutex
	published []*Key
	current   *Key
	fetches   map[string]int // "discovery/<tid>" and "jwks/<tid>"
	override  http.HandlerFunc
}

// New starts an authority with one published signing key. It stops when
// the test ends.
func New(t testing.TB) *Authority {
	t.Helper()
	a := &Authority{t: t, fetches: map[string]int{}}
	k := a.NewKey()
	a.published, a.current = []*Key{k}, k
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(a.serve))
	// Clients that do not trust the certificate are part of the tests.
	a.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	a.srv.StartTLS()
	t.Cleanup(a.srv.Close)
	return a
}

// URL is the authority, "https://127.0.0.1:<port>", without a trailing slash.
func (a *Authority) URL() string { return a.srv.URL }

// Client is an HTTP client that trusts the authority's certificate.
func (a *Authority) Client() *http.Client { return a.srv.Client() }

// CertPEM is the authority's TLS certificate, PEM-encoded: a file to point
// SSL_CERT_FILE at.
func (a *Authority) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.srv.Certificate().Raw})
}

// IssuerV2 is the v2.0 issuer of tenant tid at this authority.
func (a *Authority) IssuerV2(tid string) string { return a.URL() + "/" + tid + "/v2.0" }

// IssuerV1 is the v1.0 issuer of tenant tid (Entra's v1 issuer does not
// depend on the authority's host in the public cloud).
func IssuerV1(tid string) string { return "https://sts.windows.net/" + tid + "/" }

// NewKey makes a signing key without publishing it: an untrusted key, or
// one to publish later.
func (a *Authority) NewKey() *Key {
	a.t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		a.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "accounts.accesscontrol.windows.net"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		a.t.Fatal(err)
	}
	// Entra's kids look like base64url SHA-1 thumbprints of the certificate.
	sum := sha1.Sum(der)
	return &Key{ID: base64.RawURLEncoding.EncodeToString(sum[:]), Private: priv, cert: der}
}

// Current is the key the authority signs with.
func (a *Authority) Current() *Key {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.current
}

// Rotate swaps the signing key: a new key is published and signs from now
// on; the old one is removed from the JWKS. It returns the old key.
func (a *Authority) Rotate() (old *Key) {
	a.t.Helper()
	k := a.NewKey()
	a.mu.Lock()
	defer a.mu.Unlock()
	old = a.current
	a.published, a.current = []*Key{k}, k
	return old
}

// Override makes h answer every request (fetches are still counted); nil
// restores the normal answers. Tests use it for outages and garbage.
func (a *Authority) Override(h http.HandlerFunc) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.override = h
}

// Down makes every answer a 503 (true) or restores them (false).
func (a *Authority) Down(down bool) {
	if !down {
		a.Override(nil)
		return
	}
	a.Override(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
	})
}

// DiscoveryFetches counts the requests for tenant tid's OpenID configuration.
func (a *Authority) DiscoveryFetches(tid string) int { return a.count("discovery/" + tid) }

// JWKSFetches counts the requests for tenant tid's JWKS.
func (a *Authority) JWKSFetches(tid string) int { return a.count("jwks/" + tid) }

// Fetches counts every request the authority received.
func (a *Authority) Fetches() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, c := range a.fetches {
		n += c
	}
	return n
}

func (a *Authority) count(k string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.fetches[k]
}

// Sign signs claims with the current key: RS256, typ JWT and the key's kid,
// like an Entra access token.
func (a *Authority) Sign(claims map[string]any) string {
	a.t.Helper()
	k := a.Current()
	return SignRaw(a.t, map[string]any{"typ": "JWT", "alg": "RS256", "kid": k.ID}, claims, k.Private)
}

// SignRaw signs header.payload with RS256 under priv whatever the header
// says, so a test controls every byte.
func SignRaw(t testing.TB, header, claims map[string]any, priv *rsa.PrivateKey) string {
	t.Helper()
	input := Segment(t, header) + "." + Segment(t, claims)
	d := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, priv, crypto.SHA256, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// Segment is v as JSON, base64url without padding.
func Segment(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// JWK is k's public half as Entra publishes it: kty, use, kid, x5t, n, e,
// x5c and issuer; no alg.
func (a *Authority) JWK(k *Key, tid string) map[string]any {
	b64 := base64.RawURLEncoding.EncodeToString
	sum := sha1.Sum(k.cert)
	return map[string]any{
		"kty":    "RSA",
		"use":    "sig",
		"kid":    k.ID,
		"x5t":    b64(sum[:]),
		"n":      b64(k.Private.N.Bytes()),
		"e":      b64(big.NewInt(int64(k.Private.E)).Bytes()),
		"x5c":    []string{base64.StdEncoding.EncodeToString(k.cert)},
		"issuer": a.IssuerV2(tid),
	}
}

// serve answers /{tid}/v2.0/.well-known/openid-configuration and
// /{tid}/discovery/v2.0/keys.
func (a *Authority) serve(w http.ResponseWriter, r *http.Request) {
	tid, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	var kind string
	switch rest {
	case "v2.0/.well-known/openid-configuration":
		kind = "discovery"
	case "discovery/v2.0/keys":
		kind = "jwks"
	}
	a.mu.Lock()
	if kind != "" {
		a.fetches[kind+"/"+tid]++
	} else {
		a.fetches["other"]++
	}
	override, published := a.override, a.published
	a.mu.Unlock()

	if override != nil {
		override(w, r)
		return
	}
	if r.Method != http.MethodGet || tid == "" {
		http.NotFound(w, r)
		return
	}
	var body any
	switch kind {
	case "discovery":
		body = map[string]any{
			"issuer":                                a.IssuerV2(tid),
			"authorization_endpoint":                a.URL() + "/" + tid + "/oauth2/v2.0/authorize",
			"token_endpoint":                        a.URL() + "/" + tid + "/oauth2/v2.0/token",
			"jwks_uri":                              a.URL() + "/" + tid + "/discovery/v2.0/keys",
			"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
			"subject_types_supported":               []string{"pairwise"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
			"tenant_region_scope":                   "EU",
			"cloud_instance_name":                   "microsoftonline.com",
		}
	case "jwks":
		keys := make([]any, 0, len(published))
		for _, k := range published {
			keys = append(keys, a.JWK(k, tid))
		}
		body = map[string]any{"keys": keys}
	default:
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(body)
}

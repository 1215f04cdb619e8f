// Package kvfake is an in-test fake of the Azure Key Vault keys REST
// endpoints that credvault uses (get key, wrap key, unwrap key), meant to be
// driven only through the real azkeys client: it answers on a loopback TLS
// server, asks for a bearer token with Key Vault's challenge, and can be told
// to be slow, to throttle or to fail.
//
// What it does, as Key Vault does:
//   - A request without a valid bearer token gets 401 with the challenge
//     `WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
//     resource="https://vault.azure.net"`; the client's challenge policy then
//     asks the credential for https://vault.azure.net/.default and retries.
//   - GET /keys/{name}[/{version}] returns the key bundle: kid, kty, key_ops,
//     the public part only (n, e for RSA; nothing for oct-HSM), attributes.
//   - POST /keys/{name}/{version}/wrapkey and /unwrapkey take {alg, value}
//     and answer {kid, value}: RSA-OAEP-256 for RSA keys, A256KW for oct-HSM.
//   - Errors have Key Vault's body, {"error":{"code":…,"message":…}}: a
//     disabled version answers 403 Forbidden (inner code KeyDisabled) to wrap
//     and unwrap (get still answers, with enabled false); a missing key or
//     version 404 KeyNotFound; a wrong algorithm or a value that does not
//     decrypt 400 BadParameter; any other route 404.
//
// Injected faults (Throttle, FailNext, Answer) apply, in order, to the next
// authenticated requests for a known operation; SetLatency delays every
// request.
package kvfake

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
)

// Scope is the token scope Key Vault's challenge leads the client to ask for.
const Scope = "https://vault.azure.net/.default"

// Operation names, for Calls.
const (
	OpGetKey    = "getKey"
	OpWrapKey   = "wrapKey"
	OpUnwrapKey = "unwrapKey"
	OpChallenge = "challenge" // 401 answers with a challenge
)

// KeyType is the kind of key CreateKey makes.
type KeyType string

const (
	RSA2048 KeyType = "RSA-2048" // kty RSA, wraps with RSA-OAEP-256
	RSA3072 KeyType = "RSA-3072"
	RSAHSM  KeyType = "RSA-HSM" // an HSM-protected RSA 3072 key (Premium vault or Managed HSM): kty RSA-HSM, RSA-OAEP-256
	OctHSM  KeyType = "oct-HSM" // a Managed HSM AES-256 key, wraps with A256KW
)

// Options configure New.
type Options struct {
	Tenant string // tenant named in the challenge; default a fixed GUID
}

// Vault is the fake Key Vault. Its methods are safe for concurrent use.
type Vault struct {
	t      testing.TB
	srv    *httptest.Server
	tenant string
	cred   *credential

	mu           sync.Mutex
	keys         map[string][]*version // by name; the last version is current
	latency      time.Duration
	faults       []fault
	rejectTokens bool
	calls        map[string]int
}

type version struct {
	id      string
	kty     KeyType
	rsa     *rsa.PrivateKey
	aes     []byte
	enabled bool
	created time.Time
}

type fault struct {
	status     int
	code, msg  string
	retryAfter time.Duration
}

// New starts a fake Key Vault on loopback, stopped when the test ends.
func New(t testing.TB, opt Options) *Vault {
	t.Helper()
	if opt.Tenant == "" {
		opt.Tenant = "72f988bf-0000-4000-8000-00000000c0de"
	}
	tok := make([]byte, 16)
	rand.Read(tok)
	v := &Vault{
		t:      t,
		tenant: opt.Tenant,
		cred:   &credential{token: "kvfake." + hex.EncodeToString(tok), tenant: opt.Tenant},
		keys:   map[string][]*version{},
		calls:  map[string]int{},
	}
	v.srv = httptest.NewTLSServer(http.HandlerFunc(v.serve))
	t.Cleanup(v.srv.Close)
	return v
}

// URL is the vault URL to give azkeys.NewClient: https://127.0.0.1:port.
func (v *Vault) URL() string { return v.srv.URL }

// ClientOptions are azkeys client options that reach the fake: a transport
// trusting its certificate, and no check that the challenge's resource
// (vault.azure.net) is a parent domain of 127.0.0.1. Retry settings are left
// to the caller.
func (v *Vault) ClientOptions() *azkeys.ClientOptions {
	return &azkeys.ClientOptions{
		ClientOptions:                        azcore.ClientOptions{Transport: v.srv.Client()},
		DisableChallengeResourceVerification: true,
	}
}

// Credential returns a token credential whose token the fake accepts. It
// refuses any scope but Scope and any tenant but the challenge's.
func (v *Vault) Credential() azcore.TokenCredential { return v.cred }

// KeyID returns the key id of a version of a key: URL/keys/name/version.
func (v *Vault) KeyID(name, version string) string {
	return v.srv.URL + "/keys/" + name + "/" + version
}

// CreateKey creates a key with one version (RSA2048 unless told) and returns
// its key id. Creating an existing name adds a version, as Key Vault does.
func (v *Vault) CreateKey(name string, kty ...KeyType) string {
	v.t.Helper()
	k := RSA2048
	if len(kty) > 0 {
		k = kty[0]
	}
	return v.addVersion(name, k)
}

// Rotate adds a new version of the key, of its current type, and makes it
// current; it returns the new key id.
func (v *Vault) Rotate(name string) string {
	v.t.Helper()
	v.mu.Lock()
	vs := v.keys[name]
	v.mu.Unlock()
	if len(vs) == 0 {
		v.t.Fatalf("kvfake: Rotate(%q): no such key", name)
	}
	return v.addVersion(name, vs[len(vs)-1].kty)
}

func (v *Vault) addVersion(name string, kty KeyType) string {
	ver := &version{kty: kty, enabled: true, created: time.Now()}
	var err error
	switch kty {
	case RSA2048:
		ver.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	case RSA3072, RSAHSM:
		ver.rsa, err = rsa.GenerateKey(rand.Reader, 3072)
	case OctHSM:
		ver.aes = make([]byte, 32)
		rand.Read(ver.aes)
	default:
		err = fmt.Errorf("unknown key type %q", kty)
	}
	if err != nil {
		v.t.Fatalf("kvfake: create %s key %q: %v", kty, name, err)
	}
	id := make([]byte, 16)
	rand.Read(id)
	ver.id = hex.EncodeToString(id)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.keys[name] = append(v.keys[name], ver)
	return v.KeyID(name, ver.id)
}

// SetEnabled enables or disables the version a key id names.
func (v *Vault) SetEnabled(kid string, enabled bool) error {
	name, id, ok := strings.Cut(strings.TrimPrefix(kid, v.srv.URL+"/keys/"), "/")
	v.mu.Lock()
	defer v.mu.Unlock()
	if ok {
		for _, ver := range v.keys[name] {
			if ver.id == id {
				ver.enabled = enabled
				return nil
			}
		}
	}
	return fmt.Errorf("kvfake: no key version %q", kid)
}

// Delete deletes a key and all its versions.
func (v *Vault) Delete(name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.keys, name)
}

// SetLatency delays every answer by d (or until the client gives up).
func (v *Vault) SetLatency(d time.Duration) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.latency = d
}

// Throttle answers the next n operations 429 with a Retry-After of
// retryAfter: in whole seconds as Key Vault sends it, and, when retryAfter is
// not a whole number of seconds, also as retry-after-ms (which azcore reads
// first) so tests need not wait seconds.
func (v *Vault) Throttle(n int, retryAfter time.Duration) {
	v.push(n, fault{status: http.StatusTooManyRequests, code: "Throttled",
		msg: "Request was not processed because too many requests were received.", retryAfter: retryAfter})
}

// FailNext answers the next n operations with status (500, 503, …).
func (v *Vault) FailNext(n int, status int) {
	v.push(n, fault{status: status, code: strings.ReplaceAll(http.StatusText(status), " ", ""), msg: "kvfake: injected failure"})
}

// Answer answers the next n operations with status and an error body of
// this code and message, whatever Key Vault would have said.
func (v *Vault) Answer(n int, status int, code, message string) {
	v.push(n, fault{status: status, code: code, msg: message})
}

func (v *Vault) push(n int, f fault) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for range n {
		v.faults = append(v.faults, f)
	}
}

// RejectTokens makes the fake answer every bearer token with 401 and a new
// challenge, as Key Vault does when the identity lost its access.
func (v *Vault) RejectTokens(reject bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rejectTokens = reject
}

// Calls returns how many requests the fake received for op (OpGetKey,
// OpWrapKey, OpUnwrapKey: authenticated requests, faulted ones included;
// OpChallenge: 401 answers), or in all when op is "".
func (v *Vault) Calls(op string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.calls[op]
}

// ResetCalls sets every counter to zero.
func (v *Vault) ResetCalls() {
	v.mu.Lock()
	defer v.mu.Unlock()
	clear(v.calls)
}

func (v *Vault) serve(w http.ResponseWriter, r *http.Request) {
	v.count("")
	// Read the body first: only then does net/http watch the connection and
	// cancel r.Context() when a client gives up during the latency.
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return
	}
	if !v.authorized(r) {
		v.count(OpChallenge)
		if v.delay(r) {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(
				`Bearer authorization="https://login.microsoftonline.com/%s", resource="https://vault.azure.net"`, v.tenant))
			writeError(w, http.StatusUnauthorized, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.", "")
		}
		return
	}
	if r.URL.Query().Get("api-version") == "" {
		writeError(w, http.StatusBadRequest, "BadParameter", "The request URI must contain an api-version.", "")
		return
	}

	// /keys/{name}[/{version}[/{action}]]
	seg := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	var op, name, ver string
	switch {
	case len(seg) >= 2 && len(seg) <= 3 && seg[0] == "keys" && r.Method == http.MethodGet:
		op, name = OpGetKey, seg[1]
		if len(seg) == 3 {
			ver = seg[2]
		}
	case len(seg) == 4 && seg[0] == "keys" && r.Method == http.MethodPost && strings.EqualFold(seg[3], "wrapkey"):
		op, name, ver = OpWrapKey, seg[1], seg[2]
	case len(seg) == 4 && seg[0] == "keys" && r.Method == http.MethodPost && strings.EqualFold(seg[3], "unwrapkey"):
		op, name, ver = OpUnwrapKey, seg[1], seg[2]
	default:
		writeError(w, http.StatusNotFound, "NotFound", "kvfake: no such route: "+r.Method+" "+r.URL.Path, "")
		return
	}
	v.count(op)
	if !v.delay(r) {
		return // the client gave up
	}

	v.mu.Lock()
	var f *fault
	if len(v.faults) > 0 {
		next := v.faults[0]
		f, v.faults = &next, v.faults[1:]
	}
	var k *version
	var kid string
	if vs := v.keys[name]; len(vs) > 0 {
		k = vs[len(vs)-1]
		if ver != "" {
			k = nil
			for _, x := range vs {
				if x.id == ver {
					k = x
				}
			}
		}
	}
	var enabled bool
	if k != nil {
		kid, enabled = v.KeyID(name, k.id), k.enabled
	}
	v.mu.Unlock()

	if f != nil {
		if f.retryAfter > 0 {
			secs := (f.retryAfter + time.Second - 1) / time.Second
			w.Header().Set("Retry-After", strconv.Itoa(int(secs)))
			if f.retryAfter%time.Second != 0 {
				w.Header().Set("retry-after-ms", strconv.FormatInt(f.retryAfter.Milliseconds(), 10))
			}
		}
		writeError(w, f.status, f.code, f.msg, "")
		return
	}
	if k == nil {
		writeError(w, http.StatusNotFound, "KeyNotFound", fmt.Sprintf(
			"A key with (name/id) %s was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command.", strings.TrimSuffix(name+"/"+ver, "/")), "")
		return
	}
	if op == OpGetKey {
		writeJSON(w, http.StatusOK, bundle(kid, k, enabled))
		return
	}
	if !enabled {
		writeError(w, http.StatusForbidden, "Forbidden", "Operation "+op+" is not allowed on a disabled key.", "KeyDisabled")
		return
	}

	var req struct {
		Alg   string `json:"alg"`
		Value string `json:"value"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "BadParameter", "The request body is not valid JSON.", "")
		return
	}
	value, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(req.Value, "="))
	if err != nil || len(value) == 0 {
		writeError(w, http.StatusBadRequest, "BadParameter", "Property 'value' is required and must be base64url.", "")
		return
	}
	out, err := crypt(k, op, req.Alg, value)
	if err != nil {
		writeError(w, http.StatusBadRequest, "BadParameter", err.Error(), "")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"kid": kid, "value": base64.RawURLEncoding.EncodeToString(out)})
}

// delay waits the injected latency; false when the client gave up first.
func (v *Vault) delay(r *http.Request) bool {
	v.mu.Lock()
	d := v.latency
	v.mu.Unlock()
	if d <= 0 {
		return true
	}
	select {
	case <-time.After(d):
		return true
	case <-r.Context().Done():
		return false
	}
}

func (v *Vault) count(op string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls[op]++
}

func (v *Vault) authorized(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	v.mu.Lock()
	defer v.mu.Unlock()
	return ok && tok == v.cred.token && !v.rejectTokens
}

// crypt runs a wrap or unwrap the way the key type allows.
func crypt(k *version, op, alg string, value []byte) ([]byte, error) {
	switch {
	case k.rsa != nil && alg == string(azkeys.EncryptionAlgorithmRSAOAEP256):
		if op == OpWrapKey {
			return rsa.EncryptOAEP(sha256.New(), rand.Reader, &k.rsa.PublicKey, value, nil)
		}
		out, err := rsa.DecryptOAEP(sha256.New(), nil, k.rsa, value, nil)
		if err != nil {
			return nil, errors.New("Unable to decrypt specified value with this key.")
		}
		return out, nil
	case k.aes != nil && alg == string(azkeys.EncryptionAlgorithmA256KW):
		if op == OpWrapKey {
			return aesKeyWrap(k.aes, value)
		}
		out, err := aesKeyUnwrap(k.aes, value)
		if err != nil {
			return nil, errors.New("Unable to unwrap specified value with this key.")
		}
		return out, nil
	}
	return nil, fmt.Errorf("Algorithm %q is not supported for key type %s.", alg, kty(k))
}

func kty(k *version) string {
	switch {
	case k.kty == RSAHSM:
		return string(azkeys.KeyTypeRSAHSM)
	case k.rsa != nil:
		return string(azkeys.KeyTypeRSA)
	}
	return string(azkeys.KeyTypeOctHSM)
}

func bundle(kid string, k *version, enabled bool) any {
	key := map[string]any{
		"kid":     kid,
		"kty":     kty(k),
		"key_ops": []string{"wrapKey", "unwrapKey", "encrypt", "decrypt"},
	}
	if k.rsa != nil {
		key["n"] = base64.RawURLEncoding.EncodeToString(k.rsa.N.Bytes())
		key["e"] = base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.rsa.E)).Bytes())
	}
	return map[string]any{
		"key": key,
		"attributes": map[string]any{
			"enabled":         enabled,
			"created":         k.created.Unix(),
			"updated":         k.created.Unix(),
			"recoveryLevel":   "Recoverable",
			"recoverableDays": 90,
		},
	}
}

func writeError(w http.ResponseWriter, status int, code, message, inner string) {
	e := map[string]any{"code": code, "message": message}
	if inner != "" {
		e["innererror"] = map[string]string{"code": inner}
	}
	writeJSON(w, status, map[string]any{"error": e})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

// credential is a static token credential: the token the fake accepts, for
// Key Vault's scope and the challenge's tenant only.
type credential struct {
	token, tenant string
}

func (c *credential) GetToken(_ context.Context, opt policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if len(opt.Scopes) != 1 || opt.Scopes[0] != Scope {
		return azcore.AccessToken{}, fmt.Errorf("kvfake credential: scopes %q, want [%s]", opt.Scopes, Scope)
	}
	if opt.TenantID != c.tenant {
		return azcore.AccessToken{}, fmt.Errorf("kvfake credential: tenant %q, want the challenge's %q", opt.TenantID, c.tenant)
	}
	return azcore.AccessToken{Token: c.token, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

package cmk

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/credvault/credvault/internal/cmk/cmktest"
	"github.com/credvault/credvault/internal/cmk/kvfake"
	"github.com/credvault/credvault/internal/keyring"
)

const (
	kvTestTenant  = "00000000-1111-4222-8333-444444444444"
	kvTestKey     = "cmk"
	kvTestRefresh = time.Hour
)

// testClock is an injectable Now that tests move forward.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// kvEnv is a KeyVault over a fake Key Vault holding one key, kvTestKey.
type kvEnv struct {
	fake  *kvfake.Vault
	kv    *KeyVault
	clock *testClock
}

// fastRetry keeps azcore's retry behaviour but not its waits.
func fastRetry() policy.RetryOptions {
	return policy.RetryOptions{MaxRetries: 2, RetryDelay: time.Millisecond, TryTimeout: 5 * time.Second}
}

func newKVEnv(t testing.TB, kty kvfake.KeyType, retry policy.RetryOptions) *kvEnv {
	t.Helper()
	fake := kvfake.New(t, kvfake.Options{Tenant: kvTestTenant})
	fake.CreateKey(kvTestKey, kty)
	e := &kvEnv{fake: fake, clock: &testClock{now: time.Now()}}
	co := fake.ClientOptions()
	co.Retry = retry
	kv, err := NewKeyVault(fake.URL(), kvTestKey, fake.Credential(), KeyVaultOptions{Client: co, RefreshEvery: kvTestRefresh, Now: e.clock.Now})
	if err != nil {
		t.Fatalf("NewKeyVault: %v", err)
	}
	e.kv = kv
	return e
}

func (e *kvEnv) harness() cmktest.Harness {
	return cmktest.Harness{
		W: e.kv,
		Rotate: func() (string, error) {
			kid := e.fake.Rotate(kvTestKey)
			e.clock.Advance(kvTestRefresh) // KeyVault sees it at its next re-read
			return kid, nil
		},
		SetEnabled: e.fake.SetEnabled,
	}
}

func kvWrap(t *testing.T, kv *KeyVault, key, aad []byte) keyring.Wrapped {
	t.Helper()
	w, err := kv.Wrap(context.Background(), key, aad)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	return w
}

func kvUnwrap(t *testing.T, kv *KeyVault, w keyring.Wrapped, aad, want []byte) {
	t.Helper()
	got, err := kv.Unwrap(context.Background(), w, aad)
	if err != nil {
		t.Fatalf("Unwrap under %s: %v", w.KeyID, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Unwrap under %s = %x, want %x", w.KeyID, got, want)
	}
}

// TestKeyVaultContract runs the CMK contract over an RSA key (Key Vault), an
// RSA-HSM key (HSM-protected, Premium vault or Managed HSM) and an oct-HSM
// key (Managed HSM, A256KW): same assertions as Local.
func TestKeyVaultContract(t *testing.T) {
	for _, kty := range []kvfake.KeyType{kvfake.RSA2048, kvfake.RSAHSM, kvfake.OctHSM} {
		t.Run(string(kty), func(t *testing.T) {
			cmktest.TestWrapper(t, func(t *testing.T) cmktest.Harness {
				return newKVEnv(t, kty, fastRetry()).harness()
			})
		})
	}
}

func TestKeyVaultWrapNamesVersionAndAlgorithm(t *testing.T) {
	for _, tc := range []struct {
		kty     kvfake.KeyType
		wantLen int
	}{
		{kvfake.RSA2048, 256},
		{kvfake.RSA3072, 384},
		{kvfake.RSAHSM, 384},
		{kvfake.OctHSM, aesKWLen},
	} {
		t.Run(string(tc.kty), func(t *testing.T) {
			e := newKVEnv(t, tc.kty, fastRetry())
			key, aad := newKey(t), []byte("aad")
			w := kvWrap(t, e.kv, key, aad)
			kid, err := e.kv.Current(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if w.KeyID != kid || !strings.HasPrefix(kid, e.fake.URL()+"/keys/"+kvTestKey+"/") || len(kid) <= len(e.fake.URL()+"/keys/"+kvTestKey+"/") {
				t.Fatalf("Wrap named %q (current %q), want the versioned kid %s/keys/%s/<version>", w.KeyID, kid, e.fake.URL(), kvTestKey)
			}
			if got := len(w.Bytes); got != tc.wantLen {
				t.Fatalf("wrapped key is %d bytes, want %d", got, tc.wantLen)
			}
			kvUnwrap(t, e.kv, w, aad, key)
		})
	}
}

func TestKeyVaultNoCallAtConstruction(t *testing.T) {
	fake := kvfake.New(t, kvfake.Options{})
	fake.CreateKey(kvTestKey)
	if _, err := NewKeyVault(fake.URL(), kvTestKey, fake.Credential(), KeyVaultOptions{Client: fake.ClientOptions()}); err != nil {
		t.Fatalf("NewKeyVault: %v", err)
	}
	if n := fake.Calls(""); n != 0 {
		t.Fatalf("NewKeyVault sent %d requests, want none", n)
	}
	// Nothing listens there: construction does not notice.
	if _, err := NewKeyVault("https://127.0.0.1:1", kvTestKey, fake.Credential(), KeyVaultOptions{}); err != nil {
		t.Fatalf("NewKeyVault of an unreachable vault: %v, want no error until first use", err)
	}

	for _, tc := range []struct {
		name, url, key string
		cred           azcore.TokenCredential
	}{
		{"http", "http://myvault.vault.azure.net", kvTestKey, fake.Credential()},
		{"no host", "https://", kvTestKey, fake.Credential()},
		{"a path", "https://myvault.vault.azure.net/keys", kvTestKey, fake.Credential()},
		{"a query", "https://myvault.vault.azure.net/?x=1", kvTestKey, fake.Credential()},
		{"empty key name", "https://myvault.vault.azure.net", "", fake.Credential()},
		{"key name with a slash", "https://myvault.vault.azure.net", "cmk/v1", fake.Credential()},
		{"no credential", "https://myvault.vault.azure.net", kvTestKey, nil},
	} {
		if _, err := NewKeyVault(tc.url, tc.key, tc.cred, KeyVaultOptions{}); err == nil {
			t.Errorf("NewKeyVault with %s (%q, %q): no error", tc.name, tc.url, tc.key)
		}
	}
	if _, err := NewKeyVault("https://myvault.vault.azure.net/", kvTestKey, fake.Credential(), KeyVaultOptions{}); err != nil {
		t.Errorf("NewKeyVault with a trailing slash: %v", err)
	}
}

func TestKeyVaultClientDefaults(t *testing.T) {
	got := keyVaultClientOptions(nil)
	if got.Retry.MaxRetries != 4 || got.Retry.TryTimeout != 10*time.Second {
		t.Fatalf("default retry: MaxRetries %d, TryTimeout %v; want 4, 10s", got.Retry.MaxRetries, got.Retry.TryTimeout)
	}
	for _, s := range []int{408, 429, 500, 502, 503, 504} {
		if !slices.Contains(got.Retry.StatusCodes, s) {
			t.Errorf("default retry codes %v lack %d", got.Retry.StatusCodes, s)
		}
	}
	for _, s := range []int{400, 401, 403, 404, 409} {
		if slices.Contains(got.Retry.StatusCodes, s) {
			t.Errorf("default retry codes %v retry %d", got.Retry.StatusCodes, s)
		}
	}
	in := &azkeys.ClientOptions{DisableChallengeResourceVerification: true}
	in.Retry.MaxRetries = -1
	in.Transport = http.DefaultClient
	got = keyVaultClientOptions(in)
	if got.Retry.MaxRetries != -1 || got.Transport != http.DefaultClient || !got.DisableChallengeResourceVerification || got.Retry.TryTimeout != 10*time.Second {
		t.Fatalf("given options: %+v; want the caller's settings kept and the zero ones filled", got)
	}
	if in.Retry.TryTimeout != 0 || in.Retry.StatusCodes != nil {
		t.Fatal("keyVaultClientOptions changed the caller's options")
	}
}

// errUnclassified stands for an error that is none of the keyring's classes.
var errUnclassified = errors.New("no class")

var classes = []error{keyring.ErrRevoked, keyring.ErrUnavailable, keyring.ErrCorrupt}

// TestKeyVaultErrorMapping drives Key Vault answers through the real azkeys
// client and checks the class each one maps to.
func TestKeyVaultErrorMapping(t *testing.T) {
	type env = kvEnv
	tests := []struct {
		name  string
		op    string // "wrap" or "unwrap"
		retry func(*policy.RetryOptions)
		setup func(t *testing.T, e *env)
		ctx   func() (context.Context, context.CancelFunc)
		want  error // nil: success
		calls int   // requests for the operation, 0: not checked
	}{
		{name: "403 disabled", op: "unwrap", want: keyring.ErrRevoked, calls: 1,
			setup: func(t *testing.T, e *env) {
				e.fake.Answer(1, 403, "Forbidden", "Operation unwrapKey is not allowed on a disabled key.")
			}},
		{name: "403 forbidden by RBAC", op: "unwrap", want: keyring.ErrRevoked, calls: 1,
			setup: func(t *testing.T, e *env) {
				e.fake.Answer(1, 403, "Forbidden", "Caller is not authorized to perform action on resource. Action: 'Microsoft.KeyVault/vaults/keys/unwrap/action'")
			}},
		{name: "403 on wrap", op: "wrap", want: keyring.ErrRevoked,
			setup: func(t *testing.T, e *env) { e.fake.Answer(1, 403, "ForbiddenByPolicy", "denied") }},
		{name: "404 KeyNotFound", op: "unwrap", want: keyring.ErrRevoked, calls: 1,
			setup: func(t *testing.T, e *env) {
				e.fake.Answer(1, 404, "KeyNotFound", "A key with (name/id) cmk was not found")
			}},
		{name: "key deleted", op: "wrap", want: keyring.ErrRevoked,
			setup: func(t *testing.T, e *env) { e.fake.Delete(kvTestKey) }},
		{name: "401 after the challenge", op: "unwrap", want: keyring.ErrRevoked,
			setup: func(t *testing.T, e *env) { e.fake.RejectTokens(true) }},
		{name: "400 KeyDisabled", op: "unwrap", want: keyring.ErrRevoked,
			setup: func(t *testing.T, e *env) { e.fake.Answer(1, 400, "KeyDisabled", "the key is disabled") }},
		{name: "400 operation not permitted", op: "wrap", want: keyring.ErrRevoked,
			setup: func(t *testing.T, e *env) { e.fake.Answer(1, 400, "BadParameter", "Operation not permitted") }},
		{name: "409 disabled", op: "unwrap", want: keyring.ErrRevoked,
			setup: func(t *testing.T, e *env) { e.fake.Answer(1, 409, "Conflict", "Key is disabled") }},
		{name: "400 BadParameter on unwrap", op: "unwrap", want: keyring.ErrCorrupt, calls: 1,
			setup: func(t *testing.T, e *env) {
				e.fake.Answer(1, 400, "BadParameter", "Unable to decrypt specified value with this key.")
			}},
		{name: "400 BadParameter on wrap", op: "wrap", want: errUnclassified,
			setup: func(t *testing.T, e *env) { e.fake.Answer(1, 400, "BadParameter", "Invalid algorithm") }},
		{name: "418 unknown answer", op: "unwrap", want: errUnclassified, calls: 1,
			setup: func(t *testing.T, e *env) { e.fake.Answer(1, 418, "Teapot", "?") }},
		{name: "429 then success", op: "unwrap", want: nil, calls: 3,
			setup: func(t *testing.T, e *env) { e.fake.Throttle(2, 5*time.Millisecond) }},
		{name: "429 on wrap then success", op: "wrap", want: nil,
			setup: func(t *testing.T, e *env) { e.fake.Throttle(1, 5*time.Millisecond) }},
		{name: "429 past the retries", op: "unwrap", want: keyring.ErrUnavailable, calls: 3,
			setup: func(t *testing.T, e *env) { e.fake.Throttle(10, 5*time.Millisecond) }},
		{name: "500 retried then unavailable", op: "unwrap", want: keyring.ErrUnavailable, calls: 3,
			setup: func(t *testing.T, e *env) { e.fake.FailNext(3, 500) }},
		{name: "503 retried then unavailable", op: "wrap", want: keyring.ErrUnavailable,
			setup: func(t *testing.T, e *env) { e.fake.FailNext(3, 503) }},
		{name: "503 once then success", op: "unwrap", want: nil, calls: 2,
			setup: func(t *testing.T, e *env) { e.fake.FailNext(1, 503) }},
		{name: "502 and 504", op: "unwrap", want: keyring.ErrUnavailable, calls: 3,
			setup: func(t *testing.T, e *env) { e.fake.FailNext(1, 502); e.fake.FailNext(2, 504) }},
		{name: "latency beyond the per-try timeout", op: "unwrap", want: keyring.ErrUnavailable, calls: 2,
			// The per-try timeout leaves room for a fresh TLS handshake on a
			// loaded machine: the retry opens a new connection, and a try that
			// times out before reaching the fake would not be counted.
			retry: func(r *policy.RetryOptions) { r.MaxRetries, r.TryTimeout = 1, 400*time.Millisecond },
			setup: func(t *testing.T, e *env) { e.fake.SetLatency(3 * time.Second) }},
		{name: "caller's deadline", op: "unwrap", want: keyring.ErrUnavailable,
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 50*time.Millisecond)
			},
			setup: func(t *testing.T, e *env) { e.fake.SetLatency(time.Second) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			retry := fastRetry()
			if tc.retry != nil {
				tc.retry(&retry)
			}
			e := newKVEnv(t, kvfake.RSA2048, retry)
			key, aad := newKey(t), []byte("aad")
			w := kvWrap(t, e.kv, key, aad) // challenge answered, current version cached
			e.fake.ResetCalls()
			tc.setup(t, e)
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if tc.ctx != nil {
				ctx, cancel = tc.ctx()
			}
			defer cancel()

			var got []byte
			var err error
			op := kvfake.OpUnwrapKey
			if tc.op == "wrap" {
				op = kvfake.OpWrapKey
				_, err = e.kv.Wrap(ctx, key, aad)
			} else {
				got, err = e.kv.Unwrap(ctx, w, aad)
			}
			checkClass(t, err, tc.want)
			if tc.want == nil {
				if tc.op == "unwrap" && !bytes.Equal(got, key) {
					t.Fatalf("Unwrap = %x, want %x", got, key)
				}
			} else {
				if got != nil {
					t.Fatalf("a failed Unwrap returned %x", got)
				}
				checkMessage(t, err, e, key, w)
			}
			if tc.calls != 0 {
				if n := e.fake.Calls(op); n != tc.calls {
					t.Fatalf("%s requests = %d, want %d", op, n, tc.calls)
				}
			}
		})
	}
}

func TestKeyVaultConnectionRefused(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	fake := kvfake.New(t, kvfake.Options{})
	co := &azkeys.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: srv.Client(), Retry: fastRetry()}}
	kv, err := NewKeyVault(srv.URL, kvTestKey, fake.Credential(), KeyVaultOptions{Client: co})
	if err != nil {
		t.Fatal(err)
	}
	srv.Close() // nothing listens there any more
	_, err = kv.Wrap(context.Background(), newKey(t), nil)
	checkClass(t, err, keyring.ErrUnavailable)
	if strings.Contains(err.Error(), srv.URL) {
		t.Fatalf("error %q names the URL", err)
	}
	w := keyring.Wrapped{KeyID: srv.URL + "/keys/" + kvTestKey + "/0123456789abcdef0123456789abcdef", Bytes: make([]byte, 256)}
	_, err = kv.Unwrap(context.Background(), w, nil)
	checkClass(t, err, keyring.ErrUnavailable)
}

func checkClass(t *testing.T, err, want error) {
	t.Helper()
	switch want {
	case nil:
		if err != nil {
			t.Fatalf("err = %v, want success", err)
		}
		return
	case errUnclassified:
		if err == nil {
			t.Fatal("err = nil, want an error")
		}
	default:
		if !errors.Is(err, want) {
			t.Fatalf("err = %v, want %v", err, want)
		}
	}
	for _, c := range classes {
		if c != want && errors.Is(err, c) {
			t.Fatalf("err = %v is also %v", err, c)
		}
	}
}

// checkMessage checks that an error names its operation and status and never carries
// the token, the key or the wrapped bytes.
func checkMessage(t *testing.T, err error, e *kvEnv, key []byte, w keyring.Wrapped) {
	t.Helper()
	msg := err.Error()
	if !strings.Contains(msg, "cmk keyvault getKey: ") && !strings.Contains(msg, "cmk keyvault wrapKey: ") && !strings.Contains(msg, "cmk keyvault unwrapKey: ") {
		t.Errorf("error %q names no Key Vault operation", msg)
	}
	if re := (*azcore.ResponseError)(nil); errors.As(err, &re) && !strings.Contains(msg, fmt.Sprintf(": %d %s", re.StatusCode, http.StatusText(re.StatusCode))) {
		t.Errorf("error %q does not name the status %d", msg, re.StatusCode)
	}
	tok, terr := e.fake.Credential().GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{kvfake.Scope}, TenantID: kvTestTenant})
	if terr != nil {
		t.Fatal(terr)
	}
	for what, s := range map[string]string{
		"the token":         tok.Token,
		"the key (hex)":     hex.EncodeToString(key),
		"the key (base64)":  base64.RawURLEncoding.EncodeToString(key),
		"the wrapped bytes": base64.RawURLEncoding.EncodeToString(w.Bytes)[:40],
	} {
		if strings.Contains(msg, s) {
			t.Errorf("error %q holds %s", msg, what)
		}
	}
}

func TestKeyVaultErrorNamesStatus(t *testing.T) {
	e := newKVEnv(t, kvfake.RSA2048, fastRetry())
	key, aad := newKey(t), []byte("aad")
	w := kvWrap(t, e.kv, key, aad)
	e.fake.SetEnabled(w.KeyID, false)
	_, err := e.kv.Unwrap(context.Background(), w, aad)
	if want := "cmk keyvault unwrapKey: 403 Forbidden (Forbidden, KeyDisabled): " + keyring.ErrRevoked.Error(); err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 403 {
		t.Fatalf("err = %v: want the *azcore.ResponseError kept in the chain", err)
	}
}

func TestKeyVaultRetryAfter(t *testing.T) {
	t.Run("honoured", func(t *testing.T) {
		e := newKVEnv(t, kvfake.RSA2048, fastRetry()) // RetryDelay 1 ms: a wait of 1 s is Retry-After's
		key, aad := newKey(t), []byte("aad")
		w := kvWrap(t, e.kv, key, aad)
		e.fake.Throttle(1, time.Second) // "Retry-After: 1", as Key Vault sends it
		start := time.Now()
		kvUnwrap(t, e.kv, w, aad, key)
		if d := time.Since(start); d < time.Second {
			t.Fatalf("Unwrap after a 429 with Retry-After: 1 took %v, want at least 1s", d)
		}
	})
	t.Run("longer than MaxRetryDelay is not waited", func(t *testing.T) {
		retry := fastRetry()
		retry.MaxRetryDelay = 100 * time.Millisecond
		e := newKVEnv(t, kvfake.RSA2048, retry)
		key, aad := newKey(t), []byte("aad")
		w := kvWrap(t, e.kv, key, aad)
		e.fake.ResetCalls()
		e.fake.Throttle(1, 2*time.Second)
		start := time.Now()
		_, err := e.kv.Unwrap(context.Background(), w, aad)
		checkClass(t, err, keyring.ErrUnavailable)
		if d, n := time.Since(start), e.fake.Calls(kvfake.OpUnwrapKey); d > time.Second || n != 1 {
			t.Fatalf("a 429 asking for 2s (cap 100ms): %d requests in %v, want 1 at once (azcore gives up)", n, d)
		}
	})
}

func TestKeyVaultChallengeOnce(t *testing.T) {
	e := newKVEnv(t, kvfake.RSA2048, fastRetry())
	key, aad := newKey(t), []byte("aad")
	for range 3 {
		kvUnwrap(t, e.kv, kvWrap(t, e.kv, key, aad), aad, key)
	}
	if n := e.fake.Calls(kvfake.OpChallenge); n != 1 {
		t.Fatalf("%d challenges for 3 wraps and 3 unwraps, want 1 (the token is reused)", n)
	}
}

// TestKeyVaultCurrentVersionIsCached: N wraps cost one getKey and N wrapKeys;
// a rotation is seen after RefreshEvery.
func TestKeyVaultCurrentVersionIsCached(t *testing.T) {
	e := newKVEnv(t, kvfake.RSA2048, fastRetry())
	key, aad := newKey(t), []byte("aad")
	const n = 5
	var first keyring.Wrapped
	for i := range n {
		w := kvWrap(t, e.kv, key, aad)
		if i == 0 {
			first = w
		} else if w.KeyID != first.KeyID {
			t.Fatalf("wrap %d named %q, want %q", i, w.KeyID, first.KeyID)
		}
	}
	if got, want := e.kv.Calls(), (KeyVaultCalls{GetKey: 1, WrapKey: n}); got != want {
		t.Fatalf("after %d wraps: calls %+v, want %+v", n, got, want)
	}
	if g, w := e.fake.Calls(kvfake.OpGetKey), e.fake.Calls(kvfake.OpWrapKey); g != 1 || w != n {
		t.Fatalf("the fake saw %d getKey and %d wrapKey, want 1 and %d", g, w, n)
	}

	kid := e.fake.Rotate(kvTestKey)
	e.clock.Advance(kvTestRefresh - time.Second)
	if w := kvWrap(t, e.kv, key, aad); w.KeyID != first.KeyID {
		t.Fatalf("before RefreshEvery: Wrap named %q, want the cached %q", w.KeyID, first.KeyID)
	}
	e.clock.Advance(time.Second)
	if w := kvWrap(t, e.kv, key, aad); w.KeyID != kid {
		t.Fatalf("after RefreshEvery: Wrap named %q, want the rotated %q", w.KeyID, kid)
	}
	if got := e.kv.Calls().GetKey; got != 2 {
		t.Fatalf("getKey calls = %d, want 2", got)
	}
}

// TestKeyVaultRereadsWhenDisabled: a wrap under a version Key Vault says is
// disabled re-reads the current version and wraps under the new one.
func TestKeyVaultRereadsWhenDisabled(t *testing.T) {
	e := newKVEnv(t, kvfake.RSA2048, fastRetry())
	key, aad := newKey(t), []byte("aad")
	w1 := kvWrap(t, e.kv, key, aad)
	kid2 := e.fake.Rotate(kvTestKey)
	if err := e.fake.SetEnabled(w1.KeyID, false); err != nil {
		t.Fatal(err)
	}
	before := e.kv.Calls()
	w2 := kvWrap(t, e.kv, key, aad) // cached v1: 403, re-read, wrap under v2
	if w2.KeyID != kid2 {
		t.Fatalf("Wrap after v1 was disabled named %q, want %q", w2.KeyID, kid2)
	}
	if got, want := e.kv.Calls(), (KeyVaultCalls{GetKey: before.GetKey + 1, WrapKey: before.WrapKey + 2}); got != want {
		t.Fatalf("calls %+v, want %+v (one refused wrap, one getKey, one wrap)", got, want)
	}
	kvUnwrap(t, e.kv, w2, aad, key)

	// An unwrap that finds the current version disabled makes the next Wrap
	// re-read it before wrapping.
	kid3 := e.fake.Rotate(kvTestKey)
	if err := e.fake.SetEnabled(kid2, false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.kv.Unwrap(context.Background(), w2, aad); !errors.Is(err, keyring.ErrRevoked) {
		t.Fatalf("Unwrap under disabled v2: %v, want %v", err, keyring.ErrRevoked)
	}
	before = e.kv.Calls()
	if w3 := kvWrap(t, e.kv, key, aad); w3.KeyID != kid3 {
		t.Fatalf("Wrap after an unwrap found v2 disabled named %q, want %q", w3.KeyID, kid3)
	}
	if got := e.kv.Calls(); got.GetKey != before.GetKey+1 || got.WrapKey != before.WrapKey+1 {
		t.Fatalf("calls %+v after %+v, want one getKey and one wrap", got, before)
	}

	// Every version disabled: fail closed.
	if err := e.fake.SetEnabled(kid3, false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.kv.Wrap(context.Background(), key, aad); !errors.Is(err, keyring.ErrRevoked) {
		t.Fatalf("Wrap with the current version disabled: %v, want %v", err, keyring.ErrRevoked)
	}
}

// TestKeyVaultRefreshOutageKeepsVersion: when the periodic re-read finds Key
// Vault out of reach, wraps go on under the version read before.
func TestKeyVaultRefreshOutageKeepsVersion(t *testing.T) {
	e := newKVEnv(t, kvfake.RSA2048, fastRetry())
	key, aad := newKey(t), []byte("aad")
	w1 := kvWrap(t, e.kv, key, aad)
	e.clock.Advance(kvTestRefresh)
	e.fake.FailNext(3, 503) // every try of the getKey
	if w := kvWrap(t, e.kv, key, aad); w.KeyID != w1.KeyID {
		t.Fatalf("Wrap during a getKey outage named %q, want %q", w.KeyID, w1.KeyID)
	}
	if got := e.kv.Calls(); got.GetKey != 2 {
		t.Fatalf("getKey calls = %d, want 2", got.GetKey)
	}
	kvWrap(t, e.kv, key, aad) // the next wrap tries the re-read again
	if got := e.kv.Calls(); got.GetKey != 3 {
		t.Fatalf("getKey calls = %d, want 3", got.GetKey)
	}
}

func TestKeyVaultKeyIDs(t *testing.T) {
	e := newKVEnv(t, kvfake.RSA2048, fastRetry())
	key, aad := newKey(t), []byte("aad")
	w := kvWrap(t, e.kv, key, aad)
	version := w.KeyID[strings.LastIndex(w.KeyID, "/")+1:]
	host := strings.TrimPrefix(e.fake.URL(), "https://")
	e.fake.ResetCalls()
	for _, tc := range []struct {
		kid string
		ok  bool
	}{
		{w.KeyID, true},
		{"https://" + strings.ToUpper(host) + "/keys/" + kvTestKey + "/" + version, true},
		{"https://" + host + "/keys/CMK/" + version, true},
		{"http://" + host + "/keys/" + kvTestKey + "/" + version, false},
		{"https://other.vault.azure.net/keys/" + kvTestKey + "/" + version, false},
		{"https://" + host + "/keys/other/" + version, false},
		{"https://" + host + "/secrets/" + kvTestKey + "/" + version, false},
		{"https://" + host + "/keys/" + kvTestKey, false},
		{"https://" + host + "/keys/" + kvTestKey + "/" + version + "/unwrapkey", false},
		{"https://" + host + "/keys/" + kvTestKey + "/" + version + "?api-version=1", false},
		{"https://user@" + host + "/keys/" + kvTestKey + "/" + version, false},
		{"https://" + host + "/keys/" + kvTestKey + "/..%2f" + version, false},
	} {
		got, err := e.kv.version(tc.kid)
		if tc.ok && (err != nil || got != version) {
			t.Errorf("version(%q) = %q, %v; want %q", tc.kid, got, err, version)
		}
		if !tc.ok && err == nil {
			t.Errorf("version(%q) = %q, want an error", tc.kid, got)
		}
	}
	if n := e.fake.Calls(""); n != 0 {
		t.Fatalf("checking key ids sent %d requests", n)
	}
	w.KeyID = "https://other.vault.azure.net/keys/" + kvTestKey + "/" + version
	if _, err := e.kv.Unwrap(context.Background(), w, aad); !errors.Is(err, keyring.ErrRevoked) || !strings.Contains(err.Error(), "another vault") {
		t.Fatalf("Unwrap of another vault's key id: %v, want %v naming another vault", err, keyring.ErrRevoked)
	}
	if n := e.fake.Calls(""); n != 0 {
		t.Fatalf("an unwrap under another vault's key id sent %d requests, want none", n)
	}
}

// BenchmarkKeyVaultUnwrap measures one unwrap through azkeys against the fake
// (RSA 3072, like the production CMK) with and without network latency.
func BenchmarkKeyVaultUnwrap(b *testing.B) {
	for _, latency := range []time.Duration{0, 20 * time.Millisecond} {
		b.Run(fmt.Sprintf("latency=%v", latency), func(b *testing.B) {
			e := newKVEnv(b, kvfake.RSA3072, policy.RetryOptions{})
			key, aad := make([]byte, keyring.KeySize), []byte("aad")
			w, err := e.kv.Wrap(context.Background(), key, aad)
			if err != nil {
				b.Fatal(err)
			}
			e.fake.SetLatency(latency)
			e.fake.ResetCalls()
			for b.Loop() {
				if _, err := e.kv.Unwrap(context.Background(), w, aad); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(e.fake.Calls(""))/float64(b.N), "requests/op")
		})
	}
}

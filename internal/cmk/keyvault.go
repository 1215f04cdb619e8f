package cmk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/credvault/credvault/internal/keyring"
)

// KeyVault is the CMK in Azure Key Vault (or a Managed HSM): a
// keyring.Wrapper that calls wrapKey and unwrapKey on the key, always naming
// the key version, and never fetches private material (it cannot).
//
// Wrap uses the key's current version, read with getKey (its kid and
// attributes only) and cached: re-read every RefreshEvery and as soon as Key
// Vault says that version is disabled or gone. An RSA key wraps with
// RSA-OAEP-256, an oct-HSM key (Managed HSM) with A256KW, both over the
// bound payload of bind.go. Unwrap uses the version named in the wrapped
// key's id.
//
// Errors: a version that is disabled, deleted or forbidden is
// keyring.ErrRevoked (fail closed); Key Vault out of reach (timeouts,
// connection errors, 408, 429, 5xx, a canceled or expired context) is
// keyring.ErrUnavailable; wrapped bytes Key Vault refuses to unwrap, or that
// do not open under their context, are keyring.ErrCorrupt.
type KeyVault struct {
	client       *azkeys.Client
	vault        *url.URL // scheme and host of vaultURL
	name         string
	refreshEvery time.Duration
	now          func() time.Time

	refresh chan struct{} // one getKey at a time

	mu      sync.Mutex
	cur     kvVersion // zero until read
	fetched time.Time // when cur was read; zero: re-read at next use

	getKeys, wraps, unwraps atomic.Uint64
}

var _ keyring.Wrapper = (*KeyVault)(nil)

// kvVersion is the current key version as getKey last said.
type kvVersion struct {
	kid     string // full versioned key id, as Key Vault spells it
	version string
	alg     azkeys.EncryptionAlgorithm
}

// KeyVaultOptions configure NewKeyVault.
type KeyVaultOptions struct {
	// Client options for azkeys.NewClient (transport, logging, retry). Zero
	// retry settings get KeyVault's defaults: MaxRetries 4, TryTimeout 10 s,
	// retry on 408, 429, 500, 502, 503 and 504. azcore itself retries
	// connection errors and per-try timeouts, waits what Retry-After (or
	// retry-after-ms) says, else 0.8 s doubling with jitter; and gives up at
	// once on a Retry-After longer than MaxRetryDelay (default 60 s).
	Client *azkeys.ClientOptions
	// RefreshEvery is how often the current key version is re-read;
	// default 1 h.
	RefreshEvery time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Defaults of KeyVaultOptions.
const (
	DefaultKeyVaultRefresh    = time.Hour
	DefaultKeyVaultMaxRetries = 4
	DefaultKeyVaultTryTimeout = 10 * time.Second
)

// Key Vault object names: 1-127 letters, digits and dashes.
var keyNamePattern = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)

// NewKeyVault returns the CMK named keyName in the vault at vaultURL (e.g.
// https://myvault.vault.azure.net), authenticated by cred. It makes no
// network call: the first Wrap or Unwrap does.
func NewKeyVault(vaultURL, keyName string, cred azcore.TokenCredential, opt KeyVaultOptions) (*KeyVault, error) {
	u, err := url.Parse(vaultURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil ||
		strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("key vault: URL %q: want https://<vault host>", vaultURL)
	}
	if !keyNamePattern.MatchString(keyName) {
		return nil, fmt.Errorf("key vault: key name %q: want 1-127 letters, digits or dashes", keyName)
	}
	if cred == nil {
		return nil, errors.New("key vault: no credential")
	}
	if opt.RefreshEvery <= 0 {
		opt.RefreshEvery = DefaultKeyVaultRefresh
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	co := keyVaultClientOptions(opt.Client)
	base := &url.URL{Scheme: u.Scheme, Host: u.Host}
	client, err := azkeys.NewClient(base.String(), cred, &co)
	if err != nil {
		return nil, fmt.Errorf("key vault: %w", err)
	}
	return &KeyVault{
		client:       client,
		vault:        base,
		name:         keyName,
		refreshEvery: opt.RefreshEvery,
		now:          opt.Now,
		refresh:      make(chan struct{}, 1),
	}, nil
}

// keyVaultClientOptions copies in and fills the retry settings left zero.
func keyVaultClientOptions(in *azkeys.ClientOptions) azkeys.ClientOptions {
	var o azkeys.ClientOptions
	if in != nil {
		o = *in
	}
	r := &o.Retry
	if r.MaxRetries == 0 {
		r.MaxRetries = DefaultKeyVaultMaxRetries
	}
	if r.TryTimeout == 0 {
		r.TryTimeout = DefaultKeyVaultTryTimeout
	}
	if r.StatusCodes == nil {
		r.StatusCodes = []int{
			http.StatusRequestTimeout, http.StatusTooManyRequests,
			http.StatusInternalServerError, http.StatusBadGateway,
			http.StatusServiceUnavailable, http.StatusGatewayTimeout,
		}
	}
	return o
}

// KeyVaultCalls counts the Key Vault operations a KeyVault asked for: one per
// operation, however many HTTP requests its retries and challenge took.
type KeyVaultCalls struct {
	GetKey, WrapKey, UnwrapKey uint64
}

// Calls returns the operations asked of Key Vault so far.
func (k *KeyVault) Calls() KeyVaultCalls {
	return KeyVaultCalls{GetKey: k.getKeys.Load(), WrapKey: k.wraps.Load(), UnwrapKey: k.unwraps.Load()}
}

// Unwraps returns how many unwraps were asked of Key Vault so far (as
// Local.Unwraps does).
func (k *KeyVault) Unwraps() uint64 { return k.unwraps.Load() }

// Current returns the key id that new wraps use, reading it from Key Vault
// when the cached one is older than RefreshEvery.
func (k *KeyVault) Current(ctx context.Context) (string, error) {
	v, err := k.current(ctx, "")
	return v.kid, err
}

// Wrap wraps key, bound to aad, under the key's current version.
func (k *KeyVault) Wrap(ctx context.Context, key, aad []byte) (keyring.Wrapped, error) {
	if err := ctx.Err(); err != nil {
		return keyring.Wrapped{}, fmt.Errorf("cmk wrap: %w: %w", keyring.ErrUnavailable, err)
	}
	cur, err := k.current(ctx, "")
	if err != nil {
		return keyring.Wrapped{}, err
	}
	w, err := k.wrapWith(ctx, cur, key, aad)
	if !errors.Is(err, keyring.ErrRevoked) {
		return w, err
	}
	// The cached version is disabled or gone: the key may have been rotated
	// since. Re-read it once and wrap under a new current version, if any.
	next, rerr := k.current(ctx, cur.version)
	switch {
	case errors.Is(rerr, keyring.ErrRevoked):
		return keyring.Wrapped{}, rerr
	case rerr != nil || next.version == cur.version:
		return keyring.Wrapped{}, err
	}
	return k.wrapWith(ctx, next, key, aad)
}

func (k *KeyVault) wrapWith(ctx context.Context, cur kvVersion, key, aad []byte) (keyring.Wrapped, error) {
	payload := bind(key, aad)
	defer clear(payload)
	k.wraps.Add(1)
	resp, err := k.client.WrapKey(ctx, k.name, cur.version, azkeys.KeyOperationParameters{Algorithm: &cur.alg, Value: payload}, nil)
	if err != nil {
		return keyring.Wrapped{}, classify(opWrapKey, err)
	}
	if len(resp.Result) == 0 {
		return keyring.Wrapped{}, errors.New("cmk keyvault wrapKey: empty result")
	}
	if resp.KID != nil && resp.KID.Version() != "" && resp.KID.Version() != cur.version {
		return keyring.Wrapped{}, fmt.Errorf("cmk keyvault wrapKey: asked version %s, answered %s", cur.version, resp.KID.Version())
	}
	return keyring.Wrapped{KeyID: cur.kid, Bytes: resp.Result}, nil
}

// aesKWLen is the length of the bound payload (key || digest, 64 bytes)
// wrapped with A256KW. An RSA-OAEP result is as long as the modulus (256
// bytes or more), so the length tells which algorithm wrapped it.
const aesKWLen = keyring.KeySize + 32 + 8

// Unwrap unwraps w with the key version its key id names.
func (k *KeyVault) Unwrap(ctx context.Context, w keyring.Wrapped, aad []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("cmk unwrap: %w: %w", keyring.ErrUnavailable, err)
	}
	version, err := k.version(w.KeyID)
	if err != nil {
		return nil, fmt.Errorf("cmk unwrap: %w: %w", err, keyring.ErrRevoked)
	}
	if len(w.Bytes) == 0 {
		return nil, fmt.Errorf("cmk unwrap: no wrapped bytes: %w", keyring.ErrCorrupt)
	}
	alg := azkeys.EncryptionAlgorithmRSAOAEP256
	if len(w.Bytes) == aesKWLen {
		alg = azkeys.EncryptionAlgorithmA256KW
	}
	k.unwraps.Add(1)
	resp, err := k.client.UnwrapKey(ctx, k.name, version, azkeys.KeyOperationParameters{Algorithm: &alg, Value: w.Bytes}, nil)
	if err != nil {
		err = classify(opUnwrapKey, err)
		if errors.Is(err, keyring.ErrRevoked) {
			k.forget(version)
		}
		return nil, err
	}
	if len(resp.Result) == 0 {
		// An answer without a result says nothing of the wrapped bytes: a
		// broken answer, not corrupt data (which would fail closed with no
		// grace).
		return nil, fmt.Errorf("cmk keyvault unwrapKey: answer has no result: %w", keyring.ErrUnavailable)
	}
	return unbind(resp.Result, aad)
}

// version returns the version a key id names when it names one of this
// key's versions: https://<this vault>/keys/<this name>/<version>.
func (k *KeyVault) version(kid string) (string, error) {
	u, err := url.Parse(kid)
	if err != nil || u.Scheme != k.vault.Scheme || !strings.EqualFold(strings.TrimSuffix(u.Host, ":443"), strings.TrimSuffix(k.vault.Host, ":443")) ||
		u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", errors.New("key id of another vault")
	}
	seg := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(seg) != 3 || seg[0] != "keys" || !strings.EqualFold(seg[1], k.name) {
		return "", errors.New("key id of another key")
	}
	if !keyNamePattern.MatchString(seg[2]) {
		return "", errors.New("key id names no version")
	}
	return seg[2], nil
}

// current returns the current version: the cached one while it is younger
// than RefreshEvery, else what getKey says. With stale set, the caller was
// told that version is disabled or gone: a cached version other than stale
// is returned, else getKey is asked again.
func (k *KeyVault) current(ctx context.Context, stale string) (kvVersion, error) {
	if v, ok := k.cached(stale); ok {
		return v, nil
	}
	select {
	case k.refresh <- struct{}{}:
		defer func() { <-k.refresh }()
	case <-ctx.Done():
		return kvVersion{}, fmt.Errorf("cmk keyvault getKey: %w: %w", keyring.ErrUnavailable, ctx.Err())
	}
	if v, ok := k.cached(stale); ok { // read by another caller meanwhile
		return v, nil
	}
	v, err := k.readCurrent(ctx)
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case err == nil:
		k.cur, k.fetched = v, k.now()
	case errors.Is(err, keyring.ErrRevoked):
		k.cur, k.fetched = kvVersion{}, time.Time{}
	case errors.Is(err, keyring.ErrUnavailable) && stale == "" && k.cur.kid != "":
		// Key Vault out of reach at a periodic re-read: the version read
		// before is still the best guess (and wrapKey will say if not).
		return k.cur, nil
	}
	return v, err
}

func (k *KeyVault) cached(stale string) (kvVersion, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.cur.kid == "":
		return kvVersion{}, false
	case stale != "":
		return k.cur, k.cur.version != stale
	}
	return k.cur, k.now().Sub(k.fetched) < k.refreshEvery
}

// forget makes the next Wrap re-read the current version if it is version.
func (k *KeyVault) forget(version string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cur.version == version {
		k.fetched = time.Time{}
	}
}

// readCurrent asks getKey for the key's current version and checks that it
// can wrap now.
func (k *KeyVault) readCurrent(ctx context.Context) (kvVersion, error) {
	k.getKeys.Add(1)
	resp, err := k.client.GetKey(ctx, k.name, "", nil)
	if err != nil {
		return kvVersion{}, classify(opGetKey, err)
	}
	if resp.Key == nil || resp.Key.KID == nil || resp.Key.Kty == nil {
		return kvVersion{}, errors.New("cmk keyvault getKey: answer has no key id or key type")
	}
	kid := string(*resp.Key.KID)
	version, err := k.version(kid)
	if err != nil {
		return kvVersion{}, fmt.Errorf("cmk keyvault getKey: %s: %w", kid, err)
	}
	v := kvVersion{kid: kid, version: version}
	switch *resp.Key.Kty {
	case azkeys.KeyTypeRSA, azkeys.KeyTypeRSAHSM:
		v.alg = azkeys.EncryptionAlgorithmRSAOAEP256
	case azkeys.KeyTypeOct, azkeys.KeyTypeOctHSM:
		v.alg = azkeys.EncryptionAlgorithmA256KW
	default:
		return kvVersion{}, fmt.Errorf("cmk keyvault getKey: key type %s cannot wrap keys", *resp.Key.Kty)
	}
	now := k.now()
	if a := resp.Attributes; a != nil {
		switch {
		case a.Enabled != nil && !*a.Enabled:
			return kvVersion{}, fmt.Errorf("cmk keyvault getKey: current version %s is disabled: %w", version, keyring.ErrRevoked)
		case a.Expires != nil && !now.Before(*a.Expires):
			return kvVersion{}, fmt.Errorf("cmk keyvault getKey: current version %s expired at %s: %w", version, a.Expires.UTC().Format(time.RFC3339), keyring.ErrRevoked)
		case a.NotBefore != nil && now.Before(*a.NotBefore):
			return kvVersion{}, fmt.Errorf("cmk keyvault getKey: current version %s is not valid before %s: %w", version, a.NotBefore.UTC().Format(time.RFC3339), keyring.ErrRevoked)
		}
	}
	return v, nil
}

// Key Vault operation names, in errors.
const (
	opGetKey    = "getKey"
	opWrapKey   = "wrapKey"
	opUnwrapKey = "unwrapKey"
)

// keyVaultError is a failed Key Vault operation, classified: class is
// keyring.ErrRevoked, ErrUnavailable, ErrCorrupt or nil (an answer that fits
// none). Its message names the operation, the status and Key Vault's error
// codes; never the request, the token or key bytes.
type keyVaultError struct {
	op     string
	status int    // 0: no answer
	codes  string // Key Vault's error code and inner code
	class  error
	cause  error
}

func (e *keyVaultError) Error() string {
	var b strings.Builder
	b.WriteString("cmk keyvault " + e.op + ": ")
	switch {
	case e.status != 0:
		fmt.Fprintf(&b, "%d %s", e.status, http.StatusText(e.status))
		if e.codes != "" {
			b.WriteString(" (" + e.codes + ")")
		}
	default:
		var ue *url.Error
		if errors.As(e.cause, &ue) { // its message holds the URL: say only why
			b.WriteString(ue.Err.Error())
		} else {
			b.WriteString(e.cause.Error())
		}
	}
	if e.class != nil {
		b.WriteString(": " + e.class.Error())
	} else {
		b.WriteString(": unexpected answer")
	}
	return b.String()
}

func (e *keyVaultError) Unwrap() []error {
	if e.class == nil {
		return []error{e.cause}
	}
	return []error{e.class, e.cause}
}

// classify maps an azkeys error to the keyring's error classes.
func classify(op string, err error) error {
	e := &keyVaultError{op: op, cause: err}
	var re *azcore.ResponseError
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		e.class = keyring.ErrUnavailable
	case errors.As(err, &re):
		body := errorBody(re)
		e.status, e.codes = re.StatusCode, strings.Trim(body.Error.Code+", "+body.Error.Inner.Code, ", ")
		e.class = classifyStatus(op, re.StatusCode, body)
	default:
		// No answer from Key Vault: connection, TLS or DNS errors, a per-try
		// timeout, or no token from the identity endpoint.
		e.class = keyring.ErrUnavailable
	}
	return e
}

func classifyStatus(op string, status int, body kvErrorBody) error {
	switch {
	case status == http.StatusUnauthorized, status == http.StatusForbidden, status == http.StatusNotFound:
		// 401 comes back only after the challenge was answered with a token:
		// the identity has no access. 403: disabled, forbidden by RBAC,
		// policy or firewall. 404: the key or version is deleted.
		return keyring.ErrRevoked
	case status == http.StatusBadRequest, status == http.StatusConflict:
		if body.revocation() {
			return keyring.ErrRevoked
		}
		if op == opUnwrapKey && status == http.StatusBadRequest {
			// The only input is the stored bytes (and the algorithm they
			// imply): Key Vault refused them.
			return keyring.ErrCorrupt
		}
		return nil
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests, status >= 500:
		return keyring.ErrUnavailable
	}
	return nil
}

// kvErrorBody is Key Vault's error answer:
// {"error":{"code":…,"message":…,"innererror":{"code":…}}}.
type kvErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Inner   struct {
			Code string `json:"code"`
		} `json:"innererror"`
	} `json:"error"`
}

func errorBody(re *azcore.ResponseError) kvErrorBody {
	var b kvErrorBody
	if re.RawResponse != nil {
		if p, err := runtime.Payload(re.RawResponse); err == nil {
			_ = json.Unmarshal(p, &b)
		}
	}
	if b.Error.Code == "" {
		b.Error.Code = re.ErrorCode
	}
	return b
}

// revocation tells whether a 400 or 409 says the key is disabled or its use
// not permitted.
func (b kvErrorBody) revocation() bool {
	for _, c := range []string{b.Error.Code, b.Error.Inner.Code} {
		c = strings.ToLower(c)
		if strings.Contains(c, "disabled") || strings.Contains(c, "forbidden") || strings.Contains(c, "notpermitted") || strings.Contains(c, "not permitted") {
			return true
		}
	}
	m := strings.ToLower(b.Error.Message)
	return strings.Contains(m, "disabled") || strings.Contains(m, "not permitted")
}

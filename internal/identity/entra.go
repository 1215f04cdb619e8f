package identity

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/httprc/v3"
	"github.com/lestrrat-go/jwx/v3/jwk"
)

// Entra mode constants.
const (
	// DefaultAuthority is Microsoft Entra's authority in the public cloud.
	DefaultAuthority = "https://login.microsoftonline.com"
	// KeyRefreshInterval is the least time between two key fetches that
	// tokens trigger: a token whose kid is unknown refreshes its tenant's
	// keys at most once per interval, as Microsoft's key-rollover guidance
	// asks; other unknown kids in the interval are refused at once.
	KeyRefreshInterval = 5 * time.Minute
)

const (
	// keyRetryBackoff: after a failed first fetch of a tenant's keys, the
	// next attempt waits this long; requests in between answer 503 at once.
	keyRetryBackoff = 10 * time.Second
	// The background refresh of a key set follows the JWKS response's
	// Cache-Control max-age, kept within these bounds (the minimum applies
	// when there is no max-age).
	keyMinRefresh = time.Hour
	keyMaxRefresh = 24 * time.Hour
	// fetchTimeout bounds one request to the authority.
	fetchTimeout      = 10 * time.Second
	maxDiscoveryBytes = 64 << 10
	maxJWKSBytes      = 1 << 20
)

// EntraOptions configures an Entra authenticator.
type EntraOptions struct {
	// Authority is the https URL of the Entra authority, without a path
	// (sovereign clouds have their own). Empty means DefaultAuthority.
	Authority string
	// Tenants lists the tenant ids (GUIDs) whose tokens are accepted; at
	// least one.
	Tenants []string
	// Audiences lists the accepted aud values (the API's client id and/or
	// its application id URI); at least one.
	Audiences []string
	// RoleMap maps roles/scp values to roles; nil means the six role names
	// map to themselves. See VerifierOptions.RoleMap.
	RoleMap map[string]Role
	// HTTPClient fetches from the authority. Nil means a client over
	// http.DefaultTransport: the system's CA store (SSL_CERT_FILE and
	// SSL_CERT_DIR apply) and the environment's proxy. Tests pass a client
	// that trusts their fake authority.
	HTTPClient *http.Client
	// Now is the clock of token validity and of the refresh limit; nil
	// means time.Now.
	Now func() time.Time
	// RefreshInterval replaces KeyRefreshInterval (tests shorten it).
	RefreshInterval time.Duration
}

// Entra verifies Microsoft Entra access tokens (v1.0 and v2.0) against the
// signing keys each allowed tenant publishes.
//
// Each allowed tenant has its own key set: the jwks_uri of
// {authority}/{tenant}/v2.0/.well-known/openid-configuration, kept in a
// jwk.Cache that refreshes it in the background. Entra signs every tenant's
// tokens with the same keys and publishes them at each tenant's jwks_uri, so
// this costs one fetch per tenant in use; in exchange a token is only ever
// checked against the keys its own tenant publishes, and only the issuers of
// its own tenant are accepted. The token's tid (read before the signature is
// checked, and checked again after) picks the tenant: a tid outside the
// allow-list is refused without any fetch.
//
// Nothing is fetched before the first token arrives. A failure to fetch
// keys is ErrKeysUnavailable (503), never an invalid token.
type Entra struct {
	authority string
	client    *http.Client
	now       func() time.Time
	interval  time.Duration
	cache     *jwk.Cache
	tenants   map[string]*entraTenant // by lower-case tid; fixed after NewEntra

	mu   sync.Mutex
	sets map[string]*keySet // by jwks_uri
}

var _ Authenticator = (*Entra)(nil)

// entraTenant is an allowed tenant: its verifier and, once discovered, its
// key set.
type entraTenant struct {
	e        *Entra
	id       string
	verifier *JWTVerifier

	mu       sync.Mutex
	set      *keySet   // nil until the OpenID configuration was read
	failedAt time.Time // last failed discovery
	failErr  error
}

// keySet is one JWKS URL registered in the cache.
type keySet struct {
	e   *Entra
	uri string

	// mu serializes the fetches that requests trigger. The fetcher (run by
	// the cache's workers) never takes it.
	mu         sync.Mutex
	res        atomic.Pointer[httprc.ResourceBase[jwk.Set]] // set after the first successful fetch
	registered bool
	fetchedAt  time.Time // last fetch a request triggered (first fetch or unknown kid)
	failedAt   time.Time // last failed first fetch
	failErr    error     // its error
	refreshErr error     // error of the last refresh for an unknown kid; nil if it succeeded

	lastErr atomic.Pointer[error] // outcome of the latest fetch, by the fetcher
	outcome chan error            // the first fetch's outcome, by the fetcher
}

// NewEntra checks o and returns an Entra authenticator. It contacts nothing:
// the first token fetches its tenant's configuration and keys. Close it to
// stop the background refresh.
func NewEntra(o EntraOptions) (*Entra, error) {
	authority, err := ParseAuthority(o.Authority)
	if err != nil {
		return nil, err
	}
	if len(o.Tenants) == 0 {
		return nil, errors.New("identity: entra options: no allowed tenant")
	}
	if len(o.Audiences) == 0 {
		return nil, errors.New("identity: entra options: no audience")
	}
	e := &Entra{
		authority: authority,
		client:    o.HTTPClient,
		now:       o.Now,
		interval:  o.RefreshInterval,
		tenants:   make(map[string]*entraTenant, len(o.Tenants)),
		sets:      map[string]*keySet{},
	}
	if e.client == nil {
		e.client = &http.Client{Timeout: fetchTimeout}
	}
	e.client = jwk.WrapHTTPClientDefaults(e.client) // a timeout if none; no https-to-http redirect
	if e.now == nil {
		e.now = time.Now
	}
	if e.interval <= 0 {
		e.interval = KeyRefreshInterval
	}
	for _, tid := range o.Tenants {
		if !isGUID(tid) {
			return nil, fmt.Errorf("identity: entra options: tenant %q is not a GUID", tid)
		}
		tid = strings.ToLower(tid)
		t := &entraTenant{e: e, id: tid}
		t.verifier, err = NewJWTVerifier(VerifierOptions{
			Keys:      t.keys,
			Issuers:   []string{"https://sts.windows.net/" + tid + "/", authority + "/" + tid + "/v2.0"},
			Audiences: o.Audiences,
			Tenants:   []string{tid},
			RoleMap:   o.RoleMap,
			Now:       e.now,
		})
		if err != nil {
			return nil, err
		}
		e.tenants[tid] = t
	}
	// The cache's workers start now but fetch nothing until a URL is
	// registered, on the first token.
	if e.cache, err = jwk.NewCache(context.Background(), httprc.NewClient()); err != nil {
		return nil, fmt.Errorf("identity: entra: %w", err)
	}
	return e, nil
}

// IsTenantID reports whether s has the GUID form of an Entra tenant id.
func IsTenantID(s string) bool { return isGUID(s) }

// ParseAuthority returns the authority s without a trailing slash (""
// means DefaultAuthority), if it is an https URL with a host and nothing
// else: the tenant goes in the path.
func ParseAuthority(s string) (string, error) {
	if s == "" {
		return DefaultAuthority, nil
	}
	s = strings.TrimSuffix(s, "/")
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("identity: entra authority %q is not an https URL without a path", s)
	}
	return s, nil
}

// Close stops the background key refresh.
func (e *Entra) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return e.cache.Shutdown(ctx)
}

// Authenticate reads the single "Authorization: Bearer <jwt>" header and
// verifies the token.
func (e *Entra) Authenticate(ctx context.Context, h http.Header) (Principal, error) {
	tok, err := bearerToken(h)
	if err != nil {
		return Principal{}, err
	}
	return e.Verify(ctx, tok)
}

// Verify verifies an Entra access token: the checks of JWTVerifier, with
// its own tenant's keys and issuers. An unknown kid refreshes the tenant's
// keys (at most once per refresh interval) and is tried once more.
func (e *Entra) Verify(ctx context.Context, token string) (Principal, error) {
	t, err := e.tenantOf(token)
	if err != nil {
		return Principal{}, err
	}
	p, err := t.verifier.Verify(ctx, token)
	if !errors.Is(err, ErrUnknownKey) {
		return p, err
	}
	if err := t.keySetOrNil().refresh(ctx); err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
	}
	return t.verifier.Verify(ctx, token)
}

// tenantOf returns the allowed tenant the token's (not yet verified) tid
// names. The verifier checks the verified tid again.
func (e *Entra) tenantOf(token string) (*entraTenant, error) {
	if _, err := precheck(token); err != nil {
		return nil, err
	}
	seg := strings.Split(token, ".")[1]
	payload, err := base64.RawURLEncoding.Strict().DecodeString(seg)
	if err != nil {
		return nil, fmt.Errorf("%w: payload is not canonical base64url", ErrMalformed)
	}
	var claims map[string]json.RawMessage // exact names: encoding/json matches fields case-insensitively
	if json.Unmarshal(payload, &claims) != nil {
		return nil, fmt.Errorf("%w: payload is not a JWT claims set", ErrMalformed)
	}
	var tid string
	if raw, ok := claims["tid"]; !ok || json.Unmarshal(raw, &tid) != nil || !isGUID(tid) {
		return nil, fmt.Errorf("%w: tid", ErrClaims)
	}
	t, ok := e.tenants[strings.ToLower(tid)]
	if !ok {
		return nil, ErrTenant
	}
	return t, nil
}

// keys is the tenant's KeySource: its key set, fetched on first use.
func (t *entraTenant) keys(ctx context.Context) (jwk.Set, error) {
	ks, err := t.keySet(ctx)
	if err != nil {
		return nil, err
	}
	return ks.current(ctx)
}

func (t *entraTenant) keySetOrNil() *keySet {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.set
}

// keySet reads the tenant's OpenID configuration once and returns the key
// set of its jwks_uri.
func (t *entraTenant) keySet(ctx context.Context) (*keySet, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.set != nil {
		return t.set, nil
	}
	now := t.e.now()
	if t.failErr != nil && now.Sub(t.failedAt) < keyRetryBackoff {
		return nil, t.failErr
	}
	uri, err := t.e.discover(ctx, t.id)
	if err != nil {
		if ctx.Err() == nil {
			t.failedAt, t.failErr = now, err
		}
		return nil, err
	}
	t.failErr = nil
	t.set = t.e.keySetFor(uri)
	return t.set, nil
}

// discover reads jwks_uri from the tenant's v2.0 OpenID configuration.
func (e *Entra) discover(ctx context.Context, tid string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.authority+"/"+tid+"/v2.0/.well-known/openid-configuration", nil)
	if err != nil {
		return "", fmt.Errorf("openid configuration: %w", err)
	}
	_, body, err := e.get(req, maxDiscoveryBytes)
	if err != nil {
		return "", fmt.Errorf("openid configuration: %w", err)
	}
	var doc struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if json.Unmarshal(body, &doc) != nil {
		return "", errors.New("openid configuration: not a JSON object")
	}
	if u, err := url.Parse(doc.JWKSURI); err != nil || u.Scheme != "https" || u.Host == "" {
		return "", errors.New("openid configuration: jwks_uri is not an https URL")
	}
	return doc.JWKSURI, nil
}

// get sends req and returns the response with its body read (at most limit
// bytes) and closed. A transport error loses its URL; a status other than
// 200 is an error. No error carries the body.
func (e *Entra) get(req *http.Request, limit int64) (*http.Response, []byte, error) {
	res, err := e.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("HTTP status %d", res.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, limit+1))
	if err != nil {
		return nil, nil, fmt.Errorf("reading the response: %w", err)
	}
	if int64(len(body)) > limit {
		return nil, nil, fmt.Errorf("response larger than %d bytes", limit)
	}
	return res, body, nil
}

// keySetFor returns the key set of uri, shared by the tenants that name it.
func (e *Entra) keySetFor(uri string) *keySet {
	e.mu.Lock()
	defer e.mu.Unlock()
	ks, ok := e.sets[uri]
	if !ok {
		ks = &keySet{e: e, uri: uri, outcome: make(chan error, 1)}
		e.sets[uri] = ks
	}
	return ks
}

// current returns the cached key set, fetching it first if no fetch has
// succeeded yet. Failed first fetches are retried at most once per
// keyRetryBackoff.
func (ks *keySet) current(ctx context.Context) (jwk.Set, error) {
	if r := ks.res.Load(); r != nil {
		return r.Resource(), nil
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if r := ks.res.Load(); r != nil {
		return r.Resource(), nil
	}
	now := ks.e.now()
	if ks.failErr != nil && now.Sub(ks.failedAt) < keyRetryBackoff {
		return nil, ks.failErr
	}
	r, err := ks.first(ctx)
	if err != nil {
		if ctx.Err() == nil {
			ks.failedAt, ks.failErr = now, err
		}
		return nil, err
	}
	ks.failErr = nil
	ks.fetchedAt = now
	ks.res.Store(r)
	return r.Resource(), nil
}

// first registers the key set in the cache and waits for its first fetch;
// once registered, it forces a fetch instead.
func (ks *keySet) first(ctx context.Context) (*httprc.ResourceBase[jwk.Set], error) {
	ctx, cancel := context.WithTimeout(ctx, 2*fetchTimeout) // the request's context may have no deadline
	defer cancel()
	c := ks.e.cache
	retry := ks.registered
	if !ks.registered {
		err := c.Register(ctx, ks.uri,
			jwk.WithHTTPClient(jwksFetcher{ks}),
			jwk.WithWaitReady(false),
			jwk.WithMinInterval(keyMinRefresh),
			jwk.WithMaxInterval(keyMaxRefresh),
		)
		if err != nil {
			return nil, errors.New("jwks: the key cache refused the URL")
		}
		ks.registered = true
		// The cache fetches at once, in the background; the fetcher reports
		// how it went, so a failure answers now and not at the deadline.
		select {
		case err := <-ks.outcome:
			if err != nil {
				return nil, err
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	r, err := c.LookupResource(ctx, ks.uri)
	if err != nil {
		return nil, ks.failure(ctx, err)
	}
	if retry && r.Resource() == nil { // an earlier first fetch failed: try again now
		if _, err := c.Refresh(ctx, ks.uri); err != nil {
			return nil, ks.failure(ctx, err)
		}
	}
	if err := r.Ready(ctx); err != nil { // (after a good fetch, while the cache stores the set)
		return nil, err
	}
	return r, nil
}

// refresh fetches the key set again for a token whose kid it lacks, unless
// a request-triggered fetch happened less than the refresh interval ago. It
// returns an error only when the keys could not be fetched (now, or by the
// refresh of this interval): the caller answers 503, not 401.
func (ks *keySet) refresh(ctx context.Context) error {
	if ks == nil {
		return errors.New("jwks: no key set") // cannot happen: the verifier got keys before ErrUnknownKey
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	now := ks.e.now()
	if now.Sub(ks.fetchedAt) < ks.e.interval {
		return ks.refreshErr
	}
	ks.fetchedAt = now
	ks.refreshErr = nil
	if _, err := ks.e.cache.Refresh(ctx, ks.uri); err != nil && ctx.Err() == nil {
		ks.refreshErr = ks.failure(ctx, err)
	}
	return ks.refreshErr
}

// failure describes a failed fetch by the fetcher's report: the cache's
// own error text carries the URL.
func (ks *keySet) failure(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if p := ks.lastErr.Load(); p != nil && *p != nil {
		return *p
	}
	return errors.New("jwks: fetch failed")
}

// jwksFetcher is the cache's HTTP client for one key set: it checks the
// status, size and shape of the JWKS before the cache sees it, reports the
// outcome, and keeps URLs and bodies out of errors.
type jwksFetcher struct{ ks *keySet }

func (f jwksFetcher) Do(req *http.Request) (*http.Response, error) {
	res, body, err := f.ks.e.get(req, maxJWKSBytes)
	if err == nil {
		if _, perr := jwk.Parse(body); perr != nil {
			err = errors.New("not a JSON Web Key Set")
		}
	}
	if err != nil {
		err = fmt.Errorf("jwks: %w", err)
	}
	f.ks.lastErr.Store(&err)
	select {
	case f.ks.outcome <- err:
	default:
	}
	if err != nil {
		return nil, err
	}
	res.Body = io.NopCloser(bytes.NewReader(body))
	return res, nil
}

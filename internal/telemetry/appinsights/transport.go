package appinsights

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// IngestionScope is the token scope of Entra-authenticated ingestion.
const IngestionScope = "https://monitor.azure.com//.default"

const (
	refreshMargin = 5 * time.Minute  // a token is renewed this long before it expires
	tokenTimeout  = 30 * time.Second // bound on one token request
)

// transport is the round tripper under the SDK's http.Client: it ties
// posts to the sink's life (Close aborts them when it gives up), adds
// the bearer token when Entra authentication is on, and logs failures.
type transport struct {
	base   http.RoundTripper
	life   context.Context // canceled when the sink closes: ends the posts in flight
	host   string          // the ingestion endpoint's host: the only one given a token
	tokens *tokenSource    // nil: no Authorization header
	log    *slog.Logger
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	// The post ends with its own context or with the sink's life.
	ctx, cancel := context.WithCancel(req.Context())
	unhook := context.AfterFunc(t.life, cancel)
	done := func() { unhook(); cancel() }
	r := req.Clone(ctx)
	var token string
	if t.tokens != nil && strings.EqualFold(req.URL.Host, t.host) {
		var err error
		if token, err = t.tokens.token(ctx); err != nil {
			done()
			if req.Body != nil {
				req.Body.Close()
			}
			t.log.Warn("application insights: no token for ingestion; telemetry batch not sent", "error", err.Error())
			return nil, err
		}
		r.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		done()
		t.log.Warn("application insights: telemetry post failed", "error", err.Error())
		return nil, err
	}
	resp.Body = &endBody{ReadCloser: resp.Body, end: sync.OnceFunc(done)}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		if token != "" {
			t.tokens.forget(token)
		}
		t.log.Warn("application insights: ingestion refused the credentials", "status", resp.StatusCode)
	default:
		t.log.Warn("application insights: ingestion did not accept the whole batch", "status", resp.StatusCode)
	}
	return resp, nil
}

// endBody releases a post's context when its body is closed.
type endBody struct {
	io.ReadCloser
	end func()
}

func (b *endBody) Close() error {
	err := b.ReadCloser.Close()
	b.end()
	return err
}

// tokenSource caches the ingestion token and renews it refreshMargin
// before it expires (or at the credential's RefreshOn, when earlier).
type tokenSource struct {
	cred azcore.TokenCredential
	now  func() time.Time

	mu  sync.Mutex // held across GetToken: one request at a time
	tok azcore.AccessToken
}

func newTokenSource(cred azcore.TokenCredential) *tokenSource {
	return &tokenSource{cred: cred, now: time.Now}
}

func (s *tokenSource) token(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.tok.Token != "" && now.Before(s.renewAt()) {
		return s.tok.Token, nil
	}
	ctx, cancel := context.WithTimeout(ctx, tokenTimeout)
	defer cancel()
	tok, err := s.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{IngestionScope}})
	if err == nil && tok.Token == "" {
		err = errors.New("the credential returned an empty token")
	}
	if err != nil {
		if s.tok.Token != "" && now.Before(s.tok.ExpiresOn) {
			return s.tok.Token, nil // still valid: renew on the next post
		}
		return "", fmt.Errorf("appinsights: get ingestion token: %w", err)
	}
	s.tok = tok
	return tok.Token, nil
}

func (s *tokenSource) renewAt() time.Time {
	at := s.tok.ExpiresOn.Add(-refreshMargin)
	if r := s.tok.RefreshOn; !r.IsZero() && r.Before(at) {
		at = r
	}
	return at
}

// forget drops token, refused by the endpoint, so the next post gets a
// new one.
func (s *tokenSource) forget(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok.Token == token {
		s.tok = azcore.AccessToken{}
	}
}

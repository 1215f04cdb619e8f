package appinsights

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// scriptedCredential returns its tokens in turn, or err.
type scriptedCredential struct {
	mu     sync.Mutex
	tokens []azcore.AccessToken
	err    error
	calls  int
}

func (c *scriptedCredential) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.err != nil {
		return azcore.AccessToken{}, c.err
	}
	tok := c.tokens[0]
	if len(c.tokens) > 1 {
		c.tokens = c.tokens[1:]
	}
	return tok, nil
}

func TestTokenSourceRenewal(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		first     azcore.AccessToken
		at        time.Duration // after t0, the second call
		wantFresh bool
	}{
		{"an hour left: cached", azcore.AccessToken{Token: "a", ExpiresOn: t0.Add(time.Hour)}, 30 * time.Minute, false},
		{"just outside the margin: cached", azcore.AccessToken{Token: "a", ExpiresOn: t0.Add(time.Hour)}, 54*time.Minute + 59*time.Second, false},
		{"inside the margin: renewed", azcore.AccessToken{Token: "a", ExpiresOn: t0.Add(time.Hour)}, 55*time.Minute + time.Second, true},
		{"expired: renewed", azcore.AccessToken{Token: "a", ExpiresOn: t0.Add(time.Hour)}, 2 * time.Hour, true},
		{"RefreshOn passed: renewed", azcore.AccessToken{Token: "a", ExpiresOn: t0.Add(time.Hour), RefreshOn: t0.Add(30 * time.Minute)}, 31 * time.Minute, true},
		{"RefreshOn ahead: cached", azcore.AccessToken{Token: "a", ExpiresOn: t0.Add(time.Hour), RefreshOn: t0.Add(30 * time.Minute)}, 29 * time.Minute, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred := &scriptedCredential{tokens: []azcore.AccessToken{tt.first, {Token: "b", ExpiresOn: t0.Add(3 * time.Hour)}}}
			now := t0
			s := newTokenSource(cred)
			s.now = func() time.Time { return now }
			if tok, err := s.token(context.Background()); err != nil || tok != "a" {
				t.Fatalf("first token = %q, %v", tok, err)
			}
			now = t0.Add(tt.at)
			tok, err := s.token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got := tok == "b"; got != tt.wantFresh {
				t.Errorf("second token = %q after %v (credential called %d times), want renewed = %v", tok, tt.at, cred.calls, tt.wantFresh)
			}
		})
	}
}

func TestTokenSourceFailure(t *testing.T) {
	t0 := time.Now()
	cred := &scriptedCredential{tokens: []azcore.AccessToken{{Token: "a", ExpiresOn: t0.Add(4 * time.Minute)}}}
	s := newTokenSource(cred)
	if _, err := s.token(context.Background()); err != nil {
		t.Fatal(err)
	}
	cred.err = errors.New("IMDS unreachable")
	if tok, err := s.token(context.Background()); err != nil || tok != "a" {
		t.Errorf("renewal failed with a valid token cached: got %q, %v; want the cached token", tok, err)
	}
	s.now = func() time.Time { return t0.Add(5 * time.Minute) }
	if _, err := s.token(context.Background()); err == nil || !strings.Contains(err.Error(), "IMDS unreachable") {
		t.Errorf("renewal failed with the token expired: error %v, want the credential's", err)
	}
	cred.err = nil
	cred.tokens = []azcore.AccessToken{{Token: "", ExpiresOn: t0.Add(time.Hour)}}
	if _, err := s.token(context.Background()); err == nil {
		t.Error("an empty token was accepted")
	}
}

// base is a RoundTripper that records the Authorization header it is
// given and answers status.
type base struct {
	mu     sync.Mutex
	status int
	auth   []string
}

func (b *base) RoundTrip(r *http.Request) (*http.Response, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.auth = append(b.auth, r.Header.Get("Authorization"))
	return &http.Response{StatusCode: b.status, Body: io.NopCloser(strings.NewReader("{}")), Header: http.Header{}, Request: r}, nil
}

func TestTransport(t *testing.T) {
	cred := &scriptedCredential{tokens: []azcore.AccessToken{
		{Token: "first", ExpiresOn: time.Now().Add(time.Hour)},
		{Token: "second", ExpiresOn: time.Now().Add(time.Hour)},
	}}
	b := &base{status: http.StatusUnauthorized}
	tr := &transport{base: b, life: context.Background(), host: "dc.example.com", tokens: newTokenSource(cred), log: slog.New(slog.DiscardHandler)}
	post := func(url string) {
		t.Helper()
		req, err := http.NewRequest("POST", url, strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if req.Header.Get("Authorization") != "" {
			t.Error("RoundTrip changed the caller's request")
		}
	}
	post("https://dc.example.com/v2.1/track") // refused: "first" is dropped
	b.status = http.StatusOK
	post("https://dc.example.com/v2.1/track")
	post("https://elsewhere.example.com/v2.1/track") // a redirect target gets no token
	want := []string{"Bearer first", "Bearer second", ""}
	if strings.Join(b.auth, ",") != strings.Join(want, ",") {
		t.Errorf("Authorization headers sent: %q, want %q", b.auth, want)
	}
}

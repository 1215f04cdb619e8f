package blobclient

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/credvault/credvault/internal/emulators"
)

// No test here makes a network call: a transport answers every request.

const (
	accountURL = "https://acct.blob.core.windows.net"
	connStr    = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + emulators.AzuriteKey +
		";BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)

// fakeCred hands out a token, or err.
type fakeCred struct {
	err   error
	calls atomic.Int32
}

func (c *fakeCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.calls.Add(1)
	if c.err != nil {
		return azcore.AccessToken{}, c.err
	}
	return azcore.AccessToken{Token: "fake-token", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// transport is an SDK transport that answers each request itself.
type transport func(r *http.Request) (*http.Response, error)

func (f transport) Do(r *http.Request) (*http.Response, error) { return f(r) }

// answer is a service answer to r, with the error code when not "".
func answer(r *http.Request, status int, code string) *http.Response {
	h := http.Header{}
	if code != "" {
		h.Set("x-ms-error-code", code)
	}
	h.Set("x-ms-request-id", "req-1")
	return &http.Response{
		StatusCode: status, Status: http.StatusText(status), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(strings.NewReader("")), Request: r,
	}
}

// options returns client options that send requests through f, with fast
// retries (maxRetries; -1 for none).
func options(f transport, maxRetries int32) *container.ClientOptions {
	o := &container.ClientOptions{}
	o.Transport = f
	o.Retry = policy.RetryOptions{MaxRetries: maxRetries, RetryDelay: time.Millisecond, MaxRetryDelay: 10 * time.Millisecond}
	return o
}

// checkQuotes fails when msg quotes what it must not.
func checkQuotes(t *testing.T, what, msg string) {
	t.Helper()
	for _, s := range []string{"secret", "sig=", "not-base64", emulators.AzuriteKey, "fake-token", "blobclient"} {
		if strings.Contains(msg, s) {
			t.Errorf("%s: error %q quotes %q", what, msg, s)
		}
	}
}

func TestValidContainerName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"abc", true},
		{"audit", true},
		{"t-0123456789abcdef", true},
		{"a-b-c", true},
		{"123", true},
		{strings.Repeat("a", 63), true},
		{"", false},
		{"ab", false},
		{strings.Repeat("a", 64), false},
		{"-abc", false},
		{"abc-", false},
		{"bad--name", false},
		{"Audit", false},
		{"C", false},
		{"a_b", false},
		{"a.b", false},
		{"a b", false},
		{"aé", false},
		{"a/b", false},
	} {
		err := ValidContainerName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidContainerName(%q) = %v, want ok %v", tc.name, err, tc.ok)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "container name ") {
			t.Errorf("ValidContainerName(%q) = %q, want it to start with \"container name \" (no package prefix)", tc.name, err)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://acct.blob.core.windows.net", "https://acct.blob.core.windows.net"},
		{"https://acct.blob.core.windows.net/c/a", "https://acct.blob.core.windows.net/c/a"},
		{"https://acct.blob.core.windows.net/?sv=2020&sig=secret", "https://acct.blob.core.windows.net/"},
		{"https://user:secret@acct.blob.core.windows.net/c", "https://acct.blob.core.windows.net/c"},
		{"https://acct.blob.core.windows.net/c#secret", "https://acct.blob.core.windows.net/c"},
		{"http://127.0.0.1:10000/devstoreaccount1?sig=secret", "http://127.0.0.1:10000/devstoreaccount1"},
		{"not a url", "not%20a%20url"},
		{"https://[::1", "(unparsable URL)"},
		{"https://acct.blob.core.windows.net/%zz?sig=secret", "(unparsable URL)"},
	} {
		if got := RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestOpen(t *testing.T) {
	t.Run("Accepted", func(t *testing.T) {
		for _, tc := range []struct{ url, container, want string }{
			{accountURL, "audit", accountURL + "/audit"},
			{accountURL + "/", "audit", accountURL + "/audit"},
			{"https://127.0.0.1:10000/devstoreaccount1", "c-1", "https://127.0.0.1:10000/devstoreaccount1/c-1"},
			{"https://127.0.0.1:10000/devstoreaccount1/", "c-1", "https://127.0.0.1:10000/devstoreaccount1/c-1"},
		} {
			c, err := Open(tc.url, tc.container, &fakeCred{}, nil)
			if err != nil {
				t.Errorf("Open(%q, %q): %v", tc.url, tc.container, err)
				continue
			}
			if got := c.URL(); got != tc.want {
				t.Errorf("Open(%q, %q).URL() = %q, want %q", tc.url, tc.container, got, tc.want)
			}
		}
	})
	t.Run("Refused", func(t *testing.T) {
		for _, tc := range []struct {
			name, url, container string
			cred                 azcore.TokenCredential
			want                 string // in the message
		}{
			{"plain http", "http://acct.blob.core.windows.net", "audit", &fakeCred{}, "https only"}, // a bearer token must not travel in clear
			{"no scheme", "acct.blob.core.windows.net", "audit", &fakeCred{}, "not of the form"},
			{"query", accountURL + "/?sig=secret", "audit", &fakeCred{}, "not of the form"},
			{"user info", "https://user:secret@acct.blob.core.windows.net", "audit", &fakeCred{}, "not of the form"},
			{"plain http with query", "http://acct.blob.core.windows.net/?sig=secret", "audit", &fakeCred{}, "not of the form"},
			{"not a URL", "not a url", "audit", &fakeCred{}, "not of the form"},
			{"unparsable", "https://[::1?sig=secret", "audit", &fakeCred{}, "(unparsable URL)"},
			{"empty", "", "audit", &fakeCred{}, "not of the form"},
			{"upper-case container", accountURL, "Audit", &fakeCred{}, "container name"},
			{"double hyphen", accountURL, "bad--name", &fakeCred{}, "container name"},
			{"short container", accountURL, "au", &fakeCred{}, "container name"},
			{"no credential", accountURL, "audit", nil, "no credential"},
		} {
			c, err := Open(tc.url, tc.container, tc.cred, nil)
			if err == nil {
				t.Errorf("Open (%s) = %v, want an error", tc.name, c)
				continue
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open (%s): err = %q, want it to say %q", tc.name, err, tc.want)
			}
			checkQuotes(t, "Open ("+tc.name+")", err.Error())
		}
	})
}

func TestOpenConnectionString(t *testing.T) {
	c, err := OpenConnectionString(connStr, "audit", nil)
	if err != nil {
		t.Fatalf("OpenConnectionString: %v", err)
	}
	if got, want := c.URL(), "http://127.0.0.1:10000/devstoreaccount1/audit"; got != want {
		t.Errorf("URL() = %q, want %q", got, want)
	}
	for _, tc := range []struct{ name, connStr, container, want string }{
		{"garbage", "AccountKey=not-base64!!;Garbage", "audit", "connection string"},
		{"key not base64", "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=not-base64!!;EndpointSuffix=core.windows.net", "audit", "connection string"},
		{"empty", "", "audit", "connection string"},
		{"bad container", connStr, "Audit", "container name"},
	} {
		_, err := OpenConnectionString(tc.connStr, tc.container, nil)
		if err == nil {
			t.Errorf("OpenConnectionString (%s): err = nil, want an error", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("OpenConnectionString (%s): err = %q, want it to say %q", tc.name, err, tc.want)
		}
		checkQuotes(t, "OpenConnectionString ("+tc.name+")", err.Error())
	}
}

// Open and OpenConnectionString copy the options they are given: the
// caller's policies are kept, and its slice is not appended to.
func TestOptionsCopied(t *testing.T) {
	var seen atomic.Int32
	mine := policyFunc(func(req *policy.Request) (*http.Response, error) {
		seen.Add(1)
		return req.Next()
	})
	o := options(func(r *http.Request) (*http.Response, error) { return answer(r, http.StatusOK, ""), nil }, -1)
	o.PerRetryPolicies = make([]policy.Policy, 1, 4)
	o.PerRetryPolicies[0] = mine
	open := map[string]func() (*container.Client, error){
		"Open":                 func() (*container.Client, error) { return Open(accountURL, "audit", &fakeCred{}, o) },
		"OpenConnectionString": func() (*container.Client, error) { return OpenConnectionString(connStr, "audit", o) },
	}
	for name, open := range open {
		seen.Store(0)
		c, err := open()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := c.GetProperties(t.Context(), nil); err != nil {
			t.Fatalf("%s: GetProperties: %v", name, err)
		}
		if seen.Load() != 1 {
			t.Errorf("%s: the caller's policy ran %d times, want 1", name, seen.Load())
		}
		if len(o.PerRetryPolicies) != 1 || o.PerRetryPolicies[:2][1] != nil {
			t.Errorf("%s changed the caller's options: PerRetryPolicies = %v", name, o.PerRetryPolicies[:2])
		}
	}
}

type policyFunc func(*policy.Request) (*http.Response, error)

func (f policyFunc) Do(req *policy.Request) (*http.Response, error) { return f(req) }

// WithTries counts every try of a call, the first and each retry, for the
// clients of both constructors.
func TestWithTries(t *testing.T) {
	for _, tc := range []struct {
		name       string
		failures   int // answered 503 before a 200
		maxRetries int32
		want       int32
		wantErr    bool
	}{
		{"first try", 0, 3, 1, false},
		{"two retries", 2, 3, 3, false},
		{"retries spent", 10, 2, 3, true},
		{"no retries", 10, -1, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int32
			o := options(func(r *http.Request) (*http.Response, error) {
				if int(n.Add(1)) <= tc.failures {
					return answer(r, http.StatusServiceUnavailable, "ServerBusy"), nil
				}
				return answer(r, http.StatusOK, ""), nil
			}, tc.maxRetries)
			for name, c := range map[string]*container.Client{
				"Open":                 must(Open(accountURL, "audit", &fakeCred{}, o)),
				"OpenConnectionString": must(OpenConnectionString(connStr, "audit", o)),
			} {
				n.Store(0)
				ctx, tries := WithTries(t.Context())
				_, err := c.GetProperties(ctx, nil)
				if (err != nil) != tc.wantErr {
					t.Errorf("%s: GetProperties: err = %v, want error %v", name, err, tc.wantErr)
				}
				if got := tries.Load(); got != tc.want {
					t.Errorf("%s: tries = %d, want %d", name, got, tc.want)
				}
				// Without a counter in the context, nothing is counted.
				n.Store(0)
				c.GetProperties(t.Context(), nil)
				if got := tries.Load(); got != tc.want {
					t.Errorf("%s: a call without WithTries counted: tries = %d, want %d", name, got, tc.want)
				}
			}
		})
	}
}

func must(c *container.Client, err error) *container.Client {
	if err != nil {
		panic(err)
	}
	return c
}

func TestStatusError(t *testing.T) {
	const body = "<Error><Message>body-that-must-not-leak</Message></Error>"
	resp := func(status int, code, requestID string) *azcore.ResponseError {
		req, _ := http.NewRequest(http.MethodPut, accountURL+"/c/a?sig=secret", nil)
		h := http.Header{}
		if code != "" {
			h.Set("x-ms-error-code", code)
		}
		if requestID != "" {
			h.Set("x-ms-request-id", requestID)
		}
		err := runtime.NewResponseErrorWithErrorCode(&http.Response{
			StatusCode: status, Header: h, Request: req, Body: io.NopCloser(strings.NewReader(body)),
		}, code)
		var re *azcore.ResponseError
		if !errors.As(err, &re) {
			t.Fatalf("NewResponseErrorWithErrorCode = %T, want *azcore.ResponseError", err)
		}
		return re
	}
	for _, tc := range []struct {
		name            string
		status          int
		code, requestID string
		want            string
	}{
		{"all", 403, "AuthorizationPermissionMismatch", "req-1", "HTTP 403 AuthorizationPermissionMismatch (request id req-1)"},
		{"no code", 404, "", "req-2", "HTTP 404 (request id req-2)"},
		{"no request id", 503, "ServerBusy", "", "HTTP 503 ServerBusy"},
		{"neither", 500, "", "", "HTTP 500"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			re := resp(tc.status, tc.code, tc.requestID)
			se := NewStatusError(re)
			if se.Status != tc.status || se.Code != tc.code || se.RequestID != tc.requestID {
				t.Errorf("NewStatusError = %+v, want status %d, code %q, request id %q", se, tc.status, tc.code, tc.requestID)
			}
			if got := se.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
			var got *azcore.ResponseError
			if !errors.As(error(se), &got) || got != re {
				t.Errorf("errors.As(%v, *azcore.ResponseError) = %v, want the SDK's error", se, got)
			}
			if strings.Contains(se.Error(), "must-not-leak") {
				t.Errorf("Error() = %q quotes the body", se)
			}
			checkQuotes(t, tc.name, se.Error())
		})
	}
	t.Run("no raw response", func(t *testing.T) {
		se := NewStatusError(&azcore.ResponseError{StatusCode: 409, ErrorCode: "BlobAlreadyExists"})
		if got, want := se.Error(), "HTTP 409 BlobAlreadyExists"; got != want {
			t.Errorf("Error() = %q, want %q", got, want)
		}
	})
}

func TestTransportError(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  *url.Error
		want string
		is   error
	}{
		{
			"refused",
			&url.Error{Op: "Put", URL: accountURL + "/c/a?sig=secret", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}},
			"Put request: dial tcp: " + syscall.ECONNREFUSED.Error(), syscall.ECONNREFUSED,
		},
		{
			"EOF",
			&url.Error{Op: "Get", URL: "https://user:secret@acct.blob.core.windows.net/c?sig=secret", Err: io.EOF},
			"Get request: EOF", io.EOF,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			te := &TransportError{Err: tc.err}
			if got := te.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
			checkQuotes(t, tc.name, te.Error())
			if !errors.Is(te, tc.is) {
				t.Errorf("errors.Is(%v, %v) = false, want true", te, tc.is)
			}
			var ue *url.Error
			if !errors.As(error(te), &ue) || ue != tc.err {
				t.Errorf("errors.As(%v, *url.Error) = %v, want the *url.Error", te, ue)
			}
		})
	}
}

func TestTokenError(t *testing.T) {
	noIdentity := errors.New("no managed identity")
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name      string
		ctx       context.Context
		err       error
		wantToken bool // a *TokenError
	}{
		{"token", context.Background(), nil, false},
		{"no token", context.Background(), noIdentity, true},
		{"canceled", canceled, context.Canceled, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := tokenCredential{&fakeCred{err: tc.err}}.GetToken(tc.ctx, policy.TokenRequestOptions{})
			if tc.err == nil {
				if err != nil || tok.Token != "fake-token" {
					t.Fatalf("GetToken = %q, %v; want the credential's token", tok.Token, err)
				}
				return
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("GetToken: err = %v, want it to wrap %v", err, tc.err)
			}
			te, ok := errors.AsType[*TokenError](err)
			if ok != tc.wantToken {
				t.Fatalf("GetToken: err = %#v, want a *TokenError: %v", err, tc.wantToken)
			}
			if ok && te.Error() != "get token: "+tc.err.Error() {
				t.Errorf("Error() = %q, want %q", te, "get token: "+tc.err.Error())
			}
		})
	}
	// Through a client: the call fails with the *TokenError, without a
	// request sent, and the credential is asked once.
	t.Run("client", func(t *testing.T) {
		var sent atomic.Int32
		o := options(func(r *http.Request) (*http.Response, error) {
			sent.Add(1)
			return answer(r, http.StatusOK, ""), nil
		}, 3)
		cred := &fakeCred{err: noIdentity}
		c, err := Open(accountURL, "audit", cred, o)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.GetProperties(t.Context(), nil)
		if _, ok := errors.AsType[*TokenError](err); !ok || !errors.Is(err, noIdentity) {
			t.Errorf("GetProperties without a token: err = %v, want a *TokenError wrapping the credential's", err)
		}
		if sent.Load() != 0 || cred.calls.Load() != 1 {
			t.Errorf("requests sent = %d, credential asked %d times; want 0 and 1", sent.Load(), cred.calls.Load())
		}
	})
}

package blobclient

import (
	"context"
	"fmt"
	"net/url"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// StatusError is a service's error answer, told briefly: the SDK's own
// message holds the whole response, URL and body included. It unwraps to
// the *azcore.ResponseError.
type StatusError struct {
	Status    int    // HTTP status code
	Code      string // the service's error code (x-ms-error-code), if any
	RequestID string // x-ms-request-id, if any
	Err       *azcore.ResponseError
}

// NewStatusError tells re briefly.
func NewStatusError(re *azcore.ResponseError) *StatusError {
	e := &StatusError{Status: re.StatusCode, Code: re.ErrorCode, Err: re}
	if re.RawResponse != nil {
		e.RequestID = re.RawResponse.Header.Get("x-ms-request-id")
	}
	return e
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("HTTP %d", e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.RequestID != "" {
		s += " (request id " + e.RequestID + ")"
	}
	return s
}

func (e *StatusError) Unwrap() error { return e.Err }

// TransportError is a request that got no answer, told without its URL
// (a *url.Error's message quotes it, query and all). It unwraps to the
// *url.Error.
type TransportError struct{ Err *url.Error }

func (e *TransportError) Error() string { return e.Err.Op + " request: " + e.Err.Err.Error() }
func (e *TransportError) Unwrap() error { return e.Err }

// TokenError is the failure to get a token from the credential given to
// Open, so that a store can tell it from the network's. It unwraps to the
// credential's error.
type TokenError struct{ Err error }

func (e *TokenError) Error() string { return "get token: " + e.Err.Error() }
func (e *TokenError) Unwrap() error { return e.Err }

// tokenCredential marks its credential's errors as *TokenError, unless the
// call's context has ended (then the error is the context's).
type tokenCredential struct{ azcore.TokenCredential }

func (c tokenCredential) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	t, err := c.TokenCredential.GetToken(ctx, o)
	if err != nil && ctx.Err() == nil {
		err = &TokenError{err}
	}
	return t, err
}

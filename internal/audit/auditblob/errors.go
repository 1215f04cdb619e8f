package auditblob

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
)

var (
	// ErrConflict is wrapped in the error of an Append that would have
	// shared a segment: its blob exists already, or another writer has
	// appended to it.
	ErrConflict = errors.New("segment shared with another writer")
	// ErrAccessDenied is wrapped in the errors of calls that the storage
	// account refused to authorize (HTTP 401, 403) or for which no token
	// could be had: a misconfigured identity or role assignment.
	ErrAccessDenied = errors.New("access denied (check the identity and its role on the storage account)")
)

var (
	errContainerNotFound = errors.New("container not found (misconfigured, or not yet created)")
	errThrottled         = errors.New("throttled or busy")
	errServer            = errors.New("storage service error")
	errInvalidName       = errors.New("invalid segment name")
)

// mapErr is the one place that turns the SDK's and the service's errors
// into this package's. ctx is the call's context; verb and what say what the
// call did to which segment or container. The message carries those, the
// HTTP status, the service's error code and request id, never a body, a
// header or a URL; the SDK's error stays in the chain.
//
//	caller's context canceled         → context.Canceled
//	404 ContainerNotFound             → errContainerNotFound
//	404                               → fs.ErrNotExist
//	409 BlobAlreadyExists, 412        → ErrConflict
//	401, 403, InvalidAuthenticationInfo,
//	    no token                      → ErrAccessDenied
//	408, 429, 503                     → errThrottled
//	other 5xx                         → errServer
//	deadline                          → context.DeadlineExceeded
func mapErr(ctx context.Context, verb, what string, err error) error {
	prefix := fmt.Sprintf("auditblob: %s %s", verb, what)
	if errors.Is(context.Cause(ctx), context.Canceled) {
		return fmt.Errorf("%s: %w", prefix, context.Canceled)
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		se := &statusError{status: re.StatusCode, code: re.ErrorCode, err: re}
		if re.RawResponse != nil {
			se.requestID = re.RawResponse.Header.Get("x-ms-request-id")
		}
		var class error
		switch code, s := bloberror.Code(re.ErrorCode), re.StatusCode; {
		case code == bloberror.ContainerNotFound:
			class = errContainerNotFound
		case s == http.StatusNotFound:
			class = fs.ErrNotExist
		case code == bloberror.BlobAlreadyExists:
			return fmt.Errorf("%s: %w: the blob exists already: %w", prefix, ErrConflict, se)
		case code == bloberror.AppendPositionConditionNotMet:
			return fmt.Errorf("%s: %w: the blob is not the length this store wrote: %w", prefix, ErrConflict, se)
		case s == http.StatusPreconditionFailed:
			class = ErrConflict
		case s == http.StatusUnauthorized, s == http.StatusForbidden, code == bloberror.InvalidAuthenticationInfo:
			class = ErrAccessDenied
		case s == http.StatusRequestTimeout, s == http.StatusTooManyRequests, s == http.StatusServiceUnavailable:
			class = errThrottled
		case s >= 500:
			class = errServer
		default:
			return fmt.Errorf("%s: %w", prefix, se)
		}
		return fmt.Errorf("%s: %w: %w", prefix, class, se)
	}
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		return fmt.Errorf("%s: no answer in time: %w", prefix, context.DeadlineExceeded)
	}
	var te *tokenError
	if errors.As(err, &te) {
		return fmt.Errorf("%s: %w: %w", prefix, ErrAccessDenied, te)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// url.Error's message quotes the URL, query and all: keep its cause.
		return fmt.Errorf("%s: %w", prefix, &transportError{err: ue})
	}
	return fmt.Errorf("%s: %w", prefix, err)
}

// statusError is a service's error answer, told briefly: the SDK's own
// message holds the whole response. It unwraps to the *azcore.ResponseError.
type statusError struct {
	status    int
	code      string
	requestID string
	err       *azcore.ResponseError
}

func (e *statusError) Error() string {
	s := fmt.Sprintf("HTTP %d", e.status)
	if e.code != "" {
		s += " " + e.code
	}
	if e.requestID != "" {
		s += " (request id " + e.requestID + ")"
	}
	return s
}

func (e *statusError) Unwrap() error { return e.err }

// transportError is a request that got no answer, told without its URL.
type transportError struct{ err *url.Error }

func (e *transportError) Error() string { return e.err.Op + " request: " + e.err.Err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// tokenCredential marks the errors of getting a token, so that mapErr can
// tell them from the network's.
type tokenCredential struct{ azcore.TokenCredential }

func (c tokenCredential) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	t, err := c.TokenCredential.GetToken(ctx, o)
	if err != nil && ctx.Err() == nil {
		err = &tokenError{err}
	}
	return t, err
}

type tokenError struct{ err error }

func (e *tokenError) Error() string { return "get token: " + e.err.Error() }
func (e *tokenError) Unwrap() error { return e.err }

// validName refuses names Azure cannot hold as given: empty, longer than
// 1024 characters, not UTF-8, with control characters or '\\', ending in '.'
// or '/', or with an empty, "." or ".." element.
func validName(name string) error {
	bad := name == "" || utf8.RuneCountInString(name) > 1024 || !utf8.ValidString(name) ||
		strings.ContainsFunc(name, unicode.IsControl) || strings.ContainsRune(name, '\\') ||
		strings.HasSuffix(name, ".") || strings.HasSuffix(name, "/")
	for elem := range strings.SplitSeq(name, "/") {
		bad = bad || elem == "" || elem == "." || elem == ".."
	}
	if bad {
		return errInvalidName
	}
	return nil
}

// validContainerName applies Azure's rules: 3 to 63 lowercase letters,
// digits and single hyphens, starting and ending with a letter or digit.
func validContainerName(name string) error {
	bad := len(name) < 3 || len(name) > 63 || name[0] == '-' || name[len(name)-1] == '-' || strings.Contains(name, "--")
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("auditblob: container name %q: want 3 to 63 lowercase letters, digits and single hyphens", name)
	}
	return nil
}

// redactURL drops a URL's query and user info, which may hold secrets.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.RawQuery, u.User, u.Fragment = "", nil, ""
	return u.String()
}

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
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/credvault/credvault/internal/blobclient"
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
		se := blobclient.NewStatusError(re)
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
	var te *blobclient.TokenError
	if errors.As(err, &te) {
		return fmt.Errorf("%s: %w: %w", prefix, ErrAccessDenied, te)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// url.Error's message quotes the URL, query and all: keep its cause.
		return fmt.Errorf("%s: %w", prefix, &blobclient.TransportError{Err: ue})
	}
	return fmt.Errorf("%s: %w", prefix, err)
}

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

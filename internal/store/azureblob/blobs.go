// Package azureblob is the Azure Blob Storage adapter of the store.Blobs port:
// one container, one block blob per name, written create-only.
//
// In Azure the adapter authenticates with a token credential (managed
// identity, see New); against Azurite it takes a connection string (see
// NewFromConnectionString). Every call is bounded by Options.CallTimeout, and
// the SDK retries throttling and server errors inside that bound.
package azureblob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/credvault/credvault/internal/blobclient"
	"github.com/credvault/credvault/internal/store"
)

// ErrAccessDenied is wrapped, together with store.ErrUnavailable, in the
// errors of calls that the storage account refused to authorize (HTTP 401 or
// 403) or for which no token could be had: a misconfigured identity or role
// assignment, not the caller's fault.
var ErrAccessDenied = errors.New("azureblob: access denied (check the identity and its role on the storage account)")

// Defaults of Options.
const (
	DefaultCallTimeout = 20 * time.Second
	DefaultMaxRetries  = 4
	DefaultTryTimeout  = 15 * time.Second
	// DefaultMaxRetryDelay caps the wait between two tries; a Retry-After
	// longer than this is not waited for (the call fails ErrUnavailable).
	DefaultMaxRetryDelay = 10 * time.Second

	defaultListLimit = 100
	maxListLimit     = 1000
	maxNameLen       = 1024 // characters, Azure's limit
)

// Options tune an adapter. The zero value is ready to use.
type Options struct {
	// Client holds the SDK's client options. Retry fields left zero get this
	// package's defaults: retry 408, 429, 500, 502, 503 and 504 (honouring
	// Retry-After), DefaultMaxRetries, DefaultTryTimeout and
	// DefaultMaxRetryDelay. The options are copied, never changed.
	Client *azblob.ClientOptions
	// CallTimeout bounds each call, retries included (DefaultCallTimeout
	// when <= 0).
	CallTimeout time.Duration
	// CreateContainer makes the adapter create its container, if missing,
	// before its first call (tests, first start). In Azure the
	// infrastructure creates it.
	CreateContainer bool
}

// Blobs stores each blob as a block blob in one container.
type Blobs struct {
	c           *container.Client
	name        string // the container's
	callTimeout time.Duration

	createContainer bool
	ensureMu        sync.Mutex
	ensured         atomic.Bool
}

var _ store.Blobs = (*Blobs)(nil)

// NewFromConnectionString returns an adapter for the container in the
// account a connection string names (Azurite's, or a shared-key one). It makes
// no network call.
func NewFromConnectionString(connStr, container string, opt Options) (*Blobs, error) {
	c, err := blobclient.OpenConnectionString(connStr, container, clientOptions(opt.Client))
	if err != nil {
		return nil, fmt.Errorf("azureblob: %w", err)
	}
	return newBlobs(c, container, opt), nil
}

// New returns an adapter for the container in the account at accountURL
// (https://<account>.blob.core.windows.net), authenticated with a token
// credential such as a managed identity. It makes no network call; the first
// call asks for the first token.
func New(accountURL, container string, cred azcore.TokenCredential, opt Options) (*Blobs, error) {
	c, err := blobclient.Open(accountURL, container, cred, clientOptions(opt.Client))
	if err != nil {
		return nil, fmt.Errorf("azureblob: %w", err)
	}
	return newBlobs(c, container, opt), nil
}

func newBlobs(c *container.Client, name string, opt Options) *Blobs {
	b := &Blobs{c: c, name: name, callTimeout: opt.CallTimeout, createContainer: opt.CreateContainer}
	if b.callTimeout <= 0 {
		b.callTimeout = DefaultCallTimeout
	}
	return b
}

// clientOptions returns a copy of o with this package's retry defaults in
// the fields left zero.
func clientOptions(o *azblob.ClientOptions) *container.ClientOptions {
	var c azblob.ClientOptions
	if o != nil {
		c = *o
	}
	r := &c.Retry
	if r.MaxRetries == 0 {
		r.MaxRetries = DefaultMaxRetries
	}
	if r.TryTimeout == 0 {
		r.TryTimeout = DefaultTryTimeout
	}
	if r.MaxRetryDelay == 0 {
		r.MaxRetryDelay = DefaultMaxRetryDelay
	}
	if r.StatusCodes == nil && r.ShouldRetry == nil {
		r.StatusCodes = []int{
			http.StatusRequestTimeout,
			http.StatusTooManyRequests,
			http.StatusInternalServerError,
			http.StatusBadGateway,
			http.StatusServiceUnavailable,
			http.StatusGatewayTimeout,
		}
	}
	return (*container.ClientOptions)(&c)
}

// EnsureContainer creates the container if it is missing.
func (b *Blobs) EnsureContainer(ctx context.Context) error {
	ctx, cancel := b.callContext(ctx)
	defer cancel()
	b.ensureMu.Lock()
	defer b.ensureMu.Unlock()
	return b.ensure(ctx)
}

// ready creates the container, once, before the first call when
// Options.CreateContainer asks for it.
func (b *Blobs) ready(ctx context.Context) error {
	if !b.createContainer || b.ensured.Load() {
		return nil
	}
	b.ensureMu.Lock()
	defer b.ensureMu.Unlock()
	if b.ensured.Load() {
		return nil
	}
	return b.ensure(ctx)
}

// ensure creates the container unless it exists; b.ensureMu is held.
func (b *Blobs) ensure(ctx context.Context) error {
	if _, err := b.c.Create(ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return mapErr(ctx, opEnsure, b.name, err)
	}
	b.ensured.Store(true)
	return nil
}

// callContext bounds one call by the call timeout.
func (b *Blobs) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.callTimeout)
}

// Create writes a new block blob with a single create-only Put Blob
// (If-None-Match: *): ErrConflict when the name exists.
func (b *Blobs) Create(ctx context.Context, name string, data []byte) error {
	if err := validName(name); err != nil {
		return fmt.Errorf("create blob %q: %w", name, err)
	}
	ctx, cancel := b.callContext(ctx)
	defer cancel()
	if err := b.ready(ctx); err != nil {
		return fmt.Errorf("create blob %q: %w", name, err)
	}
	tctx, tries := blobclient.WithTries(ctx)
	_, err := b.c.NewBlockBlobClient(name).Upload(tctx,
		streaming.NopCloser(bytes.NewReader(data)),
		&blockblob.UploadOptions{
			HTTPHeaders: &blob.HTTPHeaders{BlobContentType: to.Ptr("application/octet-stream")},
			AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{
				IfNoneMatch: to.Ptr(azcore.ETagAny),
			}},
		})
	if err == nil {
		return nil
	}
	err = mapErr(ctx, opCreate, name, err)
	if errors.Is(err, store.ErrConflict) && tries.Load() > 1 {
		// An earlier try may have written the blob and lost its answer:
		// then the name holds our bytes, and the Create succeeded.
		if got, rerr := b.read(ctx, name); rerr == nil && bytes.Equal(got, data) {
			return nil
		}
	}
	return err
}

// Read downloads the whole blob: ErrNotFound when it does not exist.
func (b *Blobs) Read(ctx context.Context, name string) ([]byte, error) {
	if err := validName(name); err != nil {
		return nil, fmt.Errorf("read blob %q: %w", name, err)
	}
	ctx, cancel := b.callContext(ctx)
	defer cancel()
	if err := b.ready(ctx); err != nil {
		return nil, fmt.Errorf("read blob %q: %w", name, err)
	}
	return b.read(ctx, name)
}

func (b *Blobs) read(ctx context.Context, name string) ([]byte, error) {
	resp, err := b.c.NewBlobClient(name).DownloadStream(ctx, nil)
	if err != nil {
		return nil, mapErr(ctx, opRead, name, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if n := resp.ContentLength; n != nil && *n > 0 && *n <= 1<<30 {
		buf.Grow(int(*n))
	}
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return nil, mapErr(ctx, opRead, name, err)
	}
	if n := resp.ContentLength; n != nil && *n != int64(buf.Len()) {
		return nil, mapErr(ctx, opRead, name, fmt.Errorf("body of %d bytes, want %d: %w", buf.Len(), *n, io.ErrUnexpectedEOF))
	}
	return buf.Bytes(), nil
}

// Delete removes the blob and its snapshots; a missing blob is not an error.
func (b *Blobs) Delete(ctx context.Context, name string) error {
	if err := validName(name); err != nil {
		return fmt.Errorf("delete blob %q: %w", name, err)
	}
	ctx, cancel := b.callContext(ctx)
	defer cancel()
	if err := b.ready(ctx); err != nil {
		return fmt.Errorf("delete blob %q: %w", name, err)
	}
	_, err := b.c.NewBlobClient(name).Delete(ctx, &blob.DeleteOptions{
		DeleteSnapshots: to.Ptr(blob.DeleteSnapshotsOptionTypeInclude),
	})
	if err == nil {
		return nil
	}
	err = mapErr(ctx, opDelete, name, err)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// List returns one page of a flat listing: names that start with prefix, in
// the service's ascending name order, at most limit (default 100, at most
// 1000). The continuation is the service's opaque marker.
func (b *Blobs) List(ctx context.Context, prefix, continuation string, limit int) (store.BlobPage, error) {
	switch {
	case limit <= 0:
		limit = defaultListLimit
	case limit > maxListLimit:
		limit = maxListLimit
	}
	if !validText(prefix) {
		return store.BlobPage{}, nil // no valid name starts with it
	}
	if !validText(continuation) || len(continuation) > 4096 {
		return store.BlobPage{}, fmt.Errorf("list blobs %q: malformed continuation: %w", prefix, store.ErrInvalid)
	}
	ctx, cancel := b.callContext(ctx)
	defer cancel()
	if err := b.ready(ctx); err != nil {
		return store.BlobPage{}, fmt.Errorf("list blobs %q: %w", prefix, err)
	}
	o := &container.ListBlobsFlatOptions{MaxResults: to.Ptr(int32(limit))}
	if prefix != "" {
		o.Prefix = &prefix
	}
	if continuation != "" {
		o.Marker = &continuation
	}
	op := opList
	if continuation != "" {
		op = opListMarker
	}
	// One page: the pager's first fetch starts at the marker.
	resp, err := b.c.NewListBlobsFlatPager(o).NextPage(ctx)
	if err != nil {
		return store.BlobPage{}, mapErr(ctx, op, prefix, err)
	}
	var page store.BlobPage
	if resp.Segment != nil {
		for _, it := range resp.Segment.BlobItems {
			if it == nil || it.Name == nil {
				continue
			}
			info := store.BlobInfo{Name: *it.Name}
			if p := it.Properties; p != nil {
				if p.LastModified != nil {
					info.Modified = *p.LastModified
				}
				if p.ContentLength != nil {
					info.Size = *p.ContentLength
				}
			}
			page.Blobs = append(page.Blobs, info)
		}
	}
	if resp.NextMarker != nil {
		page.Continuation = *resp.NextMarker
	}
	return page, nil
}

// op names what a call was doing, for mapErr and messages.
type op int

const (
	opEnsure op = iota
	opCreate
	opRead
	opDelete
	opList
	opListMarker // a List that passed a continuation
)

func (o op) verb() string {
	switch o {
	case opEnsure:
		return "create container"
	case opCreate:
		return "create blob"
	case opRead:
		return "read blob"
	case opDelete:
		return "delete blob"
	default:
		return "list blobs"
	}
}

// mapErr is the one place that turns the SDK's and the service's errors into
// the store's. ctx is the call's context (bounded by the call timeout); what
// is the blob name, list prefix or container name the call was about. The
// message carries the operation, what, the HTTP status, the service's error
// code and request id, never a body, header or URL query.
//
//	caller's context canceled          → context.Canceled (no sentinel)
//	404 ContainerNotFound              → ErrUnavailable (misconfiguration)
//	404                                → ErrNotFound
//	409 BlobAlreadyExists, 412 (create)→ ErrConflict
//	409 ContainerBeingDeleted/Disabled → ErrUnavailable
//	400 on a List with a continuation,
//	400 InvalidResourceName, InvalidUri,
//	    OutOfRangeInput, InvalidQueryParameterValue → ErrInvalid
//	401, 403, 400 InvalidAuthenticationInfo,
//	    no token                       → ErrUnavailable + ErrAccessDenied
//	408, 429, 5xx                      → ErrUnavailable
//	deadline, connection errors        → ErrUnavailable
//	anything else                      → an error with neither
func mapErr(ctx context.Context, o op, what string, err error) error {
	prefix := fmt.Sprintf("%s %q", o.verb(), what)
	if cerr := context.Cause(ctx); errors.Is(cerr, context.Canceled) {
		return fmt.Errorf("%s: %w", prefix, context.Canceled)
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		se := blobclient.NewStatusError(re)
		code := bloberror.Code(re.ErrorCode)
		switch s := re.StatusCode; {
		case code == bloberror.ContainerNotFound:
			return fmt.Errorf("%s: %w: container not found (misconfigured, or not yet created): %w", prefix, store.ErrUnavailable, se)
		case s == http.StatusNotFound:
			return fmt.Errorf("%s: %w: %w", prefix, store.ErrNotFound, se)
		case code == bloberror.ContainerBeingDeleted || code == bloberror.ContainerDisabled:
			return fmt.Errorf("%s: %w: %w", prefix, store.ErrUnavailable, se)
		case o == opCreate && (s == http.StatusConflict || s == http.StatusPreconditionFailed):
			return fmt.Errorf("%s: %w: %w", prefix, store.ErrConflict, se)
		case s == http.StatusUnauthorized || s == http.StatusForbidden || code == bloberror.InvalidAuthenticationInfo:
			return fmt.Errorf("%s: %w: %w: %w", prefix, store.ErrUnavailable, ErrAccessDenied, se)
		case s == http.StatusBadRequest && (o == opListMarker ||
			code == bloberror.InvalidResourceName || code == bloberror.InvalidURI ||
			code == bloberror.OutOfRangeInput || code == bloberror.InvalidQueryParameterValue):
			return fmt.Errorf("%s: %w: %w", prefix, store.ErrInvalid, se)
		case s == http.StatusRequestTimeout || s == http.StatusTooManyRequests || s >= 500:
			return fmt.Errorf("%s: %w: %w", prefix, store.ErrUnavailable, se)
		default:
			return fmt.Errorf("%s: %w", prefix, se)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		return fmt.Errorf("%s: %w: no answer in time: %w", prefix, store.ErrUnavailable, context.DeadlineExceeded)
	}
	var te *blobclient.TokenError
	if errors.As(err, &te) {
		return fmt.Errorf("%s: %w: %w: %w", prefix, store.ErrUnavailable, ErrAccessDenied, te)
	}
	var ue *url.Error
	var ne net.Error
	switch {
	case errors.As(err, &ue):
		// url.Error's message quotes the URL, query and all: keep its cause.
		return fmt.Errorf("%s: %w: %w", prefix, store.ErrUnavailable, &blobclient.TransportError{Err: ue})
	case errors.As(err, &ne), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return fmt.Errorf("%s: %w: %w", prefix, store.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", prefix, err)
}

// validName refuses names Azure cannot hold as given: empty, longer than
// 1024 characters, not UTF-8, with control characters or '\\', ending in '.'
// or '/', or with an empty, "." or ".." segment (which URL handling anywhere
// on the way may fold away).
func validName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty name", store.ErrInvalid)
	case utf8.RuneCountInString(name) > maxNameLen:
		return fmt.Errorf("%w: name longer than %d characters", store.ErrInvalid, maxNameLen)
	case !validText(name) || strings.ContainsRune(name, '\\'):
		return fmt.Errorf("%w: name is not UTF-8, or holds a control character or '\\'", store.ErrInvalid)
	case strings.HasSuffix(name, ".") || strings.HasSuffix(name, "/"):
		return fmt.Errorf("%w: name ends in '.' or '/'", store.ErrInvalid)
	}
	for seg := range strings.SplitSeq(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: name has an empty, \".\" or \"..\" segment", store.ErrInvalid)
		}
	}
	return nil
}

// validText reports whether s is UTF-8 without control characters.
func validText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	return !strings.ContainsFunc(s, unicode.IsControl)
}

// Package auditblob is the Azure Blob Storage adapter of the audit.Store and
// audit.Reader ports: each segment is an append blob in one container
// (DefaultContainer), its name the segment's name.
//
// A Store creates each segment's blob create-only (If-None-Match: *) on its
// first Append and then appends blocks at the offset it has written so far
// (the append-position condition), so that another writer can never
// interleave its bytes with the trail's lines unnoticed: the append fails
// with ErrConflict instead. A block that the SDK retried after its answer was
// lost is recognized (the blob ends with exactly its bytes at that offset)
// and is neither written twice nor reported as a failure.
//
// In Azure the Store authenticates with a token credential (managed
// identity, see New); against Azurite it takes a connection string (see
// NewFromConnectionString). Each call is bounded by Options.Timeout, and
// the SDK retries throttling and server errors inside that bound.
package auditblob

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/blobclient"
)

var (
	_ audit.Store  = (*Store)(nil)
	_ audit.Reader = (*Store)(nil)
)

// Defaults.
const (
	DefaultContainer = "audit"
	DefaultTimeout   = 10 * time.Second

	// maxBlock is the most one Append Block takes (4 MiB; newer service
	// versions take more, Azurite does not).
	maxBlock = 4 << 20
	// maxTracked bounds the segments whose length a Store remembers; the
	// trail appends to one segment at a time and never goes back.
	maxTracked = 256
)

// Options tune a Store. The zero value is ready to use.
type Options struct {
	// Client holds the SDK's client options: transport, retry, and
	// per-call or per-retry policies (telemetry). They are copied, never
	// changed. Retry fields left zero keep the SDK's defaults (3 retries of
	// 408, 429, 500, 502, 503, 504, honouring Retry-After), inside Timeout.
	Client *azblob.ClientOptions
	// Timeout bounds each call, retries included: an Append, one page of
	// Segments, the answer to Open (not the reading of its body, which the
	// caller's context bounds). DefaultTimeout when <= 0.
	Timeout time.Duration
}

// Store keeps segments as append blobs in one container.
type Store struct {
	c       *container.Client
	name    string // the container's
	timeout time.Duration

	mu   sync.Mutex // guards segs and uses
	segs map[string]*segment
	uses uint64
	// Tests lower these.
	maxBlock   int   // maxBlock
	maxTracked int   // maxTracked
	pageSize   int32 // of Segments' listing; 0: the service's (5000)
}

// New returns a Store for the container in the account at accountURL
// (https://<account>.blob.core.windows.net), authenticated with a token
// credential such as a managed identity (role: Storage Blob Data
// Contributor on the container). It makes no network call.
func New(accountURL, containerName string, cred azcore.TokenCredential, o Options) (*Store, error) {
	c, err := blobclient.Open(accountURL, containerName, cred, (*container.ClientOptions)(o.Client))
	if err != nil {
		return nil, fmt.Errorf("auditblob: %w", err)
	}
	return newStore(c, containerName, o), nil
}

// NewFromConnectionString returns a Store for the container in the account
// a connection string names (Azurite's, or a shared-key one). It makes no
// network call.
func NewFromConnectionString(connStr, containerName string, o Options) (*Store, error) {
	c, err := blobclient.OpenConnectionString(connStr, containerName, (*container.ClientOptions)(o.Client))
	if err != nil {
		return nil, fmt.Errorf("auditblob: %w", err)
	}
	return newStore(c, containerName, o), nil
}

func newStore(c *container.Client, name string, o Options) *Store {
	s := &Store{c: c, name: name, timeout: o.Timeout, segs: map[string]*segment{},
		maxBlock: maxBlock, maxTracked: maxTracked}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	return s
}

// EnsureContainer creates the container unless it exists (emulators, first
// runs; in Azure the infrastructure creates it).
func (s *Store) EnsureContainer(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, err := s.c.Create(ctx, nil)
	if err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return mapErr(ctx, "create container", s.name, err)
	}
	return nil
}

// Segments lists every blob in the container, all pages of a flat listing.
func (s *Store) Segments(ctx context.Context) ([]string, error) {
	var o *container.ListBlobsFlatOptions
	if s.pageSize > 0 {
		o = &container.ListBlobsFlatOptions{MaxResults: to.Ptr(s.pageSize)}
	}
	pager := s.c.NewListBlobsFlatPager(o)
	var names []string
	for pager.More() {
		resp, err := s.nextPage(ctx, pager)
		if err != nil {
			return nil, err
		}
		if resp.Segment == nil {
			continue
		}
		for _, it := range resp.Segment.BlobItems {
			if it != nil && it.Name != nil {
				names = append(names, *it.Name)
			}
		}
	}
	return names, nil
}

// nextPage fetches one page of a listing within the timeout.
func (s *Store) nextPage(ctx context.Context, pager *runtime.Pager[container.ListBlobsFlatResponse]) (container.ListBlobsFlatResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := pager.NextPage(ctx)
	if err != nil {
		return resp, mapErr(ctx, "list segments in", s.name, err)
	}
	return resp, nil
}

// errTimeout is the cause of an Open that had no answer within the timeout.
var errTimeout = fmt.Errorf("auditblob: %w", context.DeadlineExceeded)

// Open streams the segment's blob; a missing blob is an error wrapping
// fs.ErrNotExist. The body is read under ctx (not Options.Timeout), and a
// read that breaks off resumes where it stopped, as long as the blob is
// unchanged.
func (s *Store) Open(ctx context.Context, segment string) (io.ReadCloser, error) {
	if err := validName(segment); err != nil {
		return nil, fmt.Errorf("auditblob: open %s: %w: %w", segment, fs.ErrNotExist, err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(s.timeout, func() { cancel(errTimeout) })
	resp, err := s.c.NewBlobClient(segment).DownloadStream(ctx, nil)
	if !timer.Stop() && err == nil {
		// The answer came as the time ran out: its body is unreadable.
		resp.Body.Close()
		err = context.Cause(ctx)
	}
	if err != nil {
		err = mapErr(ctx, "open", segment, err)
		cancel(nil)
		return nil, err
	}
	body := resp.NewRetryReader(ctx, &blob.RetryReaderOptions{MaxRetries: 3})
	return &cancelOnClose{ReadCloser: body, cancel: func() { cancel(nil) }}, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel func()
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// Package store defines credvault's two storage ports, the blob store for
// ciphertext and the metadata store for documents, with the errors every
// adapter maps its backend's answers to. The contract suite in storetest is
// run against each adapter; embedded holds the local adapters.
package store

import (
	"context"
	"errors"
	"time"
)

var (
	// ErrNotFound: the blob or document does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: a create-only write found the item already there, or a
	// compare-and-swap found a different ETag.
	ErrConflict = errors.New("store: precondition failed")
	// ErrInvalid: an argument the adapter cannot use, such as a malformed
	// continuation token. Nothing was read or changed.
	ErrInvalid = errors.New("store: invalid argument")
	// ErrUnavailable: the backend could not be reached or answered with a
	// transient failure (timeout, throttling, 5xx). Nothing was changed.
	ErrUnavailable = errors.New("store: backend unavailable")
)

// Blobs holds ciphertext. Names are opaque to the store: they may contain '/'
// and carry no personal data. Blobs are immutable: a name is written once.
type Blobs interface {
	// Create writes a new blob, create-only: ErrConflict when the name exists.
	// When Create returns nil the blob is durable.
	Create(ctx context.Context, name string, data []byte) error
	// Read returns the blob's bytes, or ErrNotFound.
	Read(ctx context.Context, name string) ([]byte, error)
	// Delete removes the blob; deleting a missing blob is not an error.
	Delete(ctx context.Context, name string) error
	// List returns blob names that start with prefix, in ascending name order,
	// at most limit per page (limit <= 0 means an adapter default), resuming
	// after the page whose Continuation is given ("" for the first page).
	List(ctx context.Context, prefix, continuation string, limit int) (BlobPage, error)
}

// BlobInfo is one entry of a blob listing.
type BlobInfo struct {
	Name     string
	Modified time.Time
	Size     int64
}

// BlobPage is one page of a blob listing; Continuation is "" on the last page.
type BlobPage struct {
	Blobs        []BlobInfo
	Continuation string
}

// Item is one metadata document: a JSON body, addressed by partition and id,
// with a kind for listing and an ETag that changes on every write.
type Item struct {
	Partition string // the owner hash, or Domains for deployment-wide documents
	ID        string // unique within the partition
	Kind      string // what the body is: KindSecret, KindKeyring, …
	Body      []byte // a JSON object owned by the caller
	ETag      string // set by the store; opaque
}

// Document kinds and the deployment-wide partition.
const (
	KindSecret     = "secret"
	KindKeyring    = "keyring"
	KindDomain     = "domain"
	KindDeployment = "deployment"

	Domains = "_domains" // the partition of domain and deployment documents
)

// Metadata holds documents. Every write is a compare-and-swap.
type Metadata interface {
	// Get returns the document, or ErrNotFound.
	Get(ctx context.Context, partition, id string) (Item, error)
	// Create writes a new document, create-only: ErrConflict when it exists.
	// It returns the new ETag.
	Create(ctx context.Context, it Item) (etag string, err error)
	// Replace overwrites the document if its ETag is still ifMatch:
	// ErrConflict when it is not, ErrNotFound when the document is gone.
	// It returns the new ETag.
	Replace(ctx context.Context, it Item, ifMatch string) (etag string, err error)
	// Delete removes the document. With ifMatch "" it is unconditional and a
	// missing document is not an error; otherwise a stale ETag is ErrConflict
	// and a missing document ErrNotFound.
	Delete(ctx context.Context, partition, id, ifMatch string) error
	// List returns documents of one kind, in ascending ID order within a
	// partition (ascending partition, then ID, when q.Partition is "").
	List(ctx context.Context, q Query) (Page, error)
}

// Query selects a page of documents.
type Query struct {
	Partition    string // "" means every partition (administration, rotation)
	Kind         string // required
	Limit        int    // <= 0 means an adapter default
	Continuation string // "" for the first page; opaque otherwise
}

// Page is one page of a listing; Continuation is "" on the last page.
type Page struct {
	Items        []Item
	Continuation string
}

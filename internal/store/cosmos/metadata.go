// Package cosmos is the store.Metadata adapter for Azure Cosmos DB for NoSQL,
// through the azcosmos SDK (gateway mode, the only mode of the Go SDK).
//
// All documents live in one container whose partition key path is /pk; the
// partition key value is the item's partition (the owner hash, or
// store.Domains). A document is
//
//	{"id": Item.ID, "pk": Item.Partition, "kind": Item.Kind, "body": Item.Body}
//
// with the caller's JSON object kept under "body" (as JSON: Cosmos DB keeps
// values, not text, and holds numbers as IEEE 754 doubles, so an integer
// beyond 2^53 does not come back exact), and Cosmos DB's own _etag as the
// item's ETag. Every write is a single-document operation:
// create-only, or a replace or delete conditioned on If-Match. The adapter
// uses no transactional batch, no ReadMany and no cross-partition ORDER BY
// (see List for how the cross-partition listing is ordered).
//
// Consistency: the Go SDK does not carry session tokens from writes to later
// reads, so on an account whose default consistency is Session a read may
// be served by a replica that has not seen the last write yet: a Get may
// then miss a document just created, or return the version before the last
// Replace. A compare-and-swap is decided by the write itself and stays safe
// (a stale ETag only costs the caller a retry on ErrConflict). For
// read-your-writes, give the account Strong consistency (single region) or
// Bounded Staleness.
package cosmos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/azcosmos"

	"github.com/credvault/credvault/internal/store"
)

const (
	// DefaultCallTimeout bounds each request to Cosmos DB, retries included,
	// when Options.CallTimeout is zero.
	DefaultCallTimeout = 10 * time.Second

	// PartitionKeyPath is the container's partition key path.
	PartitionKeyPath = "/pk"

	defaultListLimit = 100
	maxListLimit     = 1000
	// drainPageSize is the page size asked for while draining a
	// cross-partition query (see listAll).
	drainPageSize = 1000
	// Cosmos DB's limits on the length, in bytes, of an id and of a
	// partition key value (hash partitioning version 2).
	maxIDBytes        = 1023
	maxPartitionBytes = 2048

	// retry defaults, used where Options.Client leaves them zero
	defaultMaxRetries    = 4
	defaultRetryDelay    = 200 * time.Millisecond
	defaultMaxRetryDelay = 5 * time.Second
)

// Options tunes the adapter. The zero value is ready to use.
type Options struct {
	// Client is handed to azcosmos. Where its Retry options are zero the
	// adapter sets MaxRetries 4, RetryDelay 200 ms, MaxRetryDelay 5 s. The
	// SDK then retries a 429, read or write, after the delay Cosmos DB asks
	// for in x-ms-retry-after-ms or Retry-After (giving up when that delay
	// exceeds MaxRetryDelay). On 500, 502 and 504 it retries reads once and
	// writes never, and after a connection error it retries reads, and
	// writes only when the request provably was not sent: a write that may
	// have been applied is not replayed, where a replay would turn success
	// into ErrConflict. A 503 is not retried in a single-region account.
	Client *azcosmos.ClientOptions
	// CallTimeout bounds each request to Cosmos DB, retries included; zero
	// means DefaultCallTimeout. A listing across partitions makes one
	// request per page of the underlying query.
	CallTimeout time.Duration
}

// Metadata keeps documents in one Cosmos DB container. It is safe for
// concurrent use.
type Metadata struct {
	database, container string
	timeout             time.Duration
	newClient           func() (*azcosmos.Client, error)
	conn                atomic.Pointer[conn]
	drainPage           int32 // page size of cross-partition drains
}

// conn is one SDK client and the container it addresses.
type conn struct {
	client *azcosmos.Client
	items  *azcosmos.ContainerClient
}

// NewWithKey returns a Metadata that authenticates with an account key: for
// the emulator and local use (production accounts have local auth off, see
// New). It makes no network call.
func NewWithKey(endpoint, key, database, container string, opt Options) (*Metadata, error) {
	cred, err := azcosmos.NewKeyCredential(key)
	if err != nil {
		return nil, fmt.Errorf("cosmos metadata: account key: %w", err)
	}
	co := clientOptions(opt.Client)
	return newMetadata(endpoint, database, container, opt, func() (*azcosmos.Client, error) {
		return azcosmos.NewClientWithKey(endpoint, cred, co)
	})
}

// New returns a Metadata that authenticates with Microsoft Entra ID through
// cred (a managed identity in Azure), which needs a Cosmos DB data-plane role
// such as Cosmos DB Built-in Data Contributor on the account. It makes no
// network call.
func New(endpoint string, cred azcore.TokenCredential, database, container string, opt Options) (*Metadata, error) {
	if cred == nil {
		return nil, errors.New("cosmos metadata: no credential")
	}
	if u, err := url.Parse(endpoint); err != nil || u.Scheme != "https" {
		return nil, fmt.Errorf("cosmos metadata: endpoint %q is not https: bearer tokens are sent over TLS only", endpoint)
	}
	co := clientOptions(opt.Client)
	return newMetadata(endpoint, database, container, opt, func() (*azcosmos.Client, error) {
		return azcosmos.NewClient(endpoint, cred, co)
	})
}

func newMetadata(endpoint, database, container string, opt Options, newClient func() (*azcosmos.Client, error)) (*Metadata, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("cosmos metadata: endpoint %q is not an http(s) URL", endpoint)
	}
	if database == "" || container == "" {
		return nil, errors.New("cosmos metadata: database and container names are required")
	}
	m := &Metadata{
		database:  database,
		container: container,
		timeout:   opt.CallTimeout,
		newClient: newClient,
		drainPage: drainPageSize,
	}
	if m.timeout <= 0 {
		m.timeout = DefaultCallTimeout
	}
	c, err := m.dial()
	if err != nil {
		return nil, fmt.Errorf("cosmos metadata: %w", err)
	}
	m.conn.Store(c)
	return m, nil
}

// clientOptions copies o, filling in the retry defaults.
func clientOptions(o *azcosmos.ClientOptions) *azcosmos.ClientOptions {
	var co azcosmos.ClientOptions
	if o != nil {
		co = *o
	}
	if co.Retry.MaxRetries == 0 {
		co.Retry.MaxRetries = defaultMaxRetries
	}
	if co.Retry.RetryDelay == 0 {
		co.Retry.RetryDelay = defaultRetryDelay
	}
	if co.Retry.MaxRetryDelay == 0 {
		co.Retry.MaxRetryDelay = defaultMaxRetryDelay
	}
	return &co
}

func (m *Metadata) dial() (*conn, error) {
	client, err := m.newClient()
	if err != nil {
		return nil, err
	}
	items, err := client.NewContainer(m.database, m.container)
	if err != nil {
		client.Close()
		return nil, err
	}
	return &conn{client: client, items: items}, nil
}

// redial replaces the client c after its first request failed to read the
// account's regions. The SDK would otherwise answer every request with that
// failure, without trying again, for five minutes (its refresh interval):
// a network blip at start-up would take the store down for as long.
func (m *Metadata) redial(c *conn) {
	fresh, err := m.dial()
	if err != nil {
		return
	}
	if m.conn.CompareAndSwap(c, fresh) {
		c.client.Close()
	} else {
		fresh.client.Close()
	}
}

// bootstrapFailed reports whether err is the SDK's failure to read the
// account's regions before a client's first request. The SDK gives it no
// type of its own; TestUnavailableThenBack notices if its text changes.
func bootstrapFailed(err error) bool {
	return strings.Contains(err.Error(), "failed to retrieve account properties")
}

// Close releases the SDK client. The Metadata must not be used afterwards.
func (m *Metadata) Close() {
	m.conn.Load().client.Close()
}

// EnsureContainer creates the database and the container (partition key
// /pk) if they are missing, and checks the container's partition key. It is
// for tests and local use: in Azure they are created with the account.
func (m *Metadata) EnsureContainer(ctx context.Context) error {
	_, err := call(m, ctx, "setup", func(ctx context.Context, c *conn) (struct{}, error) {
		_, err := c.client.CreateDatabase(ctx, azcosmos.DatabaseProperties{ID: m.database}, nil)
		return struct{}{}, err
	})
	if err != nil && !errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("create database %s: %w", m.database, err)
	}
	_, err = call(m, ctx, "setup", func(ctx context.Context, c *conn) (struct{}, error) {
		db, err := c.client.NewDatabase(m.database)
		if err != nil {
			return struct{}{}, err
		}
		_, err = db.CreateContainer(ctx, azcosmos.ContainerProperties{
			ID: m.container,
			PartitionKeyDefinition: azcosmos.PartitionKeyDefinition{
				Kind:    azcosmos.PartitionKeyKindHash,
				Paths:   []string{PartitionKeyPath},
				Version: 2,
			},
		}, nil)
		return struct{}{}, err
	})
	if err != nil && !errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("create container %s/%s: %w", m.database, m.container, err)
	}
	props, err := call(m, ctx, "setup", func(ctx context.Context, c *conn) (*azcosmos.ContainerProperties, error) {
		resp, err := c.items.Read(ctx, nil)
		return resp.ContainerProperties, err
	})
	if err != nil {
		return fmt.Errorf("read container %s/%s: %w", m.database, m.container, err)
	}
	if props == nil || len(props.PartitionKeyDefinition.Paths) != 1 || props.PartitionKeyDefinition.Paths[0] != PartitionKeyPath {
		var paths []string
		if props != nil {
			paths = props.PartitionKeyDefinition.Paths
		}
		return fmt.Errorf("container %s/%s has partition key %v, want [%s]", m.database, m.container, paths, PartitionKeyPath)
	}
	return nil
}

// document is an item as stored in Cosmos DB.
type document struct {
	ID   string          `json:"id"`
	PK   string          `json:"pk"`
	Kind string          `json:"kind"`
	Body json.RawMessage `json:"body"`
	ETag string          `json:"_etag,omitempty"` // set by Cosmos DB
}

func (d *document) item() store.Item {
	return store.Item{Partition: d.PK, ID: d.ID, Kind: d.Kind, Body: d.Body, ETag: d.ETag}
}

// Get returns the document, or ErrNotFound.
func (m *Metadata) Get(ctx context.Context, partition, id string) (store.Item, error) {
	if err := validKey(partition, id); err != nil {
		return store.Item{}, fmt.Errorf("get %s/%s: %w", partition, id, err)
	}
	resp, err := call(m, ctx, "get", func(ctx context.Context, c *conn) (azcosmos.ItemResponse, error) {
		return c.items.ReadItem(ctx, azcosmos.NewPartitionKeyString(partition), id, nil)
	})
	if err != nil {
		return store.Item{}, fmt.Errorf("get %s/%s: %w", partition, id, err)
	}
	var d document
	if err := json.Unmarshal(resp.Value, &d); err != nil {
		return store.Item{}, fmt.Errorf("get %s/%s: undecodable document: %w", partition, id, err)
	}
	if d.ID != id || d.PK != partition {
		return store.Item{}, fmt.Errorf("get %s/%s: cosmos returned document %s/%s", partition, id, d.PK, d.ID)
	}
	if d.ETag == "" {
		d.ETag = string(resp.ETag)
	}
	return d.item(), nil
}

// Create writes a new document, create-only: ErrConflict when it exists.
func (m *Metadata) Create(ctx context.Context, it store.Item) (string, error) {
	doc, err := encode(it)
	if err != nil {
		return "", fmt.Errorf("create %s/%s: %w", it.Partition, it.ID, err)
	}
	resp, err := call(m, ctx, "create", func(ctx context.Context, c *conn) (azcosmos.ItemResponse, error) {
		return c.items.CreateItem(ctx, azcosmos.NewPartitionKeyString(it.Partition), doc, nil)
	})
	if err != nil {
		return "", fmt.Errorf("create %s/%s: %w", it.Partition, it.ID, err)
	}
	return etagOf(resp, "create", it)
}

// Replace overwrites the document if its ETag is still ifMatch, which must
// not be empty: ErrConflict when it is not, ErrNotFound when the document
// is gone.
func (m *Metadata) Replace(ctx context.Context, it store.Item, ifMatch string) (string, error) {
	if ifMatch == "" {
		return "", fmt.Errorf("replace %s/%s: no ETag to match: %w", it.Partition, it.ID, store.ErrInvalid)
	}
	doc, err := encode(it)
	if err != nil {
		return "", fmt.Errorf("replace %s/%s: %w", it.Partition, it.ID, err)
	}
	etag := azcore.ETag(ifMatch)
	resp, err := call(m, ctx, "replace", func(ctx context.Context, c *conn) (azcosmos.ItemResponse, error) {
		return c.items.ReplaceItem(ctx, azcosmos.NewPartitionKeyString(it.Partition), it.ID, doc, &azcosmos.ItemOptions{IfMatchEtag: &etag})
	})
	if err != nil {
		return "", fmt.Errorf("replace %s/%s: %w", it.Partition, it.ID, err)
	}
	return etagOf(resp, "replace", it)
}

// Delete removes the document. With ifMatch "" it is unconditional and a
// missing document is not an error; otherwise a stale ETag is ErrConflict
// and a missing document ErrNotFound.
func (m *Metadata) Delete(ctx context.Context, partition, id, ifMatch string) error {
	if err := validKey(partition, id); err != nil {
		return fmt.Errorf("delete %s/%s: %w", partition, id, err)
	}
	var o *azcosmos.ItemOptions
	if ifMatch != "" {
		etag := azcore.ETag(ifMatch)
		o = &azcosmos.ItemOptions{IfMatchEtag: &etag}
	}
	_, err := call(m, ctx, "delete", func(ctx context.Context, c *conn) (azcosmos.ItemResponse, error) {
		return c.items.DeleteItem(ctx, azcosmos.NewPartitionKeyString(partition), id, o)
	})
	if err != nil && !(ifMatch == "" && errors.Is(err, store.ErrNotFound)) {
		return fmt.Errorf("delete %s/%s: %w", partition, id, err)
	}
	return nil
}

func etagOf(resp azcosmos.ItemResponse, op string, it store.Item) (string, error) {
	if resp.ETag == "" {
		return "", fmt.Errorf("%s %s/%s: cosmos answered without an ETag", op, it.Partition, it.ID)
	}
	return string(resp.ETag), nil
}

// encode checks an item for writing and returns its document.
func encode(it store.Item) ([]byte, error) {
	if err := validKey(it.Partition, it.ID); err != nil {
		return nil, err
	}
	if it.Kind == "" {
		return nil, fmt.Errorf("empty kind: %w", store.ErrInvalid)
	}
	body := strings.TrimLeft(string(it.Body), " \t\r\n")
	if !json.Valid(it.Body) || !strings.HasPrefix(body, "{") {
		return nil, fmt.Errorf("body is not a JSON object: %w", store.ErrInvalid)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // leave the body's <, > and & as the caller wrote them
	if err := enc.Encode(document{ID: it.ID, PK: it.Partition, Kind: it.Kind, Body: it.Body}); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// validKey checks a partition and an id against Cosmos DB's rules: an id
// holds at most 1023 bytes, none of them '/', '\\', '?' or '#'; a partition
// key value at most 2048 bytes.
func validKey(partition, id string) error {
	switch {
	case partition == "":
		return fmt.Errorf("empty partition: %w", store.ErrInvalid)
	case id == "":
		return fmt.Errorf("empty id: %w", store.ErrInvalid)
	case len(partition) > maxPartitionBytes:
		return fmt.Errorf("partition longer than %d bytes: %w", maxPartitionBytes, store.ErrInvalid)
	case len(id) > maxIDBytes:
		return fmt.Errorf("id longer than %d bytes: %w", maxIDBytes, store.ErrInvalid)
	case strings.ContainsAny(id, `/\?#`):
		return fmt.Errorf(`id contains one of / \ ? #, which Cosmos DB refuses: %w`, store.ErrInvalid)
	}
	return nil
}

// call runs one request to Cosmos DB under the call timeout and maps its
// error. It returns when the request ends or the timeout does, whichever is
// first: on a client's first request the SDK reads the account's regions
// without heeding cancellation, retrying for seconds when the endpoint does
// not answer, and that request is then left to end on its own.
func call[T any](m *Metadata, ctx context.Context, op string, fn func(context.Context, *conn) (T, error)) (T, error) {
	c := m.conn.Load()
	cctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn(cctx, c)
		if err != nil && bootstrapFailed(err) {
			m.redial(c)
		}
		done <- result{v, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-cctx.Done():
		select {
		case r = <-done:
		default:
			r.err = cctx.Err()
		}
	}
	if r.err != nil {
		var zero T
		timeout := m.timeout
		if cctx.Err() == nil {
			timeout = 0 // the call had time left: a try timed out in the SDK
		}
		return zero, classify(op, r.err, ctx, timeout)
	}
	return r.v, nil
}

// classify is the adapter's one map from what Cosmos DB, the SDK or the
// network answered to the port's errors. op is "get", "create", "replace",
// "delete", "list" or "setup"; caller is the caller's context, whose end is
// reported as such. The text of Cosmos DB's answer is left out: status,
// substatus and activity id are enough to trace a request, and nothing of a
// document can leak into an error. timeout is the call timeout when it is
// what expired, else 0.
func classify(op string, err error, caller context.Context, timeout time.Duration) error {
	if cerr := caller.Err(); cerr != nil {
		return fmt.Errorf("cosmos: %w", cerr) // the caller gave up: no sentinel, as in the embedded store
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		status, sub, activity := re.StatusCode, "", ""
		if re.RawResponse != nil {
			sub = re.RawResponse.Header.Get("x-ms-substatus")
			activity = re.RawResponse.Header.Get("x-ms-activity-id")
		}
		what := fmt.Sprintf("cosmos answered %d %s", status, http.StatusText(status))
		if sub != "" && sub != "0" {
			what += ", substatus " + sub
		}
		if activity != "" {
			what += ", activity " + activity
		}
		itemOp := op == "get" || op == "replace" || op == "delete"
		switch {
		case status == http.StatusNotFound && sub == "1003":
			return fmt.Errorf("%s: the database or container does not exist", what)
		case status == http.StatusNotFound && itemOp:
			return fmt.Errorf("%s: %w", what, store.ErrNotFound)
		case status == http.StatusNotFound:
			return fmt.Errorf("%s: the database or container does not exist", what)
		case status == http.StatusConflict, status == http.StatusPreconditionFailed:
			return fmt.Errorf("%s: %w", what, store.ErrConflict)
		case status == http.StatusBadRequest, status == http.StatusRequestEntityTooLarge:
			return fmt.Errorf("%s: %w", what, store.ErrInvalid)
		case status == http.StatusUnauthorized, status == http.StatusForbidden:
			return fmt.Errorf("%s: access denied: check the credential and its Cosmos DB data-plane role: %w", what, store.ErrUnavailable)
		case status == http.StatusRequestTimeout, status == http.StatusGone, status == http.StatusTooManyRequests,
			status == 449, status >= 500:
			return fmt.Errorf("%s: %w", what, store.ErrUnavailable)
		default:
			return errors.New(what)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		if timeout == 0 {
			return fmt.Errorf("cosmos: no answer within the client's try timeout: %w", store.ErrUnavailable)
		}
		return fmt.Errorf("cosmos: no answer within %s: %w", timeout, store.ErrUnavailable)
	}
	// Anything else comes from the transport (refused or reset connection,
	// DNS, TLS, the SDK's own per-attempt timeout) or from reading the
	// account's regions, which is the same.
	return fmt.Errorf("cosmos unreachable: %v: %w", err, store.ErrUnavailable)
}

var _ store.Metadata = (*Metadata)(nil)

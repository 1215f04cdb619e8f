package embedded

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/credvault/credvault/internal/store"
)

const (
	defaultListLimit = 100
	maxListLimit     = 1000

	// openTimeout bounds the wait for the database file's lock, so that a
	// second process fails with a clear error instead of hanging.
	openTimeout = time.Second
	// batchDelay is how long bbolt holds a batch open after its first write.
	// A batch closes when this delay ends, not when the previous commit
	// frees the writer lock, so the delay must be long enough for the
	// writers one commit releases to gather in the next batch (hundreds of
	// µs on a busy 2-core machine); a lone writer waits it out in full.
	// bbolt's default, 10ms, would hold a serial writer to 100 writes/s.
	batchDelay = 500 * time.Microsecond
)

var (
	// itemsBucket maps partition NUL id to the item's envelope.
	itemsBucket = []byte("items")
	// kindsBucket indexes items by kind: kind NUL partition NUL id, no value.
	kindsBucket = []byte("kinds")
)

// Metadata stores documents in one bbolt database file. Every write is a
// bbolt transaction with its compare-and-swap inside; concurrent writes share
// a transaction and its fsync (bbolt's Batch). A write is on disk when it
// returns.
type Metadata struct {
	db *bolt.DB
}

// envelope is the stored value of an item.
type envelope struct {
	Kind string          `json:"kind"`
	ETag string          `json:"etag"`
	Body json.RawMessage `json:"body"`
}

// OpenMetadata opens the database file at path, creating it (mode 0600, its
// directory 0700) if needed. Only one process can hold it open.
func OpenMetadata(path string) (*Metadata, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	// The freelist is not written on commit (as etcd runs bbolt): each
	// commit writes and syncs fewer pages, and an open rebuilds the list by
	// scanning the file. Durable PUTs at concurrency 16 went from about
	// 1,000 to 1,300-1,400 per second here.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: openTimeout, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open metadata %s: the file is locked; is another process using it? (%w)", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	db.MaxBatchDelay = batchDelay
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{itemsBucket, kindsBucket} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	return &Metadata{db: db}, nil
}

// Close closes the database file, waiting for transactions in progress.
func (m *Metadata) Close() error {
	return m.db.Close()
}

// Get returns the document, or ErrNotFound.
func (m *Metadata) Get(ctx context.Context, partition, id string) (store.Item, error) {
	if err := ctx.Err(); err != nil {
		return store.Item{}, fmt.Errorf("get %s/%s: %w", partition, id, err)
	}
	key, err := itemKey(partition, id)
	if err != nil {
		return store.Item{}, fmt.Errorf("get %s/%s: %w", partition, id, err)
	}
	it := store.Item{Partition: partition, ID: id}
	err = m.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(itemsBucket).Get(key)
		if v == nil {
			return store.ErrNotFound
		}
		return decodeItem(v, &it) // copies out of the transaction's memory
	})
	if err != nil {
		return store.Item{}, fmt.Errorf("get %s/%s: %w", partition, id, err)
	}
	return it, nil
}

// Create writes a new document, create-only: ErrConflict when it exists.
func (m *Metadata) Create(ctx context.Context, it store.Item) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("create %s/%s: %w", it.Partition, it.ID, err)
	}
	key, val, etag, err := encodeItem(it)
	if err != nil {
		return "", fmt.Errorf("create %s/%s: %w", it.Partition, it.ID, err)
	}
	if err := m.precheck(key, ""); err == nil {
		return "", fmt.Errorf("create %s/%s: %w", it.Partition, it.ID, store.ErrConflict)
	}
	// Batch may run the function more than once: it sets outcome afresh each
	// time, and returns an error only for a failure of bbolt itself, which
	// would roll back the other writes of the batch.
	var outcome error
	err = m.db.Batch(func(tx *bolt.Tx) error {
		outcome = nil
		items := tx.Bucket(itemsBucket)
		if items.Get(key) != nil {
			outcome = store.ErrConflict
			return nil
		}
		if err := items.Put(key, val); err != nil {
			return err
		}
		return tx.Bucket(kindsBucket).Put(kindKey(it.Kind, key), nil)
	})
	if err == nil {
		err = outcome
	}
	if err != nil {
		return "", fmt.Errorf("create %s/%s: %w", it.Partition, it.ID, err)
	}
	return etag, nil
}

// Replace overwrites the document if its ETag is still ifMatch, which must
// not be empty.
func (m *Metadata) Replace(ctx context.Context, it store.Item, ifMatch string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("replace %s/%s: %w", it.Partition, it.ID, err)
	}
	if ifMatch == "" {
		return "", fmt.Errorf("replace %s/%s: no ETag to match", it.Partition, it.ID)
	}
	key, val, etag, err := encodeItem(it)
	if err != nil {
		return "", fmt.Errorf("replace %s/%s: %w", it.Partition, it.ID, err)
	}
	if err := m.precheck(key, ifMatch); err != nil {
		return "", fmt.Errorf("replace %s/%s: %w", it.Partition, it.ID, err)
	}
	var outcome error
	err = m.db.Batch(func(tx *bolt.Tx) error {
		outcome = nil
		items, kinds := tx.Bucket(itemsBucket), tx.Bucket(kindsBucket)
		old, err := current(items, key, ifMatch)
		if err != nil {
			outcome = err
			return nil
		}
		if err := items.Put(key, val); err != nil {
			return err
		}
		if old.Kind != it.Kind {
			if err := kinds.Delete(kindKey(old.Kind, key)); err != nil {
				return err
			}
			return kinds.Put(kindKey(it.Kind, key), nil)
		}
		return nil
	})
	if err == nil {
		err = outcome
	}
	if err != nil {
		return "", fmt.Errorf("replace %s/%s: %w", it.Partition, it.ID, err)
	}
	return etag, nil
}

// Delete removes the document, unconditionally when ifMatch is "".
func (m *Metadata) Delete(ctx context.Context, partition, id, ifMatch string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete %s/%s: %w", partition, id, err)
	}
	key, err := itemKey(partition, id)
	if err != nil {
		return fmt.Errorf("delete %s/%s: %w", partition, id, err)
	}
	switch err := m.precheck(key, ifMatch); {
	case ifMatch == "" && errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("delete %s/%s: %w", partition, id, err)
	}
	var outcome error
	err = m.db.Batch(func(tx *bolt.Tx) error {
		outcome = nil
		items := tx.Bucket(itemsBucket)
		old, err := current(items, key, ifMatch)
		switch {
		case ifMatch == "" && errors.Is(err, store.ErrNotFound):
			return nil
		case err != nil:
			outcome = err
			return nil
		}
		if err := items.Delete(key); err != nil {
			return err
		}
		return tx.Bucket(kindsBucket).Delete(kindKey(old.Kind, key))
	})
	if err == nil {
		err = outcome
	}
	if err != nil {
		return fmt.Errorf("delete %s/%s: %w", partition, id, err)
	}
	return nil
}

// precheck refuses, without a write transaction and its fsync, a write that
// would be refused: it returns what current returns for the committed state.
// The write transaction checks again.
func (m *Metadata) precheck(key []byte, ifMatch string) error {
	return m.db.View(func(tx *bolt.Tx) error {
		_, err := current(tx.Bucket(itemsBucket), key, ifMatch)
		return err
	})
}

// current returns the stored envelope of key, without its body: ErrNotFound
// when there is none, ErrConflict when ifMatch is set and is not its ETag.
func current(items *bolt.Bucket, key []byte, ifMatch string) (envelope, error) {
	v := items.Get(key)
	if v == nil {
		return envelope{}, store.ErrNotFound
	}
	var env struct{ Kind, ETag string }
	if err := json.Unmarshal(v, &env); err != nil {
		return envelope{}, fmt.Errorf("stored envelope: %w", err)
	}
	if ifMatch != "" && env.ETag != ifMatch {
		return envelope{}, store.ErrConflict
	}
	return envelope{Kind: env.Kind, ETag: env.ETag}, nil
}

// List returns one page of the documents of q.Kind, in q.Partition or in
// every partition, ordered by (partition, id). Limit defaults to 100 and is
// at most 1000.
func (m *Metadata) List(ctx context.Context, q store.Query) (store.Page, error) {
	if err := ctx.Err(); err != nil {
		return store.Page{}, fmt.Errorf("list %s %s: %w", q.Partition, q.Kind, err)
	}
	if err := validKey("kind", q.Kind); err != nil {
		return store.Page{}, fmt.Errorf("list %s %s: %w", q.Partition, q.Kind, err)
	}
	limit := q.Limit
	switch {
	case limit <= 0:
		limit = defaultListLimit
	case limit > maxListLimit:
		limit = maxListLimit
	}
	prefix := []byte(q.Kind + "\x00")
	if q.Partition != "" {
		if err := validKey("partition", q.Partition); err != nil {
			return store.Page{}, fmt.Errorf("list %s %s: %w", q.Partition, q.Kind, err)
		}
		prefix = append(prefix, q.Partition+"\x00"...)
	}
	seek, after := prefix, []byte(nil)
	if q.Continuation != "" {
		last, err := decodeContinuation(q.Continuation, q.Partition)
		if err != nil {
			return store.Page{}, fmt.Errorf("list %s %s: %w", q.Partition, q.Kind, err)
		}
		seek = kindKey(q.Kind, last)
		after = seek
	}
	var page store.Page
	err := m.db.View(func(tx *bolt.Tx) error {
		items := tx.Bucket(itemsBucket)
		c := tx.Bucket(kindsBucket).Cursor()
		for k, _ := c.Seek(seek); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if after != nil && bytes.Equal(k, after) {
				continue
			}
			key := k[len(q.Kind)+1:]
			if len(page.Items) == limit {
				last := page.Items[len(page.Items)-1]
				page.Continuation = base64.RawURLEncoding.EncodeToString([]byte(last.Partition + "\x00" + last.ID))
				return nil
			}
			v := items.Get(key)
			if v == nil {
				return fmt.Errorf("kind index names %q, which is missing", key)
			}
			partition, id, _ := strings.Cut(string(key), "\x00")
			it := store.Item{Partition: partition, ID: id}
			if err := decodeItem(v, &it); err != nil {
				return err
			}
			page.Items = append(page.Items, it)
		}
		return nil
	})
	if err != nil {
		return store.Page{}, fmt.Errorf("list %s %s: %w", q.Partition, q.Kind, err)
	}
	return page, nil
}

// decodeContinuation returns the item key a continuation holds, checking that
// it is one List could have returned for the partition.
func decodeContinuation(cont, partition string) ([]byte, error) {
	key, err := base64.RawURLEncoding.DecodeString(cont)
	if err != nil {
		return nil, fmt.Errorf("malformed continuation: %w", store.ErrInvalid)
	}
	p, id, ok := strings.Cut(string(key), "\x00")
	if !ok || validKey("partition", p) != nil || validKey("id", id) != nil || (partition != "" && p != partition) {
		return nil, fmt.Errorf("malformed continuation: %w", store.ErrInvalid)
	}
	return key, nil
}

// encodeItem checks an item for writing and returns its key, its stored value
// and the new ETag in it.
func encodeItem(it store.Item) (key, val []byte, etag string, err error) {
	key, err = itemKey(it.Partition, it.ID)
	if err != nil {
		return nil, nil, "", err
	}
	if err := validKey("kind", it.Kind); err != nil {
		return nil, nil, "", err
	}
	if !json.Valid(it.Body) || bytes.TrimLeft(it.Body, " \t\r\n")[0] != '{' {
		return nil, nil, "", errors.New("body is not a JSON object")
	}
	etag = newETag()
	val, err = json.Marshal(envelope{Kind: it.Kind, ETag: etag, Body: it.Body})
	if err != nil {
		return nil, nil, "", err
	}
	return key, val, etag, nil
}

func decodeItem(v []byte, it *store.Item) error {
	var env envelope
	if err := json.Unmarshal(v, &env); err != nil {
		return fmt.Errorf("stored envelope: %w", err)
	}
	it.Kind, it.ETag, it.Body = env.Kind, env.ETag, env.Body
	return nil
}

// itemKey is partition NUL id: keys sort by partition, then id.
func itemKey(partition, id string) ([]byte, error) {
	if err := validKey("partition", partition); err != nil {
		return nil, err
	}
	if err := validKey("id", id); err != nil {
		return nil, err
	}
	return []byte(partition + "\x00" + id), nil
}

func kindKey(kind string, key []byte) []byte {
	return append([]byte(kind+"\x00"), key...)
}

func validKey(what, s string) error {
	if s == "" {
		return fmt.Errorf("empty %s", what)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("%s contains NUL", what)
	}
	return nil
}

// newETag returns 16 random bytes in hex: unique to one write.
func newETag() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

var _ store.Metadata = (*Metadata)(nil)

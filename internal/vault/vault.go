// Package vault is credvault's service: put, get, list, versions, delete,
// restore and purge of an owner's secrets, and the administrator's listing
// and erase. It knows the storage ports and the key hierarchy, never HTTP or
// an Azure SDK.
package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/store"
)

// Errors the service answers with; httpapi maps them to statuses.
var (
	ErrNotFound     = errors.New("not found")                          // includes another owner's secret
	ErrPrecondition = errors.New("precondition failed")                // If-Match / If-None-Match
	ErrConflict     = errors.New("conflict")                           // the secret's state forbids it
	ErrUnavailable  = errors.New("backend unavailable")                // retry later
	ErrKeyRevoked   = errors.New("encryption key disabled or revoked") // fail closed
	ErrIntegrity    = errors.New("stored data failed verification")    // tampered or damaged
)

// Options configure a Vault; zero fields take the defaults.
type Options struct {
	MaxVersions int              // versions kept per secret; older ones are trimmed. Default 25.
	Now         func() time.Time // clock, for tests
}

// Vault is the credential service.
type Vault struct {
	keys  *keyring.Hierarchy
	blobs store.Blobs
	meta  store.Metadata
	opt   Options
}

// New returns a Vault over the key hierarchy and the two stores.
func New(keys *keyring.Hierarchy, blobs store.Blobs, meta store.Metadata, opt Options) *Vault {
	if opt.MaxVersions <= 0 {
		opt.MaxVersions = 25
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Vault{keys: keys, blobs: blobs, meta: meta, opt: opt}
}

// Secret is a secret version as the API shows it. Value is set only by Get.
type Secret struct {
	Name        string            `json:"name"`
	Version     uint64            `json:"version"`
	Value       json.RawMessage   `json:"value,omitempty"`
	ContentType string            `json:"contentType,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	CreatedAt   time.Time         `json:"createdAt"`
	CreatedBy   string            `json:"createdBy,omitempty"`
	ETag        string            `json:"-"` // the secret document's ETag
	// The keys that sealed this version, for the audit trail: the owner KEK
	// version and the CMK key version above its domain key (Get and Put).
	KEK uint32 `json:"-"`
	CMK string `json:"-"`
}

// Summary is a secret's metadata in a listing: never its value.
type Summary struct {
	Owner       string            `json:"owner,omitempty"` // owner hash, administrator listings only
	Name        string            `json:"name"`
	Version     uint64            `json:"version"`
	Versions    int               `json:"versions"`
	ContentType string            `json:"contentType,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	CreatedAt   time.Time         `json:"createdAt"`
	UpdatedAt   time.Time         `json:"updatedAt"`
	DeletedAt   *time.Time        `json:"deletedAt,omitempty"`
}

// Page is one page of a listing; Continuation is "" on the last page.
type Page struct {
	Items        []Summary `json:"items"`
	Continuation string    `json:"continuation,omitempty"`
}

// secretDoc is the body of a secret's metadata document: every version it
// keeps, oldest first.
type secretDoc struct {
	Name      string       `json:"name"`
	Next      uint64       `json:"next"` // the next version number; never reused
	Versions  []versionDoc `json:"versions"`
	DeletedAt *time.Time   `json:"deletedAt,omitempty"`
	Purging   bool         `json:"purging,omitempty"`
}

type versionDoc struct {
	Version     uint64            `json:"v"`
	Blob        string            `json:"blob"`
	KEK         uint32            `json:"kek"`
	ContentType string            `json:"contentType,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	Created     time.Time         `json:"created"`
	CreatedBy   string            `json:"createdBy,omitempty"`
}

func secretID(name string) string { return "s:" + name }

func (d *secretDoc) latest() *versionDoc {
	if len(d.Versions) == 0 {
		return nil
	}
	return &d.Versions[len(d.Versions)-1]
}

func (d *secretDoc) version(n uint64) *versionDoc {
	if n == 0 {
		return d.latest()
	}
	for i := range d.Versions {
		if d.Versions[i].Version == n {
			return &d.Versions[i]
		}
	}
	return nil
}

// live reports whether the secret can be read: not deleted, not being purged.
func (d *secretDoc) live() bool { return d.DeletedAt == nil && !d.Purging && len(d.Versions) > 0 }

func (d *secretDoc) summary(owner string) Summary {
	l := d.latest()
	s := Summary{Owner: owner, Name: d.Name, Versions: len(d.Versions), DeletedAt: d.DeletedAt}
	if l != nil {
		s.Version, s.ContentType, s.Tags, s.UpdatedAt = l.Version, l.ContentType, l.Tags, l.Created
		s.CreatedAt = d.Versions[0].Created
	}
	return s
}

// readSecret reads a secret document; ErrNotFound when there is none.
func (v *Vault) readSecret(ctx context.Context, ownerHash, name string) (*secretDoc, string, error) {
	it, err := v.meta.Get(ctx, ownerHash, secretID(name))
	if err != nil {
		return nil, "", backend("read metadata", err)
	}
	var d secretDoc
	if err := decode(it, &d); err != nil {
		return nil, "", err
	}
	if d.Name != name {
		return nil, "", fmt.Errorf("secret document of another name: %w", ErrIntegrity)
	}
	return &d, it.ETag, nil
}

func decode(it store.Item, d *secretDoc) error {
	if err := json.Unmarshal(it.Body, d); err != nil || secretID(d.Name) != it.ID {
		return fmt.Errorf("secret document: %w", ErrIntegrity)
	}
	return nil
}

// writeSecret creates (etag "") or replaces the document; it returns the new ETag.
func (v *Vault) writeSecret(ctx context.Context, ownerHash string, d *secretDoc, etag string) (string, error) {
	body, err := json.Marshal(d)
	if err != nil {
		return "", err
	}
	it := store.Item{Partition: ownerHash, ID: secretID(d.Name), Kind: store.KindSecret, Body: body}
	if etag == "" {
		etag, err = v.meta.Create(ctx, it)
	} else {
		etag, err = v.meta.Replace(ctx, it, etag)
	}
	return etag, backend("write metadata", err)
}

// backend turns a store or key error into the service's own, keeping the
// chain for logs. Nil stays nil.
func backend(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound), errors.Is(err, keyring.ErrNoKeyring):
		return fmt.Errorf("%s: %w: %w", what, ErrNotFound, err)
	case errors.Is(err, store.ErrConflict):
		return fmt.Errorf("%s: %w: %w", what, ErrPrecondition, err)
	case errors.Is(err, keyring.ErrRevoked):
		return fmt.Errorf("%s: %w: %w", what, ErrKeyRevoked, err)
	case errors.Is(err, keyring.ErrCorrupt):
		return fmt.Errorf("%s: %w: %w", what, ErrIntegrity, err)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: %w", what, err)
	default:
		return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
	}
}

// etagMatches compares an If-Match value with a stored ETag (strong
// comparison; quotes are optional on either side).
func etagMatches(ifMatch, etag string) bool {
	if strings.HasPrefix(ifMatch, "W/") {
		return false
	}
	return ifMatch == "*" || strings.Trim(ifMatch, `"`) == strings.Trim(etag, `"`)
}

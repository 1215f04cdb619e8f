package keyring

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/credvault/credvault/internal/store"
)

// Options configure a Hierarchy; zero fields take the defaults.
type Options struct {
	// Domains is the number of key domains recorded when the deployment is
	// first set up; afterwards the recorded number wins. Default 16.
	Domains int
	// DocumentTTL bounds how long a read domain or deployment document is
	// trusted before it is read again. Default 1 min.
	DocumentTTL time.Duration
	Cache       *Cache           // default NewCache(CacheOptions{})
	Now         func() time.Time // clock, for tests
}

// Hierarchy is the key tree below the CMK: the deployment record, the key
// domains wrapped by the CMK, and the owner keyrings wrapped by the domains.
// Key Vault sees only domain keys, so its calls grow with domains, never with
// owners or requests.
type Hierarchy struct {
	cmk   Wrapper
	meta  store.Metadata
	cache *Cache
	opt   Options

	mu      sync.Mutex
	dep     *docCache[deployment]
	domains map[int]*docCache[Ring]
}

type docCache[T any] struct {
	val     T
	fetched time.Time
}

// deployment is the body of the deployment document: the recorded number of
// domains, the index key (for owner hashes) and the audit key (for the
// audit trail's hashes), both wrapped by domain 0, whose key the CMK wraps.
type deployment struct {
	Domains int       `json:"domains"`
	Index   Ring      `json:"index"`
	Audit   Ring      `json:"audit"`
	Created time.Time `json:"created"`
}

const deploymentID = "deployment"

// New returns a hierarchy over cmk and meta. It does no I/O: the deployment
// is read (or recorded) on first use.
func New(cmk Wrapper, meta store.Metadata, opt Options) *Hierarchy {
	if opt.Domains <= 0 {
		opt.Domains = 16
	}
	if opt.DocumentTTL <= 0 {
		opt.DocumentTTL = time.Minute
	}
	if opt.Cache == nil {
		opt.Cache = NewCache(CacheOptions{Now: opt.Now})
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Hierarchy{cmk: cmk, meta: meta, cache: opt.Cache, opt: opt, domains: map[int]*docCache[Ring]{}}
}

// Cache returns the cache of unwrapped keys.
func (h *Hierarchy) Cache() *Cache { return h.cache }

// Domains returns the deployment's number of key domains.
func (h *Hierarchy) Domains(ctx context.Context) (int, error) {
	d, err := h.deployment(ctx)
	return d.Domains, err
}

// OwnerHash returns the keyed hash that stands for an owner in storage, blob
// names and administration: HMAC-SHA256 under the deployment's index key,
// 128 bits in hex. The raw owner id is never stored.
func (h *Hierarchy) OwnerHash(ctx context.Context, owner string) (string, error) {
	key, err := h.indexKey(ctx)
	if err != nil {
		return "", err
	}
	defer clear(key)
	return ownerHash(key, owner), nil
}

// ownerHash is HMAC-SHA256(index key, "credvault/v1 owner" || 0x00 || owner),
// first 16 bytes, in hex.
func ownerHash(indexKey []byte, owner string) string {
	m := hmac.New(sha256.New, indexKey)
	m.Write([]byte("credvault/v1 owner\x00"))
	m.Write([]byte(owner))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// PageKey returns the 256-bit key that seals listing continuation tokens:
// HKDF-SHA256 from the deployment's index key with its own label, so every
// instance derives the same key, it changes with the deployment, and a
// token never reveals or stands for the index key. The caller clears it.
func (h *Hierarchy) PageKey(ctx context.Context) ([]byte, error) {
	key, err := h.indexKey(ctx)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return hkdf.Key(sha256.New, key, nil, "credvault/v1 page", 32)
}

func (h *Hierarchy) indexKey(ctx context.Context) ([]byte, error) {
	d, err := h.deployment(ctx)
	if err != nil {
		return nil, err
	}
	key, _, err := h.deploymentKey(ctx, "index", d.Index, indexAAD)
	return key, err
}

// AuditKey returns the audit key, the 256-bit HMAC key of the audit trail's
// owner, caller and name hashes, and its version. It is created on first
// use (a deployment recorded before the audit trail existed gets it then),
// wrapped by domain 0 like the index key, and never leaves the process.
func (h *Hierarchy) AuditKey(ctx context.Context) ([]byte, uint32, error) {
	d, err := h.deployment(ctx)
	if err != nil {
		return nil, 0, err
	}
	if len(d.Audit.Versions) == 0 {
		if err := h.addAuditKey(ctx); err != nil {
			return nil, 0, fmt.Errorf("audit key: %w", err)
		}
		if d, err = h.deployment(ctx); err != nil {
			return nil, 0, err
		}
	}
	return h.deploymentKey(ctx, "audit", d.Audit, auditAAD)
}

// addAuditKey adds the audit key to a deployment record that lacks one.
func (h *Hierarchy) addAuditKey(ctx context.Context) error {
	_, err := h.update(ctx, store.Domains, deploymentID, func(body []byte) ([]byte, error) {
		var doc map[string]json.RawMessage
		var r Ring
		if json.Unmarshal(body, &doc) != nil {
			return nil, fmt.Errorf("deployment record: %w", ErrCorrupt)
		}
		if raw, ok := doc["audit"]; ok && json.Unmarshal(raw, &r) == nil && len(r.Versions) > 0 {
			return nil, nil // another instance added it
		}
		key, err := r.Add(ctx, domainWrapper{h: h, d: 0}, auditAAD, h.opt.Now())
		clear(key)
		if err != nil {
			return nil, err
		}
		if doc["audit"], err = json.Marshal(r); err != nil {
			return nil, err
		}
		return json.Marshal(doc)
	})
	h.mu.Lock()
	h.dep = nil // read again
	h.mu.Unlock()
	return err
}

// deploymentKey unwraps the current version of a key the deployment record
// holds (the index or the audit key), through the cache.
func (h *Hierarchy) deploymentKey(ctx context.Context, label string, r Ring, aad AADFunc) ([]byte, uint32, error) {
	v, ok := r.Current()
	if !ok {
		return nil, 0, fmt.Errorf("deployment %s key: %w", label, ErrCorrupt)
	}
	w := domainWrapper{h: h, d: 0}
	parent, err := w.parentID(ctx, v.Parent)
	if err != nil {
		return nil, 0, err
	}
	key, err := h.cache.Get(ctx, fmt.Sprintf("%s\x00%d\x00%q\x00", label, v.N, v.Parent)+string(v.Wrapped), parent, func(ctx context.Context) ([]byte, error) {
		return v.Unwrap(ctx, w, aad)
	})
	return key, v.N, err
}

func indexAAD(n uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte("credvault/v1 index\x00"), n)
}

func auditAAD(n uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte("credvault/v1 audit\x00"), n)
}

// deployment returns the deployment record, recording it on first use.
func (h *Hierarchy) deployment(ctx context.Context) (deployment, error) {
	h.mu.Lock()
	c := h.dep
	h.mu.Unlock()
	if c != nil && h.opt.Now().Sub(c.fetched) < h.opt.DocumentTTL {
		return c.val, nil
	}
	var d deployment
	_, err := h.readOrCreate(ctx, deploymentID, store.KindDeployment, &d, func() error {
		d = deployment{Domains: h.opt.Domains, Created: h.opt.Now().UTC()}
		key, err := d.Index.Add(ctx, domainWrapper{h: h, d: 0}, indexAAD, h.opt.Now())
		clear(key)
		if err != nil {
			return err
		}
		key, err = d.Audit.Add(ctx, domainWrapper{h: h, d: 0}, auditAAD, h.opt.Now())
		clear(key)
		return err
	})
	if err != nil {
		return deployment{}, fmt.Errorf("deployment record: %w", err)
	}
	if d.Domains <= 0 {
		return deployment{}, fmt.Errorf("deployment record: %d domains: %w", d.Domains, ErrCorrupt)
	}
	h.mu.Lock()
	h.dep = &docCache[deployment]{val: d, fetched: h.opt.Now()}
	h.mu.Unlock()
	return d, nil
}

// domainRing returns domain d's ring, creating the domain on first use. It
// reads the document again when the cached copy is old or lacks version need.
func (h *Hierarchy) domainRing(ctx context.Context, d int, need uint32) (Ring, error) {
	h.mu.Lock()
	c := h.domains[d]
	h.mu.Unlock()
	if c != nil && h.opt.Now().Sub(c.fetched) < h.opt.DocumentTTL {
		if _, ok := c.val.Version(need); need == 0 || ok {
			return c.val, nil
		}
	}
	var r Ring
	_, err := h.readOrCreate(ctx, domainID(d), store.KindDomain, &r, func() error {
		r = Ring{}
		key, err := r.Add(ctx, h.cmk, domainAAD(d), h.opt.Now())
		clear(key)
		return err
	})
	if err != nil {
		return Ring{}, fmt.Errorf("key domain %d: %w", d, err)
	}
	h.mu.Lock()
	h.domains[d] = &docCache[Ring]{val: r, fetched: h.opt.Now()}
	h.mu.Unlock()
	return r, nil
}

func domainID(d int) string { return fmt.Sprintf("domain-%04d", d) }

func domainAAD(d int) AADFunc {
	return func(n uint32) []byte {
		b := binary.BigEndian.AppendUint32([]byte("credvault/v1 domain\x00"), uint32(d))
		return binary.BigEndian.AppendUint32(b, n)
	}
}

// domainKey returns the plaintext key of a domain version, through the cache.
func (h *Hierarchy) domainKey(ctx context.Context, d int, v Version) ([]byte, error) {
	return h.cache.Get(ctx, domainCacheID(d, v), "", func(ctx context.Context) ([]byte, error) {
		return v.Unwrap(ctx, h.cmk, domainAAD(d))
	})
}

// domainCacheID names a domain key version in the cache by everything its
// unwrap binds (domain, version, CMK key id, wrapped bytes), so that a
// document changed in any of them misses the cache and is unwrapped again.
func domainCacheID(d int, v Version) string {
	return fmt.Sprintf("domain\x00%d\x00%d\x00%q\x00", d, v.N, v.Parent) + string(v.Wrapped)
}

// readOrCreate reads a document of the deployment partition into v, or
// creates it with the body that create fills in. A lost creation race reads
// the winner's document.
func (h *Hierarchy) readOrCreate(ctx context.Context, id, kind string, v any, create func() error) (string, error) {
	for range 3 {
		it, err := h.meta.Get(ctx, store.Domains, id)
		if err == nil {
			if err := json.Unmarshal(it.Body, v); err != nil {
				return "", fmt.Errorf("%s: %w", id, ErrCorrupt)
			}
			return it.ETag, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return "", err
		}
		if err := create(); err != nil {
			return "", err
		}
		body, err := json.Marshal(v)
		if err != nil {
			return "", err
		}
		etag, err := h.meta.Create(ctx, store.Item{Partition: store.Domains, ID: id, Kind: kind, Body: body})
		if err == nil {
			return etag, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return "", err
		}
	}
	return "", fmt.Errorf("%s: creation kept conflicting: %w", id, store.ErrConflict)
}

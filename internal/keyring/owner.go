package keyring

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/credvault/credvault/internal/envelope"
	"github.com/credvault/credvault/internal/store"
)

// KeyringID is the id of an owner's keyring document in the owner's partition.
const KeyringID = "keyring"

// Owner is an owner's keyring: the owner KEK versions, wrapped by the key of
// the owner's domain, as read from the owner's keyring document.
type Owner struct {
	Hash   string `json:"-"`
	Domain int    `json:"domain"`
	Ring   Ring   `json:"ring"`
	ETag   string `json:"-"`

	h *Hierarchy
}

// Owner reads an owner's keyring (one point read): ErrNoKeyring when the
// owner has none. Every request reads it before using a cached KEK, so an
// erase is seen at once by every instance.
func (h *Hierarchy) Owner(ctx context.Context, ownerHash string) (*Owner, error) {
	it, err := h.meta.Get(ctx, ownerHash, KeyringID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNoKeyring
	}
	if err != nil {
		return nil, fmt.Errorf("read keyring: %w", err)
	}
	o := &Owner{Hash: ownerHash, ETag: it.ETag, h: h}
	if err := json.Unmarshal(it.Body, o); err != nil || o.Domain < 0 {
		return nil, fmt.Errorf("keyring document: %w", ErrCorrupt)
	}
	return o, nil
}

// CreateOwner returns the owner's keyring, creating it (domain picked from
// the owner hash, first KEK version wrapped by the domain key, no Key Vault
// call once the domain key is cached) when the owner has none.
func (h *Hierarchy) CreateOwner(ctx context.Context, ownerHash string) (*Owner, error) {
	for range 3 {
		o, err := h.Owner(ctx, ownerHash)
		if !errors.Is(err, ErrNoKeyring) {
			return o, err
		}
		n, err := h.Domains(ctx)
		if err != nil {
			return nil, err
		}
		o = &Owner{Hash: ownerHash, Domain: pickDomain(ownerHash, n), h: h}
		key, err := o.Ring.Add(ctx, domainWrapper{h: h, d: o.Domain}, kekAAD(ownerHash), h.opt.Now())
		if err != nil {
			return nil, fmt.Errorf("new keyring: %w", err)
		}
		clear(key)
		body, err := json.Marshal(o)
		if err != nil {
			return nil, err
		}
		o.ETag, err = h.meta.Create(ctx, store.Item{Partition: ownerHash, ID: KeyringID, Kind: store.KindKeyring, Body: body})
		if err == nil {
			return o, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return nil, fmt.Errorf("create keyring: %w", err)
		}
	}
	return nil, fmt.Errorf("create keyring: %w", store.ErrConflict)
}

// Erase deletes the owner's keyring: from that moment nothing of the owner
// decrypts anywhere (crypto-shredding). The owner's KEKs cached here are
// zeroed too.
func (h *Hierarchy) Erase(ctx context.Context, ownerHash string) error {
	if o, err := h.Owner(ctx, ownerHash); err == nil {
		defer func() {
			for _, v := range o.Ring.Versions {
				h.cache.Drop(kekCacheID(ownerHash, v))
			}
		}()
	}
	if err := h.meta.Delete(ctx, ownerHash, KeyringID, ""); err != nil {
		return fmt.Errorf("delete keyring: %w", err)
	}
	return nil
}

// Active returns the KEK version new writes use.
func (o *Owner) Active() uint32 { return o.Ring.Active }

// KEK returns the plaintext of KEK version n; the caller clears it.
func (o *Owner) KEK(ctx context.Context, n uint32) ([]byte, error) {
	v, ok := o.Ring.Version(n)
	if !ok {
		return nil, fmt.Errorf("kek version %d: %w", n, ErrCorrupt)
	}
	w := domainWrapper{h: o.h, d: o.Domain}
	parent, err := w.parentID(ctx, v.Parent)
	if err != nil {
		return nil, err
	}
	return o.h.cache.Get(ctx, kekCacheID(o.Hash, v), parent, func(ctx context.Context) ([]byte, error) {
		return v.Unwrap(ctx, w, kekAAD(o.Hash))
	})
}

// CMKVersion names the CMK key version that wraps the domain key version
// under which KEK version n is wrapped (the last segment of the CMK's key
// id), for the audit trail; "" when it cannot be told without I/O failing.
func (o *Owner) CMKVersion(ctx context.Context, n uint32) string {
	v, ok := o.Ring.Version(n)
	if !ok {
		return ""
	}
	dv, err := domainWrapper{h: o.h, d: o.Domain}.version(ctx, v.Parent)
	if err != nil {
		return ""
	}
	return dv.Parent[strings.LastIndexByte(dv.Parent, '/')+1:]
}

// kekCacheID names a KEK version by everything its unwrap binds (owner,
// version, domain key id, wrapped bytes), like domainCacheID.
func kekCacheID(ownerHash string, v Version) string {
	return fmt.Sprintf("kek\x00%q\x00%d\x00%q\x00", ownerHash, v.N, v.Parent) + string(v.Wrapped)
}

func kekAAD(ownerHash string) AADFunc {
	return func(n uint32) []byte {
		b := append([]byte("credvault/v1 kek\x00"), ownerHash...)
		return binary.BigEndian.AppendUint32(append(b, 0), n)
	}
}

// pickDomain maps an owner hash to a domain: its first 32 bits modulo n.
func pickDomain(ownerHash string, n int) int {
	b, err := hex.DecodeString(ownerHash[:min(8, len(ownerHash))])
	if err != nil || len(b) < 4 {
		return 0
	}
	return int(binary.BigEndian.Uint32(b) % uint32(n))
}

// domainWrapper wraps owner keys under domain d's key with AES-256-GCM,
// binding the domain and its key version into the AAD. Its key ids are
// "domain/<d>/<version>".
type domainWrapper struct {
	h *Hierarchy
	d int
}

var _ Wrapper = domainWrapper{}

func (w domainWrapper) Wrap(ctx context.Context, key, aad []byte) (Wrapped, error) {
	r, err := w.h.domainRing(ctx, w.d, 0)
	if err != nil {
		return Wrapped{}, err
	}
	v, ok := r.Current()
	if !ok {
		return Wrapped{}, fmt.Errorf("key domain %d has no active version: %w", w.d, ErrCorrupt)
	}
	dk, err := w.h.domainKey(ctx, w.d, v)
	if err != nil {
		return Wrapped{}, err
	}
	defer clear(dk)
	b, err := envelope.WrapKey(dk, key, w.aad(aad, v.N), rand.Reader)
	if err != nil {
		return Wrapped{}, err
	}
	return Wrapped{KeyID: fmt.Sprintf("domain/%d/%d", w.d, v.N), Bytes: b}, nil
}

func (w domainWrapper) Unwrap(ctx context.Context, wr Wrapped, aad []byte) ([]byte, error) {
	v, err := w.version(ctx, wr.KeyID)
	if err != nil {
		return nil, err
	}
	dk, err := w.h.domainKey(ctx, w.d, v)
	if err != nil {
		return nil, err
	}
	defer clear(dk)
	key, err := envelope.UnwrapKey(dk, wr.Bytes, w.aad(aad, v.N))
	if err != nil {
		return nil, fmt.Errorf("unwrap under domain %d: %w", w.d, ErrCorrupt)
	}
	return key, nil
}

// parentID is the cache id of the domain key version named by keyID.
func (w domainWrapper) parentID(ctx context.Context, keyID string) (string, error) {
	v, err := w.version(ctx, keyID)
	if err != nil {
		return "", err
	}
	return domainCacheID(w.d, v), nil
}

func (w domainWrapper) version(ctx context.Context, keyID string) (Version, error) {
	var d int
	var n uint32
	if _, err := fmt.Sscanf(keyID, "domain/%d/%d", &d, &n); err != nil || d != w.d || keyID != fmt.Sprintf("domain/%d/%d", d, n) {
		return Version{}, fmt.Errorf("key id of another domain: %w", ErrCorrupt)
	}
	r, err := w.h.domainRing(ctx, d, n)
	if err != nil {
		return Version{}, err
	}
	v, ok := r.Version(n)
	if !ok {
		return Version{}, fmt.Errorf("key domain %d version %d: %w", d, n, ErrCorrupt)
	}
	return v, nil
}

func (w domainWrapper) aad(aad []byte, n uint32) []byte {
	b := append(append([]byte(nil), aad...), "\x00domain\x00"...)
	b = binary.BigEndian.AppendUint32(b, uint32(w.d))
	return binary.BigEndian.AppendUint32(b, n)
}

package keyring

// Rotation of the hierarchy, one level at a time. Every operation is
// idempotent (run twice, or by two instances at once, it ends where one run
// ends) and every write is a compare-and-swap that is read again and retried
// when another writer got there first. Only the domain level calls the CMK;
// owner keyrings and the index key are re-wrapped locally under domain keys.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/credvault/credvault/internal/envelope"
	"github.com/credvault/credvault/internal/store"
)

// CurrentKey is a CMK that can name the key version its new wraps use (both
// CMK adapters are).
type CurrentKey interface {
	CurrentKeyID(ctx context.Context) (string, error)
}

// Result counts what a rotation operation did.
type Result struct {
	Added     int // key versions added
	Rewrapped int // key versions re-wrapped under another parent version
	Retired   int // key versions marked retired
	Destroyed int // retired key versions removed from their ring
	CMKCalls  int // wrap and unwrap calls asked of the CMK (Key Vault)
	// Parents are the domain key versions the re-wrapped document (owner
	// keyring or index key) references afterwards: RewrapOwner, RewrapIndex.
	Parents []uint32
}

// maxCASAttempts bounds the retries of one rotation write that keeps losing
// races; between attempts the writer backs off for a random, growing while.
const maxCASAttempts = 50

// RecordedDomains returns the number of key domains the deployment record
// holds, or 0 when the deployment was never used. Unlike Domains it never
// creates the record.
func (h *Hierarchy) RecordedDomains(ctx context.Context) (int, error) {
	it, err := h.meta.Get(ctx, store.Domains, deploymentID)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("deployment record: %w", err)
	}
	var d deployment
	if err := json.Unmarshal(it.Body, &d); err != nil || d.Domains <= 0 {
		return 0, fmt.Errorf("deployment record: %w", ErrCorrupt)
	}
	return d.Domains, nil
}

// CMKCurrent returns the key id the CMK's new wraps use.
func (h *Hierarchy) CMKCurrent(ctx context.Context) (string, error) {
	c, ok := h.cmk.(CurrentKey)
	if !ok {
		return "", errors.New("keyring: this CMK cannot name its current version")
	}
	id, err := c.CurrentKeyID(ctx)
	if err != nil {
		return "", fmt.Errorf("cmk current version: %w", err)
	}
	return id, nil
}

// Domain reads domain d's ring from the store, not from the cache, and
// refreshes this instance's cached copy with it. A domain no owner ever used
// has no document: store.ErrNotFound.
func (h *Hierarchy) Domain(ctx context.Context, d int) (Ring, error) {
	it, err := h.meta.Get(ctx, store.Domains, domainID(d))
	if err != nil {
		return Ring{}, fmt.Errorf("key domain %d: %w", d, err)
	}
	var r Ring
	if err := json.Unmarshal(it.Body, &r); err != nil {
		return Ring{}, fmt.Errorf("key domain %d: %w", d, ErrCorrupt)
	}
	h.remember(d, r)
	return r, nil
}

// WarmDomain puts every version of domain d's ring r in the cache of
// unwrapped keys (one CMK unwrap for each version not cached yet), so that
// the owner keyrings of the domain can then be worked without the CMK.
func (h *Hierarchy) WarmDomain(ctx context.Context, d int, r Ring) (Result, error) {
	var calls atomic.Int64
	var err error
	for _, v := range r.Versions {
		var key []byte
		if key, err = h.domainKeyCounted(ctx, d, v, &calls); err != nil {
			err = fmt.Errorf("key domain %d version %d: %w", d, v.N, err)
			break
		}
		clear(key)
	}
	return Result{CMKCalls: int(calls.Load())}, err
}

// RewrapDomain moves domain d to the CMK version current names: every
// version of the domain key wrapped under another CMK version is unwrapped
// with that version and wrapped with the current one (two CMK calls per
// version that needs it, none otherwise). No owner keyring and no data is
// touched: the domain keys themselves do not change.
func (h *Hierarchy) RewrapDomain(ctx context.Context, d int, current string) (Result, error) {
	var res Result
	var calls atomic.Int64
	cmk := countingWrapper{w: h.cmk, calls: &calls}
	aad := domainAAD(d)
	// What a lost race would otherwise make us ask the CMK again.
	type rewrap struct {
		from []byte
		to   Wrapped
		key  []byte
	}
	memo := map[uint32]*rewrap{}
	defer func() {
		for _, m := range memo {
			clear(m.key)
		}
	}()
	var written Ring
	wrote, err := h.update(ctx, store.Domains, domainID(d), func(body []byte) ([]byte, error) {
		var r Ring
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, fmt.Errorf("key domain %d: %w", d, ErrCorrupt)
		}
		n := 0
		for i := range r.Versions {
			v := &r.Versions[i]
			if v.Parent == current {
				continue
			}
			m := memo[v.N]
			if m == nil || !bytes.Equal(m.from, v.Wrapped) {
				key, err := v.Unwrap(ctx, cmk, aad)
				if err != nil {
					return nil, fmt.Errorf("key domain %d version %d: %w", d, v.N, err)
				}
				w, err := cmk.Wrap(ctx, key, aad(v.N))
				if err != nil {
					clear(key)
					return nil, fmt.Errorf("key domain %d version %d: %w", d, v.N, err)
				}
				if m != nil {
					clear(m.key)
				}
				m = &rewrap{from: v.Wrapped, to: w, key: key}
				memo[v.N] = m
			}
			v.Parent, v.Wrapped = m.to.KeyID, m.to.Bytes
			n++
		}
		if n == 0 {
			return nil, nil
		}
		res.Rewrapped, written = n, r
		return json.Marshal(r)
	})
	res.CMKCalls = int(calls.Load())
	if err != nil || !wrote {
		res.Rewrapped = 0
		return res, err
	}
	h.remember(d, written)
	// The keys did not change: this instance keeps serving from memory under
	// the new wrapping, without asking the CMK again.
	for _, v := range written.Versions {
		if m := memo[v.N]; m != nil && bytes.Equal(m.to.Bytes, v.Wrapped) {
			h.seed(ctx, domainCacheID(d, v), m.key)
		}
	}
	return res, nil
}

// RotateDomain gives domain d a new key version, wrapped by the CMK (one
// CMK call), when its active version was created before olderThan. New owner
// KEKs are wrapped under it at once; existing ones move with RewrapOwner.
func (h *Hierarchy) RotateDomain(ctx context.Context, d int, olderThan time.Time) (Result, error) {
	var res Result
	var calls atomic.Int64
	cmk := countingWrapper{w: h.cmk, calls: &calls}
	var added *Version
	var key []byte
	defer func() { clear(key) }()
	var written Ring
	wrote, err := h.update(ctx, store.Domains, domainID(d), func(body []byte) ([]byte, error) {
		var r Ring
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, fmt.Errorf("key domain %d: %w", d, ErrCorrupt)
		}
		cur, ok := r.Current()
		if !ok {
			return nil, fmt.Errorf("key domain %d has no active version: %w", d, ErrCorrupt)
		}
		if !cur.Created.Before(olderThan) {
			return nil, nil
		}
		if added != nil && added.N == nextVersion(r) {
			// A lost race changed something else: the key wrapped before
			// still fits.
			r.Versions, r.Active = append(r.Versions, *added), added.N
		} else {
			k, err := r.Add(ctx, cmk, domainAAD(d), h.opt.Now())
			if err != nil {
				return nil, fmt.Errorf("key domain %d: %w", d, err)
			}
			clear(key)
			key = k
			v := r.Versions[len(r.Versions)-1]
			added = &v
		}
		written = r
		return json.Marshal(r)
	})
	res.CMKCalls = int(calls.Load())
	if err != nil || !wrote {
		return res, err
	}
	res.Added = 1
	h.remember(d, written)
	h.seed(ctx, domainCacheID(d, *added), key)
	return res, nil
}

// RetireDomain marks retired every version of domain d other than the
// active one that inUse does not name (inUse: the versions some owner
// keyring or the index key references, from a complete pass over them), and
// destroys (removes from the ring) those already retired when the active
// version was created before destroyBefore. A version in use is never
// retired or destroyed.
func (h *Hierarchy) RetireDomain(ctx context.Context, d int, inUse map[uint32]bool, destroyBefore time.Time) (Result, error) {
	var res Result
	var written Ring
	var gone []Version
	wrote, err := h.update(ctx, store.Domains, domainID(d), func(body []byte) ([]byte, error) {
		var r Ring
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, fmt.Errorf("key domain %d: %w", d, ErrCorrupt)
		}
		retired, destroyed := r.retire(inUse, destroyBefore)
		if retired == 0 && len(destroyed) == 0 {
			return nil, nil
		}
		res.Retired, gone, written = retired, destroyed, r
		return json.Marshal(r)
	})
	if err != nil || !wrote {
		return Result{}, err
	}
	res.Destroyed = len(gone)
	h.remember(d, written)
	for _, v := range gone {
		h.cache.Drop(domainCacheID(d, v))
	}
	return res, nil
}

// KeyringPage is one page of owner keyrings, across every owner.
type KeyringPage struct {
	Owners []*Owner
	// Corrupt names the owner hashes whose keyring document does not decode.
	Corrupt      []string
	Continuation string // "" on the last page
}

// Keyrings returns a page of every owner's keyring (a listing across
// partitions), each with its domain and KEK versions.
func (h *Hierarchy) Keyrings(ctx context.Context, continuation string, limit int) (KeyringPage, error) {
	p, err := h.meta.List(ctx, store.Query{Kind: store.KindKeyring, Limit: limit, Continuation: continuation})
	if err != nil {
		return KeyringPage{}, fmt.Errorf("list keyrings: %w", err)
	}
	out := KeyringPage{Continuation: p.Continuation}
	for _, it := range p.Items {
		if it.ID != KeyringID {
			continue
		}
		o := &Owner{Hash: it.Partition, ETag: it.ETag, h: h}
		if err := json.Unmarshal(it.Body, o); err != nil || o.Domain < 0 {
			out.Corrupt = append(out.Corrupt, it.Partition)
			continue
		}
		out.Owners = append(out.Owners, o)
	}
	return out, nil
}

// RewrapOwner re-wraps the owner's KEK versions that an older version of
// their domain key wraps under the domain's active version: locally, with
// AES (no CMK call once the domain's keys are cached), one compare-and-swap
// for the whole keyring. o is the keyring as listed; nothing is read or
// written when it needs nothing. The KEKs themselves do not change, so no
// secret is rewritten. An erased owner is ErrNoKeyring.
//
// The domain's active version is this instance's copy of the domain ring
// (refreshed by Domain, or read again once older than the document TTL): a
// KEK is never moved to an older domain version than the one it is under.
func (h *Hierarchy) RewrapOwner(ctx context.Context, o *Owner) (Result, error) {
	dr, err := h.ringOf(ctx, o.Domain)
	if err != nil {
		return Result{}, err
	}
	active, ok := dr.Current()
	if !ok {
		return Result{}, fmt.Errorf("key domain %d has no active version: %w", o.Domain, ErrCorrupt)
	}
	if !needsRewrap(o.Ring, o.Domain, active.N) {
		return Result{Parents: parents(o.Ring, o.Domain)}, nil
	}
	var res Result
	var calls atomic.Int64
	var written Ring
	wrote, err := h.update(ctx, o.Hash, KeyringID, func(body []byte) ([]byte, error) {
		doc, err := decodeKeyring(body)
		if err != nil {
			return nil, err
		}
		if doc.Domain != o.Domain {
			return nil, fmt.Errorf("keyring moved from domain %d to %d: %w", o.Domain, doc.Domain, ErrCorrupt)
		}
		n, err := h.rewrapRing(ctx, &doc.Ring, o.Domain, dr, kekAAD(o.Hash), &calls)
		if err != nil {
			return nil, err
		}
		written = doc.Ring
		if n == 0 {
			return nil, nil
		}
		res.Rewrapped = n
		return doc.encode()
	})
	res.CMKCalls = int(calls.Load())
	if errors.Is(err, store.ErrNotFound) {
		return res, ErrNoKeyring
	}
	if err != nil {
		res.Rewrapped = 0
		return res, err
	}
	if !wrote {
		res.Rewrapped = 0
	}
	res.Parents = parents(written, o.Domain)
	return res, nil
}

// RewrapIndex re-wraps the versions of the deployment's keys (the index key
// and the audit key) that an older version of domain 0 wraps under domain
// 0's active version, as RewrapOwner does for an owner. The keys do not
// change, so neither do owner hashes nor the audit trail's hashes.
func (h *Hierarchy) RewrapIndex(ctx context.Context) (Result, error) {
	dr, err := h.ringOf(ctx, 0)
	if err != nil {
		return Result{}, err
	}
	keys := []struct {
		field string
		aad   AADFunc
	}{{"index", indexAAD}, {"audit", auditAAD}}
	var res Result
	var calls atomic.Int64
	var written []Ring
	wrote, err := h.update(ctx, store.Domains, deploymentID, func(body []byte) ([]byte, error) {
		var doc map[string]json.RawMessage
		if json.Unmarshal(body, &doc) != nil {
			return nil, fmt.Errorf("deployment record: %w", ErrCorrupt)
		}
		written, res.Rewrapped = nil, 0
		for _, k := range keys {
			raw, ok := doc[k.field]
			if !ok && k.field == "audit" {
				continue // a record from before the audit trail: AuditKey adds it
			}
			var r Ring
			if json.Unmarshal(raw, &r) != nil {
				return nil, fmt.Errorf("deployment record: %w", ErrCorrupt)
			}
			n, err := h.rewrapRing(ctx, &r, 0, dr, k.aad, &calls)
			if err != nil {
				return nil, fmt.Errorf("%s key: %w", k.field, err)
			}
			written = append(written, r)
			if n == 0 {
				continue
			}
			res.Rewrapped += n
			if doc[k.field], err = json.Marshal(r); err != nil {
				return nil, err
			}
		}
		if res.Rewrapped == 0 {
			return nil, nil
		}
		return json.Marshal(doc)
	})
	res.CMKCalls = int(calls.Load())
	if err != nil {
		res.Rewrapped = 0
		return res, err
	}
	if wrote {
		h.mu.Lock()
		h.dep = nil // read again at next use
		h.mu.Unlock()
	} else {
		res.Rewrapped = 0
	}
	for _, r := range written {
		res.Parents = append(res.Parents, parents(r, 0)...)
	}
	slices.Sort(res.Parents)
	res.Parents = slices.Compact(res.Parents)
	return res, nil
}

// RotateKEK gives the owner a new KEK version, wrapped locally under the
// active version of the owner's domain key, when the active KEK was created
// before olderThan (pass the present to rotate now, as for an incident). New
// writes use it at once; the re-encrypt sweep moves the older versions'
// secrets. An erased owner is ErrNoKeyring.
func (h *Hierarchy) RotateKEK(ctx context.Context, ownerHash string, olderThan time.Time) (Result, error) {
	var calls atomic.Int64
	var added *Version
	wrote, err := h.update(ctx, ownerHash, KeyringID, func(body []byte) ([]byte, error) {
		doc, err := decodeKeyring(body)
		if err != nil {
			return nil, err
		}
		cur, ok := doc.Ring.Current()
		if !ok {
			return nil, fmt.Errorf("keyring has no active version: %w", ErrCorrupt)
		}
		if !cur.Created.Before(olderThan) {
			return nil, nil
		}
		n := nextVersion(doc.Ring)
		if added == nil || added.N != n {
			v, err := h.newKEK(ctx, ownerHash, doc.Domain, n, &calls)
			if err != nil {
				return nil, err
			}
			added = &v
		}
		doc.Ring.Versions, doc.Ring.Active = append(doc.Ring.Versions, *added), n
		return doc.encode()
	})
	res := Result{CMKCalls: int(calls.Load())}
	if errors.Is(err, store.ErrNotFound) {
		return res, ErrNoKeyring
	}
	if err == nil && wrote {
		res.Added = 1
	}
	return res, err
}

// RetireKEK marks retired every KEK version of the owner other than the
// active one that inUse does not name (inUse: the versions the owner's
// secret versions reference, from a complete sweep), and destroys those
// already retired when the active version was created before destroyBefore.
// A version in use is never retired or destroyed. An erased owner is
// ErrNoKeyring.
func (h *Hierarchy) RetireKEK(ctx context.Context, ownerHash string, inUse map[uint32]bool, destroyBefore time.Time) (Result, error) {
	var res Result
	var gone []Version
	wrote, err := h.update(ctx, ownerHash, KeyringID, func(body []byte) ([]byte, error) {
		doc, err := decodeKeyring(body)
		if err != nil {
			return nil, err
		}
		retired, destroyed := doc.Ring.retire(inUse, destroyBefore)
		if retired == 0 && len(destroyed) == 0 {
			return nil, nil
		}
		res.Retired, gone = retired, destroyed
		return doc.encode()
	})
	if errors.Is(err, store.ErrNotFound) {
		return Result{}, ErrNoKeyring
	}
	if err != nil || !wrote {
		return Result{}, err
	}
	res.Destroyed = len(gone)
	for _, v := range gone {
		h.cache.Drop(kekCacheID(ownerHash, v))
	}
	return res, nil
}

// newKEK makes KEK version n of an owner: a random key wrapped under the
// active version of domain d's key, as this instance knows the domain.
func (h *Hierarchy) newKEK(ctx context.Context, ownerHash string, d int, n uint32, calls *atomic.Int64) (Version, error) {
	dr, err := h.ringOf(ctx, d)
	if err != nil {
		return Version{}, err
	}
	dv, ok := dr.Current()
	if !ok {
		return Version{}, fmt.Errorf("key domain %d has no active version: %w", d, ErrCorrupt)
	}
	dk, err := h.domainKeyCounted(ctx, d, dv, calls)
	if err != nil {
		return Version{}, err
	}
	defer clear(dk)
	kek := make([]byte, KeySize)
	if _, err := rand.Read(kek); err != nil {
		return Version{}, fmt.Errorf("new key: %w", err)
	}
	defer clear(kek)
	b, err := envelope.WrapKey(dk, kek, domainWrapper{h: h, d: d}.aad(kekAAD(ownerHash)(n), dv.N), rand.Reader)
	if err != nil {
		return Version{}, err
	}
	return Version{N: n, Parent: domainKeyID(d, dv.N), Wrapped: b, Created: h.opt.Now().UTC()}, nil
}

// rewrapRing re-wraps, in place, every version of ring that a version of
// domain d older than dr's active one wraps, under the active one. aad gives
// the ring's own context, to which the domain wrapper adds the domain's. It
// returns how many versions it re-wrapped.
func (h *Hierarchy) rewrapRing(ctx context.Context, ring *Ring, d int, dr Ring, aad AADFunc, calls *atomic.Int64) (int, error) {
	active, ok := dr.Current()
	if !ok {
		return 0, fmt.Errorf("key domain %d has no active version: %w", d, ErrCorrupt)
	}
	w := domainWrapper{h: h, d: d}
	var newKey []byte
	defer func() { clear(newKey) }()
	n := 0
	for i := range ring.Versions {
		v := &ring.Versions[i]
		pn, ok := parseDomainKeyID(v.Parent, d)
		if !ok {
			return 0, fmt.Errorf("version %d: parent of another domain: %w", v.N, ErrCorrupt)
		}
		if pn >= active.N {
			continue
		}
		old, ok := dr.Version(pn)
		if !ok {
			return 0, fmt.Errorf("version %d: key domain %d version %d is gone: %w", v.N, d, pn, ErrCorrupt)
		}
		oldKey, err := h.domainKeyCounted(ctx, d, old, calls)
		if err != nil {
			return 0, err
		}
		key, err := envelope.UnwrapKey(oldKey, v.Wrapped, w.aad(aad(v.N), pn))
		clear(oldKey)
		if err != nil {
			return 0, fmt.Errorf("version %d under domain %d version %d: %w", v.N, d, pn, ErrCorrupt)
		}
		if newKey == nil {
			if newKey, err = h.domainKeyCounted(ctx, d, active, calls); err != nil {
				clear(key)
				return 0, err
			}
		}
		b, err := envelope.WrapKey(newKey, key, w.aad(aad(v.N), active.N), rand.Reader)
		clear(key)
		if err != nil {
			return 0, err
		}
		v.Parent, v.Wrapped = domainKeyID(d, active.N), b
		n++
	}
	return n, nil
}

// update changes the document partition/id with compare-and-swap: change
// gets its body and returns the new one, or nil to leave it as it is. When
// another writer changed it first, the document is read again and change
// runs again. It reports whether it wrote; a missing document is
// store.ErrNotFound.
func (h *Hierarchy) update(ctx context.Context, partition, id string, change func(body []byte) ([]byte, error)) (bool, error) {
	for attempt := range maxCASAttempts {
		if attempt > 0 {
			if err := casBackoff(ctx, attempt); err != nil {
				return false, err
			}
		}
		it, err := h.meta.Get(ctx, partition, id)
		if err != nil {
			return false, fmt.Errorf("read %s: %w", id, err)
		}
		body, err := change(it.Body)
		if err != nil || body == nil {
			return false, err
		}
		_, err = h.meta.Replace(ctx, store.Item{Partition: partition, ID: id, Kind: it.Kind, Body: body}, it.ETag)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return false, fmt.Errorf("write %s: %w", id, err)
		}
	}
	return false, fmt.Errorf("%s: kept changing under the rotation: %w", id, store.ErrConflict)
}

// casBackoff waits a random time below min(attempt, 20) ms.
func casBackoff(ctx context.Context, attempt int) error {
	t := time.NewTimer(time.Duration(mrand.Int64N(int64(min(attempt, 20)) * int64(time.Millisecond))))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// keyringDoc is an owner's keyring document, keeping any field this version
// does not know.
type keyringDoc struct {
	Domain int
	Ring   Ring
	rest   map[string]json.RawMessage
}

func decodeKeyring(body []byte) (*keyringDoc, error) {
	doc := &keyringDoc{}
	if json.Unmarshal(body, &doc.rest) != nil ||
		json.Unmarshal(doc.rest["domain"], &doc.Domain) != nil ||
		json.Unmarshal(doc.rest["ring"], &doc.Ring) != nil || doc.Domain < 0 {
		return nil, fmt.Errorf("keyring document: %w", ErrCorrupt)
	}
	return doc, nil
}

func (d *keyringDoc) encode() ([]byte, error) {
	ring, err := json.Marshal(d.Ring)
	if err != nil {
		return nil, err
	}
	d.rest["ring"] = ring
	return json.Marshal(d.rest)
}

// retire marks retired every version older than the active one that inUse
// does not name, and removes those already retired when the active version
// was created before destroyBefore. It returns how many it marked and the
// versions it removed.
func (r *Ring) retire(inUse map[uint32]bool, destroyBefore time.Time) (int, []Version) {
	cur, ok := r.Current()
	if !ok {
		return 0, nil
	}
	destroy := cur.Created.Before(destroyBefore)
	retired, gone := 0, []Version(nil)
	keep := make([]Version, 0, len(r.Versions))
	for _, v := range r.Versions {
		switch {
		case v.N >= r.Active || inUse[v.N]:
		case !v.Retired:
			v.Retired = true
			retired++
		case destroy:
			gone = append(gone, v)
			continue
		}
		keep = append(keep, v)
	}
	r.Versions = keep
	return retired, gone
}

func nextVersion(r Ring) uint32 {
	n := uint32(1)
	for _, v := range r.Versions {
		n = max(n, v.N+1)
	}
	return n
}

// needsRewrap reports whether some version of ring is wrapped under a
// version of domain d older than active (or under something unreadable,
// which the re-wrap then reports).
func needsRewrap(ring Ring, d int, active uint32) bool {
	for _, v := range ring.Versions {
		if n, ok := parseDomainKeyID(v.Parent, d); !ok || n < active {
			return true
		}
	}
	return false
}

// parents returns the versions of domain d that wrap ring's versions.
func parents(ring Ring, d int) []uint32 {
	var out []uint32
	for _, v := range ring.Versions {
		if n, ok := parseDomainKeyID(v.Parent, d); ok && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// domainKeyID is the key id of domain d's version n, as domainWrapper names it.
func domainKeyID(d int, n uint32) string { return fmt.Sprintf("domain/%d/%d", d, n) }

// parseDomainKeyID returns the version a key id of domain d names.
func parseDomainKeyID(keyID string, d int) (uint32, bool) {
	var dd int
	var n uint32
	if _, err := fmt.Sscanf(keyID, "domain/%d/%d", &dd, &n); err != nil || dd != d || keyID != domainKeyID(dd, n) {
		return 0, false
	}
	return n, true
}

// domainKeyCounted is domainKey, counting the CMK unwrap a cache miss costs.
func (h *Hierarchy) domainKeyCounted(ctx context.Context, d int, v Version, calls *atomic.Int64) ([]byte, error) {
	return h.cache.Get(ctx, domainCacheID(d, v), "", func(ctx context.Context) ([]byte, error) {
		calls.Add(1)
		return v.Unwrap(ctx, h.cmk, domainAAD(d))
	})
}

// ringOf returns this instance's copy of domain d's ring while it is fresh,
// else reads it. Unlike domainRing it never creates the domain.
func (h *Hierarchy) ringOf(ctx context.Context, d int) (Ring, error) {
	h.mu.Lock()
	c := h.domains[d]
	h.mu.Unlock()
	if c != nil && h.opt.Now().Sub(c.fetched) < h.opt.DocumentTTL {
		return c.val, nil
	}
	return h.Domain(ctx, d)
}

// remember replaces this instance's copy of domain d's ring.
func (h *Hierarchy) remember(d int, r Ring) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.domains[d] = &docCache[Ring]{val: r, fetched: h.opt.Now()}
}

// seed caches key under id, as an unwrap would have (the key is known: it
// was just unwrapped or created here).
func (h *Hierarchy) seed(ctx context.Context, id string, key []byte) {
	k, err := h.cache.Get(ctx, id, "", func(context.Context) ([]byte, error) { return clone(key), nil })
	if err == nil {
		clear(k)
	}
}

// countingWrapper counts the calls asked of a wrapper.
type countingWrapper struct {
	w     Wrapper
	calls *atomic.Int64
}

func (c countingWrapper) Wrap(ctx context.Context, key, aad []byte) (Wrapped, error) {
	c.calls.Add(1)
	return c.w.Wrap(ctx, key, aad)
}

func (c countingWrapper) Unwrap(ctx context.Context, w Wrapped, aad []byte) ([]byte, error) {
	c.calls.Add(1)
	return c.w.Unwrap(ctx, w, aad)
}

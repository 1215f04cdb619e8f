package vault

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"

	"github.com/credvault/credvault/internal/envelope"
	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/store"
)

// ReencryptResult is what one page of an owner's re-encrypt sweep did.
type ReencryptResult struct {
	Examined    int // secret versions looked at
	Reencrypted int // secret versions moved to the active KEK
	Failed      int // secret versions that could not be moved (left as they were)
	// Uncertain counts documents whose state is not known: a write whose
	// outcome was lost, or a document that does not decode. While any is
	// uncertain the KEK versions of the owner must not be retired.
	Uncertain int
	// InUse holds the KEK versions the page's secret versions reference
	// afterwards (those being purged aside).
	InUse []uint32
	// Replaced names the blobs that the page's documents no longer point to:
	// the ciphertext under the old KEK. Delete them (DeleteBlobs) once
	// readers that read a document before the change are done with it; if
	// that never happens, garbage collection removes them.
	Replaced []string
	// Continuation resumes the owner's sweep; "" when it is done.
	Continuation string
}

// ReencryptPage moves one page (up to limit secret documents, in name order,
// from continuation) of an owner's secret versions that are not under the
// owner's active KEK to it: each version's blob is read, opened with its
// KEK, sealed under the active KEK for the same identity, and written as a
// new blob (create-only); then the document is compare-and-swapped to point
// at the new blobs. Soft-deleted secrets are moved too; secrets being purged
// are not. A put, delete, restore or purge that changes a document first
// makes the sweep read it again: nothing is lost, and a new blob for a
// version that vanished is deleted. Plaintext exists only in memory, cleared
// once sealed.
//
// An owner without a keyring (erased) is ErrNotFound. A failing backend
// stops the page with the error: rerun it from the same continuation.
func (v *Vault) ReencryptPage(ctx context.Context, ownerHash, continuation string, limit int) (ReencryptResult, error) {
	res := ReencryptResult{Continuation: continuation}
	ring, err := v.keys.Owner(ctx, ownerHash)
	if err != nil {
		return res, backend("keyring", err)
	}
	p, err := v.meta.List(ctx, store.Query{Partition: ownerHash, Kind: store.KindSecret, Limit: limit, Continuation: continuation})
	if err != nil {
		return res, backend("list metadata", err)
	}
	active := ring.Active()
	kek, err := ring.KEK(ctx, active)
	if err != nil {
		return res, backend("kek", err)
	}
	defer clear(kek)
	s := &sweep{v: v, oh: ownerHash, ring: ring, active: active, kek: kek, res: &res}
	for _, it := range p.Items {
		if err := s.document(ctx, it); err != nil {
			return res, err
		}
	}
	slices.Sort(res.InUse)
	res.Continuation = p.Continuation
	return res, nil
}

// DeleteBlobs deletes blobs no document points to any more (see
// ReencryptResult.Replaced). It returns how many it deleted; a failure leaves
// the rest for garbage collection.
func (v *Vault) DeleteBlobs(ctx context.Context, names []string) (int, error) {
	n := 0
	for _, name := range names {
		if err := v.blobs.Delete(ctx, name); err != nil {
			return n, backend("delete blob", err)
		}
		n++
	}
	return n, nil
}

// sweep is one page of an owner's re-encrypt sweep.
type sweep struct {
	v      *Vault
	oh     string
	ring   *keyring.Owner
	active uint32
	kek    []byte // the active KEK
	res    *ReencryptResult
}

// moved is a version's new blob, sealed from its blob from.
type moved struct{ from, to string }

// document moves the versions of one secret document. It returns an error
// only when the backend fails (the page stops); a version that cannot be
// moved is counted as failed and left under its KEK.
func (s *sweep) document(ctx context.Context, it store.Item) (err error) {
	prepared := map[uint64]moved{} // by version: new blobs not (yet) referenced
	keep := false                  // a write's outcome is unknown: its blobs may be referenced
	defer func() {
		if !keep {
			s.drop(ctx, prepared)
		}
	}()
	failed := map[uint64]bool{} // versions that cannot move
	first := true
	for attempt := range maxPutAttempts {
		var doc *secretDoc
		var etag string
		if first {
			doc, etag = &secretDoc{}, it.ETag
			if decode(it, doc) != nil {
				s.res.Uncertain++
				s.res.Failed++
				return nil
			}
		} else {
			if err := backoff(ctx, attempt); err != nil {
				return err
			}
			if doc, etag, err = s.v.readSecret(ctx, s.oh, secretName(it.ID)); errors.Is(err, ErrNotFound) {
				return nil // purged meanwhile: its blobs went with it
			} else if err != nil {
				if errors.Is(err, ErrIntegrity) {
					s.res.Uncertain++
					s.res.Failed++
					return nil
				}
				return err
			}
		}
		if doc.Purging {
			return nil
		}
		var retry bool
		n := 0
		for i := range doc.Versions {
			vd := &doc.Versions[i]
			if first {
				s.res.Examined++
			}
			if vd.KEK >= s.active || failed[vd.Version] {
				// Under the active KEK, or a newer one than this page's copy
				// of the keyring knows (another run rotated meanwhile).
				continue
			}
			m, ok := prepared[vd.Version]
			if ok && m.from != vd.Blob {
				s.drop(ctx, map[uint64]moved{vd.Version: m}) // sealed from a blob the version no longer has
				delete(prepared, vd.Version)
				ok = false
			}
			if !ok {
				to, err := s.move(ctx, doc.Name, *vd)
				switch {
				case errors.Is(err, store.ErrNotFound) && first:
					retry = true // the blob went with a concurrent trim or purge: read again
					continue
				case errors.Is(err, errUnmovable), errors.Is(err, store.ErrNotFound):
					failed[vd.Version] = true
					continue
				case err != nil:
					return err
				}
				m = moved{from: vd.Blob, to: to}
				prepared[vd.Version] = m
			}
			vd.Blob, vd.KEK = m.to, s.active
			n++
		}
		first = false
		for ver, m := range prepared {
			if doc.version(ver) == nil || doc.version(ver).Blob != m.to {
				s.drop(ctx, map[uint64]moved{ver: m}) // the version vanished
				delete(prepared, ver)
			}
		}
		if retry {
			continue
		}
		if n == 0 {
			s.settle(doc, failed)
			return nil
		}
		_, err := s.v.writeSecret(ctx, s.oh, doc, etag)
		if isRace(err) {
			continue
		}
		if err != nil {
			// It may have landed: keep both the new blobs and the old ones
			// (garbage collection removes whichever is not referenced).
			keep = true
			s.res.Uncertain++
			return err
		}
		s.res.Reencrypted += n
		for _, m := range prepared {
			s.res.Replaced = append(s.res.Replaced, m.from)
		}
		clear(prepared)
		s.settle(doc, failed)
		return nil
	}
	return fmt.Errorf("re-encrypt: too many concurrent writers: %w", ErrUnavailable)
}

// settle records what a document's versions reference once the sweep is
// done with it.
func (s *sweep) settle(doc *secretDoc, failed map[uint64]bool) {
	s.res.Failed += len(failed)
	for _, vd := range doc.Versions {
		if !slices.Contains(s.res.InUse, vd.KEK) {
			s.res.InUse = append(s.res.InUse, vd.KEK)
		}
	}
}

// errUnmovable: a version's ciphertext does not open under its KEK, or its
// KEK is not in the keyring: it stays as it is, and keeps its KEK in use.
var errUnmovable = errors.New("version cannot be re-encrypted")

// move seals a version's value under the active KEK into a new blob and
// returns the blob's name.
func (s *sweep) move(ctx context.Context, name string, vd versionDoc) (string, error) {
	ct, err := s.v.blobs.Read(ctx, vd.Blob)
	if errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	if err != nil {
		return "", backend("read blob", err)
	}
	old, err := s.ring.KEK(ctx, vd.KEK)
	if errors.Is(err, keyring.ErrCorrupt) {
		return "", fmt.Errorf("kek version %d: %w", vd.KEK, errUnmovable)
	}
	if err != nil {
		return "", backend("kek", err)
	}
	id := envelope.Identity{Owner: s.oh, Name: name, Version: vd.Version, KEKVersion: vd.KEK}
	value, err := envelope.Open(old, id, ct)
	clear(old)
	if err != nil {
		return "", fmt.Errorf("open version %d: %w: %w", vd.Version, errUnmovable, err)
	}
	id.KEKVersion = s.active
	sealed, err := envelope.Seal(s.kek, id, value, rand.Reader)
	clear(value)
	if err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	for range 3 {
		blob := blobName(s.oh)
		err = s.v.blobs.Create(ctx, blob, sealed)
		if err == nil {
			return blob, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			// Unknown whether it landed: if it did, it is an orphan for
			// garbage collection.
			return "", backend("write blob", err)
		}
	}
	return "", backend("write blob", err)
}

// drop deletes new blobs that no document will reference.
func (s *sweep) drop(ctx context.Context, ms map[uint64]moved) {
	for _, m := range ms {
		s.v.blobs.Delete(context.WithoutCancel(ctx), m.to) // a failure leaves an orphan for garbage collection
	}
}

// secretName is the name a secret document's id holds.
func secretName(id string) string { return id[len("s:"):] }

package vault

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	mrand "math/rand/v2"
	"time"

	"github.com/credvault/credvault/internal/envelope"
	"github.com/credvault/credvault/internal/keyring"
)

// maxPutAttempts bounds the retries of a write that loses a race to another
// write of the same name (without a precondition of its own); between
// attempts the writer backs off for a random, growing while.
const maxPutAttempts = 100

// Put stores a new version of an owner's secret: blob first (create-only),
// then the metadata document (compare-and-swap). Concurrent puts to one name
// each get their own version; none is lost.
func (v *Vault) Put(ctx context.Context, owner string, req PutRequest) (Secret, error) {
	if err := req.Validate(); err != nil {
		return Secret{}, err
	}
	oh, err := v.keys.OwnerHash(ctx, owner)
	if err != nil {
		return Secret{}, backend("owner hash", err)
	}
	ring, err := v.keys.CreateOwner(ctx, oh)
	if err != nil {
		return Secret{}, backend("keyring", err)
	}
	for attempt := range maxPutAttempts {
		s, err := v.putOnce(ctx, oh, ring, &req)
		if !errors.Is(err, errRace) {
			return s, err
		}
		if err := backoff(ctx, attempt); err != nil {
			return Secret{}, err
		}
	}
	return Secret{}, fmt.Errorf("put: too many concurrent writers: %w", ErrUnavailable)
}

var errRace = errors.New("lost a race with another writer")

// isRace reports whether a compare-and-swap failed because another writer
// changed (or removed) the document since it was read.
func isRace(err error) bool { return errors.Is(err, ErrPrecondition) || errors.Is(err, ErrNotFound) }

func (v *Vault) putOnce(ctx context.Context, oh string, ring *keyring.Owner, req *PutRequest) (Secret, error) {
	doc, etag, err := v.readSecret(ctx, oh, req.Name)
	switch {
	case errors.Is(err, ErrNotFound):
		if req.IfMatch != "" {
			return Secret{}, fmt.Errorf("If-Match on a missing secret: %w", ErrPrecondition)
		}
		doc, etag = &secretDoc{Name: req.Name, Next: 1}, ""
	case err != nil:
		return Secret{}, err
	case doc.DeletedAt != nil || doc.Purging:
		return Secret{}, fmt.Errorf("secret is deleted; restore or purge it first: %w", ErrConflict)
	case req.IfNoneMatch:
		return Secret{}, fmt.Errorf("If-None-Match: secret exists: %w", ErrPrecondition)
	case req.IfMatch != "" && !etagMatches(req.IfMatch, etag):
		return Secret{}, fmt.Errorf("If-Match: %w", ErrPrecondition)
	}

	version, kekVersion := doc.Next, ring.Active()
	kek, err := ring.KEK(ctx, kekVersion)
	if err != nil {
		return Secret{}, backend("kek", err)
	}
	ct, err := envelope.Seal(kek, envelope.Identity{Owner: oh, Name: req.Name, Version: version, KEKVersion: kekVersion}, req.Value, rand.Reader)
	clear(kek)
	if err != nil {
		return Secret{}, fmt.Errorf("seal: %w", err)
	}
	blob := blobName(oh)
	if err := v.blobs.Create(ctx, blob, ct); err != nil {
		return Secret{}, backend("write blob", err)
	}

	vd := versionDoc{Version: version, Blob: blob, KEK: kekVersion, ContentType: req.ContentType,
		Tags: maps.Clone(req.Tags), Created: v.opt.Now().UTC(), CreatedBy: req.By}
	doc.Versions = append(doc.Versions, vd)
	doc.Next = version + 1
	var trimmed []versionDoc
	if extra := len(doc.Versions) - v.opt.MaxVersions; extra > 0 {
		trimmed = append(trimmed, doc.Versions[:extra]...)
		doc.Versions = append([]versionDoc(nil), doc.Versions[extra:]...)
	}
	newETag, err := v.writeSecret(ctx, oh, doc, etag)
	if isRace(err) {
		// Another writer got there first: our blob is not referenced.
		v.dropBlobs(ctx, []versionDoc{vd})
		if req.IfMatch != "" || req.IfNoneMatch {
			return Secret{}, fmt.Errorf("changed concurrently: %w", ErrPrecondition)
		}
		return Secret{}, errRace
	}
	if err != nil {
		// The outcome is unknown (the write may have landed): keep the blob;
		// if nothing points to it, garbage collection removes it later.
		return Secret{}, err
	}
	v.dropBlobs(ctx, trimmed)
	return Secret{Name: req.Name, Version: version, ContentType: vd.ContentType, Tags: vd.Tags,
		CreatedAt: vd.Created, CreatedBy: vd.CreatedBy, ETag: newETag, KEK: kekVersion, CMK: ring.CMKVersion(ctx, kekVersion)}, nil
}

// backoff waits a random time below min(attempt+1, 20) ms.
func backoff(ctx context.Context, attempt int) error {
	t := time.NewTimer(time.Duration(mrand.Int64N(int64(min(attempt+1, 20)) * int64(time.Millisecond))))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("put: %w", ctx.Err())
	}
}

// blobName names a new ciphertext blob: the owner hash, then 128 random bits.
// It carries no personal data.
func blobName(ownerHash string) string {
	b := make([]byte, 16)
	rand.Read(b)
	return ownerHash + "/" + hex.EncodeToString(b)
}

// dropBlobs deletes blobs that no metadata references any more. A failure
// leaves an orphan for garbage collection, never a dangling reference.
func (v *Vault) dropBlobs(ctx context.Context, vs []versionDoc) error {
	var errs []error
	for _, vd := range vs {
		if err := v.blobs.Delete(context.WithoutCancel(ctx), vd.Blob); err != nil {
			errs = append(errs, err)
		}
	}
	return backend("delete blobs", errors.Join(errs...))
}

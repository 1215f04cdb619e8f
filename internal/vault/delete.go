package vault

import (
	"context"
	"fmt"
)

// Delete soft-deletes a secret: it stops being readable and listed, and can
// be restored until it is purged. ifMatch, if not "", must be the current ETag.
func (v *Vault) Delete(ctx context.Context, owner, name, ifMatch string) error {
	return v.update(ctx, owner, name, ifMatch, func(d *secretDoc) error {
		if !d.live() {
			return ErrNotFound
		}
		now := v.opt.Now().UTC()
		d.DeletedAt = &now
		return nil
	})
}

// Restore undoes a soft delete.
func (v *Vault) Restore(ctx context.Context, owner, name string) (Summary, error) {
	var out Summary
	err := v.update(ctx, owner, name, "", func(d *secretDoc) error {
		switch {
		case d.Purging:
			return ErrNotFound
		case d.DeletedAt == nil:
			return fmt.Errorf("secret is not deleted: %w", ErrConflict)
		}
		d.DeletedAt = nil
		out = d.summary("")
		return nil
	})
	return out, err
}

// Purge destroys a secret, deleted or not: the document is marked as being
// purged (from then on nothing reads it), every ciphertext blob is deleted,
// then the document. An interrupted purge is finished by the next one.
func (v *Vault) Purge(ctx context.Context, owner, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	oh, err := v.ownerHash(ctx, owner)
	if err != nil {
		return err
	}
	_, err = v.purge(ctx, oh, name)
	return err
}

// purge destroys one secret and returns how many blobs it deleted.
func (v *Vault) purge(ctx context.Context, oh, name string) (int, error) {
	doc, etag, err := v.readSecret(ctx, oh, name)
	if err != nil {
		return 0, err
	}
	if !doc.Purging {
		doc.Purging = true
		if etag, err = v.writeSecret(ctx, oh, doc, etag); err != nil {
			return 0, err
		}
	}
	if err := v.dropBlobs(ctx, doc.Versions); err != nil {
		return 0, err
	}
	return len(doc.Versions), backend("delete metadata", v.meta.Delete(ctx, oh, secretID(name), etag))
}

// update applies change to a secret's document with compare-and-swap,
// retrying when another writer changed it (unless the caller pinned ifMatch).
func (v *Vault) update(ctx context.Context, owner, name, ifMatch string, change func(*secretDoc) error) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	oh, err := v.ownerHash(ctx, owner)
	if err != nil {
		return err
	}
	for attempt := range maxPutAttempts {
		if attempt > 0 {
			if err := backoff(ctx, attempt); err != nil {
				return err
			}
		}
		doc, etag, err := v.readSecret(ctx, oh, name)
		if err != nil {
			return err
		}
		if ifMatch != "" && !etagMatches(ifMatch, etag) {
			return fmt.Errorf("If-Match: %w", ErrPrecondition)
		}
		if err := change(doc); err != nil {
			return err
		}
		_, err = v.writeSecret(ctx, oh, doc, etag)
		if err == nil || ifMatch != "" || !isRace(err) {
			return err
		}
	}
	return fmt.Errorf("update: too many concurrent writers: %w", ErrUnavailable)
}

package vault

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"time"

	"github.com/credvault/credvault/internal/store"
)

// GarbageResult is what one page of garbage collection found or did.
type GarbageResult struct {
	Examined int // blobs looked at
	// Orphans are the blobs found that no document points to, older than the
	// grace period (FindGarbage); CollectGarbage deletes them.
	Orphans   []string
	Collected int // orphan blobs deleted (CollectGarbage)
	Failed    int // blobs left because their owner's references could not be read, or their delete failed
	// Continuation resumes the collection; "" when the listing is done.
	Continuation string
}

// ciphertextBlob is the shape of the names blobName gives: an owner hash and
// 128 random bits. Nothing else in the store is ever collected.
var ciphertextBlob = regexp.MustCompile(`^[0-9a-f]{32}/[0-9a-f]{32}$`)

// CollectGarbage examines one page of ciphertext blobs (up to limit, in name
// order, from continuation) and deletes those that no secret document
// points to and that were last modified before olderThan (FindGarbage, then
// DeleteBlobs at once).
func (v *Vault) CollectGarbage(ctx context.Context, continuation string, limit int, olderThan time.Time) (GarbageResult, error) {
	res, err := v.FindGarbage(ctx, continuation, limit, olderThan)
	if err != nil {
		return res, err
	}
	for _, name := range res.Orphans {
		if err := v.blobs.Delete(ctx, name); err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return res, backend("delete blob", err)
			}
			res.Failed++
			continue
		}
		res.Collected++
	}
	return res, nil
}

// FindGarbage examines one page of ciphertext blobs (up to limit, in name
// order, from continuation) and returns, as Orphans, those that no secret
// document points to and that were last modified before olderThan. Blobs are
// orphaned by a writer that lost a race or crashed between its blob and its
// metadata, by deletes that failed, and by re-encryption; the grace period
// keeps the blob of a write still in flight (blob first, metadata second)
// safe. Each owner's references are read from all its secret documents,
// those being purged included; an owner whose documents cannot all be read
// keeps its blobs. A blob is never referenced again once it is not (names
// are random and used once), so orphans may be deleted later: a caller may
// hold them a moment for readers still reading a document that named them.
func (v *Vault) FindGarbage(ctx context.Context, continuation string, limit int, olderThan time.Time) (GarbageResult, error) {
	res := GarbageResult{Continuation: continuation}
	p, err := v.blobs.List(ctx, "", continuation, limit)
	if err != nil {
		return res, backend("list blobs", err)
	}
	var owner string
	var refs map[string]bool // of owner; nil: unknown
	for _, b := range p.Blobs {
		res.Examined++
		if !ciphertextBlob.MatchString(b.Name) || !b.Modified.Before(olderThan) {
			continue
		}
		if oh, _, _ := strings.Cut(b.Name, "/"); oh != owner {
			owner = oh
			if refs, err = v.referencedBlobs(ctx, oh); err != nil {
				return res, err
			}
		}
		switch {
		case refs == nil:
			res.Failed++
		case !refs[b.Name]:
			res.Orphans = append(res.Orphans, b.Name)
		}
	}
	res.Continuation = p.Continuation
	return res, nil
}

// referencedBlobs returns the blobs an owner's secret documents point to, or
// nil when some document does not decode (its references are unknown).
func (v *Vault) referencedBlobs(ctx context.Context, ownerHash string) (map[string]bool, error) {
	refs := map[string]bool{}
	cont := ""
	for {
		p, err := v.meta.List(ctx, store.Query{Partition: ownerHash, Kind: store.KindSecret, Limit: MaxListLimit, Continuation: cont})
		if err != nil {
			return nil, backend("list metadata", err)
		}
		for _, it := range p.Items {
			var d secretDoc
			if decode(it, &d) != nil {
				return nil, nil
			}
			for _, vd := range d.Versions {
				refs[vd.Blob] = true
			}
		}
		if cont = p.Continuation; cont == "" {
			return refs, nil
		}
	}
}

package vault

import (
	"context"
	"errors"
	"fmt"

	"github.com/credvault/credvault/internal/store"
)

// AdminList returns a page of every owner's secrets, metadata only, owners
// as their keyed hashes.
func (v *Vault) AdminList(ctx context.Context, opt ListOptions) (Page, error) {
	return v.list(ctx, "", opt)
}

// EraseReport says what an erase removed.
type EraseReport struct {
	Owner   string `json:"owner"` // the owner hash
	Secrets int    `json:"secretsDeleted"`
	Blobs   int    `json:"blobsDeleted"`
}

// Erase crypto-shreds an owner: the keyring goes first, so from that moment
// nothing of the owner decrypts anywhere even if the rest is interrupted;
// then every secret document and every blob under the owner's prefix is
// deleted. Running it again finishes an interrupted erase.
func (v *Vault) Erase(ctx context.Context, owner string) (EraseReport, error) {
	oh, err := v.ownerHash(ctx, owner)
	if err != nil {
		return EraseReport{}, err
	}
	rep := EraseReport{Owner: oh}
	if err := v.keys.Erase(ctx, oh); err != nil {
		return rep, backend("erase keyring", err)
	}
	// Every secret document, whatever its state; each purge removes one, so
	// the listing restarts from the top until none is left.
	for {
		p, err := v.meta.List(ctx, store.Query{Partition: oh, Kind: store.KindSecret, Limit: MaxListLimit})
		if err != nil {
			return rep, backend("list metadata", err)
		}
		if len(p.Items) == 0 {
			break
		}
		for _, it := range p.Items {
			var d secretDoc
			if decode(it, &d) != nil {
				// Damaged, and undecryptable already: remove the document.
				if err := v.meta.Delete(ctx, oh, it.ID, ""); err != nil {
					return rep, backend("delete metadata", err)
				}
				rep.Secrets++
				continue
			}
			n, err := v.purge(ctx, oh, d.Name)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return rep, fmt.Errorf("erase: %w", err)
			}
			rep.Secrets++
			rep.Blobs += n
		}
	}
	// Blobs no document points to any more (orphans of races or crashes).
	cont := ""
	for {
		p, err := v.blobs.List(ctx, oh+"/", cont, 1000)
		if err != nil {
			return rep, backend("list blobs", err)
		}
		for _, b := range p.Blobs {
			if err := v.blobs.Delete(ctx, b.Name); err != nil {
				return rep, backend("delete blob", err)
			}
			rep.Blobs++
		}
		if cont = p.Continuation; cont == "" {
			return rep, nil
		}
	}
}

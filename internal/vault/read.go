package vault

import (
	"context"
	"errors"
	"fmt"

	"github.com/credvault/credvault/internal/envelope"
	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/store"
)

// Get returns a version of an owner's secret (version 0: the latest) with
// its value. Another owner's secret, a deleted one or a trimmed version is
// ErrNotFound. Ciphertext that fails verification is ErrIntegrity: no
// wrong data is ever returned.
func (v *Vault) Get(ctx context.Context, owner, name string, version uint64) (Secret, error) {
	if err := ValidateName(name); err != nil {
		return Secret{}, err
	}
	oh, ring, err := v.ownerRing(ctx, owner)
	if err != nil {
		return Secret{}, err
	}
	doc, etag, err := v.readSecret(ctx, oh, name)
	if err != nil {
		return Secret{}, err
	}
	vd := doc.version(version)
	if !doc.live() || vd == nil {
		return Secret{}, ErrNotFound
	}
	ct, err := v.blobs.Read(ctx, vd.Blob)
	if err != nil {
		return Secret{}, backend("read blob", err)
	}
	kek, err := ring.KEK(ctx, vd.KEK)
	if err != nil {
		return Secret{}, backend("kek", err)
	}
	value, err := envelope.Open(kek, envelope.Identity{Owner: oh, Name: name, Version: vd.Version, KEKVersion: vd.KEK}, ct)
	clear(kek)
	if err != nil {
		return Secret{}, fmt.Errorf("open version %d: %w: %w", vd.Version, ErrIntegrity, err)
	}
	return Secret{Name: name, Version: vd.Version, Value: value, ContentType: vd.ContentType, Tags: vd.Tags,
		CreatedAt: vd.Created, CreatedBy: vd.CreatedBy, ETag: etag, KEK: vd.KEK, CMK: ring.CMKVersion(ctx, vd.KEK)}, nil
}

// Versions returns the versions a secret keeps, oldest first, without values.
func (v *Vault) Versions(ctx context.Context, owner, name string) ([]Secret, string, error) {
	if err := ValidateName(name); err != nil {
		return nil, "", err
	}
	oh, err := v.ownerHash(ctx, owner)
	if err != nil {
		return nil, "", err
	}
	doc, etag, err := v.readSecret(ctx, oh, name)
	if err != nil {
		return nil, "", err
	}
	if !doc.live() {
		return nil, "", ErrNotFound
	}
	out := make([]Secret, len(doc.Versions))
	for i, vd := range doc.Versions {
		out[i] = Secret{Name: name, Version: vd.Version, ContentType: vd.ContentType, Tags: vd.Tags, CreatedAt: vd.Created, CreatedBy: vd.CreatedBy}
	}
	return out, etag, nil
}

// ListOptions select a page of a listing.
type ListOptions struct {
	Limit int // 1..MaxListLimit; 0 means DefaultListLimit
	// Continuation is the previous page's token, sealed to its listing (see
	// page.go): any other value is an InvalidError.
	Continuation string
	Deleted      bool // list soft-deleted secrets instead of live ones
}

// Listing bounds.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// List returns a page of an owner's secrets, metadata only, in name order.
// A page may hold fewer than Limit items (deleted secrets are skipped) and
// still carry a continuation; the listing ends when the continuation is "".
func (v *Vault) List(ctx context.Context, owner string, opt ListOptions) (Page, error) {
	oh, err := v.ownerHash(ctx, owner)
	if err != nil {
		return Page{}, err
	}
	return v.list(ctx, oh, opt)
}

func (v *Vault) list(ctx context.Context, partition string, opt ListOptions) (Page, error) {
	if opt.Limit == 0 {
		opt.Limit = DefaultListLimit
	}
	if opt.Limit < 0 || opt.Limit > MaxListLimit {
		return Page{}, invalid("limit", "must be between 1 and %d", MaxListLimit)
	}
	cont, err := v.openPage(ctx, partition, opt.Deleted, opt.Continuation)
	if err != nil {
		return Page{}, err
	}
	p, err := v.meta.List(ctx, store.Query{Partition: partition, Kind: store.KindSecret, Limit: opt.Limit, Continuation: cont})
	if errors.Is(err, store.ErrInvalid) {
		return Page{}, badPageToken()
	}
	if err != nil {
		return Page{}, backend("list metadata", err)
	}
	out := Page{Items: []Summary{}}
	if out.Continuation, err = v.sealPage(ctx, partition, opt.Deleted, p.Continuation); err != nil {
		return Page{}, err
	}
	for _, it := range p.Items {
		var d secretDoc
		if err := decode(it, &d); err != nil {
			return Page{}, err
		}
		if d.Purging || (d.DeletedAt != nil) != opt.Deleted || len(d.Versions) == 0 {
			continue
		}
		owner := ""
		if partition == "" {
			owner = it.Partition
		}
		out.Items = append(out.Items, d.summary(owner))
	}
	return out, nil
}

// ownerHash returns the owner's storage hash.
func (v *Vault) ownerHash(ctx context.Context, owner string) (string, error) {
	oh, err := v.keys.OwnerHash(ctx, owner)
	return oh, backend("owner hash", err)
}

// ownerRing returns the owner's hash and keyring; an owner without a keyring
// has no secrets (ErrNotFound).
func (v *Vault) ownerRing(ctx context.Context, owner string) (string, *keyring.Owner, error) {
	oh, err := v.ownerHash(ctx, owner)
	if err != nil {
		return "", nil, err
	}
	ring, err := v.keys.Owner(ctx, oh)
	if errors.Is(err, keyring.ErrNoKeyring) {
		return "", nil, ErrNotFound
	}
	return oh, ring, backend("keyring", err)
}

// OwnerHash returns the keyed hash that stands for owner in storage and in
// administration (what an administrator's owner id becomes).
func (v *Vault) OwnerHash(ctx context.Context, owner string) (string, error) {
	return v.ownerHash(ctx, owner)
}

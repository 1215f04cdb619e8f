package keyring_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/cmk"
	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/store"
	"github.com/credvault/credvault/internal/store/embedded"
)

// rotWorld is a deployment for the rotation tests: a local CMK (RSA-2048,
// for speed) that can be rotated and disabled, an embedded metadata store,
// and a clock the test moves.
type rotWorld struct {
	cmk   *cmk.Local
	meta  store.Metadata
	clock *rotClock
}

type rotClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *rotClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *rotClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newRotWorld(t *testing.T) *rotWorld {
	t.Helper()
	key, err := cmk.OpenLocal(t.TempDir(), cmk.LocalOptions{Bits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	meta, err := embedded.OpenMetadata(filepath.Join(t.TempDir(), "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	return &rotWorld{cmk: key, meta: meta, clock: &rotClock{now: time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)}}
}

// instance starts a service instance with a cold cache. The cache keeps
// the wall clock: the test's clock jumps months, which would expire every
// cached key (costing one CMK unwrap per domain, which is not what these
// tests count).
func (w *rotWorld) instance(domains int) *keyring.Hierarchy {
	return keyring.New(w.cmk, w.meta, keyring.Options{Domains: domains, Now: w.clock.Now, Cache: keyring.NewCache(keyring.CacheOptions{})})
}

// rotOwners creates n owners' keyrings and returns each owner id's hash and
// active KEK (plaintext), to compare after the rotations.
func rotOwners(t *testing.T, h *keyring.Hierarchy, n int) (map[string]string, map[string][]byte) {
	t.Helper()
	hashes, keks := map[string]string{}, map[string][]byte{}
	for i := range n {
		owner := fmt.Sprintf("tenant/owner-%03d", i)
		oh := mustOwnerHash(t, h, owner)
		o := mustCreateOwner(t, h, oh)
		kek, err := o.KEK(context.Background(), o.Active())
		if err != nil {
			t.Fatalf("KEK of %s: %v", oh, err)
		}
		hashes[owner], keks[oh] = oh, kek
	}
	return hashes, keks
}

// checkKEKs checks on h that every owner's KEK version 1 is still the key
// recorded (so nothing was rewrapped wrongly).
func rotCheckKEKs(t *testing.T, h *keyring.Hierarchy, keks map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	for oh, want := range keks {
		o, err := h.Owner(ctx, oh)
		if err != nil {
			t.Fatalf("keyring of %s: %v", oh, err)
		}
		got, err := o.KEK(ctx, 1)
		if err != nil {
			t.Fatalf("KEK v1 of %s: %v", oh, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("KEK v1 of %s changed: %x, want %x", oh, got, want)
		}
	}
}

func rotDomainRing(t *testing.T, meta store.Metadata, d int) keyring.Ring {
	t.Helper()
	var r keyring.Ring
	readDoc(t, meta, store.Domains, domainDocID(d), &r)
	return r
}

func rotUsedDomains(t *testing.T, h *keyring.Hierarchy) []int {
	t.Helper()
	ctx := context.Background()
	n, err := h.RecordedDomains(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for d := range n {
		if _, err := h.Domain(ctx, d); err == nil {
			out = append(out, d)
		} else if !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
	}
	return out
}

func TestRewrapDomainMovesDomainKeysToTheCurrentCMK(t *testing.T) {
	ctx := context.Background()
	w := newRotWorld(t)
	h := w.instance(4)
	_, keks := rotOwners(t, h, 12)
	domains := rotUsedDomains(t, h)

	old := w.cmk.Current()
	if _, err := w.cmk.Rotate(); err != nil {
		t.Fatal(err)
	}
	current, err := h.CMKCurrent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if current == old {
		t.Fatal("CMKCurrent did not see the rotation")
	}
	unwraps := w.cmk.Unwraps()
	for _, d := range domains {
		res, err := h.RewrapDomain(ctx, d, current)
		if err != nil {
			t.Fatalf("RewrapDomain(%d): %v", d, err)
		}
		if res.Rewrapped != 1 || res.CMKCalls != 2 {
			t.Fatalf("RewrapDomain(%d) = %+v, want 1 version re-wrapped with 2 CMK calls", d, res)
		}
		again, err := h.RewrapDomain(ctx, d, current)
		if err != nil || again.Rewrapped != 0 || again.CMKCalls != 0 {
			t.Fatalf("RewrapDomain(%d) again = %+v, %v; want nothing to do and no CMK call", d, again, err)
		}
		for _, v := range rotDomainRing(t, w.meta, d).Versions {
			if v.Parent != current {
				t.Fatalf("domain %d version %d is under %s, want the current CMK version %s", d, v.N, v.Parent, current)
			}
		}
	}
	// This instance keeps serving from memory: no unwrap under the new
	// wrapping.
	rotCheckKEKs(t, h, keks)
	if got := w.cmk.Unwraps() - unwraps; got != uint64(len(domains)) {
		t.Fatalf("CMK unwraps during the re-wrap and reads = %d, want %d (one per domain, by the re-wrap)", got, len(domains))
	}
	// The old version can go: a new instance opens everything under the new one.
	if err := w.cmk.SetEnabled(old, false); err != nil {
		t.Fatal(err)
	}
	rotCheckKEKs(t, w.instance(4), keks)
}

func TestRotateDomainRewrapsOwnersLocallyThenRetires(t *testing.T) {
	ctx := context.Background()
	w := newRotWorld(t)
	h := w.instance(2)
	hashes, keks := rotOwners(t, h, 10)
	domains := rotUsedDomains(t, h)

	w.clock.Advance(91 * 24 * time.Hour)
	olderThan := w.clock.Now().Add(-90 * 24 * time.Hour)
	for _, d := range domains {
		res, err := h.RotateDomain(ctx, d, olderThan)
		if err != nil {
			t.Fatal(err)
		}
		if res.Added != 1 || res.CMKCalls != 1 {
			t.Fatalf("RotateDomain(%d) = %+v, want 1 version added with 1 CMK call", d, res)
		}
		if again, err := h.RotateDomain(ctx, d, olderThan); err != nil || again.Added != 0 || again.CMKCalls != 0 {
			t.Fatalf("RotateDomain(%d) again = %+v, %v; want nothing", d, again, err)
		}
	}
	// A keyring created now is wrapped under the new version at once.
	late := mustCreateOwner(t, h, mustOwnerHash(t, h, "tenant/late"))
	if got, want := late.Ring.Versions[0].Parent, fmt.Sprintf("domain/%d/%d", late.Domain, rotDomainRing(t, w.meta, late.Domain).Active); got != want {
		t.Fatalf("new keyring under %s, want %s", got, want)
	}

	var calls, rewrapped int
	page, err := h.Keyrings(ctx, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Owners) != 11 || len(page.Corrupt) != 0 || page.Continuation != "" {
		t.Fatalf("Keyrings = %d owners, %d corrupt, continuation %q; want 11, 0, none", len(page.Owners), len(page.Corrupt), page.Continuation)
	}
	for _, o := range page.Owners {
		res, err := h.RewrapOwner(ctx, o)
		if err != nil {
			t.Fatalf("RewrapOwner(%s): %v", o.Hash, err)
		}
		if !slices.Equal(res.Parents, []uint32{2}) {
			t.Fatalf("RewrapOwner(%s): parents %v, want [2]", o.Hash, res.Parents)
		}
		calls += res.CMKCalls
		rewrapped += res.Rewrapped
	}
	if calls != 0 || rewrapped != 10 {
		t.Fatalf("RewrapOwner: %d CMK calls, %d KEKs re-wrapped; want 0 and 10", calls, rewrapped)
	}
	res, err := h.RewrapIndex(ctx)
	if err != nil || res.Rewrapped != 2 || !slices.Equal(res.Parents, []uint32{2}) {
		t.Fatalf("RewrapIndex = %+v, %v; want 2 re-wrapped (index and audit keys), parents [2]", res, err)
	}

	inUse := map[uint32]bool{2: true}
	for _, d := range domains {
		// Still referenced: neither retired nor destroyed.
		if res, err := h.RetireDomain(ctx, d, map[uint32]bool{1: true, 2: true}, w.clock.Now().Add(time.Hour)); err != nil || res.Retired+res.Destroyed != 0 {
			t.Fatalf("RetireDomain(%d) with version 1 in use = %+v, %v; want nothing", d, res, err)
		}
		if res, err := h.RetireDomain(ctx, d, inUse, time.Time{}); err != nil || res.Retired != 1 || res.Destroyed != 0 {
			t.Fatalf("RetireDomain(%d) = %+v, %v; want 1 retired", d, res, err)
		}
		if r := rotDomainRing(t, w.meta, d); len(r.Versions) != 2 || !r.Versions[0].Retired || r.Versions[1].Retired {
			t.Fatalf("domain %d after retiring: %+v", d, r.Versions)
		}
		// Retired, but a late reference appeared: not destroyed.
		if res, err := h.RetireDomain(ctx, d, map[uint32]bool{1: true, 2: true}, w.clock.Now().Add(time.Hour)); err != nil || res.Destroyed != 0 {
			t.Fatalf("RetireDomain(%d) of a retired version in use = %+v, %v; want nothing destroyed", d, res, err)
		}
		// Not long enough after its successor: not destroyed.
		if res, err := h.RetireDomain(ctx, d, inUse, w.clock.Now().Add(-time.Hour)); err != nil || res.Destroyed != 0 {
			t.Fatalf("RetireDomain(%d) too early = %+v, %v; want nothing destroyed", d, res, err)
		}
		if res, err := h.RetireDomain(ctx, d, inUse, w.clock.Now().Add(time.Hour)); err != nil || res.Destroyed != 1 {
			t.Fatalf("RetireDomain(%d) = %+v, %v; want 1 destroyed", d, res, err)
		}
		if r := rotDomainRing(t, w.meta, d); len(r.Versions) != 1 || r.Versions[0].N != 2 || r.Active != 2 {
			t.Fatalf("domain %d after destroying: %+v", d, r)
		}
	}

	// A new instance reads every KEK, and computes the same owner hashes:
	// the index key survived its re-wrap.
	fresh := w.instance(2)
	rotCheckKEKs(t, fresh, keks)
	for owner, oh := range hashes {
		if got := mustOwnerHash(t, fresh, owner); got != oh {
			t.Fatalf("owner hash of %s = %s after the rotation, want %s", owner, got, oh)
		}
	}
}

func TestRotateKEKAndRetireKEK(t *testing.T) {
	ctx := context.Background()
	w := newRotWorld(t)
	h := w.instance(1)
	_, keks := rotOwners(t, h, 1)
	var oh string
	for k := range keks {
		oh = k
	}
	if res, err := h.RotateKEK(ctx, oh, w.clock.Now().Add(-365*24*time.Hour)); err != nil || res.Added != 0 {
		t.Fatalf("RotateKEK of a young KEK = %+v, %v; want nothing", res, err)
	}
	w.clock.Advance(time.Second)
	now := w.clock.Now()
	cmkCalls := w.cmk.Unwraps()
	if res, err := h.RotateKEK(ctx, oh, now); err != nil || res.Added != 1 || res.CMKCalls != 0 {
		t.Fatalf("RotateKEK(now) = %+v, %v; want 1 added, no CMK call", res, err)
	}
	if res, err := h.RotateKEK(ctx, oh, now); err != nil || res.Added != 0 {
		t.Fatalf("RotateKEK(now) again = %+v, %v; want nothing (idempotent)", res, err)
	}
	if w.cmk.Unwraps() != cmkCalls {
		t.Fatal("KEK rotation asked the CMK")
	}
	o, err := h.Owner(ctx, oh)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := o.KEK(ctx, 2)
	if err != nil || o.Active() != 2 || bytes.Equal(k2, keks[oh]) {
		t.Fatalf("after rotation: active %d, KEK v2 %x (%v); want a new active version 2", o.Active(), k2, err)
	}
	rotCheckKEKs(t, w.instance(1), keks)

	later := now.Add(time.Hour)
	steps := []struct {
		name          string
		inUse         map[uint32]bool
		destroyBefore time.Time
		retired       int
		destroyed     int
		versions      int
	}{
		{"v1 still in use", map[uint32]bool{1: true}, later, 0, 0, 2},
		{"v1 unused", nil, time.Time{}, 1, 0, 2},
		{"again", nil, time.Time{}, 0, 0, 2},
		{"retired but in use again", map[uint32]bool{1: true}, later, 0, 0, 2},
		{"retired, too early to destroy", nil, now.Add(-time.Hour), 0, 0, 2},
		{"destroy", nil, later, 0, 1, 1},
		{"nothing left", nil, later, 0, 0, 1},
	}
	for _, s := range steps {
		res, err := h.RetireKEK(ctx, oh, s.inUse, s.destroyBefore)
		if err != nil {
			t.Fatalf("%s: RetireKEK: %v", s.name, err)
		}
		if res.Retired != s.retired || res.Destroyed != s.destroyed {
			t.Fatalf("%s: RetireKEK = %+v, want %d retired, %d destroyed", s.name, res, s.retired, s.destroyed)
		}
		o, err := h.Owner(ctx, oh)
		if err != nil {
			t.Fatal(err)
		}
		if len(o.Ring.Versions) != s.versions || o.Active() != 2 {
			t.Fatalf("%s: ring %+v, want %d versions, active 2", s.name, o.Ring, s.versions)
		}
	}
	if _, err := o.KEK(ctx, 2); err != nil {
		t.Fatalf("active KEK after the retirements: %v", err)
	}

	if err := h.Erase(ctx, oh); err != nil {
		t.Fatal(err)
	}
	if _, err := h.RotateKEK(ctx, oh, later); !errors.Is(err, keyring.ErrNoKeyring) {
		t.Fatalf("RotateKEK of an erased owner: %v, want ErrNoKeyring", err)
	}
	if _, err := h.RetireKEK(ctx, oh, nil, later); !errors.Is(err, keyring.ErrNoKeyring) {
		t.Fatalf("RetireKEK of an erased owner: %v, want ErrNoKeyring", err)
	}
}

// TestRotationWritesRaceWithoutLosingAnything runs KEK rotations, domain
// re-wraps and a second instance's re-wraps at once on the same keyrings:
// every write is a compare-and-swap retried on conflict, so each keyring
// ends with both changes, and every KEK still opens.
func TestRotationWritesRaceWithoutLosingAnything(t *testing.T) {
	ctx := context.Background()
	w := newRotWorld(t)
	h := w.instance(2)
	_, keks := rotOwners(t, h, 16)
	w.clock.Advance(91 * 24 * time.Hour)
	for _, d := range rotUsedDomains(t, h) {
		if _, err := h.RotateDomain(ctx, d, w.clock.Now().Add(-90*24*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	other := w.instance(2)
	for _, d := range rotUsedDomains(t, other) {
		if _, err := other.Domain(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	page, err := h.Keyrings(ctx, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	now := w.clock.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 3*len(page.Owners))
	for _, o := range page.Owners {
		wg.Add(3)
		go func() {
			defer wg.Done()
			_, err := h.RotateKEK(ctx, o.Hash, now)
			errs <- err
		}()
		go func() {
			defer wg.Done()
			_, err := h.RewrapOwner(ctx, o)
			errs <- err
		}()
		go func() {
			defer wg.Done()
			_, err := other.RewrapOwner(ctx, o)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for oh := range keks {
		it, err := w.meta.Get(ctx, oh, keyring.KeyringID)
		if err != nil {
			t.Fatal(err)
		}
		var o keyring.Owner
		if err := json.Unmarshal(it.Body, &o); err != nil {
			t.Fatal(err)
		}
		if len(o.Ring.Versions) != 2 || o.Ring.Active != 2 {
			t.Fatalf("keyring %s: %+v, want versions 1 and 2 (one rotation, however many raced)", oh, o.Ring)
		}
		for _, v := range o.Ring.Versions {
			if want := fmt.Sprintf("domain/%d/2", o.Domain); v.Parent != want {
				t.Fatalf("keyring %s version %d under %s, want %s", oh, v.N, v.Parent, want)
			}
		}
	}
	rotCheckKEKs(t, w.instance(2), keks)
}

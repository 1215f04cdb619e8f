package keyring_test

import (
	"context"
	"testing"
)

// BenchmarkKEKWarm is the per-request key path of an existing owner on a warm
// instance: the cached KEK alone, and with the keyring point read every
// request makes first (embedded store).
func BenchmarkKEKWarm(b *testing.B) {
	ctx := context.Background()
	w := newWorld(b)
	h := w.instance(0)
	hash := mustOwnerHash(b, h, "72f988bf-86f1-41af-91ab-2d7cd011db47/00000000-0000-0000-0000-000000000001")
	o := mustCreateOwner(b, h, hash)
	clear(mustKEK(b, h, hash))
	unwraps := w.cmk.unwraps.Load()

	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			kek, err := o.KEK(ctx, o.Active())
			if err != nil {
				b.Fatal(err)
			}
			clear(kek)
		}
	})
	b.Run("with keyring read", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			kek, err := kekOf(h, hash)
			if err != nil {
				b.Fatal(err)
			}
			clear(kek)
		}
	})
	if n := w.cmk.unwraps.Load() - unwraps; n != 0 {
		b.Fatalf("warm KEK lookups made %d CMK unwraps, want 0", n)
	}
}

func BenchmarkOwnerHash(b *testing.B) {
	ctx := context.Background()
	h := newWorld(b).instance(0)
	const owner = "72f988bf-86f1-41af-91ab-2d7cd011db47/00000000-0000-0000-0000-000000000001"
	mustOwnerHash(b, h, owner)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.OwnerHash(ctx, owner); err != nil {
			b.Fatal(err)
		}
	}
}

package keyring_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/keyring"
)

func ringAAD(n uint32) []byte { return fmt.Appendf(nil, "test ring v%d", n) }

func TestRingAddNumbersVersions(t *testing.T) {
	ctx := context.Background()
	d := newCMKDouble(t)
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.FixedZone("CET", 3600))

	var r keyring.Ring
	if _, ok := r.Current(); ok {
		t.Fatal("an empty ring has a current version")
	}
	keys := map[uint32][]byte{}
	for want := uint32(1); want <= 3; want++ {
		key, err := r.Add(ctx, d, ringAAD, now)
		if err != nil {
			t.Fatalf("Add #%d: %v", want, err)
		}
		if len(key) != keyring.KeySize || isZero(key) {
			t.Fatalf("Add #%d returned key %x, want %d random bytes", want, key, keyring.KeySize)
		}
		keys[want] = key
		if r.Active != want {
			t.Fatalf("after Add #%d: Active = %d, want %d", want, r.Active, want)
		}
		cur, ok := r.Current()
		if !ok || cur.N != want {
			t.Fatalf("after Add #%d: Current() = %d, %v; want version %d", want, cur.N, ok, want)
		}
		if got := d.aads[len(d.aads)-1]; !bytes.Equal(got, ringAAD(want)) {
			t.Fatalf("Add #%d wrapped with aad %q, want %q", want, got, ringAAD(want))
		}
	}
	if len(r.Versions) != 3 {
		t.Fatalf("after 3 Adds: %d versions, want 3", len(r.Versions))
	}

	for n, want := range keys {
		v, ok := r.Version(n)
		if !ok || v.N != n {
			t.Fatalf("Version(%d) = %d, %v", n, v.N, ok)
		}
		if v.Parent != d.keyID {
			t.Errorf("version %d: Parent = %q, want the wrapping key id %q", n, v.Parent, d.keyID)
		}
		if !v.Created.Equal(now) || v.Created.Location() != time.UTC {
			t.Errorf("version %d: Created = %v, want %v in UTC", n, v.Created, now)
		}
		got, err := v.Unwrap(ctx, d, ringAAD)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("version %d: Unwrap = %x, %v; want the key Add returned", n, got, err)
		}
		other := func(m uint32) []byte { return ringAAD(m + 1) }
		_, err = v.Unwrap(ctx, d, other)
		wantErr(t, fmt.Sprintf("version %d unwrapped with another version's aad", n), err, keyring.ErrCorrupt)
	}
	if _, ok := r.Version(4); ok {
		t.Fatal("Version(4) of a ring of 3 was found")
	}
	if _, ok := r.Version(0); ok {
		t.Fatal("Version(0) was found")
	}
}

func TestRingAddFailsCleanly(t *testing.T) {
	tests := []struct {
		answer  answer
		wantErr error
	}{
		{answerRevoked, keyring.ErrRevoked},
		{answerUnreachable, keyring.ErrUnavailable},
	}
	for _, tt := range tests {
		ctx := context.Background()
		d := newCMKDouble(t)
		var r keyring.Ring
		if _, err := r.Add(ctx, d, ringAAD, time.Now()); err != nil {
			t.Fatal(err)
		}
		d.set(tt.answer)
		key, err := r.Add(ctx, d, ringAAD, time.Now())
		wantErr(t, "Add with the parent refusing", err, tt.wantErr)
		if key != nil {
			t.Fatal("a failed Add returned a key")
		}
		if r.Active != 1 || len(r.Versions) != 1 {
			t.Fatalf("after a failed Add: Active = %d with %d versions, want 1 and 1", r.Active, len(r.Versions))
		}
	}
}

func TestRingAddAfterGap(t *testing.T) {
	// Versions are never reused, even when the ring is not contiguous (a
	// retired version removed, or the active one rolled back).
	d := newCMKDouble(t)
	r := keyring.Ring{Active: 2, Versions: []keyring.Version{{N: 2}, {N: 5}}}
	key, err := r.Add(context.Background(), d, ringAAD, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	clear(key)
	if r.Active != 6 {
		t.Fatalf("Add to a ring holding versions 2 and 5: Active = %d, want 6", r.Active)
	}
}

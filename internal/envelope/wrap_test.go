package envelope

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
)

func mustWrap(t testing.TB, wk, key, aad []byte) []byte {
	t.Helper()
	w, err := WrapKey(wk, key, aad, rand.Reader)
	if err != nil {
		t.Fatalf("WrapKey: %v", err)
	}
	return w
}

func TestWrapRoundTrip(t *testing.T) {
	wk, key := newKey(t), newKey(t)
	for _, aad := range [][]byte{nil, {}, []byte("owner/kek/1"), bytes.Repeat([]byte{0xff}, 1000)} {
		w := mustWrap(t, wk, key, aad)
		if got, want := len(w), 63; got != want {
			t.Fatalf("WrapKey with %d bytes of aad = %d bytes, want %d", len(aad), got, want)
		}
		if got, want := w[:3], []byte{'c', 'k', 0x01}; !bytes.Equal(got, want) {
			t.Fatalf("wrapped key header = %x, want %x", got, want)
		}
		got, err := UnwrapKey(wk, w, aad)
		if err != nil {
			t.Fatalf("UnwrapKey with %d bytes of aad: %v", len(aad), err)
		}
		if !bytes.Equal(got, key) {
			t.Fatalf("UnwrapKey returned another key than was wrapped")
		}
	}
	a, b := mustWrap(t, wk, key, nil), mustWrap(t, wk, key, nil)
	if bytes.Equal(a[3:15], b[3:15]) {
		t.Fatalf("two wraps share nonce %x, want a fresh nonce each", a[3:15])
	}
}

func TestUnwrapEveryBitFlipFails(t *testing.T) {
	wk, key, aad := newKey(t), newKey(t), []byte("owner/kek/1")
	w := mustWrap(t, wk, key, aad)
	for i := range w {
		for bit := range 8 {
			got, err := UnwrapKey(wk, flipBit(w, i, 1<<bit), aad)
			want := ErrOpen
			if i < headerSize {
				want = ErrFormat
			}
			if !errors.Is(err, want) || got != nil {
				t.Fatalf("UnwrapKey with bit %d of byte %d flipped = (%d bytes, %v), want %v", bit, i, len(got), err, want)
			}
		}
	}
}

func TestUnwrapRefuses(t *testing.T) {
	wk, key, aad := newKey(t), newKey(t), []byte("owner/kek/1")
	w := mustWrap(t, wk, key, aad)
	tests := []struct {
		name    string
		wk, aad []byte
		wrapped []byte
		want    error
	}{
		{"other wrapping key", newKey(t), aad, w, ErrOpen},
		{"other aad", wk, []byte("owner/kek/2"), w, ErrOpen},
		{"empty aad", wk, nil, w, ErrOpen},
		{"aad with a trailing byte", wk, append(bytes.Clone(aad), 0), w, ErrOpen},
		{"nil", wk, aad, nil, ErrFormat},
		{"one byte short", wk, aad, w[:62], ErrFormat},
		{"one byte long", wk, aad, append(bytes.Clone(w), 0), ErrFormat},
		{"ciphertext magic", wk, aad, append([]byte{'c', 'v', 1}, w[3:]...), ErrFormat},
		{"version 2", wk, aad, append([]byte{'c', 'k', 2}, w[3:]...), ErrFormat},
	}
	for _, tt := range tests {
		got, err := UnwrapKey(tt.wk, tt.wrapped, tt.aad)
		if !errors.Is(err, tt.want) || got != nil {
			t.Errorf("UnwrapKey with %s = (%d bytes, %v), want %v", tt.name, len(got), err, tt.want)
		}
	}
}

func TestParseWrappedKeyRoundTrip(t *testing.T) {
	w := mustWrap(t, newKey(t), newKey(t), nil)
	orig := bytes.Clone(w)
	p, err := ParseWrappedKey(w)
	if err != nil {
		t.Fatalf("ParseWrappedKey of WrapKey output: %v", err)
	}
	if got, want := len(p.Sealed), 48; got != want {
		t.Fatalf("sealed part of a wrapped key is %d bytes, want %d", got, want)
	}
	clear(w)
	if got := p.Marshal(); !bytes.Equal(got, orig) {
		t.Fatalf("Marshal of a parsed wrapped key = %x, want the parsed bytes %x", got, orig)
	}
}

package cmk

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/credvault/credvault/internal/keyring"
)

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func seqKey() []byte {
	k := make([]byte, keyring.KeySize)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

// TestBindVector pins the bound payload: key || SHA-256("credvault/v1 cmk" ||
// 0x00 || aad), here with the aad of domain 3, version 1. The digests were
// computed outside Go (Python hashlib).
func TestBindVector(t *testing.T) {
	tests := []struct {
		name, aad, digest string // hex
	}{
		{"domain 3 version 1", "637265647661756c742f763120646f6d61696e000000000300000001", "deef47d211c2a400cf27fc35462d709543a174e865a9298cbff22413f508226d"},
		{"empty aad", "", "ca6ea45c050da47fcd6652c9b946fe770393b26d1a0385cba36bb6e3a43cbae3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := append(seqKey(), mustHex(t, tt.digest)...)
			if got := bind(seqKey(), mustHex(t, tt.aad)); !bytes.Equal(got, want) {
				t.Fatalf("bind(00..1f, %s) =\n%x\nwant\n%x", tt.aad, got, want)
			}
		})
	}
}

func TestUnbind(t *testing.T) {
	aad := []byte("credvault/v1 domain\x00\x00\x00\x00\x03\x00\x00\x00\x01")
	bound := func() []byte { return bind(seqKey(), aad) }
	edit := func(f func(p []byte) []byte) func() []byte { return func() []byte { return f(bound()) } }
	tests := []struct {
		name    string
		payload func() []byte
		aad     []byte
		want    []byte // nil: ErrCorrupt
	}{
		{"bound to this aad", bound, aad, seqKey()},
		{"nil and empty aad are one context", func() []byte { return bind(seqKey(), nil) }, []byte{}, seqKey()},
		{"another aad", bound, []byte("credvault/v1 domain\x00\x00\x00\x00\x04\x00\x00\x00\x01"), nil},
		{"aad with a byte more", bound, append(append([]byte(nil), aad...), 0), nil},
		{"aad with a byte less", bound, aad[:len(aad)-1], nil},
		{"no aad", bound, nil, nil},
		{"digest: first byte flipped", edit(func(p []byte) []byte { p[keyring.KeySize] ^= 1; return p }), aad, nil},
		{"digest: last byte flipped", edit(func(p []byte) []byte { p[len(p)-1] ^= 0x80; return p }), aad, nil},
		// The digest binds the context, not the key: RSA-OAEP protects the
		// payload's integrity. A changed key byte comes out changed.
		{"key byte flipped", edit(func(p []byte) []byte { p[0] ^= 1; return p }), aad, append([]byte{1}, seqKey()[1:]...)},
		{"empty payload", func() []byte { return nil }, aad, nil},
		{"key only (32 bytes)", edit(func(p []byte) []byte { return p[:keyring.KeySize] }), aad, nil},
		{"one byte short (63)", edit(func(p []byte) []byte { return p[:len(p)-1] }), aad, nil},
		{"one byte long (65)", edit(func(p []byte) []byte { return append(p, 0) }), aad, nil},
		{"a 16-byte key bound (48)", func() []byte { return bind(seqKey()[:16], aad) }, aad, nil},
		{"a 64-byte key bound (96)", func() []byte { return bind(append(seqKey(), seqKey()...), aad) }, aad, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload := tt.payload()
			n := len(payload)
			got, err := unbind(payload, tt.aad)
			if tt.want == nil {
				if !errors.Is(err, keyring.ErrCorrupt) {
					t.Fatalf("unbind of a %d-byte payload: err = %v, want %v", n, err, keyring.ErrCorrupt)
				}
				if got != nil {
					t.Fatalf("unbind failed but returned %x", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("unbind: %v", err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("unbind = %x, want %x", got, tt.want)
			}
			if !isZero(payload) {
				t.Fatal("unbind left the key in the payload, want it cleared")
			}
			if &got[0] == &payload[0] {
				t.Fatal("unbind returned the payload's memory, want a copy")
			}
		})
	}
}

func TestUnbindClearsARefusedPayload(t *testing.T) {
	payload := bind(seqKey(), []byte("this context"))
	if _, err := unbind(payload, []byte("another context")); !errors.Is(err, keyring.ErrCorrupt) {
		t.Fatalf("unbind under another context: err = %v, want %v", err, keyring.ErrCorrupt)
	}
	if !isZero(payload) {
		t.Fatal("unbind refused a payload but left its key in memory")
	}
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

package envelope

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	mrand "math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
)

func newKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

var testID = Identity{Owner: "contoso/alice", Name: "github-token", Version: 3, KEKVersion: 1}

func mustSeal(t testing.TB, kek []byte, id Identity, plaintext []byte) []byte {
	t.Helper()
	ct, err := Seal(kek, id, plaintext, rand.Reader)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return ct
}

func TestRoundTripRandomSizes(t *testing.T) {
	seed := mrand.Uint64()
	t.Logf("sizes seeded with %d", seed)
	rng := mrand.New(mrand.NewPCG(seed, 0))
	sizes := []int{0, 1, 15, 16, 17, 64, 4096}
	for range 40 {
		sizes = append(sizes, rng.IntN(1<<16))
	}
	kek := newKey(t)
	for _, n := range sizes {
		pt := make([]byte, n)
		rand.Read(pt)
		ct := mustSeal(t, kek, testID, pt)
		if got, want := len(ct), n+overhead; got != want {
			t.Fatalf("Seal of %d bytes: ciphertext is %d bytes, want %d", n, got, want)
		}
		got, err := Open(kek, testID, ct)
		if err != nil {
			t.Fatalf("Open of a fresh %d-byte ciphertext: %v", n, err)
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("Open of a fresh %d-byte ciphertext returned other bytes than were sealed", n)
		}
	}
}

func TestSealLayout(t *testing.T) {
	kek := newKey(t)
	a, b := mustSeal(t, kek, testID, []byte("v")), mustSeal(t, kek, testID, []byte("v"))
	if got, want := a[:3], []byte{'c', 'v', 0x01}; !bytes.Equal(got, want) {
		t.Fatalf("ciphertext header = %x, want %x", got, want)
	}
	pa, err := ParseCiphertext(a)
	if err != nil {
		t.Fatalf("ParseCiphertext of Seal output: %v", err)
	}
	pb, err := ParseCiphertext(b)
	if err != nil {
		t.Fatalf("ParseCiphertext of Seal output: %v", err)
	}
	if pa.Salt == pb.Salt {
		t.Fatalf("two seals of the same value share salt %x, want a fresh salt each", pa.Salt)
	}
	if pa.Commitment == pb.Commitment || bytes.Equal(pa.Sealed, pb.Sealed) {
		t.Fatalf("two seals of the same value under different salts share a commitment or GCM output")
	}
	if got, want := len(pa.Sealed), 1+16; got != want {
		t.Fatalf("sealed part of a 1-byte value is %d bytes, want %d", got, want)
	}
}

// TestOpenEveryBitFlipFails flips each bit of a ciphertext in turn: a flip in
// the header is ErrFormat, anywhere else ErrOpen, and never plaintext.
func TestOpenEveryBitFlipFails(t *testing.T) {
	kek := newKey(t)
	ct := mustSeal(t, kek, testID, []byte(`{"token":"ghp_x"}`))
	for i := range ct {
		for bit := range 8 {
			bad := flipBit(ct, i, 1<<bit)
			pt, err := Open(kek, testID, bad)
			if err == nil {
				t.Fatalf("Open with bit %d of byte %d flipped returned %d bytes, want an error", bit, i, len(pt))
			}
			want := ErrOpen
			if i < headerSize {
				want = ErrFormat
			}
			if !errors.Is(err, want) {
				t.Fatalf("Open with bit %d of byte %d flipped: err = %v, want %v", bit, i, err, want)
			}
			if pt != nil {
				t.Fatalf("Open with bit %d of byte %d flipped returned plaintext with its error", bit, i)
			}
		}
	}
}

// TestOpenIdentityChangeFails changes one Identity field (or the KEK) at a
// time: each refuses at the key commitment, before any decryption.
func TestOpenIdentityChangeFails(t *testing.T) {
	kek := newKey(t)
	ct := mustSeal(t, kek, testID, []byte("value"))
	tests := []struct {
		name   string
		kek    []byte
		change func(*Identity)
	}{
		{"owner", kek, func(id *Identity) { id.Owner = "contoso/mallory" }},
		{"owner empty", kek, func(id *Identity) { id.Owner = "" }},
		{"owner case", kek, func(id *Identity) { id.Owner = "Contoso/alice" }},
		{"owner trailing NUL", kek, func(id *Identity) { id.Owner += "\x00" }},
		{"name", kek, func(id *Identity) { id.Name = "gitlab-token" }},
		{"owner/name boundary", kek, func(id *Identity) { id.Owner, id.Name = id.Owner+"g", id.Name[1:] }},
		{"owner/name swapped", kek, func(id *Identity) { id.Owner, id.Name = id.Name, id.Owner }},
		{"version", kek, func(id *Identity) { id.Version++ }},
		{"version high bit", kek, func(id *Identity) { id.Version |= 1 << 63 }},
		{"kek version", kek, func(id *Identity) { id.KEKVersion++ }},
		{"kek version high bit", kek, func(id *Identity) { id.KEKVersion |= 1 << 31 }},
		{"kek", flipBit(kek, 0, 0x80), func(*Identity) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := testID
			tt.change(&id)
			pt, err := Open(tt.kek, id, ct)
			if !errors.Is(err, ErrOpen) || !errors.Is(err, errCommitment) {
				t.Fatalf("Open with another %s: (%d bytes, %v), want ErrOpen at the key commitment", tt.name, len(pt), err)
			}
		})
	}
}

func TestWrongKeySizes(t *testing.T) {
	good := newKey(t)
	wrapped, err := WrapKey(good, good, nil, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ct := mustSeal(t, good, testID, nil)
	calls := []struct {
		name string
		call func(k []byte) error
	}{
		{"Seal kek", func(k []byte) error { _, err := Seal(k, testID, nil, rand.Reader); return err }},
		{"Open kek", func(k []byte) error { _, err := Open(k, testID, ct); return err }},
		{"WrapKey wrapping key", func(k []byte) error { _, err := WrapKey(k, good, nil, rand.Reader); return err }},
		{"WrapKey key", func(k []byte) error { _, err := WrapKey(good, k, nil, rand.Reader); return err }},
		{"UnwrapKey wrapping key", func(k []byte) error { _, err := UnwrapKey(k, wrapped, nil); return err }},
	}
	for _, c := range calls {
		for _, size := range []int{0, 1, 16, 24, 31, 33, 64} {
			err := c.call(make([]byte, size))
			if !errors.Is(err, errKeySize) {
				t.Errorf("%s of %d bytes: err = %v, want a key size error", c.name, size, err)
			}
			if errors.Is(err, ErrFormat) || errors.Is(err, ErrOpen) {
				t.Errorf("%s of %d bytes: err = %v, a caller's mistake must not look like a bad ciphertext", c.name, size, err)
			}
		}
	}
}

func TestIdentityLengthLimits(t *testing.T) {
	kek := newKey(t)
	longest := strings.Repeat("o", 65535)
	tooLong := longest + "o"
	for _, id := range []Identity{{Owner: longest, Name: "n"}, {Owner: "o", Name: longest}, {Owner: longest, Name: longest}} {
		ct := mustSeal(t, kek, id, []byte("v"))
		if _, err := Open(kek, id, ct); err != nil {
			t.Fatalf("Open with a %d-byte owner and %d-byte name: %v", len(id.Owner), len(id.Name), err)
		}
	}
	ct := mustSeal(t, kek, testID, []byte("v"))
	for _, id := range []Identity{{Owner: tooLong, Name: "n"}, {Owner: "o", Name: tooLong}} {
		if _, err := Seal(kek, id, []byte("v"), rand.Reader); !errors.Is(err, errIdentity) {
			t.Errorf("Seal with a %d-byte owner and %d-byte name: err = %v, want an identity error", len(id.Owner), len(id.Name), err)
		}
		if _, err := Open(kek, id, ct); !errors.Is(err, errIdentity) {
			t.Errorf("Open with a %d-byte owner and %d-byte name: err = %v, want an identity error", len(id.Owner), len(id.Name), err)
		}
	}
}

func TestSealRandomSourceFails(t *testing.T) {
	kek := newKey(t)
	for name, r := range map[string]io.Reader{
		"error":     iotest.ErrReader(errors.New("entropy gone")),
		"too short": bytes.NewReader(make([]byte, 31)),
	} {
		if ct, err := Seal(kek, testID, []byte("v"), r); err == nil {
			t.Errorf("Seal with a failing random source (%s) = %d bytes, want an error", name, len(ct))
		}
		if w, err := WrapKey(kek, kek, nil, r); err == nil {
			t.Errorf("WrapKey with a failing random source (%s) = %d bytes, want an error", name, len(w))
		}
	}
}

func TestParseCiphertextRejects(t *testing.T) {
	ct := mustSeal(t, newKey(t), testID, nil)
	tests := []struct {
		name string
		b    []byte
	}{
		{"nil", nil},
		{"one byte", []byte{'c'}},
		{"header only", []byte{'c', 'v', 1}},
		{"one byte short", ct[:overhead-1]},
		{"bad magic", append([]byte{'x', 'v', 1}, ct[3:]...)},
		{"wrapped key magic", append([]byte{'c', 'k', 1}, ct[3:]...)},
		{"version 0", append([]byte{'c', 'v', 0}, ct[3:]...)},
		{"version 2", append([]byte{'c', 'v', 2}, ct[3:]...)},
		{"version 255", append([]byte{'c', 'v', 255}, ct[3:]...)},
	}
	for _, tt := range tests {
		if c, err := ParseCiphertext(tt.b); !errors.Is(err, ErrFormat) || c != nil {
			t.Errorf("ParseCiphertext(%s) = (%v, %v), want ErrFormat", tt.name, c, err)
		}
	}
	if _, err := ParseCiphertext(ct); err != nil {
		t.Fatalf("ParseCiphertext of the smallest ciphertext (%d bytes): %v", len(ct), err)
	}
}

func TestParseCiphertextDoesNotAlias(t *testing.T) {
	ct := mustSeal(t, newKey(t), testID, []byte("value"))
	orig := bytes.Clone(ct)
	c, err := ParseCiphertext(ct)
	if err != nil {
		t.Fatal(err)
	}
	clear(ct)
	if got := c.Marshal(); !bytes.Equal(got, orig) {
		t.Fatalf("parsed ciphertext changed when the input buffer was cleared: it aliases its input")
	}
}

// TestErrorsCarryNoSecrets checks that no error text holds key bytes or
// plaintext, whatever the failure.
func TestErrorsCarryNoSecrets(t *testing.T) {
	kek := newKey(t)
	secret := []byte("hunter2-the-secret-value")
	ct := mustSeal(t, kek, testID, secret)
	wrapped, err := WrapKey(kek, kek, []byte("aad"), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	errs := []error{}
	collect := func(_ []byte, err error) { errs = append(errs, err) }
	collect(Open(flipBit(kek, 0, 1), testID, ct))
	collect(Open(kek, testID, flipBit(ct, -1, 1)))
	collect(Open(kek, testID, ct[:50]))
	collect(Open(kek[:31], testID, ct))
	collect(Seal(append(bytes.Clone(kek), 0), testID, secret, rand.Reader))
	collect(UnwrapKey(kek, wrapped, []byte("other")))
	collect(UnwrapKey(kek, flipBit(wrapped, 20, 1), []byte("aad")))
	collect(WrapKey(kek, append(bytes.Clone(kek), 0), nil, rand.Reader))
	for _, err := range errs {
		if err == nil {
			t.Fatal("a failing call returned no error")
		}
		msg := strings.ToLower(err.Error())
		for _, s := range []string{hex.EncodeToString(kek), hex.EncodeToString(kek[:8]), string(kek), string(secret), hex.EncodeToString(secret)} {
			if strings.Contains(msg, s) {
				t.Fatalf("error %q holds key or plaintext bytes", err)
			}
		}
	}
}

package envelope

import (
	"bytes"
	"errors"
	"testing"
)

// seedFrom adds the given byte field of every vector in dir to the corpus.
func seedFrom(f *testing.F, dir, key string) {
	f.Helper()
	for _, path := range vectorFiles(f, dir) {
		f.Add(readVector(f, path).hex(f, key))
	}
}

// FuzzParseCiphertext: parsing never panics, fails only with ErrFormat, and
// whatever parses marshals back to the identical bytes.
func FuzzParseCiphertext(f *testing.F) {
	seedFrom(f, vectorsDir, "ciphertext")
	seedFrom(f, wrapDir, "wrapped")
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCiphertext(b)
		if err != nil {
			if !errors.Is(err, ErrFormat) || c != nil {
				t.Fatalf("ParseCiphertext(%x) = (%v, %v), want nil and ErrFormat", b, c, err)
			}
			return
		}
		if got := c.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("Marshal(ParseCiphertext(%x)) = %x, want the parsed bytes", b, got)
		}
	})
}

// FuzzParseWrappedKey: parsing never panics, fails only with ErrFormat, and
// whatever parses marshals back to the identical bytes.
func FuzzParseWrappedKey(f *testing.F) {
	seedFrom(f, wrapDir, "wrapped")
	seedFrom(f, vectorsDir, "ciphertext")
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := ParseWrappedKey(b)
		if err != nil {
			if !errors.Is(err, ErrFormat) || w != nil {
				t.Fatalf("ParseWrappedKey(%x) = (%v, %v), want nil and ErrFormat", b, w, err)
			}
			return
		}
		if got := w.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("Marshal(ParseWrappedKey(%x)) = %x, want the parsed bytes", b, got)
		}
	})
}

// FuzzOpen: Open never panics on any key, identity or bytes; when it does
// open, sealing the plaintext again with the same salt gives back the same
// ciphertext (one ciphertext per key, identity, salt and plaintext).
func FuzzOpen(f *testing.F) {
	for _, path := range vectorFiles(f, vectorsDir) {
		v := readVector(f, path)
		id := v.identity(f)
		f.Add(v.hex(f, "kek"), id.Owner, id.Name, id.Version, id.KEKVersion, v.hex(f, "ciphertext"))
	}
	f.Fuzz(func(t *testing.T, kek []byte, owner, name string, version uint64, kekVersion uint32, ct []byte) {
		id := Identity{Owner: owner, Name: name, Version: version, KEKVersion: kekVersion}
		pt, err := Open(kek, id, ct)
		if err != nil {
			if pt != nil {
				t.Fatalf("Open returned %d bytes of plaintext with error %v", len(pt), err)
			}
			return
		}
		c, err := ParseCiphertext(ct)
		if err != nil {
			t.Fatalf("Open accepted bytes that ParseCiphertext refuses: %v", err)
		}
		again, err := Seal(kek, id, pt, bytes.NewReader(c.Salt[:]))
		if err != nil {
			t.Fatalf("Seal of what Open returned: %v", err)
		}
		if !bytes.Equal(again, ct) {
			t.Fatalf("Seal with the opened salt = %x, want the opened ciphertext %x", again, ct)
		}
	})
}

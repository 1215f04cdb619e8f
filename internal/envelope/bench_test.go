package envelope

import (
	"crypto/rand"
	"fmt"
	"testing"
)

var benchSizes = []int{64, 4096}

func sizeName(n int) string {
	if n >= 1024 {
		return fmt.Sprintf("%dKiB", n/1024)
	}
	return fmt.Sprintf("%dB", n)
}

// BenchmarkSeal includes reading the 32-byte salt from crypto/rand.
func BenchmarkSeal(b *testing.B) {
	kek := newKey(b)
	for _, n := range benchSizes {
		pt := make([]byte, n)
		b.Run(sizeName(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Seal(kek, testID, pt, rand.Reader); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	kek := newKey(b)
	for _, n := range benchSizes {
		ct := mustSeal(b, kek, testID, make([]byte, n))
		b.Run(sizeName(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Open(kek, testID, ct); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkUnwrapKey(b *testing.B) {
	wk, aad := newKey(b), []byte("keyring/contoso/alice/kek/1")
	w := mustWrap(b, wk, newKey(b), aad)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := UnwrapKey(wk, w, aad); err != nil {
			b.Fatal(err)
		}
	}
}

package storetest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/store"
)

// TestBlobs runs the store.Blobs contract against the adapter that open
// returns. open is called once per subtest; it may return the same backend
// every time.
func TestBlobs(t *testing.T, open func(t *testing.T) store.Blobs) {
	t.Run("RoundTrip", func(t *testing.T) {
		b, p := open(t), unique(t, "blobs")
		big := make([]byte, 1<<20)
		rand.Read(big)
		for _, tc := range []struct {
			name string
			data []byte
		}{
			{"small", []byte("ciphertext \x00\xff bytes")},
			{"empty", []byte{}},
			{"one-mib", big},
		} {
			name := p + "/" + tc.name
			if err := b.Create(t.Context(), name, tc.data); err != nil {
				t.Fatalf("Create %s (%d bytes): %v", tc.name, len(tc.data), err)
			}
			got, err := b.Read(t.Context(), name)
			if err != nil {
				t.Fatalf("Read %s: %v", tc.name, err)
			}
			if !bytes.Equal(got, tc.data) {
				t.Fatalf("Read %s: got %d bytes, want the %d bytes written", tc.name, len(got), len(tc.data))
			}
		}
	})

	t.Run("CreateOnlyConflicts", func(t *testing.T) {
		b, name := open(t), unique(t, "blobs")
		mustCreateBlob(t, b, name, []byte("first"))
		if err := b.Create(t.Context(), name, []byte("second")); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("second Create of one name: err = %v, want ErrConflict", err)
		}
		if got := mustReadBlob(t, b, name); string(got) != "first" {
			t.Fatalf("after a refused Create: Read = %q, want the original %q", got, "first")
		}
	})

	t.Run("ReadMissingNotFound", func(t *testing.T) {
		b, name := open(t), unique(t, "blobs")
		if _, err := b.Read(t.Context(), name+"/never-written"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Read of a missing blob: err = %v, want ErrNotFound", err)
		}
	})

	t.Run("DeleteThenReadNotFound", func(t *testing.T) {
		b, name := open(t), unique(t, "blobs")
		mustCreateBlob(t, b, name, []byte("doomed"))
		if err := b.Delete(t.Context(), name); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if _, err := b.Read(t.Context(), name); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Read after Delete: err = %v, want ErrNotFound", err)
		}
		page, err := b.List(t.Context(), name, "", 0)
		if err != nil {
			t.Fatalf("List after Delete: %v", err)
		}
		if len(page.Blobs) != 0 {
			t.Fatalf("List after Delete: got %v, want no blobs", blobNames(page.Blobs))
		}
	})

	t.Run("DeleteMissingOK", func(t *testing.T) {
		b, name := open(t), unique(t, "blobs")
		if err := b.Delete(t.Context(), name+"/never-written"); err != nil {
			t.Fatalf("Delete of a missing blob: err = %v, want nil", err)
		}
	})

	t.Run("NamesWithSlashes", func(t *testing.T) {
		b, p := open(t), unique(t, "blobs")
		names := []string{p + "/owner/secret/v1", p + "/owner/secret/v2", p + "/owner/other/v1"}
		for _, n := range names {
			mustCreateBlob(t, b, n, []byte(n))
		}
		for _, n := range names {
			if got := mustReadBlob(t, b, n); string(got) != n {
				t.Fatalf("Read %s = %q, want %q", n, got, n)
			}
		}
		if got, want := listAll(t, b, p+"/owner/secret/", 0), names[:2]; !slices.Equal(got, want) {
			t.Fatalf("List %s/owner/secret/ = %v, want %v", p, got, want)
		}
	})

	t.Run("ListPrefixAndOrder", func(t *testing.T) {
		b, p := open(t), unique(t, "blobs")
		// '-' (0x2d) < '/' (0x2f) < '0' (0x30): a listing that walks a
		// hierarchy without care puts "a/b" before "a-c".
		for _, n := range []string{"x/a0", "x/a/b", "x/a-c", "x/b", "xa", "y/a"} {
			mustCreateBlob(t, b, p+"/"+n, []byte(n))
		}
		for _, tc := range []struct {
			prefix string
			want   []string
		}{
			{"", []string{"x/a-c", "x/a/b", "x/a0", "x/b", "xa", "y/a"}},
			{"x", []string{"x/a-c", "x/a/b", "x/a0", "x/b", "xa"}},
			{"x/", []string{"x/a-c", "x/a/b", "x/a0", "x/b"}},
			{"x/a", []string{"x/a-c", "x/a/b", "x/a0"}},
			{"x/a/", []string{"x/a/b"}},
			{"x/c", nil},
			{"z/", nil},
		} {
			var want []string
			for _, n := range tc.want {
				want = append(want, p+"/"+n)
			}
			if got := listAll(t, b, p+"/"+tc.prefix, 0); !slices.Equal(got, want) {
				t.Errorf("List prefix %q = %v, want %v", tc.prefix, got, want)
			}
		}
	})

	t.Run("ListPages", func(t *testing.T) {
		b, p := open(t), unique(t, "blobs")
		var want []string
		for _, i := range []int{3, 0, 4, 1, 2} {
			mustCreateBlob(t, b, fmt.Sprintf("%s/%02d", p, i), []byte{byte(i)})
		}
		for i := range 5 {
			want = append(want, fmt.Sprintf("%s/%02d", p, i))
		}
		const limit = 2
		var got []string
		cont, pages := "", 0
		for {
			page, err := b.List(t.Context(), p+"/", cont, limit)
			if err != nil {
				t.Fatalf("List page %d: %v", pages, err)
			}
			if len(page.Blobs) > limit {
				t.Fatalf("List page %d: %d blobs, want at most the limit %d", pages, len(page.Blobs), limit)
			}
			got = append(got, blobNames(page.Blobs)...)
			pages++
			if page.Continuation == "" {
				break
			}
			if pages > 10 {
				t.Fatalf("List did not end after %d pages; blobs so far %v", pages, got)
			}
			cont = page.Continuation
		}
		if !slices.Equal(got, want) {
			t.Fatalf("List in pages of %d = %v, want %v", limit, got, want)
		}
	})

	t.Run("ListInfo", func(t *testing.T) {
		b, p := open(t), unique(t, "blobs")
		before := time.Now()
		data := make([]byte, 1234)
		mustCreateBlob(t, b, p+"/sized", data)
		after := time.Now()
		page, err := b.List(t.Context(), p+"/", "", 0)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if len(page.Blobs) != 1 || page.Blobs[0].Name != p+"/sized" {
			t.Fatalf("List = %v, want [%s/sized]", blobNames(page.Blobs), p)
		}
		info := page.Blobs[0]
		if info.Size != int64(len(data)) {
			t.Errorf("List: Size = %d, want %d", info.Size, len(data))
		}
		// A minute either side allows for a backend's clock and its rounding.
		if info.Modified.Before(before.Add(-time.Minute)) || info.Modified.After(after.Add(time.Minute)) {
			t.Errorf("List: Modified = %v, want about %v", info.Modified, before)
		}
	})

	t.Run("ConcurrentCreateOneWins", func(t *testing.T) {
		b, name := open(t), unique(t, "blobs")
		const n = 16
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { errs[i] = b.Create(t.Context(), name, []byte{byte(i)}) })
		}
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("concurrent Create: writers %d and %d both succeeded", winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, store.ErrConflict):
				t.Fatalf("concurrent Create, writer %d: err = %v, want nil or ErrConflict", i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("concurrent Create: no writer succeeded")
		}
		if got := mustReadBlob(t, b, name); !bytes.Equal(got, []byte{byte(winner)}) {
			t.Fatalf("after concurrent Create: Read = %v, want the winner's %v", got, []byte{byte(winner)})
		}
	})
}

func mustCreateBlob(t *testing.T, b store.Blobs, name string, data []byte) {
	t.Helper()
	if err := b.Create(t.Context(), name, data); err != nil {
		t.Fatalf("Create %s: %v", name, err)
	}
}

func mustReadBlob(t *testing.T, b store.Blobs, name string) []byte {
	t.Helper()
	data, err := b.Read(t.Context(), name)
	if err != nil {
		t.Fatalf("Read %s: %v", name, err)
	}
	return data
}

// listAll follows continuations to the end and returns every name listed.
func listAll(t *testing.T, b store.Blobs, prefix string, limit int) []string {
	t.Helper()
	var names []string
	cont := ""
	for range 1000 {
		page, err := b.List(t.Context(), prefix, cont, limit)
		if err != nil {
			t.Fatalf("List %q: %v", prefix, err)
		}
		names = append(names, blobNames(page.Blobs)...)
		if page.Continuation == "" {
			return names
		}
		cont = page.Continuation
	}
	t.Fatalf("List %q did not end after 1000 pages", prefix)
	return nil
}

func blobNames(infos []store.BlobInfo) []string {
	var names []string
	for _, in := range infos {
		names = append(names, in.Name)
	}
	return names
}

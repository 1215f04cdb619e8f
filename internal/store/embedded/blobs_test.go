package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/store"
	"github.com/credvault/credvault/internal/store/storetest"
)

func openTestBlobs(t *testing.T) *Blobs {
	t.Helper()
	b, err := OpenBlobs(t.TempDir())
	if err != nil {
		t.Fatalf("OpenBlobs: %v", err)
	}
	return b
}

func TestBlobsContract(t *testing.T) {
	storetest.TestBlobs(t, func(t *testing.T) store.Blobs { return openTestBlobs(t) })
}

func TestBlobsLeftoverTempInvisible(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenBlobs(dir)
	if err != nil {
		t.Fatalf("OpenBlobs: %v", err)
	}
	// What a crash between writing the temp file and linking it leaves: a
	// partial temp file, and maybe the blob's directory.
	if err := os.WriteFile(filepath.Join(dir, tmpDir, "blob-123"), []byte("parti"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "owner", "secret"), 0o700); err != nil {
		t.Fatal(err)
	}
	// A dot file beside where the blob goes is not a blob either.
	if err := os.WriteFile(filepath.Join(dir, "owner", "secret", ".v1.tmp"), []byte("parti"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Read(t.Context(), "owner/secret/v1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Read of a blob whose Create crashed: err = %v, want ErrNotFound", err)
	}
	if page, err := b.List(t.Context(), "", "", 0); err != nil || len(page.Blobs) != 0 {
		t.Fatalf("List with only leftovers on disk = %+v, %v; want no blobs", page.Blobs, err)
	}
	if err := b.Create(t.Context(), "owner/secret/v1", []byte("whole")); err != nil {
		t.Fatalf("Create after a crashed Create of the same name: %v", err)
	}
	if got, err := b.Read(t.Context(), "owner/secret/v1"); err != nil || string(got) != "whole" {
		t.Fatalf("Read = %q, %v; want %q", got, err, "whole")
	}
	page, err := b.List(t.Context(), "", "", 0)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if got, want := names(page.Blobs), []string{"owner/secret/v1"}; !slices.Equal(got, want) {
		t.Fatalf("List = %v, want %v", got, want)
	}
	tmps, err := os.ReadDir(filepath.Join(dir, tmpDir))
	if err != nil || len(tmps) != 1 {
		t.Fatalf("temp directory after one Create holds %d files (%v), want only the crash's leftover", len(tmps), err)
	}
}

func TestBlobsOpenRemovesStaleTemps(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenBlobs(dir); err != nil {
		t.Fatalf("OpenBlobs: %v", err)
	}
	stale, fresh := filepath.Join(dir, tmpDir, "blob-stale"), filepath.Join(dir, tmpDir, "blob-fresh")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * staleTemp)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenBlobs(dir); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a temp file older than %v survived a reopen (stat err = %v)", staleTemp, err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a fresh temp file, maybe another writer's, was removed: %v", err)
	}
}

func TestBlobsFileModes(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenBlobs(dir)
	if err != nil {
		t.Fatalf("OpenBlobs: %v", err)
	}
	if err := b.Create(t.Context(), "owner/v1", []byte("x")); err != nil {
		t.Fatalf("Create: %v", err)
	}
	for _, tc := range []struct {
		path string
		want os.FileMode
	}{
		{"owner", os.ModeDir | 0o700},
		{"owner/v1", 0o600},
		{tmpDir, os.ModeDir | 0o700},
	} {
		info, err := os.Stat(filepath.Join(dir, tc.path))
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Mode(); got != tc.want {
			t.Errorf("mode of %s = %v, want %v", tc.path, got, tc.want)
		}
	}
}

func TestBlobsNameValidation(t *testing.T) {
	b := openTestBlobs(t)
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"owner/secret/v1", true},
		{"a.b/c-d_e~f", true},
		{"UPPER/ünïcode/ 空白 ", true},
		{"", false},
		{"/abs", false},
		{"a/", false},
		{"a//b", false},
		{"..", false},
		{"../escape", false},
		{"a/../../escape", false},
		{"a..b", false},
		{".hidden", false},
		{"a/.tmp/x", false},
		{".tmp", false},
		{"a\\b", false},
		{"a\x00b", false},
	} {
		err := b.Create(t.Context(), tc.name, []byte("x"))
		if tc.ok && err != nil {
			t.Errorf("Create(%q): %v, want nil", tc.name, err)
		}
		if !tc.ok {
			if !errors.Is(err, ErrInvalidName) {
				t.Errorf("Create(%q): err = %v, want ErrInvalidName", tc.name, err)
			}
			if _, err := b.Read(t.Context(), tc.name); !errors.Is(err, ErrInvalidName) {
				t.Errorf("Read(%q): err = %v, want ErrInvalidName", tc.name, err)
			}
			if err := b.Delete(t.Context(), tc.name); !errors.Is(err, ErrInvalidName) {
				t.Errorf("Delete(%q): err = %v, want ErrInvalidName", tc.name, err)
			}
		}
	}
	// An invalid prefix lists nothing rather than reaching outside the root.
	for _, prefix := range []string{"../", "/", "a/../", ".tmp/", "a\\"} {
		if page, err := b.List(t.Context(), prefix, "", 0); err != nil || len(page.Blobs) != 0 {
			t.Errorf("List(%q) = %v, %v; want no blobs", prefix, names(page.Blobs), err)
		}
	}
}

// A name cannot be both a blob and the directory of others: the second is
// refused with ErrInvalidName, and nothing already stored is disturbed.
func TestBlobsFileDirectoryClash(t *testing.T) {
	b := openTestBlobs(t)
	ctx := t.Context()
	for _, n := range []string{"a", "b/c"} {
		if err := b.Create(ctx, n, []byte(n)); err != nil {
			t.Fatalf("Create %s: %v", n, err)
		}
	}
	if err := b.Create(ctx, "a/x", []byte("x")); !errors.Is(err, ErrInvalidName) {
		t.Errorf("Create a/x under the blob a: err = %v, want ErrInvalidName", err)
	}
	if err := b.Create(ctx, "b", []byte("x")); !errors.Is(err, ErrInvalidName) {
		t.Errorf("Create b over the directory of b/c: err = %v, want ErrInvalidName", err)
	}
	for _, n := range []string{"b", "a/x"} {
		if _, err := b.Read(ctx, n); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Read %s: err = %v, want ErrNotFound", n, err)
		}
		if err := b.Delete(ctx, n); err != nil {
			t.Errorf("Delete %s: %v, want nil", n, err)
		}
	}
	for _, n := range []string{"a", "b/c"} {
		if got, err := b.Read(ctx, n); err != nil || string(got) != n {
			t.Errorf("Read %s = %q, %v; want %q", n, got, err, n)
		}
	}
}

func TestBlobsContextCanceled(t *testing.T) {
	b := openTestBlobs(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := b.Create(ctx, "a", []byte("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("Create: err = %v, want context.Canceled", err)
	}
	if _, err := b.Read(ctx, "a"); !errors.Is(err, context.Canceled) {
		t.Errorf("Read: err = %v, want context.Canceled", err)
	}
	if err := b.Delete(ctx, "a"); !errors.Is(err, context.Canceled) {
		t.Errorf("Delete: err = %v, want context.Canceled", err)
	}
	if _, err := b.List(ctx, "", "", 0); !errors.Is(err, context.Canceled) {
		t.Errorf("List: err = %v, want context.Canceled", err)
	}
	if _, err := b.Read(t.Context(), "a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Read after a canceled Create: err = %v, want ErrNotFound", err)
	}
}

// The walk in List visits many directories; check its order and paging
// against a sorted list of names spread over a deeper tree.
func TestBlobsListDeepTree(t *testing.T) {
	b := openTestBlobs(t)
	var want []string
	for _, a := range []string{"a", "a-", "a0", "b"} {
		for _, c := range []string{"x", "x-y", "x.z", "x0"} {
			for _, v := range []string{"1", "2"} {
				n := a + "/" + c + "/" + v
				if c == "x.z" {
					n = a + "/" + c // a file among directories
				}
				if !slices.Contains(want, n) {
					want = append(want, n)
					if err := b.Create(t.Context(), n, []byte(n)); err != nil {
						t.Fatalf("Create %s: %v", n, err)
					}
				}
			}
		}
	}
	slices.Sort(want)
	for _, limit := range []int{1, 3, 7, 100} {
		var got []string
		cont := ""
		for {
			page, err := b.List(t.Context(), "", cont, limit)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if len(page.Blobs) > limit {
				t.Fatalf("List limit %d: page of %d", limit, len(page.Blobs))
			}
			got = append(got, names(page.Blobs)...)
			if page.Continuation == "" {
				break
			}
			cont = page.Continuation
		}
		if !slices.Equal(got, want) {
			t.Errorf("List limit %d =\n%v\nwant\n%v", limit, got, want)
		}
	}
}

func names(infos []store.BlobInfo) []string {
	var ns []string
	for _, in := range infos {
		ns = append(ns, in.Name)
	}
	return ns
}

func BenchmarkBlobCreate(b *testing.B) {
	blobs, err := OpenBlobs(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	data := bytes.Repeat([]byte{0xa5}, 1024)
	b.SetBytes(int64(len(data)))
	i := 0
	for b.Loop() {
		if err := blobs.Create(b.Context(), fmt.Sprintf("owner%02d/secret/v%d", i%16, i), data); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
}

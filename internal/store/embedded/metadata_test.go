package embedded

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/credvault/credvault/internal/store"
	"github.com/credvault/credvault/internal/store/storetest"
)

func openTestMetadata(t testing.TB, path string) *Metadata {
	t.Helper()
	m, err := OpenMetadata(path)
	if err != nil {
		t.Fatalf("OpenMetadata: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestMetadataContract(t *testing.T) {
	storetest.TestMetadata(t, func(t *testing.T) store.Metadata {
		return openTestMetadata(t, filepath.Join(t.TempDir(), "meta.db"))
	})
}

// Every write acknowledged before Close is there after reopening, and the
// ETags still guard the documents.
func TestMetadataReopenKeepsWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	m, err := OpenMetadata(path)
	if err != nil {
		t.Fatalf("OpenMetadata: %v", err)
	}
	ctx := t.Context()
	const writers, docs = 8, 25
	etags := make([][]string, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for d := range docs {
				it := store.Item{Partition: fmt.Sprintf("owner-%d", w), ID: fmt.Sprintf("doc-%02d", d), Kind: store.KindSecret, Body: fmt.Appendf(nil, `{"v":%d}`, 1)}
				etag, err := m.Create(ctx, it)
				if err != nil {
					t.Errorf("Create: %v", err)
					return
				}
				it.Body = fmt.Appendf(nil, `{"v":%d}`, 2)
				if etag, err = m.Replace(ctx, it, etag); err != nil {
					t.Errorf("Replace: %v", err)
					return
				}
				etags[w] = append(etags[w], etag)
			}
		})
	}
	wg.Wait()
	if err := m.Delete(ctx, "owner-0", "doc-00", etags[0][0]); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	m = openTestMetadata(t, path)
	if _, err := m.Get(ctx, "owner-0", "doc-00"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted document after reopening: err = %v, want ErrNotFound", err)
	}
	for w := range writers {
		for d, etag := range etags[w] {
			if w == 0 && d == 0 {
				continue
			}
			it, err := m.Get(ctx, fmt.Sprintf("owner-%d", w), fmt.Sprintf("doc-%02d", d))
			if err != nil {
				t.Fatalf("Get after reopening: %v", err)
			}
			if it.ETag != etag || string(it.Body) != `{"v":2}` {
				t.Fatalf("after reopening: %s/%s = %s etag %q, want {\"v\":2} etag %q", it.Partition, it.ID, it.Body, it.ETag, etag)
			}
		}
	}
	it := store.Item{Partition: "owner-1", ID: "doc-00", Kind: store.KindSecret, Body: []byte(`{}`)}
	if _, err := m.Replace(ctx, it, "stale"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("Replace with a stale ETag after reopening: err = %v, want ErrConflict", err)
	}
	if _, err := m.Replace(ctx, it, etags[1][0]); err != nil {
		t.Errorf("Replace with the ETag from before reopening: %v", err)
	}
}

func TestMetadataSecondOpenFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	openTestMetadata(t, path)
	// bbolt's lock is per open file description: a second open in this
	// process stands in for a second process.
	m, err := OpenMetadata(path)
	if err == nil {
		m.Close()
		t.Fatalf("second OpenMetadata of one file succeeded, want an error")
	}
	if !strings.Contains(err.Error(), "locked") {
		t.Errorf("second OpenMetadata: err = %v, want one that says the file is locked", err)
	}
}

func TestMetadataKindChange(t *testing.T) {
	m := openTestMetadata(t, filepath.Join(t.TempDir(), "meta.db"))
	ctx := t.Context()
	it := store.Item{Partition: "p", ID: "doc", Kind: "old", Body: []byte(`{}`)}
	etag, err := m.Create(ctx, it)
	if err != nil {
		t.Fatal(err)
	}
	it.Kind = "new"
	if _, err := m.Replace(ctx, it, etag); err != nil {
		t.Fatal(err)
	}
	for kind, want := range map[string]int{"old": 0, "new": 1} {
		page, err := m.List(ctx, store.Query{Partition: "p", Kind: kind})
		if err != nil || len(page.Items) != want {
			t.Errorf("List kind %q after the document became %q: %d items (%v), want %d", kind, it.Kind, len(page.Items), err, want)
		}
	}
	if err := m.Delete(ctx, "p", "doc", ""); err != nil {
		t.Fatal(err)
	}
	if page, err := m.List(ctx, store.Query{Partition: "p", Kind: "new"}); err != nil || len(page.Items) != 0 {
		t.Errorf("List after Delete: %d items (%v), want none", len(page.Items), err)
	}
}

func TestMetadataRefusesBadInput(t *testing.T) {
	m := openTestMetadata(t, filepath.Join(t.TempDir(), "meta.db"))
	ctx := t.Context()
	good := store.Item{Partition: "p", ID: "id", Kind: store.KindSecret, Body: []byte(`{"a":1}`)}
	for _, tc := range []struct {
		what string
		edit func(*store.Item)
	}{
		{"empty partition", func(it *store.Item) { it.Partition = "" }},
		{"empty id", func(it *store.Item) { it.ID = "" }},
		{"empty kind", func(it *store.Item) { it.Kind = "" }},
		{"NUL in partition", func(it *store.Item) { it.Partition = "p\x00q" }},
		{"NUL in id", func(it *store.Item) { it.ID = "i\x00d" }},
		{"NUL in kind", func(it *store.Item) { it.Kind = "k\x00" }},
		{"empty body", func(it *store.Item) { it.Body = nil }},
		{"body not JSON", func(it *store.Item) { it.Body = []byte(`{"a":`) }},
		{"body not an object", func(it *store.Item) { it.Body = []byte(`[1,2]`) }},
	} {
		it := good
		tc.edit(&it)
		if _, err := m.Create(ctx, it); err == nil || errors.Is(err, store.ErrConflict) {
			t.Errorf("Create with %s: err = %v, want a refusal", tc.what, err)
		}
	}
	etag, err := m.Create(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Replace(ctx, good, ""); err == nil || errors.Is(err, store.ErrConflict) {
		t.Errorf("Replace with no ETag: err = %v, want a refusal", err)
	}
	if _, err := m.List(ctx, store.Query{Partition: "p"}); err == nil {
		t.Errorf("List with no kind: err = nil, want a refusal")
	}
	for _, cont := range []string{"!!!", "bm8tbnVs", "cQBpZA"} { // bad base64, "no-nul", "q\x00id" (another partition)
		if _, err := m.List(ctx, store.Query{Partition: "p", Kind: store.KindSecret, Continuation: cont}); err == nil {
			t.Errorf("List with continuation %q: err = nil, want a refusal", cont)
		}
	}
	if got, err := m.Get(ctx, "p", "id"); err != nil || got.ETag != etag {
		t.Errorf("Get after refused writes = etag %q, %v; want %q", got.ETag, err, etag)
	}
}

func TestMetadataListLimits(t *testing.T) {
	m := openTestMetadata(t, filepath.Join(t.TempDir(), "meta.db"))
	ctx := t.Context()
	var wg sync.WaitGroup
	for i := range maxListLimit + 1 {
		wg.Go(func() {
			if _, err := m.Create(ctx, store.Item{Partition: "p", ID: fmt.Sprintf("%04d", i), Kind: "k", Body: []byte(`{}`)}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, tc := range []struct{ limit, want int }{{0, defaultListLimit}, {-1, defaultListLimit}, {maxListLimit * 5, maxListLimit}} {
		page, err := m.List(ctx, store.Query{Partition: "p", Kind: "k", Limit: tc.limit})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Items) != tc.want || page.Continuation == "" {
			t.Errorf("List limit %d: %d items, continuation %q; want %d and more to come", tc.limit, len(page.Items), page.Continuation, tc.want)
		}
	}
}

func TestMetadataContextCanceled(t *testing.T) {
	m := openTestMetadata(t, filepath.Join(t.TempDir(), "meta.db"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	it := store.Item{Partition: "p", ID: "id", Kind: store.KindSecret, Body: []byte(`{}`)}
	for what, err := range map[string]error{
		"Create":  func() error { _, err := m.Create(ctx, it); return err }(),
		"Get":     func() error { _, err := m.Get(ctx, "p", "id"); return err }(),
		"Replace": func() error { _, err := m.Replace(ctx, it, "x"); return err }(),
		"Delete":  m.Delete(ctx, "p", "id", ""),
		"List":    func() error { _, err := m.List(ctx, store.Query{Kind: store.KindSecret}); return err }(),
	} {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context: err = %v, want context.Canceled", what, err)
		}
	}
	if _, err := m.Get(t.Context(), "p", "id"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after a canceled Create: err = %v, want ErrNotFound", err)
	}
}

// benchmarkReplace replaces one document per goroutine, so every write is a
// durable, uncontended compare-and-swap.
func benchmarkReplace(b *testing.B, parallel bool) {
	m := openTestMetadata(b, filepath.Join(b.TempDir(), "meta.db"))
	ctx := b.Context()
	var next atomic.Int64
	run := func(loop func() bool) {
		it := store.Item{Partition: "bench", ID: fmt.Sprintf("doc-%d", next.Add(1)), Kind: store.KindSecret,
			Body: []byte(`{"name":"github-token","versions":[{"v":1,"blob":"0123456789abcdef/0123456789abcdef/1","kek":3}]}`)}
		etag, err := m.Create(ctx, it)
		if err != nil {
			b.Error(err)
			return
		}
		for loop() {
			if etag, err = m.Replace(ctx, it, etag); err != nil {
				b.Error(err)
				return
			}
		}
	}
	if parallel {
		b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) { run(pb.Next) })
	} else {
		run(b.Loop)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
}

func BenchmarkMetadataReplace(b *testing.B) {
	b.Run("serial", func(b *testing.B) { benchmarkReplace(b, false) })
	b.Run("parallel16", func(b *testing.B) { benchmarkReplace(b, true) })
}

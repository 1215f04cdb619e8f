package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/credvault/credvault/internal/store"
)

// TestMetadata runs the store.Metadata contract against the adapter that open
// returns. open is called once per subtest; it may return the same backend
// every time. Listings use a kind of their own per subtest, so that documents
// other tests left in a shared backend never show up in them.
func TestMetadata(t *testing.T, open func(t *testing.T) store.Metadata) {
	t.Run("RoundTrip", func(t *testing.T) {
		m, p := open(t), unique(t, "meta")
		body := []byte(`{"name":"github-token","versions":[{"v":1,"blob":"b/1"}],"nested":{"ok":true}}`)
		etag, err := m.Create(t.Context(), store.Item{Partition: p, ID: "doc", Kind: store.KindSecret, Body: body})
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		if etag == "" {
			t.Fatalf("Create: ETag is empty")
		}
		it := mustGet(t, m, p, "doc")
		if it.Partition != p || it.ID != "doc" || it.Kind != store.KindSecret || it.ETag != etag {
			t.Errorf("Get = {%q %q %q etag %q}, want {%q %q %q etag %q}",
				it.Partition, it.ID, it.Kind, it.ETag, p, "doc", store.KindSecret, etag)
		}
		if !jsonEqual(t, it.Body, body) {
			t.Errorf("Get: Body = %s, want %s", it.Body, body)
		}
	})

	t.Run("CreateOnlyConflicts", func(t *testing.T) {
		m, p := open(t), unique(t, "meta")
		etag := mustCreate(t, m, store.Item{Partition: p, ID: "doc", Kind: store.KindKeyring, Body: []byte(`{"n":1}`)})
		_, err := m.Create(t.Context(), store.Item{Partition: p, ID: "doc", Kind: store.KindKeyring, Body: []byte(`{"n":2}`)})
		if !errors.Is(err, store.ErrConflict) {
			t.Fatalf("second Create of one id: err = %v, want ErrConflict", err)
		}
		it := mustGet(t, m, p, "doc")
		if !jsonEqual(t, it.Body, []byte(`{"n":1}`)) || it.ETag != etag {
			t.Fatalf("after a refused Create: Get = %s etag %q, want the original {\"n\":1} etag %q", it.Body, it.ETag, etag)
		}
	})

	t.Run("GetMissingNotFound", func(t *testing.T) {
		m, p := open(t), unique(t, "meta")
		if _, err := m.Get(t.Context(), p, "never-written"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get of a missing document: err = %v, want ErrNotFound", err)
		}
	})

	t.Run("ReplaceWithCurrentETag", func(t *testing.T) {
		m, p := open(t), unique(t, "meta")
		it := store.Item{Partition: p, ID: "doc", Kind: store.KindSecret, Body: []byte(`{"n":1}`)}
		etag1 := mustCreate(t, m, it)
		it.Body = []byte(`{"n":2}`)
		etag2, err := m.Replace(t.Context(), it, etag1)
		if err != nil {
			t.Fatalf("Replace with the current ETag: %v", err)
		}
		if etag2 == "" || etag2 == etag1 {
			t.Fatalf("Replace: new ETag %q, want a non-empty ETag other than %q", etag2, etag1)
		}
		got := mustGet(t, m, p, "doc")
		if got.ETag != etag2 || !jsonEqual(t, got.Body, it.Body) {
			t.Fatalf("after Replace: Get = %s etag %q, want %s etag %q", got.Body, got.ETag, it.Body, etag2)
		}
		it.Body = []byte(`{"n":3}`)
		etag3, err := m.Replace(t.Context(), it, etag2)
		if err != nil {
			t.Fatalf("second Replace: %v", err)
		}
		if etag3 == etag2 || etag3 == etag1 {
			t.Fatalf("second Replace: ETag %q repeats an earlier one (%q, %q)", etag3, etag1, etag2)
		}
	})

	t.Run("StaleETagRefused", func(t *testing.T) {
		m, p := open(t), unique(t, "meta")
		it := store.Item{Partition: p, ID: "doc", Kind: store.KindSecret, Body: []byte(`{"n":1}`)}
		stale := mustCreate(t, m, it)
		it.Body = []byte(`{"n":2}`)
		current, err := m.Replace(t.Context(), it, stale)
		if err != nil {
			t.Fatalf("Replace: %v", err)
		}
		it.Body = []byte(`{"n":99}`)
		if _, err := m.Replace(t.Context(), it, stale); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("Replace with a stale ETag: err = %v, want ErrConflict", err)
		}
		got := mustGet(t, m, p, "doc")
		if got.ETag != current || !jsonEqual(t, got.Body, []byte(`{"n":2}`)) {
			t.Fatalf("after a refused Replace: Get = %s etag %q, want {\"n\":2} etag %q", got.Body, got.ETag, current)
		}
	})

	t.Run("ReplaceMissingNotFound", func(t *testing.T) {
		m, p := open(t), unique(t, "meta")
		it := store.Item{Partition: p, ID: "doc", Kind: store.KindSecret, Body: []byte(`{"n":1}`)}
		etag := mustCreate(t, m, it)
		if err := m.Delete(t.Context(), p, "doc", etag); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if _, err := m.Replace(t.Context(), it, etag); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Replace of a deleted document: err = %v, want ErrNotFound", err)
		}
		if _, err := m.Get(t.Context(), p, "doc"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get after a refused Replace of a deleted document: err = %v, want ErrNotFound", err)
		}
	})

	t.Run("DeleteStaleETagRefused", func(t *testing.T) {
		m, p := open(t), unique(t, "meta")
		it := store.Item{Partition: p, ID: "doc", Kind: store.KindSecret, Body: []byte(`{"n":1}`)}
		stale := mustCreate(t, m, it)
		it.Body = []byte(`{"n":2}`)
		current, err := m.Replace(t.Context(), it, stale)
		if err != nil {
			t.Fatalf("Replace: %v", err)
		}
		if err := m.Delete(t.Context(), p, "doc", stale); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("Delete with a stale ETag: err = %v, want ErrConflict", err)
		}
		if got := mustGet(t, m, p, "doc"); got.ETag != current {
			t.Fatalf("after a refused Delete: Get etag %q, want %q", got.ETag, current)
		}
		if err := m.Delete(t.Context(), p, "doc", current); err != nil {
			t.Fatalf("Delete with the current ETag: %v", err)
		}
		if _, err := m.Get(t.Context(), p, "doc"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get after Delete: err = %v, want ErrNotFound", err)
		}
	})

	t.Run("DeleteUnconditional", func(t *testing.T) {
		m, p := open(t), unique(t, "meta")
		mustCreate(t, m, store.Item{Partition: p, ID: "doc", Kind: store.KindSecret, Body: []byte(`{}`)})
		if err := m.Delete(t.Context(), p, "doc", ""); err != nil {
			t.Fatalf("unconditional Delete: %v", err)
		}
		if _, err := m.Get(t.Context(), p, "doc"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get after unconditional Delete: err = %v, want ErrNotFound", err)
		}
		if err := m.Delete(t.Context(), p, "doc", ""); err != nil {
			t.Fatalf("unconditional Delete of a missing document: err = %v, want nil", err)
		}
	})

	t.Run("DeleteMissingConditionalNotFound", func(t *testing.T) {
		m, p := open(t), unique(t, "meta")
		etag := mustCreate(t, m, store.Item{Partition: p, ID: "doc", Kind: store.KindSecret, Body: []byte(`{}`)})
		if err := m.Delete(t.Context(), p, "doc", etag); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if err := m.Delete(t.Context(), p, "doc", etag); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("conditional Delete of a missing document: err = %v, want ErrNotFound", err)
		}
	})

	t.Run("ListPages", func(t *testing.T) {
		m, p := open(t), unique(t, "meta")
		kind := p + "-kind"
		for _, i := range []int{3, 0, 4, 1, 2} {
			mustCreate(t, m, store.Item{Partition: p, ID: fmt.Sprintf("id-%02d", i), Kind: kind, Body: fmt.Appendf(nil, `{"i":%d}`, i)})
		}
		items := listAllItems(t, m, store.Query{Partition: p, Kind: kind, Limit: 2})
		var want []string
		for i := range 5 {
			want = append(want, fmt.Sprintf("%s|id-%02d", p, i))
		}
		if got := itemKeys(items); !slices.Equal(got, want) {
			t.Fatalf("List in pages of 2 = %v, want %v", got, want)
		}
		for _, it := range items {
			var b struct{ I int }
			if err := json.Unmarshal(it.Body, &b); err != nil || fmt.Sprintf("id-%02d", b.I) != it.ID {
				t.Errorf("List: item %s has body %s", it.ID, it.Body)
			}
			if it.Kind != kind || it.ETag == "" {
				t.Errorf("List: item %s has kind %q etag %q, want kind %q and an ETag", it.ID, it.Kind, it.ETag, kind)
			}
		}
	})

	t.Run("ListFiltersKindAndPartition", func(t *testing.T) {
		m, p := open(t), unique(t, "meta")
		kind, other := p+"-kind", p+"-other"
		for _, it := range []store.Item{
			{Partition: p, ID: "a", Kind: kind},
			{Partition: p, ID: "b", Kind: other},
			{Partition: p + "-2", ID: "c", Kind: kind},
			{Partition: p, ID: "d", Kind: kind},
			{Partition: p + "-2", ID: "e", Kind: other},
		} {
			it.Body = []byte(`{}`)
			mustCreate(t, m, it)
		}
		if got, want := itemKeys(listAllItems(t, m, store.Query{Partition: p, Kind: kind})), []string{p + "|a", p + "|d"}; !slices.Equal(got, want) {
			t.Errorf("List partition %s kind %s = %v, want %v", p, kind, got, want)
		}
		if got, want := itemKeys(listAllItems(t, m, store.Query{Partition: p, Kind: other})), []string{p + "|b"}; !slices.Equal(got, want) {
			t.Errorf("List partition %s kind %s = %v, want %v", p, other, got, want)
		}
		if got, want := itemKeys(listAllItems(t, m, store.Query{Partition: p + "-3", Kind: kind})), []string(nil); !slices.Equal(got, want) {
			t.Errorf("List of an empty partition = %v, want %v", got, want)
		}
	})

	t.Run("ListAcrossPartitions", func(t *testing.T) {
		m, p := open(t), unique(t, "meta")
		kind := p + "-kind"
		var want []string
		for _, part := range []string{"a", "b", "c"} {
			for _, id := range []string{"1", "2"} {
				want = append(want, p+"-"+part+"|"+id)
			}
		}
		for _, key := range []string{"b|2", "a|1", "c|1", "b|1", "c|2", "a|2"} {
			mustCreate(t, m, store.Item{Partition: p + "-" + key[:1], ID: key[2:], Kind: kind, Body: []byte(`{}`)})
		}
		mustCreate(t, m, store.Item{Partition: p + "-b", ID: "3", Kind: p + "-other", Body: []byte(`{}`)})
		for _, limit := range []int{0, 2, 4} {
			if got := itemKeys(listAllItems(t, m, store.Query{Kind: kind, Limit: limit})); !slices.Equal(got, want) {
				t.Errorf("List every partition, limit %d = %v, want %v", limit, got, want)
			}
		}
	})

	t.Run("ConcurrentCASLosesNothing", func(t *testing.T) {
		m, p := open(t), unique(t, "meta")
		const workers, increments = 16, 20
		mustCreate(t, m, store.Item{Partition: p, ID: "counter", Kind: store.KindDeployment, Body: []byte(`{"n":0}`)})
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for range increments {
					if err := increment(t, m, p, "counter"); err != nil {
						t.Errorf("worker %d: %v", w, err)
						return
					}
				}
			})
		}
		wg.Wait()
		var c struct{ N int }
		if it := mustGet(t, m, p, "counter"); json.Unmarshal(it.Body, &c) != nil || c.N != workers*increments {
			t.Fatalf("after %d×%d compare-and-swap increments: counter = %s, want {\"n\":%d}", workers, increments, it.Body, workers*increments)
		}
	})
}

// increment adds one to the counter document with a read → Replace(ifMatch)
// loop that retries on ErrConflict.
func increment(t *testing.T, m store.Metadata, partition, id string) error {
	for range 10000 {
		it, err := m.Get(t.Context(), partition, id)
		if err != nil {
			return fmt.Errorf("Get: %w", err)
		}
		var c struct {
			N int `json:"n"`
		}
		if err := json.Unmarshal(it.Body, &c); err != nil {
			return fmt.Errorf("body %s: %w", it.Body, err)
		}
		c.N++
		it.Body, _ = json.Marshal(c)
		_, err = m.Replace(t.Context(), it, it.ETag)
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, store.ErrConflict):
			return fmt.Errorf("Replace: %w", err)
		}
	}
	return errors.New("no Replace succeeded in 10000 tries")
}

func mustCreate(t *testing.T, m store.Metadata, it store.Item) string {
	t.Helper()
	etag, err := m.Create(t.Context(), it)
	if err != nil {
		t.Fatalf("Create %s/%s: %v", it.Partition, it.ID, err)
	}
	return etag
}

func mustGet(t *testing.T, m store.Metadata, partition, id string) store.Item {
	t.Helper()
	it, err := m.Get(t.Context(), partition, id)
	if err != nil {
		t.Fatalf("Get %s/%s: %v", partition, id, err)
	}
	return it
}

// listAllItems follows continuations to the end, checking that no page is
// longer than the query's limit.
func listAllItems(t *testing.T, m store.Metadata, q store.Query) []store.Item {
	t.Helper()
	var items []store.Item
	for range 1000 {
		page, err := m.List(t.Context(), q)
		if err != nil {
			t.Fatalf("List %+v: %v", q, err)
		}
		if q.Limit > 0 && len(page.Items) > q.Limit {
			t.Fatalf("List %+v: %d items, want at most the limit %d", q, len(page.Items), q.Limit)
		}
		items = append(items, page.Items...)
		if page.Continuation == "" {
			return items
		}
		q.Continuation = page.Continuation
	}
	t.Fatalf("List %+v did not end after 1000 pages", q)
	return nil
}

// itemKeys returns "partition|id" for each item, in listing order.
func itemKeys(items []store.Item) []string {
	var keys []string
	for _, it := range items {
		keys = append(keys, it.Partition+"|"+it.ID)
	}
	return keys
}

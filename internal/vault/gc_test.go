package vault_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/store"
)

func TestCollectGarbageDeletesOnlyOldOrphans(t *testing.T) {
	ctx := context.Background()
	e := newRotEnv(t)
	e.put(t, "tenant/alice", "a")
	e.put(t, "tenant/alice", "b")
	e.put(t, "tenant/alice", "b")
	e.put(t, "tenant/bob", "doomed")
	e.put(t, "tenant/carol", "damaged")
	alice, bob, carol := e.hash(t, "tenant/alice"), e.hash(t, "tenant/bob"), e.hash(t, "tenant/carol")

	// Bob's secret is being purged: its blob stays referenced until the
	// purge deletes it.
	markPurging(t, e, bob, "s:doomed")
	// Carol has a document that does not decode: her references are unknown.
	if _, err := e.meta.Create(ctx, store.Item{Partition: carol, ID: "s:broken", Kind: store.KindSecret, Body: []byte(`{"name":"other"}`)}); err != nil {
		t.Fatal(err)
	}
	orphans := []string{alice + "/00000000000000000000000000000001", bob + "/00000000000000000000000000000002"}
	kept := []string{carol + "/00000000000000000000000000000003", "not-a-ciphertext/blob"}
	for _, n := range append(slices.Clone(orphans), kept...) {
		if err := e.blobs.Create(ctx, n, []byte("ciphertext")); err != nil {
			t.Fatal(err)
		}
	}
	before := e.blobNames(t, "")

	// Within the grace period, nothing goes.
	res := collectAll(t, e, time.Now().Add(-time.Hour), 2)
	if res.Collected != 0 || len(e.blobNames(t, "")) != len(before) {
		t.Fatalf("young orphans collected: %+v", res)
	}
	res = collectAll(t, e, time.Now().Add(time.Hour), 2)
	if res.Examined != len(before) || res.Collected != len(orphans) || res.Failed != 2 {
		t.Fatalf("CollectGarbage = %+v, want %d examined, %d collected, 2 failed (carol's)", res, len(before), len(orphans))
	}
	after := e.blobNames(t, "")
	for _, n := range orphans {
		if slices.Contains(after, n) {
			t.Errorf("orphan %s kept", n)
		}
	}
	for _, n := range before {
		if !slices.Contains(orphans, n) && !slices.Contains(after, n) {
			t.Errorf("%s deleted, but it is referenced or not collectable", n)
		}
	}
	e.mu.Lock()
	for k := range e.acked {
		if k.owner != "tenant/alice" {
			delete(e.acked, k)
		}
	}
	e.mu.Unlock()
	e.checkAcked(t)
}

func collectAll(t *testing.T, e *rotEnv, olderThan time.Time, limit int) (total struct{ Examined, Collected, Failed int }) {
	t.Helper()
	cont := ""
	for {
		res, err := e.v.CollectGarbage(context.Background(), cont, limit, olderThan)
		if err != nil {
			t.Fatalf("CollectGarbage: %v", err)
		}
		total.Examined += res.Examined
		total.Collected += res.Collected
		total.Failed += res.Failed
		if cont = res.Continuation; cont == "" {
			return total
		}
	}
}

func markPurging(t *testing.T, e *rotEnv, oh, id string) {
	t.Helper()
	ctx := context.Background()
	it, err := e.meta.Get(ctx, oh, id)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(it.Body, &doc); err != nil {
		t.Fatal(err)
	}
	doc["purging"] = true
	it.Body, _ = json.Marshal(doc)
	if _, err := e.meta.Replace(ctx, it, it.ETag); err != nil {
		t.Fatal(err)
	}
}

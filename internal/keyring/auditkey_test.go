package keyring_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/credvault/credvault/internal/store"
)

func TestAuditKey(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	first, second := w.instance(0), w.instance(0)

	key, v, err := first.AuditKey(ctx)
	if err != nil || len(key) != 32 || v != 1 {
		t.Fatalf("AuditKey = %d bytes, version %d, %v; want 32 bytes, version 1", len(key), v, err)
	}
	again, v2, err := second.AuditKey(ctx)
	if err != nil || !bytes.Equal(again, key) || v2 != v {
		t.Fatalf("another instance over the same store got a different audit key (version %d, %v)", v2, err)
	}
	other, _, err := newWorld(t).instance(0).AuditKey(ctx)
	if err != nil || bytes.Equal(other, key) {
		t.Fatalf("two deployments share an audit key (%v)", err)
	}
	index := mustOwnerHash(t, first, "x") // the index key is another key
	if bytes.Contains([]byte(index), key[:4]) {
		t.Fatal("owner hash leaks the audit key")
	}

	// The stored document holds the key only wrapped.
	it, err := w.meta.Get(ctx, store.Domains, "deployment")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(it.Body, key) || bytes.Contains(it.Body, []byte(jsonBytes(t, key))) {
		t.Fatal("the deployment record holds the audit key in the clear")
	}
}

// A deployment recorded before the audit trail existed gets its audit key on
// first use, once, whichever instance asks first.
func TestAuditKeyAddedToAnOldDeployment(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	h := w.instance(0)
	mustOwnerHash(t, h, "x") // records the deployment
	it, err := w.meta.Get(ctx, store.Domains, "deployment")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(it.Body, &doc); err != nil {
		t.Fatal(err)
	}
	delete(doc, "audit")
	body, _ := json.Marshal(doc)
	if _, err := w.meta.Replace(ctx, store.Item{Partition: store.Domains, ID: "deployment", Kind: it.Kind, Body: body}, it.ETag); err != nil {
		t.Fatal(err)
	}

	a, b := w.instance(0), w.instance(0)
	ka, _, err := a.AuditKey(ctx)
	if err != nil {
		t.Fatalf("AuditKey on an old deployment: %v", err)
	}
	kb, _, err := b.AuditKey(ctx)
	if err != nil || !bytes.Equal(ka, kb) {
		t.Fatalf("a second instance got another audit key (%v)", err)
	}
	if mustOwnerHash(t, a, "x") != mustOwnerHash(t, h, "x") {
		t.Fatal("adding the audit key changed the index key")
	}
}

func jsonBytes(t *testing.T, b []byte) string {
	t.Helper()
	s, err := json.Marshal(b) // base64, as a document would hold it
	if err != nil {
		t.Fatal(err)
	}
	return string(s[1 : len(s)-1])
}

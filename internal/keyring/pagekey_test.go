package keyring_test

import (
	"bytes"
	"context"
	"testing"
)

func TestPageKey(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	first, second := w.instance(0), w.instance(0)

	key, err := first.PageKey(ctx)
	if err != nil || len(key) != 32 {
		t.Fatalf("PageKey = %d bytes, %v; want 32 bytes", len(key), err)
	}
	again, err := second.PageKey(ctx)
	if err != nil || !bytes.Equal(again, key) {
		t.Fatalf("another instance over the same store derived a different page key (%v)", err)
	}
	other, err := newWorld(t).instance(0).PageKey(ctx)
	if err != nil || bytes.Equal(other, key) {
		t.Fatalf("two deployments share a page key (%v)", err)
	}
	audit, _, err := first.AuditKey(ctx)
	if err != nil || bytes.Equal(audit, key) {
		t.Fatalf("the page key is the audit key (%v)", err)
	}
}

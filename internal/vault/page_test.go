package vault_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/credvault/credvault/internal/vault"
)

// listAll walks a listing page by page and returns the names in order.
func listAll(t *testing.T, list func(cont string) (vault.Page, error)) []string {
	t.Helper()
	var names []string
	cont := ""
	for range 100 {
		p, err := list(cont)
		if err != nil {
			t.Fatalf("list page after %q: %v", cont, err)
		}
		for _, it := range p.Items {
			names = append(names, it.Name)
		}
		if cont = p.Continuation; cont == "" {
			return names
		}
	}
	t.Fatal("the listing never ended")
	return nil
}

func TestListPagesCoverEverySecretOnceInOrder(t *testing.T) {
	ctx := context.Background()
	e := newRotEnv(t)
	var want []string
	for i := range 7 {
		name := fmt.Sprintf("s%02d", i)
		want = append(want, name)
		e.put(t, "tenant/alice", name)
	}
	e.put(t, "tenant/bob", "bobs")
	if err := e.v.Delete(ctx, "tenant/alice", "s03", ""); err != nil {
		t.Fatal(err)
	}
	live := append(append([]string{}, want[:3]...), want[4:]...)

	for _, limit := range []int{1, 2, 3, 7, 100} {
		got := listAll(t, func(cont string) (vault.Page, error) {
			return e.v.List(ctx, "tenant/alice", vault.ListOptions{Limit: limit, Continuation: cont})
		})
		if strings.Join(got, ",") != strings.Join(live, ",") {
			t.Fatalf("limit %d: pages gave %v, want %v", limit, got, live)
		}
	}
	// Another instance of the same deployment accepts the token.
	first, err := e.v.List(ctx, "tenant/alice", vault.ListOptions{Limit: 2})
	if err != nil || first.Continuation == "" {
		t.Fatalf("first page: %v, continuation %q", err, first.Continuation)
	}
	next, err := e.fresh().List(ctx, "tenant/alice", vault.ListOptions{Limit: 2, Continuation: first.Continuation})
	if err != nil || len(next.Items) == 0 || next.Items[0].Name != "s02" {
		t.Fatalf("another instance's second page = %+v, %v; want it to start at s02", next, err)
	}
	deleted, err := e.v.List(ctx, "tenant/alice", vault.ListOptions{Deleted: true, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	got := listAll(t, func(cont string) (vault.Page, error) {
		return e.v.List(ctx, "tenant/alice", vault.ListOptions{Deleted: true, Limit: 1, Continuation: cont})
	})
	if strings.Join(got, ",") != "s03" {
		t.Fatalf("deleted listing = %v (first page %+v), want s03", got, deleted)
	}
	admin := listAll(t, func(cont string) (vault.Page, error) {
		return e.v.AdminList(ctx, vault.ListOptions{Limit: 2, Continuation: cont})
	})
	if len(admin) != len(live)+1 {
		t.Fatalf("admin listing = %v, want alice's %d live secrets and bob's", admin, len(live))
	}
}

func TestListRefusesForeignAndTamperedTokens(t *testing.T) {
	ctx := context.Background()
	e := newRotEnv(t)
	for i := range 5 {
		e.put(t, "tenant/alice", fmt.Sprintf("s%d", i))
		e.put(t, "tenant/bob", fmt.Sprintf("s%d", i))
	}
	alice := func(cont string, deleted bool) error {
		_, err := e.v.List(ctx, "tenant/alice", vault.ListOptions{Limit: 2, Continuation: cont, Deleted: deleted})
		return err
	}
	page := func(p vault.Page, err error) string {
		t.Helper()
		if err != nil || p.Continuation == "" {
			t.Fatalf("page: %v, continuation %q", err, p.Continuation)
		}
		return p.Continuation
	}
	tok := page(e.v.List(ctx, "tenant/alice", vault.ListOptions{Limit: 2}))
	if err := alice(tok, false); err != nil {
		t.Fatalf("alice's own token refused: %v", err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		t.Fatalf("token %q is not base64url: %v", tok, err)
	}
	flip := func(i int) string {
		b := append([]byte{}, raw...)
		b[i] ^= 1
		return base64.RawURLEncoding.EncodeToString(b)
	}
	storeToken := raw[1 : len(raw)-32]
	cases := []struct {
		what, token string
		deleted     bool
	}{
		{"not base64", "!!", false},
		{"the version byte changed", flip(0), false},
		{"the store token changed", flip(1), false},
		{"the MAC changed", flip(len(raw) - 1), false},
		{"truncated", tok[:len(tok)-4], false},
		{"the MAC cut off", base64.RawURLEncoding.EncodeToString(raw[:len(raw)-32]), false},
		{"the bare store token", base64.RawURLEncoding.EncodeToString(storeToken), false},
		{"a forged store token", base64.RawURLEncoding.EncodeToString(append([]byte{1}, make([]byte, 40)...)), false},
		{"bob's token", page(e.v.List(ctx, "tenant/bob", vault.ListOptions{Limit: 2})), false},
		{"the admin listing's token", page(e.v.AdminList(ctx, vault.ListOptions{Limit: 2})), false},
		{"a live listing's token on the deleted listing", tok, true},
		{"another deployment's token", page(otherDeployment(t).List(ctx, "tenant/alice", vault.ListOptions{Limit: 2})), false},
		{"too long", strings.Repeat("A", 20<<10), false},
	}
	for _, c := range cases {
		err := alice(c.token, c.deleted)
		var inv *vault.InvalidError
		if !errors.As(err, &inv) || inv.Field != "continuation" {
			t.Errorf("%s: List error = %v, want an invalid continuation", c.what, err)
		}
	}
	if _, err := e.v.AdminList(ctx, vault.ListOptions{Limit: 2, Continuation: tok}); err == nil {
		t.Error("the admin listing accepted an owner's token")
	}
}

// otherDeployment is another deployment where alice has secrets s0..s4.
func otherDeployment(t *testing.T) *vault.Vault {
	t.Helper()
	o := newRotEnv(t)
	for i := range 5 {
		o.put(t, "tenant/alice", fmt.Sprintf("s%d", i))
	}
	return o.v
}

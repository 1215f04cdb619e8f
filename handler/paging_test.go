package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/credvault/credvault/internal/identity"
)

type listPage struct {
	Items []struct {
		Name  string
		Owner string
	}
	Continuation string
}

// walk lists path page by page (limit per page) and returns the names in
// order and the continuation tokens it was given.
func (e *testEnv) walk(t *testing.T, path, tok string, limit int) (names, tokens []string) {
	t.Helper()
	cont := ""
	for range 200 {
		q := url.Values{"limit": {fmt.Sprint(limit)}}
		if cont != "" {
			q.Set("continuation", cont)
		}
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		r := e.do("GET", path+sep+q.Encode(), tok, nil)
		wantStatus(t, "list page", r, http.StatusOK)
		var p listPage
		decode(t, r.body, &p)
		if len(p.Items) > limit {
			t.Fatalf("a page of %d items with limit %d", len(p.Items), limit)
		}
		for _, it := range p.Items {
			names = append(names, it.Name)
		}
		if cont = p.Continuation; cont == "" {
			return names, tokens
		}
		tokens = append(tokens, cont)
	}
	t.Fatal("the listing never ended")
	return nil, nil
}

// dataAtRest is what the service keeps, less the audit trail (which records
// refused requests too).
func (e *testEnv) dataAtRest() map[string][]byte {
	m := e.atRest()
	for k := range m {
		if strings.HasPrefix(k, "file:"+filepath.Join(e.dir, "audit")+"/") {
			delete(m, k)
		}
	}
	return m
}

func TestPagingCoversEverySecretOnceInStableOrder(t *testing.T) {
	e := start(t)
	alice, bob := e.token("alice"), e.token("bob")
	var want []string
	for i := range 11 {
		name := fmt.Sprintf("p%02d", (i*7)%11) // created out of order
		wantStatus(t, "put", e.do("PUT", "/api/credentials/"+name, alice, `{"value":1}`), http.StatusCreated)
	}
	for i := range 11 {
		want = append(want, fmt.Sprintf("p%02d", i))
	}
	wantStatus(t, "bob's put", e.do("PUT", "/api/credentials/bobs", bob, `{"value":1}`), http.StatusCreated)
	for _, limit := range []int{1, 3, 4, 11, 1000} {
		got, _ := e.walk(t, "/api/credentials", alice, limit)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("limit %d: pages gave %v, want %v", limit, got, want)
		}
	}
	// The same token gives the same page again (stable), on a new instance too.
	_, tokens := e.walk(t, "/api/credentials", alice, 4)
	first := e.do("GET", "/api/credentials?limit=4&continuation="+tokens[0], alice, nil)
	e.restart()
	again := e.do("GET", "/api/credentials?limit=4&continuation="+tokens[0], alice, nil)
	wantStatus(t, "the second page after a restart", again, http.StatusOK)
	if string(first.body) != string(again.body) {
		t.Fatalf("the same token gave %s, then after a restart %s", first.body, again.body)
	}

	admin := e.token("root", identity.CredentialsAdmin)
	all, _ := e.walk(t, "/api/admin/credentials", admin, 5)
	if len(all) != len(want)+1 {
		t.Fatalf("admin listing = %v, want alice's %d secrets and bob's", all, len(want))
	}
	// Owners appear as their keyed hashes, never as ids.
	r := e.do("GET", "/api/admin/credentials?limit=100", admin, nil)
	wantStatus(t, "admin listing", r, http.StatusOK)
	var p listPage
	decode(t, r.body, &p)
	wantOwner := map[string]string{"bobs": e.ownerHash("bob")}
	for _, n := range want {
		wantOwner[n] = e.ownerHash("alice")
	}
	for _, it := range p.Items {
		if it.Owner != wantOwner[it.Name] || it.Owner == "" {
			t.Errorf("admin listing: %s has owner %q, want the owner hash %q", it.Name, it.Owner, wantOwner[it.Name])
		}
	}
	for _, user := range []string{"alice", "bob"} {
		for _, id := range []string{ownerOf(user), identity.DevObjectID(user)} {
			if bytes.Contains(r.body, []byte(id)) {
				t.Errorf("the admin listing holds %s's id %q: %s", user, id, r.body)
			}
		}
	}
}

func TestPagingRefusesForeignAndTamperedTokens(t *testing.T) {
	e := start(t)
	alice, bob := e.token("alice", identity.AllRoles()...), e.token("bob")
	for i := range 5 {
		e.do("PUT", fmt.Sprintf("/api/credentials/s%d", i), alice, `{"value":1}`)
		e.do("PUT", fmt.Sprintf("/api/credentials/s%d", i), bob, `{"value":1}`)
		e.do("PUT", fmt.Sprintf("/api/credentials/d%d", i), alice, `{"value":1}`)
		e.do("DELETE", fmt.Sprintf("/api/credentials/d%d", i), alice, nil)
	}
	_, mine := e.walk(t, "/api/credentials", alice, 2)
	_, bobs := e.walk(t, "/api/credentials", bob, 2)
	_, deleted := e.walk(t, "/api/credentials?deleted=true", alice, 2)
	_, admins := e.walk(t, "/api/admin/credentials", alice, 2)
	tok := mine[0]
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		t.Fatalf("token %q is not base64url: %v", tok, err)
	}
	flipped := func(i int) string {
		b := append([]byte{}, raw...)
		b[i] ^= 0x20
		return base64.RawURLEncoding.EncodeToString(b)
	}
	before := e.dataAtRest()
	for _, c := range []struct{ what, path string }{
		{"a byte of the store token changed", "/api/credentials?continuation=" + flipped(1)},
		{"a byte of the MAC changed", "/api/credentials?continuation=" + flipped(len(raw)-1)},
		{"truncated", "/api/credentials?continuation=" + tok[:len(tok)/2]},
		{"the store's own token", "/api/credentials?continuation=" + base64.RawURLEncoding.EncodeToString(raw[1:len(raw)-32])},
		{"forged", "/api/credentials?continuation=AQ" + strings.Repeat("A", 60)},
		{"not base64url", "/api/credentials?continuation=" + url.QueryEscape("a+b/c=")},
		{"another owner's token", "/api/credentials?continuation=" + bobs[0]},
		{"the deleted listing's token on the live one", "/api/credentials?continuation=" + deleted[0]},
		{"the live listing's token on the deleted one", "/api/credentials?deleted=true&continuation=" + tok},
		{"the admin listing's token on an owner's", "/api/credentials?continuation=" + admins[0]},
		{"an owner's token on the admin listing", "/api/admin/credentials?continuation=" + tok},
	} {
		wantProblem(t, c.what, e.do("GET", c.path, alice, nil), http.StatusBadRequest)
	}
	wantSameAtRest(t, "after refused continuation tokens", before, e.dataAtRest())
	// Alice's own token still works.
	wantStatus(t, "alice's own token", e.do("GET", "/api/credentials?limit=2&continuation="+tok, alice, nil), http.StatusOK)
}

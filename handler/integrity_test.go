package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/credvault/credvault/internal/envelope"
	"github.com/credvault/credvault/internal/identity"
	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/store"
)

func ownerOf(user string) string {
	return identity.Principal{Tenant: identity.DevTenant, Object: identity.DevObjectID(user)}.Owner()
}

func (e *testEnv) ownerHash(user string) string {
	e.t.Helper()
	oh, err := e.app.keys.OwnerHash(context.Background(), ownerOf(user))
	if err != nil {
		e.t.Fatal(err)
	}
	return oh
}

// doc reads a secret document as a generic JSON object.
func (e *testEnv) doc(user, name string) (map[string]any, string) {
	e.t.Helper()
	it, err := e.app.meta.Get(context.Background(), e.ownerHash(user), "s:"+name)
	if err != nil {
		e.t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(it.Body, &m); err != nil {
		e.t.Fatal(err)
	}
	return m, it.ETag
}

func (e *testEnv) writeDoc(partition, id, kind string, body any) {
	e.t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx := context.Background()
	it, err := e.app.meta.Get(ctx, partition, id)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.app.meta.Replace(ctx, store.Item{Partition: partition, ID: id, Kind: kind, Body: b}, it.ETag); err != nil {
		e.t.Fatal(err)
	}
}

// blobOf returns the blob name of a secret's latest version.
func (e *testEnv) blobOf(user, name string) string {
	d, _ := e.doc(user, name)
	vs := d["versions"].([]any)
	return vs[len(vs)-1].(map[string]any)["blob"].(string)
}

func (e *testEnv) readBlob(name string) []byte {
	b, err := e.app.blobs.Read(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// overwriteBlob replaces a blob's bytes in place, as an attacker with
// storage access would.
func (e *testEnv) overwriteBlob(name string, b []byte) {
	e.t.Helper()
	if err := e.app.blobs.Delete(context.Background(), name); err != nil {
		e.t.Fatal(err)
	}
	if err := e.app.blobs.Create(context.Background(), name, b); err != nil {
		e.t.Fatal(err)
	}
}

// TestTamperingFailsClosed: every swap or change of ciphertext, wrapped keys
// or metadata makes a read fail with 500, and never returns wrong data.
func TestTamperingFailsClosed(t *testing.T) {
	for _, c := range []struct {
		name   string
		tamper func(e *testEnv)
		read   []string // user/name pairs that must now fail closed
	}{
		{"flipped ciphertext byte", func(e *testEnv) {
			b := e.readBlob(e.blobOf("alice", "a"))
			b[len(b)-20] ^= 1
			e.overwriteBlob(e.blobOf("alice", "a"), b)
		}, []string{"alice/a"}},
		{"blobs swapped between names", func(e *testEnv) {
			a, b := e.readBlob(e.blobOf("alice", "a")), e.readBlob(e.blobOf("alice", "b"))
			e.overwriteBlob(e.blobOf("alice", "a"), b)
			e.overwriteBlob(e.blobOf("alice", "b"), a)
		}, []string{"alice/a", "alice/b"}},
		{"blob copied to another owner", func(e *testEnv) {
			e.overwriteBlob(e.blobOf("bob", "a"), e.readBlob(e.blobOf("alice", "a")))
		}, []string{"bob/a"}},
		{"metadata points at another name's blob", func(e *testEnv) {
			d, _ := e.doc("alice", "a")
			d["versions"].([]any)[1].(map[string]any)["blob"] = e.blobOf("alice", "b")
			e.writeDoc(e.ownerHash("alice"), "s:a", store.KindSecret, d)
		}, []string{"alice/a"}},
		{"metadata version renumbered", func(e *testEnv) {
			d, _ := e.doc("alice", "a")
			vs := d["versions"].([]any)
			vs[0].(map[string]any)["blob"] = vs[1].(map[string]any)["blob"] // v1 now claims v2's ciphertext
			e.writeDoc(e.ownerHash("alice"), "s:a", store.KindSecret, d)
		}, []string{"alice/a?version=1"}},
		{"metadata claims another KEK version", func(e *testEnv) {
			d, _ := e.doc("alice", "a")
			d["versions"].([]any)[1].(map[string]any)["kek"] = 2
			e.writeDoc(e.ownerHash("alice"), "s:a", store.KindSecret, d)
		}, []string{"alice/a"}},
		{"keyring copied to another owner", func(e *testEnv) {
			it, err := e.app.meta.Get(context.Background(), e.ownerHash("alice"), keyring.KeyringID)
			if err != nil {
				t.Fatal(err)
			}
			var body any
			json.Unmarshal(it.Body, &body)
			e.writeDoc(e.ownerHash("bob"), keyring.KeyringID, store.KindKeyring, body)
		}, []string{"bob/a", "bob/b"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := start(t)
			for _, u := range []string{"alice", "bob"} {
				tok := e.token(u)
				for _, n := range []string{"a", "b"} {
					e.do("PUT", "/api/credentials/"+n, tok, `{"value":"`+u+`-`+n+`-1"}`)
					e.do("PUT", "/api/credentials/"+n, tok, `{"value":"`+u+`-`+n+`-2"}`)
				}
			}
			c.tamper(e)
			e.restart() // no cached key hides the change
			for _, un := range c.read {
				user, path, _ := strings.Cut(un, "/")
				r := e.do("GET", "/api/credentials/"+path, e.token(user), nil)
				wantProblem(t, "GET "+un+" after tampering", r, 500)
				if strings.Contains(string(r.body), "-1") || strings.Contains(string(r.body), "-2") {
					t.Fatalf("GET %s answered data: %s", un, r.body)
				}
			}
		})
	}
}

func TestEraseCryptoShredsAnOwner(t *testing.T) {
	e := start(t)
	alice, bob := e.token("alice"), e.token("bob")
	admin := e.token("admin", identity.CredentialsAdmin)
	for _, n := range []string{"a", "b", "c"} {
		e.do("PUT", "/api/credentials/"+n, alice, `{"value":"alice-`+n+`"}`)
	}
	e.do("DELETE", "/api/credentials/c", alice, nil)
	e.do("PUT", "/api/credentials/a", bob, `{"value":"bob-a"}`)
	aliceHash := e.ownerHash("alice")

	// A copy of alice's ciphertext, as a backup or an attacker would keep it.
	copies := map[string][]byte{}
	page, err := e.app.blobs.List(context.Background(), aliceHash+"/", "", 100)
	if err != nil || len(page.Blobs) != 3 {
		t.Fatalf("alice's blobs: %v, %v; want 3", page.Blobs, err)
	}
	for _, b := range page.Blobs {
		copies[b.Name] = e.readBlob(b.Name)
	}

	// An erase interrupted right after its first step already shreds.
	if err := e.app.keys.Erase(context.Background(), aliceHash); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, "GET after the keyring is gone", e.do("GET", "/api/credentials/a", alice, nil), 404)

	r := e.do("POST", "/api/admin/erase", admin, map[string]string{"owner": ownerOf("alice")})
	wantStatus(t, "erase", r, 200)
	rep := r.json(t)
	if rep["owner"] != aliceHash || rep["secretsDeleted"] != float64(3) || rep["blobsDeleted"] != float64(3) {
		t.Fatalf("erase report %s, want 3 secrets and 3 blobs of %s", r.body, aliceHash)
	}
	if strings.Contains(string(r.body), identity.DevObjectID("alice")) {
		t.Fatalf("erase report contains the raw owner id")
	}
	if p, _ := e.app.blobs.List(context.Background(), aliceHash+"/", "", 100); len(p.Blobs) != 0 {
		t.Fatalf("blobs left after erase: %v", p.Blobs)
	}
	if l := e.do("GET", "/api/credentials?deleted=true", alice, nil); strings.Contains(string(l.body), `"name"`) {
		t.Fatalf("alice still lists: %s", l.body)
	}
	if g := e.do("GET", "/api/credentials/a", bob, nil); !strings.Contains(string(g.body), "bob-a") {
		t.Fatalf("bob's secret after alice's erase: %s", g.body)
	}
	again := e.do("POST", "/api/admin/erase", admin, map[string]string{"owner": ownerOf("alice")})
	if again.status != 200 || again.json(t)["secretsDeleted"] != float64(0) {
		t.Fatalf("second erase: %d %s, want 200 with nothing left", again.status, again.body)
	}

	// alice writes again: a new keyring, whose KEKs open none of the copies.
	e.do("PUT", "/api/credentials/a", alice, `{"value":"new"}`)
	ring, err := e.app.keys.Owner(context.Background(), aliceHash)
	if err != nil {
		t.Fatal(err)
	}
	kek, err := ring.KEK(context.Background(), ring.Active())
	if err != nil {
		t.Fatal(err)
	}
	for name, ct := range copies {
		for _, secret := range []string{"a", "b", "c"} {
			for v := uint64(1); v <= 2; v++ {
				id := envelope.Identity{Owner: aliceHash, Name: secret, Version: v, KEKVersion: ring.Active()}
				if pt, err := envelope.Open(kek, id, ct); err == nil {
					t.Fatalf("copied blob %s opened after erase: %q", name, pt)
				}
			}
		}
	}
}

func TestRevokedCMKFailsClosed(t *testing.T) {
	e := start(t)
	alice := e.token("alice")
	e.do("PUT", "/api/credentials/a", alice, `{"value":"v"}`)
	e.setCMKEnabled(false)
	e.restart()
	for _, c := range []struct{ method, body string }{{"GET", ""}, {"PUT", `{"value":"w"}`}} {
		var body any
		if c.body != "" {
			body = c.body
		}
		r := e.do(c.method, "/api/credentials/a", alice, body)
		wantProblem(t, c.method+" under a disabled CMK", r, 503)
		if !strings.Contains(string(r.body), "disabled") || r.header.Get("Retry-After") == "" {
			t.Fatalf("%s under a disabled CMK: %s (Retry-After %q)", c.method, r.body, r.header.Get("Retry-After"))
		}
	}
	e.setCMKEnabled(true)
	e.restart()
	if g := e.do("GET", "/api/credentials/a", alice, nil); g.status != 200 {
		t.Fatalf("GET after re-enabling the CMK: %d %s", g.status, g.body)
	}
}

func TestLocalCMKAndDevModeRefusedInAzure(t *testing.T) {
	err := run(context.Background(), nil, func(k string) string {
		if k == "WEBSITE_INSTANCE_ID" {
			return "abc"
		}
		return ""
	}, os.Stdout)
	if err == nil || !strings.Contains(err.Error(), "running in Azure") {
		t.Fatalf("start in Azure with local backends: %v, want a refusal", err)
	}
}

package vault_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/cmk"
	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/store"
	"github.com/credvault/credvault/internal/store/embedded"
	"github.com/credvault/credvault/internal/vault"
)

// rotEnv is a Vault over the embedded stores and a local CMK (RSA-2048),
// with a record of every acknowledged version and its value.
type rotEnv struct {
	dir   string
	cmk   *cmk.Local
	meta  *embedded.Metadata
	blobs *embedded.Blobs
	keys  *keyring.Hierarchy
	v     *vault.Vault

	mu    sync.Mutex
	acked map[rotAck]json.RawMessage
	seq   int
}

type rotAck struct {
	owner, name string
	version     uint64
}

func newRotEnv(t *testing.T) *rotEnv {
	t.Helper()
	dir := t.TempDir()
	key, err := cmk.OpenLocal(t.TempDir(), cmk.LocalOptions{Bits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := embedded.OpenBlobs(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	meta, err := embedded.OpenMetadata(filepath.Join(dir, "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	e := &rotEnv{dir: dir, cmk: key, meta: meta, blobs: blobs, acked: map[rotAck]json.RawMessage{}}
	e.keys = keyring.New(key, meta, keyring.Options{Domains: 2})
	e.v = vault.New(e.keys, blobs, meta, vault.Options{MaxVersions: 50})
	return e
}

// fresh is a new instance over the same stores: nothing cached.
func (e *rotEnv) fresh() *vault.Vault {
	return vault.New(keyring.New(e.cmk, e.meta, keyring.Options{}), e.blobs, e.meta, vault.Options{MaxVersions: 50})
}

// marker is a string that must never be found at rest.
func (e *rotEnv) value() json.RawMessage {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	return json.RawMessage(fmt.Sprintf(`{"token":"plaintext-marker-%06d"}`, e.seq))
}

func (e *rotEnv) put(t *testing.T, owner, name string) {
	t.Helper()
	val := e.value()
	s, err := e.v.Put(context.Background(), owner, vault.PutRequest{Name: name, Value: val})
	if err != nil {
		t.Errorf("put %s: %v", name, err)
		return
	}
	e.mu.Lock()
	e.acked[rotAck{owner, name, s.Version}] = val
	e.mu.Unlock()
}

func (e *rotEnv) hash(t *testing.T, owner string) string {
	t.Helper()
	oh, err := e.keys.OwnerHash(context.Background(), owner)
	if err != nil {
		t.Fatal(err)
	}
	return oh
}

// checkAcked reads every acknowledged version back on a new instance.
func (e *rotEnv) checkAcked(t *testing.T) {
	t.Helper()
	v := e.fresh()
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, want := range e.acked {
		s, err := v.Get(context.Background(), k.owner, k.name, k.version)
		if err != nil {
			t.Errorf("%s v%d: %v", k.name, k.version, err)
			continue
		}
		if !bytes.Equal(s.Value, want) {
			t.Errorf("%s v%d = %s, want %s", k.name, k.version, s.Value, want)
		}
	}
}

// docVersion is what these tests read of a secret document.
type docVersion struct {
	Version uint64 `json:"v"`
	Blob    string `json:"blob"`
	KEK     uint32 `json:"kek"`
}

type docBody struct {
	Name     string       `json:"name"`
	Versions []docVersion `json:"versions"`
	Purging  bool         `json:"purging"`
}

// versions returns every secret version of an owner, by name.
func (e *rotEnv) versions(t *testing.T, oh string) map[string][]docVersion {
	t.Helper()
	p, err := e.meta.List(context.Background(), store.Query{Partition: oh, Kind: store.KindSecret, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]docVersion{}
	for _, it := range p.Items {
		var d docBody
		if err := json.Unmarshal(it.Body, &d); err != nil {
			t.Fatal(err)
		}
		out[d.Name] = d.Versions
	}
	return out
}

func (e *rotEnv) blobNames(t *testing.T, prefix string) []string {
	t.Helper()
	var out []string
	cont := ""
	for {
		p, err := e.blobs.List(context.Background(), prefix, cont, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range p.Blobs {
			out = append(out, b.Name)
		}
		if cont = p.Continuation; cont == "" {
			return out
		}
	}
}

// checkNoPlaintext checks that no file of the data directory holds a value.
func (e *rotEnv) checkNoPlaintext(t *testing.T) {
	t.Helper()
	err := filepath.WalkDir(e.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte("plaintext-marker-")) {
			t.Errorf("%s holds a secret value", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// sweepAll runs an owner's sweep to its end, pages of limit documents, and
// deletes the replaced blobs.
func sweepAll(t *testing.T, v *vault.Vault, oh string, limit int) vault.ReencryptResult {
	t.Helper()
	var total vault.ReencryptResult
	cont := ""
	for {
		res, err := v.ReencryptPage(context.Background(), oh, cont, limit)
		if err != nil {
			t.Fatalf("ReencryptPage: %v", err)
		}
		total.Examined += res.Examined
		total.Reencrypted += res.Reencrypted
		total.Failed += res.Failed
		total.Uncertain += res.Uncertain
		for _, k := range res.InUse {
			if !slices.Contains(total.InUse, k) {
				total.InUse = append(total.InUse, k)
			}
		}
		total.Replaced = append(total.Replaced, res.Replaced...)
		if cont = res.Continuation; cont == "" {
			break
		}
	}
	if _, err := v.DeleteBlobs(context.Background(), total.Replaced); err != nil {
		t.Fatal(err)
	}
	slices.Sort(total.InUse)
	return total
}

func TestReencryptMovesEveryVersionToTheActiveKEK(t *testing.T) {
	ctx := context.Background()
	e := newRotEnv(t)
	const owner = "tenant/alice"
	for i := range 5 {
		for range i%3 + 1 {
			e.put(t, owner, fmt.Sprintf("secret-%d", i))
		}
	}
	e.put(t, "tenant/bob", "untouched")
	if err := e.v.Delete(ctx, owner, "secret-4", ""); err != nil { // soft-deleted: moved too
		t.Fatal(err)
	}
	oh := e.hash(t, owner)
	before := e.versions(t, oh)
	total := 0
	for _, vs := range before {
		total += len(vs)
	}

	if res, err := e.keys.RotateKEK(ctx, oh, time.Now().Add(time.Second)); err != nil || res.Added != 1 {
		t.Fatalf("RotateKEK = %+v, %v", res, err)
	}
	e.put(t, owner, "secret-0") // written under the new KEK at once

	res := sweepAll(t, e.v, oh, 2)
	if res.Examined != total+1 || res.Reencrypted != total || res.Failed != 0 || res.Uncertain != 0 {
		t.Fatalf("sweep = %+v, want %d examined, %d re-encrypted", res, total+1, total)
	}
	if !slices.Equal(res.InUse, []uint32{2}) || len(res.Replaced) != total {
		t.Fatalf("sweep: in use %v, replaced %d; want [2] and %d", res.InUse, len(res.Replaced), total)
	}
	after := e.versions(t, oh)
	blobs := e.blobNames(t, oh+"/")
	n := 0
	for name, vs := range after {
		for i, vd := range vs {
			n++
			if vd.KEK != 2 {
				t.Errorf("%s v%d still under KEK %d", name, vd.Version, vd.KEK)
			}
			if i < len(before[name]) && vd.Blob == before[name][i].Blob {
				t.Errorf("%s v%d kept its blob: re-encrypted in place?", name, vd.Version)
			}
			if !slices.Contains(blobs, vd.Blob) {
				t.Errorf("%s v%d points at a missing blob", name, vd.Version)
			}
		}
	}
	if len(blobs) != n {
		t.Fatalf("%d blobs for %d versions: the old ones were not deleted", len(blobs), n)
	}
	if again := sweepAll(t, e.v, oh, 2); again.Reencrypted != 0 {
		t.Fatalf("second sweep re-encrypted %d, want 0", again.Reencrypted)
	}
	if _, err := e.v.Restore(ctx, owner, "secret-4"); err != nil {
		t.Fatal(err)
	}
	e.checkAcked(t)
	e.checkNoPlaintext(t)
}

func TestReencryptLeavesPurgingSecretsAndErasedOwners(t *testing.T) {
	ctx := context.Background()
	e := newRotEnv(t)
	const owner = "tenant/alice"
	e.put(t, owner, "keep")
	e.put(t, owner, "doomed")
	oh := e.hash(t, owner)
	markPurging(t, e, oh, "s:doomed") // a purge that stopped after marking the document
	if _, err := e.keys.RotateKEK(ctx, oh, time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	res := sweepAll(t, e.v, oh, 10)
	if res.Reencrypted != 1 || !slices.Equal(res.InUse, []uint32{2}) {
		t.Fatalf("sweep = %+v, want the live secret moved, KEK 1 no longer in use", res)
	}
	if vs := e.versions(t, oh)["doomed"]; vs[0].KEK != 1 {
		t.Fatalf("the secret being purged was re-encrypted: %+v", vs)
	}
	if err := e.v.Purge(ctx, owner, "doomed"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.v.Erase(ctx, owner); err != nil {
		t.Fatal(err)
	}
	if _, err := e.v.ReencryptPage(ctx, oh, "", 10); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("sweep of an erased owner: %v, want ErrNotFound", err)
	}
}

// TestReencryptRacesWritersWithoutLosingAnything sweeps an owner again and
// again while other goroutines put new versions (with trimming) and delete
// and restore: every acknowledged version that is kept must read back, and
// no blob may be left that nothing references.
func TestReencryptRacesWritersWithoutLosingAnything(t *testing.T) {
	ctx := context.Background()
	e := newRotEnv(t)
	e.v = vault.New(e.keys, e.blobs, e.meta, vault.Options{MaxVersions: 4})
	const owner = "tenant/alice"
	names := []string{"a", "b", "c"}
	for _, n := range append(names, "d") { // d is deleted and restored, never written again
		e.put(t, owner, n)
	}
	oh := e.hash(t, owner)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := names[(w+i)%len(names)]
				if w == 3 {
					if err := e.v.Delete(ctx, owner, "d", ""); err == nil {
						if _, err := e.v.Restore(ctx, owner, "d"); err != nil {
							t.Errorf("restore: %v", err)
						}
					} else if !errors.Is(err, vault.ErrNotFound) {
						t.Errorf("delete: %v", err)
					}
					continue
				}
				e.put(t, owner, name)
			}
		}()
	}
	var replaced []string
	for i := range 6 {
		if _, err := e.keys.RotateKEK(ctx, oh, time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		cont := ""
		for {
			res, err := e.v.ReencryptPage(ctx, oh, cont, 1)
			if err != nil {
				t.Fatalf("sweep %d: %v", i, err)
			}
			replaced = append(replaced, res.Replaced...)
			if cont = res.Continuation; cont == "" {
				break
			}
		}
	}
	close(stop)
	wg.Wait()
	if _, err := e.v.DeleteBlobs(ctx, replaced); err != nil {
		t.Fatal(err)
	}

	// What is kept reads back; what was trimmed is gone with its blob.
	kept := map[rotAck]bool{}
	refs := map[string]bool{}
	for name, vs := range e.versions(t, oh) {
		for _, vd := range vs {
			kept[rotAck{owner, name, vd.Version}] = true
			refs[vd.Blob] = true
		}
	}
	e.mu.Lock()
	for k := range e.acked {
		if !kept[k] {
			delete(e.acked, k)
		}
	}
	n := len(e.acked)
	e.mu.Unlock()
	if n == 0 {
		t.Fatal("no acknowledged version kept")
	}
	e.checkAcked(t)
	for _, b := range e.blobNames(t, oh+"/") {
		if !refs[b] {
			// Only a put that lost its race and failed to delete its blob
			// may leave one; none fails here.
			t.Errorf("blob %s is referenced by nothing", b)
		}
	}
	e.checkNoPlaintext(t)
}

func TestDeleteBlobsCountsWhatItDeleted(t *testing.T) {
	e := newRotEnv(t)
	ctx := context.Background()
	for _, n := range []string{"0123456789abcdef0123456789abcdef/00", "0123456789abcdef0123456789abcdef/01"} {
		if err := e.blobs.Create(ctx, n, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	n, err := e.v.DeleteBlobs(ctx, []string{"0123456789abcdef0123456789abcdef/00", "0123456789abcdef0123456789abcdef/01", "0123456789abcdef0123456789abcdef/02"})
	if err != nil || n != 3 {
		t.Fatalf("DeleteBlobs = %d, %v; want 3 (a missing blob is deleted already)", n, err)
	}
	if got := e.blobNames(t, ""); len(got) != 0 {
		t.Fatalf("left %v", got)
	}
}

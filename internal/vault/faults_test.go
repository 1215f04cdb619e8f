package vault

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/store"
)

// faultCase is one injected fault: the nth call of method failed with kind;
// detail is that call's blob name or document id.
type faultCase struct {
	method string
	n      int
	kind   faultKind
	detail string
}

// landedWrite reports whether the failed call was a write of document id
// that landed although its caller was told it failed.
func (c faultCase) landedWrite(id string) bool {
	return c.kind == faultLost && c.detail == id &&
		(c.method == "meta.Create" || c.method == "meta.Replace" || c.method == "meta.Delete")
}

// faultOp is an operation whose every backend call is failed in turn.
type faultOp struct {
	name  string
	setup func(t *testing.T, e *faultEnv) // without faults; acknowledged data
	cold  bool                            // the operation runs on a new instance: nothing cached
	run   func(t *testing.T, e *faultEnv) error
	// check judges the outcome of a run that failed as c says: the error,
	// what a reader sees, and that a retry finishes the job.
	check func(t *testing.T, e *faultEnv, c faultCase, err error)
}

func (op faultOp) prepare(t *testing.T, newEnv func(*testing.T) *faultEnv) *faultEnv {
	t.Helper()
	e := newEnv(t)
	if op.setup != nil {
		op.setup(t, e)
	}
	if op.cold {
		e.restart()
	}
	e.f.reset()
	return e
}

// TestFaults fails every backend call of a put, a get, a delete, a purge and
// an erase in turn (on a warm instance and on a new one), each in three
// ways: the store is unavailable, the deadline passes, or the call lands and
// its answer is lost. The operation must answer ErrUnavailable, never a wrong
// value; acknowledged data must stay readable; nothing half-written may be
// visible; a retry must finish the job; and no value may be at rest.
func TestFaults(t *testing.T) {
	key := testCMK(t)
	runFaults(t, faultOps(), func(t *testing.T) *faultEnv { return newFaultEnv(t, key, Options{}) })
}

// runFaults runs the fault table of ops, each case in an environment of its
// own from newEnv: the same assertions whatever the stores and the CMK.
func runFaults(t *testing.T, ops []faultOp, newEnv func(*testing.T) *faultEnv) {
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			t.Parallel()
			// A run without faults counts the calls to fail.
			e := op.prepare(t, newEnv)
			if err := op.run(t, e); err != nil {
				t.Fatalf("without faults: %v", err)
			}
			e.checkStorage(t)
			counts, trace := e.f.snapshot()
			t.Logf("backend calls: %s", strings.Join(trace, ", "))
			if len(trace) == 0 {
				t.Fatal("the operation made no backend call")
			}
			for _, method := range slices.Sorted(maps.Keys(counts)) {
				for n := 1; n <= counts[method]; n++ {
					for _, kind := range e.f.kinds() {
						t.Run(fmt.Sprintf("%s#%d/%s", method, n, kind), func(t *testing.T) {
							t.Parallel()
							e := op.prepare(t, newEnv)
							e.f.arm(method, n, kind)
							err := op.run(t, e)
							detail, fired := e.f.firedDetail()
							e.f.reset()
							if !fired {
								t.Fatalf("%s call #%d was not made this time (err %v)", method, n, err)
							}
							op.check(t, e, faultCase{method, n, kind, detail}, err)
							e.checkStorage(t)
						})
					}
				}
			}
		})
	}
}

func faultOps() []faultOp {
	ops := []faultOp{
		{name: "put on a new deployment", run: putOp(alice, "seed"), check: checkPut(alice, "seed", 0)},
	}
	for _, cold := range []bool{false, true} {
		sfx := ""
		if cold {
			sfx = " on a new instance"
		}
		ops = append(ops,
			faultOp{name: "put a new version" + sfx, setup: seed, cold: cold,
				run: putOp(alice, "seed"), check: checkPut(alice, "seed", 1)},
			faultOp{name: "put a new name" + sfx, setup: seed, cold: cold,
				run: putOp(alice, "fresh"), check: checkPut(alice, "fresh", 0)},
			faultOp{name: "put an owner's first secret" + sfx, setup: seed, cold: cold,
				run: putOp(bob, "fresh"), check: checkPut(bob, "fresh", 0)},
			faultOp{name: "get" + sfx, setup: seed, cold: cold,
				run: getOp(alice, "seed"), check: checkGet(alice, "seed")},
			faultOp{name: "delete" + sfx, setup: seed, cold: cold,
				run:   func(t *testing.T, e *faultEnv) error { return e.v.Delete(t.Context(), alice, "seed", "") },
				check: checkDelete},
			faultOp{name: "purge" + sfx, setup: seedTwoVersions, cold: cold,
				run:   func(t *testing.T, e *faultEnv) error { return e.v.Purge(t.Context(), alice, "seed") },
				check: checkPurge},
			faultOp{name: "erase" + sfx, setup: seedWithOrphan, cold: cold,
				run: func(t *testing.T, e *faultEnv) error {
					_, err := e.v.Erase(t.Context(), alice)
					return err
				},
				check: checkErase},
		)
	}
	return ops
}

// seed writes what every case starts from: two secrets of alice's, one of
// carol's of the same name as one of alice's.
func seed(t *testing.T, e *faultEnv) {
	e.put(t, alice, "seed")
	e.put(t, alice, "other")
	e.put(t, carol, "seed")
}

func seedTwoVersions(t *testing.T, e *faultEnv) {
	seed(t, e)
	e.put(t, alice, "seed")
}

// seedWithOrphan adds a blob under alice's prefix that no document names,
// as a lost race or a crash leaves.
func seedWithOrphan(t *testing.T, e *faultEnv) {
	seed(t, e)
	if err := e.blobs.Create(t.Context(), e.ownerHash(t, alice)+"/0rphan", []byte("ciphertext")); err != nil {
		t.Fatal(err)
	}
}

func putOp(owner, name string) func(*testing.T, *faultEnv) error {
	return func(t *testing.T, e *faultEnv) error {
		e.try = e.value(name + "-try")
		_, err := e.v.Put(t.Context(), owner, PutRequest{Name: name, Value: e.try})
		return err
	}
}

// checkPut judges a failed put of a secret whose latest acknowledged
// version was prev (0: none).
func checkPut(owner, name string, prev uint64) func(*testing.T, *faultEnv, faultCase, error) {
	return func(t *testing.T, e *faultEnv, c faultCase, err error) {
		wantUnavailable(t, "put", err)
		ctx := t.Context()
		v := e.clean()
		// A reader sees the previous version, or the new one only if its
		// metadata write landed.
		want := prev
		if c.landedWrite(secretID(name)) {
			want = prev + 1
		}
		got, gerr := v.Get(ctx, owner, name, 0)
		switch {
		case want == 0:
			if !errors.Is(gerr, ErrNotFound) {
				t.Errorf("after the failed put, Get = version %d, %v; want ErrNotFound", got.Version, gerr)
			}
		case gerr != nil:
			t.Errorf("after the failed put, Get: %v", gerr)
		case got.Version != want:
			t.Errorf("after the failed put, Get: version %d, want %d", got.Version, want)
		case want == prev && !bytes.Equal(got.Value, e.acked[ackKey{owner, name, prev}]):
			t.Errorf("after the failed put, Get = %s, want the previous value", got.Value)
		case want > prev && !bytes.Equal(got.Value, e.try):
			t.Errorf("after the landed put, Get = %s, want %s", got.Value, e.try)
		}
		vs, _, verr := v.Versions(ctx, owner, name)
		if want == 0 {
			if !errors.Is(verr, ErrNotFound) {
				t.Errorf("after the failed put, Versions = %d, %v; want ErrNotFound", len(vs), verr)
			}
		} else if verr != nil || len(vs) != int(want) || vs[len(vs)-1].Version != want {
			t.Errorf("after the failed put, Versions = %+v, %v; want versions 1 to %d", vs, verr, want)
		}
		if listed := listedVersion(t, v, owner, name); listed != want {
			t.Errorf("after the failed put, List shows version %d, want %d (0: not listed)", listed, want)
		}
		e.checkAcked(t, nil)

		// A retry succeeds, on the instance that saw the fault.
		e.f.reset()
		val := e.value(name + "-retry")
		s, err := e.v.Put(ctx, owner, PutRequest{Name: name, Value: val})
		if err != nil {
			t.Fatalf("retry of the put: %v", err)
		}
		if s.Version != want+1 {
			t.Errorf("retry of the put: version %d, want %d", s.Version, want+1)
		}
		e.ack(t, owner, name, s.Version, val)
		e.checkAcked(t, nil)
	}
}

// listedVersion returns the version List shows for a secret, 0 if not listed.
func listedVersion(t *testing.T, v *Vault, owner, name string) uint64 {
	t.Helper()
	p, err := v.List(t.Context(), owner, ListOptions{})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, s := range p.Items {
		if s.Name == name {
			return s.Version
		}
	}
	return 0
}

func getOp(owner, name string) func(*testing.T, *faultEnv) error {
	return func(t *testing.T, e *faultEnv) error {
		s, err := e.v.Get(t.Context(), owner, name, 0)
		e.try = s.Value
		return err
	}
}

func checkGet(owner, name string) func(*testing.T, *faultEnv, faultCase, error) {
	return func(t *testing.T, e *faultEnv, c faultCase, err error) {
		wantUnavailable(t, "get", err)
		if err != nil && len(e.try) != 0 {
			t.Errorf("get failed with %v but returned a value", err)
		}
		if err == nil && !bytes.Equal(e.try, e.acked[ackKey{owner, name, 1}]) {
			t.Errorf("get = %s, want the stored value", e.try)
		}
		e.checkAcked(t, nil)
		e.f.reset()
		s, err := e.v.Get(t.Context(), owner, name, 0)
		if err != nil || !bytes.Equal(s.Value, e.acked[ackKey{owner, name, 1}]) {
			t.Errorf("retry of the get = %s, %v; want the stored value", s.Value, err)
		}
	}
}

func checkDelete(t *testing.T, e *faultEnv, c faultCase, err error) {
	wantUnavailable(t, "delete", err)
	ctx := t.Context()
	v := e.clean()
	landed := c.landedWrite(secretID("seed"))
	if landed {
		if _, err := v.Get(ctx, alice, "seed", 0); !errors.Is(err, ErrNotFound) {
			t.Errorf("after the landed delete, Get: %v, want ErrNotFound", err)
		}
		e.checkAcked(t, func(owner, name string) bool { return owner == alice && name == "seed" })
	} else {
		e.checkAcked(t, nil)
	}
	// A retry finishes it (a delete that had landed is already done).
	e.f.reset()
	if err := e.v.Delete(ctx, alice, "seed", ""); err != nil && !(landed && errors.Is(err, ErrNotFound)) {
		t.Fatalf("retry of the delete: %v", err)
	}
	if _, err := v.Get(ctx, alice, "seed", 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("after the delete, Get: %v, want ErrNotFound", err)
	}
	p, err := v.List(ctx, alice, ListOptions{Deleted: true})
	if err != nil || len(p.Items) != 1 || p.Items[0].Name != "seed" {
		t.Errorf("deleted listing = %+v, %v; want seed", p.Items, err)
	}
	// The value survives: a soft delete destroys nothing.
	if _, err := v.Restore(ctx, alice, "seed"); err != nil {
		t.Fatalf("restore: %v", err)
	}
	e.checkAcked(t, nil)
}

func checkPurge(t *testing.T, e *faultEnv, c faultCase, err error) {
	wantUnavailable(t, "purge", err)
	ctx := t.Context()
	v := e.clean()
	isSeed := func(owner, name string) bool { return owner == alice && name == "seed" }
	var seedBlobs []string
	for k, b := range e.blobsOf {
		if isSeed(k.owner, k.name) {
			seedBlobs = append(seedBlobs, b)
		}
	}
	if len(seedBlobs) != 2 {
		t.Fatalf("seed has blobs %v, want 2", seedBlobs)
	}
	d, _ := e.doc(t, alice, "seed")
	switch {
	case d == nil:
		if !c.landedWrite(secretID("seed")) || c.method != "meta.Delete" {
			t.Errorf("the document is gone though the fault (%s %s) was not a landed final delete", c.method, c.kind)
		}
	case d.Purging:
		// Marked: from then on nothing reads it, whatever blobs are left.
		if _, err := v.Get(ctx, alice, "seed", 0); !errors.Is(err, ErrNotFound) {
			t.Errorf("a secret being purged: Get: %v, want ErrNotFound", err)
		}
		if n := listedVersion(t, v, alice, "seed"); n != 0 {
			t.Errorf("a secret being purged is listed (version %d)", n)
		}
		if p, _ := v.List(ctx, alice, ListOptions{Deleted: true}); len(p.Items) != 0 {
			t.Errorf("a secret being purged is listed as deleted: %+v", p.Items)
		}
	default:
		// Not marked: nothing was destroyed yet.
		e.checkAcked(t, nil)
	}
	e.checkAcked(t, isSeed)

	// Running it again finishes it.
	e.f.reset()
	if err := e.v.Purge(ctx, alice, "seed"); err != nil && !(d == nil && errors.Is(err, ErrNotFound)) {
		t.Fatalf("purge again: %v", err)
	}
	if d, _ := e.doc(t, alice, "seed"); d != nil {
		t.Errorf("after the purge the document is still there: %+v", d)
	}
	for _, b := range seedBlobs {
		if _, err := e.blobs.Read(ctx, b); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("after the purge, blob %s: %v, want ErrNotFound", b, err)
		}
	}
	if _, err := v.Get(ctx, alice, "seed", 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("after the purge, Get: %v, want ErrNotFound", err)
	}
	e.forget(alice, "seed")
	e.checkAcked(t, nil)
}

func checkErase(t *testing.T, e *faultEnv, c faultCase, err error) {
	// The keyring is read only to drop its cached KEKs: if that read fails,
	// the erase goes on and may finish.
	tolerated := c.method == "meta.Get" && c.detail == keyring.KeyringID
	if err != nil || !tolerated {
		wantUnavailable(t, "erase", err)
	}
	ctx := t.Context()
	oh := e.ownerHash(t, alice)
	isAlice := func(owner, _ string) bool { return owner == alice }
	_, kerr := e.meta.Get(ctx, oh, keyring.KeyringID)
	switch {
	case errors.Is(kerr, store.ErrNotFound):
		// The keyring went first: nothing of alice's reads any more.
		v := e.clean()
		for _, name := range []string{"seed", "other"} {
			if s, err := v.Get(ctx, alice, name, 0); !errors.Is(err, ErrNotFound) {
				t.Errorf("after the keyring was erased, Get %s = %s, %v; want ErrNotFound", name, s.Value, err)
			}
		}
	case kerr != nil:
		t.Fatal(kerr)
	default:
		// Stopped before its first write: nothing was deleted.
		e.checkAcked(t, nil)
	}
	e.checkAcked(t, isAlice)

	// Running it again finishes it.
	e.f.reset()
	if _, err := e.v.Erase(ctx, alice); err != nil {
		t.Fatalf("erase again: %v", err)
	}
	checkErased(t, e, alice)
}

// checkErased checks that nothing of owner is left, and that the other
// owners' secrets still read back.
func checkErased(t *testing.T, e *faultEnv, owner string) {
	t.Helper()
	ctx := t.Context()
	oh := e.ownerHash(t, owner)
	if _, err := e.meta.Get(ctx, oh, keyring.KeyringID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after the erase, the keyring: %v, want ErrNotFound", err)
	}
	if p, err := e.meta.List(ctx, store.Query{Partition: oh, Kind: store.KindSecret}); err != nil || len(p.Items) != 0 {
		t.Errorf("after the erase, secret documents %d, %v; want none", len(p.Items), err)
	}
	if left := e.blobFiles(t, oh+"/"); len(left) != 0 {
		t.Errorf("after the erase, blobs left: %v", left)
	}
	e.forget(owner, "")
	e.checkAcked(t, nil)
}

// TestConcurrentPutsGetDistinctVersions: 16 writers of one name without
// preconditions each get a version of their own, none is lost, and the
// blobs of lost races are removed.
func TestConcurrentPutsGetDistinctVersions(t *testing.T) {
	e := newFaultEnv(t, testCMK(t), Options{})
	e.put(t, alice, "warm-up") // the deployment and alice's keyring exist
	const writers = 16
	vals := make([]json.RawMessage, writers)
	for i := range vals {
		vals[i] = e.value(fmt.Sprintf("w%d", i))
	}
	versions := make([]uint64, writers)
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			s, err := e.v.Put(t.Context(), alice, PutRequest{Name: "race", Value: vals[i]})
			versions[i], errs[i] = s.Version, err
		})
	}
	wg.Wait()
	seen := map[uint64]int{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
		if j, dup := seen[versions[i]]; dup {
			t.Fatalf("writers %d and %d both got version %d", j, i, versions[i])
		}
		seen[versions[i]] = i
		e.ack(t, alice, "race", versions[i], vals[i])
	}
	for n := uint64(1); n <= writers; n++ {
		if _, ok := seen[n]; !ok {
			t.Errorf("no writer got version %d: %v", n, versions)
		}
	}
	vs, _, err := e.clean().Versions(t.Context(), alice, "race")
	if err != nil || len(vs) != writers {
		t.Fatalf("Versions = %d, %v; want %d", len(vs), err, writers)
	}
	e.checkAcked(t, nil) // each version holds its own writer's value
	if got := len(e.blobFiles(t, "")); got != writers+1 {
		t.Errorf("%d blob files, want %d: the losers' blobs must be removed", got, writers+1)
	}
	e.checkStorage(t)
}

// TestPreconditionsWriteNoBlob: a put refused by If-None-Match or a stale
// If-Match answers ErrPrecondition before any blob is written.
func TestPreconditionsWriteNoBlob(t *testing.T) {
	e := newFaultEnv(t, testCMK(t), Options{})
	first := e.put(t, alice, "x")
	e.put(t, alice, "x")
	before := e.blobFiles(t, "")
	for _, c := range []struct {
		what string
		req  PutRequest
	}{
		{"If-None-Match on an existing secret", PutRequest{Name: "x", IfNoneMatch: true}},
		{"stale If-Match", PutRequest{Name: "x", IfMatch: `"` + first.ETag + `"`}},
		{"If-Match on a missing secret", PutRequest{Name: "missing", IfMatch: "*"}},
	} {
		e.f.reset()
		c.req.Value = e.value("refused")
		_, err := e.v.Put(t.Context(), alice, c.req)
		if !errors.Is(err, ErrPrecondition) {
			t.Errorf("%s: %v, want ErrPrecondition", c.what, err)
		}
		if n := e.f.count("blobs.Create"); n != 0 {
			t.Errorf("%s: %d blob writes, want none", c.what, n)
		}
		if after := e.blobFiles(t, ""); !slices.Equal(after, before) {
			t.Errorf("%s: blob files %v, want %v", c.what, after, before)
		}
	}
	if vs, _, _ := e.clean().Versions(t.Context(), alice, "x"); len(vs) != 2 {
		t.Errorf("versions after refused puts: %d, want 2", len(vs))
	}
	e.checkAcked(t, nil)
	e.checkStorage(t)
}

// TestTrimDeletesTrimmedBlobs: with MaxVersions 2 the blobs of trimmed
// versions are deleted; if deleting one fails, the put is still
// acknowledged and the blob is left for garbage collection.
func TestTrimDeletesTrimmedBlobs(t *testing.T) {
	e := newFaultEnv(t, testCMK(t), Options{MaxVersions: 2})
	ctx := t.Context()
	for range 5 {
		e.put(t, alice, "t")
	}
	v := e.clean()
	vs, _, err := v.Versions(ctx, alice, "t")
	if err != nil || len(vs) != 2 || vs[0].Version != 4 || vs[1].Version != 5 {
		t.Fatalf("Versions = %+v, %v; want 4 and 5", vs, err)
	}
	for n := uint64(1); n <= 5; n++ {
		k := ackKey{alice, "t", n}
		_, gerr := v.Get(ctx, alice, "t", n)
		_, berr := e.blobs.Read(ctx, e.blobsOf[k])
		if n <= 3 {
			if !errors.Is(gerr, ErrNotFound) || !errors.Is(berr, store.ErrNotFound) {
				t.Errorf("trimmed version %d: Get %v, blob %v; want both not found", n, gerr, berr)
			}
		} else if gerr != nil || berr != nil {
			t.Errorf("kept version %d: Get %v, blob %v", n, gerr, berr)
		}
	}
	if got := e.blobFiles(t, ""); len(got) != 2 {
		t.Errorf("blob files %v, want the 2 kept versions' only", got)
	}

	// A failed trim does not fail the acknowledged put.
	e.f.arm("blobs.Delete", 1, faultUnavailable)
	s := e.put(t, alice, "t")
	e.f.reset()
	if s.Version != 6 {
		t.Fatalf("put: version %d, want 6", s.Version)
	}
	if _, err := e.blobs.Read(ctx, e.blobsOf[ackKey{alice, "t", 4}]); err != nil {
		t.Errorf("the blob whose delete failed: %v, want it left as an orphan", err)
	}
	if vs, _, _ := v.Versions(ctx, alice, "t"); len(vs) != 2 || vs[0].Version != 5 {
		t.Errorf("Versions = %+v, want 5 and 6", vs)
	}
	e.mu.Lock()
	for n := uint64(1); n <= 4; n++ {
		delete(e.acked, ackKey{alice, "t", n})
	}
	e.mu.Unlock()
	e.checkAcked(t, nil)
	e.checkStorage(t)
}

// TestPurgeResumesAfterFailedBlobDelete: a purge cut short by a failing blob
// delete has already hidden the secret, and running it again finishes.
func TestPurgeResumesAfterFailedBlobDelete(t *testing.T) {
	e := newFaultEnv(t, testCMK(t), Options{})
	ctx := t.Context()
	for range 3 {
		e.put(t, alice, "p")
	}
	e.put(t, alice, "keep")
	blobs := []string{e.blobsOf[ackKey{alice, "p", 1}], e.blobsOf[ackKey{alice, "p", 2}], e.blobsOf[ackKey{alice, "p", 3}]}

	e.f.arm("blobs.Delete", 2, faultUnavailable)
	err := e.v.Purge(ctx, alice, "p")
	e.f.reset()
	wantUnavailable(t, "purge with a failing blob delete", err)
	v := e.clean()
	if _, err := v.Get(ctx, alice, "p", 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("after the failed purge, Get: %v, want ErrNotFound", err)
	}
	if _, err := e.blobs.Read(ctx, blobs[0]); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("first blob: %v, want deleted", err)
	}
	e.checkStorage(t)

	if err := e.v.Purge(ctx, alice, "p"); err != nil {
		t.Fatalf("purge again: %v", err)
	}
	if d, _ := e.doc(t, alice, "p"); d != nil {
		t.Errorf("after the purge the document is still there")
	}
	for _, b := range blobs {
		if _, err := e.blobs.Read(ctx, b); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("after the purge, blob %s: %v", b, err)
		}
	}
	e.forget(alice, "p")
	e.checkAcked(t, nil)
	e.checkStorage(t)
	if err := e.v.Purge(ctx, alice, "p"); !errors.Is(err, ErrNotFound) {
		t.Errorf("purge of a purged secret: %v, want ErrNotFound", err)
	}
}

// TestEraseResumesAfterFailedBlobDelete: an erase cut short by a failing blob
// delete has already erased the keyring (nothing of the owner reads), and
// running it again finishes.
func TestEraseResumesAfterFailedBlobDelete(t *testing.T) {
	e := newFaultEnv(t, testCMK(t), Options{})
	ctx := t.Context()
	seedWithOrphan(t, e)
	e.put(t, alice, "seed")
	// Another instance has alice's keys cached.
	warm := e.clean()
	if _, err := warm.Get(ctx, alice, "seed", 0); err != nil {
		t.Fatal(err)
	}

	e.f.arm("blobs.Delete", 1, faultUnavailable)
	_, err := e.v.Erase(ctx, alice)
	e.f.reset()
	wantUnavailable(t, "erase with a failing blob delete", err)
	for _, v := range []*Vault{e.v, warm, e.clean()} {
		for _, name := range []string{"seed", "other"} {
			if s, err := v.Get(ctx, alice, name, 0); !errors.Is(err, ErrNotFound) {
				t.Errorf("after the failed erase, Get %s = %s, %v; want ErrNotFound", name, s.Value, err)
			}
		}
	}
	e.checkAcked(t, func(owner, _ string) bool { return owner == alice })
	e.checkStorage(t)

	rep, err := e.v.Erase(ctx, alice)
	if err != nil {
		t.Fatalf("erase again: %v", err)
	}
	if rep.Blobs == 0 || rep.Secrets == 0 {
		t.Errorf("erase again: report %+v, want the rest removed", rep)
	}
	checkErased(t, e, alice)
	e.checkStorage(t)
}

package vault

// The fault-injecting stores and the test environment of the fault tests:
// a Vault wired over the real embedded adapters, each call of which can be
// counted and failed.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/credvault/credvault/internal/cmk"
	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/store"
	"github.com/credvault/credvault/internal/store/embedded"
)

// faultKind is how an injected fault fails a backend call.
type faultKind int

const (
	faultNone faultKind = iota
	// faultUnavailable: the call is not made; the store answers with an
	// error wrapping store.ErrUnavailable.
	faultUnavailable
	// faultDeadline: the call is not made; the context's deadline passed.
	faultDeadline
	// faultLost: the call is made and lands, but its answer is lost: the
	// caller sees store.ErrUnavailable.
	faultLost

	// The faults of an HTTP operation of an Azure SDK client, on every try
	// (see sdkFaults): nothing is sent.
	//
	// faultThrottled: 429 with a Retry-After beyond the retry budget.
	faultThrottled
	// faultDown: 503 on every try, the retries included.
	faultDown
	// faultSlow: no answer until the try's context ends.
	faultSlow
)

var faultKinds = []faultKind{faultUnavailable, faultDeadline, faultLost}

func (k faultKind) String() string {
	switch k {
	case faultUnavailable:
		return "unavailable"
	case faultDeadline:
		return "deadline"
	case faultLost:
		return "landed-answer-lost"
	case faultThrottled:
		return "429-retry-after"
	case faultDown:
		return "503-every-try"
	case faultSlow:
		return "latency-past-timeout"
	}
	return "none"
}

var errInjected = errors.New("injected fault")

// faultInjector is where a fault environment injects its faults: above the
// stores (faults, through faultyBlobs and faultyMeta) or inside the SDK
// clients of the Azure adapters (sdkFaults). It counts the calls by method
// and fails the nth call of one method with one kind of fault.
type faultInjector interface {
	// arm resets the counts and fails the nth call of method from now on.
	arm(method string, nth int, kind faultKind)
	// reset forgets the counts and the trace and disarms the fault.
	reset()
	count(method string) int
	// snapshot returns the counts and the trace so far.
	snapshot() (map[string]int, []string)
	// firedDetail returns the detail of the failed call and whether it failed.
	firedDetail() (string, bool)
	// kinds are the faults it injects.
	kinds() []faultKind
}

var _ faultInjector = (*faults)(nil)

// faults counts every backend call by method ("blobs.Create", "meta.Get", …)
// and fails the nth call of one method with one kind of fault.
type faults struct {
	mu     sync.Mutex
	counts map[string]int
	trace  []string // "method detail", in call order

	method string
	nth    int
	kind   faultKind
	fired  string // the detail of the call that failed, "" until it has
}

func newFaults() *faults { return &faults{counts: map[string]int{}} }

// reset forgets the counts and the trace and disarms the fault.
func (f *faults) reset() {
	f.arm("", 0, faultNone)
}

// arm resets the counts and fails the nth call of method from now on.
func (f *faults) arm(method string, nth int, kind faultKind) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts, f.trace = map[string]int{}, nil
	f.method, f.nth, f.kind, f.fired = method, nth, kind, ""
}

func (f *faults) count(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[method]
}

// snapshot returns the counts and the trace so far.
func (f *faults) snapshot() (map[string]int, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.counts), slices.Clone(f.trace)
}

// firedDetail returns the detail of the failed call and whether it failed.
func (f *faults) firedDetail() (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fired, f.fired != ""
}

func (f *faults) kinds() []faultKind { return faultKinds }

// next counts a call and returns the fault it meets (faultNone: none).
func (f *faults) next(method, detail string) faultKind {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts[method]++
	f.trace = append(f.trace, method+" "+detail)
	kind := faultNone
	if f.kind != faultNone && method == f.method && f.counts[method] == f.nth {
		kind, f.fired = f.kind, detail
		if f.fired == "" {
			f.fired = "-"
		}
	}
	return kind
}

// do runs call, the real backend call, unless this is the call to fail.
func (f *faults) do(method, detail string, call func() error) error {
	switch f.next(method, detail) {
	case faultUnavailable:
		return fmt.Errorf("%s %s: %w: %w", method, detail, errInjected, store.ErrUnavailable)
	case faultDeadline:
		return fmt.Errorf("%s %s: %w: %w", method, detail, errInjected, context.DeadlineExceeded)
	case faultLost:
		call() // it lands, whatever it answers; the answer is lost
		return fmt.Errorf("%s %s: %w, the call landed: %w", method, detail, errInjected, store.ErrUnavailable)
	}
	return call()
}

// faultyBlobs is store.Blobs with faults.
type faultyBlobs struct {
	inner store.Blobs
	f     *faults
}

var _ store.Blobs = faultyBlobs{}

func (b faultyBlobs) Create(ctx context.Context, name string, data []byte) error {
	return b.f.do("blobs.Create", name, func() error { return b.inner.Create(ctx, name, data) })
}

func (b faultyBlobs) Read(ctx context.Context, name string) ([]byte, error) {
	var out []byte
	err := b.f.do("blobs.Read", name, func() (err error) {
		out, err = b.inner.Read(ctx, name)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (b faultyBlobs) Delete(ctx context.Context, name string) error {
	return b.f.do("blobs.Delete", name, func() error { return b.inner.Delete(ctx, name) })
}

func (b faultyBlobs) List(ctx context.Context, prefix, continuation string, limit int) (store.BlobPage, error) {
	var out store.BlobPage
	err := b.f.do("blobs.List", prefix, func() (err error) {
		out, err = b.inner.List(ctx, prefix, continuation, limit)
		return err
	})
	if err != nil {
		return store.BlobPage{}, err
	}
	return out, nil
}

// faultyMeta is store.Metadata with faults. A call's detail is the document
// id (or the kind listed), so a test can tell a secret's write from a
// keyring's.
type faultyMeta struct {
	inner store.Metadata
	f     *faults
}

var _ store.Metadata = faultyMeta{}

func (m faultyMeta) Get(ctx context.Context, partition, id string) (store.Item, error) {
	var out store.Item
	err := m.f.do("meta.Get", id, func() (err error) {
		out, err = m.inner.Get(ctx, partition, id)
		return err
	})
	if err != nil {
		return store.Item{}, err
	}
	return out, nil
}

func (m faultyMeta) Create(ctx context.Context, it store.Item) (string, error) {
	var etag string
	err := m.f.do("meta.Create", it.ID, func() (err error) {
		etag, err = m.inner.Create(ctx, it)
		return err
	})
	if err != nil {
		return "", err
	}
	return etag, nil
}

func (m faultyMeta) Replace(ctx context.Context, it store.Item, ifMatch string) (string, error) {
	var etag string
	err := m.f.do("meta.Replace", it.ID, func() (err error) {
		etag, err = m.inner.Replace(ctx, it, ifMatch)
		return err
	})
	if err != nil {
		return "", err
	}
	return etag, nil
}

func (m faultyMeta) Delete(ctx context.Context, partition, id, ifMatch string) error {
	return m.f.do("meta.Delete", id, func() error { return m.inner.Delete(ctx, partition, id, ifMatch) })
}

func (m faultyMeta) List(ctx context.Context, q store.Query) (store.Page, error) {
	var out store.Page
	err := m.f.do("meta.List", q.Kind, func() (err error) {
		out, err = m.inner.List(ctx, q)
		return err
	})
	if err != nil {
		return store.Page{}, err
	}
	return out, nil
}

// Owners of the fault tests.
const (
	alice = "6c2d3e4f-0000-4000-8000-00000000a11c/alice"
	bob   = "6c2d3e4f-0000-4000-8000-00000000a11c/bob"
	carol = "0b0b0b0b-0000-4000-8000-0000000ca401/carol"
)

// testCMK returns a fast local CMK (RSA-2048) in its own directory, shared
// by the environments of one test.
func testCMK(t *testing.T) *cmk.Local {
	t.Helper()
	key, err := cmk.OpenLocal(t.TempDir(), cmk.LocalOptions{Bits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// faultStores are the real stores of one fault environment, fresh and of
// its own, and what reads back every byte they keep at rest.
type faultStores struct {
	blobs store.Blobs
	meta  store.Metadata
	// atRest returns every stored thing by a readable key ("file:…",
	// "blob:…", "document:…") and its bytes.
	atRest func(t *testing.T) map[string][]byte
	// faulty, if set, are other adapters on the same stores, whose faults
	// are injected inside them: the Vault under test runs on these as they
	// are. Unset, it runs on blobs and meta behind faultyBlobs and faultyMeta.
	faulty *injectedStores
}

// injectedStores are stores that fail as their injector says.
type injectedStores struct {
	blobs store.Blobs
	meta  store.Metadata
	f     faultInjector
}

// embeddedStores returns the embedded adapters over a new data dir; what
// they keep at rest is every file under it.
func embeddedStores(t *testing.T) faultStores {
	t.Helper()
	dir := t.TempDir()
	blobs, err := embedded.OpenBlobs(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	meta, err := embedded.OpenMetadata(filepath.Join(dir, "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	return faultStores{blobs: blobs, meta: meta, atRest: func(t *testing.T) map[string][]byte {
		t.Helper()
		out := map[string][]byte{}
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Errorf("read %s: %v", p, err)
				return nil
			}
			out["file:"+strings.TrimPrefix(p, dir)] = b
			return nil
		})
		return out
	}}
}

type ackKey struct {
	owner, name string
	version     uint64
}

// faultEnv is a Vault over real stores (the embedded adapters, or the Azure
// ones against the emulators) behind fault-injecting wrappers, with a record
// of what it acknowledged.
type faultEnv struct {
	cmk    keyring.Wrapper
	blobs  store.Blobs    // the real stores, for checks
	meta   store.Metadata // …
	atRest func(t *testing.T) map[string][]byte
	f      faultInjector
	vblobs store.Blobs    // the faulty stores
	vmeta  store.Metadata // …
	opt    Options
	v      *Vault // over the faulty stores

	mu      sync.Mutex
	markers []string                   // bytes that must never be at rest
	acked   map[ackKey]json.RawMessage // acknowledged versions and their values
	blobsOf map[ackKey]string          // and their blobs
	try     json.RawMessage            // the value the operation under test writes
}

// newFaultEnv returns a fault environment over the embedded adapters.
func newFaultEnv(t *testing.T, key keyring.Wrapper, opt Options) *faultEnv {
	t.Helper()
	return newFaultEnvOn(t, embeddedStores(t), key, opt)
}

// newFaultEnvOn returns a fault environment over s, with key as the CMK.
func newFaultEnvOn(t *testing.T, s faultStores, key keyring.Wrapper, opt Options) *faultEnv {
	t.Helper()
	e := &faultEnv{cmk: key, blobs: s.blobs, meta: s.meta, atRest: s.atRest, opt: opt,
		acked: map[ackKey]json.RawMessage{}, blobsOf: map[ackKey]string{}}
	if s.faulty != nil {
		e.f, e.vblobs, e.vmeta = s.faulty.f, s.faulty.blobs, s.faulty.meta
	} else {
		f := newFaults()
		e.f, e.vblobs, e.vmeta = f, faultyBlobs{s.blobs, f}, faultyMeta{s.meta, f}
	}
	e.restart()
	return e
}

// restart replaces the Vault and its key hierarchy with new ones over the
// same stores, as a new instance starts: nothing cached. The deployment has
// one key domain, so that every owner's calls are the same whatever its
// (random) owner hash: a fault test fails the same call in every run.
func (e *faultEnv) restart() {
	keys := keyring.New(e.cmk, e.vmeta, keyring.Options{Domains: 1})
	e.v = New(keys, e.vblobs, e.vmeta, e.opt)
}

// clean returns a new instance over the real stores, without faults: what
// any later reader sees.
func (e *faultEnv) clean() *Vault {
	return New(keyring.New(e.cmk, e.meta, keyring.Options{}), e.blobs, e.meta, e.opt)
}

// value returns a new JSON value holding a fresh marker, recorded as bytes
// that must never be found at rest.
func (e *faultEnv) value(label string) json.RawMessage {
	b := make([]byte, 8)
	rand.Read(b)
	marker := "canary-" + label + "-" + hex.EncodeToString(b)
	e.mu.Lock()
	e.markers = append(e.markers, marker)
	e.mu.Unlock()
	return json.RawMessage(`{"token":"` + marker + `","n":1}`)
}

// put writes a new version without faults and records it as acknowledged.
func (e *faultEnv) put(t *testing.T, owner, name string) Secret {
	t.Helper()
	val := e.value(name)
	s, err := e.v.Put(t.Context(), owner, PutRequest{Name: name, Value: val})
	if err != nil {
		t.Fatalf("put %s: %v", name, err)
	}
	e.ack(t, owner, name, s.Version, val)
	return s
}

// ack records an acknowledged version, its value and its blob.
func (e *faultEnv) ack(t *testing.T, owner, name string, version uint64, val json.RawMessage) {
	t.Helper()
	k := ackKey{owner, name, version}
	d, _ := e.doc(t, owner, name)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.acked[k] = val
	if d != nil {
		if vd := d.version(version); vd != nil {
			e.blobsOf[k] = vd.Blob
		}
	}
}

// forget drops acknowledged versions of a secret (deleted for good).
func (e *faultEnv) forget(owner, name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k := range e.acked {
		if k.owner == owner && (name == "" || k.name == name) {
			delete(e.acked, k)
		}
	}
}

func (e *faultEnv) ownerHash(t *testing.T, owner string) string {
	t.Helper()
	oh, err := e.clean().ownerHash(t.Context(), owner)
	if err != nil {
		t.Fatal(err)
	}
	return oh
}

// doc reads a secret's document from the real store; nil when there is none.
func (e *faultEnv) doc(t *testing.T, owner, name string) (*secretDoc, string) {
	t.Helper()
	it, err := e.meta.Get(t.Context(), e.ownerHash(t, owner), secretID(name))
	if errors.Is(err, store.ErrNotFound) {
		return nil, ""
	}
	if err != nil {
		t.Fatal(err)
	}
	var d secretDoc
	if err := decode(it, &d); err != nil {
		t.Fatal(err)
	}
	return &d, it.ETag
}

// blobFiles returns the names of every blob in the store.
func (e *faultEnv) blobFiles(t *testing.T, prefix string) []string {
	t.Helper()
	var out []string
	cont := ""
	for {
		p, err := e.blobs.List(t.Context(), prefix, cont, 1000)
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

// checkAcked checks that every acknowledged version still reads back with
// its value, on a new instance, except those of the secrets skip names.
func (e *faultEnv) checkAcked(t *testing.T, skip func(owner, name string) bool) {
	t.Helper()
	v := e.clean()
	e.mu.Lock()
	acked := maps.Clone(e.acked)
	e.mu.Unlock()
	for k, want := range acked {
		if skip != nil && skip(k.owner, k.name) {
			continue
		}
		s, err := v.Get(t.Context(), k.owner, k.name, k.version)
		if err != nil {
			t.Errorf("acknowledged %s v%d: Get: %v", k.name, k.version, err)
			continue
		}
		if !bytes.Equal(s.Value, want) {
			t.Errorf("acknowledged %s v%d: Get = %s, want %s", k.name, k.version, s.Value, want)
		}
	}
}

// checkStorage checks what is at rest: no secret document that can be read
// points at a missing blob, and nothing stored (a file under the data dir;
// on Azure a blob or a document) holds a value.
func (e *faultEnv) checkStorage(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	cont := ""
	for {
		p, err := e.meta.List(ctx, store.Query{Kind: store.KindSecret, Limit: 1000, Continuation: cont})
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range p.Items {
			var d secretDoc
			if err := decode(it, &d); err != nil {
				t.Errorf("secret document %s: %v", it.ID, err)
				continue
			}
			if d.Purging {
				continue // being destroyed: nothing reads it, its blobs may be gone already
			}
			for _, vd := range d.Versions {
				if _, err := e.blobs.Read(ctx, vd.Blob); err != nil {
					t.Errorf("secret %s version %d points at blob %s: %v", d.Name, vd.Version, vd.Blob, err)
				}
			}
		}
		if cont = p.Continuation; cont == "" {
			break
		}
	}
	e.mu.Lock()
	markers := slices.Clone(e.markers)
	e.mu.Unlock()
	rest := e.atRest(t)
	for _, where := range slices.Sorted(maps.Keys(rest)) {
		for _, m := range markers {
			if bytes.Contains(rest[where], []byte(m)) {
				t.Errorf("plaintext at rest: %s holds the secret value %s", where, m)
			}
		}
	}
}

// wantUnavailable checks that err is ErrUnavailable and nothing the HTTP
// layer would map before it (so the caller gets 503, retry later).
func wantUnavailable(t *testing.T, what string, err error) {
	t.Helper()
	var inv *InvalidError
	switch {
	case err == nil:
		t.Errorf("%s: succeeded despite the fault, want ErrUnavailable", what)
	case !errors.Is(err, ErrUnavailable):
		t.Errorf("%s: error %v, want ErrUnavailable", what, err)
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrPrecondition), errors.Is(err, ErrConflict),
		errors.Is(err, ErrIntegrity), errors.As(err, &inv):
		t.Errorf("%s: error %v is ErrUnavailable but also a client error or integrity failure", what, err)
	}
}

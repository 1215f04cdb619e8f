package rotation_test

// The test environment: a deployment on the embedded stores (or, with
// envOptions.azure, on Blob Storage and Cosmos DB, the emulators: see
// emulators_test.go) with a local CMK (RSA-2048, for speed) or a Key Vault
// fake behind the real azkeys client, a clock the test moves, owners with
// acknowledged secrets, and the checks every test ends with.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/credvault/credvault/internal/cmk"
	"github.com/credvault/credvault/internal/cmk/kvfake"
	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/rotation"
	"github.com/credvault/credvault/internal/store"
	"github.com/credvault/credvault/internal/store/embedded"
	"github.com/credvault/credvault/internal/vault"
)

const (
	day      = 24 * time.Hour
	cmkName  = "credvault-cmk"
	kvReread = time.Hour // how often the Key Vault adapter re-reads the current version
)

// testClock is the wall clock plus an offset the test moves forward: time
// passes for real (settle waits, blob ages) and jumps for the policies.
type testClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}

type envOptions struct {
	domains  int  // default 16
	keyVault bool // the CMK is a Key Vault fake; else a local key file
	latency  time.Duration
	azure    bool // the stores are Azurite and the Cosmos DB emulator; else the embedded ones
}

type env struct {
	t       testing.TB
	dir     string
	clock   *testClock
	domains int

	local   *cmk.Local    // the CMK, when local
	kv      *kvfake.Vault // the Key Vault fake, when keyVault
	kvClock *testClock
	cmk     keyring.Wrapper

	meta  store.Metadata
	blobs store.Blobs
	// atRest, on the Azure stores, returns everything they keep (every blob
	// and every document) for the "no value at rest" check; nil on the
	// embedded stores, whose data directory is read instead.
	atRest func() map[string][]byte
	keys   *keyring.Hierarchy // the instance serving traffic
	v      *vault.Vault

	mu    sync.Mutex
	acked map[ack]json.RawMessage
	seq   int
}

type ack struct {
	owner, name string
	version     uint64
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	if o.domains == 0 {
		o.domains = 16
	}
	e := &env{t: t, dir: t.TempDir(), clock: &testClock{}, domains: o.domains, acked: map[ack]json.RawMessage{}}
	if o.keyVault {
		e.kv = kvfake.New(t, kvfake.Options{})
		e.kv.CreateKey(cmkName, kvfake.RSA2048)
		e.kv.SetLatency(o.latency)
		e.kvClock = &testClock{}
		co := e.kv.ClientOptions()
		co.Retry = policy.RetryOptions{MaxRetries: 2, RetryDelay: time.Millisecond, TryTimeout: 10 * time.Second}
		kv, err := cmk.NewKeyVault(e.kv.URL(), cmkName, e.kv.Credential(), cmk.KeyVaultOptions{Client: co, RefreshEvery: kvReread, Now: e.kvClock.Now})
		if err != nil {
			t.Fatal(err)
		}
		e.cmk = kv
	} else {
		local, err := cmk.OpenLocal(t.TempDir(), cmk.LocalOptions{Bits: 2048})
		if err != nil {
			t.Fatal(err)
		}
		e.local, e.cmk = local, local
	}
	if o.azure {
		e.meta, e.blobs, e.atRest = azureStores(t)
	} else {
		blobs, err := embedded.OpenBlobs(filepath.Join(e.dir, "blobs"))
		if err != nil {
			t.Fatal(err)
		}
		meta, err := embedded.OpenMetadata(filepath.Join(e.dir, "metadata.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { meta.Close() })
		e.meta, e.blobs = meta, blobs
	}
	e.keys = e.instance(e.meta)
	e.v = vault.New(e.keys, e.blobs, e.meta, vault.Options{Now: e.clock.Now, MaxVersions: 100})
	return e
}

// instance starts a new service instance over meta: nothing cached. Its
// cache keeps the wall clock: the test's clock jumps months, which would
// expire every cached key.
func (e *env) instance(meta store.Metadata) *keyring.Hierarchy {
	return keyring.New(e.cmk, meta, keyring.Options{Domains: e.domains, Now: e.clock.Now, Cache: keyring.NewCache(keyring.CacheOptions{})})
}

// job returns a rotation job on an instance of its own (as the timer
// function runs on Flex), over the given stores (the real ones when nil).
func (e *env) job(opt rotation.Options, meta store.Metadata, blobs store.Blobs) *rotation.Job {
	if meta == nil {
		meta = e.meta
	}
	if blobs == nil {
		blobs = e.blobs
	}
	if opt.Now == nil {
		opt.Now = e.clock.Now
	}
	if opt.Settle == 0 {
		opt.Settle = 10 * time.Millisecond
	}
	keys := e.instance(meta)
	return rotation.New(keys, vault.New(keys, blobs, meta, vault.Options{Now: e.clock.Now, MaxVersions: 100}), meta, opt)
}

// rotateCMK makes a new CMK version current and returns its key id.
func (e *env) rotateCMK() string {
	e.t.Helper()
	if e.kv != nil {
		kid := e.kv.Rotate(cmkName)
		e.kvClock.Advance(kvReread) // the adapter sees it at its next re-read
		return kid
	}
	kid, err := e.local.Rotate()
	if err != nil {
		e.t.Fatal(err)
	}
	return kid
}

func (e *env) currentCMK() string {
	e.t.Helper()
	id, err := e.keys.CMKCurrent(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// kvCalls is the wrapKey and unwrapKey calls the Key Vault fake answered.
func (e *env) kvCalls() int {
	return e.kv.Calls(kvfake.OpWrapKey) + e.kv.Calls(kvfake.OpUnwrapKey)
}

func (e *env) value() json.RawMessage {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	return json.RawMessage(fmt.Sprintf(`{"token":"rotation-marker-%07d"}`, e.seq))
}

// put writes a new version and records it as acknowledged.
func (e *env) put(ctx context.Context, v *vault.Vault, owner, name string) error {
	val := e.value()
	s, err := v.Put(ctx, owner, vault.PutRequest{Name: name, Value: val})
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.acked[ack{owner, name, s.Version}] = val
	e.mu.Unlock()
	return nil
}

func ownerID(i int) string { return fmt.Sprintf("72f988bf-0000-4000-8000-00000000c0de/owner-%05d", i) }

// populate gives owners 0..n-1 three secrets each.
func (e *env) populate(owners int) {
	e.t.Helper()
	e.populateN(owners, 3)
}

// populateN gives owners 0..n-1 that many secrets each.
func (e *env) populateN(owners, secrets int) {
	e.t.Helper()
	workers := 16
	if e.atRest != nil {
		workers = azureWorkers // each call is a round trip to an emulator
	}
	parallel(e.t, owners, workers, func(i int) error {
		for s := range secrets {
			if err := e.put(context.Background(), e.v, ownerID(i), fmt.Sprintf("secret-%d", s)); err != nil {
				return err
			}
		}
		return nil
	})
}

// ensureAllDomains makes sure every key domain exists (has been used), as in
// any deployment with enough owners: the owners it adds for that are erased
// again.
func (e *env) ensureAllDomains() {
	e.t.Helper()
	ctx := context.Background()
	have := map[int]bool{}
	for _, o := range e.keyrings() {
		have[o.Domain] = true
	}
	for i := 0; len(have) < e.domains; i++ {
		filler := fmt.Sprintf("filler/%d", i)
		if _, err := e.v.Put(ctx, filler, vault.PutRequest{Name: "x", Value: json.RawMessage(`1`)}); err != nil {
			e.t.Fatal(err)
		}
		oh, err := e.keys.OwnerHash(ctx, filler)
		if err != nil {
			e.t.Fatal(err)
		}
		o, err := e.keys.Owner(ctx, oh)
		if err != nil {
			e.t.Fatal(err)
		}
		have[o.Domain] = true
		if _, err := e.v.Erase(ctx, filler); err != nil {
			e.t.Fatal(err)
		}
	}
}

// keyrings lists every owner keyring from the store.
func (e *env) keyrings() []*keyring.Owner {
	e.t.Helper()
	var out []*keyring.Owner
	cont := ""
	for {
		p, err := e.keys.Keyrings(context.Background(), cont, 1000)
		if err != nil {
			e.t.Fatal(err)
		}
		if len(p.Corrupt) > 0 {
			e.t.Fatalf("corrupt keyrings: %v", p.Corrupt)
		}
		out = append(out, p.Owners...)
		if cont = p.Continuation; cont == "" {
			return out
		}
	}
}

func (e *env) domainRing(d int) (keyring.Ring, bool) {
	e.t.Helper()
	it, err := e.meta.Get(context.Background(), store.Domains, fmt.Sprintf("domain-%04d", d))
	if errors.Is(err, store.ErrNotFound) {
		return keyring.Ring{}, false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	var r keyring.Ring
	if err := json.Unmarshal(it.Body, &r); err != nil {
		e.t.Fatal(err)
	}
	return r, true
}

type docVersion struct {
	Version uint64 `json:"v"`
	Blob    string `json:"blob"`
	KEK     uint32 `json:"kek"`
}

type secretDoc struct {
	Name     string       `json:"name"`
	Versions []docVersion `json:"versions"`
	Purging  bool         `json:"purging"`
}

// secretDocs lists every secret document, by owner hash.
func (e *env) secretDocs() map[string][]secretDoc {
	e.t.Helper()
	out := map[string][]secretDoc{}
	cont := ""
	for {
		p, err := e.meta.List(context.Background(), store.Query{Kind: store.KindSecret, Limit: 1000, Continuation: cont})
		if err != nil {
			e.t.Fatal(err)
		}
		for _, it := range p.Items {
			var d secretDoc
			if err := json.Unmarshal(it.Body, &d); err != nil {
				e.t.Fatal(err)
			}
			out[it.Partition] = append(out[it.Partition], d)
		}
		if cont = p.Continuation; cont == "" {
			return out
		}
	}
}

func (e *env) blobNames() []string {
	e.t.Helper()
	var out []string
	cont := ""
	for {
		p, err := e.blobs.List(context.Background(), "", cont, 1000)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, b := range p.Blobs {
			out = append(out, b.Name)
		}
		if cont = p.Continuation; cont == "" {
			return out
		}
	}
}

// want says what checkState expects beyond "everything decrypts".
type want struct {
	cmk        string // every domain key version under this CMK key id
	oneDomain  bool   // every domain has a single key version (retired ones destroyed)
	oneKEK     bool   // every owner has a single KEK version
	settled    bool   // every keyring under its domain's active version; every secret under its owner's active KEK
	noOrphans  bool   // every blob is referenced
	kekVersion uint32 // every owner's active KEK version, if not 0
}

// checkState checks, on a new instance, that every acknowledged version
// decrypts to its value, and what w asks of the stored keys and data; and
// that no secret value is at rest anywhere in the data directory.
func (e *env) checkState(w want) {
	t := e.t
	t.Helper()
	ctx := context.Background()
	v := vault.New(e.instance(e.meta), e.blobs, e.meta, vault.Options{Now: e.clock.Now, MaxVersions: 100})
	e.mu.Lock()
	acked := make(map[ack]json.RawMessage, len(e.acked))
	for k, val := range e.acked {
		acked[k] = val
	}
	e.mu.Unlock()
	var mu sync.Mutex
	keys := make([]ack, 0, len(acked))
	for k := range acked {
		keys = append(keys, k)
	}
	bad := 0
	parallel(t, len(keys), 16, func(i int) error {
		k := keys[i]
		s, err := v.Get(ctx, k.owner, k.name, k.version)
		if err == nil && bytes.Equal(s.Value, acked[k]) {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if bad++; bad <= 5 {
			t.Errorf("acknowledged %s %s v%d: %s, %v; want %s", k.owner, k.name, k.version, s.Value, err, acked[k])
		}
		return nil
	})
	if bad > 0 {
		t.Fatalf("%d of %d acknowledged versions do not read back", bad, len(acked))
	}

	active := map[int]uint32{}
	for d := range e.domains {
		r, ok := e.domainRing(d)
		if !ok {
			continue
		}
		active[d] = r.Active
		for _, ver := range r.Versions {
			if w.cmk != "" && ver.Parent != w.cmk {
				t.Fatalf("domain %d version %d under CMK %s, want %s", d, ver.N, ver.Parent, w.cmk)
			}
		}
		if w.oneDomain && len(r.Versions) != 1 {
			t.Fatalf("domain %d has %d key versions, want 1", d, len(r.Versions))
		}
	}
	rings := map[string]*keyring.Owner{}
	for _, o := range e.keyrings() {
		rings[o.Hash] = o
		if w.oneKEK && len(o.Ring.Versions) != 1 {
			t.Fatalf("owner %s has %d KEK versions, want 1", o.Hash, len(o.Ring.Versions))
		}
		if w.kekVersion != 0 && o.Ring.Active != w.kekVersion {
			t.Fatalf("owner %s active KEK %d, want %d", o.Hash, o.Ring.Active, w.kekVersion)
		}
		if w.settled {
			for _, ver := range o.Ring.Versions {
				if want := fmt.Sprintf("domain/%d/%d", o.Domain, active[o.Domain]); ver.Parent != want {
					t.Fatalf("owner %s KEK %d under %s, want %s", o.Hash, ver.N, ver.Parent, want)
				}
			}
		}
	}
	refs := map[string]bool{}
	for oh, docs := range e.secretDocs() {
		o := rings[oh]
		for _, d := range docs {
			for _, vd := range d.Versions {
				refs[vd.Blob] = true
				if o == nil || d.Purging {
					continue
				}
				kv, ok := o.Ring.Version(vd.KEK)
				switch {
				case !ok:
					t.Fatalf("owner %s secret version %d under KEK %d, which the keyring does not hold", oh, vd.Version, vd.KEK)
				case kv.Retired:
					t.Fatalf("owner %s secret version %d under KEK %d, which is retired", oh, vd.Version, vd.KEK)
				case w.settled && vd.KEK != o.Ring.Active:
					t.Fatalf("owner %s secret version %d under KEK %d, want the active %d", oh, vd.Version, vd.KEK, o.Ring.Active)
				}
			}
		}
	}
	if w.noOrphans {
		for _, b := range e.blobNames() {
			if !refs[b] {
				t.Fatalf("blob %s is referenced by nothing", b)
			}
		}
	}
	if e.atRest != nil {
		for where, b := range e.atRest() {
			if bytes.Contains(b, []byte("rotation-marker-")) {
				t.Errorf("%s holds a secret value", where)
			}
		}
		return
	}
	err := filepath.WalkDir(e.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err == nil && bytes.Contains(b, []byte("rotation-marker-")) {
			t.Errorf("%s holds a secret value", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// runUntilComplete runs the job until a run reports nothing left (at most
// max runs) and returns the reports.
func runUntilComplete(t testing.TB, j *rotation.Job, req rotation.Request, max int) []rotation.Report {
	t.Helper()
	var reps []rotation.Report
	for range max {
		rep, err := j.Run(context.Background(), req)
		reps = append(reps, rep)
		if err != nil {
			t.Fatalf("run %d: %v (report %s)", len(reps), err, reportJSON(rep))
		}
		if rep.Complete {
			return reps
		}
	}
	t.Fatalf("not complete after %d runs; last report %s", max, reportJSON(reps[len(reps)-1]))
	return nil
}

func reportJSON(rep rotation.Report) string {
	b, _ := json.Marshal(rep)
	return string(b)
}

func step(rep rotation.Report, s rotation.Step) rotation.StepReport {
	for _, sr := range rep.Steps {
		if sr.Step == s {
			return sr
		}
	}
	return rotation.StepReport{Step: s}
}

// sum adds up one step's reports over runs.
func sum(reps []rotation.Report, s rotation.Step) rotation.StepReport {
	var out rotation.StepReport
	for _, rep := range reps {
		sr := step(rep, s)
		out.Examined += sr.Examined
		out.VersionsExamined += sr.VersionsExamined
		out.Added += sr.Added
		out.Rewrapped += sr.Rewrapped
		out.Reencrypted += sr.Reencrypted
		out.Retired += sr.Retired
		out.Destroyed += sr.Destroyed
		out.Collected += sr.Collected
		out.Failed += sr.Failed
		out.KeyVaultCalls += sr.KeyVaultCalls
	}
	return out
}

// parallel runs f(0..n-1) on workers and fails the test on the first error.
func parallel(t testing.TB, n, workers int, f func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	next := make(chan int)
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

// forEachBackend runs body twice, as the subtests "embedded" (the embedded
// stores) and "azure" (Blob Storage and Cosmos DB on the emulators, Key Vault
// the CMK: see emulators_test.go), so both share one body and its assertions.
func forEachBackend(t *testing.T, body func(t *testing.T, azure bool)) {
	t.Helper()
	for _, azure := range []bool{false, true} {
		name := "embedded"
		if azure {
			name = "azure"
		}
		t.Run(name, func(t *testing.T) {
			if azure {
				requireEmulators(t)
			}
			body(t, azure)
		})
	}
}

// backendEnv is newEnv on the embedded stores, or newAzureEnv (Key Vault as
// the CMK) when azure.
func backendEnv(t testing.TB, azure bool, o envOptions) *env {
	t.Helper()
	if azure {
		return newAzureEnv(t, o)
	}
	return newEnv(t, o)
}

// domainsUsed lists the key domains that have a domain document.
func (e *env) domainsUsed() []int {
	var used []int
	for d := range e.domains {
		if _, ok := e.domainRing(d); ok {
			used = append(used, d)
		}
	}
	return used
}

func (e *env) domainsInUse() int { return len(e.domainsUsed()) }

package rotation_test

// The rotation claims again, on the Azure adapters: Blob Storage (Azurite)
// and Cosmos DB (the emulator) as the stores, each test on a blob container
// and a Cosmos database of its own, and Key Vault (the fake, through the
// real azkeys client) as the CMK. The emulators are started once per test
// process (emulators.Main stops them); without them (`make tools`) these
// tests skip, or fail under make test.

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/azcosmos"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/credvault/credvault/internal/emulators"
	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/rotation"
	"github.com/credvault/credvault/internal/store"
	"github.com/credvault/credvault/internal/store/azureblob"
	"github.com/credvault/credvault/internal/store/cosmos"
	"github.com/credvault/credvault/internal/vault"
)

func TestMain(m *testing.M) { emulators.Main(m) }

// azureWorkers is how many goroutines seed and read an environment on the
// emulators: each call is a round trip over loopback.
const azureWorkers = 32

// requireEmulators starts the emulators, or skips (fails under make test)
// when they are not installed, before any case needs them.
func requireEmulators(t testing.TB) {
	t.Helper()
	emulators.Blob(t)
	emulators.Cosmos(t)
}

// newAzureEnv is newEnv on the emulators with Key Vault (the fake) as the CMK.
func newAzureEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	requireEmulators(t)
	o.azure, o.keyVault = true, true
	return newEnv(t, o)
}

// azureStores returns the Blob Storage and Cosmos DB adapters on the
// emulators, on a blob container and a Cosmos database of their own
// (removed when the test ends), and what they keep at rest: every blob, read
// through the port, and every document of the Cosmos container, read whole.
func azureStores(t testing.TB) (store.Metadata, store.Blobs, func() map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	connStr, endpoint := emulators.Blob(t), emulators.Cosmos(t)
	name := "rotation-" + randomHex(8)

	blobs, err := azureblob.NewFromConnectionString(connStr, name, azureblob.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := blobs.EnsureContainer(ctx); err != nil {
		t.Fatalf("blob container: %v", err)
	}
	raw, err := container.NewClientFromConnectionString(connStr, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		raw.Delete(ctx, nil)
	})

	meta, err := cosmos.NewWithKey(endpoint, emulators.CosmosKey, name, "metadata", cosmos.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(meta.Close)
	if err := meta.EnsureContainer(ctx); err != nil {
		t.Fatalf("cosmos container: %v", err)
	}
	cred, err := azcosmos.NewKeyCredential(emulators.CosmosKey)
	if err != nil {
		t.Fatal(err)
	}
	client, err := azcosmos.NewClientWithKey(endpoint, cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	db, err := client.NewDatabase(name)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := db.NewContainer("metadata")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		db.Delete(ctx, nil)
	})

	atRest := func() map[string][]byte {
		t.Helper()
		var names []string
		cont := ""
		for {
			p, err := blobs.List(ctx, "", cont, 1000)
			if err != nil {
				t.Fatalf("list blobs: %v", err)
			}
			for _, b := range p.Blobs {
				names = append(names, b.Name)
			}
			if cont = p.Continuation; cont == "" {
				break
			}
		}
		var mu sync.Mutex
		out := make(map[string][]byte, len(names))
		parallel(t, len(names), azureWorkers, func(i int) error {
			data, err := blobs.Read(ctx, names[i])
			if errors.Is(err, store.ErrNotFound) {
				return nil // deleted since the listing
			}
			if err != nil {
				return fmt.Errorf("read blob %s: %w", names[i], err)
			}
			mu.Lock()
			out["blob:"+names[i]] = data
			mu.Unlock()
			return nil
		})
		// Every document whatever its kind or partition, as Cosmos DB keeps it.
		pager := docs.NewQueryItemsPager("SELECT * FROM c", azcosmos.NewPartitionKey(), nil)
		for pager.More() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				t.Fatalf("read the documents: %v", err)
			}
			for _, doc := range page.Items {
				var d struct {
					ID string `json:"id"`
					PK string `json:"pk"`
				}
				if err := json.Unmarshal(doc, &d); err != nil {
					t.Fatalf("document %.80q: %v", doc, err)
				}
				out["document:"+d.PK+"/"+d.ID] = doc
			}
		}
		return out
	}
	return meta, blobs, atRest
}

func randomHex(n int) string {
	b := make([]byte, n)
	crand.Read(b)
	return hex.EncodeToString(b)
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

// TestAzureCMKRotationCallsScaleWithDomainsNotOwners is
// TestCMKRotationCallsScaleWithDomainsNotOwners on the emulators: 16 key
// domains (all in use), 10 owners and 1,000 owners (3,000 secrets); the CMK
// is rotated and the job run: every secret still decrypts (on a new
// instance, and again once the old CMK version is disabled), every domain
// key version is under the new CMK version, and the job's wrapKey and
// unwrapKey calls are at most 2 per domain: the same number with 10 owners as
// with 1,000.
func TestAzureCMKRotationCallsScaleWithDomainsNotOwners(t *testing.T) {
	requireEmulators(t)
	calls := map[int]int{}
	for _, owners := range []int{10, 1000} {
		t.Run(fmt.Sprintf("%d owners", owners), func(t *testing.T) {
			ctx := context.Background()
			began := time.Now()
			e := newAzureEnv(t, envOptions{})
			e.populate(owners)
			e.ensureAllDomains()
			seeded := time.Since(began)
			old := e.currentCMK()
			kid := e.rotateCMK()
			e.kv.ResetCalls()

			began = time.Now()
			rep, err := e.job(rotation.Options{}, nil, nil).Run(ctx, rotation.Request{})
			if err != nil {
				t.Fatalf("Run: %v (%s)", err, reportJSON(rep))
			}
			if !rep.Complete {
				t.Fatalf("run not complete: %s", reportJSON(rep))
			}
			ran := time.Since(began)
			got, reported := e.kvCalls(), 0
			for _, s := range rotation.Steps {
				reported += step(rep, s).KeyVaultCalls
			}
			t.Logf("%d owners (%d secrets): seeded in %v, job in %v: %d wrap/unwrap calls to Key Vault (%d getKey), %d reported",
				owners, 3*owners, seeded.Round(time.Millisecond), ran.Round(time.Millisecond), got, e.kv.Calls("getKey"), reported)
			if got > 2*e.domains {
				t.Fatalf("Key Vault wrap/unwrap calls = %d, want at most 2 × %d domains", got, e.domains)
			}
			if reported != got {
				t.Fatalf("report counts %d Key Vault calls, the fake answered %d", reported, got)
			}
			if s := step(rep, rotation.StepCMK); s.Rewrapped != e.domains || s.Examined != e.domains {
				t.Fatalf("cmk step: %+v, want %d domain keys re-wrapped", s, e.domains)
			}
			began = time.Now()
			e.checkState(want{cmk: kid, noOrphans: true})

			// The old version can go: every secret still opens, on a new instance.
			if err := e.kv.SetEnabled(old, false); err != nil {
				t.Fatal(err)
			}
			e.checkState(want{cmk: kid})
			t.Logf("checks in %v", time.Since(began).Round(time.Millisecond))
			calls[owners] = got
		})
	}
	if len(calls) == 2 && calls[10] != calls[1000] {
		t.Fatalf("Key Vault calls: %d with 10 owners, %d with 1,000: they must not grow with owners", calls[10], calls[1000])
	}
}

// TestAzureDomainRotationMakesNoPerOwnerKeyVaultCall is
// TestDomainRotationMakesNoPerOwnerKeyVaultCall on the emulators: domain
// keys past the policy get a new version each (one Key Vault wrap per
// domain), every owner keyring and the index key are re-wrapped locally, the
// old versions are retired, and destroyed only after DestroyAfter.
func TestAzureDomainRotationMakesNoPerOwnerKeyVaultCall(t *testing.T) {
	ctx := context.Background()
	e := newAzureEnv(t, envOptions{})
	const owners = 50
	e.populate(owners)
	used := e.domainsInUse()
	e.clock.Advance(91 * day)
	e.kv.ResetCalls()
	j := e.job(rotation.Options{}, nil, nil)
	rep, err := j.Run(ctx, rotation.Request{})
	if err != nil || !rep.Complete {
		t.Fatalf("Run: %v, %s", err, reportJSON(rep))
	}
	ds := step(rep, rotation.StepDomain)
	t.Logf("domain step: %s", reportJSON(rotation.Report{Steps: []rotation.StepReport{ds}}))
	if ds.Added != used || ds.Rewrapped != owners+1 || ds.Retired != used || ds.Destroyed != 0 || ds.Failed != 0 {
		t.Fatalf("domain step = %+v; want %d added, %d re-wrapped (owners and the index key), %d retired, none destroyed", ds, used, owners+1, used)
	}
	if wraps := e.kv.Calls("wrapKey"); wraps != used {
		t.Fatalf("Key Vault wraps = %d, want one per domain (%d)", wraps, used)
	}
	if calls := e.kvCalls(); calls > 2*used || calls != ds.KeyVaultCalls+step(rep, rotation.StepKEK).KeyVaultCalls {
		t.Fatalf("Key Vault calls = %d (reported %d); want at most 2 per domain (%d), none per owner", calls, ds.KeyVaultCalls, 2*used)
	}
	if s := step(rep, rotation.StepKEK); s.Added != 0 || s.Reencrypted != 0 {
		t.Fatalf("kek step = %+v: KEKs are not old enough to rotate", s)
	}
	e.checkState(want{settled: true, noOrphans: true})
	for d := range e.domains {
		if r, ok := e.domainRing(d); ok && (len(r.Versions) != 2 || !r.Versions[0].Retired || r.Active != 2) {
			t.Fatalf("domain %d: %+v, want version 1 retired, version 2 active", d, r.Versions)
		}
	}

	calls := e.kvCalls()
	if rep, err := j.Run(ctx, rotation.Request{}); err != nil || step(rep, rotation.StepDomain).Destroyed != 0 {
		t.Fatalf("a run soon after destroyed %d versions (%v); want none before DestroyAfter", step(rep, rotation.StepDomain).Destroyed, err)
	}
	e.clock.Advance(2 * day)
	rep, err = j.Run(ctx, rotation.Request{})
	if err != nil || step(rep, rotation.StepDomain).Destroyed != used {
		t.Fatalf("Run after DestroyAfter: %v, %s; want %d versions destroyed", err, reportJSON(rep), used)
	}
	if e.kvCalls() != calls {
		t.Fatalf("the later runs called Key Vault %d times", e.kvCalls()-calls)
	}
	e.checkState(want{settled: true, oneDomain: true, noOrphans: true})
}

// TestAzureKEKRotationSweepsEverySecret is TestKEKRotationSweepsEverySecret
// on the emulators: owner KEKs past the policy get a new version each (no
// Key Vault wrap; a new instance unwraps each domain key it uses once), the
// sweep moves every secret version (soft-deleted ones too) and deletes the
// old ciphertext, no secret is left under a retired KEK, and the old KEKs
// are destroyed after DestroyAfter. Then one owner's KEK is rotated on demand.
func TestAzureKEKRotationSweepsEverySecret(t *testing.T) {
	ctx := context.Background()
	e := newAzureEnv(t, envOptions{})
	const owners = 50
	e.populate(owners)
	for i := range 5 {
		if err := e.put(ctx, e.v, ownerID(i), "secret-0"); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.v.Delete(ctx, ownerID(7), "secret-2", ""); err != nil { // soft-deleted: moved too
		t.Fatal(err)
	}
	used := e.domainsInUse()
	e.clock.Advance(366 * day)
	e.kv.ResetCalls()
	j := e.job(rotation.Options{DomainMaxAge: 10 * 365 * day}, nil, nil)
	rep, err := j.Run(ctx, rotation.Request{})
	if err != nil || !rep.Complete {
		t.Fatalf("Run: %v, %s", err, reportJSON(rep))
	}
	ks := step(rep, rotation.StepKEK)
	t.Logf("kek step: %s", reportJSON(rotation.Report{Steps: []rotation.StepReport{ks}}))
	versions := owners*3 + 5
	if ks.Added != owners || ks.Reencrypted != versions || ks.VersionsExamined != versions || ks.Retired != owners ||
		ks.Destroyed != 0 || ks.Collected != versions || ks.Failed != 0 {
		t.Fatalf("kek step = %+v; want %d KEKs added and retired, %d versions re-encrypted and old blobs deleted", ks, owners, versions)
	}
	if calls := e.kvCalls(); calls > used || e.kv.Calls("wrapKey") != 0 {
		t.Fatalf("Key Vault calls = %d (%d wraps); want at most one unwrap per domain in use (%d), none per owner", calls, e.kv.Calls("wrapKey"), used)
	}
	if _, err := e.v.Restore(ctx, ownerID(7), "secret-2"); err != nil {
		t.Fatal(err)
	}
	e.checkState(want{settled: true, noOrphans: true, kekVersion: 2})

	e.clock.Advance(2 * day)
	rep, err = j.Run(ctx, rotation.Request{})
	if ks := step(rep, rotation.StepKEK); err != nil || ks.Destroyed != owners || ks.Reencrypted != 0 {
		t.Fatalf("Run after DestroyAfter: %v, %s; want the %d old KEKs destroyed, nothing to move", err, reportJSON(rep), owners)
	}
	e.checkState(want{settled: true, oneKEK: true, noOrphans: true, kekVersion: 2})

	// On demand: one owner's KEK now, whatever its age; still no Key Vault call.
	calls := e.kvCalls()
	oh, err := e.keys.OwnerHash(ctx, ownerID(3))
	if err != nil {
		t.Fatal(err)
	}
	rep, err = j.Run(ctx, rotation.Request{Owner: oh})
	if ks := step(rep, rotation.StepKEK); err != nil || ks.Added != 1 || ks.Reencrypted != 4 || ks.Retired != 1 {
		t.Fatalf("Run for one owner: %v, %s; want 1 KEK added, its 4 versions moved", err, reportJSON(rep))
	}
	if e.kvCalls() != calls {
		t.Fatalf("rotating one owner's KEK called Key Vault %d times", e.kvCalls()-calls)
	}
	o, err := e.keys.Owner(ctx, oh)
	if err != nil || o.Active() != 3 {
		t.Fatalf("owner's active KEK = %d (%v), want 3", o.Active(), err)
	}
	e.checkState(want{settled: true, noOrphans: true})
}

// azureCrashEnv is crashEnv on the emulators: work for every step (the CMK
// rotated, domain keys and KEKs past their policy ages, an orphan blob).
func azureCrashEnv(t *testing.T) (*env, string) {
	t.Helper()
	e := newAzureEnv(t, envOptions{domains: 4})
	e.populate(8)
	for i := range 3 {
		if err := e.put(context.Background(), e.v, ownerID(i), "secret-1"); err != nil {
			t.Fatal(err)
		}
	}
	oh, err := e.keys.OwnerHash(context.Background(), ownerID(0))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.blobs.Create(context.Background(), oh+"/000000000000000000000000000000aa", []byte("orphan")); err != nil {
		t.Fatal(err)
	}
	kid := e.rotateCMK()
	e.clock.Advance(400 * day)
	return e, kid
}

// TestAzureCrashSafety stops the job on the emulators at random points, 24
// times, by canceling its context at a random delay within the time an
// uninterrupted run takes (the SDK's requests are abandoned mid-flight: some
// land, their answers lost). Each time the job is stopped twice, then run
// again to the end: nothing is lost, every secret decrypts, every key is
// where it belongs and was rotated once, and what was retired is destroyed
// only later, once that is safe.
func TestAzureCrashSafety(t *testing.T) {
	requireEmulators(t)
	e, _ := azureCrashEnv(t)
	began := time.Now()
	if rep, err := e.job(crashOptions, nil, nil).Run(context.Background(), rotation.Request{}); err != nil || !rep.Complete {
		t.Fatalf("uninterrupted run: %v, %s", err, reportJSON(rep))
	}
	took := time.Since(began)
	t.Logf("an uninterrupted run: %v", took)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	const runs = 24
	var interrupted atomic.Int64
	t.Run("runs", func(t *testing.T) {
		for i := range runs {
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			t.Run(fmt.Sprintf("%02d", i), func(t *testing.T) {
				t.Parallel()
				e, kid := azureCrashEnv(t)
				// Two canceled runs, then runs without faults to the end.
				for range 2 {
					ctx, cancel := context.WithCancel(context.Background())
					after := time.Duration(rng.Int64N(int64(took)))
					time.AfterFunc(after, cancel)
					rep, err := e.job(crashOptions, nil, nil).Run(ctx, rotation.Request{})
					cancel()
					if err != nil || !rep.Complete {
						interrupted.Add(1)
					}
					t.Logf("run canceled after %v: %v; complete %v; %s", after.Round(time.Millisecond), err, rep.Complete, stopped(rep))
				}
				reps := runUntilComplete(t, e.job(crashOptions, nil, nil), rotation.Request{}, 10)
				e.checkState(want{cmk: kid, settled: true, kekVersion: 2})
				// No key was rotated twice: one new version each.
				for d := range e.domains {
					if r, ok := e.domainRing(d); ok && r.Active != 2 {
						t.Fatalf("domain %d active version %d, want 2", d, r.Active)
					}
				}
				if s := sum(reps, rotation.StepKEK); s.Failed != 0 {
					t.Fatalf("clean runs failed items: %+v", s)
				}

				// Later: the retired keys are destroyed, the orphans collected.
				e.clock.Advance(2 * day)
				runUntilComplete(t, e.job(crashOptions, nil, nil), rotation.Request{}, 10)
				e.checkState(want{cmk: kid, settled: true, oneDomain: true, oneKEK: true, noOrphans: true, kekVersion: 2})
			})
		}
	})
	t.Logf("%d of the %d canceled runs were stopped before the end", interrupted.Load(), 2*runs)
	if !t.Failed() && interrupted.Load() < 20 {
		t.Fatalf("only %d runs were stopped before the end; want at least 20", interrupted.Load())
	}
}

// stopped says where each step of a run stopped.
func stopped(rep rotation.Report) string {
	var b bytes.Buffer
	for _, s := range rep.Steps {
		how := "done"
		if s.Stopped != "" {
			how = "stopped (" + s.Stopped + ")"
		}
		fmt.Fprintf(&b, "%s %s; ", s.Step, how)
	}
	return b.String()
}

// TestAzureTrafficDuringRotation is TestTrafficDuringRotation on the
// emulators: puts, gets, deletes and restores from several goroutines for as
// long as a rotation of every level takes (two runs at once, then more until
// done): not one of them fails, and no acknowledged version is lost.
func TestAzureTrafficDuringRotation(t *testing.T) {
	ctx := context.Background()
	e := newAzureEnv(t, envOptions{domains: 4})
	const owners, workers = 12, 6
	e.populate(owners)
	toggles := map[string]json.RawMessage{} // owner → value of its "toggle" secret
	for i := range owners {
		val := e.value()
		if _, err := e.v.Put(ctx, ownerID(i), vault.PutRequest{Name: "toggle", Value: val}); err != nil {
			t.Fatal(err)
		}
		toggles[ownerID(i)] = val
	}
	kid := e.rotateCMK()
	e.clock.Advance(400 * day)

	var failures atomic.Int64
	var ops [3]atomic.Int64 // put, get, delete+restore
	fail := func(format string, args ...any) {
		if failures.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for {
				select {
				case <-stop:
					return
				default:
				}
				owner := ownerID(rng.IntN(owners))
				switch r := rng.IntN(10); {
				case r < 4:
					if err := e.put(ctx, e.v, owner, fmt.Sprintf("secret-%d", rng.IntN(3))); err != nil {
						fail("put: %v", err)
					}
					ops[0].Add(1)
				case r < 8:
					k, want := e.randomAck(rng)
					s, err := e.v.Get(ctx, k.owner, k.name, k.version)
					if err != nil || !bytes.Equal(s.Value, want) {
						fail("get %s v%d: %s, %v; want %s", k.name, k.version, s.Value, err, want)
					}
					ops[1].Add(1)
				default:
					// Each worker toggles owners of its own.
					owner := ownerID(w + workers*rng.IntN(owners/workers))
					if err := e.v.Delete(ctx, owner, "toggle", ""); err != nil {
						fail("delete: %v", err)
					}
					if _, err := e.v.Get(ctx, owner, "toggle", 0); !errors.Is(err, vault.ErrNotFound) {
						fail("get of a deleted secret: %v, want ErrNotFound", err)
					}
					if _, err := e.v.Restore(ctx, owner, "toggle"); err != nil {
						fail("restore: %v", err)
					}
					if s, err := e.v.Get(ctx, owner, "toggle", 0); err != nil || !bytes.Equal(s.Value, toggles[owner]) {
						fail("get of a restored secret: %s, %v", s.Value, err)
					}
					ops[2].Add(1)
				}
			}
		}()
	}

	// Two instances rotate at once; then more runs until the work is done.
	began := time.Now()
	var rwg sync.WaitGroup
	for range 2 {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			if rep, err := e.job(concurrentOptions, nil, nil).Run(ctx, rotation.Request{}); err != nil {
				fail("concurrent run: %v, %s", err, reportJSON(rep))
			}
		}()
	}
	rwg.Wait()
	reps := runUntilComplete(t, e.job(concurrentOptions, nil, nil), rotation.Request{}, 10)
	close(stop)
	wg.Wait()
	t.Logf("during the rotation (%v): %d puts, %d gets, %d delete-restores; %d runs after the 2 concurrent ones",
		time.Since(began).Round(time.Millisecond), ops[0].Load(), ops[1].Load(), ops[2].Load(), len(reps))
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d operations failed during the rotation", n)
	}
	if ops[0].Load() == 0 || ops[1].Load() == 0 || ops[2].Load() == 0 {
		t.Fatal("the traffic did not run during the rotation")
	}
	// Puts that held the keyring from before the KEK rotation may have
	// landed under the old KEK after the sweep went by: one more run moves
	// them, as the next timer run would.
	runUntilComplete(t, e.job(concurrentOptions, nil, nil), rotation.Request{}, 10)
	e.mu.Lock()
	for owner, val := range toggles {
		e.acked[ack{owner, "toggle", 1}] = val
	}
	e.mu.Unlock()
	e.checkState(want{cmk: kid, settled: true, noOrphans: true, kekVersion: 2})
}

// TestAzureTwoRunsAtOnceEndAsOne is TestTwoRunsAtOnceEndAsOne on the
// emulators: two runs at once on two instances, with work for every step,
// end where one run ends (one new version per domain and per owner, every
// secret moved once, no orphan), and a third run finds nothing left to do.
func TestAzureTwoRunsAtOnceEndAsOne(t *testing.T) {
	ctx := context.Background()
	e := newAzureEnv(t, envOptions{domains: 4})
	const owners = 20
	e.populate(owners)
	kid := e.rotateCMK()
	e.clock.Advance(400 * day)
	used := e.domainsInUse()

	reps := make([]rotation.Report, 2)
	var wg sync.WaitGroup
	for i := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if reps[i], err = e.job(concurrentOptions, nil, nil).Run(ctx, rotation.Request{}); err != nil {
				t.Errorf("run %d: %v, %s", i, err, reportJSON(reps[i]))
			}
		}()
	}
	wg.Wait()
	for i, rep := range reps {
		t.Logf("run %d: %s", i, reportJSON(rep))
	}
	if s := sum(reps, rotation.StepCMK); s.Rewrapped != used {
		t.Fatalf("domain keys re-wrapped %d times in all, want %d (once each)", s.Rewrapped, used)
	}
	if s := sum(reps, rotation.StepDomain); s.Added != used {
		t.Fatalf("domain key versions added: %d, want %d", s.Added, used)
	}
	if s := sum(reps, rotation.StepKEK); s.Added != owners || s.Reencrypted != 3*owners {
		t.Fatalf("kek steps together = %+v; want %d KEKs added, %d versions moved once each", s, owners, 3*owners)
	}
	e.checkState(want{cmk: kid, settled: true, noOrphans: true, kekVersion: 2})
	for d := range e.domains {
		if r, ok := e.domainRing(d); ok && (len(r.Versions) != 2 || r.Active != 2) {
			t.Fatalf("domain %d: %+v, want 2 versions", d, r)
		}
	}
	for _, o := range e.keyrings() {
		if len(o.Ring.Versions) != 2 || !o.Ring.Versions[0].Retired {
			t.Fatalf("owner %s: %+v, want KEK 1 retired, 2 active", o.Hash, o.Ring)
		}
	}

	rep, err := e.job(concurrentOptions, nil, nil).Run(ctx, rotation.Request{})
	if err != nil || !rep.Complete {
		t.Fatalf("third run: %v, %s", err, reportJSON(rep))
	}
	for _, s := range rep.Steps {
		if s.Added+s.Rewrapped+s.Reencrypted+s.Retired+s.Destroyed+s.Collected != 0 {
			t.Fatalf("third run found work: %s", reportJSON(rep))
		}
	}
}

// TestAzureAtRestSeesEverything: the at-rest scan of the Azure stores, on
// which checkState's "no secret value at rest" relies there, sees every blob
// and every kind of document, the job's report included.
func TestAzureAtRestSeesEverything(t *testing.T) {
	e := newAzureEnv(t, envOptions{domains: 2})
	e.populate(3)
	if _, err := e.job(rotation.Options{}, nil, nil).Run(context.Background(), rotation.Request{}); err != nil {
		t.Fatal(err)
	}
	rest := e.atRest()
	want := map[string]int{ // where (or its prefix, ending in '/') → how many
		"document:" + store.Domains + "/deployment":           1,
		"document:" + store.Domains + "/domain-":              len(e.domainsUsed()),
		"document:" + store.Domains + "/" + rotation.ReportID: 1,
	}
	blobs := e.blobNames()
	for _, b := range blobs {
		want["blob:"+b] = 1
	}
	for _, o := range e.keyrings() {
		want["document:"+o.Hash+"/"+keyring.KeyringID] = 1
	}
	for oh, docs := range e.secretDocs() {
		want["document:"+oh+"/"] += len(docs) + 1 // its secret documents and its keyring
	}
	for w, n := range want {
		got := 0
		for where := range rest {
			if where == w || (strings.HasSuffix(w, "/") || strings.HasSuffix(w, "-")) && strings.HasPrefix(where, w) {
				got++
			}
		}
		if got != n {
			t.Errorf("the at-rest scan holds %d of %s, want %d", got, w, n)
		}
	}
	if len(blobs) != 9 {
		t.Fatalf("%d blobs, want 9", len(blobs))
	}
}

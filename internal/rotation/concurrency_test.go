package rotation_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/rotation"
	"github.com/credvault/credvault/internal/vault"
)

// concurrentOptions: the test clock runs a year ahead of the blobs' clock
// (the file times), so the grace period is counted from there.
var concurrentOptions = rotation.Options{PageSize: 4, Settle: 100 * time.Millisecond, GarbageGrace: 401 * day}

// TestTrafficDuringRotation runs puts, gets, deletes and restores from
// several goroutines for as long as a rotation of every level takes (two
// runs at once, then more until done): not one of them fails, and no
// acknowledged version is lost. On both backends.
func TestTrafficDuringRotation(t *testing.T) {
	forEachBackend(t, testTrafficDuringRotation)
}

func testTrafficDuringRotation(t *testing.T, azure bool) {
	ctx := context.Background()
	e := backendEnv(t, azure, envOptions{domains: 4})
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
	var ops [4]atomic.Int64 // put, get, delete+restore, rotation runs
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
			for n := 0; ; n++ {
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
					// Each worker toggles owners of its own, so toggles do
					// not race each other.
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
			ops[3].Add(1)
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

// randomAck returns an acknowledged version and its value.
func (e *env) randomAck(rng *rand.Rand) (ack, json.RawMessage) {
	e.mu.Lock()
	defer e.mu.Unlock()
	i := rng.IntN(len(e.acked))
	for k, v := range e.acked {
		if i == 0 {
			return k, v
		}
		i--
	}
	panic("unreachable")
}

// TestTwoRunsAtOnceEndAsOne starts two runs at once on two instances, with
// work for every step: together they end where one run ends (one new
// version per domain and per owner, every secret moved once, no orphan),
// and a third run finds nothing left to do. On both backends.
func TestTwoRunsAtOnceEndAsOne(t *testing.T) {
	forEachBackend(t, testTwoRunsAtOnceEndAsOne)
}

func testTwoRunsAtOnceEndAsOne(t *testing.T, azure bool) {
	ctx := context.Background()
	e := backendEnv(t, azure, envOptions{domains: 4})
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

package rotation_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/rotation"
	"github.com/credvault/credvault/internal/store"
)

var errInjected = errors.New("injected fault")

// faults counts the backend calls of the job's instance and fails the nth:
// either the call is not made, or it lands and its answer is lost. Both
// answer store.ErrUnavailable.
type faults struct {
	mu     sync.Mutex
	calls  int
	failAt int // 0: none
	lost   bool
	fired  string
}

func (f *faults) next(what string) (fail, lost bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls == f.failAt {
		f.fired = what
		return true, f.lost
	}
	return false, false
}

func (f *faults) do(what string, call func() error) error {
	fail, lost := f.next(what)
	if fail && !lost {
		return fmt.Errorf("%s: %w: %w", what, errInjected, store.ErrUnavailable)
	}
	err := call()
	if fail {
		return fmt.Errorf("%s landed, answer lost: %w: %w", what, errInjected, store.ErrUnavailable)
	}
	return err
}

type faultyMeta struct {
	inner store.Metadata
	f     *faults
}

func (m faultyMeta) Get(ctx context.Context, partition, id string) (it store.Item, err error) {
	err = m.f.do("meta.Get "+id, func() error { it, err = m.inner.Get(ctx, partition, id); return err })
	return it, err
}

func (m faultyMeta) Create(ctx context.Context, it store.Item) (etag string, err error) {
	err = m.f.do("meta.Create "+it.ID, func() error { etag, err = m.inner.Create(ctx, it); return err })
	return etag, err
}

func (m faultyMeta) Replace(ctx context.Context, it store.Item, ifMatch string) (etag string, err error) {
	err = m.f.do("meta.Replace "+it.ID, func() error { etag, err = m.inner.Replace(ctx, it, ifMatch); return err })
	return etag, err
}

func (m faultyMeta) Delete(ctx context.Context, partition, id, ifMatch string) error {
	return m.f.do("meta.Delete "+id, func() error { return m.inner.Delete(ctx, partition, id, ifMatch) })
}

func (m faultyMeta) List(ctx context.Context, q store.Query) (p store.Page, err error) {
	err = m.f.do("meta.List "+q.Kind, func() error { p, err = m.inner.List(ctx, q); return err })
	return p, err
}

type faultyBlobs struct {
	inner store.Blobs
	f     *faults
}

func (b faultyBlobs) Create(ctx context.Context, name string, data []byte) error {
	return b.f.do("blobs.Create", func() error { return b.inner.Create(ctx, name, data) })
}

func (b faultyBlobs) Read(ctx context.Context, name string) (data []byte, err error) {
	err = b.f.do("blobs.Read", func() error { data, err = b.inner.Read(ctx, name); return err })
	return data, err
}

func (b faultyBlobs) Delete(ctx context.Context, name string) error {
	return b.f.do("blobs.Delete", func() error { return b.inner.Delete(ctx, name) })
}

func (b faultyBlobs) List(ctx context.Context, prefix, cont string, limit int) (p store.BlobPage, err error) {
	err = b.f.do("blobs.List", func() error { p, err = b.inner.List(ctx, prefix, cont, limit); return err })
	return p, err
}

var crashOptions = rotation.Options{PageSize: 3, Settle: time.Millisecond}

// crashEnv is a deployment with work for every step (on the emulators when
// azure): the CMK rotated, domain keys and KEKs past their policy ages, an
// orphan blob.
func crashEnv(t *testing.T, azure bool) (*env, string) {
	t.Helper()
	e := backendEnv(t, azure, envOptions{domains: 4})
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

// TestCrashSafety stops the job at random points: 32 times on the embedded
// stores by canceling its context, or by a backend call that fails or lands
// with its answer lost; 24 times on the emulators by canceling its context
// at a random delay within the time an uninterrupted run takes (the SDK's
// requests are abandoned mid-flight: some land, their answers lost). On
// either, at least 20 of the interrupted runs (two per time) must really
// stop before the end.
// Each time the job is stopped twice, then run again to the end: nothing is
// lost, every secret decrypts, every key is where it belongs and was rotated
// once, and what was retired is destroyed only later, once that is safe.
func TestCrashSafety(t *testing.T) {
	forEachBackend(t, func(t *testing.T, azure bool) {
		if azure {
			testCrashSafety(t, azure, []string{"canceled"}, 24, 20)
		} else {
			testCrashSafety(t, azure, []string{"canceled", "unavailable", "answer-lost"}, 32, 20)
		}
	})
}

// testCrashSafety interrupts 2 × runs runs, in turn in each of the ways
// hows, and wants at least minStopped of them to stop before the end.
func testCrashSafety(t *testing.T, azure bool, hows []string, runs int, minStopped int64) {
	// How many backend calls, and how long, an uninterrupted run takes.
	e, _ := crashEnv(t, azure)
	f := &faults{}
	began := time.Now()
	if rep, err := e.job(crashOptions, faultyMeta{e.meta, f}, faultyBlobs{e.blobs, f}).Run(context.Background(), rotation.Request{}); err != nil || !rep.Complete {
		t.Fatalf("uninterrupted run: %v, %s", err, reportJSON(rep))
	}
	calls, took := f.calls, time.Since(began)
	t.Logf("an uninterrupted run: %d backend calls, %v", calls, took)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	var interrupted atomic.Int64
	t.Run("runs", func(t *testing.T) {
		for i := range runs {
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			how := hows[i%len(hows)]
			t.Run(fmt.Sprintf("%02d-%s", i, how), func(t *testing.T) {
				t.Parallel()
				e, kid := crashEnv(t, azure)
				ctx := context.Background()
				// Two interrupted runs, then runs without faults to the end.
				for range 2 {
					f := &faults{}
					ctx, cancel := context.WithCancel(ctx)
					var after time.Duration
					if how == "canceled" {
						after = time.Duration(rng.Int64N(int64(took)))
						time.AfterFunc(after, cancel)
					} else {
						f.failAt, f.lost = 1+rng.IntN(calls), how == "answer-lost"
					}
					rep, err := e.job(crashOptions, faultyMeta{e.meta, f}, faultyBlobs{e.blobs, f}).Run(ctx, rotation.Request{})
					cancel()
					if err != nil || !rep.Complete {
						interrupted.Add(1)
					}
					t.Logf("interrupted run (%s after %v, at call %d, %q): %v; complete %v; %s",
						how, after.Round(time.Millisecond), f.failAt, f.fired, err, rep.Complete, stopped(rep))
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
	t.Logf("%d of the %d interrupted runs were stopped before the end", interrupted.Load(), 2*runs)
	if !t.Failed() && interrupted.Load() < minStopped {
		t.Fatalf("only %d runs were stopped before the end; want at least %d", interrupted.Load(), minStopped)
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

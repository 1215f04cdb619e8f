package rotation_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
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

// crashEnv is a deployment with work for every step: the CMK rotated,
// domain keys and KEKs past their policy ages, an orphan blob.
func crashEnv(t *testing.T) (*env, string) {
	t.Helper()
	e := newEnv(t, envOptions{domains: 4})
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

// TestCrashSafety stops the job at random points, 24 times: by canceling
// its context, or by a backend call that fails or lands with its answer
// lost. Each time the job is then run again to the end: nothing is lost,
// every secret decrypts, every key is where it belongs, and what was retired
// is destroyed only later, once that is safe.
func TestCrashSafety(t *testing.T) {
	// How many backend calls, and how long, an uninterrupted run takes.
	e, _ := crashEnv(t)
	f := &faults{}
	began := time.Now()
	if rep, err := e.job(crashOptions, faultyMeta{e.meta, f}, faultyBlobs{e.blobs, f}).Run(context.Background(), rotation.Request{}); err != nil || !rep.Complete {
		t.Fatalf("uninterrupted run: %v, %s", err, reportJSON(rep))
	}
	calls, took := f.calls, time.Since(began)
	t.Logf("an uninterrupted run: %d backend calls, %v", calls, took)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	for i := range 24 {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		var how string
		switch i % 3 {
		case 0:
			how = "canceled"
		case 1:
			how = "unavailable"
		case 2:
			how = "answer-lost"
		}
		t.Run(fmt.Sprintf("%02d-%s", i, how), func(t *testing.T) {
			t.Parallel()
			e, kid := crashEnv(t)
			ctx := context.Background()
			// Two interrupted runs, then runs without faults to the end.
			for range 2 {
				f := &faults{}
				ctx, cancel := context.WithCancel(ctx)
				if how == "canceled" {
					time.AfterFunc(time.Duration(rng.Int64N(int64(took))), cancel)
				} else {
					f.failAt, f.lost = 1+rng.IntN(calls), how == "answer-lost"
				}
				rep, err := e.job(crashOptions, faultyMeta{e.meta, f}, faultyBlobs{e.blobs, f}).Run(ctx, rotation.Request{})
				cancel()
				t.Logf("interrupted run (%s at call %d, %q): %v; complete %v", how, f.failAt, f.fired, err, rep.Complete)
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
}

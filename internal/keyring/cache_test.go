package keyring_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/credvault/credvault/internal/keyring"
)

const (
	testTTL   = 10 * time.Minute
	testAhead = 2 * time.Minute
	testGrace = time.Hour
)

func newTestCache(clock *fakeClock, max int) *keyring.Cache {
	return keyring.NewCache(keyring.CacheOptions{MaxEntries: max, TTL: testTTL, RefreshAhead: testAhead, Grace: testGrace, Now: clock.Now})
}

func TestCacheHitReturnsADistinctCopy(t *testing.T) {
	d, clock := newCMKDouble(t), newFakeClock()
	c := newTestCache(clock, 0)
	k := d.newKey(t, "domain-a")

	first := mustGet(t, c, k.id, "", k.plain, k.unwrap(d))
	second := mustGet(t, c, k.id, "", k.plain, k.unwrap(d))
	if got, want := d.unwraps.Load(), int64(1); got != want {
		t.Fatalf("two Gets of one key: CMK unwraps = %d, want %d", got, want)
	}
	if &first[0] == &second[0] {
		t.Fatal("two Gets handed out the same memory, want a copy each")
	}
	cached := d.lastReturned(t)
	if &cached[0] == &first[0] || &cached[0] == &second[0] {
		t.Fatal("Get handed out the cache's own slice, want a copy")
	}

	first[0] ^= 0xff
	clear(second) // what a caller does when done
	mustGet(t, c, k.id, "", k.plain, k.unwrap(d))
	if !bytes.Equal(cached, k.plain) {
		t.Fatalf("after callers changed their copies, the cached key = %x, want %x", cached, k.plain)
	}
	if got, want := c.Stats().Hits, uint64(2); got != want {
		t.Fatalf("Stats().Hits = %d, want %d", got, want)
	}
}

func TestCacheCollapsesConcurrentMisses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, clock := newCMKDouble(t), newFakeClock()
		c := newTestCache(clock, 0)
		k := d.newKey(t, "domain-a")
		d.set(answerSlow)

		const callers = 50
		got := make([][]byte, callers)
		errs := make([]error, callers)
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() { got[i], errs[i] = c.Get(t.Context(), k.id, "", k.unwrap(d)) })
		}
		synctest.Wait() // every caller is waiting and the one unwrap is blocked
		if n := d.unwraps.Load(); n != 1 {
			t.Fatalf("%d callers waiting on one missing key: CMK unwraps = %d, want 1", callers, n)
		}
		d.release()
		wg.Wait()

		for i := range callers {
			if errs[i] != nil {
				t.Fatalf("caller %d: %v", i, errs[i])
			}
			if !bytes.Equal(got[i], k.plain) {
				t.Fatalf("caller %d got %x, want %x", i, got[i], k.plain)
			}
			if i > 0 && &got[i][0] == &got[0][0] {
				t.Fatalf("callers 0 and %d share memory, want a copy each", i)
			}
		}
		if n := d.unwraps.Load(); n != 1 {
			t.Fatalf("after %d concurrent misses: CMK unwraps = %d, want 1", callers, n)
		}
		if s := c.Stats(); s.Unwraps != 1 || s.Misses != callers {
			t.Fatalf("Stats() = %+v, want 1 unwrap for %d misses", s, callers)
		}
	})
}

func TestCacheEvictsLeastRecentlyUsedAndZeroesIt(t *testing.T) {
	tests := []struct {
		name        string
		gets        []string // in order, into a cache of 3
		wantEvicted []string
	}{
		{"insertion order", []string{"a", "b", "c", "d", "e"}, []string{"a", "b"}},
		{"a hit keeps a key", []string{"a", "b", "c", "a", "d", "e"}, []string{"b", "c"}},
		{"hits on every old key", []string{"a", "b", "c", "b", "a", "c", "d", "e"}, []string{"b", "a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, clock := newCMKDouble(t), newFakeClock()
			c := newTestCache(clock, 3)
			keys := map[string]testKey{}
			held := map[string][]byte{} // the slice each unwrap returned, now owned by the cache
			for _, id := range tt.gets {
				k, ok := keys[id]
				if !ok {
					k = d.newKey(t, id)
					keys[id] = k
				}
				before := d.unwraps.Load()
				mustGet(t, c, id, "", k.plain, k.unwrap(d))
				if d.unwraps.Load() > before {
					held[id] = d.lastReturned(t)
				}
			}

			evicted := map[string]bool{}
			for _, id := range tt.wantEvicted {
				evicted[id] = true
			}
			for id, b := range held {
				if got, want := isZero(b), evicted[id]; got != want {
					t.Errorf("key %s: zeroed = %v, want %v (evicted: %v)", id, got, want, tt.wantEvicted)
				}
			}
			if got, want := c.Stats().Dropped, uint64(len(tt.wantEvicted)); got != want {
				t.Errorf("Stats().Dropped = %d, want %d", got, want)
			}
			for id, k := range keys {
				if evicted[id] {
					continue
				}
				before := d.unwraps.Load()
				mustGet(t, c, id, "", k.plain, k.unwrap(d))
				if got := d.unwraps.Load() - before; got != 0 {
					t.Errorf("Get of kept key %s: CMK unwraps = %d, want 0", id, got)
				}
			}
			gone := keys[tt.wantEvicted[0]]
			before := d.unwraps.Load()
			mustGet(t, c, gone.id, "", gone.plain, gone.unwrap(d))
			if got := d.unwraps.Load() - before; got != 1 {
				t.Errorf("Get of evicted key %s: CMK unwraps = %d, want 1", gone.id, got)
			}
		})
	}
}

func TestCacheTTL(t *testing.T) {
	tests := []struct {
		name        string
		age         time.Duration
		wantUnwraps int64
	}{
		{"fresh", 0, 1},
		{"just before the refresh window", testTTL - testAhead - time.Nanosecond, 1},
		{"at expiry", testTTL, 2},
		{"long expired", testTTL + testGrace + time.Hour, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, clock := newCMKDouble(t), newFakeClock()
			c := newTestCache(clock, 0)
			k := d.newKey(t, "domain-a")
			mustGet(t, c, k.id, "", k.plain, k.unwrap(d))
			first := d.lastReturned(t)

			clock.Set(tt.age)
			mustGet(t, c, k.id, "", k.plain, k.unwrap(d))
			if got := d.unwraps.Load(); got != tt.wantUnwraps {
				t.Fatalf("Get at age %v: CMK unwraps = %d, want %d", tt.age, got, tt.wantUnwraps)
			}
			if got, want := isZero(first), tt.wantUnwraps > 1; got != want {
				t.Fatalf("Get at age %v: replaced key zeroed = %v, want %v", tt.age, got, want)
			}
		})
	}
}

func TestCacheRefreshesAhead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, clock := newCMKDouble(t), newFakeClock()
		c := newTestCache(clock, 0)
		k := d.newKey(t, "domain-a")
		mustGet(t, c, k.id, "", k.plain, k.unwrap(d))
		first := d.lastReturned(t)

		d.set(answerSlow) // the background unwrap blocks until released
		clock.Set(testTTL - testAhead)
		mustGet(t, c, k.id, "", k.plain, k.unwrap(d)) // returns at once, the CMK is blocked
		synctest.Wait()
		if got, want := d.unwraps.Load(), int64(2); got != want {
			t.Fatalf("Get in the refresh window: CMK unwraps = %d, want %d (one in the background)", got, want)
		}
		clock.Set(testTTL - time.Second)
		mustGet(t, c, k.id, "", k.plain, k.unwrap(d))
		synctest.Wait()
		if got, want := d.unwraps.Load(), int64(2); got != want {
			t.Fatalf("second Get while a refresh runs: CMK unwraps = %d, want %d", got, want)
		}

		d.release()
		synctest.Wait() // the refresh has stored its key
		if !isZero(first) {
			t.Fatal("after a refresh, the replaced key is not zeroed")
		}
		clock.Set(testTTL + testTTL/2) // past the first unwrap's expiry, within the refresh's
		mustGet(t, c, k.id, "", k.plain, k.unwrap(d))
		if got, want := d.unwraps.Load(), int64(2); got != want {
			t.Fatalf("Get after a refresh, before its expiry: CMK unwraps = %d, want %d", got, want)
		}
		if s := c.Stats(); s.Misses != 1 || s.Hits != 3 {
			t.Fatalf("Stats() = %+v, want 1 miss and 3 hits", s)
		}
	})
}

func TestCacheUnreachableServesThroughGrace(t *testing.T) {
	tests := []struct {
		at      time.Duration
		wantErr error
	}{
		{testTTL, nil},
		{testTTL + testGrace/2, nil},
		{testTTL + testGrace - time.Nanosecond, nil},
		{testTTL + testGrace, keyring.ErrUnavailable},
		{testTTL + 2*testGrace, keyring.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.at.String(), func(t *testing.T) {
			d, clock := newCMKDouble(t), newFakeClock()
			c := newTestCache(clock, 0)
			k := d.newKey(t, "domain-a")
			mustGet(t, c, k.id, "", k.plain, k.unwrap(d))

			d.set(answerUnreachable)
			clock.Set(tt.at)
			got, err := c.Get(context.Background(), k.id, "", k.unwrap(d))
			if n := d.unwraps.Load(); n != 2 {
				t.Fatalf("Get of an expired key: CMK unwraps = %d, want 2 (it asks again)", n)
			}
			if tt.wantErr != nil {
				wantErr(t, "CMK unreachable past TTL+grace", err, tt.wantErr)
				if got != nil {
					t.Fatalf("CMK unreachable past TTL+grace: Get returned a key")
				}
				return
			}
			if err != nil {
				t.Fatalf("CMK unreachable %v after the unwrap (within grace): %v, want the cached key", tt.at, err)
			}
			if !bytes.Equal(got, k.plain) {
				t.Fatalf("stale Get = %x, want %x", got, k.plain)
			}
			if got, want := c.Stats().Stale, uint64(1); got != want {
				t.Fatalf("Stats().Stale = %d, want %d", got, want)
			}
		})
	}
}

func TestCacheRevokedDropsAtOnce(t *testing.T) {
	d, clock := newCMKDouble(t), newFakeClock()
	c := newTestCache(clock, 0)
	k := d.newKey(t, "domain-a")
	mustGet(t, c, k.id, "", k.plain, k.unwrap(d))
	held := d.lastReturned(t)

	d.set(answerRevoked)
	clock.Set(testTTL)
	got, err := c.Get(context.Background(), k.id, "", k.unwrap(d))
	wantErr(t, "Get after TTL, CMK revoked", err, keyring.ErrRevoked)
	if got != nil {
		t.Fatal("Get after TTL, CMK revoked: returned a key")
	}
	if !isZero(held) {
		t.Fatal("CMK revoked: the dropped key is not zeroed")
	}
	if got, want := c.Stats().Dropped, uint64(1); got != want {
		t.Fatalf("Stats().Dropped = %d, want %d", got, want)
	}

	// The CMK now only times out: the revoked key must not come back through
	// the grace period. The cache keeps no record of the revocation, so the
	// error is the unreachable one; what matters is that nothing is served.
	d.set(answerUnreachable)
	clock.Set(testTTL + time.Minute)
	got, err = c.Get(context.Background(), k.id, "", k.unwrap(d))
	if err == nil || got != nil {
		t.Fatalf("Get after a revocation, CMK then unreachable: key %x, err %v; want no key", got, err)
	}
	wantErr(t, "Get after a revocation, CMK then unreachable", err, keyring.ErrUnavailable)
	if got := c.Stats().Stale; got != 0 {
		t.Fatalf("Stats().Stale = %d, want 0: a revoked key was served stale", got)
	}
}

func TestCacheRevokedDuringRefreshDrops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, clock := newCMKDouble(t), newFakeClock()
		c := newTestCache(clock, 0)
		parent := d.newKey(t, "domain-a")
		child := newChildKey(t, "kek-a", parent)
		mustGet(t, c, parent.id, "", parent.plain, parent.unwrap(d))
		heldParent := d.lastReturned(t)
		mustGet(t, c, child.id, parent.id, child.plain, child.unwrap(c, parent, d))

		d.set(answerRevoked)
		clock.Set(testTTL - testAhead)
		// Within TTL the key is still served; the refresh runs behind it.
		mustGet(t, c, parent.id, "", parent.plain, parent.unwrap(d))
		synctest.Wait()
		if got, want := d.unwraps.Load(), int64(2); got != want {
			t.Fatalf("Get in the refresh window: CMK unwraps = %d, want %d", got, want)
		}
		if !isZero(heldParent) {
			t.Fatal("revoked during a background refresh: the key is not zeroed")
		}

		d.set(answerUnreachable)
		clock.Set(testTTL - testAhead + time.Second) // still within the first unwrap's TTL
		got, err := c.Get(context.Background(), parent.id, "", parent.unwrap(d))
		if err == nil || got != nil {
			t.Fatalf("Get after a refresh answered revoked: key %x, err %v; want no key", got, err)
		}

		d.set(answerRevoked)
		before := child.unwraps.Load()
		got, err = c.Get(context.Background(), child.id, parent.id, child.unwrap(c, parent, d))
		wantErr(t, "Get of a child of a revoked key", err, keyring.ErrRevoked)
		if got != nil {
			t.Fatal("Get of a child of a revoked key returned a key")
		}
		if child.unwraps.Load() == before {
			t.Fatal("the child of a revoked key was served from the cache")
		}
	})
}

func TestCacheChildNeedsItsParent(t *testing.T) {
	tests := []struct {
		name string
		// lose makes the parent leave the cache; the child was cached after it.
		lose    func(t *testing.T, c *keyring.Cache, d *cmkDouble, parent testKey)
		answer  answer
		wantErr error
	}{
		{
			name:    "parent dropped",
			lose:    func(t *testing.T, c *keyring.Cache, d *cmkDouble, parent testKey) { c.Drop(parent.id) },
			answer:  answerRevoked,
			wantErr: keyring.ErrRevoked,
		},
		{
			name: "parent evicted",
			lose: func(t *testing.T, c *keyring.Cache, d *cmkDouble, parent testKey) {
				other := d.newKey(t, "domain-b")
				mustGet(t, c, other.id, "", other.plain, other.unwrap(d)) // a cache of 2: evicts the parent
			},
			answer: answerOK, // evicted is not revoked: the child unwraps again
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, clock := newCMKDouble(t), newFakeClock()
			c := newTestCache(clock, 2)
			parent := d.newKey(t, "domain-a")
			child := newChildKey(t, "kek-a", parent)
			mustGet(t, c, child.id, parent.id, child.plain, child.unwrap(c, parent, d))
			heldChild := child.lastReturned(t)

			tt.lose(t, c, d, parent)
			d.set(tt.answer)
			got, err := c.Get(context.Background(), child.id, parent.id, child.unwrap(c, parent, d))
			if got, want := child.unwraps.Load(), int64(2); got != want {
				t.Fatalf("Get of a child whose parent left the cache: child unwraps = %d, want %d (not served from the cache)", got, want)
			}
			if !isZero(heldChild) {
				t.Fatal("a child whose parent left the cache: its cached key is not zeroed")
			}
			if tt.wantErr != nil {
				wantErr(t, "Get of a child whose parent was dropped", err, tt.wantErr)
				return
			}
			if err != nil || !bytes.Equal(got, child.plain) {
				t.Fatalf("Get of a child whose parent was evicted = %x, %v; want %x", got, err, child.plain)
			}
		})
	}
}

func TestCacheCanceledCallerLeavesOthersTheKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, clock := newCMKDouble(t), newFakeClock()
		c := newTestCache(clock, 0)
		k := d.newKey(t, "domain-a")
		d.set(answerSlow)

		impatient, cancel := context.WithCancel(t.Context())
		type result struct {
			key []byte
			err error
		}
		first, second := make(chan result, 1), make(chan result, 1)
		go func() {
			key, err := c.Get(impatient, k.id, "", k.unwrap(d))
			first <- result{key, err}
		}()
		go func() {
			key, err := c.Get(t.Context(), k.id, "", k.unwrap(d))
			second <- result{key, err}
		}()
		synctest.Wait()
		cancel()
		synctest.Wait()
		select {
		case r := <-first:
			if r.err != impatient.Err() || r.key != nil {
				t.Fatalf("canceled caller: Get = %x, %v; want no key, %v", r.key, r.err, impatient.Err())
			}
		default:
			t.Fatal("canceled caller: Get still waits for the unwrap")
		}

		d.release()
		r := <-second
		if r.err != nil || !bytes.Equal(r.key, k.plain) {
			t.Fatalf("other caller, after the first gave up: Get = %x, %v; want %x", r.key, r.err, k.plain)
		}
		mustGet(t, c, k.id, "", k.plain, k.unwrap(d))
		if got, want := d.unwraps.Load(), int64(1); got != want {
			t.Fatalf("CMK unwraps = %d, want %d (the canceled caller did not cancel the unwrap)", got, want)
		}
	})
}

func TestCacheUnwrapErrorsPassThrough(t *testing.T) {
	tests := []struct {
		answer  answer
		wantErr error
	}{
		{answerRevoked, keyring.ErrRevoked},
		{answerUnreachable, keyring.ErrUnavailable},
	}
	for _, tt := range tests {
		d, clock := newCMKDouble(t), newFakeClock()
		c := newTestCache(clock, 0)
		k := d.newKey(t, "domain-a")
		d.set(tt.answer)
		got, err := c.Get(context.Background(), k.id, "", k.unwrap(d))
		wantErr(t, "Get of an uncached key", err, tt.wantErr)
		if got != nil {
			t.Fatalf("Get of an uncached key, CMK answering %v: returned a key", tt.wantErr)
		}
		if errors.Is(err, keyring.ErrCorrupt) {
			t.Fatalf("err = %v: a key-service answer reported as corruption", err)
		}
	}
}

func TestCacheChildIsTrustedNoLongerThanItsParent(t *testing.T) {
	type step struct {
		at      time.Duration
		answer  answer // what the CMK says from this step on
		wantErr error  // nil: the child is served
	}
	tests := []struct {
		name  string
		steps []step // the parent is unwrapped at 0
	}{
		{"child first used late in the parent's TTL, then revoked", []step{
			{testTTL - testAhead - time.Minute, answerRevoked, nil},
			{testTTL + time.Second, answerRevoked, keyring.ErrRevoked},
		}},
		{"outage: the child is served through the parent's grace only", []step{
			{0, answerUnreachable, nil},
			{testTTL + time.Second, answerUnreachable, nil},
			{testTTL + testGrace - time.Second, answerUnreachable, nil},
			{testTTL + testGrace + time.Second, answerUnreachable, keyring.ErrUnavailable},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, clock := newCMKDouble(t), newFakeClock()
			c := newTestCache(clock, 0)
			parent := d.newKey(t, "domain-a")
			child := newChildKey(t, "kek-a", parent)
			mustGet(t, c, parent.id, "", parent.plain, parent.unwrap(d))
			for _, s := range tt.steps {
				clock.Set(s.at)
				d.set(s.answer)
				got, err := c.Get(context.Background(), child.id, parent.id, child.unwrap(c, parent, d))
				if s.wantErr == nil {
					if err != nil || !bytes.Equal(got, child.plain) {
						t.Fatalf("child at %v: %x, %v; want the child key", s.at, got, err)
					}
					continue
				}
				wantErr(t, fmt.Sprintf("child at %v (parent unwrapped at 0)", s.at), err, s.wantErr)
				if got != nil {
					t.Fatalf("child at %v: returned a key", s.at)
				}
			}
		})
	}
}

package keyring

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// CacheOptions configure a Cache; zero fields take the defaults.
type CacheOptions struct {
	MaxEntries   int              // bound on cached keys; default 4096
	TTL          time.Duration    // how long an unwrap is trusted; default 10 min
	RefreshAhead time.Duration    // re-unwrap in the background this long before expiry; default TTL/5
	Grace        time.Duration    // serve an expired key while the key service is unreachable; default 24 h
	Timeout      time.Duration    // bound on one unwrap, detached from the caller; default 30 s
	Now          func() time.Time // clock, for tests
	// Disabled turns the cache off: every Get unwraps. Only for measuring
	// what the cache saves (the naive baseline of the benchmarks).
	Disabled bool
}

// CacheStats counts what the cache did.
type CacheStats struct {
	Hits, Misses, Unwraps, Stale, Dropped uint64
}

// Cache holds unwrapped keys, keyed by an id derived from the wrapped bytes.
// It is bounded (least recently used goes first), trusts an unwrap for a
// TTL, refreshes ahead of expiry, zeroes every key it lets go, and collapses
// concurrent misses for one id into one unwrap. A key whose parent entry is
// no longer cached is not served either, so revoking a parent cascades.
//
// Get hands out copies: the caller clears its copy when done.
type Cache struct {
	opt CacheOptions

	mu       sync.Mutex
	gen      uint64                   // counts stores; guarded by mu
	entries  map[string]*list.Element // of *entry
	lru      *list.List               // front = most recently used
	inflight map[string]*call

	hits, misses, unwraps, stale, dropped atomic.Uint64
}

type entry struct {
	id, parent string
	key        []byte
	verified   time.Time // last successful unwrap
	gen        uint64    // the store that put this key here
	refreshing bool
}

type call struct {
	done     chan struct{}
	key      []byte // each waiter copies it; the last one zeroes it
	err      error
	waiters  int  // guarded by Cache.mu
	finished bool // guarded by Cache.mu
}

// NewCache returns an empty cache.
func NewCache(opt CacheOptions) *Cache {
	if opt.MaxEntries <= 0 {
		opt.MaxEntries = 4096
	}
	if opt.TTL <= 0 {
		opt.TTL = 10 * time.Minute
	}
	if opt.RefreshAhead <= 0 || opt.RefreshAhead >= opt.TTL {
		opt.RefreshAhead = opt.TTL / 5
	}
	if opt.Grace < 0 {
		opt.Grace = 0
	} else if opt.Grace == 0 {
		opt.Grace = 24 * time.Hour
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 30 * time.Second
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Cache{opt: opt, entries: map[string]*list.Element{}, lru: list.New(), inflight: map[string]*call{}}
}

// Stats returns the counters so far.
func (c *Cache) Stats() CacheStats {
	return CacheStats{c.hits.Load(), c.misses.Load(), c.unwraps.Load(), c.stale.Load(), c.dropped.Load()}
}

// Get returns a copy of the key cached under id, calling unwrap on a miss or
// after expiry. parent, if not "", is the id of the key that unwrapped this
// one. When unwrap reports ErrRevoked the entry is dropped at once; when it
// reports ErrUnavailable an expired entry is still served for the grace
// period.
func (c *Cache) Get(ctx context.Context, id, parent string, unwrap func(context.Context) ([]byte, error)) ([]byte, error) {
	if c.opt.Disabled {
		c.misses.Add(1)
		c.unwraps.Add(1)
		return unwrap(ctx)
	}
	now := c.opt.Now()
	c.mu.Lock()
	seen := c.gen
	e := c.lookup(id, parent)
	if e != nil {
		age := now.Sub(e.verified)
		if age < c.opt.TTL {
			if age >= c.opt.TTL-c.opt.RefreshAhead && !e.refreshing {
				e.refreshing = true
				go c.refresh(context.WithoutCancel(ctx), id, parent, unwrap, c.gen)
			}
			key := clone(e.key)
			c.mu.Unlock()
			c.hits.Add(1)
			return key, nil
		}
	}
	c.mu.Unlock()
	c.misses.Add(1)

	key, err := c.do(ctx, id, parent, unwrap, seen)
	if err == nil {
		return key, nil
	}
	if errors.Is(err, ErrUnavailable) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if e := c.lookup(id, parent); e != nil && now.Sub(e.verified) < c.opt.TTL+c.opt.Grace && c.parentInGrace(parent, now) {
			c.stale.Add(1)
			return clone(e.key), nil
		}
	}
	return nil, err
}

// Drop removes the entry for id and zeroes its key.
func (c *Cache) Drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[id]; ok {
		c.remove(el)
	}
}

// lookup returns the live entry for id; c.mu is held.
func (c *Cache) lookup(id, parent string) *entry {
	el, ok := c.entries[id]
	if !ok {
		return nil
	}
	if parent != "" {
		if _, ok := c.entries[parent]; !ok {
			c.remove(el) // its parent is gone: revoked or evicted
			return nil
		}
	}
	c.lru.MoveToFront(el)
	return el.Value.(*entry)
}

// do runs one unwrap for id however many callers ask at once, detached from
// any one caller's cancellation, and stores the result. A key stored after
// the caller's look-up (store number above seen), by an unwrap that ended
// between the look-up and now, is returned without another unwrap.
func (c *Cache) do(ctx context.Context, id, parent string, unwrap func(context.Context) ([]byte, error), seen uint64) ([]byte, error) {
	c.mu.Lock()
	if e := c.lookup(id, parent); e != nil && e.gen > seen {
		key := clone(e.key)
		c.mu.Unlock()
		return key, nil
	}
	cl, running := c.inflight[id]
	if !running {
		cl = &call{done: make(chan struct{})}
		c.inflight[id] = cl
	}
	cl.waiters++
	c.mu.Unlock()

	if !running {
		go c.run(context.WithoutCancel(ctx), cl, id, parent, unwrap)
	}
	var err error
	select {
	case <-cl.done:
		err = cl.err
	case <-ctx.Done():
		err = ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var key []byte
	if err == nil {
		key = clone(cl.key)
	}
	if cl.waiters--; cl.waiters == 0 && cl.finished {
		clear(cl.key) // the last waiter out zeroes the shared copy
	}
	return key, err
}

// run performs the unwrap of cl and records its outcome.
func (c *Cache) run(ctx context.Context, cl *call, id, parent string, unwrap func(context.Context) ([]byte, error)) {
	ctx, cancel := context.WithTimeout(ctx, c.opt.Timeout)
	defer cancel()
	c.unwraps.Add(1)
	key, err := unwrap(ctx)

	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.inflight, id)
	switch {
	case err == nil:
		cl.key = clone(key)
		c.store(id, parent, key)
	case errors.Is(err, ErrRevoked):
		if el, ok := c.entries[id]; ok {
			c.remove(el)
		}
	}
	cl.err, cl.finished = err, true
	if cl.waiters == 0 {
		clear(cl.key) // every waiter gave up
	}
	close(cl.done)
}

// refresh re-unwraps an entry before it expires.
func (c *Cache) refresh(ctx context.Context, id, parent string, unwrap func(context.Context) ([]byte, error), seen uint64) {
	key, err := c.do(ctx, id, parent, unwrap, seen)
	clear(key)
	if err != nil {
		c.mu.Lock()
		if el, ok := c.entries[id]; ok {
			el.Value.(*entry).refreshing = false
		}
		c.mu.Unlock()
	}
}

// store caches key under id, taking ownership of it; c.mu is held.
func (c *Cache) store(id, parent string, key []byte) {
	verified := c.verifiedAt(parent)
	c.gen++
	if el, ok := c.entries[id]; ok {
		e := el.Value.(*entry)
		clear(e.key)
		e.key, e.parent, e.verified, e.refreshing, e.gen = key, parent, verified, false, c.gen
		c.lru.MoveToFront(el)
		return
	}
	c.entries[id] = c.lru.PushFront(&entry{id: id, parent: parent, key: key, verified: verified, gen: c.gen})
	for c.lru.Len() > c.opt.MaxEntries {
		c.remove(c.lru.Back())
	}
}

// verifiedAt is when a key unwrapped now under parent counts as verified. A
// key is trusted no longer than its parent: while the parent is fresh the
// child expires with it, so a revocation seen by the parent's next unwrap
// stops the child within one TTL of the parent's last unwrap; while the parent
// is served stale the child's TTL ends with the parent's grace. A parent due
// for refresh is being refreshed (the child's unwrap just asked for it): a
// revoked answer drops it and, through lookup, the child. c.mu is held.
func (c *Cache) verifiedAt(parent string) time.Time {
	now := c.opt.Now()
	el, ok := c.entries[parent]
	if parent == "" || !ok {
		return now
	}
	pv := el.Value.(*entry).verified
	switch age := now.Sub(pv); {
	case age < 0:
		return now
	case age < c.opt.TTL-c.opt.RefreshAhead:
		return pv
	case age >= c.opt.TTL && pv.Add(c.opt.Grace).Before(now):
		return pv.Add(c.opt.Grace)
	}
	return now
}

// parentInGrace reports whether the parent of a key may still be served from
// grace: a key is not served stale past its parent's grace. c.mu is held.
func (c *Cache) parentInGrace(parent string, now time.Time) bool {
	if parent == "" {
		return true
	}
	el, ok := c.entries[parent]
	return ok && now.Sub(el.Value.(*entry).verified) < c.opt.TTL+c.opt.Grace
}

// remove drops an entry and zeroes its key; c.mu is held.
func (c *Cache) remove(el *list.Element) {
	e := c.lru.Remove(el).(*entry)
	delete(c.entries, e.id)
	clear(e.key)
	c.dropped.Add(1)
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

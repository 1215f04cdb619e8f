package vault

// The fault tests again, on the Azure adapters: Blob Storage (Azurite) and
// Cosmos DB (the emulator) as the stores, Key Vault (the REST fake, through
// the real azkeys client) as the CMK. Then faults of Key Vault itself.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/credvault/credvault/internal/cmk"
	"github.com/credvault/credvault/internal/cmk/kvfake"
	"github.com/credvault/credvault/internal/emulators"
	"github.com/credvault/credvault/internal/emulators/azurestores"
	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/store"
)

func TestMain(m *testing.M) { emulators.Main(m) }

// TestFaultsAzure runs the fault table of TestFaults over the Azure adapters,
// with the same assertions; "no plaintext at rest" reads every blob through
// the port and every document of the Cosmos container. Each case has a blob
// container and a Cosmos database of its own, and the CMK is Key Vault (the
// fake, through the real azkeys client).
//
// The whole table takes about 50 s under -race against the emulators; with
// -short it runs a representative subset: every backend call of a put, a get
// and a delete, on a warm and on a new instance, failed in each of the three
// ways.
func TestFaultsAzure(t *testing.T) {
	requireEmulators(t)
	fake := kvfake.New(t, kvfake.Options{})
	fake.CreateKey(kvKeyName)
	key := testKeyVault(t, fake, nil, nil)
	ops := faultOps()
	if testing.Short() {
		ops = putGetDeleteOps()
		t.Logf("-short: %d operations of the table's %d", len(ops), len(faultOps()))
	}
	runFaults(t, ops, func(t *testing.T) *faultEnv {
		return newFaultEnvOn(t, azureStores(t), key, Options{})
	})
}

// putGetDeleteOps are the operations of the fault table that put a new
// version, get and delete, on a warm and on a new instance.
func putGetDeleteOps() []faultOp {
	return slices.DeleteFunc(faultOps(), func(op faultOp) bool {
		switch strings.TrimSuffix(op.name, " on a new instance") {
		case "put a new version", "get", "delete":
			return false
		}
		return true
	})
}

// requireEmulators starts the emulators, or skips (fails under make test)
// when they are not installed, before any case needs them.
func requireEmulators(t *testing.T) {
	t.Helper()
	emulators.Blob(t)
	emulators.Cosmos(t)
}

// azureStores returns the Blob Storage and Cosmos DB adapters on the
// emulators, on a container and a database of their own (removed when the
// test ends). What they keep at rest is every blob, read through the port,
// and every document of the Cosmos container, read whole.
func azureStores(t *testing.T) faultStores {
	t.Helper()
	return azureStoresOf(azurestores.New(t, "faults-"))
}

// azureStoresOf returns the fault stores of s: its adapters, and what they
// keep at rest.
func azureStoresOf(s azurestores.Stores) faultStores {
	blobs := s.Blobs
	return faultStores{blobs: blobs, meta: s.Meta, atRest: func(t *testing.T) map[string][]byte {
		t.Helper()
		ctx := t.Context()
		out := s.Documents(t)
		cont := ""
		for {
			p, err := blobs.List(ctx, "", cont, 1000)
			if err != nil {
				t.Fatalf("list blobs: %v", err)
			}
			for _, b := range p.Blobs {
				data, err := blobs.Read(ctx, b.Name)
				if err != nil {
					t.Fatalf("read blob %s: %v", b.Name, err)
				}
				out["blob:"+b.Name] = data
			}
			if cont = p.Continuation; cont == "" {
				break
			}
		}
		return out
	}}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// The Key Vault of the tests: the retry budget of a test client, small
// enough that a fault surfaces in about a second, and the faults that exceed it.
const (
	kvKeyName      = "credvault-cmk"
	kvMaxRetries   = 2
	kvTryTimeout   = time.Second
	kvMaxRetryWait = time.Second
	// kvRetryAfter is what a throttled answer asks to wait: beyond any
	// client's budget (azcore's default MaxRetryDelay is 60 s), so the 429
	// surfaces at once instead of being waited out.
	kvRetryAfter = 2 * time.Minute
	// kvSlowAnswer is the latency of a slow Key Vault: beyond the per-try
	// timeout (the fake answers when the client gives up).
	kvSlowAnswer = 30 * time.Second
)

// testKeyVault returns the Key Vault CMK over fake, with the test retry
// budget, a clock (nil: time.Now) and a per-call policy (nil: none).
func testKeyVault(t *testing.T, fake *kvfake.Vault, now func() time.Time, perCall policy.Policy) *cmk.KeyVault {
	t.Helper()
	co := fake.ClientOptions()
	co.Retry = policy.RetryOptions{MaxRetries: kvMaxRetries, RetryDelay: 5 * time.Millisecond,
		MaxRetryDelay: kvMaxRetryWait, TryTimeout: kvTryTimeout}
	if perCall != nil {
		co.PerCallPolicies = []policy.Policy{perCall}
	}
	kv, err := cmk.NewKeyVault(fake.URL(), kvKeyName, fake.Credential(), cmk.KeyVaultOptions{Client: co, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// kvFaultKind is how a Key Vault operation fails, on every try.
type kvFaultKind int

const (
	kvNone kvFaultKind = iota
	// kvThrottled: 429 with a Retry-After beyond the retry budget.
	kvThrottled
	// kvDown: 503 on every try, the retries included.
	kvDown
	// kvSlow: no answer within the per-try timeout, on every try.
	kvSlow
)

var kvFaultKinds = []kvFaultKind{kvThrottled, kvDown, kvSlow}

func (k kvFaultKind) String() string {
	switch k {
	case kvThrottled:
		return "429-retry-after"
	case kvDown:
		return "503-past-retries"
	case kvSlow:
		return "latency-past-try-timeout"
	}
	return "none"
}

// kvFaults is a per-call policy of the azkeys client: it sees each Key Vault
// operation once, however many tries the retry policy below it makes. It
// records the operations in order and, when armed, has the fake fail every
// try of the nth one from then on.
type kvFaults struct {
	fake *kvfake.Vault

	mu       sync.Mutex
	ops      []string
	nth      int
	kind     kvFaultKind
	fired    string
	finished chan string // the operations that returned, since arm
}

func newKVFaults(fake *kvfake.Vault) *kvFaults {
	return &kvFaults{fake: fake, finished: make(chan string, 64)}
}

// arm forgets the operations so far and fails the nth one from now (none
// with kvNone).
func (f *kvFaults) arm(nth int, kind kvFaultKind) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops, f.nth, f.kind, f.fired = nil, nth, kind, ""
	f.finished = make(chan string, 64)
}

func (f *kvFaults) snapshot() (ops []string, fired string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ops), f.fired
}

// wait waits until n operations have returned since arm.
func (f *kvFaults) wait(t *testing.T, n int) {
	t.Helper()
	f.mu.Lock()
	finished := f.finished
	f.mu.Unlock()
	timeout := time.After(30 * time.Second)
	for range n {
		select {
		case <-finished:
		case <-timeout:
			ops, fired := f.snapshot()
			t.Fatalf("Key Vault operations: fewer than %d returned within 30 s (started %v, failed %q)", n, ops, fired)
		}
	}
}

func (f *kvFaults) Do(req *policy.Request) (*http.Response, error) {
	op := kvOperation(req.Raw())
	f.mu.Lock()
	f.ops = append(f.ops, op)
	kind, finished := kvNone, f.finished
	if f.kind != kvNone && len(f.ops) == f.nth {
		kind, f.fired = f.kind, op
	}
	f.mu.Unlock()
	defer func() {
		select {
		case finished <- op:
		default: // more than wait could ask for: never hold up a client
		}
	}()
	switch kind {
	case kvThrottled:
		f.fake.Throttle(1, kvRetryAfter) // one try: the client does not wait that long
	case kvDown:
		f.fake.FailNext(kvMaxRetries+1, http.StatusServiceUnavailable)
	case kvSlow:
		f.fake.SetLatency(kvSlowAnswer)
		defer f.fake.SetLatency(0)
	}
	return req.Next()
}

// kvOperation names the Key Vault operation a request asks for.
func kvOperation(r *http.Request) string {
	switch p := strings.ToLower(r.URL.Path); {
	case r.Method == http.MethodGet:
		return kvfake.OpGetKey
	case strings.HasSuffix(p, "/unwrapkey"):
		return kvfake.OpUnwrapKey
	case strings.HasSuffix(p, "/wrapkey"):
		return kvfake.OpWrapKey
	}
	return r.Method + " " + r.URL.Path
}

// kvEnv is a deployment on the Azure stores whose CMK is a Key Vault fake,
// and one instance under test whose Key Vault client meets the faults.
type kvEnv struct {
	fake   *kvfake.Vault
	stores faultStores
	faults *kvFaults
	clock  *clock
	v      *Vault // the instance under test

	acked map[ackKey]json.RawMessage
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// The key cache of the instance under test (the defaults, spelled out).
const (
	kvTestTTL   = 10 * time.Minute
	kvTestGrace = 24 * time.Hour
)

func newKVEnv(t *testing.T) *kvEnv {
	t.Helper()
	e := &kvEnv{fake: kvfake.New(t, kvfake.Options{}), stores: azureStores(t),
		clock: &clock{now: time.Now()}, acked: map[ackKey]json.RawMessage{}}
	e.fake.CreateKey(kvKeyName)
	e.faults = newKVFaults(e.fake)
	kv := testKeyVault(t, e.fake, e.clock.Now, e.faults)
	cache := keyring.NewCache(keyring.CacheOptions{TTL: kvTestTTL, Grace: kvTestGrace, Now: e.clock.Now})
	keys := keyring.New(kv, e.stores.meta, keyring.Options{Domains: 1, Cache: cache, Now: e.clock.Now})
	e.v = New(keys, e.stores.blobs, e.stores.meta, Options{Now: e.clock.Now})
	return e
}

// other returns another instance of the deployment, on a Key Vault client
// of its own that meets no fault.
func (e *kvEnv) other(t *testing.T) *Vault {
	t.Helper()
	return New(keyring.New(testKeyVault(t, e.fake, nil, nil), e.stores.meta, keyring.Options{Domains: 1}),
		e.stores.blobs, e.stores.meta, Options{})
}

// put writes a new version through v and records it as acknowledged.
func (e *kvEnv) put(t *testing.T, v *Vault, owner, name string) {
	t.Helper()
	val := json.RawMessage(fmt.Sprintf(`{"token":"value-%s-%s"}`, name, randomHex(8)))
	s, err := v.Put(t.Context(), owner, PutRequest{Name: name, Value: val})
	if err != nil {
		t.Fatalf("put %s: %v", name, err)
	}
	e.acked[ackKey{owner, name, s.Version}] = val
}

// latest returns the latest acknowledged version of a secret and its value.
func (e *kvEnv) latest(owner, name string) (uint64, json.RawMessage) {
	var n uint64
	for k := range e.acked {
		if k.owner == owner && k.name == name && k.version > n {
			n = k.version
		}
	}
	return n, e.acked[ackKey{owner, name, n}]
}

// checkAcked checks that every acknowledged version reads back, on another
// instance.
func (e *kvEnv) checkAcked(t *testing.T) {
	t.Helper()
	v := e.other(t)
	for k, want := range e.acked {
		s, err := v.Get(t.Context(), k.owner, k.name, k.version)
		if err != nil || !bytes.Equal(s.Value, want) {
			t.Errorf("acknowledged %s v%d: Get = %s, %v; want %s", k.name, k.version, s.Value, err, want)
		}
	}
}

// kvColdOp is a first operation on a new instance, whose every Key Vault
// call fails in turn.
type kvColdOp struct {
	name  string
	setup func(t *testing.T, e *kvEnv) // on another instance
	// run is the operation; the value it read or wrote, for the checks.
	run func(t *testing.T, e *kvEnv) (json.RawMessage, error)
	// written reports whether a stored thing may be there after the failed
	// operation; nil: nothing at all may change.
	written func(where string) bool
	owner   string
	secret  string
	get     bool
}

func kvColdOps() []kvColdOp {
	seeded := func(t *testing.T, e *kvEnv) {
		v := e.other(t)
		e.put(t, v, alice, "seed")
		e.put(t, v, alice, "other")
		e.put(t, v, carol, "seed")
	}
	put := func(owner, name string) func(*testing.T, *kvEnv) (json.RawMessage, error) {
		return func(t *testing.T, e *kvEnv) (json.RawMessage, error) {
			val := json.RawMessage(fmt.Sprintf(`{"token":"try-%s"}`, randomHex(8)))
			_, err := e.v.Put(t.Context(), owner, PutRequest{Name: name, Value: val})
			return val, err
		}
	}
	return []kvColdOp{
		{name: "first put, a new version", setup: seeded, run: put(alice, "seed"), owner: alice, secret: "seed"},
		{name: "first put, a new owner", setup: seeded, run: put(bob, "fresh"), owner: bob, secret: "fresh"},
		{name: "first get", setup: seeded, owner: alice, secret: "seed", get: true,
			run: func(t *testing.T, e *kvEnv) (json.RawMessage, error) {
				s, err := e.v.Get(t.Context(), alice, "seed", 0)
				return s.Value, err
			}},
		// The deployment's first put creates the key domain (getKey and
		// wrapKey) before it unwraps it: the domain record may be left,
		// which holds only a wrapped key and which the next put uses.
		{name: "first put of a new deployment", run: put(alice, "seed"), owner: alice, secret: "seed",
			written: func(where string) bool { return where == "document:"+store.Domains+"/domain-0000" }},
	}
}

// TestKeyVaultFaultsColdInstance: on a new instance (nothing cached), each
// Key Vault call of a first put and a first get fails in turn (429 with a
// Retry-After beyond the retry budget, 503 past the retries, latency past
// the per-try timeout). The operation answers ErrUnavailable, a put writes
// nothing (no blob, no secret document), and the same instance succeeds once
// Key Vault answers again.
func TestKeyVaultFaultsColdInstance(t *testing.T) {
	requireEmulators(t)
	for _, op := range kvColdOps() {
		t.Run(op.name, func(t *testing.T) {
			t.Parallel()
			prepare := func(t *testing.T) *kvEnv {
				e := newKVEnv(t)
				if op.setup != nil {
					op.setup(t, e)
				}
				return e
			}
			e := prepare(t)
			if _, err := op.run(t, e); err != nil {
				t.Fatalf("without faults: %v", err)
			}
			calls, _ := e.faults.snapshot()
			t.Logf("Key Vault calls: %s", strings.Join(calls, ", "))
			if len(calls) == 0 {
				t.Fatal("the operation made no Key Vault call")
			}
			for n := 1; n <= len(calls); n++ {
				for _, kind := range kvFaultKinds {
					t.Run(fmt.Sprintf("%s#%d/%s", calls[n-1], n, kind), func(t *testing.T) {
						t.Parallel()
						e := prepare(t)
						before := e.stores.atRest(t)
						e.faults.arm(n, kind)
						start := time.Now()
						got, err := op.run(t, e)
						elapsed := time.Since(start)
						if _, fired := e.faults.snapshot(); fired == "" {
							t.Fatalf("Key Vault call #%d was not made this time (err %v)", n, err)
						}
						e.faults.arm(0, kvNone)
						wantUnavailable(t, op.name, err)
						if op.get && err != nil && len(got) != 0 {
							t.Errorf("the get failed with %v but returned a value", err)
						}
						t.Logf("failed in %v", elapsed.Round(time.Millisecond))
						checkUnchanged(t, before, e.stores.atRest(t), op.written)
						e.checkAcked(t)

						// Key Vault answers again: the same instance succeeds.
						got, err = op.run(t, e)
						if err != nil {
							t.Fatalf("after the fault cleared: %v", err)
						}
						if op.get {
							if _, want := e.latest(op.owner, op.secret); !bytes.Equal(got, want) {
								t.Errorf("after the fault cleared, Get = %s, want %s", got, want)
							}
							return
						}
						prev, _ := e.latest(op.owner, op.secret)
						e.acked[ackKey{op.owner, op.secret, prev + 1}] = got
						e.checkAcked(t)
					})
				}
			}
		})
	}
}

// checkUnchanged checks that what is at rest is as before, except the things
// written allows (nil: none).
func checkUnchanged(t *testing.T, before, after map[string][]byte, written func(string) bool) {
	t.Helper()
	for _, where := range slices.Sorted(maps.Keys(after)) {
		if written != nil && written(where) {
			continue
		}
		if b, ok := before[where]; !ok {
			t.Errorf("after the failed operation %s was written", where)
		} else if !bytes.Equal(b, after[where]) {
			t.Errorf("after the failed operation %s changed", where)
		}
	}
	for where := range before {
		if _, ok := after[where]; !ok {
			t.Errorf("after the failed operation %s is gone", where)
		}
	}
}

// TestKeyVaultFaultsWarmInstance: on an instance whose keys are cached, the
// same faults on the refresh of the domain key do not interrupt gets: in the
// last fifth of the TTL the get answers from the cache while the background
// refresh fails; past the TTL the failed refresh serves the expired key for
// the grace period. Past the grace, the get fails with ErrUnavailable.
func TestKeyVaultFaultsWarmInstance(t *testing.T) {
	requireEmulators(t)
	for _, when := range []struct {
		name    string
		advance time.Duration
		sync    bool // the get itself refreshes (else a background refresh does)
	}{
		{"refresh ahead", kvTestTTL * 9 / 10, false},
		{"expired, within the grace", kvTestTTL + time.Minute, true},
	} {
		t.Run(when.name, func(t *testing.T) {
			t.Parallel()
			prepare := func(t *testing.T) *kvEnv {
				e := newKVEnv(t)
				e.put(t, e.v, alice, "seed")
				if _, err := e.v.Get(t.Context(), alice, "seed", 0); err != nil {
					t.Fatal(err)
				}
				e.clock.advance(when.advance)
				e.faults.arm(0, kvNone)
				return e
			}
			get := func(t *testing.T, e *kvEnv) {
				t.Helper()
				_, want := e.latest(alice, "seed")
				s, err := e.v.Get(t.Context(), alice, "seed", 0)
				if err != nil || !bytes.Equal(s.Value, want) {
					t.Fatalf("Get = %s, %v; want %s", s.Value, err, want)
				}
			}
			e := prepare(t)
			get(t, e)
			if !when.sync {
				e.faults.wait(t, 1)
			}
			calls, _ := e.faults.snapshot()
			t.Logf("Key Vault calls of the refresh: %s", strings.Join(calls, ", "))
			if len(calls) == 0 {
				t.Fatal("the refresh made no Key Vault call")
			}
			for n := 1; n <= len(calls); n++ {
				for _, kind := range kvFaultKinds {
					t.Run(fmt.Sprintf("%s#%d/%s", calls[n-1], n, kind), func(t *testing.T) {
						t.Parallel()
						e := prepare(t)
						e.faults.arm(n, kind)
						get(t, e)
						if !when.sync {
							e.faults.wait(t, n) // the background refresh met the fault
							get(t, e)
						}
						if _, fired := e.faults.snapshot(); fired == "" {
							t.Fatalf("Key Vault call #%d was not made", n)
						}
						// Key Vault answers again. Past the TTL (the keys
						// unwrapped under the stale domain key are old in
						// turn) the next get refreshes the domain key.
						e.faults.arm(0, kvNone)
						get(t, e)
						if when.sync {
							e.clock.advance(when.advance)
							get(t, e)
							if calls, _ := e.faults.snapshot(); len(calls) == 0 {
								t.Errorf("no Key Vault call at the next refresh once the fault cleared")
							}
						}
					})
				}
			}
		})
	}

	t.Run("past the grace", func(t *testing.T) {
		t.Parallel()
		e := newKVEnv(t)
		e.put(t, e.v, alice, "seed")
		e.clock.advance(kvTestTTL + kvTestGrace)
		e.faults.arm(1, kvDown)
		s, err := e.v.Get(t.Context(), alice, "seed", 0)
		wantUnavailable(t, "a get past the grace with Key Vault down", err)
		if len(s.Value) != 0 {
			t.Errorf("the get failed with %v but returned a value", err)
		}
		e.faults.arm(0, kvNone)
		if _, err := e.v.Get(t.Context(), alice, "seed", 0); err != nil {
			t.Errorf("after the fault cleared: %v", err)
		}
	})
}

// TestKeyVaultAnswerWithoutResult: an unwrapKey answered 200 without a
// result (a broken answer, as the fake gives a client that gave up) is Key
// Vault unavailable, not stored data failing verification.
func TestKeyVaultAnswerWithoutResult(t *testing.T) {
	requireEmulators(t)
	e := newKVEnv(t)
	v := e.other(t)
	e.put(t, v, alice, "seed")
	e.fake.Answer(1, http.StatusOK, "", "")
	_, err := e.v.Get(t.Context(), alice, "seed", 0)
	wantUnavailable(t, "a get whose unwrapKey was answered without a result", err)
	if _, err := e.v.Get(t.Context(), alice, "seed", 0); err != nil {
		t.Errorf("the next get: %v", err)
	}
}

// TestAzureAtRestSeesEverything: the at-rest scan of the Azure stores, on
// which "no plaintext at rest" relies, sees every blob and every kind of
// document the vault writes.
func TestAzureAtRestSeesEverything(t *testing.T) {
	requireEmulators(t)
	fake := kvfake.New(t, kvfake.Options{})
	fake.CreateKey(kvKeyName)
	e := newFaultEnvOn(t, azureStores(t), testKeyVault(t, fake, nil, nil), Options{})
	e.put(t, alice, "seed")
	oh := e.ownerHash(t, alice)
	rest := e.atRest(t)
	want := []string{
		"blob:" + e.blobsOf[ackKey{alice, "seed", 1}],
		"document:" + oh + "/" + secretID("seed"),
		"document:" + oh + "/" + keyring.KeyringID,
		"document:" + store.Domains + "/deployment",
		"document:" + store.Domains + "/domain-0000",
	}
	for _, w := range want {
		if _, ok := rest[w]; !ok {
			t.Errorf("the at-rest scan lacks %s; it has %v", w, slices.Sorted(maps.Keys(rest)))
		}
	}
	if len(rest) != len(want) {
		t.Errorf("the at-rest scan has %v, want %v", slices.Sorted(maps.Keys(rest)), want)
	}
}

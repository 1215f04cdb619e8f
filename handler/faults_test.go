package main

// Backend faults through the HTTP API, on the Azure adapters: Key Vault
// throttled or down, Blob Storage or Cosmos DB out of reach. The caller gets
// a clear 503 problem+json that says nothing of the backend; nothing is
// written; an instance with its keys cached keeps serving reads.

import (
	"bytes"
	"context"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/cmk/kvfake"
	"github.com/credvault/credvault/internal/emulators"
	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/store/azureblob"
	"github.com/credvault/credvault/internal/store/cosmos"
)

// kvOutage is Key Vault failing every operation from now on.
type kvOutage struct {
	name string
	// fastBackoff shortens the client's waits between retries (their number
	// stays the production one), so that a test need not wait them out.
	fastBackoff bool
	start       func(kv *kvfake.Vault)
}

var kvOutages = []kvOutage{
	// Retry-After beyond the client's MaxRetryDelay (60 s): azcore gives
	// up at once, with the production retry settings.
	{name: "429 with Retry-After", start: func(kv *kvfake.Vault) { kv.Throttle(10000, 2*time.Minute) }},
	{name: "503 for good", fastBackoff: true, start: func(kv *kvfake.Vault) { kv.FailNext(10000, http.StatusServiceUnavailable) }},
}

// kvOutageBound bounds how long a request waits for Key Vault in an outage
// (with the production number of tries).
const kvOutageBound = 10 * time.Second

// faultClock is the key cache's clock in these tests.
type faultClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *faultClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *faultClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// The key cache of these tests: the production defaults, on a test clock.
const (
	faultKeyTTL   = 10 * time.Minute
	faultKeyGrace = 24 * time.Hour
)

// startKVFaults starts credvault on the Azure adapters with its key cache on
// a clock the test moves.
func startKVFaults(t *testing.T, o kvOutage) (*testEnv, *faultClock) {
	t.Helper()
	e := startWith(t, true)
	clock := &faultClock{now: time.Now()}
	e.deps.cache = &keyring.CacheOptions{TTL: faultKeyTTL, Grace: faultKeyGrace, Now: clock.Now}
	if o.fastBackoff {
		e.deps.keyVaultClient.Retry.RetryDelay = 10 * time.Millisecond
	}
	e.restart()
	return e, clock
}

// wantUnavailableProblem checks a 503 problem+json with Retry-After and a
// correlation id, whose body names nothing of the backends or the request.
func wantUnavailableProblem(t *testing.T, e *testEnv, what string, r response, secrets ...string) {
	t.Helper()
	wantProblem(t, what, r, http.StatusServiceUnavailable)
	if r.header.Get("Retry-After") == "" {
		t.Errorf("%s: no Retry-After", what)
	}
	id, _ := r.json(t)["correlationId"].(string)
	if id == "" {
		t.Errorf("%s: no correlation id in %s", what, r.body)
	}
	internals := []string{"127.0.0.1", "localhost", "http", "credvault-cmk", "kvfake", "devstoreaccount1",
		"vault", "unwrap", "wrapkey", "getkey", "cmk", "azure", "azcore", "cosmos", "blob", "throttl", "429",
		"too many", "deadline", "refused", "dial", "tcp", "injected", "keyring", "domain", e.env["CREDVAULT_BLOB_CONTAINER"]}
	if e.kv != nil {
		internals = append(internals, e.kv.URL())
	}
	body := strings.ToLower(string(r.body))
	if id != "" { // random hex: it may spell "429" by chance
		body = strings.ReplaceAll(body, strings.ToLower(id), "<id>")
	}
	for _, s := range append(internals, secrets...) {
		if s != "" && strings.Contains(body, strings.ToLower(s)) {
			t.Errorf("%s: the problem body %s gives away %q", what, r.body, s)
		}
	}
}

// wantSameAtRest checks that nothing stored changed.
func wantSameAtRest(t *testing.T, what string, before, after map[string][]byte) {
	t.Helper()
	for _, k := range slices.Sorted(maps.Keys(after)) {
		if b, ok := before[k]; !ok {
			t.Errorf("%s: %s was written", what, k)
		} else if !bytes.Equal(b, after[k]) {
			t.Errorf("%s: %s changed", what, k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			t.Errorf("%s: %s is gone", what, k)
		}
	}
}

// TestFaultKeyVaultColdInstance: Key Vault throttling (429 with a Retry-After
// beyond the client's budget) or answering 503 for good, and a new instance
// (nothing cached): GET and PUT answer 503 problem+json with Retry-After and
// a correlation id, within a bounded time, and the PUT writes nothing.
func TestFaultKeyVaultColdInstance(t *testing.T) {
	for _, o := range kvOutages {
		t.Run(o.name, func(t *testing.T) {
			t.Parallel()
			e, _ := startKVFaults(t, o)
			alice := e.token("alice")
			wantStatus(t, "PUT", e.do("PUT", "/api/credentials/a", alice, `{"value":"cold-value-1"}`), http.StatusCreated)
			e.restart()
			before := e.atRest()
			calls := e.kv.Calls("")
			o.start(e.kv)

			for _, c := range []struct{ method, body string }{{"GET", ""}, {"PUT", `{"value":"cold-value-2"}`}} {
				var body any
				if c.body != "" {
					body = c.body
				}
				start := time.Now()
				r := e.do(c.method, "/api/credentials/a", alice, body)
				if d := time.Since(start); d > kvOutageBound {
					t.Errorf("%s with Key Vault out: answered in %v, want within %v", c.method, d, kvOutageBound)
				}
				wantUnavailableProblem(t, e, c.method+" with Key Vault out", r, "cold-value", "alice", ownerOf("alice"))
			}
			if e.kv.Calls("") == calls {
				t.Fatal("no request reached Key Vault: the outage was not met")
			}
			wantSameAtRest(t, "after the failed PUT", before, e.atRest())
		})
	}
}

// TestFaultKeyVaultWarmInstance: an instance with its keys cached keeps
// answering GET with 200 through the same outages: past the cache's TTL the
// refresh fails and the cached keys serve within the grace.
func TestFaultKeyVaultWarmInstance(t *testing.T) {
	for _, o := range kvOutages {
		t.Run(o.name, func(t *testing.T) {
			t.Parallel()
			e, clock := startKVFaults(t, o)
			alice := e.token("alice")
			wantStatus(t, "PUT", e.do("PUT", "/api/credentials/a", alice, `{"value":"warm-value"}`), http.StatusCreated)
			wantStatus(t, "GET", e.do("GET", "/api/credentials/a", alice, nil), http.StatusOK)
			clock.advance(faultKeyTTL + time.Minute)
			unwraps := e.kv.Calls(kvfake.OpUnwrapKey)
			o.start(e.kv)

			for i := range 3 {
				start := time.Now()
				r := e.do("GET", "/api/credentials/a", alice, nil)
				wantStatus(t, "GET with Key Vault out, keys cached", r, http.StatusOK)
				if !strings.Contains(string(r.body), "warm-value") {
					t.Fatalf("GET #%d with Key Vault out = %s, want the value", i+1, r.body)
				}
				if d := time.Since(start); d > kvOutageBound {
					t.Errorf("GET #%d with Key Vault out: answered in %v, want within %v", i+1, d, kvOutageBound)
				}
			}
			if e.kv.Calls(kvfake.OpUnwrapKey) == unwraps {
				t.Fatal("no unwrap reached Key Vault: the refresh did not meet the outage")
			}
		})
	}
}

// send is e.do for another goroutine than the test's: it reports a failed
// request instead of ending the test.
func (e *testEnv) send(method, path, tok, body string) (response, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, e.srv.URL+path, rd)
	if err != nil {
		return response{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}, err
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestFaultStoreUnreachable: Blob Storage or Cosmos DB at a closed loopback
// port (and no container creation at start): GET and PUT answer 503
// problem+json within the adapter's call timeout per call to the store it
// makes, and nothing changes: once the store is back, the stored data is as
// it was and reads back.
func TestFaultStoreUnreachable(t *testing.T) {
	for _, c := range []struct {
		name, setting string
		value         func(addr string) string
		// bound: the adapter's call timeout times the calls to the
		// unreachable store that a request on a new instance makes in turn.
		// On Cosmos DB: the operation's, then the audit key's lookup for
		// the request's audit record (nothing is cached yet).
		bound time.Duration
	}{
		{"blob", "CREDVAULT_BLOB_CONNECTION_STRING", func(addr string) string {
			return "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + emulators.AzuriteKey +
				";BlobEndpoint=http://" + addr + "/devstoreaccount1;"
		}, azureblob.DefaultCallTimeout},
		{"cosmos", "CREDVAULT_COSMOS_ENDPOINT", func(addr string) string { return "http://" + addr + "/" }, 2 * cosmos.DefaultCallTimeout},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := startWith(t, true)
			alice := e.token("alice")
			wantStatus(t, "PUT", e.do("PUT", "/api/credentials/a", alice, `{"value":"stored-value"}`), http.StatusCreated)
			before := e.atRest()

			good := e.env[c.setting]
			e.env[c.setting] = c.value(closedAddr(t))
			e.env["CREDVAULT_CREATE_CONTAINERS"] = "false"
			e.restart()
			// The GET and the PUT at once: each waits out the call timeout.
			reqs := []struct{ method, body string }{{"GET", ""}, {"PUT", `{"value":"unstored-value"}`}}
			resps, took, errs := make([]response, len(reqs)), make([]time.Duration, len(reqs)), make([]error, len(reqs))
			var wg sync.WaitGroup
			for i, r := range reqs {
				wg.Go(func() {
					start := time.Now()
					resps[i], errs[i] = e.send(r.method, "/api/credentials/a", alice, r.body)
					took[i] = time.Since(start)
				})
			}
			wg.Wait()
			for i, r := range reqs {
				what := r.method + " with " + c.name + " unreachable"
				if errs[i] != nil {
					t.Fatalf("%s: %v", what, errs[i])
				}
				t.Logf("%s: %d in %v", what, resps[i].status, took[i].Round(time.Millisecond))
				if took[i] > c.bound+2*time.Second {
					t.Errorf("%s: answered in %v, want within %v (the call timeout per call)", what, took[i], c.bound)
				}
				wantUnavailableProblem(t, e, what, resps[i], "stored-value", "unstored-value", "alice", ownerOf("alice"))
			}

			e.env[c.setting] = good
			e.restart()
			wantSameAtRest(t, "after the requests with "+c.name+" unreachable", before, e.atRest())
			r := e.do("GET", "/api/credentials/a", alice, nil)
			if wantStatus(t, "GET once the store is back", r, http.StatusOK); !strings.Contains(string(r.body), `"stored-value"`) || !strings.Contains(string(r.body), `"version":1`) {
				t.Fatalf("GET once the store is back = %s, want version 1 and its value", r.body)
			}
		})
	}
}

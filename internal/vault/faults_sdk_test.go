package vault

// The fault table on the Azure adapters again, with the faults injected
// inside the SDK clients' HTTP pipelines instead of above the adapters: the
// adapters' retry policies, timeouts and error classification meet them.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/azcosmos"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/credvault/credvault/internal/cmk/kvfake"
	"github.com/credvault/credvault/internal/emulators/azurestores"
	"github.com/credvault/credvault/internal/store/azureblob"
	"github.com/credvault/credvault/internal/store/cosmos"
)

// The retry budget of the adapters under test: small, so that a fault
// surfaces in about a second.
const (
	sdkMaxRetries    = 2
	sdkRetryDelay    = 10 * time.Millisecond
	sdkMaxRetryDelay = 100 * time.Millisecond
	sdkTryTimeout    = 600 * time.Millisecond
	// sdkCallTimeout is the adapters' CallTimeout: a Blob Storage call
	// whose every try is slow ends there, during its second try.
	sdkCallTimeout = time.Second
	// sdkRetryAfter is what a throttled answer asks to wait: beyond
	// sdkMaxRetryDelay, so the 429 surfaces at once.
	sdkRetryAfter = 2 * time.Minute
)

var sdkFaultKinds = []faultKind{faultThrottled, faultDown, faultSlow}

// TestFaultsAzureSDK runs the put, get and delete operations of the fault
// table (on a warm and on a new instance) over the Azure adapters, and
// fails each HTTP operation of Blob Storage and Cosmos DB that they make in
// turn, inside the SDK clients' pipelines, on every try: 429 with a
// Retry-After beyond the retry budget, 503, or no answer past the per-try
// timeout and the adapter's call timeout. The checks are the table's: the
// operation answers ErrUnavailable (a 503), acknowledged data stays
// readable, nothing half-written is visible, nothing is at rest in clear,
// and a retry finishes the job. The checks read through adapters of their
// own, with the default budget and without faults.
func TestFaultsAzureSDK(t *testing.T) {
	requireEmulators(t)
	fake := kvfake.New(t, kvfake.Options{})
	fake.CreateKey(kvKeyName)
	key := testKeyVault(t, fake, nil, nil)
	ops := putGetDeleteOps()
	for i := range ops {
		ops[i].check = checkTries(ops[i].check)
	}
	runFaults(t, ops, func(t *testing.T) *faultEnv {
		return newFaultEnvOn(t, sdkFaultStores(t), key, Options{})
	})
}

// checkTries adds to a check of the table what the retry policies did with
// the failed HTTP operation: a 429 whose Retry-After exceeds the budget
// surfaces on the first try, and Blob Storage retries a 503 to its budget.
func checkTries(check func(*testing.T, *faultEnv, faultCase, error)) func(*testing.T, *faultEnv, faultCase, error) {
	return func(t *testing.T, e *faultEnv, c faultCase, err error) {
		t.Helper()
		tries := e.f.(*sdkFaults).tries.Load()
		t.Logf("the fault met %d tries; the operation answered: %v", tries, err)
		switch {
		case c.kind == faultThrottled && tries != 1:
			t.Errorf("a 429 beyond the retry budget was tried %d times, want once", tries)
		case c.kind == faultDown && strings.HasPrefix(c.method, "blob.") && tries != sdkMaxRetries+1:
			t.Errorf("a Blob Storage 503 was tried %d times, want %d", tries, sdkMaxRetries+1)
		case tries == 0:
			t.Errorf("the fault met no try")
		}
		check(t, e, c, err)
	}
}

// sdkFaultStores returns the Azure stores on the emulators, on a container
// and a database of their own, with other adapters on them whose SDK
// clients meet the faults, under the test budget.
func sdkFaultStores(t *testing.T) faultStores {
	t.Helper()
	s := azurestores.New(t, "sdkfaults-")
	fs := azureStoresOf(s)
	f := &sdkFaults{faults: newFaults()}
	blobs, meta := s.Open(t,
		azureblob.Options{Client: &azblob.ClientOptions{ClientOptions: f.clientOptions(blobOperation)},
			CallTimeout: sdkCallTimeout},
		cosmos.Options{Client: &azcosmos.ClientOptions{ClientOptions: f.clientOptions(cosmosOperation)},
			CallTimeout: sdkCallTimeout})
	fs.faulty = &injectedStores{blobs: blobs, meta: meta, f: f}
	return fs
}

// sdkFaults counts the HTTP operations of the SDK clients by name
// ("blob.Upload", "cosmos.ReadItem", …) and fails every try of the nth of
// one name. Its per-call policy sees each operation once, above the retry
// policy, and marks the one to fail; its per-try policy, below the retry
// policies (the SDK's and, for Cosmos DB, the SDK's own client retry
// policy), answers each try of a marked operation without sending it.
type sdkFaults struct {
	*faults
	tries atomic.Int32 // the tries of the failed operation
}

var _ faultInjector = (*sdkFaults)(nil)

func (f *sdkFaults) kinds() []faultKind { return sdkFaultKinds }

// arm is faults.arm; arming a fault also forgets the tries of the last.
func (f *sdkFaults) arm(method string, nth int, kind faultKind) {
	f.faults.arm(method, nth, kind)
	if kind != faultNone {
		f.tries.Store(0)
	}
}

// reset disarms the fault, keeping the count of its tries for the checks.
func (f *sdkFaults) reset() { f.arm("", 0, faultNone) }

// sdkFault marks an operation to fail, as an operation value of its request.
type sdkFault struct{ kind faultKind }

// operationNamer names the HTTP operation of a request; ok is false for a
// request that is no operation of the store (the Cosmos DB SDK reading the
// account's regions), which meets no fault and is not counted.
type operationNamer func(req *policy.Request) (method, detail string, ok bool)

type policyFunc func(*policy.Request) (*http.Response, error)

func (p policyFunc) Do(req *policy.Request) (*http.Response, error) { return p(req) }

// clientOptions returns the SDK client options of an adapter under test:
// the test budget and the two policies, for the operations name names.
func (f *sdkFaults) clientOptions(name operationNamer) azcore.ClientOptions {
	perCall := policyFunc(func(req *policy.Request) (*http.Response, error) {
		if method, detail, ok := name(req); ok {
			if kind := f.next(method, detail); kind != faultNone {
				req.SetOperationValue(sdkFault{kind})
			}
		}
		return req.Next()
	})
	perTry := policyFunc(func(req *policy.Request) (*http.Response, error) {
		var m sdkFault
		if !req.OperationValue(&m) {
			return req.Next()
		}
		f.tries.Add(1)
		return answerFault(req, m.kind)
	})
	return azcore.ClientOptions{
		Retry: policy.RetryOptions{MaxRetries: sdkMaxRetries, RetryDelay: sdkRetryDelay,
			MaxRetryDelay: sdkMaxRetryDelay, TryTimeout: sdkTryTimeout},
		PerCallPolicies:  []policy.Policy{perCall},
		PerRetryPolicies: []policy.Policy{perTry},
	}
}

// answerFault answers a try as the fault says, without sending it: 429 or
// 503 as Blob Storage or Cosmos DB would, or, for a slow service, the
// transport's error once the try's context ends.
func answerFault(req *policy.Request, kind faultKind) (*http.Response, error) {
	r := req.Raw()
	if kind == faultSlow {
		<-r.Context().Done()
		return nil, &url.Error{Op: r.Method[:1] + strings.ToLower(r.Method[1:]), URL: r.URL.String(), Err: r.Context().Err()}
	}
	status := http.StatusServiceUnavailable
	if kind == faultThrottled {
		status = http.StatusTooManyRequests
	}
	h := http.Header{}
	var body string
	if strings.HasPrefix(r.URL.Path, "/dbs/") {
		h.Set("Content-Type", "application/json")
		h.Set("x-ms-activity-id", "00000000-0000-4000-8000-00000000fa17")
		code := "ServiceUnavailable"
		if kind == faultThrottled {
			code = "TooManyRequests"
			h.Set("x-ms-substatus", "3200")
			h.Set("x-ms-retry-after-ms", fmt.Sprint(sdkRetryAfter.Milliseconds()))
		}
		body = `{"code":"` + code + `","message":"injected fault"}`
	} else {
		h.Set("Content-Type", "application/xml")
		h.Set("x-ms-request-id", "00000000-0000-4000-8000-00000000fa17")
		h.Set("x-ms-error-code", "ServerBusy")
		body = `<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code><Message>injected fault</Message></Error>`
	}
	if kind == faultThrottled {
		h.Set("Retry-After", fmt.Sprint(int(sdkRetryAfter.Seconds())))
	}
	return &http.Response{
		Status:     fmt.Sprintf("%d %s", status, http.StatusText(status)),
		StatusCode: status, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)),
		Request: r,
	}, nil
}

// blobOperation names a Blob Storage operation; its detail is the blob's
// name, or the listing's prefix.
func blobOperation(req *policy.Request) (string, string, bool) {
	r := req.Raw()
	q := r.URL.Query()
	// /<account>/<container>/<blob> on Azurite
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 3)
	name := ""
	if len(parts) == 3 {
		name = parts[2]
	}
	switch {
	case q.Get("comp") == "list":
		return "blob.List", q.Get("prefix"), true
	case q.Get("restype") == "container":
		return "blob.Container " + r.Method, "", true
	case q.Get("comp") != "":
		return "blob." + r.Method + " " + q.Get("comp"), name, true
	case r.Method == http.MethodPut:
		return "blob.Upload", name, true
	case r.Method == http.MethodGet:
		return "blob.Download", name, true
	case r.Method == http.MethodDelete:
		return "blob.Delete", name, true
	}
	return "blob." + r.Method, name, true
}

// cosmosOperation names a Cosmos DB operation; its detail is the document's
// id, or the partition a query lists.
func cosmosOperation(req *policy.Request) (string, string, bool) {
	r := req.Raw()
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(segs) < 2 {
		return "", "", false // the account: the SDK reading its regions
	}
	if len(segs) == 6 && segs[4] == "docs" {
		switch r.Method {
		case http.MethodGet:
			return "cosmos.ReadItem", segs[5], true
		case http.MethodPut:
			return "cosmos.ReplaceItem", segs[5], true
		case http.MethodDelete:
			return "cosmos.DeleteItem", segs[5], true
		}
	}
	if len(segs) == 5 && segs[4] == "docs" && r.Method == http.MethodPost {
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/query+json") {
			return "cosmos.Query", r.Header.Get("x-ms-documentdb-partitionkey"), true
		}
		return "cosmos.CreateItem", createdID(req), true
	}
	// Another resource: a feed (…/colls) or one of its entries (…/colls/c).
	kind := segs[len(segs)-1]
	if len(segs)%2 == 0 {
		kind = segs[len(segs)-2]
	}
	return "cosmos." + r.Method + " " + kind, "", true
}

// createdID returns the id of the document a create request sends.
func createdID(req *policy.Request) string {
	body := req.Body()
	if body == nil {
		return ""
	}
	defer req.RewindBody()
	var d struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(body).Decode(&d); err != nil {
		return ""
	}
	return d.ID
}

package azureblob

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/credvault/credvault/internal/blobclient"
	"github.com/credvault/credvault/internal/emulators"
	"github.com/credvault/credvault/internal/store"
	"github.com/credvault/credvault/internal/store/storetest"
)

func TestMain(m *testing.M) { emulators.Main(m) }

// containerName returns a container name no other test or run uses.
func containerName() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "t-" + hex.EncodeToString(b)
}

// openAzurite returns an adapter on a fresh container of the shared Azurite,
// reached at endpoint when it is not "" (a proxy in front of Azurite). The
// container is created by the adapter's first call and removed when the
// test ends.
func openAzurite(t testing.TB, endpoint string, opt Options) *Blobs {
	t.Helper()
	connStr := emulators.Blob(t)
	name := containerName()
	// The cleanup goes through Azurite itself, not a proxy that may refuse.
	direct, err := NewFromConnectionString(connStr, name, Options{})
	if err != nil {
		t.Fatalf("NewFromConnectionString: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		direct.c.Delete(ctx, nil)
	})
	if endpoint != "" {
		connStr = withEndpoint(t, connStr, endpoint)
	}
	opt.CreateContainer = true
	b, err := NewFromConnectionString(connStr, name, opt)
	if err != nil {
		t.Fatalf("NewFromConnectionString: %v", err)
	}
	return b
}

// withEndpoint returns connStr with its blob endpoint's host replaced.
func withEndpoint(t testing.TB, connStr, endpoint string) string {
	t.Helper()
	var parts []string
	for kv := range strings.SplitSeq(connStr, ";") {
		if v, ok := strings.CutPrefix(kv, "BlobEndpoint="); ok {
			u, err := url.Parse(v)
			if err != nil {
				t.Fatalf("BlobEndpoint %q: %v", v, err)
			}
			e, _ := url.Parse(endpoint)
			u.Scheme, u.Host = e.Scheme, e.Host
			kv = "BlobEndpoint=" + u.String()
		}
		parts = append(parts, kv)
	}
	return strings.Join(parts, ";")
}

// azuriteURL returns the address of the shared Azurite.
func azuriteURL(t testing.TB) *url.URL {
	t.Helper()
	for kv := range strings.SplitSeq(emulators.Blob(t), ";") {
		if v, ok := strings.CutPrefix(kv, "BlobEndpoint="); ok {
			u, err := url.Parse(v)
			if err != nil {
				t.Fatal(err)
			}
			return &url.URL{Scheme: u.Scheme, Host: u.Host}
		}
	}
	t.Fatal("no BlobEndpoint in Azurite's connection string")
	return nil
}

// fastRetries keeps the retry policy's defaults but its delays short.
func fastRetries() *azblob.ClientOptions {
	o := &azblob.ClientOptions{}
	o.Retry = policy.RetryOptions{RetryDelay: 5 * time.Millisecond, MaxRetryDelay: 2 * time.Second}
	return o
}

func TestContract(t *testing.T) {
	storetest.TestBlobs(t, func(t *testing.T) store.Blobs { return openAzurite(t, "", Options{}) })
}

func TestEnsureContainer(t *testing.T) {
	connStr := emulators.Blob(t)
	name := containerName()
	b, err := NewFromConnectionString(connStr, name, Options{})
	if err != nil {
		t.Fatalf("NewFromConnectionString: %v", err)
	}
	t.Cleanup(func() { b.c.Delete(context.Background(), nil) })
	// Without CreateContainer nothing creates the container behind the
	// caller's back: a missing container is a misconfiguration.
	err = b.Create(t.Context(), "a", []byte("x"))
	if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "container not found") {
		t.Fatalf("Create in a missing container: err = %v, want ErrUnavailable naming the missing container", err)
	}
	for i := range 2 {
		if err := b.EnsureContainer(t.Context()); err != nil {
			t.Fatalf("EnsureContainer #%d: %v", i+1, err)
		}
	}
	if err := b.Create(t.Context(), "a", []byte("x")); err != nil {
		t.Fatalf("Create after EnsureContainer: %v", err)
	}
}

func TestConstructorsMakeNoCall(t *testing.T) {
	// Nothing listens on a closed port: a constructor that dialled would fail.
	addr := closedPort(t)
	if _, err := NewFromConnectionString(azuriteConnStr("http://"+addr), "c-1", Options{CreateContainer: true}); err != nil {
		t.Errorf("NewFromConnectionString: %v", err)
	}
	if _, err := New("https://"+addr, "c-1", &fakeCred{}, Options{CreateContainer: true}); err != nil {
		t.Errorf("New: %v", err)
	}
	// blobclient's tests hold the whole list of arguments refused; these
	// check that the refusal reaches the caller, under this package's name.
	for _, tc := range []struct {
		name, url, container string
		cred                 azcore.TokenCredential
	}{
		{"plain http", "http://" + addr, "c-1", &fakeCred{}}, // a bearer token must not travel in clear
		{"query", "https://" + addr + "/?sig=secret", "c-1", &fakeCred{}},
		{"bad container", "https://" + addr, "bad--name", &fakeCred{}},
		{"no credential", "https://" + addr, "c-1", nil},
	} {
		_, err := New(tc.url, tc.container, tc.cred, Options{})
		if err == nil || !strings.HasPrefix(err.Error(), "azureblob: ") || strings.Contains(err.Error(), "secret") {
			t.Errorf("New (%s): err = %v, want an azureblob error that does not quote the URL's query", tc.name, err)
		}
	}
	_, err := NewFromConnectionString("AccountKey=not-base64!!;Garbage", "c-1", Options{})
	if err == nil || !strings.HasPrefix(err.Error(), "azureblob: ") || strings.Contains(err.Error(), "not-base64") {
		t.Errorf("NewFromConnectionString(bad): err = %v, want an azureblob error that does not quote the string", err)
	}
	if _, err := NewFromConnectionString(azuriteConnStr("http://"+addr), "C", Options{}); err == nil {
		t.Errorf("NewFromConnectionString with container \"C\": err = nil, want an error")
	}
}

func azuriteConnStr(endpoint string) string {
	return "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + emulators.AzuriteKey +
		";BlobEndpoint=" + endpoint + "/devstoreaccount1;"
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Names are opaque: whatever a URL would escape, or fold, comes back as it
// went in, through Create, Read, List and Delete.
func TestNamesNeedingEscapes(t *testing.T) {
	b := openAzurite(t, "", Options{})
	names := []string{
		"p/UPPER/ünïcode/ 空白 x",
		"p/a%2Fb",
		"p/a%b",
		"p/q?x=1&y=2",
		"p/hash#frag",
		"p/plus+sign",
		"p/semi;colon:at@",
		"p/tilde~quote'",
	}
	for _, n := range names {
		if err := b.Create(t.Context(), n, []byte(n)); err != nil {
			t.Fatalf("Create %q: %v", n, err)
		}
		got, err := b.Read(t.Context(), n)
		if err != nil || string(got) != n {
			t.Fatalf("Read %q = %q, %v; want %q", n, got, err, n)
		}
	}
	page, err := b.List(t.Context(), "p/", "", 0)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	want := slices.Sorted(slices.Values(names))
	if got := infoNames(page.Blobs); !slices.Equal(got, want) {
		t.Errorf("List = %q, want %q", got, want)
	}
	for _, n := range names {
		if err := b.Delete(t.Context(), n); err != nil {
			t.Errorf("Delete %q: %v", n, err)
		}
	}
	if page, err := b.List(t.Context(), "p/", "", 0); err != nil || len(page.Blobs) != 0 {
		t.Errorf("List after Delete = %q, %v; want nothing", infoNames(page.Blobs), err)
	}
}

// Names Azure cannot hold as given are refused before any request: the
// adapter here points at a closed port, so a request would be ErrUnavailable.
func TestInvalidNamesRefusedLocally(t *testing.T) {
	b, err := NewFromConnectionString(azuriteConnStr("http://"+closedPort(t)), "c-1", Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{
		"", "a/", "/a", "a//b", "a/./b", "a/../b", "..", "a.", "a\\b", "a\x00b", "a\nb",
		"\xff\xfe", strings.Repeat("n", maxNameLen+1),
	} {
		if err := b.Create(t.Context(), name, []byte("x")); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Create(%q): err = %v, want ErrInvalid", name, err)
		}
		if _, err := b.Read(t.Context(), name); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Read(%q): err = %v, want ErrInvalid", name, err)
		}
		if err := b.Delete(t.Context(), name); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Delete(%q): err = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := b.List(t.Context(), "", "bad\x00marker", 0); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("List with a malformed continuation: err = %v, want ErrInvalid", err)
	}
	if page, err := b.List(t.Context(), "\xff", "", 0); err != nil || len(page.Blobs) != 0 {
		t.Errorf("List with a prefix no name can have = %v, %v; want an empty page", page, err)
	}
}

// checkUnavailable fails unless err is ErrUnavailable and its message quotes
// no secret.
func checkUnavailable(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("%s: err = %v, want ErrUnavailable", what, err)
	}
	checkNoSecrets(t, what, err)
}

func checkNoSecrets(t *testing.T, what string, err error) {
	t.Helper()
	for _, s := range []string{emulators.AzuriteKey, "SharedKey ", "Authorization:", "Bearer ", "sig=", secretPayload} {
		if strings.Contains(err.Error(), s) {
			t.Fatalf("%s: error %q quotes %q", what, err, s)
		}
	}
}

// secretPayload is blob content the tests write: no message may quote it.
const secretPayload = "ciphertext-that-must-not-leak"

func TestConnectionRefused(t *testing.T) {
	connStr := azuriteConnStr("http://" + closedPort(t))
	t.Run("RetriesExhausted", func(t *testing.T) {
		const callTimeout = 5 * time.Second
		b, err := NewFromConnectionString(connStr, "c-1", Options{Client: fastRetries(), CallTimeout: callTimeout})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		checkUnavailable(t, "Create", b.Create(t.Context(), "a", []byte(secretPayload)))
		_, err = b.Read(t.Context(), "a")
		checkUnavailable(t, "Read", err)
		checkUnavailable(t, "Delete", b.Delete(t.Context(), "a"))
		_, err = b.List(t.Context(), "", "", 0)
		checkUnavailable(t, "List", err)
		if err := b.EnsureContainer(t.Context()); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("EnsureContainer: err = %v, want ErrUnavailable", err)
		}
		if d := time.Since(start); d > callTimeout {
			t.Fatalf("five calls to a closed port took %v, want each well under the %v call timeout", d, callTimeout)
		}
	})
	t.Run("CallTimeoutBoundsBackoff", func(t *testing.T) {
		// Default retries back off 0.8 s, 2.4 s, 5.6 s…: the call timeout
		// ends the call first.
		const callTimeout = 500 * time.Millisecond
		b, err := NewFromConnectionString(connStr, "c-1", Options{CallTimeout: callTimeout})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = b.Read(t.Context(), "a")
		checkUnavailable(t, "Read", err)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Read: err = %v, want it to wrap context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > callTimeout+time.Second {
			t.Fatalf("Read took %v, want about the %v call timeout", d, callTimeout)
		}
	})
}

// faultProxy stands in front of Azurite and lets a test answer each request
// itself or forward it.
type faultProxy struct {
	URL      string
	requests atomic.Int32
	forward  http.Handler
	done     chan struct{} // closed when the test ends: hanging handlers return
}

// newFaultProxy starts a proxy whose handle sees every request with its
// number, from 1; it may answer itself or call p.forward.
func newFaultProxy(t *testing.T, handle func(p *faultProxy, n int, w http.ResponseWriter, r *http.Request)) *faultProxy {
	t.Helper()
	p := &faultProxy{forward: httputil.NewSingleHostReverseProxy(azuriteURL(t)), done: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handle(p, int(p.requests.Add(1)), w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(p.done) }) // runs before srv.Close
	p.URL = srv.URL
	return p
}

// failFirst answers the first n requests with status (and a Retry-After
// header when retryAfter is not ""), then forwards.
func failFirst(n, status int, retryAfter string) func(*faultProxy, int, http.ResponseWriter, *http.Request) {
	return func(p *faultProxy, i int, w http.ResponseWriter, r *http.Request) {
		if i > n {
			p.forward.ServeHTTP(w, r)
			return
		}
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.Header().Set("x-ms-error-code", "ServerBusy")
		w.WriteHeader(status)
	}
}

func TestTransientFailuresRetried(t *testing.T) {
	for _, tc := range []struct {
		name       string
		n, status  int
		retryAfter string
		minElapsed time.Duration
	}{
		{"503x3", 3, http.StatusServiceUnavailable, "", 0},
		{"500x1", 1, http.StatusInternalServerError, "", 0},
		{"429RetryAfter1s", 1, http.StatusTooManyRequests, "1", time.Second},
		{"503RetryAfter1s", 1, http.StatusServiceUnavailable, "1", time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := openAzurite(t, "", Options{})
			if err := b.Create(t.Context(), "seed", []byte(secretPayload)); err != nil {
				t.Fatalf("Create seed: %v", err)
			}
			p := newFaultProxy(t, failFirst(tc.n, tc.status, tc.retryAfter))
			via, err := NewFromConnectionString(withEndpoint(t, emulators.Blob(t), p.URL), b.name, Options{Client: fastRetries()})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			got, err := via.Read(t.Context(), "seed")
			if err != nil || string(got) != secretPayload {
				t.Fatalf("Read through %d × %d: %q, %v; want the blob", tc.n, tc.status, got, err)
			}
			if d := time.Since(start); d < tc.minElapsed {
				t.Errorf("Read retried after %v, want at least the Retry-After %v", d, tc.minElapsed)
			}
			if got, want := int(p.requests.Load()), tc.n+1; got != want {
				t.Errorf("proxy saw %d requests, want %d (%d refused, one forwarded)", got, want, tc.n)
			}
			// A create-only upload is retried too, and its retry is not
			// mistaken for a conflict.
			p.requests.Store(0)
			if err := via.Create(t.Context(), "new", []byte("x")); err != nil {
				t.Fatalf("Create through %d × %d: %v", tc.n, tc.status, err)
			}
		})
	}
}

func TestPersistentFailuresUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name       string
		status     int
		retryAfter string
		wantTries  int
	}{
		{"503Forever", http.StatusServiceUnavailable, "", DefaultMaxRetries + 1},
		{"429Forever", http.StatusTooManyRequests, "", DefaultMaxRetries + 1},
		// A Retry-After longer than the cap is not waited for.
		{"429RetryAfterAnHour", http.StatusTooManyRequests, "3600", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newFaultProxy(t, failFirst(1<<30, tc.status, tc.retryAfter))
			b, err := NewFromConnectionString(azuriteConnStr(p.URL), "c-1", Options{Client: fastRetries()})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = b.Create(t.Context(), "a", []byte(secretPayload))
			checkUnavailable(t, "Create", err)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Create took %v", d)
			}
			if got := int(p.requests.Load()); got != tc.wantTries {
				t.Errorf("proxy saw %d tries, want %d", got, tc.wantTries)
			}
		})
	}
}

// hang never answers; it returns when the client goes away or the test ends.
func hang(p *faultProxy, _ int, w http.ResponseWriter, r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-p.done:
	}
}

func TestSlowBackendBoundedByCallTimeout(t *testing.T) {
	const callTimeout = 300 * time.Millisecond
	p := newFaultProxy(t, hang)
	b, err := NewFromConnectionString(azuriteConnStr(p.URL), "c-1", Options{CallTimeout: callTimeout})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		op   string
		call func(ctx context.Context) error
	}{
		{"Create", func(ctx context.Context) error { return b.Create(ctx, "a", []byte(secretPayload)) }},
		{"Read", func(ctx context.Context) error { _, err := b.Read(ctx, "a"); return err }},
		{"Delete", func(ctx context.Context) error { return b.Delete(ctx, "a") }},
		{"List", func(ctx context.Context) error { _, err := b.List(ctx, "", "", 0); return err }},
	} {
		start := time.Now()
		err := tc.call(t.Context())
		checkUnavailable(t, tc.op, err)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: err = %v, want it to wrap context.DeadlineExceeded", tc.op, err)
		}
		if d := time.Since(start); d > callTimeout+time.Second {
			t.Errorf("%s took %v, want about the %v call timeout", tc.op, d, callTimeout)
		}
	}
}

// A try that hangs is cut at the try timeout and retried within the call.
func TestHungTryRetried(t *testing.T) {
	b := openAzurite(t, "", Options{})
	if err := b.Create(t.Context(), "seed", []byte("seed")); err != nil {
		t.Fatal(err)
	}
	p := newFaultProxy(t, func(p *faultProxy, n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			hang(p, n, w, r)
			return
		}
		p.forward.ServeHTTP(w, r)
	})
	o := fastRetries()
	o.Retry.TryTimeout = 200 * time.Millisecond
	via, err := NewFromConnectionString(withEndpoint(t, emulators.Blob(t), p.URL), b.name, Options{Client: o, CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := via.Read(t.Context(), "seed"); err != nil || string(got) != "seed" {
		t.Fatalf("Read with a hung first try = %q, %v; want the blob", got, err)
	}
}

// The first try of a Create lands but its answer is lost; the retry finds
// the name taken. The blob holds this call's bytes, so the Create succeeded.
func TestCreateAnswerLost(t *testing.T) {
	b := openAzurite(t, "", Options{})
	if err := b.EnsureContainer(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := b.Create(t.Context(), "theirs", []byte("their bytes")); err != nil {
		t.Fatal(err)
	}
	p := newFaultProxy(t, func(p *faultProxy, n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			rec := httptest.NewRecorder()
			p.forward.ServeHTTP(rec, r)
			if rec.Code != http.StatusCreated {
				panic(fmt.Sprintf("first Put Blob answered %d", rec.Code))
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		p.forward.ServeHTTP(w, r)
	})
	via, err := NewFromConnectionString(withEndpoint(t, emulators.Blob(t), p.URL), b.name, Options{Client: fastRetries()})
	if err != nil {
		t.Fatal(err)
	}
	if err := via.Create(t.Context(), "mine", []byte("my bytes")); err != nil {
		t.Fatalf("Create whose first answer was lost: %v, want nil", err)
	}
	if got, err := b.Read(t.Context(), "mine"); err != nil || string(got) != "my bytes" {
		t.Fatalf("Read = %q, %v", got, err)
	}
	// A name another writer holds is still a conflict after a retry.
	p2 := newFaultProxy(t, failFirst(1, http.StatusServiceUnavailable, ""))
	via2, err := NewFromConnectionString(withEndpoint(t, emulators.Blob(t), p2.URL), b.name, Options{Client: fastRetries()})
	if err != nil {
		t.Fatal(err)
	}
	if err := via2.Create(t.Context(), "theirs", []byte("my bytes")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("retried Create of a name another writer holds: err = %v, want ErrConflict", err)
	}
}

func TestAccessDenied(t *testing.T) {
	b := openAzurite(t, "", Options{})
	if err := b.EnsureContainer(t.Context()); err != nil {
		t.Fatal(err)
	}
	wrongKey := strings.Replace(emulators.Blob(t), "AccountKey="+emulators.AzuriteKey,
		"AccountKey="+strings.Repeat("A", 86)+"==", 1)
	denied, err := NewFromConnectionString(wrongKey, b.name, Options{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = denied.Create(t.Context(), "a", []byte(secretPayload))
	checkUnavailable(t, "Create with a wrong key", err)
	if !errors.Is(err, ErrAccessDenied) || !strings.Contains(err.Error(), "access denied") {
		t.Fatalf("Create with a wrong key: err = %v, want ErrAccessDenied", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Create with a wrong key took %v: a 403 is not worth retrying", d)
	}
}

// TestErrorMap drives mapErr with every kind of answer.
func TestErrorMap(t *testing.T) {
	resp := func(status int, code string) error {
		req, _ := http.NewRequest(http.MethodPut, "https://acct.blob.core.windows.net/c/a?sig=secret", nil)
		h := http.Header{}
		if code != "" {
			h.Set("x-ms-error-code", code)
		}
		h.Set("x-ms-request-id", "req-1")
		return runtime.NewResponseErrorWithErrorCode(&http.Response{
			StatusCode: status, Header: h, Request: req,
			Body: io.NopCloser(strings.NewReader("<Error><Message>" + secretPayload + "</Message></Error>")),
		}, code)
	}
	refused := &url.Error{Op: "Put", URL: "https://acct.blob.core.windows.net/c/a?sig=secret",
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	none := []error{}
	for _, tc := range []struct {
		name string
		op   op
		err  error
		want []error
	}{
		{"404 blob", opRead, resp(404, "BlobNotFound"), []error{store.ErrNotFound}},
		{"404 no code", opRead, resp(404, ""), []error{store.ErrNotFound}},
		{"404 container", opRead, resp(404, "ContainerNotFound"), []error{store.ErrUnavailable}},
		{"409 exists on create", opCreate, resp(409, "BlobAlreadyExists"), []error{store.ErrConflict}},
		{"412 on create", opCreate, resp(412, "ConditionNotMet"), []error{store.ErrConflict}},
		{"409 container being deleted", opCreate, resp(409, "ContainerBeingDeleted"), []error{store.ErrUnavailable}},
		{"412 on delete", opDelete, resp(412, "ConditionNotMet"), none},
		{"400 bad marker", opListMarker, resp(400, "OutOfRangeInput"), []error{store.ErrInvalid}},
		{"400 bad marker, other code", opListMarker, resp(400, "InvalidQueryParameterValue"), []error{store.ErrInvalid}},
		{"400 bad name", opCreate, resp(400, "InvalidResourceName"), []error{store.ErrInvalid}},
		{"400 other", opRead, resp(400, "InvalidHeaderValue"), none},
		{"400 auth header", opRead, resp(400, "InvalidAuthenticationInfo"), []error{store.ErrUnavailable, ErrAccessDenied}},
		{"401", opRead, resp(401, "InvalidAuthenticationInfo"), []error{store.ErrUnavailable, ErrAccessDenied}},
		{"403 role", opRead, resp(403, "AuthorizationPermissionMismatch"), []error{store.ErrUnavailable, ErrAccessDenied}},
		{"403 on create", opCreate, resp(403, "AuthorizationFailure"), []error{store.ErrUnavailable, ErrAccessDenied}},
		{"408", opRead, resp(408, ""), []error{store.ErrUnavailable}},
		{"429", opList, resp(429, ""), []error{store.ErrUnavailable}},
		{"500", opDelete, resp(500, "InternalError"), []error{store.ErrUnavailable}},
		{"503", opCreate, resp(503, "ServerBusy"), []error{store.ErrUnavailable}},
		{"405", opRead, resp(405, "UnsupportedHttpVerb"), none},
		{"refused", opCreate, refused, []error{store.ErrUnavailable}},
		{"deadline", opRead, context.DeadlineExceeded, []error{store.ErrUnavailable, context.DeadlineExceeded}},
		{"truncated body", opRead, io.ErrUnexpectedEOF, []error{store.ErrUnavailable}},
		{"no token", opRead, &blobclient.TokenError{Err: errors.New("managed identity endpoint unreachable")}, []error{store.ErrUnavailable, ErrAccessDenied}},
		{"unknown", opRead, errors.New("something else"), none},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := mapErr(context.Background(), tc.op, "owner/a", tc.err)
			for _, s := range []error{store.ErrNotFound, store.ErrConflict, store.ErrInvalid, store.ErrUnavailable, ErrAccessDenied, context.DeadlineExceeded} {
				if want := slices.Contains(tc.want, s); errors.Is(got, s) != want {
					t.Errorf("mapErr = %v: errors.Is(%v) = %v, want %v", got, s, !want, want)
				}
			}
			if !strings.Contains(got.Error(), `"owner/a"`) {
				t.Errorf("mapErr = %q, want it to name the blob", got)
			}
			if strings.Contains(got.Error(), "sig=") || strings.Contains(got.Error(), secretPayload) {
				t.Errorf("mapErr = %q quotes a URL query or a response body", got)
			}
		})
	}
	t.Run("caller canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		got := mapErr(ctx, opRead, "a", context.Canceled)
		if !errors.Is(got, context.Canceled) || errors.Is(got, store.ErrUnavailable) {
			t.Errorf("mapErr after the caller canceled = %v, want context.Canceled only", got)
		}
	})
	t.Run("response error kept", func(t *testing.T) {
		got := mapErr(context.Background(), opRead, "a", resp(503, "ServerBusy"))
		if _, ok := errors.AsType[*blobclient.StatusError](got); !ok {
			t.Errorf("mapErr = %v: the status is not reachable with errors.As", got)
		}
	})
}

func TestCanceledContext(t *testing.T) {
	b := openAzurite(t, "", Options{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := b.Create(ctx, "a", []byte("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("Create: err = %v, want context.Canceled", err)
	}
	if _, err := b.Read(ctx, "a"); !errors.Is(err, context.Canceled) {
		t.Errorf("Read: err = %v, want context.Canceled", err)
	}
	if err := b.Delete(ctx, "a"); !errors.Is(err, context.Canceled) {
		t.Errorf("Delete: err = %v, want context.Canceled", err)
	}
	if _, err := b.List(ctx, "", "", 0); !errors.Is(err, context.Canceled) {
		t.Errorf("List: err = %v, want context.Canceled", err)
	}
}

func infoNames(infos []store.BlobInfo) []string {
	var ns []string
	for _, in := range infos {
		ns = append(ns, in.Name)
	}
	return ns
}

func BenchmarkAzurite(b *testing.B) {
	data := bytes.Repeat([]byte{0xa5}, 1024)
	for _, workers := range []int{1, 16} {
		b.Run(fmt.Sprintf("Create/goroutines=%d", workers), func(b *testing.B) {
			blobs := openAzurite(b, "", Options{})
			if err := blobs.EnsureContainer(b.Context()); err != nil {
				b.Fatal(err)
			}
			run := newRunID()
			b.SetBytes(int64(len(data)))
			parallel(b, workers, func(i int) error {
				return blobs.Create(b.Context(), fmt.Sprintf("%s/owner%02d/v%d", run, i%16, i), data)
			})
		})
		b.Run(fmt.Sprintf("Read/goroutines=%d", workers), func(b *testing.B) {
			blobs := openAzurite(b, "", Options{})
			const n = 64
			for i := range n {
				if err := blobs.Create(b.Context(), fmt.Sprintf("blob%02d", i), data); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(data)))
			parallel(b, workers, func(i int) error {
				got, err := blobs.Read(b.Context(), fmt.Sprintf("blob%02d", i%n))
				if err == nil && len(got) != len(data) {
					err = fmt.Errorf("read %d bytes, want %d", len(got), len(data))
				}
				return err
			})
		})
	}
}

// parallel runs op b.N times over workers goroutines and reports ops/s.
func parallel(b *testing.B, workers int, op func(i int) error) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					return
				}
				if err := op(i); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func newRunID() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// fakeCred hands out unsigned JWTs, which Azurite's --oauth basic accepts
// when their issuer, audience and lifetime are right.
type fakeCred struct {
	aud    string // "" means https://storage.azure.com
	err    error  // returned instead of a token when set
	calls  atomic.Int32
	scopes atomic.Value // []string of the last request
}

func (c *fakeCred) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.calls.Add(1)
	c.scopes.Store(o.Scopes)
	if c.err != nil {
		return azcore.AccessToken{}, c.err
	}
	aud := c.aud
	if aud == "" {
		aud = "https://storage.azure.com"
	}
	now := time.Now()
	enc := base64.RawURLEncoding.EncodeToString
	claims, _ := json.Marshal(map[string]any{
		"aud": aud,
		"iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000000/",
		"iat": now.Add(-time.Minute).Unix(),
		"nbf": now.Add(-time.Minute).Unix(),
		"exp": now.Add(time.Hour).Unix(),
		"oid": "11111111-1111-1111-1111-111111111111",
	})
	tok := enc([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc(claims) + "." + enc([]byte("unsigned"))
	return azcore.AccessToken{Token: tok, ExpiresOn: now.Add(time.Hour)}, nil
}

// startOAuthAzurite starts an Azurite of its own for the test, over https
// with a fresh self-signed certificate and --oauth basic, and returns its
// account URL and a client transport that trusts the certificate.
func startOAuthAzurite(t *testing.T) (accountURL string, transport policy.Transporter) {
	t.Helper()
	bin := filepath.Join(repoRoot(t), ".tools", "npm", "node_modules", ".bin", "azurite-blob")
	if _, err := os.Stat(bin); err != nil {
		msg := fmt.Sprintf("azurite-blob is not installed (run `make tools`): %v", err)
		if os.Getenv(emulators.Required) == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	certPEM, keyPEM := selfSignedCert(t)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(closedPort(t))
	cmd := exec.Command(bin, "--blobHost", "127.0.0.1", "--blobPort", port, "--inMemoryPersistence",
		"--skipApiVersionCheck", "--disableTelemetry", "--loose", "--silent",
		"--oauth", "basic", "--cert", certFile, "--key", keyFile)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start azurite-blob: %v", err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	listening := make(chan struct{})
	var log strings.Builder // read only after exited is closed
	go func() {
		sc := bufio.NewScanner(out)
		once := sync.OnceFunc(func() { close(listening) })
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "successfully listens on https://") {
				once()
			}
		}
		cmd.Wait()
		close(exited)
	}()
	select {
	case <-listening:
	case <-exited:
		t.Fatalf("azurite-blob --oauth basic exited:\n%s", log.String())
	case <-time.After(60 * time.Second):
		t.Fatal("azurite-blob --oauth basic not listening after 60 s")
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	t.Cleanup(tr.CloseIdleConnections)
	return "https://127.0.0.1:" + port + "/devstoreaccount1", &http.Client{Transport: tr}
}

// selfSignedCert returns a certificate for 127.0.0.1 and its key, in PEM.
func selfSignedCert(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// TestTokenCredential runs the adapter built by New, as in Azure with a
// managed identity, against Azurite checking bearer tokens over https.
func TestTokenCredential(t *testing.T) {
	accountURL, transport := startOAuthAzurite(t)
	open := func(t *testing.T, cred azcore.TokenCredential) *Blobs {
		t.Helper()
		o := fastRetries()
		o.Transport = transport
		b, err := New(accountURL, containerName(), cred, Options{Client: o, CreateContainer: true})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		t.Cleanup(func() { b.c.Delete(context.Background(), nil) })
		return b
	}

	t.Run("Contract", func(t *testing.T) {
		cred := &fakeCred{}
		storetest.TestBlobs(t, func(t *testing.T) store.Blobs { return open(t, cred) })
		if cred.calls.Load() == 0 {
			t.Fatal("the credential was never asked for a token")
		}
		if got, want := cred.scopes.Load().([]string), []string{"https://storage.azure.com/.default"}; !slices.Equal(got, want) {
			t.Errorf("token scopes = %q, want %q", got, want)
		}
	})

	t.Run("WrongAudience", func(t *testing.T) {
		b := open(t, &fakeCred{aud: "https://vault.azure.net"})
		start := time.Now()
		err := b.Create(t.Context(), "a", []byte(secretPayload))
		checkUnavailable(t, "Create with a token for another audience", err)
		if !errors.Is(err, ErrAccessDenied) {
			t.Fatalf("Create with a token for another audience: err = %v, want ErrAccessDenied", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("a refused token took %v: it is not worth retrying", d)
		}
	})

	t.Run("NoToken", func(t *testing.T) {
		cred := &fakeCred{err: errors.New("managed identity endpoint: connection refused")}
		b := open(t, cred)
		_, err := b.Read(t.Context(), "a")
		checkUnavailable(t, "Read without a token", err)
		if !errors.Is(err, ErrAccessDenied) || !strings.Contains(err.Error(), "get token") {
			t.Fatalf("Read without a token: err = %v, want ErrAccessDenied naming the token", err)
		}
		if got := cred.calls.Load(); got != 1 {
			t.Errorf("credential asked %d times, want 1 (a failed GetToken is not retried)", got)
		}
	})
}

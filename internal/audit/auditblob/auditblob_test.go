package auditblob

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/audit/audittest"
	"github.com/credvault/credvault/internal/emulators"
)

func TestMain(m *testing.M) { emulators.Main(m) }

// secretPayload is record data the tests append: no message may quote it.
const secretPayload = `{"op":"secret.read","marker":"record-data-that-must-not-leak"}` + "\n"

// containerName returns a container name no other test or run uses.
func containerName() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "audit-t-" + hex.EncodeToString(b)
}

// openAzurite returns a Store on a container of its own in the shared
// Azurite, created, and removed when the test ends.
func openAzurite(t *testing.T, o Options) *Store {
	t.Helper()
	return openContainer(t, containerName(), o)
}

// openContainer returns a Store on the named container, created, and
// removed when the test ends.
func openContainer(t *testing.T, name string, o Options) *Store {
	t.Helper()
	connStr := emulators.Blob(t)
	// Setup and cleanup go through a plain store, not o's transport.
	direct, err := NewFromConnectionString(connStr, name, Options{})
	if err != nil {
		t.Fatalf("NewFromConnectionString: %v", err)
	}
	if err := direct.EnsureContainer(t.Context()); err != nil {
		t.Fatalf("EnsureContainer: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		direct.c.Delete(ctx, nil)
	})
	s, err := NewFromConnectionString(connStr, name, o)
	if err != nil {
		t.Fatalf("NewFromConnectionString: %v", err)
	}
	return s
}

func TestContract(t *testing.T) {
	audittest.TestStore(t, func(t *testing.T) (audit.Store, audit.Reader) {
		s := openAzurite(t, Options{})
		s.pageSize = 7 // ManySegmentsListCompletely takes several pages
		return s, s
	})
}

func TestEnsureContainer(t *testing.T) {
	connStr := emulators.Blob(t)
	s, err := NewFromConnectionString(connStr, containerName(), Options{})
	if err != nil {
		t.Fatalf("NewFromConnectionString: %v", err)
	}
	t.Cleanup(func() { s.c.Delete(context.Background(), nil) })
	// Nothing creates the container behind the caller's back.
	err = s.Append(t.Context(), "2026/11/23/20/a-000000.jsonl", []byte(secretPayload))
	if !errors.Is(err, errContainerNotFound) {
		t.Fatalf("Append in a missing container: err = %v, want errContainerNotFound", err)
	}
	for i := range 2 {
		if err := s.EnsureContainer(t.Context()); err != nil {
			t.Fatalf("EnsureContainer #%d: %v", i+1, err)
		}
	}
	if err := s.Append(t.Context(), "2026/11/23/20/a-000000.jsonl", []byte(secretPayload)); err != nil {
		t.Fatalf("Append after EnsureContainer: %v", err)
	}
	p, err := s.c.NewBlobClient("2026/11/23/20/a-000000.jsonl").GetProperties(t.Context(), nil)
	if err != nil {
		t.Fatalf("GetProperties: %v", err)
	}
	if got, want := *p.ContentType, contentType; got != want {
		t.Errorf("segment content type = %q, want %q", got, want)
	}
	if got, want := *p.BlobType, "AppendBlob"; string(got) != want {
		t.Errorf("segment blob type = %q, want %q", got, want)
	}
}

func TestConstructorsMakeNoCall(t *testing.T) {
	// Nothing listens on a closed port: a constructor that dialled would fail.
	addr := closedPort(t)
	if _, err := NewFromConnectionString(azuriteConnStr("http://"+addr), DefaultContainer, Options{}); err != nil {
		t.Errorf("NewFromConnectionString: %v", err)
	}
	if _, err := New("https://"+addr, DefaultContainer, fakeCred{}, Options{}); err != nil {
		t.Errorf("New: %v", err)
	}
	// blobclient's tests hold the whole list of arguments refused; these
	// check that the refusal reaches the caller, under this package's name.
	for _, tc := range []struct {
		name, url, container string
		cred                 azcore.TokenCredential
	}{
		{"plain http", "http://" + addr, "audit", fakeCred{}}, // a bearer token must not travel in clear
		{"query", "https://" + addr + "/?sig=secret", "audit", fakeCred{}},
		{"upper-case container", "https://" + addr, "Audit", fakeCred{}},
		{"no credential", "https://" + addr, "audit", nil},
	} {
		_, err := New(tc.url, tc.container, tc.cred, Options{})
		if err == nil || !strings.HasPrefix(err.Error(), "auditblob: ") || strings.Contains(err.Error(), "secret") {
			t.Errorf("New (%s): err = %v, want an auditblob error that does not quote the URL's query", tc.name, err)
		}
	}
	_, err := NewFromConnectionString("AccountKey=not-base64!!;Garbage", DefaultContainer, Options{})
	if err == nil || !strings.HasPrefix(err.Error(), "auditblob: ") || strings.Contains(err.Error(), "not-base64") {
		t.Errorf("NewFromConnectionString(bad): err = %v, want an auditblob error that does not quote the string", err)
	}
	if _, err := NewFromConnectionString(azuriteConnStr("http://"+addr), "au", Options{}); err == nil {
		t.Errorf("NewFromConnectionString with container \"au\": err = nil, want an error")
	}
}

// Names Azure cannot hold as given are refused before any request.
func TestInvalidNamesRefusedLocally(t *testing.T) {
	s, err := NewFromConnectionString(azuriteConnStr("http://"+closedPort(t)), DefaultContainer, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{
		"", "a/", "/a", "a//b", "a/./b", "a/../b", "..", "a.", "a\\b", "a\x00b", "a\nb",
		"\xff\xfe", strings.Repeat("n", 1025),
	} {
		if err := s.Append(t.Context(), name, []byte(secretPayload)); !errors.Is(err, errInvalidName) {
			t.Errorf("Append(%q): err = %v, want errInvalidName", name, err)
		}
		if _, err := s.Open(t.Context(), name); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Open(%q): err = %v, want fs.ErrNotExist", name, err)
		}
	}
}

func azuriteConnStr(endpoint string) string {
	return "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + emulators.AzuriteKey +
		";BlobEndpoint=" + endpoint + "/devstoreaccount1;"
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// fakeCred hands out a token, or err.
type fakeCred struct{ err error }

func (c fakeCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if c.err != nil {
		return azcore.AccessToken{}, c.err
	}
	return azcore.AccessToken{Token: "fake-token", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// transport is an SDK transport that lets a test answer a request itself
// or pass it on to the real one.
type transport func(r *http.Request) (*http.Response, error)

func (f transport) Do(r *http.Request) (*http.Response, error) { return f(r) }

func forward(r *http.Request) (*http.Response, error) { return http.DefaultClient.Do(r) }

// via returns client options that send requests through f, with fast
// retries (maxRetries; -1 for none).
func via(f transport, maxRetries int32) *azblob.ClientOptions {
	o := &azblob.ClientOptions{}
	o.Transport = f
	o.Retry = policy.RetryOptions{MaxRetries: maxRetries, RetryDelay: time.Millisecond, MaxRetryDelay: 10 * time.Millisecond}
	return o
}

// answer is a service error answer to r.
func answer(r *http.Request, status int, code string) *http.Response {
	h := http.Header{}
	h.Set("x-ms-error-code", code)
	h.Set("x-ms-request-id", "test-request")
	return &http.Response{
		StatusCode: status, Status: http.StatusText(status), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(strings.NewReader("")), Request: r,
	}
}

// isAppendBlock reports an Append Block request.
func isAppendBlock(r *http.Request) bool { return r.URL.Query().Get("comp") == "appendblock" }

// isCreate reports a Put Blob request creating an append blob.
func isCreate(r *http.Request) bool {
	// The SDK sets its x-ms-* headers under lower-case keys.
	return r.Method == http.MethodPut && r.URL.Query().Get("comp") == "" &&
		slices.Contains(r.Header["x-ms-blob-type"], "AppendBlob")
}

// counter counts the requests that match.
func counter(match func(*http.Request) bool, n *atomic.Int32) transport {
	return func(r *http.Request) (*http.Response, error) {
		if match(r) {
			n.Add(1)
		}
		return forward(r)
	}
}

// checkNoSecrets fails when err's message quotes what it must not.
func checkNoSecrets(t *testing.T, what string, err error) {
	t.Helper()
	for _, s := range []string{"record-data-that-must-not-leak", emulators.AzuriteKey, "SharedKey ", "Bearer ", "fake-token", "sig="} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("%s: error %q quotes %q", what, err, s)
		}
	}
}

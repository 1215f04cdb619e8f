package cosmos

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/azcosmos"

	"github.com/credvault/credvault/internal/emulators"
	"github.com/credvault/credvault/internal/store"
	"github.com/credvault/credvault/internal/store/storetest"
)

func TestMain(m *testing.M) { emulators.Main(m) }

const (
	testDatabase  = "credvault"
	testContainer = "metadata"
)

var setup struct {
	once sync.Once
	err  error
}

// openEmulator returns a Metadata on the emulator's test container, which
// the first call creates. Tests share it and keep apart by partition and
// kind, as the contract suite does.
func openEmulator(t testing.TB, opt Options) *Metadata {
	t.Helper()
	return openAt(t, emulators.Cosmos(t), opt)
}

// openAt returns a Metadata on the test container at endpoint, which may be
// a proxy in front of the emulator.
func openAt(t testing.TB, endpoint string, opt Options) *Metadata {
	t.Helper()
	emulator := emulators.Cosmos(t)
	setup.once.Do(func() {
		m, err := NewWithKey(emulator, emulators.CosmosKey, testDatabase, testContainer, Options{})
		if err == nil {
			err = m.EnsureContainer(t.Context())
			m.Close()
		}
		setup.err = err
	})
	if setup.err != nil {
		t.Fatalf("set up the test container: %v", setup.err)
	}
	m, err := NewWithKey(endpoint, emulators.CosmosKey, testDatabase, testContainer, opt)
	if err != nil {
		t.Fatalf("NewWithKey: %v", err)
	}
	t.Cleanup(m.Close)
	return m
}

// rawContainer returns an SDK client on the emulator's test container.
func rawContainer(t testing.TB) *azcosmos.ContainerClient {
	t.Helper()
	openEmulator(t, Options{}) // creates the container
	cred, err := azcosmos.NewKeyCredential(emulators.CosmosKey)
	if err != nil {
		t.Fatal(err)
	}
	client, err := azcosmos.NewClientWithKey(emulators.Cosmos(t), cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	c, err := client.NewContainer(testDatabase, testContainer)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// uniq returns a name no other test uses.
func uniq(t testing.TB, what string) string {
	return fmt.Sprintf("%s-%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), what, time.Now().UnixNano())
}

func TestContract(t *testing.T) {
	storetest.TestMetadata(t, func(t *testing.T) store.Metadata { return openEmulator(t, Options{}) })
}

// The document in Cosmos DB has the documented shape, with the caller's body
// kept under "body".
func TestDocumentShape(t *testing.T) {
	m, raw := openEmulator(t, Options{}), rawContainer(t)
	p := uniq(t, "owner")
	body := `{"name":"github-token <&>","versions":[{"v":1,"blob":"b/1"}],"n":1.5,"nested":{"ok":true,"id":"not the id"}}`
	etag, err := m.Create(t.Context(), store.Item{Partition: p, ID: "doc", Kind: store.KindSecret, Body: []byte(body)})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	resp, err := raw.ReadItem(t.Context(), azcosmos.NewPartitionKeyString(p), "doc", nil)
	if err != nil {
		t.Fatalf("ReadItem: %v", err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(resp.Value, &doc); err != nil {
		t.Fatal(err)
	}
	for field, want := range map[string]string{"id": `"doc"`, "pk": `"` + p + `"`, "kind": `"secret"`, "_etag": mustJSON(t, etag)} {
		if got := string(doc[field]); got != want {
			t.Errorf("document field %q = %s, want %s", field, got, want)
		}
	}
	var gotBody, wantBody any
	json.Unmarshal(doc["body"], &gotBody)
	json.Unmarshal([]byte(body), &wantBody)
	if fmt.Sprint(gotBody) != fmt.Sprint(wantBody) {
		t.Errorf("document body = %s, want %s", doc["body"], body)
	}
	for field := range doc {
		if !slices.Contains([]string{"id", "pk", "kind", "body"}, field) && !strings.HasPrefix(field, "_") {
			t.Errorf("document has field %q, want only id, pk, kind, body and Cosmos DB's own", field)
		}
	}
}

func mustJSON(t testing.TB, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Arguments Cosmos DB would refuse, or that make no item, are ErrInvalid and
// reach no server.
func TestInvalidArguments(t *testing.T) {
	m, err := NewWithKey("http://127.0.0.1:1/", emulators.CosmosKey, testDatabase, testContainer, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ok := store.Item{Partition: "p", ID: "id", Kind: store.KindSecret, Body: []byte(`{}`)}
	with := func(f func(*store.Item)) store.Item { it := ok; f(&it); return it }
	for _, tc := range []struct {
		name string
		it   store.Item
	}{
		{"slash in id", with(func(it *store.Item) { it.ID = "a/b" })},
		{"backslash in id", with(func(it *store.Item) { it.ID = `a\b` })},
		{"question mark in id", with(func(it *store.Item) { it.ID = "a?b" })},
		{"hash in id", with(func(it *store.Item) { it.ID = "a#b" })},
		{"empty id", with(func(it *store.Item) { it.ID = "" })},
		{"id of 1024 bytes", with(func(it *store.Item) { it.ID = strings.Repeat("é", 512) })},
		{"partition of 2049 bytes", with(func(it *store.Item) { it.Partition = strings.Repeat("p", 2049) })},
		{"empty partition", with(func(it *store.Item) { it.Partition = "" })},
		{"empty kind", with(func(it *store.Item) { it.Kind = "" })},
		{"array body", with(func(it *store.Item) { it.Body = []byte(`[1]`) })},
		{"broken body", with(func(it *store.Item) { it.Body = []byte(`{"a":`) })},
		{"no body", with(func(it *store.Item) { it.Body = nil })},
	} {
		if _, err := m.Create(t.Context(), tc.it); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Create with %s: err = %v, want ErrInvalid", tc.name, err)
		}
		if _, err := m.Replace(t.Context(), tc.it, "etag"); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Replace with %s: err = %v, want ErrInvalid", tc.name, err)
		}
	}
	if _, err := m.Replace(t.Context(), ok, ""); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Replace without an ETag: err = %v, want ErrInvalid", err)
	}
	if _, err := m.Get(t.Context(), "p", "a/b"); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Get of id a/b: err = %v, want ErrInvalid", err)
	}
	if err := m.Delete(t.Context(), "p", "a#b", ""); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Delete of id a#b: err = %v, want ErrInvalid", err)
	}
	if _, err := m.List(t.Context(), store.Query{Partition: "p"}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("List without a kind: err = %v, want ErrInvalid", err)
	}
}

// The cross-partition listing is in (partition, id) byte order, whatever
// the page size of the query underneath and the limit.
func TestListAcrossPartitionsOrder(t *testing.T) {
	m := openEmulator(t, Options{})
	m.drainPage = 2 // several pages per drain
	base, kind := uniq(t, "p"), uniq(t, "kind")
	var want []string
	for _, part := range []string{"a", "a-b", "aB", "ab", "b"} {
		for _, id := range []string{"1", "10", "2", "A", "a"} {
			want = append(want, base+part+"|"+id)
		}
	}
	for _, i := range []int{7, 3, 24, 0, 12, 18, 5, 21, 9, 1, 15, 22, 4, 11, 19, 2, 8, 23, 13, 6, 17, 10, 20, 14, 16} {
		p, id, _ := strings.Cut(want[i], "|")
		if _, err := m.Create(t.Context(), store.Item{Partition: p, ID: id, Kind: kind, Body: []byte(`{}`)}); err != nil {
			t.Fatalf("Create: %v", err)
		}
	}
	// Documents of another kind, before, among and after them.
	for _, p := range []string{base, base + "a", base + "c"} {
		if _, err := m.Create(t.Context(), store.Item{Partition: p, ID: "0-other", Kind: kind + "-other", Body: []byte(`{}`)}); err != nil {
			t.Fatalf("Create: %v", err)
		}
	}
	for _, limit := range []int{1, 2, 3, 7, 25, 26, 0} {
		var got []string
		q := store.Query{Kind: kind, Limit: limit}
		for pages := 0; ; pages++ {
			page, err := m.List(t.Context(), q)
			if err != nil {
				t.Fatalf("List limit %d: %v", limit, err)
			}
			if limit > 0 && len(page.Items) > limit {
				t.Fatalf("List limit %d: a page of %d", limit, len(page.Items))
			}
			for _, it := range page.Items {
				got = append(got, it.Partition+"|"+it.ID)
			}
			if page.Continuation == "" || pages > 100 {
				break
			}
			q.Continuation = page.Continuation
		}
		if !slices.Equal(got, want) {
			t.Errorf("List every partition, limit %d =\n%v\nwant\n%v", limit, got, want)
		}
	}
}

// A continuation List did not return for this listing is ErrInvalid.
func TestListContinuationInvalid(t *testing.T) {
	m := openEmulator(t, Options{})
	p, kind := uniq(t, "owner"), uniq(t, "kind")
	for i := range 3 {
		if _, err := m.Create(t.Context(), store.Item{Partition: p, ID: fmt.Sprint(i), Kind: kind, Body: []byte(`{}`)}); err != nil {
			t.Fatalf("Create: %v", err)
		}
	}
	single, err := m.List(t.Context(), store.Query{Partition: p, Kind: kind, Limit: 1})
	if err != nil || single.Continuation == "" {
		t.Fatalf("List: %v, continuation %q; want a continuation", err, single.Continuation)
	}
	across, err := m.List(t.Context(), store.Query{Kind: kind, Limit: 1})
	if err != nil || across.Continuation == "" {
		t.Fatalf("List every partition: %v, continuation %q; want a continuation", err, across.Continuation)
	}
	tampered := base64.RawURLEncoding.EncodeToString([]byte(mustJSON(t, cursor{Kind: kind, Partition: p, Token: "not a token"})))
	for _, tc := range []struct {
		name string
		q    store.Query
	}{
		{"not base64", store.Query{Partition: p, Kind: kind, Continuation: "%%%"}},
		{"not JSON", store.Query{Partition: p, Kind: kind, Continuation: base64.RawURLEncoding.EncodeToString([]byte("{"))}},
		{"of another partition", store.Query{Partition: p + "-other", Kind: kind, Continuation: single.Continuation}},
		{"of another kind", store.Query{Partition: p, Kind: kind + "-other", Continuation: single.Continuation}},
		{"of a cross-partition listing", store.Query{Partition: p, Kind: kind, Continuation: across.Continuation}},
		{"of a single-partition listing", store.Query{Kind: kind, Continuation: single.Continuation}},
		{"with a token Cosmos DB refuses", store.Query{Partition: p, Kind: kind, Continuation: tampered}},
	} {
		if _, err := m.List(t.Context(), tc.q); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("List with a continuation %s: err = %v, want ErrInvalid", tc.name, err)
		}
	}
}

// --- the launcher's patches, seen through the SDK ---

func statusOf(t testing.TB, err error) (status int, substatus string) {
	t.Helper()
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want an azcore.ResponseError", err)
	}
	return re.StatusCode, re.RawResponse.Header.Get("x-ms-substatus")
}

func TestLauncherMissingItemNotFound(t *testing.T) {
	c := rawContainer(t)
	_, err := c.ReadItem(t.Context(), azcosmos.NewPartitionKeyString(uniq(t, "owner")), "never-written", nil)
	if got, _ := statusOf(t, err); got != http.StatusNotFound {
		t.Fatalf("ReadItem of a missing item: status %d, want 404", got)
	}
	// Cosmos DB's error body, read without the SDK.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet,
		emulators.Cosmos(t)+"dbs/"+testDatabase+"/colls/"+testContainer+"/docs/never-written", nil)
	req.Header.Set("x-ms-documentdb-partitionkey", `["`+uniq(t, "owner")+`"]`)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Code string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusNotFound || body.Code != "NotFound" {
		t.Fatalf("GET a missing item: status %d, code %q (%v), want 404 NotFound", resp.StatusCode, body.Code, err)
	}
}

func TestLauncherQueryHonoursPartitionKey(t *testing.T) {
	c := rawContainer(t)
	base := uniq(t, "owner")
	mine, theirs := base+"-mine", base+"-theirs"
	for _, key := range []string{mine + "|1", theirs + "|1", mine + "|2", theirs + "|2", mine + "|3"} {
		p, id, _ := strings.Cut(key, "|")
		doc := mustJSON(t, map[string]string{"id": id, "pk": p, "kind": "k"})
		if _, err := c.CreateItem(t.Context(), azcosmos.NewPartitionKeyString(p), []byte(doc), nil); err != nil {
			t.Fatalf("CreateItem: %v", err)
		}
	}
	// A query that does not name the partition: only the header scopes it.
	pager := c.NewQueryItemsPager("SELECT c.id, c.pk FROM c WHERE STARTSWITH(c.pk, @prefix) ORDER BY c.id",
		azcosmos.NewPartitionKeyString(mine), &azcosmos.QueryOptions{
			PageSizeHint:    2,
			QueryParameters: []azcosmos.QueryParameter{{Name: "@prefix", Value: base}},
		})
	var got []string
	for pager.More() {
		page, err := pager.NextPage(t.Context())
		if err != nil {
			t.Fatalf("query: %v", err)
		}
		for _, raw := range page.Items {
			var d document
			json.Unmarshal(raw, &d)
			got = append(got, d.PK+"|"+d.ID)
		}
	}
	if want := []string{mine + "|1", mine + "|2", mine + "|3"}; !slices.Equal(got, want) {
		t.Fatalf("query with partition key %s = %v, want %v", mine, got, want)
	}
}

func TestLauncherPartitionKeyMismatch(t *testing.T) {
	c := rawContainer(t)
	p := uniq(t, "owner")
	doc := []byte(mustJSON(t, map[string]string{"id": "doc", "pk": p}))
	if _, err := c.CreateItem(t.Context(), azcosmos.NewPartitionKeyString(p+"-other"), doc, nil); err == nil {
		t.Fatal("CreateItem under another partition key: no error, want 400")
	} else if status, sub := statusOf(t, err); status != http.StatusBadRequest || sub != "1001" {
		t.Fatalf("CreateItem under another partition key: status %d substatus %q, want 400 substatus 1001", status, sub)
	}
	if _, err := c.CreateItem(t.Context(), azcosmos.NewPartitionKeyString(p), doc, nil); err != nil {
		t.Fatalf("CreateItem: %v", err)
	}
	moved := []byte(mustJSON(t, map[string]string{"id": "doc", "pk": p + "-other"}))
	if _, err := c.ReplaceItem(t.Context(), azcosmos.NewPartitionKeyString(p), "doc", moved, nil); err == nil {
		t.Fatal("ReplaceItem with another partition key in the body: no error, want 400")
	} else if status, _ := statusOf(t, err); status != http.StatusBadRequest {
		t.Fatalf("ReplaceItem with another partition key in the body: status %d, want 400", status)
	}
	if _, err := c.UpsertItem(t.Context(), azcosmos.NewPartitionKeyString(p), moved, nil); err == nil {
		t.Fatal("UpsertItem with another partition key in the body: no error, want 400")
	} else if status, _ := statusOf(t, err); status != http.StatusBadRequest {
		t.Fatalf("UpsertItem with another partition key in the body: status %d, want 400", status)
	}
}

// The gateway refuses a cross-partition ORDER BY to the Go SDK; so does the
// patched emulator, so that no test can come to rely on it.
func TestLauncherCrossPartitionOrderByRefused(t *testing.T) {
	c := rawContainer(t)
	_, err := c.NewQueryItemsPager("SELECT * FROM c ORDER BY c.id", azcosmos.NewPartitionKey(), nil).NextPage(t.Context())
	if err == nil {
		t.Fatal("cross-partition ORDER BY: no error, want 400")
	}
	if status, sub := statusOf(t, err); status != http.StatusBadRequest || sub != "1004" {
		t.Fatalf("cross-partition ORDER BY: status %d substatus %q, want 400 substatus 1004", status, sub)
	}
	// The same query within one partition is served.
	if _, err := c.NewQueryItemsPager("SELECT * FROM c ORDER BY c.id", azcosmos.NewPartitionKeyString("p"), nil).NextPage(t.Context()); err != nil {
		t.Fatalf("single-partition ORDER BY: %v", err)
	}
}

func TestLauncherMalformedContinuationRefused(t *testing.T) {
	c := rawContainer(t)
	token := "garbage"
	_, err := c.NewQueryItemsPager("SELECT * FROM c", azcosmos.NewPartitionKeyString("p"),
		&azcosmos.QueryOptions{ContinuationToken: &token}).NextPage(t.Context())
	if err == nil {
		t.Fatal("query with a malformed continuation: no error, want 400")
	}
	if status, _ := statusOf(t, err); status != http.StatusBadRequest {
		t.Fatalf("query with a malformed continuation: status %d, want 400", status)
	}
}

// --- faults, with a proxy in front of the emulator ---

// faultProxy forwards to the emulator, answering document requests (not the
// account or container metadata) with fault(n) while it returns a status,
// n counting document requests from 1.
type faultProxy struct {
	URL      string
	requests atomic.Int64 // document requests seen
	faults   atomic.Int64 // document requests answered with a fault
}

func startFaultProxy(t testing.TB, l net.Listener, fault func(n int64) (status int, header http.Header)) *faultProxy {
	t.Helper()
	target, err := url.Parse(emulators.Cosmos(t))
	if err != nil {
		t.Fatal(err)
	}
	fp := &faultProxy{}
	forward := httputil.NewSingleHostReverseProxy(target) // keeps the client's Host: the emulator advertises the proxy
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/docs") {
			n := fp.requests.Add(1)
			if status, header := fault(n); status != 0 {
				fp.faults.Add(1)
				io.Copy(io.Discard, r.Body)
				for k, v := range header {
					w.Header()[k] = v
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(status)
				fmt.Fprintf(w, `{"code":%q,"message":"injected by the test proxy"}`, http.StatusText(status))
				return
			}
		}
		forward.ServeHTTP(w, r)
	}))
	if l != nil {
		srv.Listener.Close()
		srv.Listener = l
	}
	srv.Start()
	t.Cleanup(srv.Close)
	fp.URL = srv.URL + "/"
	return fp
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

func TestClosedPortUnavailable(t *testing.T) {
	const timeout = time.Second
	openEmulator(t, Options{}) // the emulator is up; the port below is not it
	m, err := NewWithKey("http://"+closedPort(t)+"/", emulators.CosmosKey, testDatabase, testContainer, Options{CallTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, op := range []struct {
		name string
		do   func() error
	}{
		{"Get", func() error { _, err := m.Get(t.Context(), "p", "id"); return err }},
		{"Create", func() error {
			_, err := m.Create(t.Context(), store.Item{Partition: "p", ID: "id", Kind: "k", Body: []byte(`{}`)})
			return err
		}},
		{"List", func() error { _, err := m.List(t.Context(), store.Query{Partition: "p", Kind: "k"}); return err }},
	} {
		start := time.Now()
		err := op.do()
		if elapsed := time.Since(start); elapsed > timeout+500*time.Millisecond {
			t.Errorf("%s on a closed port took %s, want at most the call timeout %s", op.name, elapsed, timeout)
		}
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s on a closed port: err = %v, want ErrUnavailable", op.name, err)
		}
	}
}

// A store that could not reach Cosmos DB on its first request works as soon
// as Cosmos DB is back, not five minutes later as the bare SDK client would.
func TestUnavailableThenBack(t *testing.T) {
	openEmulator(t, Options{})
	addr := closedPort(t)
	m, err := NewWithKey("http://"+addr+"/", emulators.CosmosKey, testDatabase, testContainer, Options{CallTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	first := m.conn.Load()
	if _, err := m.Get(t.Context(), "p", "id"); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Get while nothing listens: err = %v, want ErrUnavailable", err)
	}
	// Wait for the SDK to give up reading the account's regions (it retries
	// for about 5 s) and the store to replace its client, so that recovery
	// has to come from the fresh client, then bring the endpoint up.
	for deadline := time.Now().Add(15 * time.Second); m.conn.Load() == first; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the store kept the client that could not read the account's regions")
		}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	startFaultProxy(t, l, func(int64) (int, http.Header) { return 0, nil })
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := m.Get(t.Context(), "p", "never-written")
		if errors.Is(err, store.ErrNotFound) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Get 15 s after the endpoint came back: err = %v, want ErrNotFound", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestThrottlingRetried(t *testing.T) {
	const throttled, retryAfter = 3, 100 * time.Millisecond
	fp := startFaultProxy(t, nil, func(n int64) (int, http.Header) {
		if n <= throttled {
			return http.StatusTooManyRequests, http.Header{"X-Ms-Retry-After-Ms": {fmt.Sprint(retryAfter.Milliseconds())}}
		}
		return 0, nil
	})
	m := openAt(t, fp.URL, Options{})
	start := time.Now()
	etag, err := m.Create(t.Context(), store.Item{Partition: uniq(t, "owner"), ID: "doc", Kind: store.KindSecret, Body: []byte(`{}`)})
	if err != nil {
		t.Fatalf("Create through %d throttled answers: %v", throttled, err)
	}
	if etag == "" {
		t.Fatal("Create: empty ETag")
	}
	if got := fp.faults.Load(); got != throttled {
		t.Errorf("throttled answers = %d, want %d", got, throttled)
	}
	if got := fp.requests.Load(); got != throttled+1 {
		t.Errorf("document requests = %d, want %d", got, throttled+1)
	}
	if elapsed := time.Since(start); elapsed < throttled*retryAfter {
		t.Errorf("Create took %s, want at least %d × the %s Cosmos DB asked to wait", elapsed, throttled, retryAfter)
	}
}

func TestThrottlingBeyondRetriesUnavailable(t *testing.T) {
	fp := startFaultProxy(t, nil, func(int64) (int, http.Header) {
		return http.StatusTooManyRequests, http.Header{"X-Ms-Retry-After-Ms": {"10"}}
	})
	m := openAt(t, fp.URL, Options{})
	_, err := m.Get(t.Context(), "p", "id")
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Get throttled for ever: err = %v, want ErrUnavailable", err)
	}
	if got, want := fp.requests.Load(), int64(1+defaultMaxRetries); got != want {
		t.Errorf("document requests = %d, want %d (1 + MaxRetries)", got, want)
	}
}

func TestServiceUnavailable(t *testing.T) {
	const timeout = 3 * time.Second
	fp := startFaultProxy(t, nil, func(int64) (int, http.Header) { return http.StatusServiceUnavailable, nil })
	m := openAt(t, fp.URL, Options{CallTimeout: timeout})
	start := time.Now()
	if _, err := m.Get(t.Context(), "p", "id"); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Get answered 503 for ever: err = %v, want ErrUnavailable", err)
	}
	if _, err := m.Replace(t.Context(), store.Item{Partition: "p", ID: "id", Kind: "k", Body: []byte(`{}`)}, "etag"); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Replace answered 503 for ever: err = %v, want ErrUnavailable", err)
	}
	if elapsed := time.Since(start); elapsed > 2*timeout {
		t.Errorf("two calls answered 503 took %s, want at most the call timeout each", elapsed)
	}
}

// Cosmos DB's answers map to the port's errors.
func TestErrorMap(t *testing.T) {
	var answer atomic.Value // [2]string: status, substatus
	fp := startFaultProxy(t, nil, func(int64) (int, http.Header) {
		a := answer.Load().([2]string)
		var status int
		fmt.Sscan(a[0], &status)
		h := http.Header{"X-Ms-Activity-Id": {"activity-1"}, "X-Ms-Retry-After-Ms": {"1"}}
		if a[1] != "" {
			h.Set("X-Ms-Substatus", a[1])
		}
		return status, h
	})
	m := openAt(t, fp.URL, Options{CallTimeout: 3 * time.Second})
	get := func() error { _, err := m.Get(t.Context(), "p", "id"); return err }
	create := func() error {
		_, err := m.Create(t.Context(), store.Item{Partition: "p", ID: "id", Kind: "k", Body: []byte(`{"secret":"s3cr3t"}`)})
		return err
	}
	list := func() error { _, err := m.List(t.Context(), store.Query{Partition: "p", Kind: "k"}); return err }
	for _, tc := range []struct {
		op        string
		do        func() error
		status    string
		substatus string
		want      error // nil: none of the port's errors
		text      string
	}{
		{"get", get, "404", "", store.ErrNotFound, "404"},
		{"get", get, "404", "1003", nil, "does not exist"},
		{"list", list, "404", "", nil, "does not exist"},
		{"create", create, "409", "", store.ErrConflict, "409"},
		{"create", create, "412", "", store.ErrConflict, "412"},
		{"list", list, "400", "", store.ErrInvalid, "400"},
		{"create", create, "413", "", store.ErrInvalid, "413"},
		{"get", get, "401", "", store.ErrUnavailable, "access denied"},
		{"create", create, "403", "5301", store.ErrUnavailable, "access denied"},
		{"create", create, "429", "3200", store.ErrUnavailable, "429"},
		{"get", get, "500", "", store.ErrUnavailable, "500"},
		{"create", create, "502", "", store.ErrUnavailable, "502"},
		{"get", get, "410", "1002", store.ErrUnavailable, "410"},
		{"create", create, "418", "", nil, "418"},
	} {
		answer.Store([2]string{tc.status, tc.substatus})
		err := tc.do()
		if err == nil {
			t.Errorf("%s answered %s: no error", tc.op, tc.status)
			continue
		}
		for _, sentinel := range []error{store.ErrNotFound, store.ErrConflict, store.ErrInvalid, store.ErrUnavailable} {
			if got := errors.Is(err, sentinel); got != (sentinel == tc.want) {
				t.Errorf("%s answered %s/%s: err = %v; errors.Is(err, %v) = %t", tc.op, tc.status, tc.substatus, err, sentinel, got)
			}
		}
		if !strings.Contains(err.Error(), tc.text) || !strings.Contains(err.Error(), "activity-1") {
			t.Errorf("%s answered %s: err = %q, want it to mention %q and the activity id", tc.op, tc.status, err, tc.text)
		}
		if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "injected") {
			t.Errorf("%s answered %s: err = %q repeats a body", tc.op, tc.status, err)
		}
	}
}

// --- benchmarks ---

// BenchmarkEmulator measures Get and Replace against the emulator, one
// goroutine and 16 at a time. The figures are the emulator's (one Node.js
// process, in memory) and the SDK's, not Cosmos DB's.
func BenchmarkEmulator(b *testing.B) {
	m := openEmulator(b, Options{})
	p := uniq(b, "owner")
	const workers = 16
	etags := make([]string, workers)
	for w := range workers {
		etag, err := m.Create(b.Context(), store.Item{Partition: p, ID: fmt.Sprint(w), Kind: store.KindSecret,
			Body: []byte(`{"name":"github-token","versions":[{"v":1,"blob":"0123456789abcdef0123456789abcdef"}]}`)})
		if err != nil {
			b.Fatalf("Create: %v", err)
		}
		etags[w] = etag
	}
	get := func(w int) error { _, err := m.Get(b.Context(), p, fmt.Sprint(w)); return err }
	replace := func(w int) error {
		etag, err := m.Replace(b.Context(), store.Item{Partition: p, ID: fmt.Sprint(w), Kind: store.KindSecret,
			Body: []byte(`{"name":"github-token","versions":[{"v":2,"blob":"0123456789abcdef0123456789abcdef"}]}`)}, etags[w])
		etags[w] = etag
		return err
	}
	for _, op := range []struct {
		name string
		do   func(w int) error
	}{{"Get", get}, {"Replace", replace}} {
		b.Run(op.name+"/serial", func(b *testing.B) {
			for b.Loop() {
				if err := op.do(0); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
		b.Run(op.name+"/16-goroutines", func(b *testing.B) {
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for w := range workers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						if err := op.do(w); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

// fakeCredential hands out a fixed token and records the scopes asked for.
type fakeCredential struct {
	mu     sync.Mutex
	scopes []string
}

func (c *fakeCredential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.scopes = append(c.scopes, o.Scopes...)
	return azcore.AccessToken{Token: "entra-token", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// New sends Entra ID bearer tokens, over TLS only.
func TestEntraAuth(t *testing.T) {
	target, err := url.Parse(emulators.Cosmos(t))
	if err != nil {
		t.Fatal(err)
	}
	openEmulator(t, Options{}) // creates the container
	var unauthorized atomic.Int64
	forward := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "type=aad&ver=1.0&sig=entra-token" {
			unauthorized.Add(1)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		forward.ServeHTTP(w, r)
	}))
	defer srv.Close()
	cred := &fakeCredential{}
	client := &azcosmos.ClientOptions{}
	client.Transport = srv.Client()
	m, err := New(srv.URL+"/", cred, testDatabase, testContainer, Options{Client: client})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer m.Close()
	if len(cred.scopes) != 0 {
		t.Fatalf("New asked for a token (scopes %v) before any request", cred.scopes)
	}
	p := uniq(t, "owner")
	if _, err := m.Create(t.Context(), store.Item{Partition: p, ID: "doc", Kind: store.KindSecret, Body: []byte(`{}`)}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := m.Get(t.Context(), p, "doc"); err != nil {
		t.Fatalf("Get: %v", err)
	}
	if n := unauthorized.Load(); n != 0 {
		t.Errorf("%d requests without the bearer token", n)
	}
	if want := "https://127.0.0.1/.default"; !slices.Contains(cred.scopes, want) {
		t.Errorf("token scopes = %v, want %s", cred.scopes, want)
	}
	if _, err := New("http://127.0.0.1:1/", cred, testDatabase, testContainer, Options{}); err == nil {
		t.Error("New with an http endpoint: no error, want a refusal to send tokens in the clear")
	}
}

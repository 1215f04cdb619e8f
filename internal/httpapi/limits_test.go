package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/cmk"
	"github.com/credvault/credvault/internal/httpapi"
	"github.com/credvault/credvault/internal/identity"
	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/store"
	"github.com/credvault/credvault/internal/store/embedded"
	"github.com/credvault/credvault/internal/vault"
)

// calls counts every store call by method.
type calls struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *calls) add(method string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[method]++
}

func (c *calls) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n = nil
}

// String lists the calls made, "" when none.
func (c *calls) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for m, n := range c.n {
		out = append(out, fmt.Sprintf("%s×%d", m, n))
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// countingBlobs and countingMeta count every call of the stores they wrap.
type countingBlobs struct {
	inner store.Blobs
	c     *calls
}

var _ store.Blobs = countingBlobs{}

func (b countingBlobs) Create(ctx context.Context, name string, data []byte) error {
	b.c.add("blobs.Create")
	return b.inner.Create(ctx, name, data)
}

func (b countingBlobs) Read(ctx context.Context, name string) ([]byte, error) {
	b.c.add("blobs.Read")
	return b.inner.Read(ctx, name)
}

func (b countingBlobs) Delete(ctx context.Context, name string) error {
	b.c.add("blobs.Delete")
	return b.inner.Delete(ctx, name)
}

func (b countingBlobs) List(ctx context.Context, prefix, cont string, limit int) (store.BlobPage, error) {
	b.c.add("blobs.List")
	return b.inner.List(ctx, prefix, cont, limit)
}

type countingMeta struct {
	inner store.Metadata
	c     *calls
}

var _ store.Metadata = countingMeta{}

func (m countingMeta) Get(ctx context.Context, partition, id string) (store.Item, error) {
	m.c.add("meta.Get")
	return m.inner.Get(ctx, partition, id)
}

func (m countingMeta) Create(ctx context.Context, it store.Item) (string, error) {
	m.c.add("meta.Create")
	return m.inner.Create(ctx, it)
}

func (m countingMeta) Replace(ctx context.Context, it store.Item, ifMatch string) (string, error) {
	m.c.add("meta.Replace")
	return m.inner.Replace(ctx, it, ifMatch)
}

func (m countingMeta) Delete(ctx context.Context, partition, id, ifMatch string) error {
	m.c.add("meta.Delete")
	return m.inner.Delete(ctx, partition, id, ifMatch)
}

func (m countingMeta) List(ctx context.Context, q store.Query) (store.Page, error) {
	m.c.add("meta.List")
	return m.inner.List(ctx, q)
}

// apiEnv is the API over a Vault on the embedded stores, every store call
// counted, and the dev verifier over a real dev key.
type apiEnv struct {
	calls *calls
	dev   *identity.DevKey
	key   *cmk.Local
	blobs store.Blobs
	meta  store.Metadata

	mu      sync.Mutex
	handler http.Handler
}

func newAPIEnv(tb testing.TB) *apiEnv {
	tb.Helper()
	dir := tb.TempDir()
	key, err := cmk.OpenLocal(dir, cmk.LocalOptions{Bits: 2048})
	if err != nil {
		tb.Fatal(err)
	}
	blobs, err := embedded.OpenBlobs(filepath.Join(dir, "blobs"))
	if err != nil {
		tb.Fatal(err)
	}
	meta, err := embedded.OpenMetadata(filepath.Join(dir, "metadata.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { meta.Close() })
	dev, err := identity.LoadOrCreateDevKey(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	e := &apiEnv{calls: &calls{}, dev: dev, key: key, blobs: blobs, meta: meta}
	e.restart()
	return e
}

// restart replaces the API, its Vault and key hierarchy with new ones, as a
// new instance starts: nothing cached, so no store call can hide behind a
// cache filled by an earlier request.
func (e *apiEnv) restart() {
	keys := keyring.New(e.key, countingMeta{e.meta, e.calls}, keyring.Options{})
	v := vault.New(keys, countingBlobs{e.blobs, e.calls}, countingMeta{e.meta, e.calls}, vault.Options{})
	h := httpapi.New(httpapi.Options{Vault: v, Auth: e.dev.Verifier(), Log: slog.New(slog.DiscardHandler)})
	e.mu.Lock()
	e.handler = h
	e.mu.Unlock()
	e.calls.reset()
}

func (e *apiEnv) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	h := e.handler
	e.mu.Unlock()
	h.ServeHTTP(w, r)
}

// token mints a dev token for alice with roles (none if none are given).
func (e *apiEnv) token(tb testing.TB, roles ...identity.Role) string {
	tb.Helper()
	tok, err := e.dev.Mint("alice", roles, time.Hour, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

var placeholderRE = regexp.MustCompile(`\{\{(token|repeat|spaces)((?: [^ }]+)*)\}\}`)

// expand replaces the placeholders of a request file: {{token ROLE…}} is a
// dev token with those roles, {{repeat S N}} is S N times, {{spaces N}} is N
// spaces.
func (e *apiEnv) expand(tb testing.TB, s string) string {
	tb.Helper()
	return placeholderRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := placeholderRE.FindStringSubmatch(m)
		args := strings.Fields(sub[2])
		switch sub[1] {
		case "token":
			roles := make([]identity.Role, len(args))
			for i, a := range args {
				r, err := identity.ParseRole(a)
				if err != nil {
					tb.Fatal(err)
				}
				roles[i] = r
			}
			return e.token(tb, roles...)
		case "repeat":
			if len(args) != 2 {
				tb.Fatalf("%s: want {{repeat S N}}", m)
			}
			return strings.Repeat(args[0], atoi(tb, args[1]))
		default:
			if len(args) != 1 {
				tb.Fatalf("%s: want {{spaces N}}", m)
			}
			return strings.Repeat(" ", atoi(tb, args[0]))
		}
	})
}

func atoi(tb testing.TB, s string) int {
	tb.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// requestCase is one bad request of testdata/requests: a header of
// "status: N", optional "allow: M, …" and "chunked: true" lines (and
// # comments), a "---" line, then the request: "METHOD TARGET", header
// lines, a blank line and the body (its last newline is not part of it).
type requestCase struct {
	name    string
	status  int
	allow   string
	chunked bool
	method  string
	target  string
	header  http.Header
	body    string
}

func readRequestCases(tb testing.TB) []requestCase {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "requests", "*.txt"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no request files: %v", err)
	}
	var out []requestCase
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		c, err := parseRequestCase(string(b))
		if err != nil {
			tb.Fatalf("%s: %v", f, err)
		}
		c.name = strings.TrimSuffix(filepath.Base(f), ".txt")
		out = append(out, c)
	}
	return out
}

func parseRequestCase(s string) (requestCase, error) {
	var c requestCase
	meta, req, ok := strings.Cut(s, "\n---\n")
	if !ok {
		return c, fmt.Errorf("no --- line")
	}
	for line := range strings.Lines(meta) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return c, fmt.Errorf("bad line %q", line)
		}
		v = strings.TrimSpace(v)
		switch k {
		case "status":
			n, err := strconv.Atoi(v)
			if err != nil {
				return c, fmt.Errorf("status %q", v)
			}
			c.status = n
		case "allow":
			c.allow = v
		case "chunked":
			c.chunked = v == "true"
		default:
			return c, fmt.Errorf("unknown key %q", k)
		}
	}
	if c.status == 0 {
		return c, fmt.Errorf("no status")
	}
	head, body, _ := strings.Cut(req, "\n\n")
	c.body = strings.TrimSuffix(body, "\n")
	lines := strings.Split(strings.TrimSuffix(head, "\n"), "\n")
	c.method, c.target, ok = strings.Cut(lines[0], " ")
	if !ok {
		return c, fmt.Errorf("bad request line %q", lines[0])
	}
	c.header = http.Header{}
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			return c, fmt.Errorf("bad header line %q", l)
		}
		c.header.Add(k, strings.TrimSpace(v))
	}
	return c, nil
}

// request builds the case's request, placeholders expanded.
func (e *apiEnv) request(tb testing.TB, c requestCase, base string) *http.Request {
	tb.Helper()
	body := []byte(e.expand(tb, c.body))
	var rd io.Reader = bytes.NewReader(body)
	if c.chunked {
		rd = io.MultiReader(rd) // of unknown length: no Content-Length
	}
	target := e.expand(tb, c.target)
	var r *http.Request
	if base == "" {
		r = httptest.NewRequest(c.method, target, rd)
	} else {
		var err error
		if r, err = http.NewRequest(c.method, base+target, rd); err != nil {
			tb.Fatal(err)
		}
	}
	if c.chunked {
		r.ContentLength = -1
		r.TransferEncoding = []string{"chunked"}
	}
	for k, vs := range c.header {
		for _, v := range vs {
			r.Header.Add(k, e.expand(tb, v))
		}
	}
	return r
}

// wantProblem checks an application/problem+json answer: the status, the
// body's status, title and correlation id (the one in the header).
func wantProblem(tb testing.TB, what string, status int, h http.Header, body []byte, want int) {
	tb.Helper()
	if status != want {
		tb.Errorf("%s: status %d, want %d (body %s)", what, status, want, truncate(body))
		return
	}
	checkProblem(tb, what, status, h, body)
}

// checkProblem checks that a non-2xx answer is a well-formed problem.
func checkProblem(tb testing.TB, what string, status int, h http.Header, body []byte) {
	tb.Helper()
	if ct := h.Get("Content-Type"); ct != "application/problem+json" {
		tb.Errorf("%s: Content-Type %q, want application/problem+json", what, ct)
	}
	var p struct {
		Type          string `json:"type"`
		Title         string `json:"title"`
		Status        int    `json:"status"`
		CorrelationID string `json:"correlationId"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		tb.Errorf("%s: problem body %s: %v", what, truncate(body), err)
		return
	}
	if p.Status != status || p.Title == "" || p.Type == "" || p.CorrelationID == "" || p.CorrelationID != h.Get("X-Correlation-Id") {
		tb.Errorf("%s: problem %s lacks status %d, a type, a title or the correlation id %q", what, truncate(body), status, h.Get("X-Correlation-Id"))
	}
	if cc := h.Get("Cache-Control"); cc != "no-store" {
		tb.Errorf("%s: Cache-Control %q, want no-store", what, cc)
	}
}

func truncate(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

// checkCase checks one answer to a bad request, and that the stores were
// not called.
func checkCase(t *testing.T, e *apiEnv, c requestCase, status int, h http.Header, body []byte) {
	t.Helper()
	wantProblem(t, c.method+" "+c.target, status, h, body, c.status)
	if c.allow != "" {
		got := strings.Split(h.Get("Allow"), ", ")
		want := strings.Split(c.allow, ", ")
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("Allow %q, want %q", h.Get("Allow"), c.allow)
		}
	}
	if status == http.StatusUnauthorized && h.Get("WWW-Authenticate") == "" {
		t.Errorf("401 without WWW-Authenticate")
	}
	if s := e.calls.String(); s != "" {
		t.Errorf("the stores were called: %s", s)
	}
}

// TestLimitsBeforeAnyBackend walks testdata/requests: each bad request is
// answered with its status as problem+json, with no store call at all.
func TestLimitsBeforeAnyBackend(t *testing.T) {
	e := newAPIEnv(t)
	for _, c := range readRequestCases(t) {
		t.Run(c.name, func(t *testing.T) {
			e.restart()
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, e.request(t, c, ""))
			checkCase(t, e, c, rec.Code, rec.Header(), rec.Body.Bytes())
		})
	}
}

// TestLimitsOverTheWire sends the same requests through a real HTTP server
// and client, where Content-Length and chunked bodies are real.
func TestLimitsOverTheWire(t *testing.T) {
	e := newAPIEnv(t)
	var got struct {
		sync.Mutex
		length int64
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Lock()
		got.length = r.ContentLength
		got.Unlock()
		e.ServeHTTP(w, r)
	}))
	defer srv.Close()
	for _, c := range readRequestCases(t) {
		t.Run(c.name, func(t *testing.T) {
			e.restart()
			req := e.request(t, c, srv.URL)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			got.Lock()
			length := got.length
			got.Unlock()
			if c.chunked != (length == -1) {
				t.Errorf("the server saw Content-Length %d; chunked: %v", length, c.chunked)
			}
			checkCase(t, e, c, resp.StatusCode, resp.Header, body)
		})
	}
}

// TestGoodRequestsReachTheStores guards the test above: the same API, asked
// properly, does call the stores (so zero calls means refused early).
func TestGoodRequestsReachTheStores(t *testing.T) {
	e := newAPIEnv(t)
	tok := e.token(t, identity.CredentialsWrite, identity.CredentialsRead)
	req := httptest.NewRequest("PUT", "/api/credentials/x", strings.NewReader(`{"value":{"k":"v"},"tags":{"a":"b"}}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	if rec.Code != http.StatusCreated {
		t.Fatalf("PUT: %d %s", rec.Code, rec.Body)
	}
	if e.calls.String() == "" {
		t.Fatal("a good PUT made no store call: the counting wrappers are not in the path")
	}
	e.restart()
	req = httptest.NewRequest("GET", "/api/credentials/x?version=1", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	rec = httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"value":{"k":"v"}`) {
		t.Fatalf("GET: %d %s", rec.Code, rec.Body)
	}
	if e.calls.String() == "" {
		t.Fatal("a good GET on a new instance made no store call")
	}
}

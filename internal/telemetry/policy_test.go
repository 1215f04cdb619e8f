package telemetry_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"github.com/credvault/credvault/internal/telemetry"
)

// recorder is a Sink that keeps what it is given.
type recorder struct {
	mu    sync.Mutex
	items []telemetry.Item
}

func (r *recorder) Track(it telemetry.Item) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.items = append(r.items, it)
}

func (r *recorder) dependencies() []*telemetry.Dependency {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*telemetry.Dependency
	for _, it := range r.items {
		if d, ok := it.(*telemetry.Dependency); ok {
			out = append(out, d)
		}
	}
	return out
}

// transport answers each request with the next status of its script (the
// last one repeats); a status of 0 is a transport error.
type transport struct {
	mu     sync.Mutex
	script []int
}

func (f *transport) Do(req *http.Request) (*http.Response, error) {
	f.mu.Lock()
	status := f.script[0]
	if len(f.script) > 1 {
		f.script = f.script[1:]
	}
	f.mu.Unlock()
	if status == 0 {
		return nil, errors.New("dial tcp " + req.URL.Host + req.URL.Path + ": connection refused")
	}
	return &http.Response{StatusCode: status, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("{}")), Request: req}, nil
}

func pipeline(p *telemetry.DependencyPolicy, statuses ...int) runtime.Pipeline {
	return runtime.NewPipeline("credvault-test", "v0", runtime.PipelineOptions{}, &policy.ClientOptions{
		Transport:        &transport{script: statuses},
		PerRetryPolicies: []policy.Policy{p},
		Retry:            policy.RetryOptions{MaxRetries: 2, RetryDelay: time.Millisecond, MaxRetryDelay: time.Millisecond},
	})
}

var requestSpan = telemetry.Span{TraceID: strings.Repeat("4b", 16), SpanID: strings.Repeat("a1", 8), ParentID: strings.Repeat("c2", 8)}

func send(t *testing.T, pl runtime.Pipeline, ctx context.Context, method, rawURL string) {
	t.Helper()
	req, err := runtime.NewRequest(ctx, method, rawURL)
	if err != nil {
		t.Fatalf("NewRequest(%s %s): %v", method, rawURL, err)
	}
	resp, err := pl.Do(req)
	if err == nil {
		resp.Body.Close()
	}
}

func TestDependencyPolicyNames(t *testing.T) {
	const kv = "https://credvault-kv.vault.azure.net"
	const blob = "https://credvaultst.blob.core.windows.net"
	const azurite = "http://127.0.0.1:10000/devstoreaccount1"
	const cosmos = "https://credvault-db.documents.azure.com:443"
	tests := []struct {
		kind, method, url string
		name, target      string
	}{
		{telemetry.KindKeyVault, "POST", kv + "/keys/cmk-secret/0123456789abcdef0123456789abcdef/unwrapkey?api-version=7.6", "POST /keys/{name}/{version}/unwrapkey", "credvault-kv.vault.azure.net"},
		{telemetry.KindKeyVault, "POST", kv + "/keys/cmk-secret/0123456789abcdef0123456789abcdef/wrapkey?api-version=7.6", "POST /keys/{name}/{version}/wrapkey", ""},
		{telemetry.KindKeyVault, "GET", kv + "/keys/cmk-secret/?api-version=7.6", "GET /keys/{name}", ""},
		{telemetry.KindKeyVault, "GET", kv + "/keys/cmk-secret/0123456789abcdef0123456789abcdef", "GET /keys/{name}/{version}", ""},
		{telemetry.KindKeyVault, "GET", kv + "/keys/cmk-secret/versions?maxresults=25", "GET /keys/{name}/versions", ""},
		{telemetry.KindKeyVault, "POST", kv + "/keys/rotate/rotate", "POST /keys/{name}/rotate", ""},
		{telemetry.KindKeyVault, "POST", kv + "/keys/restore", "POST /keys/restore", ""},
		{telemetry.KindKeyVault, "GET", kv + "/secret-store/cmk-secret", "GET /{collection}/{name}", ""},
		{telemetry.KindBlob, "PUT", blob + "/audit/segments/000017.log?comp=appendblock", "PUT /{container}/{blob}?comp=appendblock", "credvaultst.blob.core.windows.net"},
		{telemetry.KindBlob, "PUT", blob + "/ciphertext/owner-7a1c/github-token/3?comp=block&blockid=QUJD", "PUT /{container}/{blob}?comp=block", ""},
		{telemetry.KindBlob, "GET", blob + "/ciphertext/owner-7a1c/github-token/3?versionid=2026-01-01", "GET /{container}/{blob}", ""},
		{telemetry.KindBlob, "GET", blob + "/ciphertext?restype=container&comp=list&prefix=owner-7a1c", "GET /{container}?restype=container&comp=list", ""},
		{telemetry.KindBlob, "GET", blob + "/?comp=list", "GET /?comp=list", ""},
		{telemetry.KindBlob, "PUT", blob + "/ciphertext/x?comp=github-token", "PUT /{container}/{blob}?comp={value}", ""},
		{telemetry.KindBlob, "PUT", azurite + "/ciphertext/owner-7a1c/github-token/3", "PUT /{container}/{blob}", "127.0.0.1:10000"},
		{telemetry.KindBlob, "PUT", azurite + "/audit?restype=container", "PUT /{container}?restype=container", ""},
		{telemetry.KindBlob, "HEAD", "http://localhost:10000/devstoreaccount1/audit/seg-1", "HEAD /{container}/{blob}", "localhost:10000"},
		{telemetry.KindCosmos, "GET", cosmos + "/dbs/credvault/colls/metadata/docs/owner-7a1c%7Cgithub-token", "GET /dbs/{db}/colls/{coll}/docs/{id}", "credvault-db.documents.azure.com:443"},
		{telemetry.KindCosmos, "POST", cosmos + "/dbs/credvault/colls/metadata/docs", "POST /dbs/{db}/colls/{coll}/docs", ""},
		{telemetry.KindCosmos, "GET", cosmos + "/dbs/credvault/colls/metadata/pkranges", "GET /dbs/{db}/colls/{coll}/pkranges", ""},
		{telemetry.KindCosmos, "GET", cosmos + "/dbs/credvault", "GET /dbs/{db}", ""},
		{telemetry.KindCosmos, "GET", cosmos + "/", "GET /", ""},
		{telemetry.KindCosmos, "GET", cosmos + "/dbs/credvault/secretstuff/owner-7a1c", "GET /dbs/{db}/{type}/{id}", ""},
		{"HTTP", "GET", "https://example.com/owner-7a1c/github-token", "GET /{segment}/{segment}", ""},
	}
	leaks := []string{"cmk-secret", "0123456789abcdef", "owner-7a1c", "github-token", "devstoreaccount1", "audit", "ciphertext",
		"credvault/", "metadata", "api-version", "blockid", "QUJD", "versionid", "prefix", "rotate/", "secret-store", "secretstuff", "maxresults"}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.url, func(t *testing.T) {
			rec := &recorder{}
			p := telemetry.NewDependencyPolicy(rec, tt.kind)
			send(t, pipeline(p, 200), telemetry.WithSpan(context.Background(), requestSpan), tt.method, tt.url)
			deps := rec.dependencies()
			if len(deps) != 1 {
				t.Fatalf("tracked %d dependencies, want 1", len(deps))
			}
			d := deps[0]
			if d.Name != tt.name {
				t.Errorf("Name = %q, want %q", d.Name, tt.name)
			}
			for _, l := range leaks {
				if strings.Contains(d.Name, l) {
					t.Errorf("Name %q holds %q from the URL", d.Name, l)
				}
			}
			if tt.target != "" && d.Target != tt.target {
				t.Errorf("Target = %q, want %q", d.Target, tt.target)
			}
			if d.Type != tt.kind || d.Code != "200" || !d.Success {
				t.Errorf("Type, Code, Success = %q, %q, %v; want %q, \"200\", true", d.Type, d.Code, d.Success, tt.kind)
			}
			if got, want := p.Counts()[tt.name], int64(1); got != want {
				t.Errorf("Counts()[%q] = %d, want %d", tt.name, got, want)
			}
		})
	}
}

func TestDependencyPolicySpan(t *testing.T) {
	rec := &recorder{}
	p := telemetry.NewDependencyPolicy(rec, telemetry.KindKeyVault)
	pl := pipeline(p, 200)
	url := "https://kv.vault.azure.net/keys/cmk/0123/wrapkey"

	send(t, pl, telemetry.WithSpan(context.Background(), requestSpan), "POST", url)
	send(t, pl, telemetry.WithSpan(context.Background(), requestSpan), "POST", url)
	send(t, pl, context.Background(), "POST", url)
	deps := rec.dependencies()
	if len(deps) != 3 {
		t.Fatalf("tracked %d dependencies, want 3", len(deps))
	}
	for i, d := range deps[:2] {
		if d.Span.TraceID != requestSpan.TraceID || d.Span.ParentID != requestSpan.SpanID {
			t.Errorf("call %d: trace, parent = %s, %s; want the request's trace %s and span %s",
				i, d.Span.TraceID, d.Span.ParentID, requestSpan.TraceID, requestSpan.SpanID)
		}
		if !isHex(d.Span.SpanID, 16) || d.Span.SpanID == requestSpan.SpanID {
			t.Errorf("call %d: span id %q, want 16 fresh hex digits", i, d.Span.SpanID)
		}
		if d.Start.IsZero() || d.Duration < 0 {
			t.Errorf("call %d: start %v, duration %v", i, d.Start, d.Duration)
		}
	}
	if deps[0].Span.SpanID == deps[1].Span.SpanID {
		t.Errorf("two calls share span id %s", deps[0].Span.SpanID)
	}
	if root := deps[2].Span; !isHex(root.TraceID, 32) || root.TraceID == requestSpan.TraceID || root.ParentID != "" {
		t.Errorf("call without a request span: %+v, want a fresh trace and no parent", root)
	}
}

func TestDependencyPolicyRetriesAndOutcomes(t *testing.T) {
	rec := &recorder{}
	p := telemetry.NewDependencyPolicy(rec, telemetry.KindCosmos)
	ctx := telemetry.WithSpan(context.Background(), requestSpan)
	url := "https://db.documents.azure.com/dbs/d/colls/c/docs/owner-7a1c"

	// 503, then a transport error, then 412: three tries of one call.
	send(t, pipeline(p, 503, 0, 412), ctx, "PUT", url)
	send(t, pipeline(p, 404), ctx, "GET", url)

	deps := rec.dependencies()
	type outcome struct {
		code     string
		success  bool
		expected string
		failure  string
	}
	want := []outcome{{"503", false, "", ""}, {"", false, "", "transport"}, {"412", false, "true", ""}, {"404", false, "true", ""}}
	if len(deps) != len(want) {
		t.Fatalf("tracked %d dependencies, want %d (one per try)", len(deps), len(want))
	}
	for i, d := range deps {
		got := outcome{d.Code, d.Success, d.Properties["expected"], d.Properties["error"]}
		if got != want[i] {
			t.Errorf("try %d: %+v, want %+v", i, got, want[i])
		}
		for k, v := range d.Properties {
			if strings.Contains(v, "owner-7a1c") || strings.Contains(v, "documents.azure.com") {
				t.Errorf("try %d: property %s = %q quotes the URL", i, k, v)
			}
		}
	}
	counts := p.Counts()
	if got := counts["PUT /dbs/{db}/colls/{coll}/docs/{id}"]; got != 3 {
		t.Errorf("PUT count = %d, want 3", got)
	}
	if got := counts["GET /dbs/{db}/colls/{coll}/docs/{id}"]; got != 1 {
		t.Errorf("GET count = %d, want 1", got)
	}
	counts["GET /dbs/{db}/colls/{coll}/docs/{id}"] = 100
	if got := p.Counts()["GET /dbs/{db}/colls/{coll}/docs/{id}"]; got != 1 {
		t.Errorf("Counts() shares its map: count became %d", got)
	}
}

func TestDependencyPolicyConcurrentCounts(t *testing.T) {
	p := telemetry.NewDependencyPolicy(telemetry.Discard, telemetry.KindKeyVault)
	pl := pipeline(p, 200)
	const workers, each = 8, 50
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				send(t, pl, context.Background(), "POST", "https://kv.vault.azure.net/keys/k/v/unwrapkey")
				_ = p.Counts()
			}
		})
	}
	wg.Wait()
	if got, want := p.Counts()["POST /keys/{name}/{version}/unwrapkey"], int64(workers*each); got != want {
		t.Errorf("count = %d, want %d", got, want)
	}
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}

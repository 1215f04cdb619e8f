package appinsights_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/credvault/credvault/internal/telemetry"
	"github.com/credvault/credvault/internal/telemetry/appinsights"
	"github.com/credvault/credvault/internal/telemetry/appinsights/aitest"
)

// wait is how long a test waits for something that should take
// milliseconds: generous, for a loaded machine.
const wait = 30 * time.Second

var span = telemetry.Span{TraceID: strings.Repeat("0af7651916cd43dd", 2), SpanID: "b7ad6b7169203331", ParentID: "00f067aa0ba902b7"}

// logBuffer is a concurrency-safe log destination that outlives the test
// (the SDK may still post, and log, after a test ends).
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// credential counts its calls and returns "token-<n>", valid for ttl.
type credential struct {
	ttl    time.Duration
	mu     sync.Mutex
	calls  int
	scopes []string
}

func (c *credential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	c.scopes = append(c.scopes, o.Scopes...)
	return azcore.AccessToken{Token: fmt.Sprintf("token-%d", c.calls), ExpiresOn: time.Now().Add(c.ttl)}, nil
}

func (c *credential) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

// open starts a sink posting to srv; its cleanup closes it.
func open(t *testing.T, srv *aitest.Server, opt appinsights.Options) (*appinsights.Sink, *logBuffer) {
	t.Helper()
	cs, err := appinsights.ParseConnectionString(srv.ConnectionString())
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	opt.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if opt.MaxBatchInterval == 0 {
		opt.MaxBatchInterval = 10 * time.Millisecond
	}
	sink, err := appinsights.New(cs, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := sink.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return sink, logs
}

func count(n int) func([]aitest.Item) bool {
	return func(items []aitest.Item) bool { return len(items) >= n }
}

func byType(items []aitest.Item) map[string]aitest.Item {
	m := map[string]aitest.Item{}
	for _, it := range items {
		m[it.BaseType] = it
	}
	return m
}

func TestSinkSendsEachKind(t *testing.T) {
	srv := aitest.New(t)
	sink, _ := open(t, srv, appinsights.Options{RoleName: "credvault-func", RoleInstance: "instance-7"})
	depSpan := telemetry.Span{TraceID: span.TraceID, SpanID: "1111222233334444", ParentID: span.SpanID}
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

	props := map[string]string{"correlation_id": "c-1"}
	sink.Track(&telemetry.Request{Span: span, Name: "GET /api/credentials/{name}", URL: "/api/credentials/{name}",
		Start: start, Duration: 1500 * time.Millisecond, Code: "404", Success: true, Properties: props})
	props["correlation_id"] = "changed after Track" // Track copied the map
	sink.Track(&telemetry.Dependency{Span: depSpan, Type: telemetry.KindKeyVault, Target: "kv.vault.azure.net",
		Name: "POST /keys/{name}/{version}/unwrapkey", Start: start, Duration: 20 * time.Millisecond, Code: "200", Success: true,
		Properties: map[string]string{"expected": "true"}})
	sink.Track(&telemetry.Exception{Span: span, Type: "unavailable", Message: "backend unavailable",
		Properties: map[string]string{"correlation_id": "c-1"}})
	sink.Track(&telemetry.Event{Span: span, Name: "audit", Properties: map[string]string{"operation": "get", "outcome": "ok"}})
	sink.Track(&telemetry.Metric{Name: "credvault.keyvault.calls", Value: 3, Properties: map[string]string{"operation": "unwrap"}})
	sink.Track(nil)
	sink.Track((*telemetry.Event)(nil))

	items := byType(srv.WaitFor(t, count(5), wait))
	checks := []struct {
		baseType, name, opID, parentID string
		fields, props                  map[string]string
	}{
		{"RequestData", "Microsoft.ApplicationInsights.Request", span.TraceID, span.ParentID,
			map[string]string{"name": "GET /api/credentials/{name}", "url": "/api/credentials/{name}", "id": span.SpanID,
				"responseCode": "404", "duration": "0.00:00:01.5000000"},
			map[string]string{"correlation_id": "c-1"}},
		{"RemoteDependencyData", "Microsoft.ApplicationInsights.RemoteDependency", span.TraceID, span.SpanID,
			map[string]string{"name": "POST /keys/{name}/{version}/unwrapkey", "id": depSpan.SpanID, "type": "Azure Key Vault",
				"target": "kv.vault.azure.net", "resultCode": "200", "duration": "0.00:00:00.0200000"},
			map[string]string{"expected": "true"}},
		{"ExceptionData", "Microsoft.ApplicationInsights.Exception", span.TraceID, span.SpanID, nil,
			map[string]string{"correlation_id": "c-1"}},
		{"EventData", "Microsoft.ApplicationInsights.Event", span.TraceID, span.SpanID,
			map[string]string{"name": "audit"}, map[string]string{"operation": "get", "outcome": "ok"}},
		{"MetricData", "Microsoft.ApplicationInsights.Metric", "", "", nil, map[string]string{"operation": "unwrap"}},
	}
	for _, c := range checks {
		it, ok := items[c.baseType]
		if !ok {
			t.Errorf("no %s received", c.baseType)
			continue
		}
		if it.Name != c.name || it.IKey != aitest.InstrumentationKey {
			t.Errorf("%s: envelope %q with key %q, want %q with the connection string's key", c.baseType, it.Name, it.IKey, c.name)
		}
		if c.opID != "" && it.OperationID != c.opID {
			t.Errorf("%s: operation_Id = %q, want the trace id %q", c.baseType, it.OperationID, c.opID)
		}
		if it.ParentID != c.parentID {
			t.Errorf("%s: operation_ParentId = %q, want %q", c.baseType, it.ParentID, c.parentID)
		}
		for k, want := range c.fields {
			if got := it.Field(k); got != want {
				t.Errorf("%s: %s = %q, want %q", c.baseType, k, got, want)
			}
		}
		for k, want := range c.props {
			if got := it.Property(k); got != want {
				t.Errorf("%s: property %s = %q, want %q", c.baseType, k, got, want)
			}
		}
		if role, inst := it.Tags["ai.cloud.role"], it.Tags["ai.cloud.roleInstance"]; role != "credvault-func" || inst != "instance-7" {
			t.Errorf("%s: cloud role %q, instance %q; want credvault-func, instance-7", c.baseType, role, inst)
		}
	}
	if req := items["RequestData"]; req.Data["success"] != true || req.Tags["ai.operation.name"] != "GET /api/credentials/{name}" {
		t.Errorf("request: success %v, operation name %q", req.Data["success"], req.Tags["ai.operation.name"])
	}
	if req := items["RequestData"]; !strings.Contains(string(req.Raw), `"time":"2026-03-01T12:00:00Z"`) {
		t.Errorf("request: time is not its start: %s", req.Raw)
	}
	exc := items["ExceptionData"].Data["exceptions"]
	if s := fmt.Sprint(exc); !strings.Contains(s, "typeName:unavailable") || !strings.Contains(s, "message:backend unavailable") ||
		strings.Contains(s, "parsedStack:[{") {
		t.Errorf("exception details %s, want type unavailable, the message and no stack", s)
	}
	if m := fmt.Sprint(items["MetricData"].Data["metrics"]); !strings.Contains(m, "name:credvault.keyvault.calls") || !strings.Contains(m, "value:3") {
		t.Errorf("metric data points %s", m)
	}
	for _, p := range srv.Posts() {
		if p.Path != "/v2/track" || p.Authorization != "" {
			t.Errorf("without a credential: post to %s with Authorization %q, want /v2/track and none", p.Path, p.Authorization)
		}
	}
}

func TestSinkEntraAuthentication(t *testing.T) {
	srv := aitest.New(t)
	cred := &credential{ttl: time.Hour}
	sink, logs := open(t, srv, appinsights.Options{Credential: cred})
	for i := range 3 {
		sink.Track(&telemetry.Event{Span: span, Name: fmt.Sprint("event-", i)})
		srv.WaitFor(t, count(i+1), wait) // one post per event
	}
	posts := srv.Posts()
	if len(posts) < 3 {
		t.Fatalf("%d posts, want at least 3", len(posts))
	}
	for _, p := range posts {
		if p.Path != "/v2.1/track" || p.Authorization != "Bearer token-1" {
			t.Errorf("post to %s with Authorization %q, want /v2.1/track with Bearer token-1", p.Path, p.Authorization)
		}
	}
	if n := cred.count(); n != 1 {
		t.Errorf("credential called %d times for a token valid an hour, want 1", n)
	}
	if cred.scopes[0] != appinsights.IngestionScope {
		t.Errorf("token scope %q, want %q", cred.scopes[0], appinsights.IngestionScope)
	}
	if strings.Contains(logs.String(), "token-1") {
		t.Errorf("the token is in the logs: %s", logs)
	}
}

func TestSinkRenewsTokenNearExpiry(t *testing.T) {
	srv := aitest.New(t)
	cred := &credential{ttl: 2 * time.Minute} // inside the renewal margin: every post renews
	sink, _ := open(t, srv, appinsights.Options{Credential: cred})
	for i := range 3 {
		sink.Track(&telemetry.Event{Span: span, Name: fmt.Sprint("event-", i)})
		srv.WaitFor(t, count(i+1), wait)
	}
	for i, p := range srv.Posts() {
		if want := fmt.Sprintf("Bearer token-%d", i+1); p.Authorization != want {
			t.Errorf("post %d: Authorization %q, want %q", i, p.Authorization, want)
		}
	}
}

func TestSinkCloseFlushes(t *testing.T) {
	srv := aitest.New(t)
	sink, _ := open(t, srv, appinsights.Options{MaxBatchInterval: time.Hour})
	for i := range 10 {
		sink.Track(&telemetry.Event{Span: span, Name: fmt.Sprint("event-", i)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := sink.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := len(srv.Items()); n != 10 {
		t.Errorf("after Close, %d items received, want 10", n)
	}
	sink.Track(&telemetry.Event{Name: "after close"}) // dropped, no panic
	if err := sink.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestSinkCloseGivesUpOnHungEndpoint(t *testing.T) {
	entered := make(chan struct{}, 1)
	aborted := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // a server notices a client leave only once the body is read
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case <-r.Context().Done():
			select {
			case aborted <- struct{}{}:
			default:
			}
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })

	cs, err := appinsights.ParseConnectionString("InstrumentationKey=" + aitest.InstrumentationKey + ";IngestionEndpoint=" + srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	sink, err := appinsights.New(cs, appinsights.Options{MaxBatchInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sink.Track(&telemetry.Event{Span: span, Name: "stuck"})
	select {
	case <-entered:
	case <-time.After(wait):
		t.Fatal("the batch never reached the endpoint")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- sink.Close(ctx) }()
	select {
	case err := <-closed:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Close = %v, want an error wrapping context.DeadlineExceeded", err)
		}
	case <-time.After(wait):
		t.Fatal("Close did not return after its context ended")
	}
	select {
	case <-aborted:
	case <-time.After(wait):
		t.Error("the post in flight was not aborted when Close gave up")
	}
}

func TestSinkTrackConcurrentWithClose(t *testing.T) {
	srv := aitest.New(t)
	sink, _ := open(t, srv, appinsights.Options{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 200 {
				props := map[string]string{"n": fmt.Sprint(i)}
				sink.Track(&telemetry.Event{Span: span, Name: fmt.Sprint("worker-", w), Properties: props})
				props["n"] = "reused" // the caller may reuse its map
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := sink.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	wg.Wait()
	for _, it := range srv.Items() {
		if it.Property("n") == "reused" {
			t.Fatalf("an item carries a property changed after Track")
		}
	}
}

func TestNewRefusesBadConnectionString(t *testing.T) {
	for _, cs := range []appinsights.ConnectionString{
		{},
		{InstrumentationKey: "not-a-guid"},
		{InstrumentationKey: aitest.InstrumentationKey, IngestionEndpoint: "http://ingest.example.com/"},
	} {
		if _, err := appinsights.New(cs, appinsights.Options{}); !errors.Is(err, appinsights.ErrConnectionString) {
			t.Errorf("New(%v) = %v, want an ErrConnectionString", cs, err)
		}
	}
}

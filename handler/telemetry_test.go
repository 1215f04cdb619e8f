package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/credvault/credvault/internal/identity"
	"github.com/credvault/credvault/internal/telemetry"
	"github.com/credvault/credvault/internal/telemetry/appinsights/aitest"
)

// TestTelemetryEndToEnd drives credvault with a traceparent and checks what
// the real Application Insights client posted to a stand-in ingestion
// endpoint: request, dependency (azure mode), exception and audit items, all
// in the caller's trace, named by templates, never by a secret's name.
func TestTelemetryEndToEnd(t *testing.T) {
	e := start(t)
	const trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	tp := "00-" + trace + "-" + parent + "-01"
	alice := e.token("alice")
	const name = "quarterly-report-token"
	wantStatus(t, "put", e.do("PUT", "/api/credentials/"+name, alice, map[string]any{"value": "x"}, "traceparent", tp), 201)
	wantStatus(t, "get", e.do("GET", "/api/credentials/"+name, alice, nil, "traceparent", tp, "X-Azure-Functions-InvocationId", "0b6d1c0e-1a2b-4c3d-9e8f-000000000001"), 200)
	e.setCMKEnabled(false)
	e.restart() // a cold instance: the revoked CMK answers at once
	wantProblem(t, "get with the CMK revoked", e.do("GET", "/api/credentials/"+name, alice, nil, "traceparent", tp), 503)
	e.close() // flushes the channel

	items := e.ingest.Items()
	count := map[string]int{}
	for _, it := range items {
		if strings.Contains(string(it.Raw), name) {
			t.Errorf("a %s item names the secret: %s", it.BaseType, it.Raw)
		}
		if it.OperationID != trace {
			continue
		}
		count[it.BaseType]++
		switch it.BaseType {
		case "RequestData":
			if n := it.Field("name"); n != "PUT /api/credentials/{name}" && n != "GET /api/credentials/{name}" {
				t.Errorf("request item named %q, want a route template", n)
			}
			if it.ParentID != parent {
				t.Errorf("request item's parent = %q, want the caller's span %s", it.ParentID, parent)
			}
		case "EventData":
			if it.Field("name") == "audit" && it.Property("op") == "" {
				t.Errorf("audit event without its operation: %s", it.Raw)
			}
		case "RemoteDependencyData":
			if typ := it.Field("type"); typ != "Azure Key Vault" && typ != "Azure blob" && typ != "Azure DocumentDB" {
				t.Errorf("dependency of type %q", typ)
			}
		}
	}
	want := map[string]int{"RequestData": 3, "EventData": 3, "ExceptionData": 1}
	if azureMode() {
		want["RemoteDependencyData"] = 3 // at least: Key Vault, Blob and Cosmos calls
	}
	for typ, n := range want {
		if count[typ] < n {
			t.Errorf("%d %s items in the trace, want at least %d (all: %v)", count[typ], typ, n, count)
		}
	}
	invocation := false
	for _, it := range items {
		if it.BaseType == "RequestData" && it.Property("invocation_id") == "0b6d1c0e-1a2b-4c3d-9e8f-000000000001" {
			invocation = true
		}
	}
	if !invocation {
		t.Error("no request item carries the host's invocation id")
	}
}

// staticCredential is a managed identity stand-in with a fixed token.
type staticCredential struct{ token string }

func (c staticCredential) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: c.token, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// TestTelemetryEntraAuthentication: with the authentication setting every
// post carries the identity's bearer token to v2.1/track; without it none
// carries one and posts go to v2/track.
func TestTelemetryEntraAuthentication(t *testing.T) {
	for _, aad := range []bool{true, false} {
		t.Run(map[bool]string{true: "aad", false: "key-only"}[aad], func(t *testing.T) {
			ingest := aitest.New(t)
			const tok = "monitor-token-for-the-test"
			e := startPrepared(t, azureMode(), func(e *testEnv) {
				e.deps.telemetryCred = staticCredential{tok}
				if aad {
					e.env["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] = "Authorization=AAD"
				}
			}, "APPLICATIONINSIGHTS_CONNECTION_STRING", ingest.ConnectionString())
			e.canaries.add("the monitor token", tok)
			wantStatus(t, "health", e.do("GET", "/api/health", "", nil), 200)
			e.close()
			posts := ingest.Posts()
			if len(posts) == 0 {
				t.Fatal("nothing was posted")
			}
			for _, p := range posts {
				if aad && (p.Path != "/v2.1/track" || p.Authorization != "Bearer "+tok) {
					t.Fatalf("post to %s with Authorization %q, want v2.1/track with the identity's token", p.Path, p.Authorization)
				}
				if !aad && (p.Path != "/v2/track" || p.Authorization != "") {
					t.Fatalf("key-only post to %s with Authorization %q", p.Path, p.Authorization)
				}
			}
		})
	}
}

// TestMalformedConnectionStringIsOneLine: a bad connection string is
// reported with one line that does not repeat it, and the service runs on
// without Application Insights.
func TestMalformedConnectionStringIsOneLine(t *testing.T) {
	const bad = "InstrumentationKey=not-a-guid-but-secretish;IngestionEndpoint=ftp://x"
	e := start(t, "APPLICATIONINSIGHTS_CONNECTION_STRING", bad)
	wantStatus(t, "health", e.do("GET", "/api/health", "", nil), 200)
	logs := e.logs.String()
	if n := strings.Count(logs, "APPLICATIONINSIGHTS_CONNECTION_STRING"); n != 1 {
		t.Fatalf("%d log lines name the setting, want 1:\n%s", n, logs)
	}
	if strings.Contains(logs, "not-a-guid-but-secretish") {
		t.Fatal("the log repeats the connection string")
	}
}

// recordingSink keeps what it is sent.
type recordingSink struct {
	mu    sync.Mutex
	items []telemetry.Item
}

func (s *recordingSink) Track(it telemetry.Item) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items = append(s.items, it)
}

func (s *recordingSink) metrics() map[string]float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]float64{}
	for _, it := range s.items {
		if m, ok := it.(*telemetry.Metric); ok {
			out[m.Name] += m.Value
		}
	}
	return out
}

// TestMetrics: the periodic report sends the key cache's hit ratio, the
// rotation backlog and (on Key Vault) the calls by operation.
func TestMetrics(t *testing.T) {
	e := start(t)
	alice := e.token("alice")
	wantStatus(t, "put", e.do("PUT", "/api/credentials/m", alice, map[string]any{"value": "x"}), 201)
	for range 5 {
		wantStatus(t, "get", e.do("GET", "/api/credentials/m", alice, nil), 200)
	}
	rotator := e.token("ops", identity.KeysRotate)
	wantStatus(t, "rotate", e.do("POST", "/api/admin/rotate", rotator, nil), 200)

	sink := &recordingSink{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { reportMetrics(ctx, sink, 10*time.Millisecond, e.app.meters); close(done) }()
	want := []string{"credvault.key_cache.hit_ratio", "credvault.rotation.backlog"}
	if azureMode() {
		want = append(want, "credvault.keyvault.calls")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := sink.metrics()
		missing := 0
		for _, name := range want {
			if _, ok := got[name]; !ok {
				missing++
			}
		}
		if missing == 0 {
			if r := got["credvault.key_cache.hit_ratio"]; r <= 0 || r > 1 {
				t.Errorf("hit ratio %v, want in (0, 1] after repeated gets", r)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics sent: %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}

package functions_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/credvault/credvault/internal/httpapi"
)

// forward sends a request to the handler as the Functions host forwards an
// HTTP function's request when enableForwardingHttpRequest is on
// (DefaultHttpWorkerService.ProcessHttpInAndOutInvocationRequest and
// HttpRequestExtensions.ToHttpRequestMessage in Azure/azure-functions-host):
// the original path, prefix included, and query; every original header, Host
// too; plus X-Azure-Functions-HostVersion, X-Azure-Functions-InvocationId and
// the host's User-Agent; no redirects followed.
func forward(t *testing.T, srv *httptest.Server, method, pathAndQuery string, original http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+pathAndQuery, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = original.Clone()
	req.Host = "credvault.azurewebsites.net"
	req.Header.Set("X-Azure-Functions-HostVersion", "4.1036.1.1")
	req.Header.Set("X-Azure-Functions-InvocationId", "6d7ad5e3-3a3b-4b5e-9d3e-2f1c0a9b8c7d")
	req.Header.Add("User-Agent", "Azure-Functions-Host/4.1036.1.1")
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestForwardedRequests(t *testing.T) {
	srv := httptest.NewServer(httpapi.New(httpapi.Options{Log: slog.New(slog.DiscardHandler)}))
	defer srv.Close()

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	original := http.Header{
		"Accept":          {"application/json"},
		"Traceparent":     {"00-" + traceID + "-00f067aa0ba902b7-01"},
		"X-Forwarded-For": {"203.0.113.7:51234"},
	}
	for _, tc := range []struct {
		name, path  string
		wantStatus  int
		wantType    string
		wantBodyHas string
	}{
		{"health", "/api/health?probe=1", http.StatusOK, "application/json", `"status":"ok"`},
		{"unknown route", "/api/nope?x=1", http.StatusNotFound, "application/problem+json", `"status":404`},
		{"path without the prefix", "/health", http.StatusNotFound, "application/problem+json", `"status":404`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := forward(t, srv, http.MethodGet, tc.path, original)
			if got := resp.StatusCode; got != tc.wantStatus {
				t.Errorf("GET %s: status = %d, want %d", tc.path, got, tc.wantStatus)
			}
			if got := resp.Header.Get("Content-Type"); got != tc.wantType {
				t.Errorf("GET %s: Content-Type = %q, want %q", tc.path, got, tc.wantType)
			}
			tp := strings.Split(resp.Header.Get("traceparent"), "-")
			if len(tp) != 4 || tp[1] != traceID || tp[3] != "01" {
				t.Errorf("GET %s: traceparent = %q, want the caller's trace id %s and flags 01", tc.path, resp.Header.Get("traceparent"), traceID)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(body) || !strings.Contains(string(body), tc.wantBodyHas) {
				t.Errorf("GET %s: body = %s, want JSON containing %s", tc.path, body, tc.wantBodyHas)
			}
		})
	}
}

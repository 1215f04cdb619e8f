package httpapi_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/credvault/credvault/internal/httpapi"
	"github.com/credvault/credvault/internal/identity"
	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/vault"
)

const (
	listedOrigin   = "http://127.0.0.1:5173"
	unlistedOrigin = "http://127.0.0.1:5174"
)

// corsAPI is the API with CORS for origins, over counted stores.
func corsAPI(t *testing.T, origins ...string) (*apiEnv, http.Handler) {
	t.Helper()
	e := newAPIEnv(t)
	keys := keyring.New(e.key, countingMeta{e.meta, e.calls}, keyring.Options{})
	v := vault.New(keys, countingBlobs{e.blobs, e.calls}, countingMeta{e.meta, e.calls}, vault.Options{})
	return e, httpapi.New(httpapi.Options{Vault: v, Auth: e.dev.Verifier(), Log: slog.New(slog.DiscardHandler), CORSOrigins: origins})
}

func serve(h http.Handler, method, path string, headers ...string) *httptest.ResponseRecorder {
	var body io.Reader
	if method == http.MethodPut {
		body = strings.NewReader(`{"value":"v"}`)
	}
	r := httptest.NewRequest(method, path, body)
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Set(headers[i], headers[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// corsHeaders returns the response's Access-Control-* headers.
func corsHeaders(h http.Header) []string {
	var out []string
	for k := range h {
		if strings.HasPrefix(k, "Access-Control-") {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func wantVaryOrigin(t *testing.T, what string, h http.Header) {
	t.Helper()
	for _, v := range h.Values("Vary") {
		for _, f := range strings.Split(v, ",") {
			if strings.TrimSpace(f) == "Origin" {
				return
			}
		}
	}
	t.Errorf("%s: Vary = %q, want Origin in it", what, h.Values("Vary"))
}

func TestCORSPreflight(t *testing.T) {
	e, h := corsAPI(t, listedOrigin, "https://app.example")
	for _, c := range []struct {
		what, origin, method, path, headers string
		want                                int
	}{
		{"listed origin, PUT with its headers", listedOrigin, "PUT", "/api/credentials/x", "authorization,content-type,if-match,if-none-match,traceparent,x-correlation-id", 204},
		{"listed origin, list", listedOrigin, "GET", "/api/credentials", "authorization", 204},
		{"listed origin, delete", "https://app.example", "DELETE", "/api/credentials/x", "authorization,if-match", 204},
		{"listed origin, admin route", listedOrigin, "POST", "/api/admin/erase", "Authorization, Content-Type", 204},
		{"unlisted origin", unlistedOrigin, "PUT", "/api/credentials/x", "authorization,content-type", 403},
		{"origin with a trailing slash", listedOrigin + "/", "GET", "/api/credentials", "authorization", 403},
		{"origin in upper case", strings.ToUpper(listedOrigin), "GET", "/api/credentials", "authorization", 403},
		{"the null origin", "null", "GET", "/api/credentials", "authorization", 403},
		{"a method the path does not serve", listedOrigin, "PATCH", "/api/credentials/x", "authorization", 403},
		{"a path the API does not serve", listedOrigin, "GET", "/api/nope", "authorization", 403},
		{"the rotate timer's invocation", listedOrigin, "POST", "/" + httpapi.TimerFunction, "content-type", 403},
		{"a header the API does not read", listedOrigin, "GET", "/api/credentials", "authorization,x-api-key", 403},
	} {
		e.calls.reset()
		w := serve(h, http.MethodOptions, c.path, "Origin", c.origin, "Access-Control-Request-Method", c.method,
			"Access-Control-Request-Headers", c.headers)
		if w.Code != c.want {
			t.Errorf("%s: status = %d, want %d (body %s)", c.what, w.Code, c.want, w.Body)
			continue
		}
		wantVaryOrigin(t, c.what, w.Header())
		if got := e.calls.String(); got != "" {
			t.Errorf("%s: the preflight made store calls %s", c.what, got)
		}
		if c.want != 204 {
			if got := corsHeaders(w.Header()); len(got) != 0 {
				t.Errorf("%s: refused preflight carries %v", c.what, got)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("%s: Content-Type = %q, want application/problem+json", c.what, ct)
			}
			continue
		}
		hd := w.Header()
		if got := hd.Get("Access-Control-Allow-Origin"); got != c.origin {
			t.Errorf("%s: Allow-Origin = %q, want %q", c.what, got, c.origin)
		}
		if got := hd.Get("Access-Control-Allow-Methods"); !slices.Contains(strings.Split(got, ", "), c.method) {
			t.Errorf("%s: Allow-Methods = %q, want %s in it", c.what, got, c.method)
		}
		if got, want := hd.Get("Access-Control-Allow-Headers"), "Authorization, Content-Type, If-Match, If-None-Match, traceparent, x-correlation-id"; got != want {
			t.Errorf("%s: Allow-Headers = %q, want %q", c.what, got, want)
		}
		if hd.Get("Access-Control-Max-Age") == "" {
			t.Errorf("%s: no Access-Control-Max-Age", c.what)
		}
		if _, ok := hd["Access-Control-Allow-Credentials"]; ok {
			t.Errorf("%s: Allow-Credentials is set; callers send bearer tokens, not cookies", c.what)
		}
	}
}

func TestCORSResponses(t *testing.T) {
	e, h := corsAPI(t, listedOrigin)
	tok := e.token(t, identity.CredentialsWrite, identity.CredentialsRead)

	w := serve(h, "GET", "/api/health", "Origin", listedOrigin)
	if w.Code != 200 || w.Header().Get("Access-Control-Allow-Origin") != listedOrigin {
		t.Fatalf("listed origin: status %d, Allow-Origin %q", w.Code, w.Header().Get("Access-Control-Allow-Origin"))
	}
	if got, want := w.Header().Get("Access-Control-Expose-Headers"), "ETag, Location, x-correlation-id, traceparent, Retry-After"; got != want {
		t.Errorf("Expose-Headers = %q, want %q", got, want)
	}
	wantVaryOrigin(t, "listed origin", w.Header())

	// A problem is readable by the listed origin's script too.
	w = serve(h, "GET", "/api/credentials", "Origin", listedOrigin)
	if w.Code != 401 || w.Header().Get("Access-Control-Allow-Origin") != listedOrigin {
		t.Errorf("401 to the listed origin: status %d, Allow-Origin %q", w.Code, w.Header().Get("Access-Control-Allow-Origin"))
	}

	for _, c := range []struct{ what, origin string }{{"unlisted origin", unlistedOrigin}, {"no origin", ""}} {
		w = serve(h, "GET", "/api/health", "Origin", c.origin)
		if w.Code != 200 || len(corsHeaders(w.Header())) != 0 {
			t.Errorf("%s: status %d, CORS headers %v; want 200 and none", c.what, w.Code, corsHeaders(w.Header()))
		}
		wantVaryOrigin(t, c.what, w.Header())
	}

	// A write from an unlisted origin is refused before the API sees it.
	e.calls.reset()
	w = serve(h, "PUT", "/api/credentials/x", "Origin", unlistedOrigin, "Authorization", "Bearer "+tok)
	if w.Code != 403 || len(corsHeaders(w.Header())) != 0 || e.calls.String() != "" {
		t.Fatalf("PUT from an unlisted origin: status %d, CORS headers %v, store calls %q; want 403, none, none",
			w.Code, corsHeaders(w.Header()), e.calls.String())
	}
	w = serve(h, "GET", "/api/credentials/x", "Authorization", "Bearer "+tok)
	if w.Code != 404 {
		t.Fatalf("after the refused PUT, GET = %d, want 404", w.Code)
	}
	w = serve(h, "PUT", "/api/credentials/x", "Origin", listedOrigin, "Authorization", "Bearer "+tok)
	if w.Code != 201 || w.Header().Get("Access-Control-Allow-Origin") != listedOrigin || w.Header().Get("ETag") == "" {
		t.Fatalf("PUT from the listed origin: status %d, Allow-Origin %q, ETag %q", w.Code, w.Header().Get("Access-Control-Allow-Origin"), w.Header().Get("ETag"))
	}
}

// Without CORSOrigins (as in Azure, where the platform's CORS answers) the
// handler adds no CORS header and answers a preflight as any OPTIONS.
func TestCORSOff(t *testing.T) {
	_, h := corsAPI(t)
	w := serve(h, http.MethodOptions, "/api/credentials", "Origin", listedOrigin, "Access-Control-Request-Method", "GET")
	if w.Code != http.StatusMethodNotAllowed || len(corsHeaders(w.Header())) != 0 {
		t.Errorf("preflight with CORS off: status %d, CORS headers %v; want 405 and none", w.Code, corsHeaders(w.Header()))
	}
	w = serve(h, "GET", "/api/health", "Origin", listedOrigin)
	if w.Code != 200 || len(corsHeaders(w.Header())) != 0 {
		t.Errorf("GET with CORS off: status %d, CORS headers %v", w.Code, corsHeaders(w.Header()))
	}
}

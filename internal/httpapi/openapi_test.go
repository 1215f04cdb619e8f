package httpapi

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"

	"github.com/credvault/credvault/internal/identity"
)

func openAPIModel(t *testing.T) *v3.Document {
	t.Helper()
	doc, err := libopenapi.NewDocument(openAPIDocument)
	if err != nil {
		t.Fatalf("parse openapi.json: %v", err)
	}
	m, err := doc.BuildV3Model()
	if err != nil {
		t.Fatalf("build the OpenAPI model: %v", err)
	}
	return &m.Model
}

// TestOpenAPIDocumentIsValid checks the document against the OpenAPI 3.1
// schema with the validator library's own document checks.
func TestOpenAPIDocumentIsValid(t *testing.T) {
	doc, err := libopenapi.NewDocument(openAPIDocument)
	if err != nil {
		t.Fatalf("parse openapi.json: %v", err)
	}
	if v := doc.GetVersion(); !strings.HasPrefix(v, "3.1") {
		t.Fatalf("openapi.json is OpenAPI %s, want 3.1", v)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("build the validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("openapi.json: %v", e)
		}
	}
}

var pathParam = regexp.MustCompile(`\{[^}]*\}`)

// documented lists the document's operations as "METHOD /path/{}".
func documented(m *v3.Document) map[string]*v3.Operation {
	out := map[string]*v3.Operation{}
	for path, item := range m.Paths.PathItems.FromOldest() {
		for method, op := range item.GetOperations().FromOldest() {
			out[strings.ToUpper(method)+" "+pathParam.ReplaceAllString(path, "{}")] = op
		}
	}
	return out
}

// TestOpenAPIDescribesEveryRoute fails when a route is served that the
// document does not describe, or described but not served. The rotate
// timer's POST /rotate is the Functions host's invocation, not an API
// route: it is not in the route table and must not be in the document.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	docOps := documented(openAPIModel(t))
	served := map[string]bool{}
	for _, r := range Routes() {
		served[pathParam.ReplaceAllString(r, "{}")] = true
	}
	for r := range served {
		if docOps[r] == nil {
			t.Errorf("route %s is served but not in openapi.json", r)
		}
	}
	for op := range docOps {
		if !served[op] {
			t.Errorf("openapi.json describes %s, which is not served", op)
		}
	}
	if docOps["POST /"+TimerFunction] != nil {
		t.Errorf("openapi.json describes the timer invocation POST /%s, which is not an API route", TimerFunction)
	}
}

// TestOpenAPIRolesMatchRoutes checks that each operation asks for the roles
// its route checks, under both security schemes, and that the open routes
// are open in the document too.
func TestOpenAPIRolesMatchRoutes(t *testing.T) {
	docOps := documented(openAPIModel(t))
	for _, rt := range routeTable {
		op := docOps[pathParam.ReplaceAllString(rt.pattern, "{}")]
		if op == nil {
			continue // TestOpenAPIDescribesEveryRoute reports it
		}
		var want []string
		for _, r := range rt.roles {
			want = append(want, string(r))
		}
		if len(want) == 0 {
			if op.Security == nil || len(op.Security) != 0 {
				t.Errorf("%s needs no token, but openapi.json does not say security: []", rt.pattern)
			}
			continue
		}
		schemes := map[string]bool{}
		for _, req := range op.Security {
			for name, scopes := range req.Requirements.FromOldest() {
				schemes[name] = true
				if !slices.Equal(scopes, want) {
					t.Errorf("%s: openapi.json asks %s for %v, the route checks %v", rt.pattern, name, scopes, want)
				}
			}
		}
		if !schemes["entra"] || !schemes["bearer"] {
			t.Errorf("%s: openapi.json offers schemes %v, want entra and bearer", rt.pattern, schemes)
		}
		if op.Responses.Codes.GetOrZero("401") == nil || op.Responses.Codes.GetOrZero("403") == nil {
			t.Errorf("%s needs a token, but openapi.json documents no 401 or 403", rt.pattern)
		}
	}
}

// TestOpenAPIScopesAreTheRoles checks that the Entra scheme has one scope per
// role, no more.
func TestOpenAPIScopesAreTheRoles(t *testing.T) {
	m := openAPIModel(t)
	scheme := m.Components.SecuritySchemes.GetOrZero("entra")
	if scheme == nil || scheme.Flows == nil || scheme.Flows.AuthorizationCode == nil {
		t.Fatal("openapi.json has no entra authorization-code scheme")
	}
	var got []string
	for s := range scheme.Flows.AuthorizationCode.Scopes.KeysFromOldest() {
		got = append(got, s)
	}
	var want []string
	for _, r := range identity.AllRoles() {
		want = append(want, string(r))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("entra scopes = %v, want the roles %v", got, want)
	}
}

func TestOpenAPIServed(t *testing.T) {
	h := New(Options{})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/openapi.json", nil))
	if got, want := rec.Code, http.StatusOK; got != want {
		t.Fatalf("GET /api/openapi.json: status = %d, want %d", got, want)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if cc := rec.Header().Get("Cache-Control"); !strings.Contains(cc, "max-age=") || strings.Contains(cc, "no-store") {
		t.Errorf("Cache-Control = %q, want a cacheable answer", cc)
	}
	if !bytes.Equal(rec.Body.Bytes(), openAPIDocument) {
		t.Error("the body is not the embedded document")
	}
	etag := rec.Header().Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}

	rec = httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/api/openapi.json", nil)
	req.Header.Set("If-None-Match", etag)
	h.ServeHTTP(rec, req)
	if got, want := rec.Code, http.StatusNotModified; got != want {
		t.Fatalf("GET with If-None-Match: status = %d, want %d", got, want)
	}
	if rec.Body.Len() != 0 {
		t.Errorf("304 with a body of %d bytes", rec.Body.Len())
	}
}
